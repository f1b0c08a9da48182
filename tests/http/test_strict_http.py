"""
Strict HTTP/1.1 in memory: bytes written to the gateway's own site (L{kgw.gateway.buildSite})
through Twisted's in-memory transport, and the answers it writes back.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.resource import Resource
from twisted.web.server import Request

from kgw.gateway import buildSite
from kgw.http.edge import Edge

LIMIT = 1024


class Recording(Resource):
    """Answers C{{}} and records the body of every request that reaches it."""

    isLeaf = True

    def __init__(self) -> None:
        super().__init__()
        self.bodies: list[bytes] = []

    def render(self, request: Request) -> bytes:
        self.bodies.append(request.content.read())
        request.setHeader(b"Content-Type", b"application/json")
        return b"{}"


class Connection:
    """One client connection to a site, in memory."""

    def __init__(self, test: SynchronousTestCase, edge: Edge) -> None:
        site = buildSite(edge)
        site.reactor = Clock()
        self.protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        self.transport = StringTransport()
        # As a TCP connection's transport has it (a websocket taking the connection sets it).
        self.transport.protocol = self.protocol
        self.protocol.makeConnection(self.transport)
        test.addCleanup(self.protocol.connectionLost, Failure(ConnectionDone()))

    def send(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    @property
    def closing(self) -> bool:
        return bool(self.transport.disconnecting)

    def answer(self) -> tuple[int, dict[str, str], Any]:
        """The status, the headers (names in lower case) and the JSON body written so far."""
        head, found, body = self.transport.value().partition(b"\r\n\r\n")
        if not found:
            raise AssertionError(f"no complete answer: {self.transport.value()!r}")
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value for name, value in (h.split(": ", 1) for h in lines)}
        if headers.get("transfer-encoding") == "chunked":
            body = dechunked(body)
        return int(status.split()[1]), headers, json.loads(body) if body else None


def dechunked(body: bytes) -> bytes:
    """The content of a chunked HTTP body."""
    content = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        length = int(size, 16)
        if not length:
            break
        content += rest[:length]
        body = rest[length + 2 :]
    return content


class StrictTestCase(SynchronousTestCase):
    def setUp(self) -> None:
        self.inner = Recording()
        self.edge = Edge(self.inner, maxBodySize=LIMIT)

    def connect(self) -> Connection:
        return Connection(self, self.edge)

    def assertJSONError(self, connection: Connection, code: int) -> dict[str, Any]:
        """The answer is C{code} with a JSON error body; that body."""
        status, headers, body = connection.answer()
        self.assertEqual(status, code, body)
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(set(body), {"reason", "message"})
        return body


class HostTests(StrictTestCase):
    """RFC 9112 section 3.2: an HTTP/1.1 request has exactly one Host header."""

    def test_missingHostIs400(self) -> None:
        """An HTTP/1.1 request without a Host header is answered 400 JSON, not served."""
        connection = self.connect()
        connection.send(b"GET /api HTTP/1.1\r\n\r\n")
        body = self.assertJSONError(connection, 400)
        self.assertIn("Host", body["message"])
        self.assertEqual(self.inner.bodies, [])

    def test_twoHostsAre400(self) -> None:
        """A request with two Host headers is answered 400 JSON, not served."""
        connection = self.connect()
        connection.send(b"GET /api HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        self.assertJSONError(connection, 400)
        self.assertEqual(self.inner.bodies, [])

    def test_twoHostsOnHTTP10Are400(self) -> None:
        """Two Host headers are refused in HTTP/1.0 too."""
        connection = self.connect()
        connection.send(b"GET /api HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n")
        self.assertJSONError(connection, 400)

    def test_http10WithoutHostServed(self) -> None:
        """An HTTP/1.0 request needs no Host header (RFC 9112 asks it of HTTP/1.1 only)."""
        connection = self.connect()
        connection.send(b"GET /api HTTP/1.0\r\n\r\n")
        self.assertEqual(connection.answer()[0], 200)

    def test_oneHostServed(self) -> None:
        """A request with one Host header is served."""
        connection = self.connect()
        connection.send(b"GET /api HTTP/1.1\r\nHost: gateway\r\n\r\n")
        self.assertEqual(connection.answer()[0], 200)


class HeaderBlockTests(StrictTestCase):
    """A header block over Twisted's bounds is answered 431 JSON, then the connection closes."""

    def test_longHeaderLineIs431(self) -> None:
        """One header line over 16 KB is answered 431 JSON (Twisted closed without a word)."""
        connection = self.connect()
        connection.send(b"GET /api HTTP/1.1\r\nHost: a\r\nX-Big: " + b"y" * 17_000 + b"\r\n\r\n")
        self.assertJSONError(connection, 431)
        self.assertTrue(connection.closing)

    def test_longLineWithoutEndIs431(self) -> None:
        """A header line still growing past 16 KB is answered 431 before it ends."""
        connection = self.connect()
        connection.send(b"GET /api HTTP/1.1\r\nHost: a\r\nX-Big: ")
        for _ in range(20):
            connection.send(b"y" * 1000)
        self.assertJSONError(connection, 431)
        self.assertTrue(connection.closing)

    def test_manyHeaderLinesAre431(self) -> None:
        """Header lines that add up to more than 16 KB are answered 431 JSON."""
        connection = self.connect()
        connection.send(b"GET /api HTTP/1.1\r\nHost: a\r\n" + b"X-Some: " + b"y" * 100 + b"\r\n")
        for _ in range(200):
            connection.send(b"X-Some: " + b"y" * 100 + b"\r\n")
        body = self.assertJSONError(connection, 431)
        self.assertIn("16384", body["message"])
        self.assertTrue(connection.closing)

    def test_tooManyHeadersAre431(self) -> None:
        """More than 500 header fields, however short, are answered 431 JSON."""
        connection = self.connect()
        connection.send(b"GET /api HTTP/1.1\r\nHost: a\r\n" + b"X: y\r\n" * 501 + b"\r\n")
        self.assertJSONError(connection, 431)
        self.assertEqual(self.inner.bodies, [])

    def test_justUnderServed(self) -> None:
        """A header block of almost 16 KB is served."""
        connection = self.connect()
        connection.send(b"GET /api HTTP/1.1\r\nHost: a\r\nX-Big: " + b"y" * 16_000 + b"\r\n\r\n")
        self.assertEqual(connection.answer()[0], 200)


