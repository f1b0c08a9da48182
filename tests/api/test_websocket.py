"""The channels protocol's relay, in memory: what it sends for a message from the kernel."""

from __future__ import annotations

import json
from typing import Any

from jupyter_client.session import Session
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogLevel, capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kgw.api import wire
from kgw.api.backlog import BacklogLimits
from kgw.api.factory import ChannelsFactory
from kgw.api.websocket import SEND_LIMIT, ChannelsProtocol
from kgw.kernels.signing import Signer

# Valid JSON that no encoder would produce: spacing and key order show whether it was re-encoded.
CONTENT = b'{ "b" : 2,   "a" : [1,2] }'
PARTS = [b'{"msg_id": "m1", "msg_type": "stream"}', b"{}", b"{}", CONTENT]


class _ClockTimer:
    """Autobahn's timers (handshake timeouts, pings) on a test clock, not the global reactor."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def call_later(self, delay: float, function: Any, *args: Any, **kw: Any) -> Any:
        return self.clock.callLater(delay, function, *args, **kw)


def channelsFactory(clock: Clock, **kw: Any) -> ChannelsFactory:
    """A channels factory whose websockets schedule on C{clock}, Autobahn's timers included."""
    factory = ChannelsFactory(clock=clock, **kw)
    factory._batched_timer = _ClockTimer(clock)
    return factory


def relayed(
    v1: bool, parts: list[bytes], state: int = ChannelsProtocol.STATE_OPEN
) -> list[tuple[bytes, bool]]:
    protocol = ChannelsProtocol()
    protocol.v1 = v1
    protocol.state = state
    sent: list[tuple[bytes, bool]] = []
    protocol.sendMessage = lambda payload, isBinary=False: sent.append((payload, isBinary))
    protocol.relay("iopub", json.loads(parts[0]), parts)
    return sent


class RelayTests(SynchronousTestCase):
    def test_v1RelaysRawParts(self):
        """In v1 the kernel's parts go out byte for byte, content unparsed."""
        [(payload, isBinary)] = relayed(True, PARTS)
        self.assertTrue(isBinary)
        self.assertEqual(wire.decode_v1(payload), ("iopub", PARTS))

    def test_legacyKeepsContentBytes(self):
        """In the legacy format the content's JSON text is embedded as the kernel wrote it."""
        [(payload, isBinary)] = relayed(False, PARTS)
        self.assertFalse(isBinary)
        self.assertIn(CONTENT, payload)
        msg = json.loads(payload)
        self.assertEqual(
            (msg["msg_id"], msg["msg_type"], msg["channel"]), ("m1", "stream", "iopub")
        )

    def test_legacyBuffersAreBinary(self):
        """A message with buffers goes out as a legacy binary frame carrying them."""
        [(payload, isBinary)] = relayed(False, [*PARTS, b"\x00\x01", b"\xff"])
        self.assertTrue(isBinary)
        _, msg = wire.decode_legacy(payload, True)
        self.assertEqual(msg["buffers"], [b"\x00\x01", b"\xff"])
        self.assertEqual(msg["content"], {"a": [1, 2], "b": 2})

    def test_nothingSentWhileClosing(self):
        """A message from the kernel is dropped once the websocket is closing, not sent."""
        self.assertEqual(relayed(True, PARTS, ChannelsProtocol.STATE_CLOSING), [])
        self.assertEqual(relayed(False, PARTS, ChannelsProtocol.STATE_CLOSED), [])


class TransportTests(SynchronousTestCase):
    def connect(self, transport: StringTransport) -> None:
        protocol = channelsFactory(Clock(), maxMessageSize=1 << 20).buildProtocol(None)
        protocol.makeConnection(transport)
        # Autobahn's handshake timer goes with the connection.
        self.addCleanup(protocol.connectionLost, Failure(ConnectionDone()))

    def test_largerWrites(self):
        """A TCP transport writes up to 1 MiB at a time, not Twisted's 128 KiB."""
        transport = StringTransport()
        transport.SEND_LIMIT = 128 * 1024
        self.connect(transport)
        self.assertEqual(transport.SEND_LIMIT, SEND_LIMIT)
        self.assertEqual(SEND_LIMIT, 1 << 20)

    def test_otherTransportsUntouched(self):
        """A transport without a send limit (TLS, say) gets none."""
        transport = StringTransport()
        self.connect(transport)
        self.assertFalse(hasattr(transport, "SEND_LIMIT"))


class _KernelChannels:
    signer = Signer(Session(key=b"secret"))

    def detach(self, client: object, keep: bool) -> None:
        pass


class _Kernel:
    """What a channels protocol needs of its kernel: a real signer for notices of its own."""

    id = "k"
    channels = _KernelChannels()


