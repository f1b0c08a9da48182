"""The access rules of the edge: the token, CORS headers, the origin check, and log redaction."""

from __future__ import annotations

import hmac
import io
from typing import Any

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.server import Request
from twisted.web.static import Data
from twisted.web.test.requesthelper import DummyChannel

from kgw.config import Config
from kgw.gateway import buildSite
from kgw.http import access
from kgw.http.access import AccessPolicy, accessLogFormatter, redactToken
from kgw.http.edge import Edge
from tests.api.test_api import UPGRADE, Answer, APITestCase
from tests.fakes import FakeProcess, makeAPI

TOKEN = "s3cret"
CORS = {
    "allow_credentials": "true",
    "allow_headers": "Content-Type, Authorization",
    "allow_methods": "GET, POST, DELETE",
    "allow_origin": "https://app.example",
    "expose_headers": "Location",
    "max_age": "600",
}
CORS_HEADERS = {
    "Access-Control-Allow-Credentials": "true",
    "Access-Control-Allow-Headers": "Content-Type, Authorization",
    "Access-Control-Allow-Methods": "GET, POST, DELETE",
    "Access-Control-Allow-Origin": "https://app.example",
    "Access-Control-Expose-Headers": "Location",
    "Access-Control-Max-Age": "600",
}


class AccessTestCase(APITestCase):
    """Requests to gateways built with given settings."""

    def gateway(self, baseURL: str = "/", **settings: Any) -> StubTreq:
        """A gateway in memory whose edge has the access policy of C{settings}."""
        policy = AccessPolicy.fromConfig(Config(**settings))
        return makeAPI(self, baseURL=baseURL, access=policy)[0]

    def assertCORSHeaders(self, answer: Answer) -> None:
        """The answer carries every CORS header, with its configured value."""
        for name, value in CORS_HEADERS.items():
            self.assertEqual(answer.headers.getRawHeaders(name), [value], name)

    def assertNoCORSHeaders(self, answer: Answer) -> None:
        """The answer carries no CORS header."""
        for name in CORS_HEADERS:
            self.assertFalse(answer.headers.hasHeader(name), name)


