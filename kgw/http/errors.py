"""The one place where an exception becomes an HTTP answer: JSON C{{"reason", "message"}}."""

from __future__ import annotations

import json
from http import HTTPStatus

from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from kgw import errors

log = Logger()

STATUS: dict[type[Exception], int] = {
    errors.InvalidRequest: 400,
    errors.Forbidden: 403,
    errors.KernelLimitReached: 403,
    errors.NoSuchKernel: 404,
    errors.NoSuchKernelSpec: 404,
    errors.NoSuchSession: 404,
    errors.NoSuchResource: 404,
    errors.KernelStartFailed: 500,
}


def reasonPhrase(code: int) -> str:
    """The reason phrase of the HTTP status C{code} (C{Error} for an unknown one)."""
    return HTTPStatus(code).phrase if code in HTTPStatus._value2member_map_ else "Error"


def errorBody(code: int, message: str) -> bytes:
    """The JSON body of an error answered with C{code}: C{{"reason", "message"}}."""
    return json.dumps({"reason": reasonPhrase(code), "message": message}).encode("utf-8")


def writeError(request: IRequest, code: int, message: str) -> bytes:
    """Set C{code} on C{request} and return the JSON error body."""
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", b"application/json")
    return errorBody(code, message)


def statusOf(error: BaseException) -> int:
    for kind in type(error).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return 500


def handleFailure(request: IRequest, failure: Failure) -> bytes:
    """
    Answer a failed request: domain errors and routing errors with their status, anything
    else with 500, logged with its traceback (the client gets no traceback).
    """
    error = failure.value
    if isinstance(error, HTTPException):
        if isinstance(error, MethodNotAllowed) and error.valid_methods:
            request.setHeader(b"Allow", ", ".join(sorted(error.valid_methods)).encode("ascii"))
        return writeError(request, error.code or 500, error.description or "")
    if isinstance(error, errors.GatewayError):
        return writeError(request, statusOf(error), str(error))
    # The path only: a query string may carry the token.
    log.failure(
        "Unhandled error answering {method} {path}",
        failure,
        method=request.method.decode("latin-1"),
        path=request.path.decode("latin-1"),
    )
    return writeError(request, 500, "Internal server error")
