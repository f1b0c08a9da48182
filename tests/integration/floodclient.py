"""
A websocket client of a kernel's channels for the flood test, run in a process of its own so
that its reading costs the test's reactor nothing.

    python -m tests.integration.floodclient MODE PORT KERNEL_ID CODE

It opens the channels websocket over a plain socket, sends one C{execute_request} for C{CODE},
then reads as C{MODE} says: C{never} (it never calls C{recv()}), C{slow} (64 KiB every 20 ms)
or C{full} (as fast as it can, skipping large frames unparsed). It prints one line per event:
C{open}, C{reply} when the execute_reply arrives, C{notice TEXT} for a stderr stream message
(the gateway's own notices), and C{read N} with the bytes read when it ends, which is when its
standard input closes.
"""

from __future__ import annotations

import base64
import json
import os
import select
import socket
import struct
import sys
import time
import uuid

SLOW_CHUNK = 64 * 1024
SLOW_PAUSE = 0.02
# Frames up to this size are parsed (replies, statuses, notices); larger ones are skipped.
PARSED = 64 * 1024


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def handshake(port: int, kernelId: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /api/kernels/{kernelId}/channels?session_id={uuid.uuid4().hex} HTTP/1.1\r\n"
            f"Host: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = sock.recv(1)  # byte by byte: what follows the headers is the websocket's
        if not chunk:
            raise SystemExit("closed during the handshake")
        response += chunk
    if not response.startswith(b"HTTP/1.1 101"):
        raise SystemExit(response.decode(errors="replace"))
    return sock


def frame(payload: bytes) -> bytes:
    """A masked text frame, as a client must send."""
    mask = os.urandom(4)
    length = len(payload)
    if length < 126:
        head = struct.pack("!BB", 0x81, 0x80 | length)
    elif length < 1 << 16:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, length)
    else:
        head = struct.pack("!BBQ", 0x81, 0x80 | 127, length)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + masked


class Frames:
    """Reads server frames from a byte stream; parses small ones, skips large ones."""

    def __init__(self, msgId: str) -> None:
        self.msgId = msgId
        self.pending = b""
        self.skip = 0
        self.collect = -1  # bytes of the current small frame still to come, or -1

    def feed(self, data: bytes) -> None:
        if self.skip:
            taken = min(self.skip, len(data))
            self.skip -= taken
            data = data[taken:]
        self.pending += data
        while self.pending:
            if len(self.pending) < 2:
                return
            length = self.pending[1] & 0x7F
            offset = 2
            if length == 126:
                if len(self.pending) < 4:
                    return
                (length,) = struct.unpack("!H", self.pending[2:4])
                offset = 4
            elif length == 127:
                if len(self.pending) < 10:
                    return
                (length,) = struct.unpack("!Q", self.pending[2:10])
                offset = 10
            if length > PARSED:
                available = len(self.pending) - offset
                self.skip = max(0, length - available)
                self.pending = self.pending[offset + min(length, available) :]
                if self.skip:
                    return
                continue
            if len(self.pending) < offset + length:
                return
            payload, self.pending = (
                self.pending[offset : offset + length],
                self.pending[offset + length :],
            )
            self.message(payload)

    def message(self, payload: bytes) -> None:
        try:
            msg = json.loads(payload)
        except ValueError:
            return
        if not isinstance(msg, dict):
            return
        kind = msg.get("header", {}).get("msg_type")
        parent = msg.get("parent_header", {}).get("msg_id")
        if kind == "execute_reply" and parent == self.msgId:
            say("reply")
        elif kind == "stream" and msg.get("content", {}).get("name") == "stderr":
            say("notice " + json.dumps(msg["content"]["text"]))


def main(mode: str, port: int, kernelId: str, code: str) -> None:
    sock = handshake(port, kernelId)
    msgId = uuid.uuid4().hex
    request = {
        "header": {
            "msg_id": msgId,
            "msg_type": "execute_request",
            "username": "flood",
            "session": uuid.uuid4().hex,
            "version": "5.3",
            "date": "2026-01-01T00:00:00.000000Z",
        },
        "parent_header": {},
        "metadata": {},
        "content": {"code": code, "silent": False},
        "channel": "shell",
    }
    sock.sendall(frame(json.dumps(request).encode()))
    say("open")
    frames = Frames(msgId)
    read = 0
    stdin = sys.stdin.fileno()
    watched = [stdin] if mode == "never" else [stdin, sock]
    buffer = bytearray(4 * 1024 * 1024)
    while True:
        ready, _, _ = select.select(watched, [], [])
        if stdin in ready and not os.read(stdin, 1024):
            break
        if sock in ready:
            size = sock.recv_into(buffer, SLOW_CHUNK if mode == "slow" else len(buffer))
            if not size:
                say("closed")
                watched = [stdin]
                continue
            read += size
            frames.feed(bytes(buffer[:size]) if size <= PARSED else memoryview(buffer)[:size])
            if mode == "slow":
                time.sleep(SLOW_PAUSE)
    say(f"read {read}")
    sock.close()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
