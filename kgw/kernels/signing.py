"""Signing Jupyter messages with a kernel's key, and checking the messages a kernel sends.

Messages travel as "parts": the ZeroMQ frames after the signature, C{[header, parent_header,
metadata, content, *buffers]}, as bytes.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Sequence
from typing import Any

from jupyter_client.session import Session

DELIMITER = b"<IDS|MSG>"


class MessageError(ValueError):
    """A ZeroMQ message that is not a correctly signed Jupyter message."""


class Signer:
    """Signs and checks messages with a kernel's key, as L{Session} defines the signature."""

    def __init__(self, session: Session) -> None:
        self._session = session

    def sign(self, parts: Sequence[bytes]) -> bytes:
        auth = self._session.auth
        if auth is None:
            return b""
        h = auth.copy()
        for part in parts[:4]:
            h.update(part)
        return h.hexdigest().encode("ascii")

    def frames(self, parts: Sequence[bytes]) -> list[bytes]:
        """The ZeroMQ frames that carry C{parts} to a kernel."""
        return [DELIMITER, self.sign(parts), *parts]

    def unwrap(self, frames: list[bytes]) -> tuple[dict[str, Any], list[bytes]]:
        """
        Check a message from the kernel and return its parsed header and its parts.

        @raise MessageError: if the delimiter is missing, the signature is wrong or the header
            is not a JSON object.
        """
        try:
            start = frames.index(DELIMITER)
        except ValueError:
            raise MessageError("no delimiter") from None
        signature = frames[start + 1] if len(frames) > start + 1 else b""
        parts = frames[start + 2 :]
        if len(parts) < 4:
            raise MessageError(f"{len(parts)} parts, expected at least 4")
        if self._session.auth is not None and not hmac.compare_digest(signature, self.sign(parts)):
            raise MessageError("invalid signature")
        try:
            header = json.loads(parts[0])
        except ValueError:
            raise MessageError("header is not JSON") from None
        if not isinstance(header, dict):
            raise MessageError("header is not an object")
        return header, parts

    def message(self, msgType: str, content: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
        """A new message from the gateway itself, as a parsed header and parts."""
        msg = self._session.msg(msgType, content=content)
        parts = self._session.serialize(msg)[2:]
        return json.loads(parts[0]), parts
