"""The C{REQUEST} a notebook endpoint sees: built from an HTTP request, assigned in the kernel.

Pure functions: no reactor, no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from email.message import Message
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any
from urllib.parse import parse_qs


def mediaType(contentType: str | None) -> str:
    """The media type of a Content-Type value, lower-cased, without its parameters."""
    return (contentType or "").split(";", 1)[0].strip().lower()


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", errors="replace")


def _multipart(raw: bytes, contentType: str) -> dict[str, list[str]]:
    """The fields of a multipart/form-data body, name to values, files as their text."""
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + contentType.encode("latin-1") + b"\r\n\r\n" + raw
    )
    fields: dict[str, list[str]] = {}
    if not message.is_multipart():
        return fields
    for part in message.iter_parts():
        assert isinstance(part, Message)
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        fields.setdefault(name, []).append(_text(payload if isinstance(payload, bytes) else b""))
    return fields


def parseBody(raw: bytes, contentType: str | None) -> Any:
    """
    The C{body} of C{REQUEST}, by Content-Type: JSON parsed (the text when it does not parse),
    forms as name to list of values, anything else as text.
    """
    kind = mediaType(contentType)
    if kind == "application/json" or kind.endswith("+json"):
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            return _text(raw)
    if kind == "application/x-www-form-urlencoded":
        return parse_qs(_text(raw), keep_blank_values=True)
    if kind == "multipart/form-data":
        return _multipart(raw, contentType or "")
    return _text(raw)


def buildRequest(
    body: bytes,
    contentType: str | None,
    args: Mapping[str, Sequence[str]],
    path: Mapping[str, str],
    headers: Sequence[tuple[str, str]],
) -> dict[str, Any]:
    """
    The C{REQUEST} object: C{body}, C{args} (name to list of values), C{path} (parameter to
    value) and C{headers} (name to value, a list for a header given more than once).
    """
    headerMap: dict[str, Any] = {}
    for name, value in headers:
        if name in headerMap:
            previous = headerMap[name]
            headerMap[name] = (
                [*previous, value] if isinstance(previous, list) else [previous, value]
            )
        else:
            headerMap[name] = value
    return {
        "body": parseBody(body, contentType),
        "args": {name: list(values) for name, values in args.items()},
        "path": dict(path),
        "headers": headerMap,
    }


def assignment(language: str, request: Mapping[str, Any]) -> str:
    """
    Code that sets C{REQUEST} to the JSON text of C{request} in C{language}.

    As in KG, C{REQUEST} is a string holding JSON. Unlike KG, the literal can never be
    interpolated: bash and Perl get single-quoted strings, Julia an escaped C{$}.
    """
    text = json.dumps(request)
    literal = json.dumps(text)  # ASCII-only, with quotes and backslashes escaped
    language = language.lower()
    if language == "bash":
        # Inside single quotes bash takes every character as it is, but the quote itself.
        return "REQUEST='" + text.replace("'", "'\\''") + "'"
    if language == "perl":
        escaped = text.replace("\\", "\\\\").replace("'", "\\'")
        return f"my $REQUEST = '{escaped}';"
    if language == "julia":
        return "REQUEST = " + literal.replace("$", "\\$")
    return "REQUEST = " + literal
