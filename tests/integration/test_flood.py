"""
A kernel flooding its output, with clients that cannot keep up: the gateway's memory stays
bounded, it keeps answering, the kernel can be interrupted, and the memory comes back.

Each test runs a real C{twistd kgw} (so that its resident memory is its own, read from
C{/proc/PID/status}), starts the flooding cell from a client of one kind (it never reads, reads
slowly, or reads as fast as it can; see L{tests.integration.floodclient}), and watches the
gateway for L{DURATION} seconds.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field

from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.integration.test_daemon import spawnTwistd
from tests.support import GatewayClient, childProcesses, isAlive, withTimeout

FLOOD = 'import sys\nwhile True: print("x" * 10**6); sys.stdout.flush()'
# Seconds of flood for each kind of client.
DURATION = 30.0
POLL = 0.5
MAX_RSS = 400
SETTLED_RSS = 200
# Past this the test stops at once, to spare the machine: the bound is already broken.
ABORT_RSS = 1500
API_LATENCY = 1.0
INTERRUPT_LATENCY = 2.0
# How long memory may take to come back once the client has left.
SETTLE = 20.0
# Seconds of flood after a client that never read has dropped its connection: its session's
# replay buffer fills meanwhile.
BUFFERED = 5.0


def residentMB(pid: int) -> float:
    """The resident memory of process C{pid}, in MB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for {pid}")


class FloodClient(protocol.ProcessProtocol):
    """A L{tests.integration.floodclient} process; its lines are events."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.opened: Deferred[None] = Deferred()
        self.replied: Deferred[float] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self._partial = b""
        self.errors = b""

    def outReceived(self, data: bytes) -> None:
        *lines, self._partial = (self._partial + data).split(b"\n")
        for raw in lines:
            line = raw.decode()
            self.lines.append(line)
            if line == "open" and not self.opened.called:
                self.opened.callback(None)
            elif line == "reply" and not self.replied.called:
                self.replied.callback(time.monotonic())

    def errReceived(self, data: bytes) -> None:
        self.errors += data

    def processEnded(self, reason) -> None:
        if not self.opened.called:
            self.opened.errback(RuntimeError(self.errors.decode(errors="replace")))
        self.ended.callback(None)

    def notices(self) -> list[str]:
        """The gateway's notices of dropped output (the kernel may write to stderr too)."""
        return [line for line in self.lines if line.startswith('notice "[kgw]')]


@dataclass
class Watch:
    """What was seen of the gateway during one flood."""

    origin: float = field(default_factory=time.monotonic)
    peakRSS: float = 0.0
    worstAPI: float = 0.0
    samples: list[tuple[float, float, float]] = field(default_factory=list)


