"""The channels websocket: one client's websocket joined to one kernel's ZeroMQ channels.

Speaks both wire formats of jupyter_server: the C{v1.kernel.websocket.jupyter.org} subprotocol,
whose frames carry the raw ZeroMQ parts (the content is relayed unparsed), and the legacy JSON
frames, built and read without re-encoding what need not change.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any, cast

from autobahn.twisted.websocket import WebSocketServerProtocol
from autobahn.websocket.types import ConnectionRequest
from prometheus_client import Counter
from twisted.internet.abstract import FileDescriptor
from twisted.internet.interfaces import (
    IConsumer,
    IDelayedCall,
    IPushProducer,
)
from twisted.logger import Logger
from zope.interface import implementer

from kgw.api import wire
from kgw.api.backlog import NOTICE_INTERVAL, OVERFLOW, Backlog, BacklogLimits, droppable
from kgw.api.invalidframes import InvalidFrames
from kgw.api.ratelimit import IOPubRateLimiter
from kgw.http.errors import errorBody
from kgw.jupyter import CLIENT_CHANNELS
from kgw.kernels.clientchannels import ClientChannels
from kgw.kernels.kernel import Kernel

log = Logger()

SWITCHING_PROTOCOLS = 101
CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY_VIOLATION = 1008
# Messages of at least this many bytes are sent without joining their pieces into one.
LARGE_FRAME = 1 << 18
# The most a websocket's TCP connection writes in one go (Twisted's default: 128 KiB).
SEND_LIMIT = 1 << 20


class _Uncounted:
    """The message counters of a protocol that no factory built, as in unit tests: none."""

    def __getitem__(self, channel: str) -> _Uncounted:
        return self

    def inc(self, amount: float = 1) -> None:
        pass


_UNCOUNTED: Any = _Uncounted()


@implementer(IPushProducer)
class ChannelsProtocol(WebSocketServerProtocol):
    """
    Relays messages between one websocket and one kernel.

    It is the producer of its transport, which pauses it when its buffer is full: the client
    is not reading as fast as the kernel writes. Messages then wait in its L{Backlog}, which
    bounds what a slow client can cost, until the transport resumes it.

    @ivar toClient: the counter of messages relayed to the client, by channel.
    @ivar toKernel: the counter of messages relayed to the kernel, by channel.
    @ivar handshakeStatus: the HTTP status that answered the opening handshake (C{None} until
        it is answered).
    """

    kernel: Kernel
    # Autobahn's options, set on each protocol from its factory's (read by sendMessage).
    autoFragmentSize: int
    logFrames: bool
    logOctets: bool
    maxMessagePayloadSize: int
    sessionId: str = ""
    handshakeStatus: int | None = None
    toClient: Mapping[str, Counter] = _UNCOUNTED
    toKernel: Mapping[str, Counter] = _UNCOUNTED

    def __init__(self) -> None:
        super().__init__()
        self.v1 = False
        self.channels: ClientChannels | None = None
        self.limiter: IOPubRateLimiter | None = None
        self.backlog = Backlog(BacklogLimits())
        self.invalidFrames = InvalidFrames()
        self.paused = False
        self._lastNotice = float("-inf")
        self._nextNotice: IDelayedCall | None = None

    def connectionMade(self) -> None:
        # Twisted sends at most SEND_LIMIT bytes per write and reactor turn; with bigger writes
        # a large output leaves sooner (measured: about 10% more MB/s for 8 MB).
        if isinstance(getattr(self.transport, "SEND_LIMIT", None), int):
            # Twisted's FileDescriptor has it, and the transports that stand for one.
            cast(FileDescriptor, self.transport).SEND_LIMIT = SEND_LIMIT
        # The HTTP channel that served the handshake is the transport's producer; this
        # protocol takes its place, to hear when the client cannot keep up. (A TCP or TLS
        # transport is a consumer; ITransport does not say so.)
        consumer = cast(IConsumer, self.transport)
        try:
            consumer.unregisterProducer()
        except RuntimeError:
            pass  # a transport that had none, and says so
        consumer.registerProducer(self, True)
        super().connectionMade()

    def sendMessage(
        self,
        payload: bytes,
        isBinary: bool = False,
        fragmentSize: int | None = None,
        sync: bool = False,
        doNotCompress: bool = False,
    ) -> None:
        """
        Send one message as one frame. A plain one (uncompressed, unfragmented, within the
        size limit, no frame logging) is framed here and written straight to the transport:
        the same bytes as Autobahn's, without its per-message bookkeeping and debug
        formatting, which cost about a tenth of the gateway's CPU relaying a flood of small
        messages. Anything else goes through Autobahn.
        """
        size = len(payload)
        if (
            fragmentSize is not None
            or sync
            or self.state != self.STATE_OPEN
            or self._perMessageCompress is not None
            or self.autoFragmentSize
            or self.logFrames
            or self.logOctets
            or self.trackedTimings
            or 0 < self.maxMessagePayloadSize < size
        ):
            super().sendMessage(payload, isBinary, fragmentSize, sync, doNotCompress)
            return
        opcode = 0x82 if isBinary else 0x81
        if size < 126:
            head = bytes((opcode, size))
        elif size < 0x10000:
            head = struct.pack("!BBH", opcode, 126, size)
        else:
            head = struct.pack("!BBQ", opcode, 127, size)
        transport = self.transport
        assert transport is not None  # open, so connected
        transport.write(head + payload)

    def onConnect(self, request: ConnectionRequest) -> str | None:
        if wire.V1_PROTOCOL in request.protocols:
            self.v1 = True
            return wire.V1_PROTOCOL
        return None

    def succeedHandshake(self, res: Any) -> None:
        # Autobahn may still refuse here (a subprotocol not asked for): failHandshake then says.
        self.handshakeStatus = SWITCHING_PROTOCOLS
        super().succeedHandshake(res)

    def failHandshake(
        self, reason: str, code: int = 400, responseHeaders: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.handshakeStatus = code
        super().failHandshake(reason, code, responseHeaders)

    def sendHttpErrorResponse(
        self, code: int, reason: str, responseHeaders: Sequence[tuple[str, str]] | None = None
    ) -> None:
        # Autobahn's refusal has no body; the gateway's are JSON, and the connection closes.
        body = errorBody(code, reason)
        headers = [
            *(responseHeaders or ()),
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            ("Connection", "close"),
        ]
        head = "".join(f"{name}: {value}\r\n" for name, value in headers)
        self.sendData(f"HTTP/1.1 {code} {reason}\r\n{head}\r\n".encode() + body)

    def onOpen(self) -> None:
        if self.kernel.channels is None:
            self.sendClose(CLOSE_NORMAL, "kernel is gone")
            return
        self.channels = self.kernel.channels.attach(self, self.sessionId)
        log.debug(
            "Websocket opened on kernel {kernelId} ({protocol})",
            kernelId=self.kernel.id,
            protocol="v1" if self.v1 else "legacy",
        )

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.channels is None:
            return
        try:
            if self.v1:
                if not isBinary:
                    raise wire.WireError("a v1 connection takes binary frames only")
                channel, parts = wire.decode_v1(payload)
                wire.check_header(parts[0])
            else:
                maybeChannel, msg = wire.decode_legacy(payload, isBinary)
                # Only a message without a channel goes to shell, as in jupyter_server.
                channel = "shell" if maybeChannel is None else maybeChannel
                parts = wire.dict_to_parts(msg)
        except wire.WireError as e:
            self._invalid(str(e))
            return
        if channel not in CLIENT_CHANNELS:
            self._invalid(f"no such channel as {channel!r}")
            return
        self.invalidFrames.valid()
        self.toKernel[channel].inc()
        self.channels.send(channel, parts)

    def _invalid(self, error: str) -> None:
        """Ignore an invalid message: log it within limits, and close after too many in a row."""
        verdict = self.invalidFrames.invalid(self.factory.clock.seconds())
        if verdict.first:
            log.warn(
                "Ignored an invalid message from a client of kernel {kernelId}: {error} (the "
                "next ones from this connection are counted, and logged every {interval:g} s)",
                kernelId=self.kernel.id,
                error=error,
                interval=self.invalidFrames.interval,
            )
        elif verdict.counted:
            self._logInvalid(verdict.counted, error)
        if verdict.close and self.state == self.STATE_OPEN:
            log.warn(
                "Closed a websocket of kernel {kernelId} after {count} invalid messages in a row",
                kernelId=self.kernel.id,
                count=self.invalidFrames.streak,
            )
            self.sendCloseFrame(
                code=CLOSE_POLICY_VIOLATION, reasonUtf8=b"too many invalid messages"
            )

    def _logInvalid(self, count: int, error: str = "") -> None:
        log.warn(
            "Ignored {count} more invalid messages from a client of kernel {kernelId}{last}",
            count=count,
            kernelId=self.kernel.id,
            last=f"; the last: {error}" if error else "",
        )

    def relay(self, channel: str, header: dict[str, Any], parts: Sequence[bytes]) -> None:
        """Send one message from the kernel to this client, in the client's wire format."""
        if self.state != self.STATE_OPEN:
            return  # closing: the kernel's message can no longer reach this client
        if channel == "iopub" and self.limiter is not None:
            send, notice = self.limiter.admit(
                self.factory.clock.seconds(), str(header.get("msg_type", "")), parts
            )
            if notice is not None:
                self._tell(notice, parts[1])
            if not send:
                return
        self._deliver(channel, header, parts, droppable(channel, str(header.get("msg_type", ""))))

    def _deliver(
        self, channel: str, header: dict[str, Any], parts: Sequence[bytes], mayDrop: bool
    ) -> None:
        """Send a message now, or keep it in the backlog while the client is behind."""
        if not self.paused and not self.backlog:
            self.toClient[channel].inc()
            self._writeMessage(channel, header, parts)
            return
        if self.backlog.add(channel, header, parts, mayDrop) == OVERFLOW:
            log.warn(
                "Disconnected a client of kernel {kernelId} that did not read its replies: "
                "{size} bytes in {count} messages were waiting for it",
                kernelId=self.kernel.id,
                size=self.backlog.size,
                count=len(self.backlog),
            )
            self.backlog.clear()
            self.dropConnection(abort=True)

    def pauseProducing(self) -> None:
        """The transport's buffer is full: keep messages back."""
        self.paused = True

    def resumeProducing(self) -> None:
        """The transport has sent its buffer: send what waits, until it is full again."""
        self.paused = False
        while self.backlog and not self.paused and self.state == self.STATE_OPEN:
            channel, header, parts = self.backlog.pop()
            self.toClient[channel].inc()
            self._writeMessage(channel, header, parts)
        if not self.backlog:
            self.backlog.caughtUp()
            self._tellDropped()

    def _tellDropped(self) -> None:
        """
        Tell the client what was dropped, once it has caught up, and at most every
        L{NOTICE_INTERVAL} seconds: a client that keeps falling behind is told the sum.
        """
        if self.backlog.dropping or self.backlog.droppedMessages == 0:
            return  # told when it catches up, or nothing to tell
        now = self.factory.clock.seconds()
        wait = self._lastNotice + NOTICE_INTERVAL - now
        if wait > 0:
            if self._nextNotice is None:
                self._nextNotice = self.factory.clock.callLater(wait, self._noticeDue)
            return
        self._lastNotice = now
        parent = self.backlog.droppedParent
        notice = self.backlog.notice()
        if notice is not None:
            self._tell(notice, parent)

    def _noticeDue(self) -> None:
        self._nextNotice = None
        self._tellDropped()

    def stopProducing(self) -> None:
        """The connection is gone: what waits for it goes too."""
        self.paused = True
        self.backlog.clear()
        if self._nextNotice is not None and self._nextNotice.active():
            self._nextNotice.cancel()
        self._nextNotice = None

    def _tell(self, text: str, parent: bytes) -> None:
        """Send the client a stderr stream message of the gateway's own, under C{parent}."""
        if self.kernel.channels is None:
            return
        header, parts = self.kernel.channels.signer.message(
            "stream", {"name": "stderr", "text": text}
        )
        parts[1] = parent
        # Never dropped: it says what was.
        self._deliver("iopub", header, parts, mayDrop=False)

    def _writeMessage(self, channel: str, header: dict[str, Any], parts: Sequence[bytes]) -> None:
        # Not _send: Autobahn's own _send writes its queued frames.
        if self.v1:
            pieces, isBinary = wire.pieces_v1(channel, parts), True
        else:
            pieces, isBinary = wire.pieces_legacy(
                channel,
                str(header.get("msg_id", "")),
                str(header.get("msg_type", "")),
                parts,
            )
        size = sum(len(piece) for piece in pieces)
        if size < LARGE_FRAME:
            self.sendMessage(b"".join(pieces), isBinary=isBinary)
            return
        # A large message goes out piece by piece in one frame, never joined into a copy.
        self.beginMessage(isBinary=isBinary)
        self.beginMessageFrame(size)
        for piece in pieces:
            self.sendMessageFrameData(piece)
        self.endMessage()

    def kernelGone(self, code: int, reason: str) -> None:
        """The kernel is going away: close the websocket with C{code}."""
        self.channels = None
        if self.state == self.STATE_OPEN:
            # sendClose() refuses the protocol-level codes (1001, 1011) that say what happened.
            self.sendCloseFrame(code=code, reasonUtf8=reason.encode("utf-8")[:123])
        else:
            self.dropConnection(abort=True)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        self.stopProducing()
        unlogged = self.invalidFrames.flush()
        if unlogged:
            self._logInvalid(unlogged)
        if self.channels is not None and self.kernel.channels is not None:
            # A client that closes normally is done; any other end may be followed by a return.
            done = wasClean and not self.closedByMe and self.remoteCloseCode == CLOSE_NORMAL
            self.kernel.channels.detach(self, keep=not done)
        self.channels = None
