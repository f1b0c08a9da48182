"""Forwarding a request to the gateway that owns its kernel, and relaying the answer.

Several gateways sharing one kernel store serve each kernel from its owner alone; a request that
reaches another gateway (through a plain load balancer) is passed on to the owner as it came:
method, path and query (a token in it too), headers (the C{Authorization} token too) and body.
A forwarded request carries C{X-Kgw-Forwarded}: it is never forwarded again.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from twisted.internet.task import Cooperator
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest

from kgw.errors import GatewayUnavailable

FORWARDED = b"X-Kgw-Forwarded"

# Headers of one connection, never passed on (RFC 9110, section 7.6.1), and those the relaying
# gateway sets itself.
_HOP_BY_HOP = {
    b"connection",
    b"keep-alive",
    b"proxy-connection",
    b"proxy-authorization",
    b"te",
    b"trailer",
    b"transfer-encoding",
    b"upgrade",
    b"host",
    b"content-length",
}
_OWN = _HOP_BY_HOP | {b"date", b"server"}


def wasForwarded(request: IRequest) -> bool:
    return request.getHeader(FORWARDED) is not None


class Forwarder:
    """Passes requests on to other gateways, over persistent connections of C{reactor}."""

    def __init__(self, reactor: Any, timeout: float = 60.0) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self.pool = HTTPConnectionPool(reactor, persistent=True)
        self.agent = Agent(reactor, pool=self.pool)
        self.cooperator = Cooperator(scheduler=lambda work: reactor.callLater(0, work))

    async def forward(self, request: IRequest, base: str, who: str) -> bytes:
        """
        Send C{request} to the gateway at C{base} (scheme, host and port); answer with its
        status, headers and body.

        @param who: names that gateway in an error.
        @raise GatewayUnavailable: if it cannot be reached or does not answer in time.
        """
        headers = Headers()
        for name, values in request.requestHeaders.getAllRawHeaders():
            if name.lower() not in _HOP_BY_HOP:
                headers.setRawHeaders(name, values)
        headers.setRawHeaders(FORWARDED, [b"1"])
        body = b""
        if request.content is not None:
            request.content.seek(0)
            body = request.content.read()
        producer = FileBodyProducer(BytesIO(body), cooperator=self.cooperator) if body else None
        try:
            url = base.encode() + request.uri
            answer = self.agent.request(request.method, url, headers, producer)
            response = await answer.addTimeout(self.timeout, self.reactor)
            content = await readBody(response).addTimeout(self.timeout, self.reactor)
        except Exception as e:
            raise GatewayUnavailable(
                f"The gateway {who} that owns this kernel cannot be reached: {e.__class__.__name__}"
            ) from e
        request.setResponseCode(response.code)
        for name, values in response.headers.getAllRawHeaders():
            if name.lower() not in _OWN:
                request.responseHeaders.setRawHeaders(name, values)
        return content

    def close(self) -> Any:
        return self.pool.closeCachedConnections()
