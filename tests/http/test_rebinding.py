"""
DNS rebinding, in memory: on a port listening on loopback, without a token, a request must name
the gateway as a local host (jupyter_server's C{allow_remote_access} and C{local_hostnames}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from kgw.api.app import GatewayAPI
from kgw.api.sessions import SessionRegistry
from kgw.config import Config
from kgw.http.access import AccessPolicy, hostName, isLocalHost, isLoopback
from kgw.http.edge import Edge
from kgw.http.listen import listeningAddress
from tests.fakes import makeRegistry
from tests.http.test_handshake import KEY, channelsFactory
from tests.http.test_strict_http import Connection

TOKEN = "s3cret"
LOOPBACK = IPv4Address("TCP", "127.0.0.1", 8888)
EVERYWHERE = IPv4Address("TCP", "0.0.0.0", 8888)
UPGRADE = (
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\n"
)


class ListeningPort:
    """Stands for the listening port a TCP connection keeps as its C{server}."""

    def __init__(self, address: Any) -> None:
        self.address = address

    def getHost(self) -> Any:
        return self.address


class HostNameTests(SynchronousTestCase):
    """Reading a C{Host} value as jupyter_server's check does."""

    def test_portStripped(self) -> None:
        """The port goes, an IPv6 address loses its brackets, and case does not count."""
        self.assertEqual(hostName("localhost:8888"), "localhost")
        self.assertEqual(hostName("LocalHost"), "localhost")
        self.assertEqual(hostName("127.0.0.1:8888"), "127.0.0.1")
        self.assertEqual(hostName("[::1]:8888"), "::1")
        self.assertEqual(hostName("[::1]"), "::1")
        self.assertEqual(hostName("localhost:"), "localhost")

    def test_malformedBracketsKept(self) -> None:
        """A bracket that is not closed, or followed by more than a port, is kept as it is."""
        self.assertEqual(hostName("[::1"), "[::1")
        self.assertEqual(hostName("[::1]evil"), "[::1]evil")

    def test_localHosts(self) -> None:
        """Loopback addresses, IPv4 (all of 127/8) and IPv6, and C{localhost} are local."""
        for host in ("localhost", "localhost:8888", "LOCALHOST", "127.0.0.1", "127.0.0.1:1"):
            self.assertTrue(isLocalHost(host, ["localhost"]), host)
        for host in ("127.1.2.3:8888", "[::1]:8888", "[::1]"):
            self.assertTrue(isLocalHost(host, ["localhost"]), host)

    def test_foreignHosts(self) -> None:
        """Other names and addresses, and names that merely contain a local one, are not."""
        for host in (
            "evil.example",
            "evil.example:8888",
            "localhost.evil.example",
            "127.0.0.1.evil.example",
            "10.0.0.1:8888",
            "[::2]:8888",
            "[::1",
            "",
        ):
            self.assertFalse(isLocalHost(host, ["localhost"]), host)

    def test_localHostnamesReplaceTheDefault(self) -> None:
        """The names of local_hostnames are local, and only they (addresses still are)."""
        self.assertTrue(isLocalHost("gateway.lan:8888", ["gateway.lan"]))
        self.assertFalse(isLocalHost("localhost", ["gateway.lan"]))
        self.assertTrue(isLocalHost("127.0.0.1", []))

    def test_loopbackListeners(self) -> None:
        """Ports bound to a loopback address are loopback; the wildcard and UNIX sockets not."""
        self.assertTrue(isLoopback(LOOPBACK))
        self.assertTrue(isLoopback(IPv4Address("TCP", "127.0.0.2", 1)))
        self.assertTrue(isLoopback(IPv6Address("TCP", "::1", 1)))
        self.assertFalse(isLoopback(EVERYWHERE))
        self.assertFalse(isLoopback(IPv6Address("TCP", "::", 1)))
        self.assertFalse(isLoopback(UNIXAddress("/run/kgw.sock")))
        self.assertFalse(isLoopback(None))


class ListeningAddressTests(SynchronousTestCase):
    """The listening port of a connection, found from its transport."""

    def test_serverPort(self) -> None:
        """A TCP server connection gives its listening port's address."""
        transport = Connection(self, Edge(None)).transport  # type: ignore[arg-type]
        transport.server = ListeningPort(EVERYWHERE)
        self.assertIs(listeningAddress(transport), EVERYWHERE)

    def test_throughTLS(self) -> None:
        """Under a TLS layer, the port of the TCP connection beneath."""
        inner = Connection(self, Edge(None)).transport  # type: ignore[arg-type]
        inner.server = ListeningPort(LOOPBACK)

        class TLSLayer:
            transport = inner

        self.assertIs(listeningAddress(TLSLayer()), LOOPBACK)

    def test_inMemory(self) -> None:
        """An in-memory transport came through no port."""
        transport = Connection(self, Edge(None)).transport  # type: ignore[arg-type]
        self.assertIsNone(listeningAddress(transport))
        self.assertIsNone(listeningAddress(None))


