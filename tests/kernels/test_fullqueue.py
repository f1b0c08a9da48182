"""A paced socket whose ZeroMQ queue was full reads again on the next turn, not after a pause."""

from __future__ import annotations

import time

import zmq
from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase
from txzmq import ZmqFactory

from kgw.kernels.sockets import JupyterSocket, Pacing
from tests.kernels.test_sockets import pause
from tests.support import TIMEOUT

LIMIT = 8


class FullQueueTests(TestCase):
    async def test_fullQueueReadAgainAtOnce(self) -> None:
        """
        A read that took a full queue's worth of messages (about the receive limit) schedules the
        next read on the next turn, not after the pacing interval: otherwise the relay would
        be capped at one queue per interval, below what a kernel publishes.
        """
        factory = ZmqFactory()
        self.addCleanup(factory.shutdown)
        pub = factory.context.socket(zmq.PUB)
        self.addCleanup(pub.close, 0)
        port = pub.bind_to_random_port("tcp://127.0.0.1")
        clock = Clock()
        received: list[bytes] = []
        sock = JupyterSocket(
            factory,
            zmq.SUB,
            f"tcp://127.0.0.1:{port}",
            lambda frames: received.append(frames[0]),
            clock=clock,
            pacing=Pacing(),
            receiveLimit=LIMIT,
        )
        deadline = time.monotonic() + TIMEOUT
        while not received:
            self.assertLess(time.monotonic(), deadline, "never subscribed")
            clock.advance(1)
            pub.send(b"hello")
            await pause(0.01)
        await pause(0.05)
        clock.advance(1)
        received.clear()
        for i in range(10 * LIMIT):
            pub.send(b"%d" % i)
        # Let ZeroMQ fill the socket's queue, then read it as the reactor would.
        time.sleep(0.2)
        sock.doRead()
        # A full queue, which ZeroMQ may hold one message short of the limit.
        self.assertGreaterEqual(len(received), LIMIT - 1)
        due = [c.getTime() - clock.seconds() for c in clock.getDelayedCalls() if c.active()]
        self.assertEqual(due, [0])
        while len(received) < 10 * LIMIT:
            self.assertLess(time.monotonic(), deadline, f"{len(received)} arrived")
            clock.advance(Pacing().interval)
            await pause(0.01)
        self.assertEqual(received, [b"%d" % i for i in range(10 * LIMIT)])
