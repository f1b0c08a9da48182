"""The outermost resource: every request enters here, and only paths under C{base_url} go on."""

from __future__ import annotations

from twisted.logger import Logger
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from kgw.api.access import AccessPolicy
from kgw.api.errors import writeError
from kgw.config import Config

log = Logger()


class Edge(Resource):
    """
    Serve C{inner} under the path segments of C{baseURL}, and a JSON 404 everywhere else.

    Every request, whatever its route, is first held to the access policy: it gets the CORS
    headers, a request from a foreign origin is refused with 403, and one without the token
    with 401. A preflight (C{OPTIONS}) needs no token and is answered here, with 204.

    The segments of the base URL move from C{postpath} to C{prepath}, so Klein routes the rest
    and builds URLs with the prefix.
    """

    isLeaf = True

    def __init__(
        self,
        inner: IResource,
        baseURL: str = "/",
        access: AccessPolicy | None = None,
        routeOptions: bool = False,
    ) -> None:
        super().__init__()
        self._inner = inner
        self._prefix = [s.encode("utf-8") for s in baseURL.strip("/").split("/") if s]
        self._access = AccessPolicy() if access is None else access
        self._routeOptions = routeOptions

    @classmethod
    def fromConfig(cls, inner: IResource, config: Config, routeOptions: bool = False) -> Edge:
        """
        Serve C{inner} under the base URL and with the access policy of C{config}.

        @param routeOptions: pass C{OPTIONS} requests that are not CORS preflights (they carry
            no C{Access-Control-Request-Method}) on to C{inner}, which answers them itself, as
            a notebook declaring C{OPTIONS} endpoints does.
        """
        return cls(inner, config.base_url, AccessPolicy.fromConfig(config), routeOptions)

    def render(self, request: IRequest) -> bytes | int:
        self._access.addCORSHeaders(request)
        origin = self._access.refusedOrigin(request)
        if origin is not None:
            # The path only: a query string may carry the token.
            log.warn(
                "Refused a request for {path} from origin {origin}",
                path=request.path.decode("latin-1"),
                origin=origin,
            )
            return writeError(request, 403, f"Requests from origin {origin} are not allowed")
        preflight = request.method == b"OPTIONS" and (
            not self._routeOptions
            or request.getHeader(b"access-control-request-method") is not None
        )
        if not preflight and not self._access.authorized(request):
            request.setHeader(b"WWW-Authenticate", b"token")
            return writeError(
                request, 401, "A valid token is required: Authorization: token <T>, or ?token=<T>"
            )
        depth = len(self._prefix)
        if request.postpath[:depth] != self._prefix:
            return writeError(request, 404, "Not found")
        if preflight:
            request.setResponseCode(204)
            return b""
        request.prepath.extend(request.postpath[:depth])
        request.postpath = request.postpath[depth:]
        return self._inner.render(request)
