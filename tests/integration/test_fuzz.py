"""The short Schemathesis run of C{tests/fuzz/run_fuzz.py}, as a test, so that CI makes it."""

from __future__ import annotations

import os
import signal
import sys

from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SkipTest, TestCase

from tests.support import withTimeout

TESTS = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(TESTS, "fuzz", "run_fuzz.py")


class Collect(protocol.ProcessProtocol):
    """Collects a process's output and fires C{ended} with its exit code."""

    def __init__(self) -> None:
        self.output = b""
        self.ended: Deferred[int | None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        self.ended.callback(reason.value.exitCode)


class QuickFuzzTests(TestCase):
    """Schemathesis against a real C{twistd kgw}, with and without a token."""

    timeout = 300

    async def test_quickFuzzFindsNothing(self) -> None:
        """A short fuzz run gets no 5xx and no answer the OpenAPI document does not describe."""
        try:
            import schemathesis  # noqa: F401
        except ImportError:
            raise SkipTest("schemathesis is not installed")
        collect = Collect()
        # Its gateways run the kgw of this environment, as those of tests.integration.test_daemon.
        transport = reactor.spawnProcess(
            collect, sys.executable, [sys.executable, SCRIPT, "--quick"], env=dict(os.environ)
        )

        def stop() -> Deferred[int | None] | None:
            # The script stops its gateways (by pid) when it gets SIGTERM.
            if collect.ended.called:
                return None
            os.kill(transport.pid, signal.SIGTERM)
            return collect.ended

        self.addCleanup(stop)
        code = await withTimeout(collect.ended, 280)
        output = collect.output.decode("utf-8", "replace")
        self.assertEqual(code, 0, output[-8000:])
        summary = output.strip().splitlines()[-1]
        self.assertRegex(summary, r"^fuzz: [1-9]\d* requests, 0 failures$")
