"""Serving a file from under a directory, and never from outside it."""

from __future__ import annotations

import mimetypes
import os

from twisted.web.iweb import IRequest

from kgw.errors import NoSuchResource


def fileUnder(root: str, relative: str) -> str:
    """
    The path of the regular file C{relative} names under C{root}.

    @raise NoSuchResource: if there is no such file, or the name leads out of C{root}, by
        C{..}, an absolute path or a symbolic link.
    """
    if "\x00" in relative:
        raise NoSuchResource(f"No such file: {relative!r}")
    top = os.path.realpath(root)
    path = os.path.realpath(os.path.join(top, relative))
    if os.path.commonpath([top, path]) != top or not os.path.isfile(path):
        raise NoSuchResource(f"No such file: {relative}")
    return path


def serveFile(request: IRequest, path: str, contentType: str | None = None) -> bytes:
    """The bytes of the file at C{path}, with its Content-Type set on C{request}."""
    with open(path, "rb") as f:
        data = f.read()
    kind = contentType or mimetypes.guess_type(path)[0] or "application/octet-stream"
    request.setHeader(b"Content-Type", kind.encode("ascii"))
    return data
