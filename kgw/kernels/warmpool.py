"""The warm pool: kernels started and seeded ahead of demand, handed out at once.

A kernel in the pool is not registered: it is not listed, has no id anyone knows, and cannot be
reached until a start request claims it. Each claim starts a replacement in the background, a
moment later, so that the replacement's start-up does not compete for the CPU with the first
requests to the kernel just handed out.
"""

from __future__ import annotations

import json
import os
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from twisted.internet.defer import Deferred, DeferredList, ensureDeferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from kgw.kernels.inflight import InFlight

log = Logger()


def environmentCode(environment: Mapping[str, str]) -> str:
    """
    Python code that gives a running kernel exactly C{environment}, and the working directory
    C{KERNEL_WORKING_DIR} names, as if it had been started with them.
    """
    lines = [
        "import os as _kgw_os, json as _kgw_json",
        "_kgw_os.environ.clear()",
        f"_kgw_os.environ.update(_kgw_json.loads({json.dumps(json.dumps(dict(environment)))}))",
    ]
    workdir = environment.get("KERNEL_WORKING_DIR")
    if workdir and os.path.isdir(workdir):
        lines.append(f"_kgw_os.chdir({json.dumps(workdir)})")
    lines.append("del _kgw_os, _kgw_json")
    return "\n".join(lines)


class WarmKernel(Protocol):
    """What the pool needs of a kernel: its id and its kernelspec's name."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...


Kernel = TypeVar("Kernel", bound=WarmKernel)


class WarmPool(Generic[Kernel]):
    """
    C{size} unclaimed kernels of each kernelspec in C{names}, kept full.

    @param create: starts (and seeds) a kernel of a kernelspec without registering it.
    @param discard: shuts down a kernel that will never be handed out.
    @param retryDelay: seconds to wait before trying again after a start failed.
    @param refillDelay: seconds between a claim and the start of its replacement.
    """

    def __init__(
        self,
        size: int,
        names: Sequence[str],
        create: Callable[[str], Coroutine[Any, Any, Kernel]],
        discard: Callable[[Kernel], Deferred[None]],
        clock: IReactorTime,
        retryDelay: float = 5.0,
        refillDelay: float = 1.0,
    ) -> None:
        self.size = size
        self.names = tuple(names)
        self._create = create
        self._discard = discard
        self.clock = clock
        self.retryDelay = retryDelay
        self.refillDelay = refillDelay
        self._refills: dict[str, IDelayedCall] = {}
        self._ready: dict[str, deque[Kernel]] = {name: deque() for name in self.names}
        self._starting: dict[str, int] = {name: 0 for name in self.names}
        self._inFlight = InFlight()
        self.running = False

    def start(self) -> None:
        self.running = True
        for name in self.names:
            self._fill(name)

    def _fill(self, name: str) -> None:
        while self.running and len(self._ready[name]) + self._starting[name] < self.size:
            self._starting[name] += 1
            d = ensureDeferred(self._create(name)).addCallbacks(
                self._warmed, self._failed, errbackArgs=(name,)
            )

            def done(_: object, name: str = name) -> None:
                self._starting[name] -= 1

            self._inFlight.track(d.addBoth(done))

    def _warmed(self, kernel: Kernel) -> None:
        if not self.running:
            self._discard(kernel)
            return
        self._ready[kernel.name].append(kernel)
        log.info("Kernel {kernelId} ({name}) is warm", kernelId=kernel.id, name=kernel.name)

    def _failed(self, failure: Failure, name: str) -> None:
        if not self.running:
            return  # stopped while it started: nothing went wrong
        log.failure("A warm kernel of {name} failed to start", failure, name=name)
        self.clock.callLater(self.retryDelay, self._fill, name)

    def take(self, name: str) -> Kernel | None:
        """A warm kernel of kernelspec C{name}, now removed from the pool, or C{None}."""
        ready = self._ready.get(name)
        if not ready:
            return None
        kernel = ready.popleft()
        if name not in self._refills:
            # One refill for all the claims made meanwhile: it fills the pool up.
            self._refills[name] = self.clock.callLater(self.refillDelay, self._refill, name)
        return kernel

    def _refill(self, name: str) -> None:
        del self._refills[name]
        self._fill(name)

    def __len__(self) -> int:
        return sum(len(ready) for ready in self._ready.values())

    def stop(self) -> Deferred[Any]:
        """Shut every warm kernel down, and the ones still starting once they have started."""
        self.running = False
        for refill in self._refills.values():
            refill.cancel()
        self._refills.clear()
        discards = [self._discard(kernel) for ready in self._ready.values() for kernel in ready]
        for ready in self._ready.values():
            ready.clear()
        return DeferredList([*discards, self._inFlight.whenDone()])
