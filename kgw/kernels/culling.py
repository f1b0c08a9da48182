"""Idle culling, as jupyter_server does it: kernels idle too long are shut down, on a clock."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from kgw.kernels.kernel import Kernel

log = Logger()


@dataclass(frozen=True)
class Culling:
    """
    jupyter_server's culling settings: kernels idle for C{idleTimeout} seconds (0: never) are
    shut down, checked every C{interval} seconds; connected and busy kernels only if allowed.
    """

    idleTimeout: float = 0.0
    interval: float = 300.0
    connected: bool = False
    busy: bool = False

    def applies(self, idle: float, connections: int, state: str) -> bool:
        """Whether a kernel idle for C{idle} seconds, so connected and in C{state}, is culled."""
        return (
            self.idleTimeout > 0
            and idle > self.idleTimeout
            and (self.connected or connections == 0)
            and (self.busy or state != "busy")
        )


class Culler:
    """
    Every C{culling.interval} seconds of C{clock}, shut down the kernels of C{kernels} that
    C{culling} says are idle for too long.

    @param shutdown: shuts a kernel down by id, with a websocket close reason.
    @param now: the current time, to which a kernel's last activity is compared.
    """

    def __init__(
        self,
        culling: Culling,
        clock: IReactorTime,
        kernels: Callable[[], Sequence[Kernel]],
        shutdown: Callable[[str, str], Deferred[None]],
        now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.culling = culling
        self._kernels = kernels
        self._shutdown = shutdown
        self._now = now
        self._loop = LoopingCall(self.cull)
        self._loop.clock = clock

    def start(self) -> None:
        """Check every interval, from one interval on; never when culling is off."""
        if self.culling.idleTimeout > 0 and not self._loop.running:
            self._loop.start(self.culling.interval, now=False).addErrback(
                lambda f: log.failure("Culling idle kernels failed", f)
            )

    def stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def cull(self) -> None:
        """Shut down the kernels idle for longer than the culling settings allow."""
        now = self._now()
        for kernel in self._kernels():
            idle = (now - kernel.lastActivity).total_seconds()
            if not self.culling.applies(idle, kernel.connections, kernel.executionState):
                continue
            log.warn(
                "Culling kernel {kernelId} ({name}): idle for {idle:.0f} s, "
                "{connections} connections, {state}",
                kernelId=kernel.id,
                name=kernel.name,
                idle=idle,
                connections=kernel.connections,
                state=kernel.executionState,
            )
            kernel.announce("dead")
            self._shutdown(kernel.id, f"kernel culled after {idle:.0f} s of inactivity").addErrback(
                lambda f: log.failure("Culling a kernel failed", f)
            )
