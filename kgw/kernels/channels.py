"""The ZeroMQ side of a kernel: signed Jupyter messages over txZMQ sockets.

One L{KernelChannels} per kernel owns the iopub subscription, which lives as long as the kernel
so that no client ever joins late and misses output, and fans each iopub message out to every
attached client. Each attached client gets its own shell, control and stdin DEALER sockets, all
with one identity, so the kernel's replies and input requests reach only the client that asked;
each is opened when the client first uses its channel.
Only the header of a message is parsed on the way through.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol

import zmq
from jupyter_client.session import Session
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

from kgw.jupyter import CLIENT_CHANNELS
from kgw.kernels.buffering import BufferLimits, SessionBuffer
from kgw.kernels.clientchannels import Client, ClientChannels
from kgw.kernels.readiness import Probes, waitForAnswer
from kgw.kernels.signing import MessageError, Signer
from kgw.kernels.sockets import MessageSocket, Pacing, SocketOpener, address

# The most iopub messages ZeroMQ queues in the gateway for it to read. A kernel that outruns
# the gateway then fills its own queue (its high-water mark, 1000 messages), where the excess
# is dropped, rather than the gateway's memory: 1 MB messages, unbounded, took gigabytes.
IOPUB_RECEIVE_LIMIT = 64

log = Logger()


class Listener(Protocol):
    """
    One of the gateway's own users of a kernel's channels (L{kgw.kernels.execution.KernelCaller}):
    it sees every iopub message, and is told of holds and of the end.
    """

    def iopubReceived(self, header: dict[str, Any], parts: Sequence[bytes]) -> None:
        """A message the kernel published."""

    def hold(self) -> None:
        """The kernel restarts: what it was running is lost."""

    def release(self) -> None:
        """The kernel answers again."""

    def follow(self, info: dict[str, Any]) -> None:
        """The kernel restarted at C{info} (a remote kernel: other ports, maybe another host)."""

    def close(self, reason: Exception) -> None:
        """The channels are closed."""


class KernelChannels:
    """
    The ZeroMQ connections to one kernel: its iopub subscription and its clients' sockets.

    @param sockets: opens the sockets to the kernel (L{kgw.kernels.sockets.ZmqSockets}).
    @param onMessage: called with C{(channel, header, parts)} for every message received from the
        kernel, before it is relayed: the registry keeps the kernel's state with it.
    """

    def __init__(
        self,
        sockets: SocketOpener,
        info: dict[str, Any],
        session: Session,
        clock: IReactorTime,
        onMessage: Callable[[str, dict[str, Any], Sequence[bytes]], None],
        bufferLimits: BufferLimits | None = None,
    ) -> None:
        self.signer = Signer(session)
        self._sockets = sockets
        self.info = info
        self.clock = clock
        self._onMessage = onMessage
        self.clients: dict[Client, ClientChannels] = {}
        # Sessions whose last websocket closed: their buffer, sockets and expiry, by session id.
        self.buffers: dict[str, tuple[SessionBuffer, ClientChannels, IDelayedCall]] = {}
        self.bufferLimits = bufferLimits if bufferLimits is not None else BufferLimits()
        self.closed = False
        # Holds in force (a start and a restart may overlap): messages wait while any is.
        self._holds = 0
        self._iopubWaiters: list[Callable[[], None]] = []
        self._listeners: list[Listener] = []
        # The readiness waits in progress (see kgw.kernels.readiness), each ended by a close.
        self.readyWaits: set[Callable[[object], None]] = set()
        self.probes = Probes()
        self._iopub = self.openSocket(
            zmq.SUB,
            "iopub",
            self._iopubReceived,
            pacing=Pacing(),
            receiveLimit=IOPUB_RECEIVE_LIMIT,
        )

    def openSocket(
        self,
        socketType: int,
        channel: str,
        onMessage: Callable[[list[bytes]], None],
        identity: bytes | None = None,
        **options: Any,
    ) -> MessageSocket:
        """A new socket to the kernel's C{channel}; C{options} are C{JupyterSocket}'s."""
        where = address(self.info, channel)
        return self._sockets(socketType, where, onMessage, identity, **options)

    def _iopubReceived(self, frames: list[bytes]) -> None:
        try:
            header, parts = self.signer.unwrap(frames)
        except MessageError as e:
            log.warn("Dropped an iopub message from the kernel: {error}", error=e)
            return
        waiters, self._iopubWaiters = self._iopubWaiters, []
        for waiter in waiters:
            waiter()
        if self.probes and header.get("msg_type") == "status" and self.probes.claim(parts):
            return
        if header.get("msg_type") == "iopub_welcome":
            # ipykernel 7 greets each new subscription (JEP 65); it is meant for this
            # subscriber, the gateway, not for the clients, who did not subscribe.
            return
        self._onMessage("iopub", header, parts)
        for listener in self._listeners:
            listener.iopubReceived(header, parts)
        for client in list(self.clients):
            client.relay("iopub", header, parts)
        for buffer, _, _ in self.buffers.values():
            buffer.relay("iopub", header, parts)

    def broadcast(self, header: dict[str, Any], parts: Sequence[bytes]) -> None:
        """Send a message of the gateway's own to every client, as if it came on iopub."""
        for client in list(self.clients):
            client.relay("iopub", header, parts)

    def statusMessage(self, state: str) -> tuple[dict[str, Any], list[bytes]]:
        """An iopub C{status} message announcing C{state}, signed with the kernel's key."""
        return self.signer.message("status", {"execution_state": state})

    def waitUntilReady(self, timeout: float) -> Deferred[None]:
        """
        Fire once the kernel answers on shell and iopub is known to be subscribed.

        A SUB socket misses what is published before its subscription reaches the kernel, so
        C{kernel_info_request}s are sent, with growing pauses, until both a reply and an iopub
        message (the kernel publishes its busy/idle status for each request) have arrived.
        """
        return waitForAnswer(self, timeout, onControl=False).addCallback(lambda _: None)

    def waitUntilReachable(self, timeout: float) -> Deferred[bool]:
        """
        Fire once the kernel answers and iopub is known to be subscribed, with whether its
        shell is free: unlike L{waitUntilReady}, never waiting for code the kernel runs, as a
        kernel adopted from a gateway that died may be running.

        A C{kernel_info_request} is sent once on shell, where it waits behind the code
        running, and with growing pauses on control, which ipykernel (6 and later) serves on a
        thread of its own. The kernel answers once its shell replies and an iopub message
        came, or once it publishes the idle status ending one of the control requests (which
        proves iopub subscribed too). The statuses of those control requests say nothing of
        the shell: they are neither taken as the kernel's state nor relayed to clients.
        """
        return waitForAnswer(self, timeout, onControl=True)

    def whenIOPub(self, waiter: Callable[[], None]) -> None:
        """Call C{waiter} when the next iopub message comes."""
        self._iopubWaiters.append(waiter)

    def forgetIOPubWaiter(self, waiter: Callable[[], None]) -> None:
        if waiter in self._iopubWaiters:
            self._iopubWaiters.remove(waiter)

    def listen(self, listener: Listener) -> None:
        """Tell C{listener} of every iopub message, hold and release until the channels close."""
        self._listeners.append(listener)

    @property
    def held(self) -> bool:
        return self._holds > 0

    def hold(self) -> None:
        """
        Keep clients' messages back while the kernel starts or restarts: until iopub is
        subscribed, the output of anything the kernel ran would be lost. Each hold is ended by
        one L{release}.
        """
        self._holds += 1
        for channels in self._allClientChannels():
            channels.hold()
        for listener in self._listeners:
            listener.hold()

    def release(self) -> None:
        """End one L{hold}; once none is left, send the messages kept back."""
        self._holds = max(0, self._holds - 1)
        if self._holds:
            return
        for channels in self._allClientChannels():
            channels.release()
        for listener in self._listeners:
            listener.release()

    def follow(self, info: dict[str, Any]) -> None:
        """
        Reconnect every socket to the kernel at C{info}: a remote kernel that restarted may
        listen on other ports, even on another host. Nothing changes for the same addresses.
        """
        if all(address(info, c) == address(self.info, c) for c in (*CLIENT_CHANNELS, "iopub")):
            return
        self.info = info
        self._iopub.moveTo(address(info, "iopub"))
        for channels in self._allClientChannels():
            channels.follow(info)
        for listener in self._listeners:
            listener.follow(info)

    def _allClientChannels(self) -> list[ClientChannels]:
        return [*self.clients.values(), *(channels for _, channels, _ in self.buffers.values())]

    def attach(self, client: Client, sessionId: str = "") -> ClientChannels:
        """
        Give C{client} its own shell, control and stdin sockets and start relaying to it.

        If C{sessionId} names a session whose client went away, C{client} takes over its
        sockets and first gets what was kept for it, in order.
        """
        if sessionId in self.buffers:
            buffer, channels, expiry = self.buffers.pop(sessionId)
            if expiry.active():
                expiry.cancel()
            channels.client = client
            self.clients[client] = channels
            if buffer.dropped:
                client.relay(*self._droppedNotice(buffer.dropped))
            for channel, header, parts, _ in buffer.messages:
                client.relay(channel, header, parts)
            return channels
        channels = ClientChannels(self, client)
        channels.sessionId = sessionId
        if self.held:
            channels.hold()
        self.clients[client] = channels
        return channels

    def _droppedNotice(self, dropped: int) -> tuple[str, dict[str, Any], list[bytes]]:
        header, parts = self.signer.message(
            "stream",
            {
                "name": "stderr",
                "text": f"[kgw] {dropped} messages for this session were dropped while it was "
                "disconnected: the buffer limit was reached. The newest ones follow.\n",
            },
        )
        return "iopub", header, parts

    def detach(self, client: Client, keep: bool = True) -> None:
        """
        Stop relaying to C{client}. If it was the last client of its session and C{keep} (it did
        not say it was done), keep the session's sockets and buffer what the kernel sends for a
        while; otherwise close its sockets.
        """
        channels = self.clients.pop(client, None)
        if channels is None:
            return
        sessionId = channels.sessionId
        others = any(c.sessionId == sessionId for c in self.clients.values())
        if not keep or not sessionId or others or not self.bufferLimits.enabled or self.closed:
            channels.close()
            return
        while len(self.buffers) >= self.bufferLimits.maxSessions:
            # Each buffered session holds up to three sockets: the oldest goes first.
            oldest = next(iter(self.buffers))
            log.info("Dropped the buffer of disconnected session {sessionId}", sessionId=oldest)
            self._discard(self.buffers.pop(oldest))
        buffer = SessionBuffer(self.bufferLimits)
        channels.client = buffer
        expiry = self.clock.callLater(self.bufferLimits.timeout, self._expire, sessionId)
        old = self.buffers.pop(sessionId, None)
        if old is not None:
            self._discard(old)
        self.buffers[sessionId] = (buffer, channels, expiry)

    def _expire(self, sessionId: str) -> None:
        entry = self.buffers.pop(sessionId, None)
        if entry is not None:
            log.info("Dropped the buffer of disconnected session {sessionId}", sessionId=sessionId)
            self._discard(entry)

    def _discard(self, entry: tuple[SessionBuffer, ClientChannels, IDelayedCall]) -> None:
        _, channels, expiry = entry
        if expiry.active():
            expiry.cancel()
        channels.close()

    def close(self, code: int, reason: str) -> None:
        """
        Tell every client the kernel is gone, with websocket close C{code}; close all sockets.
        A L{waitUntilReady} still waiting, and every listener's work, fails. Closing again does
        nothing.
        """
        if self.closed:
            return
        self.closed = True
        self.probes.clear()
        for finish in list(self.readyWaits):
            finish(ConnectionDone("the kernel's channels were closed"))
        for listener in self._listeners:
            listener.close(ConnectionDone("the kernel's channels were closed"))
        for client in list(self.clients):
            self.clients.pop(client).close()
            client.kernelGone(code, reason)
        for entry in list(self.buffers.values()):
            self._discard(entry)
        self.buffers.clear()
        self._iopub.shutdown()

    def clientReceived(self, channel: str, header: dict[str, Any], parts: Sequence[bytes]) -> None:
        self._onMessage(channel, header, parts)
