"""Turning what an endpoint's cell produced into an HTTP response. Pure functions."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Rich outputs sent as themselves, in this order of preference, when the cell printed nothing.
RICH_TYPES = ("application/json", "image/png", "application/pdf", "text/html")
BASE64_TYPES = frozenset({"image/png", "application/pdf"})


@dataclass
class Outputs:
    """
    What one execution published: stdout text, rich results, and its error if any.

    @ivar quiet: leave the C{execute_result} out, as IPython does for a cell ending in C{;}.
    """

    stdout: list[str] = field(default_factory=list)
    results: list[Mapping[str, Any]] = field(default_factory=list)
    displays: list[Mapping[str, Any]] = field(default_factory=list)
    error: tuple[str, str] | None = None
    quiet: bool = False

    def add(self, msgType: str, content: Mapping[str, Any]) -> None:
        """Record one iopub message (by type and content) of the execution."""
        if msgType == "stream" and content.get("name") == "stdout":
            self.stdout.append(str(content.get("text", "")))
        elif msgType == "execute_result":
            if not self.quiet:
                self.results.append(content.get("data", {}))
        elif msgType == "display_data":
            self.displays.append(content.get("data", {}))
        elif msgType == "error" and self.error is None:
            self.error = (str(content.get("ename", "")), str(content.get("evalue", "")))

    @property
    def text(self) -> str:
        return "".join(self.stdout)


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes


class ResponseInfoError(ValueError):
    """A ResponseInfo cell printed something that is not C{{"status": int, "headers": {...}}}."""


def _rich(bundle: Mapping[str, Any]) -> tuple[str, bytes] | None:
    for kind in RICH_TYPES:
        if kind not in bundle:
            continue
        value = bundle[kind]
        if kind in BASE64_TYPES:
            try:
                return kind, base64.b64decode("".join(value) if isinstance(value, list) else value)
            except (binascii.Error, TypeError, ValueError):
                continue
        if kind == "application/json":
            return kind, json.dumps(value).encode("utf-8")
        return kind + "; charset=utf-8", (
            "".join(value) if isinstance(value, list) else str(value)
        ).encode("utf-8")
    return None


def response(outputs: Outputs) -> Response:
    """
    The response to an endpoint's execution.

    An error gives 500 with KG's C{Error NAME: VALUE} text. Otherwise the body is everything
    the cell printed to stdout; if nothing, its result or last display: a JSON, PNG, PDF or HTML
    bundle is sent as itself with its type, any other bundle as KG does (the bundle as JSON).
    """
    if outputs.error is not None:
        ename, evalue = outputs.error
        return Response(500, {"Content-Type": "text/plain"}, f"Error {ename}: {evalue} \n".encode())
    if outputs.stdout:
        return Response(200, {"Content-Type": "text/plain"}, outputs.text.encode("utf-8"))
    bundles = outputs.results or outputs.displays[-1:]
    if bundles:
        rich = _rich(bundles[-1])
        if rich is not None:
            return Response(200, {"Content-Type": rich[0]}, rich[1])
        return Response(200, {"Content-Type": "text/plain"}, json.dumps(bundles[-1]).encode())
    return Response(200, {"Content-Type": "text/plain"}, b"")


def applyResponseInfo(base: Response, printed: str) -> Response:
    """
    Apply what a ResponseInfo cell printed: JSON with an optional C{status} and C{headers}.

    @raise ResponseInfoError: if it is not such JSON.
    """
    try:
        info = json.loads(printed)
    except ValueError:
        raise ResponseInfoError(f"ResponseInfo printed no JSON: {printed[:200]!r}") from None
    if not isinstance(info, dict):
        raise ResponseInfoError("ResponseInfo must print a JSON object")
    status = info.get("status", base.status)
    headers = info.get("headers", {})
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        raise ResponseInfoError(f"ResponseInfo status must be an HTTP status, got {status!r}")
    if not isinstance(headers, dict) or not all(
        isinstance(k, str) and isinstance(v, (str, int, float)) for k, v in headers.items()
    ):
        raise ResponseInfoError("ResponseInfo headers must be an object of strings")
    merged = dict(base.headers)
    merged.update({name: str(value) for name, value in headers.items()})
    return Response(status, merged, base.body)


def headerPairs(headers: Sequence[tuple[bytes, Sequence[bytes]]]) -> list[tuple[str, str]]:
    """Raw request headers as text pairs, one per value, for L{kgw.notebook_http.request}."""
    return [
        (name.decode("latin-1"), value.decode("latin-1"))
        for name, values in headers
        for value in values
    ]
