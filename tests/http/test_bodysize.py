"""The request body size limit, in memory: the edge's 413 and the site's bounded buffer."""

from __future__ import annotations

import json
import os
from http import HTTPStatus
from typing import Any

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from treq.testing import RequestTraversalAgent, StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import readBody
from twisted.web.iweb import UNKNOWN_LENGTH, IBodyProducer
from twisted.web.static import Data
from zope.interface import implementer

from kgw.api.app import GatewayAPI
from kgw.api.factory import ChannelsFactory
from kgw.api.sessions import SessionRegistry
from kgw.config import Config
from kgw.gateway import buildGateway, buildSite
from kgw.http.access import AccessPolicy
from kgw.http.edge import BoundedBody, Edge
from tests.api.test_api import Answer, APITestCase
from tests.fakes import FakeProcess, makeAPI, makeRegistry, writeKernelspecs

LIMIT = 1024
TOKEN = "s3cret"


def kernelRequest(size: int) -> bytes:
    """A valid body for C{POST /api/kernels}, padded with spaces to C{size} bytes."""
    body = b'{"name": "fake"}'
    return body + b" " * (size - len(body))


@implementer(IBodyProducer)
class ChunkedBody:
    """A body of unknown length, so that it is sent with C{Transfer-Encoding: chunked}."""

    length = UNKNOWN_LENGTH

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    def startProducing(self, consumer: Any) -> Deferred[None]:
        for chunk in self.chunks:
            consumer.write(chunk)
        return succeed(None)

    def pauseProducing(self) -> None:
        pass

    def resumeProducing(self) -> None:
        pass

    def stopProducing(self) -> None:
        pass


class EdgeLimitTests(APITestCase):
    """The edge of a gateway whose body limit is L{LIMIT} bytes."""

    def setUp(self) -> None:
        self.stub, self.kernels = makeAPI(self, maxBodySize=LIMIT)

    def assertTooLarge(self, answer: Answer) -> None:
        """C{answer} is the 413 JSON error, with the reason phrase of C{http.HTTPStatus}."""
        self.assertJSONError(answer, 413)
        self.assertEqual(answer.body["reason"], HTTPStatus(413).phrase)
        self.assertIn(str(LIMIT), answer.body["message"])

    def test_overLimitIs413(self) -> None:
        """A body one byte over the limit is refused with 413 and starts no kernel."""
        self.assertTooLarge(self.call("POST", "/api/kernels", kernelRequest(LIMIT + 1)))
        self.assertEqual(len(self.kernels), 0)

    def test_atLimitServed(self) -> None:
        """A body of exactly the limit reaches its route."""
        answer = self.call("POST", "/api/kernels", kernelRequest(LIMIT))
        self.assertEqual(answer.code, 201, answer.body)
        self.assertEqual(len(self.kernels), 1)

    def postChunked(self, chunks: list[bytes]) -> tuple[int, Any, int]:
        """
        POST C{chunks} to C{/api/kernels} of a new limited gateway, as a chunked body (which
        L{StubTreq} cannot send); return the status, the decoded body and how many kernels
        were started.
        """
        kernels = makeRegistry(self)
        api = GatewayAPI(kernels, SessionRegistry(kernels), ChannelsFactory(LIMIT))
        agent = RequestTraversalAgent(Edge(api.app.resource(), maxBodySize=LIMIT))
        pending = agent.request(b"POST", b"http://gateway/api/kernels", None, ChunkedBody(chunks))
        agent.flush()
        response = self.successResultOf(pending)
        reading = readBody(response)
        agent.flush()
        return response.code, json.loads(self.successResultOf(reading)), len(kernels)

    def test_chunkedOverLimitIs413(self) -> None:
        """A chunked body, whose length is declared nowhere, is refused once it is over."""
        body = kernelRequest(3 * LIMIT)
        chunks = [body[i : i + 100] for i in range(0, len(body), 100)]
        code, answer, started = self.postChunked(chunks)
        self.assertEqual((code, answer["reason"], started), (413, HTTPStatus(413).phrase, 0))

    def test_chunkedUnderLimitServed(self) -> None:
        """A chunked body under the limit reaches its route whole."""
        body = kernelRequest(LIMIT - 10)
        code, answer, started = self.postChunked([body[:7], body[7:]])
        self.assertEqual((code, answer["name"], started), (201, "fake", 1))

    def test_everyRoute(self) -> None:
        """An oversized body is refused whatever the route, the method and the path."""
        body = b"x" * (LIMIT + 1)
        for method, path in [
            ("GET", "/api"),
            ("PATCH", "/api/sessions/nope"),
            ("POST", "/api/sessions"),
            ("PUT", "/api/kernels"),
            ("POST", "/nope"),
        ]:
            self.assertTooLarge(self.call(method, path, body))

    def test_beforeTokenAndWithCORS(self) -> None:
        """An oversized body is refused before the token is asked for, with the CORS headers."""
        access = AccessPolicy(TOKEN, "*", ((b"Access-Control-Allow-Origin", b"*"),))
        stub, kernels = makeAPI(self, access=access, maxBodySize=LIMIT)
        answer = self.call("POST", "/api/kernels", kernelRequest(LIMIT + 1), stub=stub)
        self.assertTooLarge(answer)
        self.assertEqual(answer.header("Access-Control-Allow-Origin"), "*")
        self.assertEqual(len(kernels), 0)

    def test_noLimit(self) -> None:
        """With a limit of 0, a body of any size reaches its route."""
        stub, _ = makeAPI(self)
        answer = self.call("POST", "/api/kernels", kernelRequest(LIMIT * 100), stub=stub)
        self.assertEqual(answer.code, 201)


