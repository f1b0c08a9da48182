"""A kernel process, as jupyter_client manages it, seen through Deferreds.

L{KernelProcess} is the seam between the registry and jupyter_client: it wraps an
L{AsyncKernelManager} (so kernelspec provisioners are honoured) and turns each of its coroutines
into a Deferred that cannot be cancelled halfway, since a half-done start or shutdown would leak
a process.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Awaitable
from typing import Any, cast

from jupyter_client.connect import KernelConnectionInfo
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.session import Session
from twisted.internet.defer import Deferred, ensureDeferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import deferLater

from kgw.bridge import fromCoroutine
from kgw.kernels.provisioners import adoptRemote, provisionerInfo
from kgw.kernels.store.directory import KernelRecord, endProcess, isKernelProcess, pidAlive


class KernelProcess:
    """One kernel process and its connection details; every operation returns a Deferred."""

    def __init__(self, name: str, specs: KernelSpecManager, connectionFile: str) -> None:
        self.manager = AsyncKernelManager(
            kernel_name=name, kernel_spec_manager=specs, connection_file=connectionFile
        )
        #: What a remote kernel's provisioner needs to find it again (L{provisionerInfo}).
        self.provisionerInfo: dict[str, Any] | None = None

    @property
    def session(self) -> Session:
        """The L{Session} holding this kernel's own signing key."""
        return self.manager.session

    @property
    def connectionInfo(self) -> dict[str, Any]:
        return cast(dict[str, Any], self.manager.get_connection_info())

    @property
    def pid(self) -> int | None:
        provisioner = self.manager.provisioner
        return getattr(provisioner, "pid", None) if provisioner is not None else None

    def start(self, **launch: Any) -> Deferred[None]:
        return fromCoroutine(self._started(self.manager.start_kernel(**launch)), shield=True)

    async def _started(self, launching: Awaitable[None]) -> None:
        await launching
        self.provisionerInfo = await provisionerInfo(self.manager)

    @classmethod
    def adopt(
        cls, record: KernelRecord, specs: KernelSpecManager
    ) -> Deferred[KernelProcess | None]:
        """
        The process of a remote kernel an earlier gateway recorded, found again through its
        provisioner; C{None} if it is gone.
        """
        # An asyncio task: provisioners use asyncio (wait_for, sock_connect) in their polls.
        return fromCoroutine(cls._adopt(record, specs), shield=True)

    @classmethod
    async def _adopt(cls, record: KernelRecord, specs: KernelSpecManager) -> KernelProcess | None:
        assert record.provisionerInfo is not None
        process = cls(record.name, specs, record.connectionFile)
        launch: dict[str, Any] = {"env": record.env, "independent": True}
        if record.cwd:
            launch["cwd"] = record.cwd
        alive = await adoptRemote(
            process.manager, record.id, record.provisionerInfo, record.connectionInfo, launch
        )
        process.provisionerInfo = record.provisionerInfo
        return process if alive else None

    def cleanup(self) -> Deferred[None]:
        """Release what a failed start left behind (connection file, ports)."""
        return fromCoroutine(self.manager.cleanup_resources(), shield=True)

    def interrupt(self) -> Deferred[None]:
        return fromCoroutine(self.manager.interrupt_kernel(), shield=True)

    def restart(self, now: bool) -> Deferred[None]:
        return fromCoroutine(self._started(self.manager.restart_kernel(now=now)), shield=True)

    def shutdown(self, now: bool = False) -> Deferred[None]:
        return fromCoroutine(self.manager.shutdown_kernel(now=now), shield=True)

    def isAlive(self) -> Deferred[bool]:
        return fromCoroutine(self.manager.is_alive())


class AdoptedProcess:
    """
    A kernel process started by an earlier gateway, known from its L{KernelRecord}: there is no
    process handle, so it is watched and ended by its pid. A restart starts a process of this
    gateway's own in its place, on the same ports and with the same key.
    """

    #: Seconds an adopted kernel has to end after SIGTERM before it is killed.
    graceTime = 5.0

    def __init__(self, record: KernelRecord, specs: KernelSpecManager, clock: IReactorTime) -> None:
        self.record = record
        self.specs = specs
        self.clock = clock
        info = record.connectionInfo
        self.session = Session(
            key=info.get("key", "").encode("ascii"),
            signature_scheme=info.get("signature_scheme", "hmac-sha256"),
        )
        self._replacement: KernelProcess | None = None

    @property
    def manager(self) -> AsyncKernelManager | None:
        return self._replacement.manager if self._replacement is not None else None

    @property
    def connectionInfo(self) -> dict[str, Any]:
        if self._replacement is not None:
            return self._replacement.connectionInfo
        return self.record.connectionInfo

    @property
    def pid(self) -> int | None:
        return self._replacement.pid if self._replacement is not None else self.record.pid

    def isAlive(self) -> Deferred[bool]:
        if self._replacement is not None:
            return self._replacement.isAlive()
        return succeed(isKernelProcess(self.record))

    def interrupt(self) -> Deferred[None]:
        if self._replacement is not None:
            return self._replacement.interrupt()
        endProcess(self.record.pid, signal.SIGINT)
        return succeed(None)

    def shutdown(self, now: bool = False) -> Deferred[None]:
        if self._replacement is not None:
            return self._replacement.shutdown(now)
        return ensureDeferred(self._end(now, removeFile=True))

    async def _end(self, now: bool, removeFile: bool) -> None:
        if not now:
            endProcess(self.record.pid, signal.SIGTERM)
            waited = 0.0
            while isKernelProcess(self.record) and waited < self.graceTime:
                await deferLater(self.clock, 0.05)
                waited += 0.05
        if isKernelProcess(self.record):
            endProcess(self.record.pid, signal.SIGKILL)
            while pidAlive(self.record.pid):
                await deferLater(self.clock, 0.02)
        if removeFile:
            try:
                os.unlink(self.record.connectionFile)
            except OSError:
                pass

    def restart(self, now: bool) -> Deferred[None]:
        if self._replacement is not None:
            return self._replacement.restart(now)
        return ensureDeferred(self._restart(now))

    async def _restart(self, now: bool) -> None:
        await self._end(now, removeFile=False)
        replacement = KernelProcess(self.record.name, self.specs, self.record.connectionFile)
        # Same ports and key as before, so the clients' sockets reconnect to the new process;
        # without cache_ports off the provisioner would pick new ports.
        replacement.manager.load_connection_info(
            cast(KernelConnectionInfo, self.record.connectionInfo)
        )
        replacement.manager.cache_ports = False
        launch: dict[str, Any] = {
            "kernel_id": self.record.id,
            "env": self.record.env,
            "independent": True,
        }
        if self.record.cwd:
            launch["cwd"] = self.record.cwd
        await replacement.start(**launch)
        self._replacement = replacement

    def cleanup(self) -> Deferred[None]:
        return succeed(None)