class FloodTests(TestCase):
    """The flooding cell, with one client of each kind."""

    timeout = DURATION + 120

    async def setUp(self) -> None:
        runtime = os.path.abspath(self.mktemp())
        os.makedirs(runtime)
        env = dict(os.environ, JUPYTER_RUNTIME_DIR=runtime, PYTHONPATH=os.pathsep.join(sys.path))
        self.daemon = spawnTwistd(self, "-n", "--pidfile=", "kgw", "--port=0", env=env)
        port = await withTimeout(self.daemon.listening)
        self.pid = self.daemon.pid
        self.gateway = GatewayClient(self, port)
        self.kernel = (await self.gateway.startKernel())["id"]
        self.kernelPids = childProcesses(self.pid)
        self.addCleanup(self.stopDaemon)

    async def stopDaemon(self) -> None:
        """Stop the gateway; its kernels must have ended with it (any that did not is killed)."""
        if not self.daemon.ended.called:
            os.kill(self.pid, signal.SIGTERM)
            await withTimeout(self.daemon.ended)
        strays = [pid for pid in self.kernelPids if isAlive(pid)]
        for pid in strays:
            os.kill(pid, signal.SIGKILL)
        self.assertEqual(strays, [])

    def spawnClient(self, mode: str) -> FloodClient:
        client = FloodClient()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        args = [sys.executable, "-m", "tests.integration.floodclient", mode]
        args += [str(self.gateway.portNumber), self.kernel, FLOOD]
        transport = reactor.spawnProcess(client, sys.executable, args, env=env)

        def reap() -> Deferred[None] | None:
            if client.ended.called:
                return None
            os.kill(transport.pid, signal.SIGKILL)
            return client.ended

        self.addCleanup(reap)
        client.transport = transport
        return client

    async def watch(self, seconds: float, seen: Watch | None = None) -> Watch:
        """Poll C{GET /api} and the gateway's memory every L{POLL} seconds for C{seconds}."""
        seen = seen if seen is not None else Watch()
        start = time.monotonic()
        while time.monotonic() - start < seconds:
            before = time.monotonic()
            code, _ = await withTimeout(ensureDeferred(self.gateway.request("GET", "api")), 10)
            latency = time.monotonic() - before
            self.assertEqual(code, 200)
            rss = residentMB(self.pid)
            seen.samples.append((before - seen.origin, rss, latency))
            seen.peakRSS = max(seen.peakRSS, rss)
            seen.worstAPI = max(seen.worstAPI, latency)
            if rss > ABORT_RSS:
                break
            await deferLater(reactor, max(0.0, POLL - (time.monotonic() - before)))
        return seen

    async def interrupt(self) -> float:
        """Interrupt the kernel; the seconds until the gateway sees it idle."""
        start = time.monotonic()
        code, _ = await self.gateway.request("POST", f"api/kernels/{self.kernel}/interrupt", {})
        self.assertEqual(code, 204)
        while True:
            _, model = await self.gateway.request("GET", f"api/kernels/{self.kernel}")
            if model["execution_state"] == "idle":
                return time.monotonic() - start
            if time.monotonic() - start > 30:
                self.fail("the kernel was not idle 30 s after the interrupt")
            await deferLater(reactor, 0.05)

    async def settle(self) -> float:
        """Wait until the gateway's memory is under L{SETTLED_RSS}; return what it is then."""
        start = time.monotonic()
        rss = residentMB(self.pid)
        while rss >= SETTLED_RSS and time.monotonic() - start < SETTLE:
            await deferLater(reactor, POLL)
            rss = residentMB(self.pid)
        return rss

    async def flood(self, mode: str) -> FloodClient:
        """
        Flood a client of kind C{mode} for L{DURATION} seconds and check the gateway's bounds;
        return the client, gone.
        """
        client = self.spawnClient(mode)
        await withTimeout(client.opened)
        seen = await self.watch(DURATION)
        if mode == "never":
            # It drops its connection, without a closing handshake, in the middle of the flood.
            client.transport.closeStdin()
            await withTimeout(client.ended)
            await self.watch(BUFFERED, seen)
        interrupted = await self.interrupt() if seen.peakRSS <= ABORT_RSS else float("nan")
        replied = None
        if mode != "never" and seen.peakRSS <= ABORT_RSS:
            start = time.monotonic()
            replied = await withTimeout(client.replied, 60) - start
        if mode != "never":
            client.transport.closeStdin()
            await withTimeout(client.ended)
        after = await self.settle()
        print(
            f"\nflood[{mode}]: peak RSS {seen.peakRSS:.0f} MB, GET /api worst "
            f"{seen.worstAPI * 1000:.0f} ms, idle {interrupted:.2f} s after the interrupt"
            + (f" (reply at the client {replied:.2f} s)" if replied is not None else "")
            + f", RSS {after:.0f} MB after the client left; {client.lines[-1]}; "
            f"notices: {len(client.notices())}; "
            + " ".join(f"{t:.0f}s:{rss:.0f}MB/{api * 1000:.0f}ms" for t, rss, api in seen.samples),
            file=sys.stderr,
        )
        self.assertLess(seen.peakRSS, MAX_RSS, seen.samples)
        self.assertLess(seen.worstAPI, API_LATENCY, seen.samples)
        self.assertLess(interrupted, INTERRUPT_LATENCY)
        self.assertLess(after, SETTLED_RSS)
        return client

    async def test_neverReads(self):
        """
        A client that never reads, then drops its connection while the flood goes on (its
        session's replay buffer fills): memory bounded, /api and interrupt prompt, memory back.
        """
        await self.flood("never")

    async def test_readsSlowly(self):
        """A client reading slowly gets its reply and notices of what it lost, within bounds."""
        client = await self.flood("slow")
        self.assertTrue(client.notices())
        for notice in client.notices():
            self.assertIn("output messages", notice)

    async def test_readsAtFullSpeed(self):
        """A client reading as fast as it can: memory bounded, /api and interrupt prompt."""
        await self.flood("full")
