"""One client's sockets to a kernel: shell, control and stdin, sharing one identity."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol

import zmq
from twisted.logger import Logger

from kgw.kernels.signing import MessageError, Signer
from kgw.kernels.sockets import MessageSocket, address

log = Logger()


class Client(Protocol):
    """What a kernel's channels deliver messages to (a websocket, in practice)."""

    def relay(self, channel: str, header: dict[str, Any], parts: Sequence[bytes]) -> None:
        """Deliver one message from the kernel."""

    def kernelGone(self, code: int, reason: str) -> None:
        """The kernel is shutting down or dead: close with websocket C{code} and C{reason}."""


class KernelSide(Protocol):
    """What a client's sockets need of their kernel's channels (L{KernelChannels})."""

    signer: Signer

    def openSocket(
        self,
        socketType: int,
        channel: str,
        onMessage: Callable[[list[bytes]], None],
        identity: bytes | None = None,
        **options: Any,
    ) -> MessageSocket:
        """A new socket to the kernel's C{channel}."""

    def clientReceived(self, channel: str, header: dict[str, Any], parts: Sequence[bytes]) -> None:
        """A message from the kernel to one client, seen before it is relayed."""


class ClientChannels:
    """
    One client's shell, control and stdin sockets to a kernel, sharing one identity.

    Each socket is opened when the client first sends on its channel, so that a websocket
    that only listens costs no ZeroMQ socket at all (each costs the gateway some 30 KB, and
    the kernel as much). The stdin socket opens with the shell one: the kernel sends its
    input requests to the identity of the shell request that asked for them, and drops them
    if no socket of that identity is connected to its stdin yet; so the first shell message
    waits until the stdin socket is connected.
    """

    def __init__(self, kernel: KernelSide, client: Client) -> None:
        self._kernel = kernel
        self.client = client
        self.sessionId = ""
        self._identity = os.urandom(16).hex().encode("ascii")
        self._sockets: dict[str, MessageSocket] = {}
        self._held = False
        self._closed = False

    @property
    def opened(self) -> list[str]:
        """The channels whose sockets are open, in the order they were opened."""
        return list(self._sockets)

    def _socket(self, channel: str) -> MessageSocket:
        socket = self._sockets.get(channel)
        if socket is None:
            socket = self._kernel.openSocket(
                zmq.DEALER,
                channel,
                partial(self._received, channel),
                self._identity,
                immediate=True,
            )
            if self._held:
                socket.hold()
            self._sockets[channel] = socket
        return socket

    def send(self, channel: str, parts: Sequence[bytes]) -> None:
        """Sign C{parts} and send them to the kernel on C{channel} (shell, control or stdin)."""
        if self._closed:
            return
        if channel == "shell" and "shell" not in self._sockets:
            stdin = self._socket("stdin")
            self._socket("shell").after(stdin)
        self._socket(channel).sendMessage(self._kernel.signer.frames(parts))

    def hold(self) -> None:
        self._held = True
        for socket in self._sockets.values():
            socket.hold()

    def release(self) -> None:
        self._held = False
        for socket in self._sockets.values():
            socket.release()

    def follow(self, info: dict[str, Any]) -> None:
        """Reconnect this client's sockets to the kernel at C{info}."""
        for channel, socket in self._sockets.items():
            socket.moveTo(address(info, channel))

    def _received(self, channel: str, frames: list[bytes]) -> None:
        try:
            header, parts = self._kernel.signer.unwrap(frames)
        except MessageError as e:
            log.warn(
                "Dropped a {channel} message from the kernel: {error}",
                channel=channel,
                error=e,
            )
            return
        self._kernel.clientReceived(channel, header, parts)
        self.client.relay(channel, header, parts)

    def close(self) -> None:
        self._closed = True
        for socket in self._sockets.values():
            socket.shutdown()
        self._sockets.clear()
