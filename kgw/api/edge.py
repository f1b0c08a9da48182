"""The outermost resource: every request enters here, and only paths under C{base_url} go on."""

from __future__ import annotations

from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from kgw.api.errors import writeError


class Edge(Resource):
    """
    Serve C{inner} under the path segments of C{baseURL}, and a JSON 404 everywhere else.

    The segments of the base URL move from C{postpath} to C{prepath}, so Klein routes the rest
    and builds URLs with the prefix.
    """

    isLeaf = True

    def __init__(self, inner: IResource, baseURL: str = "/") -> None:
        super().__init__()
        self._inner = inner
        self._prefix = [s.encode("utf-8") for s in baseURL.strip("/").split("/") if s]

    def render(self, request: IRequest) -> bytes | int:
        depth = len(self._prefix)
        if request.postpath[:depth] != self._prefix:
            return writeError(request, 404, "Not found")
        request.prepath.extend(request.postpath[:depth])
        request.postpath = request.postpath[depth:]
        return self._inner.render(request)