def stream(size: int, parent: str = "cell") -> tuple[dict, list[bytes]]:
    header = {"msg_id": "m", "msg_type": "stream"}
    parts = [json.dumps(header).encode(), json.dumps({"msg_id": parent}).encode(), b"{}"]
    return header, [*parts, json.dumps({"name": "stdout", "text": "x" * size}).encode()]


class SlowClientTests(SynchronousTestCase):
    """A client whose transport is full: messages wait in a bounded backlog."""

    def setUp(self) -> None:
        self.clock = Clock()
        factory = channelsFactory(
            self.clock, maxMessageSize=1 << 20, backlogLimits=BacklogLimits(maxBytes=2500)
        )
        self.protocol = factory.forKernel(_Kernel(), "").buildProtocol(None)
        self.transport = StringTransport()
        self.httpChannel = object()
        self.transport.registerProducer(self.httpChannel, True)
        self.protocol.makeConnection(self.transport)
        self.addCleanup(self.protocol.connectionLost, Failure(ConnectionDone()))
        self.protocol.state = ChannelsProtocol.STATE_OPEN
        self.sent: list[dict] = []
        self.protocol.sendMessage = lambda payload, isBinary=False: self.sent.append(
            json.loads(payload)
        )

    def relay(self, channel: str, header: dict, parts: list[bytes]) -> None:
        self.protocol.relay(channel, header, parts)

    def noticeCalls(self) -> list:
        return [c for c in self.clock.getDelayedCalls() if c.func == self.protocol._noticeDue]

    def kinds(self) -> list[str]:
        return [m["header"]["msg_type"] for m in self.sent]

    def test_producerOfItsTransport(self):
        """The protocol takes the HTTP channel's place as its transport's streaming producer."""
        self.assertIs(self.transport.producer, self.protocol)
        self.assertTrue(self.transport.streaming)

    def test_heldWhilePausedSentInOrderOnResume(self):
        """While the transport is full nothing is written; on resumption all goes, in order."""
        self.protocol.pauseProducing()
        for size in (10, 20, 30):
            self.relay("iopub", *stream(size))
        self.assertEqual(self.sent, [])
        self.protocol.resumeProducing()
        self.assertEqual([len(m["content"]["text"]) for m in self.sent], [10, 20, 30])

    def test_outputDroppedPastBoundRepliesKept(self):
        """
        Past the bound, output is dropped and replies and statuses kept; once caught up, the
        client is told how much was dropped, under the parent of the last message dropped.
        """
        self.protocol.pauseProducing()
        self.relay("iopub", *stream(1000))
        self.relay("iopub", *stream(1000))
        self.relay("iopub", *stream(1000, parent="a"))
        self.relay(
            "shell",
            {"msg_type": "execute_reply"},
            [b'{"msg_type": "execute_reply"}', b"{}", b"{}", b"{}"],
        )
        self.relay("iopub", *stream(1000, parent="b"))
        self.relay(
            "iopub", {"msg_type": "status"}, [b'{"msg_type": "status"}', b"{}", b"{}", b"{}"]
        )
        self.protocol.resumeProducing()
        self.assertEqual(self.kinds(), ["stream", "stream", "execute_reply", "status", "stream"])
        notice = self.sent[-1]
        self.assertEqual(notice["content"]["name"], "stderr")
        self.assertIn("2 output messages", notice["content"]["text"])
        self.assertEqual(notice["parent_header"], {"msg_id": "b"})
        self.assertEqual(notice["channel"], "iopub")

    def test_noticesAtMostEveryTenSeconds(self):
        """
        A client that falls behind again within 10 s of a notice is told, 10 s after it,
        the sum of what it lost since; the timer goes with the connection.
        """
        for parent in ("a", "b", "c"):
            self.protocol.pauseProducing()
            self.relay("iopub", *stream(2000))
            self.relay("iopub", *stream(2000, parent=parent))
            self.relay("iopub", *stream(2000, parent=parent))
            self.protocol.resumeProducing()
            self.clock.advance(3)
        notices = [m for m in self.sent if m["content"]["name"] == "stderr"]
        self.assertEqual(len(notices), 1)
        self.assertIn("2 output messages", notices[0]["content"]["text"])
        self.clock.advance(1)
        notices = [m for m in self.sent if m["content"]["name"] == "stderr"]
        self.assertEqual(len(notices), 2)
        self.assertIn("4 output messages", notices[1]["content"]["text"])
        self.assertEqual(notices[1]["parent_header"], {"msg_id": "c"})
        self.protocol.pauseProducing()
        self.relay("iopub", *stream(2000))
        self.relay("iopub", *stream(2000))
        self.protocol.resumeProducing()
        self.assertEqual(len(self.noticeCalls()), 1)
        self.protocol.onClose(False, 1006, None)
        self.assertEqual(self.noticeCalls(), [])

    def test_resumedButFullAgainKeepsTheRest(self):
        """A transport that fills again while the backlog drains pauses it again."""
        self.protocol.pauseProducing()
        for size in (10, 20, 30):
            self.relay("iopub", *stream(size))
        self.protocol.sendMessage = lambda payload, isBinary=False: (
            self.sent.append(json.loads(payload)),
            self.protocol.pauseProducing(),
        )
        self.protocol.resumeProducing()
        self.assertEqual(len(self.sent), 1)
        self.protocol.resumeProducing()
        self.assertEqual(len(self.sent), 2)

    def test_unreadRepliesDisconnect(self):
        """A client that lets replies pile up past twice the bound is disconnected, logged."""
        self.protocol.pauseProducing()
        reply = [b'{"msg_type": "execute_reply"}', b"{}", b"{}", b"x" * 1000]
        with capturedLogs() as events:
            for _ in range(5):
                self.relay("shell", {"msg_type": "execute_reply"}, reply)
        self.assertTrue(self.transport.disconnected)
        self.assertEqual(len(self.protocol.backlog), 0)
        [warning] = [e for e in events if "did not read its replies" in e["log_format"]]
        self.assertEqual(warning["log_level"], LogLevel.warn)

    def test_goneConnectionFreesBacklog(self):
        """When the connection goes, what waited for it is let go."""
        self.protocol.pauseProducing()
        self.relay("iopub", *stream(1000))
        self.protocol.stopProducing()
        self.assertEqual((len(self.protocol.backlog), self.protocol.backlog.size), (0, 0))


