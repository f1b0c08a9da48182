"""Tests for kgw.kernels.culling: the culling loop, driven by a Clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kgw.kernels.culling import Culler, Culling
from kgw.kernels.kernel import Kernel
from tests.fakes import FakeProcess

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)


class CullerTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.kernels = [
            Kernel("idle", "fake", FakeProcess("fake", None, "")),  # type: ignore[arg-type]
            Kernel("recent", "fake", FakeProcess("fake", None, "")),  # type: ignore[arg-type]
        ]
        self.kernels[0].lastActivity = NOW - timedelta(seconds=120)
        self.kernels[1].lastActivity = NOW - timedelta(seconds=10)
        for kernel in self.kernels:
            kernel.executionState = "idle"
        self.shutDown: list[tuple[str, str]] = []

        def shutdown(kernelId: str, reason: str) -> Deferred[None]:
            self.shutDown.append((kernelId, reason))
            return succeed(None)

        self.culler = Culler(
            Culling(idleTimeout=60, interval=30),
            self.clock,
            lambda: self.kernels,
            shutdown,
            now=lambda: NOW,
        )

    def test_culledAtEachInterval(self) -> None:
        """Only once an interval of the clock has passed are idle kernels shut down."""
        self.culler.start()
        self.assertEqual(self.shutDown, [])
        self.clock.advance(30)
        self.assertEqual(self.shutDown, [("idle", "kernel culled after 120 s of inactivity")])
        self.assertEqual(self.kernels[0].executionState, "dead")
        self.assertEqual(self.kernels[1].executionState, "idle")

    def test_stopped(self) -> None:
        """A stopped culler schedules nothing more."""
        self.culler.start()
        self.culler.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(60)
        self.assertEqual(self.shutDown, [])

    def test_offWithoutTimeout(self) -> None:
        """With no idle timeout the culler never schedules a check."""
        culler = Culler(Culling(), self.clock, lambda: self.kernels, lambda k, r: succeed(None))
        culler.start()
        self.assertEqual(self.clock.getDelayedCalls(), [])
