"""The factory and the resource of the channels websocket: protocols bound to one kernel."""

from __future__ import annotations

from typing import Any, cast

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory
from twisted.internet.interfaces import IAddress, IReactorTime

from kgw.api.backlog import Backlog, BacklogLimits
from kgw.api.ratelimit import IOPubRateLimiter
from kgw.api.websocket import SWITCHING_PROTOCOLS, ChannelsProtocol
from kgw.kernels.kernel import Kernel
from kgw.metrics import TO_CLIENT, TO_KERNEL, GatewayMetrics


class ChannelsFactory(WebSocketServerFactory):
    """
    Builds L{ChannelsProtocol}s; one per gateway, configured once.

    @param rateLimits: jupyter_server's iopub limits for each client: messages per second,
        bytes per second (0: none) and the window they are measured over, in seconds.
    @param metrics: where relayed messages are counted, by channel and direction.
    @param backlogLimits: the most that may wait for each client that cannot keep up.

    Autobahn's defaults suit a demo, not a gateway: no status page (it offers an open
    redirect), origin checks done by the gateway's own edge (which takes the C{null} origin
    as any other, so Autobahn must let it through), and a bound on message size.
    """

    protocol = ChannelsProtocol

    def __init__(
        self,
        maxMessageSize: int,
        rateLimits: tuple[float, float, float] = (0.0, 0.0, 3.0),
        clock: IReactorTime | None = None,
        metrics: GatewayMetrics | None = None,
        backlogLimits: BacklogLimits | None = None,
    ) -> None:
        super().__init__()
        self.rateLimits = rateLimits
        self.backlogLimits = backlogLimits if backlogLimits is not None else BacklogLimits()
        metrics = metrics if metrics is not None else GatewayMetrics()
        # Bound once: relaying a message only looks its counter up and increments it.
        self.toClient = metrics.relayCounters(TO_CLIENT)
        self.toKernel = metrics.relayCounters(TO_KERNEL)
        if clock is None:
            from twisted.internet import reactor as clock
        self.clock = clock
        self.setProtocolOptions(
            webStatus=False,
            allowedOrigins=["*"],
            allowNullOrigin=True,
            maxMessagePayloadSize=maxMessageSize,
            maxFramePayloadSize=maxMessageSize,
            autoPingInterval=30,
            autoPingTimeout=60,
            openHandshakeTimeout=30,
            # Send a close frame (1009 for an oversized message) rather than just dropping TCP.
            failByDrop=False,
        )

    def forKernel(self, kernel: Kernel, sessionId: str) -> _KernelBound:
        return _KernelBound(self, kernel, sessionId)


class _KernelBound:
    """What L{WebSocketResource} needs of a factory, building protocols bound to one kernel."""

    def __init__(self, factory: ChannelsFactory, kernel: Kernel, sessionId: str) -> None:
        self._factory = factory
        self._kernel = kernel
        self._sessionId = sessionId

    built: ChannelsProtocol | None = None

    def buildProtocol(self, addr: IAddress) -> ChannelsProtocol:
        protocol = cast(ChannelsProtocol, self._factory.buildProtocol(addr))
        self.built = protocol
        protocol.kernel = self._kernel
        protocol.sessionId = self._sessionId
        protocol.toClient = self._factory.toClient
        protocol.toKernel = self._factory.toKernel
        protocol.backlog = Backlog(self._factory.backlogLimits)
        limiter = IOPubRateLimiter(*self._factory.rateLimits)
        if limiter.active:
            protocol.limiter = limiter
        return protocol


class ChannelsResource(WebSocketResource):
    """
    Autobahn's resource for one kernel's channels, which takes the connection over and sets on
    the request the status its handshake was answered with (101, or Autobahn's refusal), so
    that the access log records the status actually sent.
    """

    def __init__(self, factory: _KernelBound) -> None:
        super().__init__(factory)
        self._bound = factory

    def render(self, request: Any) -> Any:
        result = super().render(request)
        protocol = self._bound.built
        if protocol is not None:
            request.setResponseCode(protocol.handshakeStatus or SWITCHING_PROTOCOLS)
        return result
