"""What the gateway records of each HTTP request: a log event and its metrics, once it is over.

The event carries the method, the route template, the status and the duration, as keys a JSON
log keeps; never the path or the query, which may hold the token (Twisted's access log, which
redacts it, shows those).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from kgw.metrics import GatewayMetrics

log = Logger()

# The status of a request whose client went away before its answer was finished (nginx's).
CLIENT_CLOSED = 499
# The status of a request handed over to a websocket: its answer is no longer HTTP's.
SWITCHED = 101


class RequestWatch:
    """One request being timed; L{finish} records it once, whichever way it ends."""

    def __init__(self, observer: RequestObserver, method: str, route: str, started: float) -> None:
        self._observer = observer
        self._method = method
        self._route = route
        self._started = started
        self.done = False

    def finish(self, status: int) -> None:
        """Record the request as answered with C{status}, unless it was recorded already."""
        if self.done:
            return
        self.done = True
        self._observer.record(
            self._method, self._route, status, self._observer.clock() - self._started
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

    def watch(self, request: IRequest, route: str) -> RequestWatch:
        """
        Start timing C{request}, whose route template is C{route}; it is recorded when its
        answer is finished, or with status 499 when its connection is lost first.
        """
        watch = RequestWatch(self, request.method.decode("latin-1"), route, self.clock())

        def finished(result: object) -> None:
            watch.finish(CLIENT_CLOSED if isinstance(result, Failure) else request.code)

        request.notifyFinish().addBoth(finished)
        return watch

    def record(self, method: str, route: str, status: int, seconds: float) -> None:
        """Log one finished request and count it."""
        self.metrics.requestFinished(method, route, status, seconds)
        log.info(
            "{method} {route} {status} {duration:.3f}s",
            method=method,
            route=route,
            status=status,
            duration=round(seconds, 6),
        )
