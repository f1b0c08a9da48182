"""notebook-http mode: a notebook's annotated cells served as HTTP endpoints, by a Klein app."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs

from klein import Klein
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest

from kgw.http.errors import handleFailure, writeError
from kgw.http.files import fileUnder, serveFile
from kgw.http.routes import UNMATCHED, RouteTemplates
from kgw.kernels.execution import KernelRestarted
from kgw.kernels.kernel import Kernel
from kgw.notebook_http.cells import Endpoint, NotebookAPI, match
from kgw.notebook_http.lender import KernelLender
from kgw.notebook_http.request import assignment, buildRequest
from kgw.notebook_http.responses import (
    Outputs,
    Response,
    ResponseInfoError,
    applyResponseInfo,
    headerPairs,
    response,
)
from kgw.notebook_http.swagger import buildSwagger

log = Logger()

# How long a kernel interrupted after a timeout may take to stop before it is replaced.
INTERRUPT_GRACE = 10.0


class KernelDied(Exception):
    """The kernel serving a request died or restarted before it answered."""


class TimedOut(Exception):
    """The request ran past C{request_timeout}; C{execution} fires when the kernel is done."""

    def __init__(self, execution: Deferred[Any]) -> None:
        super().__init__()
        self.execution = execution


class NotebookAPIResource:
    """
    The endpoints of one notebook, answered by kernels borrowed from a L{KernelLender}.

    @param timeout: seconds a request may run before it gets 504 (0: no limit).
    """

    app = Klein()
    app.url_map.merge_slashes = False

    def __init__(
        self,
        api: NotebookAPI,
        lender: KernelLender,
        clock: IReactorTime,
        notebookPath: str,
        timeout: float = 0.0,
        allowDownload: bool = False,
        staticPath: str = "",
        hideToken: bool = False,
    ) -> None:
        self.api = api
        self.lender = lender
        self.clock = clock
        self.notebookPath = notebookPath
        self.timeout = timeout
        self.allowDownload = allowDownload
        self.staticPath = staticPath
        self.hideToken = hideToken
        self._swagger = json.dumps(buildSwagger(api.endpoints, notebookPath)).encode("utf-8")
        self._routes = RouteTemplates(self.app.url_map)

    def routeTemplate(self, method: str, path: str) -> str:
        """
        The route template of a request: the gateway's own routes by their rule, the notebook's
        by the path its cell declares (C{/books/:id}).
        """
        template = self._routes(method, path)
        if template not in ("/", "/{__rest__}"):
            return template
        endpoints, _ = match(self.api.endpoints, path)
        return endpoints[0].path if endpoints else UNMATCHED

    @app.handle_errors(Exception)
    def _error(self, request: IRequest, failure: Any) -> bytes:
        return handleFailure(request, failure)

    @app.route("/_api/spec/swagger.json", methods=["GET"])
    def swagger(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", b"application/json")
        return self._swagger

    @app.route("/_api/source", methods=["GET"])
    def source(self, request: IRequest) -> bytes:
        if not self.allowDownload:
            return writeError(request, 404, "Notebook download is not enabled")
        return serveFile(request, self.notebookPath, "application/x-ipynb+json")

    @app.route("/public/<path:name>", methods=["GET", "HEAD"])
    def public(self, request: IRequest, name: str) -> bytes:
        if not self.staticPath:
            return writeError(request, 404, "No static files are served")
        return serveFile(request, fileUnder(self.staticPath, name))

    # Not strict about slashes: under base_url, werkzeug would answer the bare prefix with a
    # redirect to the prefix and a slash, which handleFailure sends without its Location.
    @app.route(
        "/",
        branch=True,
        methods=["GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS"],
        strict_slashes=False,
    )
    def endpoint(self, request: IRequest) -> Deferred[bytes] | bytes:
        path = "/" + "/".join(s.decode("utf-8", "replace") for s in request.postpath)
        endpoints, parameters = match(self.api.endpoints, path)
        if not endpoints:
            return writeError(request, 404, f"No endpoint at {path}")
        method = request.method.decode("ascii", "replace")
        chosen = next((e for e in endpoints if e.method == method), None)
        if chosen is None:
            request.setHeader(b"Allow", ", ".join(sorted(e.method for e in endpoints)).encode())
            return writeError(request, 405, f"{path} does not answer {method}")
        body = request.content.read() if request.content is not None else b""
        # The query's arguments only: Twisted's request.args also holds a form body's fields.
        query = request.uri.partition(b"?")[2].decode("utf-8", "replace")
        args = {
            name: values
            for name, values in parse_qs(query, keep_blank_values=True).items()
            # The gateway's token is the gateway's, never the cell's; without one, a "token"
            # argument is the notebook's own (a page token, say).
            if not (self.hideToken and name == "token")
        }
        contentType = request.getHeader(b"content-type")
        built = buildRequest(
            body,
            contentType.decode("latin-1") if contentType else None,
            args,
            parameters,
            headerPairs(list(request.requestHeaders.getAllRawHeaders())),
        )
        # The answer is worked out to its end even if the client goes away, so that the kernel
        # it borrowed is given back only once it is idle.
        answer = ensureDeferred(self._answer(chosen, built))
        result: Deferred[Response | tuple[int, str]] = Deferred()

        def deliver(outcome: Response | tuple[int, str]) -> None:
            if not result.called:
                result.callback(outcome)

        def fail(failure: Failure) -> None:
            if not result.called:
                result.errback(failure)

        answer.addCallbacks(deliver, fail)
        return result.addCallback(lambda r: self._write(request, r))

    def _write(self, request: IRequest, answer: Response | tuple[int, str]) -> bytes:
        if isinstance(answer, tuple):
            return writeError(request, *answer)
        request.setResponseCode(answer.status)
        for name, value in answer.headers.items():
            request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
        return answer.body

    async def _answer(
        self, endpoint: Endpoint, built: dict[str, Any]
    ) -> Response | tuple[int, str]:
        kernel = await self.lender.borrow()
        try:
            answer = await self._run(kernel, endpoint, built)
        except KernelDied:
            self.lender.replace(kernel)
            return (503, "The kernel died while answering; try again")
        except TimedOut as e:
            ensureDeferred(self._recover(kernel, e.execution))
            return (504, f"The request ran for more than {self.timeout:g} s")
        self.lender.giveBack(kernel)
        return answer

    async def _run(
        self, kernel: Kernel, endpoint: Endpoint, built: dict[str, Any]
    ) -> Response | tuple[int, str]:
        channels = kernel.channels
        if channels is None or channels.closed:
            raise KernelDied()
        caller = kernel.caller
        outputs = Outputs(quiet=endpoint.quiet)
        # One execute runs the assignment and the cell together (KG runs them as two, one after
        # the other); a ResponseInfo cell goes at once behind it. A cell that fails makes the
        # kernel abort the ResponseInfo (stop_on_error), and as in KG the answer is its 500.
        # Requests are not kept in the kernel's history, which would grow with each of them.
        code = assignment(self.api.language, built) + "\n" + endpoint.source
        ran = caller.execute(code, storeHistory=False, onOutput=outputs.add)
        info = Outputs()
        infoRan = None
        if endpoint.responseSource is not None:
            infoRan = caller.execute(endpoint.responseSource, storeHistory=False, onOutput=info.add)
        try:
            await self._withTimeout(ran)
            answer = response(outputs)
            if infoRan is not None and outputs.error is None:
                await self._withTimeout(infoRan)
                if info.error is None:
                    answer = applyResponseInfo(answer, info.text)
        except (KernelRestarted, ConnectionDone) as e:
            ran.addErrback(lambda _: None)
            raise KernelDied() from e
        except ResponseInfoError as e:
            return (500, str(e))
        finally:
            if infoRan is not None:
                # Not awaited when the cell failed or ran out of time: its end is of no interest.
                infoRan.addErrback(lambda _: None)
        return answer

    def _withTimeout(self, execution: Deferred[Any]) -> Deferred[Any]:
        """C{execution}, failing with L{TimedOut} after C{timeout} seconds; it keeps running."""
        if not self.timeout:
            return execution
        raced: Deferred[Any] = Deferred()
        settled: Deferred[bool] = Deferred()

        def late() -> None:
            if not raced.called:
                raced.errback(TimedOut(settled))

        timer = self.clock.callLater(self.timeout, late)

        def finished(outcome: object) -> None:
            if timer.active():
                timer.cancel()
            if raced.called:
                settled.callback(not isinstance(outcome, Failure))
            else:
                raced.callback(outcome)

        execution.addBoth(finished)
        return raced

    async def _recover(self, kernel: Kernel, settled: Deferred[bool]) -> None:
        """Interrupt a kernel that ran past the timeout; lend it again once it is idle."""
        try:
            await self.lender.kernels.interrupt(kernel.id)
        except Exception:
            log.failure("Interrupting kernel {kernelId} failed", kernelId=kernel.id)
        done: Deferred[bool] = Deferred()
        timer = self.clock.callLater(
            INTERRUPT_GRACE, lambda: None if done.called else done.callback(False)
        )
        settled.addCallback(lambda ok: None if done.called else done.callback(ok))
        if await done:
            if timer.active():
                timer.cancel()
            self.lender.giveBack(kernel)
        else:
            self.lender.replace(kernel)
