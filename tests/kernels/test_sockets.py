"""JupyterSocket's read loop over real ZeroMQ sockets on loopback: order, errors and pacing."""

from __future__ import annotations

import time

import zmq
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.logger import capturedLogs
from twisted.trial.unittest import TestCase
from txzmq import ZmqFactory

from kgw.kernels.sockets import JupyterSocket, Pacing
from tests.support import TIMEOUT

PACING = Pacing(gap=0.001, streak=16, interval=0.004, calm=2)


class Publisher:
    """A PUB socket on loopback and a JupyterSocket subscribed to it, recording what arrives."""

    def __init__(self, test: TestCase, pacing: Pacing | None, onMessage=None) -> None:
        self.factory = ZmqFactory()
        test.addCleanup(self.factory.shutdown)
        self.pub = self.factory.context.socket(zmq.PUB)
        test.addCleanup(self.pub.close, 0)
        port = self.pub.bind_to_random_port("tcp://127.0.0.1")
        self.clock = Clock()
        self.received: list[bytes] = []
        self.socket = JupyterSocket(
            self.factory,
            zmq.SUB,
            f"tcp://127.0.0.1:{port}",
            onMessage or (lambda frames: self.received.append(frames[0])),
            clock=self.clock,
            pacing=pacing,
        )

    async def joined(self) -> None:
        """Publish greetings until one arrives: the subscription has reached the publisher."""
        deadline = time.monotonic() + TIMEOUT
        while not self.received:
            if time.monotonic() > deadline:
                raise AssertionError("the subscription never reached the publisher")
            # Greetings far apart on the socket's clock: however many, they make no streak.
            self.clock.advance(1)
            self.pub.send(b"hello")
            await pause(0.01)
        # Any greeting still on its way, then none.
        await pause(0.05)
        self.clock.advance(1)
        assert not self.socket.paced
        self.received.clear()

    def publish(self, *bodies: bytes) -> None:
        """
        Publish C{bodies}; several are a burst: the reactor is then blocked a moment so that
        ZeroMQ's threads queue them all for the socket, which then finds them in one read,
        however busy the machine is.
        """
        for body in bodies:
            self.pub.send(body)
        if len(bodies) > 1:
            time.sleep(0.2)

    async def until(self, count: int) -> None:
        deadline = time.monotonic() + TIMEOUT
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.received)} of {count} messages arrived")
            await pause(0.005)


def pause(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds)


def numbered(start: int, stop: int) -> list[bytes]:
    return [b"%d" % i for i in range(start, stop)]


class PacingTests(TestCase):
    timeout = 60

    async def test_streamReadInBatches(self) -> None:
        """
        A stream of messages makes the socket stop reading and read again every C{interval}
        (here, when the test's clock says so); a batch smaller than C{calm} ends that, and the
        next message is read as it comes. Nothing is lost or reordered.
        """
        p = Publisher(self, PACING)
        await p.joined()
        p.publish(*numbered(0, 40))
        await p.until(40)
        self.assertTrue(p.socket.paced)
        # A read from elsewhere while paused (txZMQ schedules one after a send) neither reads
        # early nor schedules a second resumption.
        p.socket.doRead()
        self.assertEqual(len(p.clock.getDelayedCalls()), 1)
        p.publish(*numbered(40, 50))
        await pause(0.1)
        self.assertEqual(len(p.received), 40, "read while paused")
        p.clock.advance(PACING.interval)
        await p.until(50)
        self.assertTrue(p.socket.paced, "a batch of 10 keeps the pace")
        p.clock.advance(PACING.interval)
        self.assertFalse(p.socket.paced, "an empty batch ends it")
        self.assertEqual(p.clock.getDelayedCalls(), [])
        p.publish(b"50")
        await p.until(51)
        self.assertEqual(p.received, numbered(0, 51))

    async def test_sparseMessagesNotPaced(self) -> None:
        """Messages further apart than C{gap} are each read as they come, however many."""
        p = Publisher(self, PACING)
        await p.joined()
        for i in range(40):
            p.clock.advance(PACING.gap * 2)
            p.publish(b"%d" % i)
            await p.until(i + 1)
        self.assertFalse(p.socket.paced)
        self.assertEqual(p.received, numbered(0, 40))

    async def test_withoutPacing(self) -> None:
        """A socket without pacing reads each message as it comes, streaming or not."""
        p = Publisher(self, None)
        await p.joined()
        p.publish(*numbered(0, 100))
        await p.until(100)
        self.assertFalse(p.socket.paced)
        self.assertEqual(p.clock.getDelayedCalls(), [])

    async def test_readBoundedInBytes(self) -> None:
        """
        One read takes at most C{most} bytes, and the rest is read at the clock's next turn:
        a flood never holds the reactor for all that ZeroMQ has queued.
        """
        p = Publisher(self, Pacing(most=250))
        await p.joined()
        bodies = [b"%03d" % i + b"x" * 97 for i in range(10)]
        p.publish(*bodies)
        await p.until(3)
        await pause(0.1)
        self.assertEqual(len(p.received), 3)
        [resume] = p.clock.getDelayedCalls()
        self.assertEqual(resume.getTime(), p.clock.seconds())
        p.clock.advance(0)
        await p.until(10)
        self.assertEqual(p.received, bodies)

    def test_receiveLimit(self) -> None:
        """
        A receive limit bounds what ZeroMQ queues for the socket; without one, txZMQ leaves
        it unbounded (0), and a kernel faster than the gateway fills the gateway's memory.
        """
        limited = Publisher(self, PACING)
        self.assertEqual(limited.socket.socket.getsockopt(zmq.RCVHWM), 0)
        limited.socket.shutdown()
        factory = ZmqFactory()
        self.addCleanup(factory.shutdown)
        socket = JupyterSocket(
            factory, zmq.SUB, "tcp://127.0.0.1:1", lambda frames: None, receiveLimit=64
        )
        self.assertEqual(socket.socket.getsockopt(zmq.RCVHWM), 64)

    async def test_shutdownWhilePaused(self) -> None:
        """Shutting a paused socket down cancels its next read."""
        p = Publisher(self, PACING)
        await p.joined()
        p.publish(*numbered(0, 40))
        await p.until(40)
        self.assertTrue(p.socket.paced)
        p.socket.shutdown()
        self.assertEqual(p.clock.getDelayedCalls(), [])

    async def test_failingCallbackLogged(self) -> None:
        """A callback that raises is logged, and the messages after it are still delivered."""
        received: list[bytes] = []

        def onMessage(frames: list[bytes]) -> None:
            if frames[0] == b"bad":
                raise ValueError("no thanks")
            received.append(frames[0])

        p = Publisher(self, None, onMessage)
        p.received = received
        await p.joined()
        with capturedLogs() as events:
            p.publish(b"1", b"bad", b"2")
            await p.until(2)
        self.assertEqual(received, [b"1", b"2"])
        failures = [e for e in events if "log_failure" in e]
        self.assertEqual(len(failures), 1)
        self.assertIsInstance(failures[0]["log_failure"].value, ValueError)
        self.flushLoggedErrors(ValueError)