class DeclaredLengthTests(StrictTestCase):
    """A declared Content-Length over the limit is answered 413 before the body comes."""

    def test_hugeContentLengthIs413AtOnce(self) -> None:
        """C{Content-Length: 10**20} is answered 413 JSON with no byte of body sent, and closes."""
        connection = self.connect()
        connection.send(
            b"POST /api HTTP/1.1\r\nHost: a\r\nContent-Length: 100000000000000000000\r\n\r\n"
        )
        body = self.assertJSONError(connection, 413)
        self.assertIn(str(LIMIT), body["message"])
        self.assertEqual(connection.answer()[1]["connection"], "close")
        self.assertTrue(connection.closing)
        self.assertEqual(self.inner.bodies, [])

    def test_justOverLimitIs413AtOnce(self) -> None:
        """A declared length one byte over the limit is answered 413 before the body."""
        connection = self.connect()
        head = b"POST /api HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n"
        connection.send(head % (LIMIT + 1))
        self.assertJSONError(connection, 413)
        self.assertTrue(connection.closing)

    def test_bodyAfterRefusalIgnored(self) -> None:
        """Body bytes that follow the refusal are not read as another request."""
        connection = self.connect()
        connection.send(b"POST /api HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\n\r\n")
        connection.send(b"GET /api HTTP/1.1\r\nHost: a\r\n\r\n")
        self.assertEqual(connection.transport.value().count(b"HTTP/1.1 "), 1)
        self.assertEqual(self.inner.bodies, [])

    def test_noContinueForRefusedBody(self) -> None:
        """With C{Expect: 100-continue}, a body over the limit is not asked for: 413 at once."""
        connection = self.connect()
        connection.send(
            b"POST /api HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
            b"Content-Length: 100000\r\n\r\n"
        )
        self.assertNotIn(b"100 Continue", connection.transport.value())
        self.assertJSONError(connection, 413)

    def test_atLimitServed(self) -> None:
        """A body of exactly the limit is waited for and served."""
        connection = self.connect()
        connection.send(b"POST /api HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % LIMIT)
        self.assertEqual(connection.transport.value(), b"")
        connection.send(b"x" * LIMIT)
        self.assertEqual(connection.answer()[0], 200)
        self.assertEqual(self.inner.bodies, [b"x" * LIMIT])

    def test_noLimitWaits(self) -> None:
        """Without a limit a large declared length is waited for, as Twisted does."""
        self.edge = Edge(self.inner)
        connection = self.connect()
        connection.send(b"POST /api HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n")
        self.assertEqual(connection.transport.value(), b"")
        self.assertFalse(connection.closing)


class MalformedTests(StrictTestCase):
    """What Twisted cannot parse is answered 400 with a JSON body, at once."""

    def chunked(self) -> Connection:
        connection = self.connect()
        connection.send(b"POST /api HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        return connection

    def test_badChunkSizeIs400(self) -> None:
        """A chunk size that is not hexadecimal is answered 400 JSON, and the connection closes."""
        connection = self.chunked()
        connection.send(b"zz\r\n")
        body = self.assertJSONError(connection, 400)
        self.assertIn("chunk size", body["message"])
        self.assertTrue(connection.closing)
        self.assertEqual(self.inner.bodies, [])

    def test_badChunkSizeRefusedBeforeLineEnds(self) -> None:
        """The first byte that cannot be in a chunk size is refused, before the line ends."""
        connection = self.chunked()
        connection.send(b"5\r\nhello\r\n1")
        self.assertEqual(connection.transport.value(), b"")
        connection.send(b"g")
        self.assertJSONError(connection, 400)
        self.assertTrue(connection.closing)

    def test_chunkExtensionServed(self) -> None:
        """A chunk size followed by an extension, in pieces, is still a valid chunked body."""
        connection = self.chunked()
        for piece in (b"5", b";name=value\r\nhel", b"lo\r\n", b"0\r\n\r\n"):
            connection.send(piece)
        self.assertEqual(connection.answer()[0], 200)
        self.assertEqual(self.inner.bodies, [b"hello"])

    def test_badChunkSizeAfterChunkIs400(self) -> None:
        """A bad chunk size arriving with the chunk before it is refused at once too."""
        connection = self.chunked()
        connection.send(b"5\r\nhello\r\nx")
        self.assertJSONError(connection, 400)

    def test_emptyChunkSizeIs400(self) -> None:
        """A chunk-size line with no digits is answered 400 JSON."""
        connection = self.chunked()
        connection.send(b";x\r\n")
        self.assertJSONError(connection, 400)

    def test_badRequestLineIs400(self) -> None:
        """A request line that is not HTTP is answered 400 JSON, where Twisted sent no body."""
        connection = self.connect()
        connection.send(b"HELLO\r\n\r\n")
        self.assertJSONError(connection, 400)
        self.assertTrue(connection.closing)

    def test_badContentLengthIs400(self) -> None:
        """A Content-Length that is not a number is answered 400 JSON."""
        connection = self.connect()
        connection.send(b"POST /api HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n")
        self.assertJSONError(connection, 400)
