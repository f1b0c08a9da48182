"""ZeroMQ plumbing for Jupyter messages: txZMQ sockets that keep frames whole.

Messages travel as "parts": the ZeroMQ frames after the signature, C{[header, parent_header,
metadata, content, *buffers]}, as bytes.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, cast

import zmq
from twisted.internet.base import DelayedCall
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from txzmq import ZmqConnection, ZmqEndpoint, ZmqEndpointType, ZmqFactory

log = Logger()


@dataclass(frozen=True)
class Pacing:
    """
    How a socket reads a stream of messages: in batches, every C{interval} seconds, once
    C{streak} messages in a row came less than C{gap} seconds apart; each as it comes again
    once a batch holds fewer than C{calm}.

    While a kernel streams output, the gateway then wakes once per batch rather than once per
    message, and relays a batch to each client in one write: about half the CPU per relayed
    message. Sparse messages, such as a request's busy and idle statuses, never form a streak,
    so their latency is untouched; a stream's messages wait at most C{interval}.

    A read takes at most C{most} bytes; the rest is read once the reactor has served what else
    is ready. A kernel flooding large outputs faster than they are relayed then never holds the
    reactor for the whole of ZeroMQ's receive queue, and HTTP requests keep being answered.
    """

    gap: float = 0.001
    streak: int = 16
    interval: float = 0.004
    calm: int = 2
    most: int = 1024 * 1024


class JupyterSocket(ZmqConnection):
    """
    A txZMQ connection that passes whole multipart messages to a callback, unframed.

    Messages given to L{sendMessage} wait, in order, while the socket is L{held} (its kernel is
    restarting and its iopub is not subscribed yet), has no peer (txZMQ's C{send} raises
    C{EAGAIN} rather than queueing) or waits for another socket to have one (L{after}), and
    go as soon as they can: tried again after 1 ms, then at growing intervals up to
    C{retryInterval}, so that the first message of a socket just opened is not held up.

    @param immediate: queue nothing inside ZeroMQ for a peer that is not connected (a dead
        kernel), so that such messages wait here, where holding applies to them.
    @param pacing: read streams of messages in batches (see L{Pacing}); each message as it
        comes when C{None}.
    @param receiveLimit: the most messages ZeroMQ may queue for this socket to read (0: no
        limit). txZMQ sets none: a kernel faster than the gateway would fill its memory.
    """

    firstRetry = 0.001
    retryInterval = 0.02
    maxBacklog = 10_000
    # Set by txZMQ, which does not annotate them.
    read_scheduled: DelayedCall | None
    endpoints: list[ZmqEndpoint]

    def __init__(
        self,
        factory: ZmqFactory,
        socketType: int,
        address: str,
        onMessage: Callable[[list[bytes]], None],
        identity: bytes | None = None,
        clock: IReactorTime | None = None,
        immediate: bool = False,
        pacing: Pacing | None = None,
        receiveLimit: int = 0,
    ) -> None:
        # ZmqConnection.__init__ reads socketType and may deliver messages at once.
        self.socketType = socketType
        self._onMessage = onMessage
        self.clock = clock if clock is not None else factory.reactor
        self.held = False
        self._backlog: deque[list[bytes]] = deque()
        self._retry: IDelayedCall | None = None
        self._retryDelay = self.firstRetry
        self._after: MessageSocket | None = None
        self._pacing = pacing
        self._receiveLimit = receiveLimit
        self.paced = False
        self._streak = 0
        self._lastArrival = -1.0
        self._resume: IDelayedCall | None = None
        super().__init__(factory, None, identity)
        if immediate:
            self.socket.setsockopt(zmq.IMMEDIATE, 1)
        if receiveLimit:
            # Before connecting: a pipe takes the limit in force when it is made.
            self.socket.setsockopt(zmq.RCVHWM, receiveLimit)
        if socketType == zmq.SUB:
            self.socket.setsockopt(zmq.SUBSCRIBE, b"")
        self.addEndpoints([ZmqEndpoint(ZmqEndpointType.connect, address)])

    def messageReceived(self, message: list[bytes]) -> None:
        self._onMessage(message)

    def doRead(self) -> None:
        """
        Deliver every message waiting, as txZMQ's C{doRead} does, but without setting up a
        logging context for each; a callback that raises is logged and reading goes on. Then
        pause reading if the messages are streaming in (see L{Pacing}).
        """
        if self.read_scheduled is not None:
            if not self.read_scheduled.called:
                self.read_scheduled.cancel()
            self.read_scheduled = None
        if self._resume is not None and self._resume.active():
            return  # paused: the batch is read when reading resumes
        pacing = self._pacing
        received = taken = 0
        while self.factory is not None:
            socket = self.socket
            if not socket.get(zmq.EVENTS) & zmq.POLLIN:
                break
            try:
                message = socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                continue
            received += 1
            if pacing is not None and not self.paced:
                now = self.clock.seconds()
                self._streak = self._streak + 1 if now - self._lastArrival < pacing.gap else 0
                self._lastArrival = now
            try:
                self.messageReceived(message)
            except Exception:
                log.failure("Handling a message from the kernel failed")
            if pacing is not None:
                taken += sum(len(frame) for frame in message)
                if taken >= pacing.most:
                    break
        if pacing is None or self.factory is None:
            return
        if taken >= pacing.most or 0 < self._receiveLimit <= 2 * received:
            # ZeroMQ signals new messages, not waiting ones: the rest must be asked for. A read
            # that took half a full queue or more (ZeroMQ refills the queue once half of it is
            # read) comes back on the next turn, not after a paced pause: a pause per queue
            # would cap the relay at a queue per interval (64 messages every 4 ms), below the
            # rate of a kernel that publishes without pause, whose own queue then overflows.
            self.factory.reactor.removeReader(self)
            self._resume = self.clock.callLater(0, self._resumeReading)
            return
        if self.paced and received < pacing.calm:
            self.paced = False
            self._streak = 0
        elif self.paced or self._streak >= pacing.streak:
            self.paced = True
            self.factory.reactor.removeReader(self)
            self._resume = self.clock.callLater(pacing.interval, self._resumeReading)

    def _resumeReading(self) -> None:
        self._resume = None
        if self.factory is None:
            return
        self.factory.reactor.addReader(self)
        self.doRead()

    def sendMessage(self, frames: list[bytes]) -> None:
        """Send C{frames} now, or as soon as the socket is released and has a peer."""
        if not self._backlog and not self.held and self._trySend(frames):
            return
        if len(self._backlog) >= self.maxBacklog:
            log.warn("Dropped a message: {count} are waiting for the kernel", count=self.maxBacklog)
            return
        self._backlog.append(frames)
        self._flush()

    def after(self, other: MessageSocket) -> None:
        """
        Send nothing until C{other}, a socket made with C{immediate}, is connected to its peer
        (or closed).
        """
        self._after = other

    def connected(self) -> bool:
        """Whether this socket, made with C{immediate}, has a peer connected to write to."""
        if self.socket is None:
            return False
        ready = bool(self.socket.get(zmq.EVENTS) & zmq.POLLOUT)
        # Reading ZeroMQ's events can take the signal of a message waiting to be read: read
        # soon, as txZMQ does after a send.
        if self.read_scheduled is None:
            self.read_scheduled = cast(DelayedCall, self.clock.callLater(0, self.doRead))
        return ready

    def hold(self) -> None:
        """Keep messages back until L{release}."""
        self.held = True

    def release(self) -> None:
        """Send what was kept back."""
        self.held = False
        self._flush()

    def _trySend(self, frames: list[bytes]) -> bool:
        if self._after is not None:
            if not self._after.connected():
                return False
            self._after = None
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
            self._retry = self.clock.callLater(self._retryDelay, self._flush)
            self._retryDelay = min(self._retryDelay * 2, self.retryInterval)
        else:
            self._retryDelay = self.firstRetry

    def moveTo(self, address: str) -> None:
        """
        Connect to C{address} in place of the current peer (a remote kernel restarted
        elsewhere); messages waiting to be sent go to the new peer.
        """
        if self.socket is None or [e.address for e in self.endpoints] == [address]:
            return
        for endpoint in self.endpoints:
            try:
                self.socket.disconnect(endpoint.address)
            except zmq.ZMQError:
                pass
        self.endpoints = []
        self.addEndpoints([ZmqEndpoint(ZmqEndpointType.connect, address)])

    def shutdown(self) -> None:
        """Close the socket; what still waits to be sent is dropped. Closing again does nothing."""
        if self.factory is None:
            return
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        self._retry = None
        if self._resume is not None and self._resume.active():
            self._resume.cancel()
        self._resume = None
        self._backlog.clear()
        super().shutdown()


class MessageSocket(Protocol):
    """What a kernel's channels use of a socket to the kernel (a L{JupyterSocket})."""

    def sendMessage(self, frames: list[bytes]) -> None:
        """Send C{frames}, or keep them, in order, until they can go."""

    def hold(self) -> None:
        """Keep what is sent back until L{release}."""

    def release(self) -> None:
        """Send what was kept back."""

    def moveTo(self, address: str) -> None:
        """Connect to C{address} in place of the current peer."""

    def after(self, other: MessageSocket) -> None:
        """Send nothing until C{other} is connected to its peer."""

    def connected(self) -> bool:
        """Whether a peer is connected to write to (made with C{immediate}; not once closed)."""

    def shutdown(self) -> None:
        """Close the socket; closing again does nothing."""


class SocketOpener(Protocol):
    """Opens a socket to a kernel: L{ZmqSockets}, or a test's fake ZeroMQ."""

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
    ) -> MessageSocket:
        """A socket of C{socketType} connected to C{address}, passing each message it receives
        to C{onMessage}; the options are L{JupyterSocket}'s."""


class ZmqSockets:
    """Opens L{JupyterSocket}s on one txZMQ factory, paced by one clock."""

    def __init__(self, factory: ZmqFactory, clock: IReactorTime) -> None:
        self.factory = factory
        self.clock = clock

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
    ) -> JupyterSocket:
        return JupyterSocket(
            self.factory,
            socketType,
            address,
            onMessage,
            identity,
            self.clock,
            immediate,
            pacing,
            receiveLimit,
        )


def address(info: dict[str, Any], channel: str) -> str:
    """The ZeroMQ address of one of a kernel's channels, from its connection info."""
    port = info[f"{channel}_port"]
    if info.get("transport", "tcp") == "ipc":
        return f"ipc://{info['ip']}-{port}"
    return f"tcp://{info['ip']}:{port}"
