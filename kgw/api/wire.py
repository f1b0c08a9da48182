"""
Conversion between websocket frames and Jupyter messages held as raw ZeroMQ parts.

A I{parts} list is what follows the HMAC signature on the ZeroMQ wire:
C{[header, parent_header, metadata, content, *buffers]}, all C{bytes}, the
first four being UTF-8 JSON. Nothing in this module touches the reactor or
does I/O.
"""

from __future__ import annotations

import itertools
import json
import struct
from collections.abc import Sequence
from functools import partial
from typing import Any


class WireError(ValueError):
    """A websocket frame that is not a valid Jupyter message."""


V1_PROTOCOL = "v1.kernel.websocket.jupyter.org"

_MESSAGE_PARTS = 4


def _reject_constant(name: str) -> Any:
    """
    Refuse the non-standard JSON constants C{NaN}, C{Infinity} and C{-Infinity}.

    @param name: The constant as spelled in the JSON text.
    @return: Never returns.
    """
    raise WireError(f"non-finite number {name} in JSON")


def _loads(raw: bytes, what: str) -> Any:
    """
    Parse strict UTF-8 JSON, turning every failure into L{WireError}.

    @param raw: The JSON text.
    @param what: What the text is, for the error message.
    @return: The parsed value.
    """
    try:
        return json.loads(str(raw, "utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise WireError(f"{what} is not valid UTF-8") from None
    except RecursionError:
        raise WireError(f"{what} is nested too deeply") from None
    except WireError:
        raise
    except ValueError as e:
        raise WireError(f"{what} is not valid JSON: {e}") from None


def _valid_header(header: Any) -> dict:
    """
    Check that C{header} is a JSON object with string C{msg_id} and C{msg_type}.

    @param header: A parsed header.
    @return: C{header}, unchanged.
    """
    if not isinstance(header, dict):
        raise WireError("header is not a JSON object")
    for key in ("msg_id", "msg_type"):
        if not isinstance(header.get(key), str):
            raise WireError(f"header has no string {key}")
    return header


def check_header(raw: bytes) -> dict:
    """
    Parse the raw header part of a message and check it names the message.

    @param raw: The UTF-8 JSON header part.
    @return: The header as a C{dict} with string C{msg_id} and C{msg_type}.
    """
    return _valid_header(_loads(raw, "header"))


def encode_v1(channel: str, parts: Sequence[bytes]) -> bytes:
    """
    Build one binary frame of the C{v1.kernel.websocket.jupyter.org} protocol.

    @param channel: The channel the message arrived on.
    @param parts: The message parts; relayed as they are, without parsing.
    @return: The frame.
    """
    return b"".join(pieces_v1(channel, parts))


def pieces_v1(channel: str, parts: Sequence[bytes]) -> list[bytes]:
    """
    The frame of L{encode_v1} as the pieces that make it up, in order, not joined: the parts
    are the very objects given, so that a large message is never copied here.
    """
    if len(parts) < _MESSAGE_PARTS:
        raise WireError(f"a message needs {_MESSAGE_PARTS} parts, got {len(parts)}")
    pieces = [channel.encode("utf-8"), *parts]
    count = len(pieces) + 1
    offsets = [8 * (count + 1)]
    for piece in pieces:
        offsets.append(offsets[-1] + len(piece))
    return [struct.pack(f"<{count + 1}Q", count, *offsets), *pieces]


def decode_v1(frame: bytes) -> tuple[str, list[bytes]]:
    """
    Split a C{v1.kernel.websocket.jupyter.org} frame into channel and parts.

    @param frame: The binary websocket frame.
    @return: The channel name and the parts, whose JSON is not parsed.
    """
    size = len(frame)
    if size < 8:
        raise WireError("v1 frame is shorter than its offset count")
    (count,) = struct.unpack_from("<Q", frame)
    if count < _MESSAGE_PARTS + 2:
        raise WireError(f"v1 frame has {count} offsets, needs at least 6")
    start = 8 * (count + 1)
    if start > size:
        raise WireError("v1 frame is shorter than its offset table")
    offsets = struct.unpack_from(f"<{count}Q", frame, 8)
    if offsets[0] != start:
        raise WireError("v1 channel does not start right after the offsets")
    if any(a > b for a, b in itertools.pairwise(offsets)):
        raise WireError("v1 offsets are not in order")
    if offsets[-1] != size:
        raise WireError("v1 offsets do not end at the end of the frame")
    with memoryview(frame) as view:
        try:
            channel = str(view[offsets[0] : offsets[1]], "utf-8")
        except UnicodeDecodeError:
            raise WireError("v1 channel is not valid UTF-8") from None
        parts = [bytes(view[a:b]) for a, b in itertools.pairwise(offsets[1:])]
    return channel, parts


def encode_legacy(
    channel: str, msg_id: str, msg_type: str, parts: Sequence[bytes]
) -> tuple[bytes, bool]:
    """
    Build a legacy (unnamed subprotocol) frame by splicing the raw JSON parts.

    @param channel: The channel the message arrived on.
    @param msg_id: The message id, copied to the top level of the message.
    @param msg_type: The message type, copied to the top level of the message.
    @param parts: The message parts; their JSON is spliced in, not re-serialised.
    @return: The payload, and whether it must go out as a binary frame.
    """
    pieces, is_binary = pieces_legacy(channel, msg_id, msg_type, parts)
    return b"".join(pieces), is_binary


def pieces_legacy(
    channel: str, msg_id: str, msg_type: str, parts: Sequence[bytes]
) -> tuple[list[bytes], bool]:
    """
    The frame of L{encode_legacy} as the pieces that make it up, in order, not joined: the
    content and the buffers are the very objects given, so that they are never copied here.
    """
    if len(parts) < _MESSAGE_PARTS:
        raise WireError(f"a message needs {_MESSAGE_PARTS} parts, got {len(parts)}")
    header, parent, metadata, content = parts[:_MESSAGE_PARTS]
    buffers = parts[_MESSAGE_PARTS:]
    opening = (
        b'{"header":%s,"msg_id":%s,"msg_type":%s,"parent_header":%s,"metadata":%s,"content":'
        % (
            header,
            json.dumps(msg_id).encode("ascii"),
            json.dumps(msg_type).encode("ascii"),
            parent,
            metadata,
        )
    )
    closing = b'%s,"channel":%s}' % (
        b"" if buffers else b',"buffers":[]',
        json.dumps(channel).encode("ascii"),
    )
    if not buffers:
        return [opening, content, closing], False
    sizes = [len(opening) + len(content) + len(closing), *(len(b) for b in buffers)]
    offsets = [4 * (len(sizes) + 1)]
    for size in sizes[:-1]:
        offsets.append(offsets[-1] + size)
    table = struct.pack(f">{len(offsets) + 1}I", len(sizes), *offsets)
    return [table, opening, content, closing, *buffers], True


def _split_legacy_binary(payload: bytes) -> tuple[bytes, list[bytes]]:
    """
    Split a legacy binary frame into its JSON text and its buffers.

    @param payload: The binary websocket frame.
    @return: The JSON text and the buffers.
    """
    size = len(payload)
    if size < 4:
        raise WireError("binary frame is shorter than its buffer count")
    (count,) = struct.unpack_from(">I", payload)
    if count < 1:
        raise WireError("binary frame has no JSON part")
    start = 4 * (count + 1)
    if start > size:
        raise WireError("binary frame is shorter than its offset table")
    offsets = struct.unpack_from(f">{count}I", payload, 4)
    if offsets[0] != start:
        raise WireError("binary frame JSON does not start right after the offsets")
    ends = (*offsets[1:], size)
    if any(a > b for a, b in zip(offsets, ends, strict=True)):
        raise WireError("binary frame offsets are out of order or past the end")
    with memoryview(payload) as view:
        pieces = [bytes(view[a:b]) for a, b in zip(offsets, ends, strict=True)]
    return pieces[0], pieces[1:]


def decode_legacy(payload: bytes, is_binary: bool) -> tuple[str | None, dict]:
    """
    Parse and check a legacy frame, text or binary, into a message C{dict}.

    @param payload: The frame payload; UTF-8 JSON when C{is_binary} is false.
    @param is_binary: Whether the frame was a binary websocket frame.
    @return: The C{channel} key (C{None} if absent or null, which jupyter_server
        sends to shell) and the rest of the message, with C{buffers} a list of C{bytes}.
    """
    if is_binary:
        text, buffers = _split_legacy_binary(payload)
    else:
        text, buffers = payload, []
    msg = _loads(text, "message")
    if not isinstance(msg, dict):
        raise WireError("message is not a JSON object")
    _valid_header(msg.get("header"))
    for key in ("parent_header", "metadata", "content"):
        if not isinstance(msg.setdefault(key, {}), dict):
            raise WireError(f"{key} is not a JSON object")
    if msg.get("channel") is not None and not isinstance(msg["channel"], str):
        raise WireError("channel is not a string")
    channel = msg.pop("channel", None)
    msg["buffers"] = buffers
    return channel, msg


def _dumps(value: Any, what: str) -> bytes:
    """
    Serialise compact JSON as UTF-8, escaping to ASCII if it has lone surrogates.

    @param value: The value to serialise.
    @param what: What the value is, for the error message.
    @return: The JSON text.
    """
    dumps = partial(json.dumps, separators=(",", ":"), allow_nan=False, default=str)
    try:
        try:
            return dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            return dumps(value, ensure_ascii=True).encode("ascii")
    except RecursionError:
        raise WireError(f"{what} is nested too deeply") from None
    except (TypeError, ValueError) as e:
        raise WireError(f"{what} cannot be serialised: {e}") from None


def dict_to_parts(msg: dict) -> list[bytes]:
    """
    Serialise a message C{dict} into ZeroMQ parts, ready for signing.

    @param msg: A message as returned by L{decode_legacy}.
    @return: C{[header, parent_header, metadata, content, *buffers]}.
    """
    if "header" not in msg:
        raise WireError("message has no header")
    parts = [
        _dumps(msg.get(key, {}), key) for key in ("header", "parent_header", "metadata", "content")
    ]
    return parts + list(msg.get("buffers") or ())
