"""
What a client sends that is not a Jupyter message, seen from another client of the same kernel.

L{tests.integration.test_kernels.BadFrameTests} shows that the sender's connection survives bad
frames. These tests add a bystander: a second client of the kernel that keeps executing while
the garbage arrives and after it, and that must receive nothing but the answers to its own
requests. The kernel must be the same process, with its state, at the end.
"""

from __future__ import annotations

import itertools
import json
import random
import re
import struct
import uuid
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from kgw.api import wire
from tests.support import Client, RunningGateway, withTimeout

LIMIT = 64 * 1024
# Long enough for a message the gateway wrongly relayed to come back from the kernel.
SETTLE = 1.0
# Invalid frames sent in a row, fewer than the 100 after which the gateway closes.
STREAK = 90


def v1Execute(code: str) -> bytes:
    """A valid v1 frame of an execute_request for C{code} on the shell channel."""
    header = {
        "msg_id": uuid.uuid4().hex,
        "msg_type": "execute_request",
        "username": "garbage",
        "session": uuid.uuid4().hex,
        "version": "5.3",
        "date": "2026-01-01T00:00:00.000000Z",
    }
    content = {"code": code, "silent": False}
    parts = [json.dumps(header).encode(), b"{}", b"{}", json.dumps(content).encode()]
    return wire.encode_v1("shell", parts)


