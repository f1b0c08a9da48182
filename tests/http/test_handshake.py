"""
The channels websocket handshake in memory, through the gateway's own site: which origins open
it, and what status its access log line records.
"""

from __future__ import annotations

import json
from typing import Any

from treq.testing import StubTreq
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.failure import Failure

from kgw.api.app import GatewayAPI
from kgw.api.factory import ChannelsFactory
from kgw.api.sessions import SessionRegistry
from kgw.http.access import AccessPolicy
from kgw.http.edge import Edge
from kgw.http.routes import RouteTemplates
from kgw.metrics import GatewayMetrics
from tests.api.test_api import APITestCase
from tests.fakes import makeRegistry
from tests.http.test_strict_http import Connection

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


class ClockTimer:
    """Autobahn's timers (handshake timeout, pings) on a test clock, not the global reactor."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def call_later(self, delay: float, function: Any, *args: Any, **kw: Any) -> Any:
        return self.clock.callLater(delay, function, *args, **kw)


def channelsFactory() -> ChannelsFactory:
    """A channels factory whose websockets schedule on a clock of their own."""
    factory = ChannelsFactory(1 << 20)
    factory._batched_timer = ClockTimer(Clock())
    return factory


class HandshakeTestCase(APITestCase):
    """A kernel on a gateway with metrics (so an access log) and the origin rule C{allowOrigin}."""

    allowOrigin = ""

    def setUp(self) -> None:
        kernels = makeRegistry(self)
        api = GatewayAPI(kernels, SessionRegistry(kernels), channelsFactory())
        self.edge = Edge(
            api.app.resource(),
            access=AccessPolicy(allowOrigin=self.allowOrigin),
            routes=RouteTemplates(GatewayAPI.app.url_map),
            metrics=GatewayMetrics(),
        )
        self.stub = StubTreq(self.edge)
        self.kernelId = self.call("POST", "/api/kernels", {}).body["id"]

    def handshake(self, **headers: str) -> tuple[bytes, list[dict[str, Any]]]:
        """
        Send a channels handshake with C{headers} added; the status line written back, and
        the access log events of the request.
        """
        connection = Connection(self, self.edge)
        fields = {
            "Host": "127.0.0.1:8888",
            "Upgrade": "websocket",
            "Connection": "Upgrade",
            "Sec-WebSocket-Key": KEY,
            "Sec-WebSocket-Version": "13",
            **headers,
        }
        head = f"GET /api/kernels/{self.kernelId}/channels HTTP/1.1\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        with capturedLogs() as events:
            connection.send((head + "\r\n").encode("latin-1"))
        websocket = connection.transport.protocol
        if websocket is not connection.protocol:
            # The websocket took the connection over: it goes with the test.
            self.addCleanup(websocket.connectionLost, Failure(ConnectionDone()))
        self.written = connection.transport.value()
        access = [e for e in events if e["log_namespace"] == "kgw.http.observe"]
        return self.written.split(b"\r\n", 1)[0], access


class StarOriginTests(HandshakeTestCase):
    """Under allow_origin C{*}, as jupyter_server does."""

    allowOrigin = "*"

    def test_nullOriginOpens(self) -> None:
        """With allow_origin C{*}, a handshake from the origin C{null} opens the websocket."""
        status, access = self.handshake(Origin="null")
        self.assertEqual(status, b"HTTP/1.1 101 Switching Protocols")
        self.assertEqual([event["status"] for event in access], [101])

    def test_switchLogged101(self) -> None:
        """A handshake that opens the websocket is logged with status 101."""
        status, access = self.handshake()
        self.assertEqual(status, b"HTTP/1.1 101 Switching Protocols")
        self.assertEqual([event["status"] for event in access], [101])

    def test_autobahnRefusalLoggedAsSent(self) -> None:
        """
        A handshake Autobahn refuses after the edge let it through (an origin with no host
        part, under C{*}) is logged with the status sent, 400, not 101.
        """
        status, access = self.handshake(Origin="nohost")
        self.assertTrue(status.startswith(b"HTTP/1.1 400 "), status)
        self.assertEqual([event["status"] for event in access], [400])

    def test_autobahnRefusalIsJSON(self) -> None:
        """Autobahn's refusal carries a JSON error body, as the gateway's own refusals do."""
        self.handshake(Origin="nohost")
        head, _, body = self.written.partition(b"\r\n\r\n")
        self.assertIn(b"\r\nContent-Type: application/json\r\n", head)
        self.assertIn(b"\r\nContent-Length: %d\r\n" % len(body), head)
        error = json.loads(body)
        self.assertEqual(error["reason"], "Bad Request")
        self.assertIn("nohost", error["message"])


class OwnOriginTests(HandshakeTestCase):
    """Without allow_origin: only the gateway's own origin is allowed."""

    def test_nullOriginRefused(self) -> None:
        """Without allow_origin C{*}, the origin C{null} is refused by the edge: 403 JSON."""
        status, access = self.handshake(Origin="null")
        self.assertTrue(status.startswith(b"HTTP/1.1 403 "), status)
        self.assertEqual([event["status"] for event in access], [403])
        self.assertEqual(json.loads(self.written.partition(b"\r\n\r\n")[2])["reason"], "Forbidden")
