"""A kernel process, as jupyter_client manages it, seen through Deferreds.

L{KernelProcess} is the seam between the registry and jupyter_client: it wraps an
L{AsyncKernelManager} (so kernelspec provisioners are honoured) and turns each of its coroutines
into a Deferred that cannot be cancelled halfway, since a half-done start or shutdown would leak
a process.
"""

from __future__ import annotations

from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.session import Session
from twisted.internet.defer import Deferred

from kgw.bridge import fromCoroutine


class KernelProcess:
    """One kernel process and its connection details; every operation returns a Deferred."""

    def __init__(self, name: str, specs: KernelSpecManager, connectionFile: str) -> None:
        self.manager = AsyncKernelManager(
            kernel_name=name, kernel_spec_manager=specs, connection_file=connectionFile
        )

    @property
    def session(self) -> Session:
        """The L{Session} holding this kernel's own signing key."""
        return self.manager.session

    @property
    def connectionInfo(self) -> dict[str, Any]:
        return self.manager.get_connection_info()

    @property
    def pid(self) -> int | None:
        provisioner = self.manager.provisioner
        return getattr(provisioner, "pid", None) if provisioner is not None else None

    def start(self, **launch: Any) -> Deferred[None]:
        return fromCoroutine(self.manager.start_kernel(**launch), shield=True)

    def cleanup(self) -> Deferred[None]:
        """Release what a failed start left behind (connection file, ports)."""
        return fromCoroutine(self.manager.cleanup_resources(), shield=True)

    def interrupt(self) -> Deferred[None]:
        return fromCoroutine(self.manager.interrupt_kernel(), shield=True)

    def restart(self, now: bool) -> Deferred[None]:
        return fromCoroutine(self.manager.restart_kernel(now=now), shield=True)

    def shutdown(self, now: bool = False) -> Deferred[None]:
        return fromCoroutine(self.manager.shutdown_kernel(now=now), shield=True)

    def isAlive(self) -> Deferred[bool]:
        return fromCoroutine(self.manager.is_alive())
