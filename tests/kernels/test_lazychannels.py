"""
A client's shell, control and stdin sockets, opened only when the client first sends on them:
over real ZeroMQ sockets on loopback, with ROUTER sockets standing in for the kernel's.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Sequence
from typing import Any

import zmq
from jupyter_client.session import Session
from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock, deferLater
from twisted.trial.unittest import TestCase
from txzmq import ZmqFactory

from kgw.kernels.channels import KernelChannels
from kgw.kernels.signing import DELIMITER, Signer
from kgw.kernels.sockets import JupyterSocket, ZmqSockets
from tests.support import TIMEOUT


def pause(seconds: float) -> Deferred[None]:
    return deferLater(reactor, seconds)


def freePort() -> int:
    """A loopback port that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Recorder:
    """A client of a kernel's channels that records what it is sent."""

    def __init__(self) -> None:
        self.relayed: list[tuple[str, str]] = []

    def relay(self, channel: str, header: dict[str, Any], parts: Sequence[bytes]) -> None:
        self.relayed.append((channel, header["msg_type"]))

    def kernelGone(self, code: int, reason: str) -> None:
        pass


class FakeKernel:
    """ROUTER sockets on loopback for shell, control and stdin, and a PUB for iopub."""

    def __init__(self, test: TestCase, stdinPort: int = 0) -> None:
        self.factory = ZmqFactory()
        test.addCleanup(self.factory.shutdown)
        self.session = Session(key=b"secret")
        self.signer = Signer(self.session)
        context = self.factory.context
        self.routers: dict[str, zmq.Socket] = {}
        self.info: dict[str, Any] = {"ip": "127.0.0.1", "transport": "tcp"}
        for channel in ("shell", "control", "stdin", "iopub"):
            sock = context.socket(zmq.PUB if channel == "iopub" else zmq.ROUTER)
            test.addCleanup(sock.close, 0)
            if channel == "stdin" and stdinPort:
                # Nothing listens there until bindStdin.
                self.info["stdin_port"] = stdinPort
                self._stdin = sock
                continue
            self.routers[channel] = sock
            self.info[f"{channel}_port"] = sock.bind_to_random_port("tcp://127.0.0.1")
        self.channels = KernelChannels(
            ZmqSockets(self.factory, reactor), self.info, self.session, reactor, lambda *args: None
        )
        test.addCleanup(self.channels.close, 1001, "test over")

    def bindStdin(self) -> None:
        self._stdin.bind(f"tcp://127.0.0.1:{self.info['stdin_port']}")
        self.routers["stdin"] = self._stdin

    def message(self, msgType: str) -> list[bytes]:
        return self.signer.message(msgType, {})[1]

    async def receive(self, channel: str, within: float = TIMEOUT) -> list[bytes] | None:
        """The frames of the next message on C{channel}, or C{None} after C{within} seconds."""
        router = self.routers[channel]
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            try:
                return router.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                await pause(0.005)
        return None

    def reply(self, channel: str, identity: bytes, msgType: str) -> None:
        self.routers[channel].send_multipart([identity, *self.signer.frames(self.message(msgType))])


async def until(condition: Any) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("the condition was never met")
        await pause(0.005)


class LazySocketTests(TestCase):
    async def test_noSocketUntilUsed(self) -> None:
        """
        A client just attached has no ZeroMQ socket; its first shell message opens shell and
        stdin, its first control message control, and nothing else is opened on the way.
        """
        kernel = FakeKernel(self)
        channels = kernel.channels.attach(Recorder(), "session")
        self.assertEqual(channels.opened, [])
        channels.send("shell", kernel.message("kernel_info_request"))
        self.assertEqual(sorted(channels.opened), ["shell", "stdin"])
        self.assertIsNotNone(await kernel.receive("shell"))
        channels.send("shell", kernel.message("kernel_info_request"))
        self.assertIsNotNone(await kernel.receive("shell"))
        self.assertEqual(sorted(channels.opened), ["shell", "stdin"])
        channels.send("control", kernel.message("interrupt_request"))
        self.assertEqual(sorted(channels.opened), ["control", "shell", "stdin"])
        self.assertIsNotNone(await kernel.receive("control"))

    async def test_oneIdentityRepliesToItsClientOnly(self) -> None:
        """
        Sockets opened at different times share one identity, and the kernel's replies to it,
        on shell, stdin and control, reach that client and not another one.
        """
        kernel = FakeKernel(self)
        mine, other = Recorder(), Recorder()
        channels = kernel.channels.attach(mine, "a")
        otherChannels = kernel.channels.attach(other, "b")
        otherChannels.send("shell", kernel.message("kernel_info_request"))
        await kernel.receive("shell")
        channels.send("shell", kernel.message("execute_request"))
        shellFrames = await kernel.receive("shell")
        assert shellFrames is not None
        channels.send("control", kernel.message("interrupt_request"))
        controlFrames = await kernel.receive("control")
        assert controlFrames is not None
        identity = shellFrames[0]
        self.assertEqual(controlFrames[0], identity)
        self.assertEqual(shellFrames[1], DELIMITER)
        kernel.reply("stdin", identity, "input_request")
        kernel.reply("shell", identity, "execute_reply")
        kernel.reply("control", identity, "interrupt_reply")
        await until(lambda: len(mine.relayed) == 3)
        self.assertEqual(
            sorted(mine.relayed),
            [
                ("control", "interrupt_reply"),
                ("shell", "execute_reply"),
                ("stdin", "input_request"),
            ],
        )
        await pause(0.05)
        self.assertEqual(other.relayed, [])

    async def test_shellWaitsForStdin(self) -> None:
        """
        The first shell message is not sent before the stdin socket is connected: the kernel
        would drop an input request for an identity it does not know on stdin yet.
        """
        kernel = FakeKernel(self, stdinPort=freePort())
        channels = kernel.channels.attach(Recorder(), "session")
        channels.send("shell", kernel.message("execute_request"))
        self.assertIsNone(await kernel.receive("shell", within=0.3))
        kernel.bindStdin()
        frames = await kernel.receive("shell")
        self.assertIsNotNone(frames)

    def test_closedClientSendsNothing(self) -> None:
        """A client whose sockets were closed opens none again."""
        kernel = FakeKernel(self)
        channels = kernel.channels.attach(Recorder(), "session")
        channels.close()
        channels.send("shell", kernel.message("kernel_info_request"))
        self.assertEqual(channels.opened, [])


class RetryTests(TestCase):
    def test_firstRetriesSoon(self) -> None:
        """
        A message that finds no peer is tried again after 1 ms, then at doubling intervals up
        to C{retryInterval}, so that the first message of a socket just opened waits little.
        """
        factory = ZmqFactory()
        self.addCleanup(factory.shutdown)
        clock = Clock()
        sock = JupyterSocket(
            factory,
            zmq.DEALER,
            f"tcp://127.0.0.1:{freePort()}",
            lambda frames: None,
            clock=clock,
            immediate=True,
        )
        self.addCleanup(sock.shutdown)
        sock.sendMessage([b"x"])
        delays = []
        for _ in range(7):
            (call,) = [c for c in clock.getDelayedCalls() if c.func == sock._flush]
            delays.append(round(call.getTime() - clock.seconds(), 6))
            clock.advance(delays[-1])
        self.assertEqual(delays, [0.001, 0.002, 0.004, 0.008, 0.016, 0.02, 0.02])
