"""
Strict HTTP and DNS rebinding over real sockets: raw bytes to a gateway listening on 127.0.0.1,
and the answers it sends back.
"""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from tests.http.test_strict_http import dechunked
from tests.support import RunningGateway, withTimeout

TOKEN = "s3cret"
NO_KERNEL = "00000000-0000-0000-0000-000000000000"
UPGRADE = (
    "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
)


class _Raw(Protocol):
    """Collects everything the gateway sends; C{closed} fires when it closes the connection."""

    def __init__(self) -> None:
        self.data = b""
        self.closed: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(self.data)


class RawTestCase(TestCase):
    timeout = 60
    settings: dict[str, Any] = {}

    async def setUp(self) -> None:
        self.gateway = await RunningGateway(self, **self.settings).start()

    async def exchange(self, *pieces: bytes) -> tuple[int, dict[str, str], Any]:
        """
        Send C{pieces} on one connection and wait for the gateway to close it; the status, the
        headers (names in lower case) and the JSON body of its one answer.
        """
        protocol = _Raw()
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.gateway.portNumber)
        connected = await withTimeout(connectProtocol(endpoint, protocol))
        self.addCleanup(connected.transport.abortConnection)
        for piece in pieces:
            connected.transport.write(piece)
        raw = await withTimeout(protocol.closed)
        head, _, body = raw.partition(b"\r\n\r\n")
        status, *lines = head.decode("latin-1").split("\r\n")
        headers = {name.lower(): value for name, value in (h.split(": ", 1) for h in lines)}
        if headers.get("transfer-encoding") == "chunked":
            body = dechunked(body)
        return int(status.split()[1]), headers, json.loads(body) if body else None

    async def get(self, host: str | None, path: str = "/api", extra: str = "") -> int:
        """The status of C{GET path} with C{Host: host} (none for C{None}), then closed."""
        head = f"GET {path} HTTP/1.1\r\n"
        if host is not None:
            head += f"Host: {host}\r\n"
        head += f"Connection: close\r\n{extra}\r\n"
        status, headers, self.body = await self.exchange(head.encode("latin-1"))
        if status >= 400:
            self.assertEqual(headers["content-type"], "application/json")
        return status


class StrictHTTPTests(RawTestCase):
    """A gateway with the default settings: a body limit of 16 MiB, no token."""

    async def test_missingHostIs400(self) -> None:
        """An HTTP/1.1 request without Host is answered 400 JSON."""
        self.assertEqual(await self.get(None), 400)

    async def test_twoHostsAre400(self) -> None:
        """A request with two Host headers is answered 400 JSON."""
        address = self.gateway.address
        self.assertEqual(await self.get(address, extra=f"Host: {address}\r\n"), 400)

    async def test_oversizedHeaderBlockIs431(self) -> None:
        """A header block over 16 KB is answered 431 JSON, then the connection closes."""
        head = f"GET /api HTTP/1.1\r\nHost: {self.gateway.address}\r\nX-Big: ".encode()
        status, headers, body = await self.exchange(head, b"y" * 17_000, b"\r\n\r\n")
        self.assertEqual(status, 431)
        self.assertEqual(headers["content-type"], "application/json")
        self.assertEqual(body["reason"], "Request Header Fields Too Large")

    async def test_hugeDeclaredLengthIs413AtOnce(self) -> None:
        """C{Content-Length: 10**20} is answered 413 JSON with no body sent, and closed."""
        head = (
            f"POST /api/kernels HTTP/1.1\r\nHost: {self.gateway.address}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100000000000000000000\r\n\r\n"
        )
        status, _, body = await self.exchange(head.encode())
        self.assertEqual(status, 413)
        self.assertIn(str(16 * 1024 * 1024), body["message"])
        self.assertEqual(self.gateway.kernels.kernels(), [])

    async def test_malformedChunkSizeIs400(self) -> None:
        """A chunk size that is not hexadecimal is answered 400 JSON at once."""
        head = (
            f"POST /api/kernels HTTP/1.1\r\nHost: {self.gateway.address}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        )
        status, _, body = await self.exchange(head.encode(), b"2\r\n{}\r\n", b"x")
        self.assertEqual(status, 400)
        self.assertIn("chunk size", body["message"])


class RebindingTests(RawTestCase):
    """A gateway on 127.0.0.1 without a token: requests must name it as a local host."""

    async def test_foreignHostIs403(self) -> None:
        """C{Host: evil.example} is refused with 403 JSON."""
        self.assertEqual(await self.get("evil.example"), 403)
        port = self.gateway.portNumber
        self.assertEqual(await self.get(f"evil.example:{port}"), 403)

    async def test_localHostsServed(self) -> None:
        """C{localhost:port}, C{127.0.0.1:port} and C{[::1]:port} are served."""
        port = self.gateway.portNumber
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}"):
            self.assertEqual(await self.get(host), 200, host)

    async def test_websocketHandshakeIs403(self) -> None:
        """The channels handshake naming a foreign host is refused with 403 too."""
        path = f"/api/kernels/{NO_KERNEL}/channels"
        self.assertEqual(await self.get("evil.example", path, UPGRADE), 403)
        # Named as local, the same handshake reaches the kernel lookup.
        self.assertEqual(await self.get(self.gateway.address, path, UPGRADE), 404)


class TokenRebindingTests(RawTestCase):
    """With a token set, the host is not checked: the token is."""

    settings = {"auth_token": TOKEN}

    async def test_foreignHostWithTokenServed(self) -> None:
        """C{Host: evil.example} with the token is served; without it, 401."""
        self.assertEqual(await self.get("evil.example"), 401)
        token = f"Authorization: token {TOKEN}\r\n"
        self.assertEqual(await self.get("evil.example", extra=token), 200)


class RemoteAccessTests(RawTestCase):
    """With allow_remote_access, any host is served."""

    settings = {"allow_remote_access": True}

    async def test_foreignHostServed(self) -> None:
        """C{Host: evil.example} is served."""
        self.assertEqual(await self.get("evil.example"), 200)
