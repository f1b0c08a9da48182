"""The ZeroMQ side of a kernel: signed Jupyter messages over txZMQ sockets.

One L{KernelChannels} per kernel owns the iopub subscription, which lives as long as the kernel
so that no client ever joins late and misses output, and fans each iopub message out to every
attached client. Each attached client gets its own shell, control and stdin DEALER sockets, all
with one identity, so the kernel's replies and input requests reach only the client that asked.

Messages travel as "parts": the ZeroMQ frames after the signature, C{[header, parent_header,
metadata, content, *buffers]}, as bytes. Only the header is parsed on the way through.
"""

from __future__ import annotations

import hmac
import json
import os
from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import zmq
from jupyter_client.session import Session
from twisted.internet.defer import Deferred, fail
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from txzmq import ZmqConnection, ZmqEndpoint, ZmqEndpointType, ZmqFactory

if TYPE_CHECKING:
    from kgw.kernels.execution import KernelCaller

DELIMITER = b"<IDS|MSG>"
CLIENT_CHANNELS = ("shell", "control", "stdin")

log = Logger()


class MessageError(ValueError):
    """A ZeroMQ message that is not a correctly signed Jupyter message."""


class Client(Protocol):
    """What a kernel's channels deliver messages to (a websocket, in practice)."""

    def relay(self, channel: str, header: dict[str, Any], parts: Sequence[bytes]) -> None:
        """Deliver one message from the kernel."""

    def kernelGone(self, code: int, reason: str) -> None:
        """The kernel is shutting down or dead: close with websocket C{code} and C{reason}."""


class Signer:
    """Signs and checks messages with a kernel's key, as L{Session} defines the signature."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def sign(self, parts: Sequence[bytes]) -> bytes:
        auth = self._session.auth
        if auth is None:
            return b""
        h = auth.copy()
        for part in parts[:4]:
            h.update(part)
        return h.hexdigest().encode("ascii")

    def frames(self, parts: Sequence[bytes]) -> list[bytes]:
        """The ZeroMQ frames that carry C{parts} to a kernel."""
        return [DELIMITER, self.sign(parts), *parts]

    def unwrap(self, frames: list[bytes]) -> tuple[dict[str, Any], list[bytes]]:
        """
        Check a message from the kernel and return its parsed header and its parts.

        @raise MessageError: if the delimiter is missing, the signature is wrong or the header
            is not a JSON object.
        """
        try:
            start = frames.index(DELIMITER)
        except ValueError:
            raise MessageError("no delimiter") from None
        signature = frames[start + 1] if len(frames) > start + 1 else b""
        parts = frames[start + 2 :]
        if len(parts) < 4:
            raise MessageError(f"{len(parts)} parts, expected at least 4")
        if self._session.auth is not None and not hmac.compare_digest(signature, self.sign(parts)):
            raise MessageError("invalid signature")
        try:
            header = json.loads(parts[0])
        except ValueError:
            raise MessageError("header is not JSON") from None
        if not isinstance(header, dict):
            raise MessageError("header is not an object")
        return header, parts

    def message(self, msgType: str, content: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
        """A new message from the gateway itself, as a parsed header and parts."""
        msg = self._session.msg(msgType, content=content)
        parts = self._session.serialize(msg)[2:]
        return json.loads(parts[0]), parts


class JupyterSocket(ZmqConnection):
    """
    A txZMQ connection that passes whole multipart messages to a callback, unframed.

    Messages given to L{sendMessage} wait, in order, while the socket is L{held} (its kernel is
    restarting and its iopub is not subscribed yet) or has no peer (txZMQ's C{send} raises
    C{EAGAIN} rather than queueing), and go as soon as they can.

    @param immediate: queue nothing inside ZeroMQ for a peer that is not connected (a dead
        kernel), so that such messages wait here, where holding applies to them.
    """

    retryInterval = 0.02
    maxBacklog = 10_000

    def __init__(
        self,
        factory: ZmqFactory,
        socketType: int,
        address: str,
        onMessage: Callable[[list[bytes]], None],
        identity: bytes | None = None,
        clock: IReactorTime | None = None,
        immediate: bool = False,
    ) -> None:
        # ZmqConnection.__init__ reads socketType and may deliver messages at once.
        self.socketType = socketType
        self._onMessage = onMessage
        self.clock = clock if clock is not None else factory.reactor
        self.held = False
        self._backlog: deque[list[bytes]] = deque()
        self._retry: IDelayedCall | None = None
        super().__init__(factory, None, identity)
        if immediate:
            self.socket.setsockopt(zmq.IMMEDIATE, 1)
        if socketType == zmq.SUB:
            self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.addEndpoints([ZmqEndpoint(ZmqEndpointType.connect, address)])

    def messageReceived(self, message: list[bytes]) -> None:
        self._onMessage(message)

    def sendMessage(self, frames: list[bytes]) -> None:
        """Send C{frames} now, or as soon as the socket is released and has a peer."""
        if not self._backlog and not self.held and self._trySend(frames):
            return
        if len(self._backlog) >= self.maxBacklog:
            log.warn("Dropped a message: {count} are waiting for the kernel", count=self.maxBacklog)
            return
        self._backlog.append(frames)
        self._flush()

    def hold(self) -> None:
        """Keep messages back until L{release}."""
        self.held = True

    def release(self) -> None:
        """Send what was kept back."""
        self.held = False
        self._flush()

    def _trySend(self, frames: list[bytes]) -> bool:
        try:
            self.send(frames)
        except zmq.ZMQError as e:
            if e.errno == zmq.EAGAIN:
                return False
            raise
        return True

    def _flush(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self.held or self.socket is None:
            return
        while self._backlog and self._trySend(self._backlog[0]):
            self._backlog.popleft()
        if self._backlog:
            self._retry = self.clock.callLater(self.retryInterval, self._flush)

    def shutdown(self) -> None:
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        self._backlog.clear()
        super().shutdown()


def address(info: dict[str, Any], channel: str) -> str:
    """The ZeroMQ address of one of a kernel's channels, from its connection info."""
    port = info[f"{channel}_port"]
    if info.get("transport", "tcp") == "ipc":
        return f"ipc://{info['ip']}-{port}"
    return f"tcp://{info['ip']}:{port}"


