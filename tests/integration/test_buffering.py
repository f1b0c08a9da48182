"""Messages for a disconnected session are kept and replayed when it reconnects."""

from __future__ import annotations

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.support import RunningGateway, withTimeout


async def until(predicate, timeout: float = 20.0) -> None:
    waited = 0.0
    while not predicate():
        if waited > timeout:
            raise AssertionError("condition not met in time")
        await deferLater(reactor, 0.02)
        waited += 0.02


async def drop(client) -> None:
    """End a client's connection without a closing handshake, as a failing network does."""
    client.transport.abortConnection()
    await withTimeout(client.closed)


def replied(buffer, msgId: str) -> bool:
    """Whether the buffer holds the idle status of C{msgId}, the last message of an execute."""
    for _, header, parts, _ in buffer.messages:
        if (
            header.get("msg_type") == "status"
            and msgId.encode() in parts[1]
            and b"idle" in parts[3]
        ):
            return True
    return False


class BufferingTests(TestCase):
    timeout = 120

    async def startKernel(self, **settings):
        self.gateway = await RunningGateway(self, **settings).start()
        self.model = await self.gateway.startKernel()
        self.channels = self.gateway.kernels.get(self.model["id"]).channels

    async def runAway(self, code: str, session: str = "s1") -> str:
        """Send C{code} for execution, disconnect at once, and wait until it is all buffered."""
        client = await self.gateway.connect(self.model["id"], sessionId=session)
        msgId = client.send("execute_request", {"code": code})
        # Dropped only once the request is in: an abort discards what is not sent yet.
        await client.next(lambda m: m["parent_header"].get("msg_id") == msgId)
        await drop(client)
        await until(lambda: session in self.channels.buffers)
        await until(lambda: replied(self.channels.buffers[session][0], msgId))
        return msgId

    async def test_replayedInOrder(self):
        """A reconnecting session gets what it missed, in order, reply included."""
        await self.startKernel()
        msgId = await self.runAway("import time; time.sleep(0.5); print('while away')")
        _, model = await self.gateway.request("GET", f"api/kernels/{self.model['id']}")
        self.assertEqual(model["connections"], 0)
        back = await self.gateway.connect(self.model["id"], sessionId="s1")
        mine = await back.collect(msgId)
        iopub = [m["header"]["msg_type"] for m in mine if m["channel"] == "iopub"]
        # What came before the drop was delivered; the rest, in order. The reply travels on
        # shell, beside iopub: only iopub's own order is fixed.
        full = ["status", "execute_input", "stream", "status"]
        self.assertEqual(iopub, full[len(full) - len(iopub) :])
        self.assertIn("stream", iopub)
        self.assertIn("execute_reply", [m["header"]["msg_type"] for m in mine])
        self.assertEqual(
            mine[[m["header"]["msg_type"] for m in mine].index("stream")]["content"]["text"],
            "while away\n",
        )
        self.assertEqual(self.channels.buffers, {})

    async def test_boundDropsOldestAndTells(self):
        """Past the bound the oldest messages go, and the client is told how many on return."""
        await self.startKernel(buffer_max_messages=4)
        msgId = await self.runAway(
            "import time; time.sleep(0.5)\nfor i in range(10): print(i, flush=True)"
        )
        back = await self.gateway.connect(self.model["id"], sessionId="s1")
        first = await back.next(lambda m: True)
        self.assertEqual(first["header"]["msg_type"], "stream")
        self.assertEqual(first["content"]["name"], "stderr")
        self.assertIn("dropped", first["content"]["text"])
        rest = [await back.next(lambda m: True) for _ in range(4)]
        # The newest four were kept: the last prints, the reply and the idle status (the reply
        # comes on shell, so its place beside iopub's idle may vary).
        self.assertEqual({m["header"]["msg_type"] for m in rest[-2:]}, {"status", "execute_reply"})
        self.assertTrue(all(m["parent_header"]["msg_id"] == msgId for m in rest))
        self.assertEqual(rest[0]["header"]["msg_type"], "stream")

    async def test_noSessionNoBuffer(self):
        """A websocket without a session_id leaves nothing behind when it closes."""
        await self.startKernel()
        client = await self.gateway.connect(self.model["id"], sessionId="")
        await drop(client)
        await until(lambda: not self.channels.clients)
        self.assertEqual(self.channels.buffers, {})

    async def test_otherWebsocketOfSessionStillOpen(self):
        """While another websocket of the session is open, nothing is buffered."""
        await self.startKernel()
        first = await self.gateway.connect(self.model["id"], sessionId="shared")
        await self.gateway.connect(self.model["id"], sessionId="shared")
        await drop(first)
        await until(lambda: len(self.channels.clients) == 1)
        self.assertEqual(self.channels.buffers, {})

    async def test_bufferExpires(self):
        """An unclaimed buffer is dropped after buffer_timeout, and its sockets closed."""
        await self.startKernel(buffer_timeout=1.5)
        await self.runAway("import time; time.sleep(0.3)")
        await until(lambda: not self.channels.buffers)
        back = await self.gateway.connect(self.model["id"], sessionId="s1")
        msgId = back.send("execute_request", {"code": "print('fresh')"})
        # Nothing of the expired session is replayed: the first message answers the new request.
        first = await back.next(lambda m: True)
        self.assertEqual(first["parent_header"]["msg_id"], msgId)

    async def test_disabled(self):
        """With buffer_offline_messages off, a departed session keeps nothing."""
        await self.startKernel(buffer_offline_messages=False)
        client = await self.gateway.connect(self.model["id"], sessionId="s1")
        await drop(client)
        await until(lambda: not self.channels.clients)
        self.assertEqual(self.channels.buffers, {})

    async def test_normalCloseNotBuffered(self):
        """A client that closes normally (1000) is done: its session is not buffered."""
        await self.startKernel()
        client = await self.gateway.connect(self.model["id"], sessionId="s1")
        await client.disconnect()
        await until(lambda: not self.channels.clients)
        self.assertEqual(self.channels.buffers, {})

    async def test_boundedSessions(self):
        """Past buffer_max_sessions the oldest disconnected session's buffer goes."""
        await self.startKernel(buffer_max_sessions=2)
        for session in ("a", "b", "c"):
            await drop(await self.gateway.connect(self.model["id"], sessionId=session))
            await until(lambda session=session: session in self.channels.buffers)
        self.assertEqual(sorted(self.channels.buffers), ["b", "c"])
