"""The warm pool's bookkeeping, with a fake clock and kernels that start when a test says so."""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import count

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kgw.kernels.warmpool import WarmPool

_ids = count()


@dataclass
class FakeKernel:
    name: str
    id: str = field(default_factory=lambda: f"k{next(_ids)}")


class Starts:
    """Records each start; C{finish} completes the oldest one still starting."""

    def __init__(self) -> None:
        self.pending: list[tuple[str, Deferred[FakeKernel]]] = []
        self.discarded: list[FakeKernel] = []

    async def create(self, name: str) -> FakeKernel:
        d: Deferred[FakeKernel] = Deferred()
        self.pending.append((name, d))
        return await d

    def finish(self) -> None:
        name, d = self.pending.pop(0)
        d.callback(FakeKernel(name))

    def discard(self, kernel: FakeKernel) -> Deferred[None]:
        self.discarded.append(kernel)
        return succeed(None)


class RefillTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.starts = Starts()
        self.pool = WarmPool(
            2, ["py"], self.starts.create, self.starts.discard, self.clock, refillDelay=1.0
        )
        self.pool.start()
        self.starts.finish()
        self.starts.finish()
        self.assertEqual(len(self.pool), 2)

    def test_replacementStartsAMomentLater(self) -> None:
        """A claim starts its replacement only C{refillDelay} seconds later."""
        self.assertIsNotNone(self.pool.take("py"))
        self.assertEqual(self.starts.pending, [])
        self.clock.advance(0.9)
        self.assertEqual(self.starts.pending, [])
        self.clock.advance(0.1)
        self.assertEqual([name for name, _ in self.starts.pending], ["py"])
        self.starts.finish()
        self.assertEqual(len(self.pool), 2)

    def test_claimsMeanwhileShareOneRefill(self) -> None:
        """Claims within the delay make one refill, which fills the pool up."""
        self.pool.take("py")
        self.clock.advance(0.5)
        self.pool.take("py")
        self.assertIsNone(self.pool.take("py"))
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)
        self.clock.advance(0.5)
        self.assertEqual(len(self.starts.pending), 2)

    def test_stopCancelsRefill(self) -> None:
        """Stopping the pool cancels a refill still waiting, and discards the warm kernels."""
        self.pool.take("py")
        self.successResultOf(self.pool.stop())
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertEqual(len(self.starts.discarded), 1)
