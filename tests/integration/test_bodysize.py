"""The request body size limit over a real socket."""

from __future__ import annotations

import json
from http import HTTPStatus
from io import BytesIO

import treq
from twisted.internet import reactor
from twisted.trial.unittest import TestCase
from twisted.web.client import FileBodyProducer, HTTPConnectionPool

from tests.support import RunningGateway, withTimeout

LIMIT = 64 * 1024


class Unseekable:
    """A file that can only be read, so that L{FileBodyProducer} sends it chunked."""

    def __init__(self, data: bytes) -> None:
        self._file = BytesIO(data)
        self.read = self._file.read
        self.close = self._file.close


class BodySizeTests(TestCase):
    """A gateway listening on 127.0.0.1 with a body limit of L{LIMIT} bytes."""

    timeout = 60

    async def setUp(self) -> None:
        self.gateway = await RunningGateway(self, max_body_size=LIMIT).start()
        # One connection for every request of a test, to show it outlives a 413.
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.pool.maxPersistentPerHost = 1
        self.addCleanup(self.pool.closeCachedConnections)

    async def post(self, data: object) -> tuple[int, dict[str, str]]:
        response = await withTimeout(
            treq.post(self.gateway.url("api/kernels"), data=data, pool=self.pool)
        )
        return response.code, json.loads(await withTimeout(response.content()))

    async def test_declaredLengthOverLimit(self) -> None:
        """A body with a Content-Length over the limit is answered 413, and starts nothing."""
        code, body = await self.post(b'{"name": "python3"}' + b" " * (4 * LIMIT))
        self.assertEqual((code, body["reason"]), (413, HTTPStatus(413).phrase))
        self.assertEqual(len(self.gateway.kernels), 0)

    async def test_chunkedOverLimit(self) -> None:
        """A chunked body of 16 times the limit is answered 413; the connection serves on."""
        code, body = await self.post(FileBodyProducer(Unseekable(b" " * (16 * LIMIT))))
        self.assertEqual((code, body["reason"]), (413, HTTPStatus(413).phrase))
        # An unknown kernelspec: the route answers, so the body passed the edge.
        code, body = await self.post(b'{"name": "nope"}' + b" " * (LIMIT - 100))
        self.assertEqual(code, 404, body)
        self.assertEqual(len(self.gateway.kernels), 0)
