"""
A black-box gateway client: HTTP for the REST API, one websocket per kernel connection.

It knows nothing of the gateway behind the URL beyond the Jupyter protocols, so the same code
drives kgw and Jupyter Kernel Gateway. Its own cost is part of what the latency and throughput
figures measure, so it reads as little of each message as it can: the legacy JSON frames must
be parsed whole, but of a v1 frame only the header and parent header are parsed, and the
content only for the few messages whose content matters (status and replies).
"""

from __future__ import annotations

import asyncio
import json
import struct
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import aiohttp

LEGACY = "legacy"
V1 = "v1"
V1_SUBPROTOCOL = "v1.kernel.websocket.jupyter.org"

# Websocket frames that carry messages; any other kind ends the connection.
_DATA_FRAMES = (aiohttp.WSMsgType.TEXT, aiohttp.WSMsgType.BINARY)


class BenchError(RuntimeError):
    """The gateway or kernel did not behave as the benchmark needs."""


@dataclass
class Execution:
    """
    What a client saw of one C{execute_request}. Times are C{time.perf_counter()} values;
    0.0 means "not seen".
    """

    sent: float
    reply: float = 0.0
    idle: float = 0.0
    status: str = ""
    watched: int = 0
    first_watched: float = 0.0
    last_watched: float = 0.0
    received: int = 0
    # Seconds the kernel itself took, from starting the execution to sending its reply, by the
    # kernel's own clock (the reply's metadata "started" and header "date").
    kernel_time: float = 0.0

    @property
    def complete(self) -> bool:
        return bool(self.reply and self.idle)

    @property
    def round_trip(self) -> float:
        """Seconds from sending the request to having both its reply and its idle status."""
        return max(self.reply, self.idle) - self.sent


def execute_content(code: str) -> dict[str, Any]:
    """The content of an C{execute_request} that runs C{code} quietly, as the figures need."""
    return {
        "code": code,
        "silent": False,
        "store_history": False,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": True,
    }


def encode_v1(channel: str, parts: list[bytes]) -> bytes:
    """
    One frame of the v1 websocket protocol: the number of offsets, the offsets (all uint64
    little-endian), then the channel name and the message parts back to back.
    """
    pieces = [channel.encode("ascii"), *parts]
    offsets = [8 * (len(pieces) + 2)]
    for piece in pieces:
        offsets.append(offsets[-1] + len(piece))
    return struct.pack(f"<{len(offsets) + 1}Q", len(offsets), *offsets) + b"".join(pieces)


def decode_v1(frame: bytes) -> tuple[str, str | None, memoryview]:
    """
    Read the message type and the parent's message id of a v1 frame; leave the content raw.

    @return: C{(msg_type, parent msg_id, content)}, the content a view into C{frame}.
    """
    (count,) = struct.unpack_from("<Q", frame)
    offsets = struct.unpack_from(f"<{count}Q", frame, 8)
    view = memoryview(frame)
    header = json.loads(view[offsets[1] : offsets[2]].tobytes())
    parent = json.loads(view[offsets[2] : offsets[3]].tobytes())
    return header["msg_type"], parent.get("msg_id"), view[offsets[4] : offsets[5]]


def decode_legacy(data: str | bytes) -> tuple[str, str | None, dict[str, Any]]:
    """
    Read a legacy frame: JSON text, or (for messages with buffers) a binary frame whose
    first piece is the JSON.
    """
    if isinstance(data, bytes):
        (count,) = struct.unpack_from(">I", data)
        start, end = struct.unpack_from(">2I", data, 4) if count > 1 else (8, len(data))
        data = data[start:end]
    msg = json.loads(data)
    return msg["header"]["msg_type"], msg["parent_header"].get("msg_id"), msg["content"]


def kernel_seconds(header: dict[str, Any], metadata: dict[str, Any]) -> float:
    """
    The seconds between an execute_reply's metadata "started" and its header "date", each
    ISO text or (as jupyter_client parses a header's) a datetime; 0.0 if either is missing.
    """
    started, replied = _instant(metadata.get("started")), _instant(header.get("date"))
    if started is None or replied is None:
        return 0.0
    return (replied - started).total_seconds()


