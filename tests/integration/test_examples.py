"""The example clients under etc/, run as separate processes against a real gateway."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import Factory, ProcessProtocol
from twisted.trial.unittest import TestCase

from tests.support import RunningGateway

ROOT = Path(__file__).resolve().parents[2]
CLIENT = ROOT / "etc" / "python_client_example" / "client.py"
# Longer than the client's own 60 second limit, so a client that does not stop is a failure here.
PROCESS_TIMEOUT = 90.0


class _Collector(ProcessProtocol):
    """Collects a process's output and fires C{ended} with its exit code once it is reaped."""

    def __init__(self) -> None:
        self.out: list[bytes] = []
        self.err: list[bytes] = []
        self.ended: Deferred[int | None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out.append(data)

    def errReceived(self, data: bytes) -> None:
        self.err.append(data)

    def processEnded(self, reason) -> None:
        if reason.check(ProcessDone, ProcessTerminated):
            self.ended.callback(reason.value.exitCode)
        else:
            self.ended.errback(reason)


async def runClient(test: TestCase, host: str, *args: str) -> tuple[int | None, str, str]:
    """
    Run the example client against C{host}; return its exit code, stdout and stderr.

    A client still running after L{PROCESS_TIMEOUT} seconds, or when the test ends, is killed by
    its pid, and waited for.
    """
    env = {"GATEWAY_HOST": host}
    for name in ("PATH", "HOME", "PYTHONPATH"):
        if name in os.environ:
            env[name] = os.environ[name]
    collector = _Collector()
    process = reactor.spawnProcess(
        collector, sys.executable, [sys.executable, str(CLIENT), *args], env=env, path=str(ROOT)
    )

    def kill() -> Deferred[int | None]:
        if process.pid is not None:
            process.signalProcess("KILL")
        return collector.ended

    test.addCleanup(lambda: kill() if not collector.ended.called else None)
    timer = reactor.callLater(PROCESS_TIMEOUT, kill)
    try:
        code = await collector.ended
    finally:
        if timer.active():
            timer.cancel()
    if timer.called:
        test.fail(f"the client ran longer than {PROCESS_TIMEOUT} seconds and was killed")
    return code, b"".join(collector.out).decode(), b"".join(collector.err).decode()


class PythonClientExampleTests(TestCase):
    """etc/python_client_example/client.py."""

    timeout = 120

    async def setUp(self):
        self.gateway = await RunningGateway(self).start()

    async def assertNoKernels(self):
        code, kernels = await self.gateway.request("GET", "api/kernels")
        self.assertEqual((code, kernels), (200, []))

    async def test_helloWorld(self):
        """The client prints the kernel's Hello world!, deletes its kernel and exits 0."""
        code, out, err = await runClient(self, self.gateway.address)
        self.assertEqual(code, 0, f"stdout:\n{out}\nstderr:\n{err}")
        self.assertIn("Hello world!", out.splitlines())
        self.assertIn("Received message type: stream", out.splitlines())
        await self.assertNoKernels()

    async def test_roundTrips(self):
        """With --rtt N the client prints one line of round-trip times over N executions."""
        code, out, err = await runClient(self, self.gateway.address, "--rtt", "5")
        self.assertEqual(code, 0, f"stdout:\n{out}\nstderr:\n{err}")
        self.assertRegex(out, r"(?m)^rtt_ms median=\d+\.\d+ p90=\d+\.\d+ n=5$")
        median, p90 = map(float, re.search(r"median=(\S+) p90=(\S+)", out).groups())
        self.assertLessEqual(median, p90)
        await self.assertNoKernels()

    async def test_unreachableGateway(self):
        """A gateway that does not answer makes the client exit 1 with a message."""
        # A port that was free a moment ago: nothing listens on it any more.
        closed = reactor.listenTCP(0, Factory(), interface="127.0.0.1")
        port = closed.getHost().port
        await closed.stopListening()
        code, out, err = await runClient(self, f"127.0.0.1:{port}")
        self.assertEqual(code, 1, f"stdout:\n{out}\nstderr:\n{err}")
        self.assertIn("error: ", err)