class KernelChannels:
    """
    The ZeroMQ connections to one kernel: its iopub subscription and its clients' sockets.

    @param onMessage: called with C{(channel, header, parts)} for every message received from the
        kernel, before it is relayed: the registry keeps the kernel's state with it.
    """

    def __init__(
        self,
        factory: ZmqFactory,
        info: dict[str, Any],
        session: Session,
        clock: IReactorTime,
        onMessage: Callable[[str, dict[str, Any], Sequence[bytes]], None],
    ) -> None:
        self.signer = Signer(session)
        self.factory = factory
        self.info = info
        self.clock = clock
        self._onMessage = onMessage
        self.clients: dict[Client, ClientChannels] = {}
        self.closed = False
        self.held = False
        self._iopubWaiters: list[Callable[[], None]] = []
        self._caller: KernelCaller | None = None
        self._readyWaits: set[Callable[[object], None]] = set()
        self._iopub = JupyterSocket(
            factory, zmq.SUB, address(info, "iopub"), self._iopubReceived, clock=clock
        )

    def _iopubReceived(self, frames: list[bytes]) -> None:
        try:
            header, parts = self.signer.unwrap(frames)
        except MessageError as e:
            log.warn("Dropped an iopub message from the kernel: {error}", error=e)
            return
        waiters, self._iopubWaiters = self._iopubWaiters, []
        for waiter in waiters:
            waiter()
        if header.get("msg_type") == "iopub_welcome":
            # ipykernel 7 greets each new subscription (JEP 65); it is meant for this
            # subscriber, the gateway, not for the clients, who did not subscribe.
            return
        self._onMessage("iopub", header, parts)
        if self._caller is not None:
            self._caller.iopubReceived(header, parts)
        for client in list(self.clients):
            client.relay("iopub", header, parts)

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
        done: Deferred[None] = Deferred()
        if self.closed:
            done.errback(ConnectionDone("the kernel's channels are closed"))
            return done
        state = {"reply": False, "iopub": False}
        pending: list[IDelayedCall] = []

        def check() -> None:
            if state["reply"] and state["iopub"] and not done.called:
                finish(None)

        def gotReply(frames: list[bytes]) -> None:
            try:
                header, _ = self.signer.unwrap(frames)
            except MessageError:
                return
            if header.get("msg_type") == "kernel_info_reply":
                state["reply"] = True
                check()

        def gotIOPub() -> None:
            state["iopub"] = True
            check()

        def finish(result: object) -> None:
            self._readyWaits.discard(finish)
            for call in pending:
                if call.active():
                    call.cancel()
            if gotIOPub in self._iopubWaiters:
                self._iopubWaiters.remove(gotIOPub)
            shell.shutdown()
            if isinstance(result, Exception):
                done.errback(result)
            else:
                done.callback(None)

        shell = JupyterSocket(
            self.factory, zmq.DEALER, address(self.info, "shell"), gotReply, clock=self.clock
        )
        self._iopubWaiters.append(gotIOPub)
        self._readyWaits.add(finish)
        deadline = self.clock.seconds() + timeout

        def nudge(pause: float) -> None:
            if done.called:
                return
            if self.clock.seconds() >= deadline:
                finish(DeferredTimeout(f"the kernel did not answer within {timeout} s"))
                return
            _, parts = self.signer.message("kernel_info_request", {})
            shell.sendMessage(self.signer.frames(parts))
            pending[:] = [self.clock.callLater(pause, nudge, min(pause * 2, 1.0))]

        nudge(0.1)
        return done

    @property
    def caller(self) -> KernelCaller:
        """The gateway's own shell connection to the kernel, opened when first needed."""
        if self._caller is None:
            from kgw.kernels.execution import KernelCaller

            self._caller = KernelCaller(self)
        return self._caller

    def execute(self, code: str) -> Deferred[dict[str, Any]]:
        """
        Run C{code} for the gateway itself and fire with its C{execute_reply} content, once the
        kernel is idle again. Clients see its iopub messages, not its reply.
        """
        if self.closed:
            return fail(ConnectionDone("the kernel's channels are closed"))
        return self.caller.execute(code)

    def hold(self) -> None:
        """
        Keep clients' messages back while the kernel restarts: until iopub is subscribed again,
        the output of anything the new kernel ran would be lost.
        """
        self.held = True
        for channels in self.clients.values():
            channels.hold()
        if self._caller is not None:
            self._caller.hold()

    def release(self) -> None:
        """Send the messages kept back since L{hold}."""
        self.held = False
        for channels in self.clients.values():
            channels.release()
        if self._caller is not None:
            self._caller.release()

    def attach(self, client: Client) -> ClientChannels:
        """Give C{client} its own shell, control and stdin sockets and start relaying to it."""
        channels = ClientChannels(self, client, self.factory, self.info)
        if self.held:
            channels.hold()
        self.clients[client] = channels
        return channels

    def detach(self, client: Client) -> None:
        """Stop relaying to C{client} and close its sockets."""
        channels = self.clients.pop(client, None)
        if channels is not None:
            channels.close()

    def close(self, code: int, reason: str) -> None:
        """
        Tell every client the kernel is gone, with websocket close C{code}; close all sockets.
        A L{waitUntilReady} or L{execute} still waiting fails. Closing again does nothing.
        """
        if self.closed:
            return
        self.closed = True
        for finish in list(self._readyWaits):
            finish(ConnectionDone("the kernel's channels were closed"))
        if self._caller is not None:
            self._caller.close(ConnectionDone("the kernel's channels were closed"))
        for client in list(self.clients):
            self.detach(client)
            client.kernelGone(code, reason)
        self._iopub.shutdown()

    def clientReceived(self, channel: str, header: dict[str, Any], parts: Sequence[bytes]) -> None:
        self._onMessage(channel, header, parts)


class ClientChannels:
    """One client's shell, control and stdin sockets to a kernel, sharing one identity."""

    def __init__(
        self,
        kernel: KernelChannels,
        client: Client,
        factory: ZmqFactory,
        info: dict[str, Any],
    ) -> None:
        self._kernel = kernel
        self._client = client
        identity = os.urandom(16).hex().encode("ascii")
        self._sockets = {
            channel: JupyterSocket(
                factory,
                zmq.DEALER,
                address(info, channel),
                lambda frames, channel=channel: self._received(channel, frames),
                identity,
                kernel.clock,
                immediate=True,
            )
            for channel in CLIENT_CHANNELS
        }

    def send(self, channel: str, parts: Sequence[bytes]) -> None:
        """Sign C{parts} and send them to the kernel on C{channel} (shell, control or stdin)."""
        self._sockets[channel].sendMessage(self._kernel.signer.frames(parts))

    def hold(self) -> None:
        for socket in self._sockets.values():
            socket.hold()

    def release(self) -> None:
        for socket in self._sockets.values():
            socket.release()

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
        self._client.relay(channel, header, parts)

    def close(self) -> None:
        for socket in self._sockets.values():
            socket.shutdown()
        self._sockets.clear()
