"""The browser tests' own machinery: when they must run, and the watch on their processes."""

from __future__ import annotations

import os

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.trial.unittest import FailTest, SynchronousTestCase, TestCase

from tests.browser.support import ProcessWatch, missing, required, skipUnlessRequired
from tests.support import withTimeout


class RequiredTests(SynchronousTestCase):
    """In the browser env and in CI a missing requirement fails the browser tests."""

    def environ(self, **values: str) -> None:
        keep = {k: v for k, v in os.environ.items() if k not in ("CI", "KGW_BROWSER_TEST")}
        self.patch(os, "environ", {**keep, **values})

    def test_skippedByDefault(self):
        """Outside the browser env and CI, the browser tests are skipped, saying how to run them."""
        self.environ()
        self.assertFalse(required())
        self.assertIn("KGW_BROWSER_TEST=1", skipUnlessRequired())

    def test_requiredInBrowserEnv(self):
        """With KGW_BROWSER_TEST=1 (tox -e browser) the browser tests are never skipped."""
        self.environ(KGW_BROWSER_TEST="1")
        self.assertTrue(required())
        self.assertIsNone(skipUnlessRequired())

    def test_requiredInCI(self):
        """With CI=true the browser tests are never skipped, unless KGW_BROWSER_TEST=0 says so."""
        self.environ(CI="true")
        self.assertIsNone(skipUnlessRequired())
        self.environ(CI="true", KGW_BROWSER_TEST="0")
        self.assertFalse(required())

    def test_missingChromium(self):
        """A missing Chromium is named, with how to install it."""
        reason = missing(chromium="/nonexistent/chromium")
        self.assertIsNotNone(reason)
        self.assertTrue(
            "is not installed" in reason or "apt-get install chromium" in reason, reason
        )


class Ended(ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred[None] = Deferred()

    def processExited(self, reason) -> None:
        # Exited, not ended: an orphan it leaves holds its output pipes open.
        self.transport.loseConnection()
        self.ended.callback(None)


class ProcessWatchTests(TestCase):
    """The watch that fails a browser test when one of its processes survives it."""

    async def test_orphanSurvivor(self):
        """
        A process started during the test that outlives it, even one whose parent has ended,
        fails the check and is killed by its pid.
        """
        watch = ProcessWatch(self, interval=0.05)
        parent = Ended()
        # The shell starts a sleep in the background and ends: the sleep is orphaned.
        reactor.spawnProcess(
            parent, "/bin/sh", ["/bin/sh", "-c", "sleep 60 & sleep 0.5"], env=os.environ
        )
        await withTimeout(parent.ended)
        orphans = [pid for pid, command in watch.alive().items() if command == "sleep 60"]
        self.assertEqual(len(orphans), 1, watch.seen)
        with self.assertRaises(FailTest):
            await watch.check(grace=0.2)
        self.assertEqual(watch.alive(), {})

    async def test_allEnded(self):
        """A test whose processes have all ended passes the check."""
        watch = ProcessWatch(self, interval=0.05)
        process = Ended()
        reactor.spawnProcess(process, "/bin/sh", ["/bin/sh", "-c", "sleep 0.3"], env=os.environ)
        await withTimeout(process.ended)
        self.assertTrue(watch.seen)
        await watch.check(grace=0.2)
