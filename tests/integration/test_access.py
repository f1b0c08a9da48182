"""Access rules over real sockets: the websocket handshake, and the daemon's access log."""

from __future__ import annotations

import os
import signal
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.integration.test_daemon import spawnTwistd
from tests.support import Client, GatewayClient, RunningGateway, withTimeout

TOKEN = "s3cret"


class HandshakeTests(TestCase):
    """The channels websocket handshake is held to the same rules as every other request."""

    timeout = 120

    async def startKernel(self, **settings: Any) -> tuple[RunningGateway, str]:
        """A running gateway with C{settings}, and the id of a kernel started on it."""
        gateway = await RunningGateway(self, **settings).start()
        code, model = await gateway.request(
            "POST", "api/kernels", {}, headers={"Authorization": f"token {TOKEN}"}
        )
        self.assertEqual(code, 201, model)
        return gateway, model["id"]

    async def handshake(
        self,
        gateway: RunningGateway,
        kernelId: str,
        origin: str | None = None,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Client:
        """
        Open the channels websocket of C{kernelId} as a browser would, from C{origin}.

        @raise ConnectionError: naming the HTTP status, if the handshake is refused.
        """
        return await gateway.connect(kernelId, query=query, origin=origin, headers=headers)

    async def assertRefused(self, status: int, *args: Any, **kw: Any) -> None:
        """The handshake with these arguments is answered with C{status}."""
        with self.assertRaises(ConnectionError) as refused:
            await self.handshake(*args, **kw)
        self.assertIn(f"[{status}]", str(refused.exception))

    async def test_foreignOriginRefused(self) -> None:
        """A handshake from a foreign origin is refused with 403."""
        gateway, kernelId = await self.startKernel()
        await self.assertRefused(403, gateway, kernelId, origin="http://evil.example")

    async def test_sameOriginOpens(self) -> None:
        """A handshake from the gateway's own origin opens the websocket."""
        gateway, kernelId = await self.startKernel()
        client = await self.handshake(gateway, kernelId, origin=f"http://{gateway.address}")
        self.assertEqual(client.state, client.STATE_OPEN)

    async def test_allowedOriginOpens(self) -> None:
        """With allow_origin C{*}, a handshake from any origin opens the websocket."""
        gateway, kernelId = await self.startKernel(allow_origin="*")
        client = await self.handshake(gateway, kernelId, origin="http://evil.example")
        self.assertEqual(client.state, client.STATE_OPEN)

    async def test_nullOriginOpensUnderStar(self) -> None:
        """With allow_origin C{*}, a handshake from the origin C{null} opens the websocket."""
        gateway, kernelId = await self.startKernel(allow_origin="*")
        client = await self.handshake(gateway, kernelId, origin="null")
        self.assertEqual(client.state, client.STATE_OPEN)

    async def test_nullOriginRefusedOtherwise(self) -> None:
        """Without allow_origin C{*}, the origin C{null} is a foreign one: 403."""
        gateway, kernelId = await self.startKernel()
        await self.assertRefused(403, gateway, kernelId, origin="null")

    async def test_nullChannelIsShell(self) -> None:
        """A legacy execute_request whose channel is null runs on the kernel, as on shell."""
        gateway, kernelId = await self.startKernel()
        client = await self.handshake(gateway, kernelId)
        msgId = client.send("execute_request", {"code": "print(6 * 7)"}, channel=None)
        messages = await client.collect(msgId)
        replies = [m for m in messages if m["header"]["msg_type"] == "execute_reply"]
        self.assertEqual(replies[0]["content"]["status"], "ok")
        self.assertEqual(replies[0]["channel"], "shell")

    async def test_tokenRequired(self) -> None:
        """With a token set, a handshake without it, or with a wrong one, is refused with 401."""
        gateway, kernelId = await self.startKernel(auth_token=TOKEN)
        await self.assertRefused(401, gateway, kernelId)
        await self.assertRefused(401, gateway, kernelId, query={"token": "nope"})
        wrong = {"Authorization": "token nope"}
        await self.assertRefused(401, gateway, kernelId, headers=wrong)

    async def test_tokenOpens(self) -> None:
        """The token, in the query or in the header, opens the websocket."""
        gateway, kernelId = await self.startKernel(auth_token=TOKEN)
        byQuery = await self.handshake(gateway, kernelId, query={"token": TOKEN})
        self.assertEqual(byQuery.state, byQuery.STATE_OPEN)
        byHeader = await self.handshake(
            gateway, kernelId, headers={"Authorization": f"token {TOKEN}"}
        )
        self.assertEqual(byHeader.state, byHeader.STATE_OPEN)


class AccessLogTests(TestCase):
    """What C{twistd kgw} writes about requests."""

    timeout = 60

    async def test_tokenNotLogged(self) -> None:
        """The daemon's output shows a request made with C{?token=} without the token."""
        env = dict(os.environ, KG_AUTH_TOKEN=TOKEN)
        process = spawnTwistd(self, "-n", "--pidfile=", "kgw", "--port=0", env=env)
        port = await withTimeout(process.listening)
        code, _ = await GatewayClient(self, port).request("GET", f"api?token={TOKEN}")
        self.assertEqual(code, 200)
        waited = 0.0
        while b"GET /api?token=[secret] HTTP/1.1" not in process.output:
            self.assertLess(waited, 10, process.output)
            await deferLater(reactor, 0.05)
            waited += 0.05
        os.kill(process.pid, signal.SIGTERM)
        await withTimeout(process.ended)
        self.assertNotIn(TOKEN.encode(), process.output)
        # One line per request, with the route template and the duration.
        [line] = [
            line
            for line in process.output.splitlines()
            if b"GET /api?token=[secret] HTTP/1.1" in line
        ]
        self.assertRegex(line, rb'" 200 \d+ \d+\.\d{3}s /api "-" "')
