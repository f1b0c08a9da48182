"""The kernels that answer notebook-http requests, lent to one request at a time.

Requests borrow an idle kernel, in the order they arrive, and give it back when their answer is
complete. Idle kernels wait in line too: the one idle longest is lent first, so requests made one
after the other rotate over all the kernels, as KG's pool does, and a kernel held by a slow
request never holds up the others. A kernel that died under a request is not given back: it is
shut down and a new, seeded kernel takes its place, at the end of the line, so later requests
succeed. Requests are served as soon as the first kernel is ready (KG waits for all of them).
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from kgw.errors import NoSuchKernel
from kgw.kernels.kernel import Kernel
from kgw.kernels.registry import KernelRegistry

log = Logger()


class KernelLender(Service):
    """
    C{count} seeded kernels from C{kernels}, lent out first come, first served.

    @param retryDelay: seconds between attempts to start a kernel that failed to start.
    """

    name = "notebook-http kernels"

    def __init__(
        self, kernels: KernelRegistry, count: int, clock: IReactorTime, retryDelay: float = 5.0
    ) -> None:
        self.kernels = kernels
        self.count = max(1, count)
        self.clock = clock
        self.retryDelay = retryDelay
        self._idle: DeferredQueue[Kernel] = DeferredQueue()
        self._ours: set[str] = set()
        self._retries: set[IDelayedCall] = set()

    def startService(self) -> None:
        super().startService()
        for _ in range(self.count):
            self._addKernel()

    def stopService(self) -> None:
        super().stopService()
        for retry in self._retries:
            retry.cancel()
        self._retries.clear()

    def _retryLater(self) -> None:
        def retry() -> None:
            self._retries.discard(call)
            self._addKernel()

        call = self.clock.callLater(self.retryDelay, retry)
        self._retries.add(call)

    def _addKernel(self) -> None:
        if not self.running:
            return

        def started(kernel: Kernel) -> None:
            self._ours.add(kernel.id)
            self._idle.put(kernel)

        def failed(failure: Failure) -> None:
            if not self.running:
                return  # the gateway stopped, and the start with it
            log.failure("A notebook-http kernel failed to start; trying again", failure)
            self._retryLater()

        # Of the kernelspec the notebook names, as KG's pool does; the default one otherwise.
        seed = self.kernels.seed
        try:
            self.kernels.startKernel(seed.kernelName if seed else None).addCallbacks(
                started, failed
            )
        except Exception:
            log.failure("A notebook-http kernel could not be started; trying again")
            self._retryLater()

    def borrow(self) -> Deferred[Kernel]:
        """
        The kernel idle longest, or the first one given back; waiting requests are served in
        arrival order. Cancelling the Deferred gives up the place in the queue.
        """
        return self._idle.get()

    def giveBack(self, kernel: Kernel) -> None:
        """Make a kernel available again after a request."""
        if kernel.id in self.kernels and kernel.channels is not None:
            self._idle.put(kernel)
        else:
            self.replace(kernel)

    def replace(self, kernel: Kernel) -> None:
        """Shut down a kernel that cannot serve any more and start a seeded one in its place."""
        self._ours.discard(kernel.id)
        log.warn("Replacing notebook-http kernel {kernelId}", kernelId=kernel.id)
        try:
            d = self.kernels.shutdownKernel(kernel.id)
        except NoSuchKernel:
            self._addKernel()
            return
        d.addErrback(lambda f: log.failure("Shutting kernel {id} down failed", f, id=kernel.id))
        d.addBoth(lambda _: self._addKernel())

    @property
    def idle(self) -> int:
        """How many kernels wait for a request."""
        return len(self._idle.pending)