class GarbageTests(TestCase):
    """A kernel with a bystander client, and garbage sent by other clients."""

    timeout = 180

    async def setUp(self) -> None:
        self.gateway = await RunningGateway(self, max_message_size=LIMIT).start()
        model = await self.gateway.startKernel()
        self.kernelId = model["id"]
        self.kernel = self.gateway.kernels.get(self.kernelId)
        self.pid = self.kernel.process.pid
        self.bystander = await self.gateway.connect(self.kernelId)
        self.ours: set[str] = set()

    async def quiet(self) -> None:
        """
        Let what the kernel still sends about the gateway's own requests (its start-up
        C{kernel_info_request}) arrive and drop it; from now on the bystander may receive
        answers to its own requests only. Then set the state the kernel must keep.
        """
        # A start is answered at launch: what the kernel prints as it starts up (debugpy's
        # warning on stderr, say) comes to clients already connected, before it is ready.
        while self.kernel.busyWith == "starting":
            await deferLater(reactor, 0.05)
        await deferLater(reactor, SETTLE)
        del self.bystander.messages.pending[:]
        self.assertEqual(await self.bystanderRuns("marker = 6 * 7"), "")

    async def bystanderRuns(self, code: str) -> str:
        """
        Run C{code} as the bystander and return its stdout, failing on any message that is not
        about one of the bystander's own requests.
        """
        msgId = self.bystander.send("execute_request", {"code": code, "silent": False})
        self.ours.add(msgId)
        out, reply, idle = "", None, False
        while reply is None or not idle:
            msg = await withTimeout(self.bystander.messages.get())
            self.assertIn(msg["parent_header"].get("msg_id"), self.ours, msg)
            if msg["parent_header"]["msg_id"] != msgId:
                continue
            kind = msg["header"]["msg_type"]
            if kind == "stream":
                out += msg["content"]["text"]
            elif kind == "execute_reply":
                reply = msg
            elif kind == "status":
                idle = msg["content"]["execution_state"] == "idle"
        self.assertEqual(reply["content"]["status"], "ok", reply)
        return out

    async def assertKernelUntouched(self) -> None:
        """
        After a pause for anything relayed by mistake to come back, the bystander has received
        nothing foreign, still executes, and the kernel is the same process with its state.
        """
        await deferLater(reactor, SETTLE)
        for msg in self.bystander.messages.pending:
            self.assertIn(msg["parent_header"].get("msg_id"), self.ours, msg)
        self.assertEqual(await self.bystanderRuns("print(marker)"), "42\n")
        self.assertEqual(self.kernel.process.pid, self.pid)
        self.assertIs(self.gateway.kernels.get(self.kernelId), self.kernel)

    async def sendAll(self, client: Client, frames: list[tuple[bytes, bool]]) -> None:
        """
        Send C{frames}, with a bystander execution in the middle of them, and a valid message
        from the sender after every L{STREAK}: 100 invalid ones in a row would close it.
        """
        middle = len(frames) // 2
        for i, (payload, isBinary) in enumerate(frames):
            if i == middle:
                self.assertEqual(await self.bystanderRuns("print(marker + 1)"), "43\n")
            if i and i % STREAK == 0:
                self.ours.add(client.send("kernel_info_request", {}))
            client.sendMessage(payload, isBinary=isBinary)

    async def assertSenderWorks(self, client: Client) -> None:
        """The sender of the garbage is still connected and can execute."""
        self.assertEqual(client.state, client.STATE_OPEN)
        messages = await client.execute("print('sender ok')")
        self.assertIn("sender ok\n", [m["content"].get("text") for m in messages])

    async def test_randomBytes(self) -> None:
        """Random binary and text frames, legacy and v1, are dropped; nobody else sees a thing."""
        rng = random.Random(20261126)
        sizes = [0, 1, 3, 4, 7, 8, 9, 47, 48, 100, 1000, 10_000, LIMIT - 1]
        legacy = await self.gateway.connect(self.kernelId)
        v1 = await self.gateway.connect(self.kernelId, v1=True)
        await self.quiet()
        noise = [rng.randbytes(size) for size in sizes for _ in range(3)]
        text = ["".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(n)) for n in sizes[:10]]
        await self.sendAll(legacy, [(payload, True) for payload in noise])
        await self.sendAll(legacy, [(t.encode("utf-8"), False) for t in text])
        await self.sendAll(v1, [(payload, True) for payload in noise])
        await self.assertKernelUntouched()
        await self.assertSenderWorks(legacy)
        await self.assertSenderWorks(v1)

    async def test_truncatedV1Frames(self) -> None:
        """Every truncation of a valid v1 frame is dropped; the code in it never runs."""
        client = await self.gateway.connect(self.kernelId, v1=True)
        await self.quiet()
        frame = v1Execute("marker = 0")
        await self.sendAll(client, [(frame[:n], True) for n in range(len(frame))])
        # Truncated parts behind a consistent offset table: only the header is read, so these
        # reach the kernel, which cannot parse them and drops them.
        (count,) = struct.unpack_from("<Q", frame)
        offsets = struct.unpack_from(f"<{count}Q", frame, 8)
        channel = frame[offsets[0] : offsets[1]].decode()
        parts = [frame[a:b] for a, b in itertools.pairwise(offsets[1:])]
        cut = [wire.encode_v1(channel, [*parts[:3], parts[3][:n]]) for n in range(len(parts[3]))]
        await self.sendAll(client, [(payload, True) for payload in cut])
        await self.assertKernelUntouched()
        await self.assertSenderWorks(client)

    async def test_jsonThatIsNotAMessage(self) -> None:
        """JSON frames that are not messages are dropped, whatever their shape."""
        client = await self.gateway.connect(self.kernelId)
        await self.quiet()
        # Each under max_message_size: these are about content, not size.
        documents = [
            "null",
            "0",
            '"execute_request"',
            "[]",
            "{}",
            '{"header": null}',
            '{"header": "execute_request", "content": {"code": "marker = 0"}}',
            '{"header": {"msg_type": "execute_request"}, "content": {"code": "marker = 0"}}',
            '{"header": {"msg_id": 1, "msg_type": "execute_request"}}',
            '{"header": {"msg_id": "a", "msg_type": "execute_request"}, "content": 5}',
            '{"header": {"msg_id": "a", "msg_type": "execute_request"}, "channel": 3}',
            '{"header": {"msg_id": "a", "msg_type": "x"}, "content": {"a": NaN}}',
            "[" * 60_000,
            '{"a": ' * 10_000,
            '{"header": {"msg_id": "a", "msg_type": "execute_request"}',
        ]
        await self.sendAll(client, [(d.encode(), False) for d in documents])
        await self.sendAll(client, [(d.encode(), True) for d in documents])
        await self.assertKernelUntouched()
        await self.assertSenderWorks(client)

    async def test_unknownChannel(self) -> None:
        """A valid message on a channel a client may not use is dropped, legacy and v1."""
        legacy = await self.gateway.connect(self.kernelId)
        v1 = await self.gateway.connect(self.kernelId, v1=True)
        await self.quiet()
        for channel in ["nope", "iopub", "hb", "SHELL", "", "shell\x00", "shell "]:
            legacy.send("execute_request", {"code": "marker = 0"}, channel=channel)
            v1.send("execute_request", {"code": "marker = 0"}, channel=channel)
        self.assertEqual(await self.bystanderRuns("print(marker)"), "42\n")
        await self.assertKernelUntouched()
        await self.assertSenderWorks(legacy)
        await self.assertSenderWorks(v1)

    async def test_hugeMessagesClose1009(self) -> None:
        """A message over the limit, in one frame or many, closes with 1009; the bystander runs."""
        code = "marker = 0  # " + "x" * LIMIT
        senders = [
            await self.gateway.connect(self.kernelId, v1=v1) for v1 in (False, True, False, True)
        ]
        await self.quiet()
        running = self.bystander.send("execute_request", {"code": "import time; time.sleep(1)"})
        self.ours.add(running)
        for client, fragment in zip(senders, [0, 0, 4096, 4096], strict=True):
            v1 = client.protocolName == wire.V1_PROTOCOL
            if v1:
                payload, isBinary = v1Execute(code), True
            else:
                header = {"msg_id": uuid.uuid4().hex, "msg_type": "execute_request"}
                message = {"header": header, "channel": "shell", "content": {"code": code}}
                payload, isBinary = json.dumps(message).encode(), False
            client.sendMessage(payload, isBinary=isBinary, fragmentSize=fragment or None)
        for client in senders:
            closeCode, _ = await withTimeout(client.closed)
            self.assertEqual(closeCode, 1009)
        await self.assertKernelUntouched()
        self.assertEqual(self.kernel.channels and len(self.kernel.channels.clients), 1)

    async def test_hundredInvalidInARowClose1008(self) -> None:
        """100 invalid frames in a row close their sender with 1008; nothing else changes."""
        client = await self.gateway.connect(self.kernelId)
        await self.quiet()
        for _ in range(100):
            client.sendMessage(b"not a message", isBinary=False)
        closeCode, _ = await withTimeout(client.closed)
        self.assertEqual(closeCode, 1008)
        await self.assertKernelUntouched()

    async def test_invalidUTF8TextCloses1007(self) -> None:
        """A text frame that is not UTF-8 closes its sender with 1007; nothing else changes."""
        client = await self.gateway.connect(self.kernelId)
        await self.quiet()
        client.sendMessage(b'{"header": "\xff\xfe"}', isBinary=False)
        closeCode, _ = await withTimeout(client.closed)
        self.assertEqual(closeCode, 1007)
        await self.assertKernelUntouched()