class TokenTests(AccessTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.stub = self.gateway(auth_token=TOKEN)

    def test_missingTokenIs401(self) -> None:
        """Without the token, every route, unknown ones and the channels route included, is 401."""
        requests = [
            ("GET", "/api", None),
            ("GET", "/api/kernelspecs", None),
            ("POST", "/api/kernels", None),
            ("GET", "/api/sessions", None),
            ("GET", "/kernelspecs/fake/logo-64x64.png", None),
            ("GET", "/api/nope", None),
            ("GET", "/nope", None),
            ("PUT", "/api/kernels", None),
            ("GET", "/api/kernels/nope/channels", UPGRADE),
        ]
        for method, path, headers in requests:
            answer = self.call(method, path, headers=headers)
            self.assertJSONError(answer, 401)
            self.assertEqual(answer.body["reason"], "Unauthorized")
        self.assertEqual(len(self.kernels), 0)

    def test_outsideBaseURLIs401(self) -> None:
        """With a base URL, a path outside it is 401 without the token and 404 with it."""
        stub = self.gateway(baseURL="/gw/", auth_token=TOKEN)
        self.assertJSONError(self.call("GET", "/api", stub=stub), 401)
        self.assertJSONError(self.call("GET", f"/api?token={TOKEN}", stub=stub), 404)

    def test_401SaysTheScheme(self) -> None:
        """A 401 carries C{WWW-Authenticate: token}."""
        self.assertEqual(self.call("GET", "/api").header("WWW-Authenticate"), "token")

    def test_wrongTokenIs401(self) -> None:
        """A wrong token, in the header or the query, is 401."""
        answer = self.call("GET", "/api", headers={"Authorization": ["token nope"]})
        self.assertJSONError(answer, 401)
        self.assertJSONError(self.call("GET", "/api?token=nope"), 401)
        self.assertJSONError(self.call("GET", f"/api?token={TOKEN}x"), 401)

    def test_headerToken(self) -> None:
        """C{Authorization: token T} opens every route to the request."""
        headers = {"Authorization": [f"token {TOKEN}"]}
        self.assertEqual(self.call("GET", "/api", headers=headers).code, 200)
        self.assertEqual(self.call("POST", "/api/kernels", {}, headers=headers).code, 201)
        answer = self.call("GET", "/api/kernels/nope/channels", headers={**UPGRADE, **headers})
        self.assertJSONError(answer, 404)

    def test_queryToken(self) -> None:
        """C{?token=T} opens every route to the request, the channels route included."""
        self.assertEqual(self.call("GET", f"/api?token={TOKEN}").code, 200)
        self.assertEqual(self.call("POST", f"/api/kernels?token={TOKEN}", {}).code, 201)
        answer = self.call("GET", f"/api/kernels/nope/channels?token={TOKEN}", headers=UPGRADE)
        self.assertJSONError(answer, 404)

    def test_schemeIsCaseInsensitive(self) -> None:
        """The C{token} scheme is taken in any case."""
        for scheme in ("Token", "TOKEN", "toKen"):
            headers = {"Authorization": [f"{scheme} {TOKEN}"]}
            self.assertEqual(self.call("GET", "/api", headers=headers).code, 200, scheme)

    def test_otherSchemesRefused(self) -> None:
        """The token under another scheme, or with none, is 401."""
        for value in (f"Bearer {TOKEN}", f"Basic {TOKEN}", TOKEN, "token"):
            answer = self.call("GET", "/api", headers={"Authorization": [value]})
            self.assertJSONError(answer, 401)

    def test_comparedInConstantTime(self) -> None:
        """The given token is compared with C{hmac.compare_digest}, which decides."""
        calls = []

        class RecordingHMAC:
            @staticmethod
            def compare_digest(given: bytes, expected: bytes) -> bool:
                calls.append((given, expected))
                return hmac.compare_digest(given, expected)

        self.patch(access, "hmac", RecordingHMAC)
        self.assertEqual(self.call("GET", "/api?token=guess").code, 401)
        headers = {"Authorization": [f"token {TOKEN}"]}
        self.assertEqual(self.call("GET", "/api", headers=headers).code, 200)
        self.assertEqual(calls, [(b"guess", TOKEN.encode()), (TOKEN.encode(), TOKEN.encode())])

    def test_noTokenNeededWhenUnset(self) -> None:
        """With no token set, requests without one are served."""
        stub = self.gateway()
        self.assertEqual(self.call("GET", "/api", stub=stub).code, 200)
        self.assertEqual(self.call("GET", "/api?token=anything", stub=stub).code, 200)


class PreflightTests(AccessTestCase):
    def test_preflightNeedsNoToken(self) -> None:
        """An OPTIONS request without the token gets 204, the CORS headers and no body."""
        stub = self.gateway(auth_token=TOKEN, **CORS)
        headers = {
            "Origin": ["https://app.example"],
            "Access-Control-Request-Method": ["POST"],
        }
        for path in ("/api/kernels", "/api/kernels/nope/channels", "/api/nope"):
            answer = self.call("OPTIONS", path, headers=headers, stub=stub)
            self.assertEqual((answer.code, answer.body), (204, b""), path)
            self.assertCORSHeaders(answer)

    def test_preflightDoesNotReachRoutes(self) -> None:
        """An OPTIONS request is answered by the edge: no route runs."""
        answer = self.call("OPTIONS", "/api/kernels")
        self.assertEqual((answer.code, answer.body), (204, b""))
        self.assertFalse(answer.headers.hasHeader("Allow"))

    def test_preflightOutsideBaseURLIs404(self) -> None:
        """With a base URL, an OPTIONS request outside it is 404, with the CORS headers."""
        stub = self.gateway(baseURL="/gw/", auth_token=TOKEN, **CORS)
        self.assertEqual(self.call("OPTIONS", "/gw/api", stub=stub).code, 204)
        answer = self.call("OPTIONS", "/api", stub=stub)
        self.assertJSONError(answer, 404)
        self.assertCORSHeaders(answer)


class CORSTests(AccessTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.stub = self.gateway(auth_token=TOKEN, **CORS)
        self.auth = {"Authorization": [f"token {TOKEN}"]}

    def test_on200(self) -> None:
        """A successful answer carries every configured CORS header."""
        answer = self.call("GET", "/api", headers=self.auth)
        self.assertEqual(answer.code, 200)
        self.assertCORSHeaders(answer)

    def test_on401(self) -> None:
        """A 401 carries every configured CORS header."""
        answer = self.call("GET", "/api")
        self.assertJSONError(answer, 401)
        self.assertCORSHeaders(answer)

    def test_on404(self) -> None:
        """A 404, from a route or for an unknown path, carries every configured CORS header."""
        for path in ("/api/kernels/nope", "/api/nope"):
            answer = self.call("GET", path, headers=self.auth)
            self.assertJSONError(answer, 404)
            self.assertCORSHeaders(answer)

    def test_on405(self) -> None:
        """A 405 carries every configured CORS header."""
        answer = self.call("PUT", "/api/kernels", headers=self.auth)
        self.assertJSONError(answer, 405)
        self.assertCORSHeaders(answer)

    def test_on500(self) -> None:
        """A 500 carries every configured CORS header."""

        def start(process: FakeProcess, **launch: Any) -> Any:
            raise RuntimeError("no kernel today")

        self.patch(FakeProcess, "start", start)
        answer = self.call("POST", "/api/kernels", {}, stub=self.gateway(**CORS))
        self.assertJSONError(answer, 500)
        self.assertCORSHeaders(answer)
        self.flushLoggedErrors(RuntimeError)

    def test_absentWhenUnset(self) -> None:
        """With no CORS option set, no answer carries a CORS header."""
        stub = self.gateway()
        for method, path, code in [("GET", "/api", 200), ("GET", "/nope", 404)]:
            answer = self.call(method, path, stub=stub)
            self.assertEqual(answer.code, code)
            self.assertNoCORSHeaders(answer)
        answer = self.call("PUT", "/api/kernels", stub=stub)
        self.assertEqual(answer.code, 405)
        self.assertNoCORSHeaders(answer)
        answer = self.call("GET", "/api", stub=self.gateway(auth_token=TOKEN))
        self.assertEqual(answer.code, 401)
        self.assertNoCORSHeaders(answer)

    def test_onlyTheSetOnes(self) -> None:
        """Only the CORS options that are set make headers; an allowed origin of * is sent as *."""
        stub = self.gateway(allow_origin="*", max_age="60")
        answer = self.call("GET", "/api", stub=stub)
        self.assertEqual(answer.header("Access-Control-Allow-Origin"), "*")
        self.assertEqual(answer.header("Access-Control-Max-Age"), "60")
        sent = {name for name in CORS_HEADERS if answer.headers.hasHeader(name)}
        self.assertEqual(sent, {"Access-Control-Allow-Origin", "Access-Control-Max-Age"})


class OriginTests(AccessTestCase):
    def withOrigin(self, origin: str, path: str = "/api", **kw: Any) -> Answer:
        """GET C{path} on host C{gateway} from C{origin}."""
        headers = {"Origin": [origin], **kw.pop("headers", {})}
        return self.call("GET", path, headers=headers, **kw)

    def test_foreignOriginIs403(self) -> None:
        """A request from an origin other than the gateway's own is 403."""
        for origin in ("http://evil.example", "http://gateway:8080", "https://gateway.evil"):
            self.assertJSONError(self.withOrigin(origin), 403)

    def test_nullOriginIs403(self) -> None:
        """An opaque origin (C{null}) is 403."""
        self.assertJSONError(self.withOrigin("null"), 403)

    def test_foreignOriginChannelsIs403(self) -> None:
        """A websocket handshake from a foreign origin is 403, before the kernel is looked up."""
        kernelId = self.startKernel()["id"]
        path = f"/api/kernels/{kernelId}/channels"
        answer = self.withOrigin("http://evil.example", path, headers=UPGRADE)
        self.assertJSONError(answer, 403)

    def test_sameOriginPasses(self) -> None:
        """A request whose origin has the host and port of its C{Host} header is served."""
        self.assertEqual(self.withOrigin("http://gateway").code, 200)
        self.assertEqual(self.withOrigin("https://GATEWAY").code, 200)
        headers = {"Host": ["Gateway:8888"]}
        self.assertEqual(self.withOrigin("http://gateway:8888", headers=headers).code, 200)

    def test_noOriginPasses(self) -> None:
        """A request without an C{Origin} is served, whatever the setting."""
        stub = self.gateway(allow_origin="https://app.example")
        self.assertEqual(self.call("GET", "/api", stub=stub).code, 200)

    def test_allowedOriginPasses(self) -> None:
        """The origin C{allow_origin} names is served; others are still 403, with CORS headers."""
        stub = self.gateway(**CORS)
        self.assertEqual(self.withOrigin("https://app.example", stub=stub).code, 200)
        self.assertEqual(self.withOrigin("http://gateway", stub=stub).code, 200)
        for origin in ("https://app.example.evil", "http://app.example", "https://APP.example"):
            answer = self.withOrigin(origin, stub=stub)
            self.assertJSONError(answer, 403)
            self.assertCORSHeaders(answer)

    def test_starAllowsAny(self) -> None:
        """With C{allow_origin} C{*}, a request from any origin is served."""
        stub = self.gateway(allow_origin="*")
        for origin in ("http://evil.example", "null"):
            self.assertEqual(self.withOrigin(origin, stub=stub).code, 200, origin)

    def test_foreignPreflightIs403(self) -> None:
        """A preflight from a foreign origin is 403, with the CORS headers."""
        stub = self.gateway(**CORS)
        answer = self.call(
            "OPTIONS", "/api", headers={"Origin": ["http://evil.example"]}, stub=stub
        )
        self.assertJSONError(answer, 403)
        self.assertCORSHeaders(answer)

    def test_tokenDoesNotOverrideOrigin(self) -> None:
        """A foreign origin is 403 even with the right token."""
        stub = self.gateway(auth_token=TOKEN)
        answer = self.withOrigin("http://evil.example", f"/api?token={TOKEN}", stub=stub)
        self.assertJSONError(answer, 403)


class RedactTokenTests(SynchronousTestCase):
    def test_tokenValueRedacted(self) -> None:
        """The value of a C{token} query argument becomes C{[secret]}, the rest stays."""
        self.assertEqual(redactToken(b"/api?token=s3cret"), b"/api?token=[secret]")
        self.assertEqual(
            redactToken(b"/a/channels?session_id=x&token=s3cret&b=1"),
            b"/a/channels?session_id=x&token=[secret]&b=1",
        )

    def test_everyTokenArgumentRedacted(self) -> None:
        """Every C{token} argument is redacted, after C{&} or C{;}, with its name encoded or not."""
        self.assertEqual(
            redactToken(b"/api?token=a;token=b&%74oken=c&tok%65n=d"),
            b"/api?token=[secret];token=[secret]&%74oken=[secret]&tok%65n=[secret]",
        )

    def test_otherArgumentsKept(self) -> None:
        """URIs without a C{token} argument are unchanged."""
        for uri in (b"/api", b"/api?", b"/api?tokens=1&xtoken=2&token", b"/token=s3cret"):
            self.assertEqual(redactToken(uri), uri)


class AccessLogTests(SynchronousTestCase):
    def request(self, uri: bytes, referer: bytes = b"-") -> Request:
        """A request for C{uri} as Twisted's HTTP server makes one, answered 200."""
        request = Request(DummyChannel())
        request.method = b"GET"
        request.uri = uri
        request.clientproto = b"HTTP/1.1"
        request.requestHeaders.setRawHeaders(b"referer", [referer])
        request.code = 200
        return request

    def test_formatterRedactsToken(self) -> None:
        """The access log line of C{/api?token=s3cret} shows the path but not the token."""
        line = accessLogFormatter("[ts]", self.request(b"/api?token=s3cret&x=1"))
        self.assertNotIn("s3cret", line)
        self.assertIn('"GET /api?token=[secret]&x=1 HTTP/1.1" 200', line)

    def test_formatterRedactsReferer(self) -> None:
        """A token in the C{Referer} does not reach the access log either."""
        request = self.request(b"/api", referer=b"http://gateway/page?token=s3cret")
        line = accessLogFormatter("[ts]", request)
        self.assertNotIn("s3cret", line)
        self.assertIn('"http://gateway/page?token=[secret]"', line)

    def test_siteLogRedactsToken(self) -> None:
        """The site C{buildSite} makes logs C{GET /api?token=s3cret} without the token."""
        site = buildSite(Edge(Data(b"{}", "application/json"), access=AccessPolicy(TOKEN)))
        site.reactor = Clock()
        site.logFile = log = io.StringIO()
        protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(b"GET /api?token=s3cret HTTP/1.1\r\nHost: gateway\r\n\r\n")
        self.assertIn(b" 200 OK", transport.value())
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertIn('"GET /api?token=[secret] HTTP/1.1" 200', log.getvalue())
        self.assertNotIn("s3cret", log.getvalue())
