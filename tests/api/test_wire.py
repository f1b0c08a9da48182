"""
Tests for L{kgw.api.wire}.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable, Sequence
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from kgw.api.wire import (
    V1_PROTOCOL,
    WireError,
    check_header,
    decode_legacy,
    decode_v1,
    dict_to_parts,
    encode_legacy,
    encode_v1,
)
from kgw.jupyter import CHANNELS

fast = settings(max_examples=200, deadline=None)

HEADER = b'{"msg_id":"m1","msg_type":"kernel_info_request"}'

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)
json_objects = st.dictionaries(st.text(), json_values, max_size=4)
headers = st.builds(
    lambda extra, msg_id, msg_type: {**extra, "msg_id": msg_id, "msg_type": msg_type},
    json_objects,
    st.text(),
    st.text(),
)
messages = st.fixed_dictionaries(
    {
        "header": headers,
        "parent_header": json_objects,
        "metadata": json_objects,
        "content": json_objects,
        "buffers": st.lists(st.binary(), max_size=3),
    }
)
channels = st.sampled_from(sorted(CHANNELS))


def v1_by_hand(channel: bytes, parts: Sequence[bytes]) -> bytes:
    """
    Build a v1 frame independently of L{encode_v1}.
    """
    count = len(parts) + 2
    offsets = [8 * (count + 1), 8 * (count + 1) + len(channel)]
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    head = struct.pack("<Q", count) + b"".join(struct.pack("<Q", o) for o in offsets)
    return head + channel + b"".join(parts)


def only_wire_errors(f: Callable[..., Any], *args: Any) -> None:
    """
    Call C{f}, letting through no exception other than L{WireError}.
    """
    try:
        f(*args)
    except WireError:
        pass


@st.composite
def mutated(draw: st.DrawFn, frames: st.SearchStrategy[bytes]) -> bytes:
    """
    Draw a valid frame and damage it: truncate it, flip a byte or bump its count.
    """
    frame = draw(frames)
    how = draw(st.sampled_from(["truncate", "flip", "bump"]))
    if how == "truncate":
        return frame[: draw(st.integers(0, len(frame)))]
    if how == "flip":
        i = draw(st.integers(0, len(frame) - 1))
        bit = draw(st.integers(1, 255))
        return frame[:i] + bytes([frame[i] ^ bit]) + frame[i + 1 :]
    count = struct.unpack_from("<Q", frame)[0]
    bumped = (count + draw(st.integers(-count, 2**64))) % 2**64
    return struct.pack("<Q", bumped) + frame[8:]


v1_frames = st.builds(lambda ch, msg: encode_v1(ch, dict_to_parts(msg)), channels, messages)
legacy_binary_frames = st.builds(
    lambda ch, msg: encode_legacy(ch, "id", "t", [*dict_to_parts(msg), b"buffer"])[0],
    channels,
    messages,
)


class KnownAnswerTests(SynchronousTestCase):
    """
    Frames built by hand decode to the expected messages.
    """

    def test_protocolName(self) -> None:
        """The v1 subprotocol has the name jupyter_server negotiates."""
        self.assertEqual(V1_PROTOCOL, "v1.kernel.websocket.jupyter.org")

    def test_decodeV1(self) -> None:
        """A hand-built v1 frame for a four-part shell message decodes."""
        parts = [HEADER, b"{}", b'{"a":1}', b'{"code":"1+1"}']
        frame = struct.pack("<7Q", 6, 56, 61, 109, 111, 118, 132) + b"shell" + b"".join(parts)
        self.assertEqual((len(HEADER), len(frame)), (48, 132))
        self.assertEqual(decode_v1(frame), ("shell", parts))

    def test_encodeV1(self) -> None:
        """encode_v1 produces exactly the layout built by hand."""
        parts = [HEADER, b"{}", b"{}", b"{}", b"\x00buf"]
        self.assertEqual(encode_v1("iopub", parts), v1_by_hand(b"iopub", parts))

    def test_decodeLegacyBinary(self) -> None:
        """A hand-built legacy binary frame with two buffers decodes."""
        body = (
            b'{"header":{"msg_id":"m","msg_type":"comm_msg"},"parent_header":{},'
            b'"metadata":{},"content":{"a":1},"channel":"shell"}'
        )
        bufs = [b"\x00\x01", b"xyz"]
        offsets = [16, 16 + len(body), 18 + len(body)]
        frame = struct.pack(">4I", 3, *offsets) + body + b"".join(bufs)
        channel, msg = decode_legacy(frame, True)
        self.assertEqual(channel, "shell")
        self.assertEqual(msg["header"], {"msg_id": "m", "msg_type": "comm_msg"})
        self.assertEqual(msg["content"], {"a": 1})
        self.assertEqual(msg["buffers"], bufs)
        self.assertNotIn("channel", msg)

    def test_encodeLegacyText(self) -> None:
        """encode_legacy without buffers gives a JSON text frame of the whole message."""
        parts = [HEADER, b'{"msg_id":"p"}', b"{}", b'{"status": "ok", "t": "\xc3\xa9"}']
        payload, is_binary = encode_legacy("shell", "m1", "kernel_info_request", parts)
        self.assertFalse(is_binary)
        self.assertEqual(
            json.loads(payload.decode("utf-8")),
            {
                "header": {"msg_id": "m1", "msg_type": "kernel_info_request"},
                "msg_id": "m1",
                "msg_type": "kernel_info_request",
                "parent_header": {"msg_id": "p"},
                "metadata": {},
                "content": {"status": "ok", "t": "\xe9"},
                "buffers": [],
                "channel": "shell",
            },
        )

    def test_encodeLegacyBinary(self) -> None:
        """encode_legacy with buffers gives the offset table, the JSON, then the buffers."""
        parts = [HEADER, b"{}", b"{}", b"{}", b"ab", b"cde"]
        payload, is_binary = encode_legacy("iopub", "m1", "comm_msg", parts)
        self.assertTrue(is_binary)
        nbufs, first, second, third = struct.unpack_from(">4I", payload)
        self.assertEqual((nbufs, first), (3, 16))
        self.assertEqual(payload[second:third], b"ab")
        self.assertEqual(payload[third:], b"cde")
        msg = json.loads(payload[first:second])
        self.assertNotIn("buffers", msg)
        self.assertEqual(msg["channel"], "iopub")

    def test_dictToParts(self) -> None:
        """dict_to_parts writes compact UTF-8 JSON and appends the buffers."""
        msg = {
            "header": {"msg_id": "m", "msg_type": "t"},
            "parent_header": {},
            "metadata": {"k": [1, 2]},
            "content": {"s": "\xe9"},
            "buffers": [b"x"],
        }
        self.assertEqual(
            dict_to_parts(msg),
            [
                b'{"msg_id":"m","msg_type":"t"}',
                b"{}",
                b'{"k":[1,2]}',
                b'{"s":"\xc3\xa9"}',
                b"x",
            ],
        )

    def test_checkHeader(self) -> None:
        """check_header returns the parsed header of a good message."""
        self.assertEqual(check_header(HEADER), {"msg_id": "m1", "msg_type": "kernel_info_request"})


class RoundTripTests(SynchronousTestCase):
    """
    Encoding then decoding gives back the original message.
    """

    @fast
    @given(channels, messages)
    def test_v1(self, channel: str, msg: dict) -> None:
        """Any message survives parts -> encode_v1 -> decode_v1 unchanged."""
        parts = dict_to_parts(msg)
        self.assertEqual(decode_v1(encode_v1(channel, parts)), (channel, parts))
        self.assertEqual(check_header(parts[0]), msg["header"])

    @fast
    @given(st.text(), st.lists(st.binary(), min_size=4, max_size=7))
    def test_v1RawBytes(self, channel: str, parts: list[bytes]) -> None:
        """encode_v1 and decode_v1 relay any bytes as parts, JSON or not."""
        self.assertEqual(decode_v1(encode_v1(channel, parts)), (channel, parts))

    @fast
    @given(channels, messages)
    def test_legacy(self, channel: str, msg: dict) -> None:
        """Any message survives dict_to_parts -> encode_legacy -> decode_legacy."""
        header = msg["header"]
        payload, is_binary = encode_legacy(
            channel, header["msg_id"], header["msg_type"], dict_to_parts(msg)
        )
        self.assertEqual(is_binary, bool(msg["buffers"]))
        got_channel, got = decode_legacy(payload, is_binary)
        self.assertEqual(got_channel, channel)
        for key in ("header", "parent_header", "metadata", "content", "buffers"):
            self.assertEqual(got[key], msg[key])
        self.assertEqual((got["msg_id"], got["msg_type"]), (header["msg_id"], header["msg_type"]))


class FuzzTests(SynchronousTestCase):
    """
    Arbitrary or damaged input raises nothing but L{WireError}.
    """

    @fast
    @given(st.binary())
    def test_v1(self, frame: bytes) -> None:
        """decode_v1 on any bytes returns or raises WireError."""
        only_wire_errors(decode_v1, frame)

    @fast
    @given(st.binary(), st.booleans())
    def test_legacy(self, payload: bytes, is_binary: bool) -> None:
        """decode_legacy on any bytes, binary or text, returns or raises WireError."""
        only_wire_errors(decode_legacy, payload, is_binary)

    @fast
    @given(mutated(v1_frames))
    def test_v1Mutated(self, frame: bytes) -> None:
        """decode_v1 on a truncated, flipped or recounted frame returns or raises WireError."""
        only_wire_errors(decode_v1, frame)

    @fast
    @given(mutated(legacy_binary_frames))
    def test_legacyMutated(self, frame: bytes) -> None:
        """decode_legacy on a damaged binary frame returns or raises WireError."""
        only_wire_errors(decode_legacy, frame, True)

    @fast
    @given(st.binary())
    def test_checkHeader(self, raw: bytes) -> None:
        """check_header on any bytes returns or raises WireError."""
        only_wire_errors(check_header, raw)


class BadInputTests(SynchronousTestCase):
    """
    Specific malformed input raises L{WireError}.
    """

    good = (HEADER, b"{}", b"{}", b"{}")

    def test_v1Empty(self) -> None:
        """An empty v1 frame is rejected."""
        self.assertRaises(WireError, decode_v1, b"")

    def test_v1HugeCount(self) -> None:
        """An offset count of 2**63 is rejected without allocating."""
        frame = encode_v1("shell", self.good)
        self.assertRaises(WireError, decode_v1, struct.pack("<Q", 2**63) + frame[8:])

    def test_v1TooFewOffsets(self) -> None:
        """A v1 frame with fewer than four parts is rejected."""
        frame = v1_by_hand(b"shell", self.good[:3])
        self.assertRaises(WireError, decode_v1, frame)

    def test_v1OffsetPastEnd(self) -> None:
        """A v1 frame whose offsets run past its end is rejected."""
        frame = encode_v1("shell", self.good)
        self.assertRaises(WireError, decode_v1, frame[:-1])

    def test_v1TrailingGarbage(self) -> None:
        """A v1 frame with bytes after its last part is rejected."""
        self.assertRaises(WireError, decode_v1, encode_v1("shell", self.good) + b"x")

    def test_v1Unordered(self) -> None:
        """A v1 frame whose offsets go backwards is rejected."""
        frame = bytearray(encode_v1("shell", self.good))
        frame[24:32] = struct.pack("<Q", 1)
        self.assertRaises(WireError, decode_v1, bytes(frame))

    def test_v1BadStart(self) -> None:
        """A v1 frame whose channel does not follow the offset table is rejected."""
        frame = bytearray(encode_v1("shell", self.good))
        frame[8:16] = struct.pack("<Q", 57)
        self.assertRaises(WireError, decode_v1, bytes(frame))

    def test_v1BadChannel(self) -> None:
        """A v1 frame whose channel is not UTF-8 is rejected."""
        self.assertRaises(WireError, decode_v1, v1_by_hand(b"\xff", self.good))

    def test_legacyList(self) -> None:
        """Legacy JSON that is a list rather than an object is rejected."""
        self.assertRaises(WireError, decode_legacy, b"[]", False)

    def test_legacyBadUtf8(self) -> None:
        """A legacy text frame that is not UTF-8 is rejected."""
        self.assertRaises(WireError, decode_legacy, b'{"header":"\xff"}', False)

    def test_legacyNoMsgType(self) -> None:
        """A legacy message whose header lacks msg_type is rejected."""
        payload = b'{"header":{"msg_id":"m"},"channel":"shell"}'
        self.assertRaises(WireError, decode_legacy, payload, False)

    def test_legacyStringContent(self) -> None:
        """A legacy message whose content is a string is rejected."""
        payload = b'{"header":{"msg_id":"m","msg_type":"t"},"content":"x"}'
        self.assertRaises(WireError, decode_legacy, payload, False)

    def test_legacyChannelNotString(self) -> None:
        """A legacy message whose channel is not a string is rejected."""
        payload = b'{"header":{"msg_id":"m","msg_type":"t"},"channel":1}'
        self.assertRaises(WireError, decode_legacy, payload, False)

    def test_legacyNullChannel(self) -> None:
        """A legacy message whose channel is null is read as one without a channel."""
        payload = b'{"header":{"msg_id":"m","msg_type":"t"},"channel":null}'
        channel, msg = decode_legacy(payload, False)
        self.assertIsNone(channel)
        self.assertNotIn("channel", msg)

    def test_legacyDefaults(self) -> None:
        """A legacy message without channel or optional parts gets None and {}."""
        payload = b'{"header":{"msg_id":"m","msg_type":"t"}}'
        channel, msg = decode_legacy(payload, False)
        self.assertIsNone(channel)
        self.assertEqual(msg["parent_header"], {})
        self.assertEqual(msg["metadata"], {})
        self.assertEqual(msg["content"], {})
        self.assertEqual(msg["buffers"], [])

    def test_legacyNaN(self) -> None:
        """A legacy message containing NaN is rejected."""
        payload = b'{"header":{"msg_id":"m","msg_type":"t"},"content":{"x":NaN}}'
        self.assertRaises(WireError, decode_legacy, payload, False)

    def test_legacyDeepNesting(self) -> None:
        """Deeply nested legacy JSON is rejected rather than overflowing the stack."""
        self.assertRaises(WireError, decode_legacy, b"[" * 100000, False)

    def test_legacyBinaryNoParts(self) -> None:
        """A legacy binary frame with a count of zero is rejected."""
        self.assertRaises(WireError, decode_legacy, struct.pack(">I", 0), True)

    def test_legacyBinaryTruncated(self) -> None:
        """A legacy binary frame cut inside its offset table is rejected."""
        payload, _ = encode_legacy("shell", "m", "t", [*self.good, b"buf"])
        self.assertRaises(WireError, decode_legacy, payload[:10], True)

    def test_legacyBinaryOffsetPastEnd(self) -> None:
        """A legacy binary frame with an offset beyond its end is rejected."""
        frame = struct.pack(">3I", 2, 12, 1000) + b"{}"
        self.assertRaises(WireError, decode_legacy, frame, True)

    def test_dictToPartsNaN(self) -> None:
        """dict_to_parts refuses NaN, which is not JSON."""
        msg = {
            "header": {"msg_id": "m", "msg_type": "t"},
            "content": {"x": float("nan")},
        }
        self.assertRaises(WireError, dict_to_parts, msg)

    def test_dictToPartsNoHeader(self) -> None:
        """dict_to_parts refuses a message without a header."""
        self.assertRaises(WireError, dict_to_parts, {"content": {}})

    def test_dictToPartsSurrogate(self) -> None:
        """dict_to_parts escapes a lone surrogate instead of producing bad UTF-8."""
        _, msg = decode_legacy(
            b'{"header":{"msg_id":"m","msg_type":"t"},"content":{"s":"\\ud800"}}', False
        )
        content = dict_to_parts(msg)[3]
        self.assertEqual(content, b'{"s":"\\ud800"}')

    def test_checkHeaderNotObject(self) -> None:
        """check_header refuses a header that is not an object or lacks msg_id."""
        self.assertRaises(WireError, check_header, b"[]")
        self.assertRaises(WireError, check_header, b'{"msg_type":"t"}')
        self.assertRaises(WireError, check_header, b'{"msg_id":1,"msg_type":"t"}')

    def test_encodeTooFewParts(self) -> None:
        """Both encoders refuse fewer than four parts."""
        self.assertRaises(WireError, encode_v1, "shell", self.good[:3])
        self.assertRaises(WireError, encode_legacy, "shell", "m", "t", self.good[:3])