class ConfigLimitTests(APITestCase):
    """The limit comes from C{max_body_size}, in both API modes."""

    def build(self, **settings: Any) -> StubTreq:
        root = os.path.abspath(self.mktemp())
        specsDir = os.path.join(root, "kernels")
        writeKernelspecs(specsDir)
        specs = KernelSpecManager(kernel_dirs=[specsDir], ensure_native_kernel=False)
        gateway = buildGateway(Config(**settings), Clock(), specs=specs, processFactory=FakeProcess)
        return StubTreq(gateway.resource)

    def test_defaultIs16MiB(self) -> None:
        """The default limit is 16 MiB."""
        self.assertEqual(Config().max_body_size, 16 * 1024 * 1024)
        self.assertEqual(
            Config.resolve({}, {"KG_MAX_BODY_SIZE": "5"}, {}).max_body_size,
            5,
        )

    def test_jupyterWebsocket(self) -> None:
        """In jupyter-websocket mode a body over max_body_size is answered 413."""
        stub = self.build(max_body_size=LIMIT)
        answer = self.call("POST", "/api/kernels", kernelRequest(LIMIT + 1), stub=stub)
        self.assertJSONError(answer, 413)

    def test_notebookHTTP(self) -> None:
        """In notebook-http mode a body over max_body_size is answered 413; a smaller one is not."""
        path = os.path.abspath(self.mktemp())
        notebook = nbformat.v4.new_notebook(
            cells=[nbformat.v4.new_code_cell("# POST /echo\nprint(REQUEST)")],
            metadata={"kernelspec": {"name": "fake", "language": "python", "display_name": "Fake"}},
        )
        with open(path, "w") as f:
            nbformat.write(notebook, f)
        stub = self.build(api="notebook-http", seed_uri=path, max_body_size=LIMIT)
        answer = self.call("POST", "/echo", b"x" * (LIMIT + 1), stub=stub)
        self.assertJSONError(answer, 413)
        answer = self.call("GET", "/_api/spec/swagger.json", b"x" * LIMIT, stub=stub)
        self.assertEqual(answer.code, 200)


class BoundedBodyTests(SynchronousTestCase):
    def test_keepsUpToLimit(self) -> None:
        """Bytes up to the limit are kept and read back."""
        body = BoundedBody(None, 10)
        body.write(b"01234")
        body.write(b"56789")
        body.seek(0)
        self.assertEqual(body.read(), b"0123456789")
        self.assertEqual((body.received, body.overflowed), (10, False))

    def test_dropsEverythingPastLimit(self) -> None:
        """Past the limit nothing is kept, not even the first bytes, but every byte is counted."""
        body = BoundedBody(None, 10)
        body.write(b"0123456789")
        body.write(b"a")
        body.write(b"b" * 1000)
        body.seek(0)
        self.assertEqual(body.read(), b"")
        self.assertEqual((body.received, body.overflowed), (1011, True))

    def test_noLimit(self) -> None:
        """A limit of 0 keeps everything."""
        body = BoundedBody(200_000, 0)
        body.write(b"x" * 150_000)
        body.seek(0)
        self.assertEqual(len(body.read()), 150_000)
        self.assertFalse(body.overflowed)


class SiteBufferTests(SynchronousTestCase):
    def test_siteBuffersNoMoreThanTheLimit(self) -> None:
        """A limited edge's site never holds more of a big chunked body than the limit: 413."""
        edge = Edge(Data(b"{}", "application/json"), maxBodySize=LIMIT)
        made: list[BoundedBody] = []
        contentFile = edge.contentFile

        def recording(length: int | None) -> BoundedBody:
            made.append(contentFile(length))
            return made[-1]

        edge.contentFile = recording  # type: ignore[method-assign]
        site = buildSite(edge)
        site.reactor = Clock()
        protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
        transport = StringTransport()
        protocol.makeConnection(transport)
        protocol.dataReceived(
            b"POST /api HTTP/1.1\r\nHost: gateway\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        chunk = b"x" * 4096
        for _ in range(64):
            protocol.dataReceived(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.assertLessEqual(made[0].tell(), LIMIT)
        protocol.dataReceived(b"0\r\n\r\n")
        self.assertIn(b" 413 ", transport.value().split(b"\r\n")[0])
        self.assertEqual(made[0].received, 64 * 4096)
        self.assertTrue(made[0].overflowed)
        protocol.connectionLost(Failure(ConnectionDone()))

    def test_unlimitedSiteIsTwisted(self) -> None:
        """Without a limit the site buffers bodies as Twisted does."""
        site = buildSite(Edge(Data(b"{}", "application/json")))
        self.assertFalse(hasattr(site, "getContentFile"))