class _Response(Protocol):
    """
    Collects one HTTP response: its head, and its body by Content-Length; a 101 has none.
    C{closed} fires when the connection is gone.
    """

    def __init__(self) -> None:
        self.data = b""
        self.done: Deferred[bytes] = Deferred()
        self.closed: Deferred[None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        head, found, body = self.data.partition(b"\r\n\r\n")
        if not found or self.done.called:
            return
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        if head.split(b" ", 2)[1] == b"101" or (length and len(body) >= int(length.group(1))):
            self.done.callback(self.data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        if not self.done.called:
            self.done.callback(self.data)
        self.closed.callback(None)


def _dechunked(body: bytes) -> bytes:
    """The content of a chunked HTTP body."""
    content = b""
    while body:
        size, _, rest = body.partition(b"\r\n")
        length = int(size, 16)
        if not length:
            break
        content += rest[:length]
        body = rest[length + 2 :]
    return content


VALID_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


class HandshakeRefusalTests(TestCase):
    """Malformed websocket handshakes get a JSON error from the gateway, not Autobahn's text."""

    timeout = 60

    async def setUp(self) -> None:
        self.gateway = await RunningGateway(self).start()
        self.kernelId = (await self.gateway.startKernel())["id"]

    async def handshake(self, **headers: str) -> tuple[int, dict[str, str], Any]:
        """Send a raw channels handshake with C{headers}; the status, headers and JSON body."""
        fields = {
            "Host": self.gateway.address,
            "Upgrade": "websocket",
            # The gateway closes the connection after an error, so the test leaves none open.
            "Connection": "Upgrade, close",
            "Sec-WebSocket-Key": VALID_KEY,
            "Sec-WebSocket-Version": "13",
        }
        fields.update({name.replace("_", "-"): value for name, value in headers.items()})
        lines = [f"GET /api/kernels/{self.kernelId}/channels HTTP/1.1"]
        lines += [f"{name}: {value}" for name, value in fields.items() if value is not None]
        host, port = self.gateway.address.split(":")
        protocol = _Response()
        endpoint = TCP4ClientEndpoint(reactor, host, int(port))
        connected = await withTimeout(connectProtocol(endpoint, protocol))
        connected.transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        raw = await withTimeout(protocol.done)
        connected.transport.loseConnection()
        await withTimeout(protocol.closed)
        head, _, body = raw.partition(b"\r\n\r\n")
        status, *headerLines = head.decode("latin-1").split("\r\n")
        # Header names in lower case: Twisted writes its own capitalisation.
        answered = {
            name.lower(): value for name, value in (line.split(": ", 1) for line in headerLines)
        }
        if answered.get("transfer-encoding") == "chunked":
            body = _dechunked(body)
        code = int(status.split()[1])
        if code == 101:
            # What follows is the websocket's: the gateway may already be sending it frames.
            return code, answered, None
        return code, answered, json.loads(body) if body else None

    async def test_validHandshakeSwitches(self) -> None:
        """The checks let a well-formed handshake through (the baseline of the tests below)."""
        code, _, _ = await self.handshake()
        self.assertEqual(code, 101)

    async def test_noConnectionUpgrade(self) -> None:
        code, headers, body = await self.handshake(Connection="close")
        self.assertEqual(code, 400)
        self.assertEqual(headers["content-type"], "application/json")
        self.assertIn("Connection: Upgrade", body["message"])

    async def test_badKey(self) -> None:
        """A missing key, one that is not base64, and one of the wrong length: 400 JSON."""
        for key in (None, "not base64!", "c2hvcnQ="):
            code, _, body = await self.handshake(Sec_WebSocket_Key=key)
            self.assertEqual(code, 400, key)
            self.assertIn("Sec-WebSocket-Key", body["message"])

    async def test_unsupportedVersion(self) -> None:
        """Another version: 426 naming the versions spoken, as RFC 6455 asks."""
        for version in (None, "12", "abc"):
            code, headers, body = await self.handshake(Sec_WebSocket_Version=version)
            self.assertEqual(code, 426, version)
            self.assertEqual(headers["sec-websocket-version"], "13, 8")
            self.assertEqual(body["reason"], "Upgrade Required")