class InvalidFrameTests(SynchronousTestCase):
    """Invalid messages from a client: logged within limits, and too many in a row close it."""

    def setUp(self) -> None:
        self.clock = Clock()
        factory = channelsFactory(self.clock, maxMessageSize=1 << 20)
        self.protocol = factory.forKernel(_Kernel(), "").buildProtocol(None)
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)
        self.addCleanup(self.protocol.connectionLost, Failure(ConnectionDone()))
        self.protocol.state = ChannelsProtocol.STATE_OPEN
        self.forwarded: list[str] = []
        self.protocol.channels = type(
            "Channels", (), {"send": lambda _, channel, parts: self.forwarded.append(channel)}
        )()
        self.transport.clear()

    def warnings(self, events: list[dict]) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]

    def garbage(self, count: int) -> None:
        for _ in range(count):
            self.protocol.onMessage(b"not json", False)

    def valid(self) -> None:
        header = {"msg_id": "m", "msg_type": "kernel_info_request", "session": "s"}
        msg = {"header": header, "parent_header": {}, "metadata": {}, "content": {}}
        self.protocol.onMessage(json.dumps({**msg, "channel": "shell"}).encode(), False)

    def closeCode(self) -> int | None:
        """The code of the close frame written to the transport, if one was."""
        data = self.transport.value()
        if len(data) < 4 or data[0] != 0x88:
            return None
        return int.from_bytes(data[2:4], "big")

    def test_firstLoggedThenCountsEveryTenSeconds(self):
        """The first invalid message is logged in full; the next ones as a count every 10 s."""
        with capturedLogs() as events:
            self.garbage(1)
            self.assertEqual(len(self.warnings(events)), 1)
            self.assertIn("not valid JSON", self.warnings(events)[0])
            self.garbage(50)
            self.assertEqual(len(self.warnings(events)), 1)
            self.clock.advance(10)
            self.valid()
            self.garbage(1)
            self.assertEqual(len(self.warnings(events)), 2)
            self.assertIn("Ignored 51 more invalid messages", self.warnings(events)[1])
            self.garbage(5)
            self.protocol.onClose(False, 1006, None)
            self.assertIn("Ignored 5 more invalid messages", self.warnings(events)[2])
        self.assertEqual(self.forwarded, ["shell"])
        self.assertIsNone(self.closeCode())

    def test_hundredInARowClose1008(self):
        """After 100 invalid messages in a row the connection is closed with 1008."""
        with capturedLogs() as events:
            self.garbage(99)
            self.assertIsNone(self.closeCode())
            self.garbage(1)
        self.assertEqual(self.closeCode(), 1008)
        self.assertIn("after 100 invalid messages in a row", self.warnings(events)[-1])

    def test_validMessageResetsStreak(self):
        """A valid message between invalid ones starts the count of those in a row again."""
        self.garbage(99)
        self.valid()
        self.garbage(99)
        self.assertIsNone(self.closeCode())
        self.garbage(1)
        self.assertEqual(self.closeCode(), 1008)

    def test_unknownChannelIsInvalid(self):
        """A message on a channel clients may not send on counts as invalid, and is not sent."""
        header = {"msg_id": "m", "msg_type": "execute_request", "session": "s"}
        msg = {"header": header, "parent_header": {}, "metadata": {}, "content": {}}
        for _ in range(100):
            self.protocol.onMessage(json.dumps({**msg, "channel": "iopub"}).encode(), False)
        self.assertEqual(self.forwarded, [])
        self.assertEqual(self.closeCode(), 1008)
