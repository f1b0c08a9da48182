"""The notebook-http lender's order: idle kernels in turn, waiting requests in arrival order."""

from __future__ import annotations

from itertools import count
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kgw.notebook_http.lender import KernelLender

_ids = count()


class FakeKernel:
    """A kernel as the lender sees it: an id, and channels while it runs."""

    def __init__(self) -> None:
        self.id = f"k{next(_ids)}"
        self.channels: object | None = object()


class FakeKernels:
    """The part of a kernel registry a lender uses; a kernel starts when the test says so."""

    seed = None

    def __init__(self) -> None:
        self.starting: list[Deferred[FakeKernel]] = []
        self.running: dict[str, FakeKernel] = {}

    def startKernel(self, name: str | None) -> Deferred[FakeKernel]:
        d: Deferred[FakeKernel] = Deferred()
        self.starting.append(d)
        return d

    def finishStart(self) -> FakeKernel:
        kernel = FakeKernel()
        self.running[kernel.id] = kernel
        self.starting.pop(0).callback(kernel)
        return kernel

    def __contains__(self, kernelId: str) -> bool:
        return kernelId in self.running

    def shutdownKernel(self, kernelId: str) -> Deferred[None]:
        del self.running[kernelId]
        return succeed(None)


class LenderOrderTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.kernels = FakeKernels()
        self.lender = KernelLender(self.kernels, 3, Clock())  # type: ignore[arg-type]
        self.lender.startService()
        self.started = [self.kernels.finishStart() for _ in range(3)]
        self.assertEqual(self.lender.idle, 3)

    def borrowNow(self) -> Any:
        """A kernel the lender lends at once."""
        return self.successResultOf(self.lender.borrow())

    def serve(self, requests: int) -> list[str]:
        """Serve C{requests} requests one after the other; the ids of the kernels that did."""
        served = []
        for _ in range(requests):
            kernel = self.borrowNow()
            served.append(kernel.id)
            self.lender.giveBack(kernel)
        return served

    def test_sequentialRequestsRotate(self) -> None:
        """Requests one after the other go to every kernel in turn, not to the same one."""
        ids = [k.id for k in self.started]
        self.assertEqual(self.serve(7), ids * 2 + ids[:1])

    def test_longestIdleFirst(self) -> None:
        """The kernel lent is the one idle longest; a kernel given back waits behind the others."""
        first, second, third = self.started
        a, b = self.borrowNow(), self.borrowNow()
        self.assertEqual((a, b), (first, second))
        self.lender.giveBack(second)
        self.lender.giveBack(first)
        self.assertEqual(self.serve(3), [third.id, second.id, first.id])

    def test_busyKernelDoesNotBlockOthers(self) -> None:
        """While one kernel is out with a slow request, requests rotate over the other ones."""
        slow = self.borrowNow()
        others = [k.id for k in self.started if k is not slow]
        self.assertEqual(self.serve(4), others * 2)
        self.lender.giveBack(slow)
        self.assertEqual(self.serve(3), [*others, slow.id])

    def test_waitersServedInArrivalOrder(self) -> None:
        """With every kernel out, waiting requests get the kernels given back in arrival order."""
        out = [self.borrowNow() for _ in range(3)]
        waiting = [self.lender.borrow() for _ in range(3)]
        for d in waiting:
            self.assertNoResult(d)
        # The slowest is the first kernel; the others come back before it, and are lent on.
        self.lender.giveBack(out[2])
        self.assertIs(self.successResultOf(waiting[0]), out[2])
        self.assertNoResult(waiting[1])
        self.lender.giveBack(out[1])
        self.assertIs(self.successResultOf(waiting[1]), out[1])
        self.lender.giveBack(out[0])
        self.assertIs(self.successResultOf(waiting[2]), out[0])

    def test_cancelledWaiterGivesUpItsPlace(self) -> None:
        """A waiting request that is cancelled is skipped: the next waiter gets the kernel."""
        out = [self.borrowNow() for _ in range(3)]
        first, second = self.lender.borrow(), self.lender.borrow()
        first.cancel()
        self.failureResultOf(first)
        self.lender.giveBack(out[0])
        self.assertIs(self.successResultOf(second), out[0])

    def test_replacementJoinsTheRotation(self) -> None:
        """A kernel that died is replaced, and its successor takes its turn behind the others."""
        dead = self.borrowNow()
        dead.channels = None
        self.lender.giveBack(dead)
        self.assertNotIn(dead.id, self.kernels)
        successor = self.kernels.finishStart()
        others = [k.id for k in self.started if k is not dead]
        self.assertEqual(self.serve(3), [*others, successor.id])


class LenderRetryTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.kernels = FakeKernels()
        self.clock = Clock()
        self.lender = KernelLender(self.kernels, 1, self.clock, retryDelay=5.0)  # type: ignore[arg-type]
        self.lender.startService()

    def test_failedStartRetriedAfterDelay(self) -> None:
        """A kernel that fails to start is started again retryDelay seconds later, and lent."""
        self.kernels.starting.pop(0).errback(RuntimeError("no kernel"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.clock.advance(4.9)
        self.assertEqual(self.kernels.starting, [])
        self.clock.advance(0.1)
        self.assertEqual(len(self.kernels.starting), 1)
        kernel = self.kernels.finishStart()
        self.assertIs(self.successResultOf(self.lender.borrow()), kernel)

    def test_stopCancelsRetries(self) -> None:
        """Once the gateway stops, no retry is pending and no kernel is started."""
        self.kernels.starting.pop(0).errback(RuntimeError("no kernel"))
        self.flushLoggedErrors(RuntimeError)
        self.lender.stopService()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(self.kernels.starting, [])
