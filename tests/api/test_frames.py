"""The channels protocol's own framing of plain messages, against Autobahn's."""

from __future__ import annotations

from autobahn.twisted.websocket import WebSocketServerProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kgw.api.factory import ChannelsFactory
from kgw.api.websocket import ChannelsProtocol

# Each side of the 7-bit, 16-bit and 64-bit length encodings.
SIZES = (0, 1, 125, 126, 127, 65535, 65536, 70000)


class FramingTests(SynchronousTestCase):
    def opened(self, maxMessageSize: int = 1 << 20) -> tuple[ChannelsProtocol, StringTransport]:
        transport = StringTransport()
        protocol = ChannelsFactory(maxMessageSize=maxMessageSize).buildProtocol(None)
        protocol.makeConnection(transport)
        self.addCleanup(protocol.connectionLost, Failure(ConnectionDone()))
        protocol.state = protocol.STATE_OPEN
        transport.clear()
        return protocol, transport

    def test_sameBytesAsAutobahn(self):
        """
        A plain message, text or binary, of any length class, is written as exactly the
        frame Autobahn writes for it, in one write.
        """
        for size in SIZES:
            for isBinary in (False, True):
                payload = bytes(i % 251 for i in range(size))
                mine, myTransport = self.opened()
                mine.sendMessage(payload, isBinary=isBinary)
                theirs, theirTransport = self.opened()
                WebSocketServerProtocol.sendMessage(theirs, payload, isBinary=isBinary)
                self.assertEqual(
                    myTransport.value(), theirTransport.value(), f"{size} bytes, {isBinary}"
                )

    def test_notPlainGoesThroughAutobahn(self):
        """
        A message Autobahn would refuse (over the size limit) or fragment is left to it: the
        same error, the same frames.
        """
        from autobahn.websocket.protocol import PayloadExceededError

        protocol, transport = self.opened(maxMessageSize=100)
        self.assertRaises(PayloadExceededError, protocol.sendMessage, b"x" * 101)
        self.assertEqual(transport.value(), b"")
        mine, myTransport = self.opened()
        mine.sendMessage(b"y" * 300, fragmentSize=100)
        theirs, theirTransport = self.opened()
        WebSocketServerProtocol.sendMessage(theirs, b"y" * 300, fragmentSize=100)
        self.assertEqual(myTransport.value(), theirTransport.value())
        self.assertEqual(myTransport.value().count(b"y" * 100), 3)

    def test_notOpenRefused(self):
        """On a connection that is not open the message is refused, as Autobahn does."""
        from autobahn.exception import Disconnected

        protocol, transport = self.opened()
        protocol.state = protocol.STATE_CLOSING
        self.assertRaises(Disconnected, protocol.sendMessage, b"late")
        self.assertEqual(transport.value(), b"")

    def test_plainMessageWrittenDirectly(self):
        """
        A plain message is framed by the protocol itself, without Autobahn's per-frame path
        (whose bookkeeping and debug formatting cost about a tenth of a flood's relay CPU).
        """
        protocol, transport = self.opened()
        frames: list[object] = []
        protocol.sendFrame = lambda *args, **kwargs: frames.append(args)
        protocol.sendMessage(b"hello")
        self.assertEqual(frames, [])
        self.assertEqual(transport.value(), b"\x81\x05hello")