class RebindingTests(SynchronousTestCase):
    """Requests to a gateway's edge through a port listening on C{listening}."""

    def setUp(self) -> None:
        kernels = makeRegistry(self)
        self.api = GatewayAPI(kernels, SessionRegistry(kernels), channelsFactory())

    def get(
        self,
        host: str,
        listening: Any = LOOPBACK,
        path: str = "/api",
        extra: bytes = b"",
        **settings: Any,
    ) -> int:
        """The status of C{GET path} with C{Host: host}, on a gateway with C{settings}."""
        edge = Edge(self.api.app.resource(), access=AccessPolicy.fromConfig(Config(**settings)))
        connection = Connection(self, edge)
        connection.transport.server = ListeningPort(listening)
        head = f"GET {path} HTTP/1.1\r\nHost: {host}\r\n".encode()
        connection.send(head + extra + b"\r\n")
        status, _, self.body = connection.answer()
        return status

    def test_foreignHostIs403(self) -> None:
        """On a loopback port without a token, C{Host: evil.example} is refused with 403 JSON."""
        with capturedLogs() as events:
            self.assertEqual(self.get("evil.example"), 403)
        self.assertIn("evil.example", self.body["message"])
        [warning] = [e for e in events if e["log_level"].name == "warn"]
        self.assertEqual(warning["host"], "evil.example")

    def test_foreignHostWithPortIs403(self) -> None:
        """A foreign name with the gateway's port is refused too."""
        self.assertEqual(self.get("evil.example:8888"), 403)

    def test_localHostsServed(self) -> None:
        """C{localhost}, C{127.0.0.1} and C{[::1]}, with a port or without, are served."""
        for host in ("localhost:8888", "127.0.0.1:8888", "[::1]:8888", "localhost"):
            self.assertEqual(self.get(host), 200, host)

    def test_ipv6LoopbackListener(self) -> None:
        """A port listening on C{::1} is checked too."""
        self.assertEqual(self.get("evil.example", IPv6Address("TCP", "::1", 8888)), 403)
        self.assertEqual(self.get("[::1]:8888", IPv6Address("TCP", "::1", 8888)), 200)

    def test_tokenSetServes(self) -> None:
        """With a token set, the host is not checked: the token is."""
        self.assertEqual(self.get("evil.example", auth_token=TOKEN), 401)
        right = f"Authorization: token {TOKEN}\r\n".encode()
        self.assertEqual(self.get("evil.example", extra=right, auth_token=TOKEN), 200)

    def test_allowRemoteAccessServes(self) -> None:
        """With allow_remote_access, any host is served."""
        self.assertEqual(self.get("evil.example", allow_remote_access=True), 200)

    def test_localHostnamesServed(self) -> None:
        """A name of local_hostnames is served."""
        self.assertEqual(self.get("gateway.lan:8888", local_hostnames=("gateway.lan",)), 200)
        self.assertEqual(self.get("localhost:8888", local_hostnames=("gateway.lan",)), 403)

    def test_wildcardListenerNotChecked(self) -> None:
        """On a port listening on every interface (0.0.0.0), the host is not checked."""
        self.assertEqual(self.get("evil.example", EVERYWHERE), 200)

    def test_inMemoryNotChecked(self) -> None:
        """A connection that came through no listening port is not checked."""
        self.assertEqual(self.get("evil.example", None), 200)

    def test_websocketHandshakeIs403(self) -> None:
        """The channels handshake naming a foreign host is refused with 403 like any request."""
        kernelId = "00000000-0000-0000-0000-000000000000"
        path = f"/api/kernels/{kernelId}/channels"
        self.assertEqual(self.get("evil.example", path=path, extra=UPGRADE), 403)
        # With a local name, the same handshake gets as far as the kernel lookup.
        self.assertEqual(self.get("localhost:8888", path=path, extra=UPGRADE), 404)

    def test_preflightIs403(self) -> None:
        """A CORS preflight naming a foreign host is refused too."""
        edge = Edge(self.api.app.resource(), access=AccessPolicy())
        connection = Connection(self, edge)
        connection.transport.server = ListeningPort(LOOPBACK)
        connection.send(
            b"OPTIONS /api HTTP/1.1\r\nHost: evil.example\r\n"
            b"Origin: http://evil.example\r\nAccess-Control-Request-Method: POST\r\n\r\n"
        )
        self.assertEqual(connection.answer()[0], 403)


class OptionTests(SynchronousTestCase):
    """The two options, as jupyter_server names them."""

    def test_defaults(self) -> None:
        """By default remote access is refused and only C{localhost} is a local name."""
        policy = AccessPolicy.fromConfig(Config())
        self.assertFalse(policy.allowRemoteAccess)
        self.assertEqual(tuple(policy.localHostnames), ("localhost",))

    def test_environment(self) -> None:
        """KG_ALLOW_REMOTE_ACCESS and KG_LOCAL_HOSTNAMES set them."""
        config = Config.resolve(
            {}, {"KG_ALLOW_REMOTE_ACCESS": "True", "KG_LOCAL_HOSTNAMES": "a.lan, b.lan"}
        )
        policy = AccessPolicy.fromConfig(config)
        self.assertTrue(policy.allowRemoteAccess)
        self.assertEqual(tuple(policy.localHostnames), ("a.lan", "b.lan"))

    def test_commandLine(self) -> None:
        """The flags, in kgw's and KG's spellings, set them."""
        from kgw.tap import Options

        options = Options(environ={})
        options.parseOptions(
            [
                "--allow-remote-access=True",
                "--KernelGatewayApp.local_hostnames=['gateway.lan']",
            ]
        )
        assert options.config is not None
        self.assertTrue(options.config.allow_remote_access)
        self.assertEqual(options.config.local_hostnames, ("gateway.lan",))
