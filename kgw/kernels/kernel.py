"""The kernel model: one kernel's id, kernelspec, process, channels and the state clients see."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Protocol

from jupyter_client.session import Session
from twisted.internet.defer import Deferred, DeferredLock, fail
from twisted.internet.error import ConnectionDone
from twisted.internet.task import LoopingCall

from kgw.jupyter import isoformat
from kgw.kernels.channels import KernelChannels
from kgw.kernels.execution import KernelCaller


class Process(Protocol):
    """
    A kernel's process as the gateway drives it: L{kgw.kernels.process.KernelProcess} for one
    it started, L{kgw.kernels.process.AdoptedProcess} for one an earlier gateway started.
    """

    @property
    def session(self) -> Session: ...

    @property
    def connectionInfo(self) -> dict[str, Any]: ...

    @property
    def pid(self) -> int | None: ...

    def cleanup(self) -> Deferred[None]: ...

    def interrupt(self) -> Deferred[None]: ...

    def restart(self, now: bool) -> Deferred[None]: ...

    def shutdown(self, now: bool = False) -> Deferred[None]: ...

    def isAlive(self) -> Deferred[bool]: ...


class LaunchableProcess(Process, Protocol):
    """A kernel process this gateway starts itself."""

    def start(self, **launch: Any) -> Deferred[None]: ...


class Kernel:
    """One running kernel: its process, its channels and the state clients see."""

    def __init__(self, kernelId: str, name: str, process: Process) -> None:
        self.id = kernelId
        self.name = name
        self.process = process
        self.channels: KernelChannels | None = None
        self.lastActivity = datetime.now(timezone.utc)
        self.executionState = "starting"
        # Set while the gateway itself stops or restarts the process, so the watcher leaves it.
        self.busyWith: str | None = None
        # Restarts and the shutdown of one kernel run one after the other, never interleaved.
        self.lifecycle = DeferredLock()
        self.watcher: LoopingCall | None = None
        # How it was started, for the kernel store.
        self.launchEnv: dict[str, str] = {}
        self.cwd: str | None = None
        self._caller: KernelCaller | None = None

    @property
    def connections(self) -> int:
        return len(self.channels.clients) if self.channels is not None else 0

    def model(self) -> dict[str, Any]:
        """The kernel as the REST API shows it."""
        return {
            "id": self.id,
            "name": self.name,
            "last_activity": isoformat(self.lastActivity),
            "execution_state": self.executionState,
            "connections": self.connections,
        }

    def observe(self, channel: str, header: dict[str, Any], parts: Sequence[bytes]) -> None:
        """Keep activity and execution state up to date from a message the kernel sent."""
        self.lastActivity = datetime.now(timezone.utc)
        if channel == "iopub" and header.get("msg_type") == "status":
            try:
                state = json.loads(parts[3]).get("execution_state")
            except (ValueError, AttributeError):
                return
            if isinstance(state, str):
                self.executionState = state

    @property
    def caller(self) -> KernelCaller:
        """The gateway's own shell connection to the kernel, opened when first needed."""
        assert self.channels is not None, "the kernel has no channels"
        if self._caller is None:
            self._caller = KernelCaller(self.channels)
        return self._caller

    def execute(
        self, code: str, storeHistory: bool = True, silent: bool = False
    ) -> Deferred[dict[str, Any]]:
        """
        Run C{code} for the gateway itself and fire with its C{execute_reply} content, once the
        kernel is idle again. Clients see its iopub messages, not its reply.
        """
        if self.channels is None or self.channels.closed:
            return fail(ConnectionDone("the kernel's channels are closed"))
        return self.caller.execute(code, silent=silent, storeHistory=storeHistory)

    def announce(self, state: str) -> None:
        """Set the kernel's state and tell its clients with an iopub status message."""
        self.executionState = state
        if self.channels is not None:
            self.channels.broadcast(*self.channels.statusMessage(state))

    def hold(self) -> None:
        """Keep clients' messages back until the restarting kernel's iopub is subscribed again."""
        if self.channels is not None:
            self.channels.hold()

    def release(self) -> None:
        """End one L{hold}."""
        if self.channels is not None:
            self.channels.release()
