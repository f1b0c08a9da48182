"""What the gateway records of each HTTP request: one log line and its metrics, once it is over.

The line is the gateway's access log: who asked, the request line with any token redacted, the
status, the bytes sent, the duration, the route template, the referrer and the user agent. Its
event carries each as a key, so a JSON log keeps them apart (L{kgw.jsonlog}).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.server import Request

from kgw.http.access import redactToken
from kgw.metrics import GatewayMetrics

log = Logger()

# The status of a request whose client went away before its answer was finished (nginx's).
CLIENT_CLOSED = 499
# The status of a request handed over to a websocket: its answer is no longer HTTP's.
SWITCHED = 101

ACCESS_LINE = (
    '{client} "{method} {uri} {protocol}" {status} {size} {duration:.3f}s {route} '
    '"{referer}" "{agent}"'
)


def printable(raw: bytes | None) -> str:
    """
    C{raw} as text that cannot break a log line or its quoting: control characters, quotes and
    backslashes escaped as in JSON, other bytes taken as Latin-1; C{-} for nothing.
    """
    if not raw:
        return "-"
    return json.dumps(raw.decode("latin-1"))[1:-1]


class RequestWatch:
    """One request being timed; L{finish} records it once, whichever way it ends."""

    def __init__(
        self, observer: RequestObserver, request: Request, route: str, started: float
    ) -> None:
        self._observer = observer
        self._request = request
        self._route = route
        self._started = started
        self.done = False

    def finish(self, status: int) -> None:
        """Record the request as answered with C{status}, unless it was recorded already."""
        if self.done:
            return
        self.done = True
        self._observer.record(
            self._request, self._route, status, self._observer.clock() - self._started
        )


class RequestObserver:
    """
    Time each request from its arrival to its end, then log it and count it in C{metrics}.

    @param clock: seconds from a monotonic clock.
    """

    def __init__(
        self, metrics: GatewayMetrics, clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.metrics = metrics
        self.clock = clock

    def watch(self, request: Request, route: str) -> RequestWatch:
        """
        Start timing C{request}, whose route template is C{route}; it is recorded when its
        answer is finished, or with status 499 when its connection is lost first.
        """
        watch = RequestWatch(self, request, route, self.clock())

        def finished(result: object) -> None:
            watch.finish(CLIENT_CLOSED if isinstance(result, Failure) else request.code)

        request.notifyFinish().addBoth(finished)
        return watch

    def record(self, request: Request, route: str, status: int, seconds: float) -> None:
        """Log one finished request and count it."""
        method = request.method.decode("latin-1")
        self.metrics.requestFinished(method, route, status, seconds)
        address = request.getClientAddress()
        referer = request.getHeader(b"referer")
        log.info(
            ACCESS_LINE,
            client=str(getattr(address, "host", None) or getattr(address, "name", None) or "-"),
            method=printable(request.method),
            uri=printable(redactToken(request.uri)),
            protocol=printable(request.clientproto),
            status=status,
            size=getattr(request, "sentLength", 0),
            duration=round(seconds, 6),
            route=route,
            referer=printable(redactToken(referer) if referer else None),
            agent=printable(request.getHeader(b"user-agent")),
        )
