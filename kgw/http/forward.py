"""Forwarding a request to the gateway that owns its kernel, and relaying the answer.

Several gateways sharing one kernel store serve each kernel from its owner alone; a request that
reaches another gateway (through a plain load balancer) is passed on to the owner as it came:
method, path and query (a token in it too), headers (the C{Authorization} token too) and body.
A websocket is spliced: the handshake is sent on, then bytes flow both ways untouched.
A forwarded request carries C{X-Kgw-Forwarded}: it is never forwarded again.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any, cast
from urllib.parse import urlsplit

from twisted.internet.endpoints import HostnameEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Cooperator
from twisted.protocols.policies import ProtocolWrapper
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from kgw.errors import GatewayUnavailable
from kgw.metrics import GatewayMetrics

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
    """
    Passes requests on to other gateways, over persistent connections of C{reactor}; each is
    counted in C{metrics} (C{kgw_forwarded_requests_total}).
    """

    def __init__(
        self, reactor: Any, timeout: float = 60.0, metrics: GatewayMetrics | None = None
    ) -> None:
        self.reactor = reactor
        self.timeout = timeout
        self.metrics = metrics if metrics is not None else GatewayMetrics()
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
            self.metrics.forwarded("http", "unreachable")
            raise GatewayUnavailable(
                f"The gateway {who} that owns this kernel cannot be reached: {e.__class__.__name__}"
            ) from e
        self.metrics.forwarded("http", "forwarded")
        request.setResponseCode(response.code)
        for name, values in response.headers.getAllRawHeaders():
            if name.lower() not in _OWN:
                request.responseHeaders.setRawHeaders(name, values)
        return content

    async def splice(self, base: str, who: str) -> SplicedResource:
        """L{spliceTo} the gateway at C{base}, counted."""
        try:
            resource = await spliceTo(self.reactor, base, who)
        except GatewayUnavailable:
            self.metrics.forwarded("websocket", "unreachable")
            raise
        self.metrics.forwarded("websocket", "forwarded")
        return resource

    def close(self) -> Any:
        return self.pool.closeCachedConnections()


def _wire(protocol: Protocol) -> Any:
    """The TCP transport of a connected protocol."""
    return protocol.transport


class _Peer(Protocol):
    """The connection to the owning gateway of a spliced websocket: what it sends goes back."""

    def __init__(self) -> None:
        self.client: Any = None

    def connectionMade(self) -> None:
        _wire(self).setTcpNoDelay(True)

    def dataReceived(self, data: bytes) -> None:
        if self.client is not None:
            self.client.write(data)

    def connectionLost(self, reason: Any = None) -> None:
        if self.client is not None:
            self.client.loseConnection()


class _Client(Protocol):
    """The client's side of a spliced websocket, taken over from Twisted Web."""

    def __init__(self, peer: _Peer) -> None:
        self.peer = peer

    def dataReceived(self, data: bytes) -> None:
        _wire(self.peer).write(data)

    def connectionLost(self, reason: Any = None) -> None:
        _wire(self.peer).loseConnection()


class SplicedResource(Resource):
    """
    Answers a websocket handshake by splicing the client's connection to the owning gateway's,
    already open: the handshake is sent on as it came, and from then on bytes flow both ways
    untouched (the owner speaks the websocket protocol), until either side closes.
    """

    isLeaf = True

    def __init__(self, peer: _Peer, host: bytes) -> None:
        super().__init__()
        self.peer = peer
        self.host = host

    def render(self, request: Any) -> Any:
        transport, request.channel.transport = request.channel.transport, None
        client = _Client(self.peer)
        if isinstance(transport, ProtocolWrapper):
            transport.wrappedProtocol = client
        elif isinstance(getattr(transport, "protocol", None), ProtocolWrapper):
            transport.protocol.wrappedProtocol = client
        else:
            transport.protocol = client
        client.makeConnection(transport)
        if hasattr(transport, "_networkProducer"):
            transport._networkProducer.resumeProducing()
        elif hasattr(transport, "resumeProducing"):
            transport.resumeProducing()
        self.peer.client = transport
        # Each side stops reading while the other cannot take more (Twisted Web's channel was
        # the client transport's producer until now).
        peer = _wire(self.peer)
        transport.unregisterProducer()
        transport.registerProducer(peer, True)
        peer.registerProducer(transport, True)
        head = [request.method + b" " + request.uri + b" HTTP/1.1"]
        for name, values in request.requestHeaders.getAllRawHeaders():
            if name.lower() != b"host":
                head += [name + b": " + value for value in values]
        head += [b"Host: " + self.host, FORWARDED + b": 1", b"", b""]
        peer.write(b"\r\n".join(head))
        return NOT_DONE_YET


async def spliceTo(reactor: Any, base: str, who: str) -> SplicedResource:
    """
    A resource that splices a websocket handshake to the gateway at C{base}, connected first.

    @raise GatewayUnavailable: if that gateway cannot be reached (or is served over TLS: not
        spliced yet).
    """
    parts = urlsplit(base)
    if parts.scheme != "http" or parts.hostname is None or parts.port is None:
        raise GatewayUnavailable(f"Websockets are not forwarded to {base} (gateway {who})")
    endpoint = HostnameEndpoint(reactor, parts.hostname, parts.port, timeout=10)
    try:
        peer = cast(_Peer, await endpoint.connect(Factory.forProtocol(_Peer)))
    except Exception as e:
        raise GatewayUnavailable(
            f"The gateway {who} that owns this kernel cannot be reached: {e.__class__.__name__}"
        ) from e
    return SplicedResource(peer, parts.netloc.encode())