def _instant(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None


def reply_times(protocol: str, data: str | bytes) -> float:
    """L{kernel_seconds} of an execute_reply frame in either protocol."""
    if protocol == V1:
        assert isinstance(data, bytes)
        (count,) = struct.unpack_from("<Q", data)
        offsets = struct.unpack_from(f"<{count}Q", data, 8)
        header = json.loads(data[offsets[1] : offsets[2]])
        metadata = json.loads(data[offsets[3] : offsets[4]])
        return kernel_seconds(header, metadata)
    if isinstance(data, bytes):
        (count,) = struct.unpack_from(">I", data)
        start, end = struct.unpack_from(">2I", data, 4) if count > 1 else (8, len(data))
        data = data[start:end]
    msg = json.loads(data)
    return kernel_seconds(msg["header"], msg["metadata"])


def content_of(content: dict[str, Any] | memoryview) -> dict[str, Any]:
    """The content of a decoded message, parsing it if it is still raw."""
    if isinstance(content, dict):
        return content
    return json.loads(content.tobytes())


class KernelSocket:
    """One websocket to a kernel's channels, speaking the legacy or the v1 protocol."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse, protocol: str) -> None:
        self._ws = ws
        self.protocol = protocol
        self._session = uuid.uuid4().hex
        self._count = 0
        self._decode = decode_v1 if protocol == V1 else decode_legacy

    async def _send(self, channel: str, msg_type: str, content: dict[str, Any]) -> str:
        self._count += 1
        msg_id = f"{self._session}-{self._count}"
        header = {
            "msg_id": msg_id,
            "msg_type": msg_type,
            "username": "bench",
            "session": self._session,
            "date": datetime.now(timezone.utc).isoformat(),
            "version": "5.3",
        }
        if self.protocol == V1:
            parts = [json.dumps(header).encode(), b"{}", b"{}", json.dumps(content).encode()]
            await self._ws.send_bytes(encode_v1(channel, parts))
        else:
            msg = {
                "header": header,
                "parent_header": {},
                "metadata": {},
                "content": content,
                "channel": channel,
                "buffers": [],
            }
            await self._ws.send_str(json.dumps(msg))
        return msg_id

    async def _receive(self) -> tuple[str, str | None, Any]:
        msg_type, parent, content, _ = await self._receive_frame()
        return msg_type, parent, content

    async def _receive_frame(self) -> tuple[str, str | None, Any, str | bytes]:
        frame = await self._ws.receive()
        if frame.type not in _DATA_FRAMES:
            raise BenchError(f"the websocket closed ({frame.type.name}, {frame.data!r})")
        return (*self._decode(frame.data), frame.data)

    async def kernel_info(self, timeout: float = 60.0) -> float:
        """Ask for C{kernel_info}; return the C{perf_counter()} time its reply arrived."""

        async def wait() -> float:
            msg_id = await self._send("shell", "kernel_info_request", {})
            while True:
                msg_type, parent, _ = await self._receive()
                if parent == msg_id and msg_type == "kernel_info_reply":
                    return time.perf_counter()

        return await asyncio.wait_for(wait(), timeout)

    async def execute(self, code: str, watch: str = "", timeout: float = 120.0) -> Execution:
        """
        Run C{code}; return once both its C{execute_reply} and its idle status arrived.

        @param watch: an iopub message type to count (and to time the first of).
        @raise TimeoutError: after C{timeout} seconds; L{run} shows what did arrive.
        """
        run = Execution(sent=0.0)
        await asyncio.wait_for(self.run(code, run, watch), timeout)
        return run

    async def run(self, code: str, run: Execution, watch: str = "") -> None:
        """Run C{code}, recording into C{run} as messages arrive (see L{execute})."""
        receive = self._receive_frame
        run.sent = time.perf_counter()
        msg_id = await self._send("shell", "execute_request", execute_content(code))
        while not (run.reply and run.idle):
            msg_type, parent, content, data = await receive()
            run.received += 1
            if parent != msg_id:
                continue
            if msg_type == watch:
                run.watched += 1
                run.last_watched = time.perf_counter()
                if not run.first_watched:
                    run.first_watched = run.last_watched
            elif msg_type == "execute_reply":
                run.reply = time.perf_counter()
                run.status = content_of(content).get("status", "")
                run.kernel_time = reply_times(self.protocol, data)
            elif msg_type == "status":
                if content_of(content).get("execution_state") == "idle":
                    run.idle = time.perf_counter()

    async def close(self) -> None:
        await self._ws.close()


class GatewayClient:
    """The REST and websocket API of one gateway, given its base URL."""

    def __init__(self, base_url: str, http: aiohttp.ClientSession) -> None:
        self.base_url = base_url.rstrip("/")
        self.ws_url = "ws" + self.base_url[len("http") :]
        self.http = http

    async def start_kernel(self, name: str = "python3") -> str:
        """POST /api/kernels; return the new kernel's id."""
        async with self.http.post(f"{self.base_url}/api/kernels", json={"name": name}) as r:
            body = await r.read()
            if r.status != 201:
                raise BenchError(f"POST /api/kernels answered {r.status}: {body[:300]!r}")
            return json.loads(body)["id"]

    async def shutdown_kernel(self, kernel_id: str) -> None:
        async with self.http.delete(f"{self.base_url}/api/kernels/{kernel_id}") as r:
            await r.read()
            if r.status != 204:
                raise BenchError(f"DELETE /api/kernels/{kernel_id} answered {r.status}")

    async def connect(self, kernel_id: str, protocol: str = LEGACY) -> KernelSocket:
        """Open the channels websocket of a kernel, in the given wire protocol."""
        url = f"{self.ws_url}/api/kernels/{kernel_id}/channels?session_id={uuid.uuid4().hex}"
        ws = await self.http.ws_connect(
            url,
            protocols=(V1_SUBPROTOCOL,) if protocol == V1 else (),
            max_msg_size=0,
            autoping=True,
        )
        if (ws.protocol == V1_SUBPROTOCOL) != (protocol == V1):
            await ws.close()
            raise BenchError(f"asked for the {protocol} protocol, got {ws.protocol!r}")
        return KernelSocket(ws, protocol)
