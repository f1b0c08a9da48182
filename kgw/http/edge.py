"""The outermost resource: every request enters here, and only paths under C{base_url} go on."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from io import BytesIO
from typing import IO, Any, cast

from twisted.logger import Logger
from twisted.web.http import OK
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from twisted.web.server import Request

from kgw.config import Config
from kgw.http.access import AccessPolicy
from kgw.http.errors import writeError
from kgw.http.listen import listeningAddress
from kgw.http.observe import SWITCHED, RequestObserver
from kgw.http.routes import UNMATCHED
from kgw.metrics import GatewayMetrics

log = Logger()

# The route of the metrics page, under the base URL, in both API modes.
METRICS_ROUTE = "/metrics"

# Bodies of up to this many bytes are held in memory, larger ones in a temporary file (Twisted's
# own threshold).
_IN_MEMORY = 100_000


class BoundedBody:
    """
    A request body's buffer that holds at most C{limit} bytes (0: any number).

    Twisted's HTTP server writes a body into its request's C{content} as it arrives and hands
    the request on only once the whole body has been read. Past C{limit} this buffer drops what
    it held and everything after, and only counts the bytes, so that a client cannot fill the
    gateway's memory or disk; L{Edge} then answers 413.

    @ivar received: how many bytes of the body arrived, kept or not.
    @ivar overflowed: whether more than C{limit} bytes arrived, so that none are kept.
    """

    def __init__(self, length: int | None, limit: int) -> None:
        self._limit = limit
        small = (length is not None and length < _IN_MEMORY) or 0 < limit < _IN_MEMORY
        self._file: IO[bytes] = BytesIO() if small else tempfile.TemporaryFile()
        self.received = 0
        self.overflowed = False

    def write(self, data: bytes) -> None:
        self.received += len(data)
        if not self._limit or self.received <= self._limit:
            self._file.write(data)
        elif not self.overflowed:
            # Past the limit nothing of the body is kept, not even its start.
            self.overflowed = True
            self._file.close()
            self._file = BytesIO()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def bodySize(request: IRequest) -> int:
    """
    The size of C{request}'s body: the larger of its declared C{Content-Length} and the bytes
    that arrived (counted by a L{BoundedBody}, else measured in C{content}).
    """
    size = 0
    declared = request.getHeader(b"content-length")
    if declared is not None and declared.strip().isdigit():
        size = int(declared)
    content = request.content
    if content is None:
        return size
    received = getattr(content, "received", None)
    if received is None:
        position = content.tell()
        received = content.seek(0, 2)
        content.seek(position)
    return max(size, received)


class Edge(Resource):
    """
    Serve C{inner} under the path segments of C{baseURL}, and a JSON 404 everywhere else.

    Every request, whatever its route, is first held to the access policy: it gets the CORS
    headers, a request naming a foreign host on a loopback port is refused with 403 (DNS
    rebinding), one from a foreign origin with 403, and one without the token with 401. A
    preflight (C{OPTIONS}) needs no token and is answered here, never by C{inner}: with 204,
    or with C{routeOptions} as KG's notebook-http mode answers it (see L{fromConfig}). A path
    or host name that is not UTF-8 is answered 400. Before all that, a request with two
    C{Host} headers, or an HTTP/1.1 one with none, is refused with 400 (RFC 9112 section
    3.2), and one whose body is larger than C{maxBodySize} (when not 0) with 413.

    The segments of the base URL move from C{postpath} to C{prepath}, so Klein routes the rest
    and builds URLs with the prefix.

    With C{metrics}, every request is timed, logged and counted under the route template
    C{routes} names (from the method and the path under the base URL), and C{{base_url}metrics}
    serves the metrics page; with C{metricsOpen}, that page alone needs no token.
    """

    isLeaf = True

    def __init__(
        self,
        inner: IResource,
        baseURL: str = "/",
        access: AccessPolicy | None = None,
        routeOptions: bool = False,
        maxBodySize: int = 0,
        routes: Callable[[str, str], str] | None = None,
        metrics: GatewayMetrics | None = None,
        metricsOpen: bool = False,
    ) -> None:
        super().__init__()
        self._inner = inner
        self._prefix = [s.encode("utf-8") for s in baseURL.strip("/").split("/") if s]
        self._metricsPath = [*self._prefix, b"metrics"]
        self._access = AccessPolicy() if access is None else access
        self._routeOptions = routeOptions
        self.maxBodySize = maxBodySize
        self._routes = routes
        self._metrics = metrics
        self._metricsOpen = metricsOpen and metrics is not None
        self._observer = RequestObserver(metrics) if metrics is not None else None

    @classmethod
    def fromConfig(
        cls,
        inner: IResource,
        config: Config,
        routeOptions: bool = False,
        routes: Callable[[str, str], str] | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> Edge:
        """
        Serve C{inner} under the base URL and with the access policy of C{config}.

        @param routeOptions: pass C{OPTIONS} requests that are not CORS preflights (they carry
            no C{Access-Control-Request-Method}) on to C{inner}, which answers them itself, as
            a notebook declaring C{OPTIONS} endpoints does; and answer a preflight as KG's
            notebook-http mode does: 200 where C{routes} knows the path (for the method the
            preflight asks about), 404 elsewhere.
        @param routes: names the route template of a method and a path under the base URL.
        @param metrics: the gateway's metrics, recorded and served.
        """
        return cls(
            inner,
            config.base_url,
            AccessPolicy.fromConfig(config),
            routeOptions,
            config.max_body_size,
            routes,
            metrics,
            config.metrics_open,
        )

    def contentFile(self, length: int | None) -> BoundedBody:
        """
        The buffer for the body of a request declaring C{length} bytes (C{None}: chunked); a
        L{twisted.web.server.Site} takes it as its C{getContentFile}.
        """
        return BoundedBody(length, self.maxBodySize)

    def route(self, request: IRequest, method: bytes | None = None) -> str:
        """
        The route template of C{request} (or of its path under another C{method}): L{UNMATCHED}
        outside the base URL or the routes.
        """
        if self._metrics is not None and request.postpath == self._metricsPath:
            return METRICS_ROUTE
        depth = len(self._prefix)
        if self._routes is None or request.postpath[:depth] != self._prefix:
            return UNMATCHED
        try:
            path = "/" + b"/".join(request.postpath[depth:]).decode("utf-8")
        except UnicodeDecodeError:
            return UNMATCHED
        return self._routes((method or request.method).decode("latin-1"), path)

    @property
    def observesRequests(self) -> bool:
        """Whether this edge logs and counts each request (it has metrics)."""
        return self._observer is not None

    def render(self, request: IRequest) -> bytes | int:
        # A Site's requests are twisted.web.server.Request's: a status, a protocol, a channel.
        httpRequest = cast(Request, request)
        if self._observer is None:
            return self._render(httpRequest, UNMATCHED)
        route = self.route(request)
        watch = self._observer.watch(httpRequest, route)
        channel = httpRequest.channel
        transport = channel.transport if channel is not None else None
        result = self._render(httpRequest, route)
        if (
            channel is not None
            and transport is not None
            and channel.transport is None
            and not httpRequest.finished
        ):
            # A websocket took the connection over: the request will never finish as HTTP. The
            # resource that took it sets the status its handshake was answered with.
            watch.finish(SWITCHED if httpRequest.code == OK else httpRequest.code)
        return result

    def _render(self, request: Request, route: str) -> bytes | int:
        self._access.addCORSHeaders(request)
        hosts = request.requestHeaders.getRawHeaders(b"host", [])
        if len(hosts) > 1:
            return writeError(request, 400, "A request must have one Host header, not several")
        if not hosts and request.clientproto == b"HTTP/1.1":
            return writeError(request, 400, "An HTTP/1.1 request must have a Host header")
        if self.maxBodySize and bodySize(request) > self.maxBodySize:
            return writeError(
                request,
                413,
                f"The request body is larger than the limit of {self.maxBodySize} bytes",
            )
        host = self._access.refusedHost(
            request, listeningAddress(getattr(getattr(request, "channel", None), "transport", None))
        )
        if host is not None:
            # The path only: a query string may carry the token.
            log.warn(
                "Refused a request for {path} naming the host {host}, which is not local; "
                "set allow_remote_access (or a token) to serve it",
                path=request.path.decode("latin-1"),
                host=host,
            )
            return writeError(
                request, 403, f"The host {host} is not local, and remote access is not allowed"
            )
        origin = self._access.refusedOrigin(request)
        if origin is not None:
            # The path only: a query string may carry the token.
            log.warn(
                "Refused a request for {path} from origin {origin}",
                path=request.path.decode("latin-1"),
                origin=origin,
            )
            return writeError(request, 403, f"Requests from origin {origin} are not allowed")
        options = request.method == b"OPTIONS"
        # The method a CORS preflight asks about.
        asked = request.getHeader(b"access-control-request-method") if options else None
        preflight = options and (not self._routeOptions or asked is not None)
        metricsPage = route == METRICS_ROUTE
        if (
            not preflight
            and not (metricsPage and self._metricsOpen)
            and not self._access.authorized(request)
        ):
            request.setHeader(b"WWW-Authenticate", b"token")
            return writeError(
                request, 401, "A valid token is required: Authorization: token <T>, or ?token=<T>"
            )
        # A Site's request has a path to traverse.
        assert request.prepath is not None and request.postpath is not None
        try:
            b"/".join(request.postpath).decode("utf-8")
            request.getRequestHostname().decode("utf-8")
        except UnicodeDecodeError:
            # Klein would answer in text, and log a traceback.
            return writeError(request, 400, "The path or the host name is not valid UTF-8")
        depth = len(self._prefix)
        if request.postpath[:depth] != self._prefix:
            return writeError(request, 404, "Not found")
        if preflight:
            if not self._routeOptions:
                request.setResponseCode(204)
                return b""
            if self.route(request, (asked or b"").strip()) == UNMATCHED:
                return writeError(request, 404, "Not found")
            return b""
        request.prepath.extend(request.postpath[:depth])
        request.postpath = request.postpath[depth:]
        if metricsPage and self._metrics is not None:
            if request.method not in (b"GET", b"HEAD"):
                request.setHeader(b"Allow", b"GET, HEAD")
                return writeError(request, 405, "The metrics page answers GET only")
            return self._metrics.resource().render(request)
        return self._inner.render(request)
