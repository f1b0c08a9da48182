"""The channels protocol's relay, in memory: what it sends for a message from the kernel."""

from __future__ import annotations

import json

from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kgw.api import wire
from kgw.api.websocket import SEND_LIMIT, ChannelsFactory, ChannelsProtocol

# Valid JSON that no encoder would produce: spacing and key order show whether it was re-encoded.
CONTENT = b'{ "b" : 2,   "a" : [1,2] }'
PARTS = [b'{"msg_id": "m1", "msg_type": "stream"}', b"{}", b"{}", CONTENT]


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
        protocol = ChannelsFactory(maxMessageSize=1 << 20).buildProtocol(None)
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
