"""
A fake ZeroMQ for the kernel channels: sockets that record what the gateway sends, and a kernel
end that signs the messages a test delivers to them. Nothing runs: no process, no ZeroMQ.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from jupyter_client.session import Session

from kgw.kernels.sockets import MessageSocket, Pacing

INFO: dict[str, Any] = {
    "transport": "tcp",
    "ip": "127.0.0.1",
    "shell_port": 50001,
    "iopub_port": 50002,
    "stdin_port": 50003,
    "control_port": 50004,
    "hb_port": 50005,
}

_CHANNELS = {
    f"tcp://127.0.0.1:{INFO[f'{channel}_port']}": channel
    for channel in ("shell", "iopub", "stdin", "control")
}


class FakeSocket:
    """
    A socket to the fake kernel. What the gateway sends lands in C{sent}, kept back while the
    socket is held, as a L{kgw.kernels.sockets.JupyterSocket} keeps it; L{receive} delivers a
    message from the kernel.
    """

    def __init__(
        self,
        socketType: int,
        channel: str,
        onMessage: Callable[[list[bytes]], None],
        identity: bytes | None,
        immediate: bool,
        pacing: Pacing | None,
    ) -> None:
        self.socketType = socketType
        self.channel = channel
        self.identity = identity
        self.immediate = immediate
        self.pacing = pacing
        self._onMessage = onMessage
        self.sent: list[list[bytes]] = []
        self.held = False
        self._kept: list[list[bytes]] = []
        self.closed = False
        self.address = ""
        self.waitsFor: MessageSocket | None = None

    def sendMessage(self, frames: list[bytes]) -> None:
        assert not self.closed, f"sent on a closed {self.channel} socket"
        (self._kept if self.held else self.sent).append(frames)

    def hold(self) -> None:
        self.held = True

    def release(self) -> None:
        self.held = False
        self.sent.extend(self._kept)
        self._kept.clear()

    def moveTo(self, address: str) -> None:
        self.address = address

    def after(self, other: MessageSocket) -> None:
        # The fake kernel is always connected: nothing to wait for.
        self.waitsFor = other

    def connected(self) -> bool:
        return not self.closed

    def shutdown(self) -> None:
        self.closed = True
        self._kept.clear()

    def receive(self, frames: list[bytes]) -> None:
        """The kernel sends C{frames} to this socket."""
        assert not self.closed, f"a message for a closed {self.channel} socket"
        self._onMessage(frames)

    def requests(self) -> list[dict[str, Any]]:
        """The headers of the messages sent to the kernel, in order."""
        return [json.loads(frames[2]) for frames in self.sent]


class FakeZmq:
    """
    Stands for txZMQ (a L{kgw.kernels.sockets.SocketOpener}): opens L{FakeSocket}s to the
    channels of L{INFO}, and keeps every one it opened.
    """

    def __init__(self) -> None:
        self.sockets: list[FakeSocket] = []

    def __call__(
        self,
        socketType: int,
        address: str,
        onMessage: Callable[[list[bytes]], None],
        identity: bytes | None = None,
        *,
        immediate: bool = False,
        pacing: Pacing | None = None,
        receiveLimit: int = 0,
    ) -> FakeSocket:
        socket = FakeSocket(socketType, _CHANNELS[address], onMessage, identity, immediate, pacing)
        socket.address = address
        self.sockets.append(socket)
        return socket

    def open(self, channel: str) -> list[FakeSocket]:
        """The sockets to C{channel} still open, oldest first."""
        return [s for s in self.sockets if s.channel == channel and not s.closed]


class FakeKernel:
    """The kernel's end: a session with the kernel's key, to sign and read messages."""

    def __init__(self, key: bytes = b"kernel-key") -> None:
        self.session = Session(key=key, username="kernel")

    def message(
        self,
        msgType: str,
        content: dict[str, Any] | None = None,
        parent: dict[str, Any] | None = None,
    ) -> list[bytes]:
        """The frames of a new message, signed, in reply to C{parent} (a header) if given."""
        msg = self.session.msg(msgType, content=content or {}, parent=parent)
        frames: list[bytes] = self.session.serialize(msg)
        return frames

    def signedByGateway(self, frames: list[bytes]) -> bool:
        """Whether C{frames}, sent by the gateway, carry a valid signature."""
        try:
            _, rest = self.session.feed_identities(frames)
            self.session.deserialize(rest)
        except ValueError:
            return False
        return True
