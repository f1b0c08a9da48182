"""Where the token must never show: the gateway's log events and its kernels' environments."""

from __future__ import annotations

import io
import json
import os
import secrets
from typing import Any

from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from kgw.jsonlog import jsonLineObserver
from tests.support import Client, RunningGateway, stdout


async def connect(gateway: RunningGateway, kernelId: str, **query: str) -> Client:
    """Open the channels websocket of C{kernelId} with C{query} added to its URL."""
    return await gateway.connect(kernelId, query=query)


class TokenSecrecyTests(TestCase):
    """A gateway with a token, and everything that could let it out."""

    timeout = 120

    async def setUp(self) -> None:
        self.token = "tok" + secrets.token_hex(16)
        self.header = {"Authorization": f"token {self.token}"}
        # The gateway's own environment holds the token, as when it is set with KG_AUTH_TOKEN.
        self.marker = "marker" + secrets.token_hex(8)
        for name, value in (("KG_AUTH_TOKEN", self.token), ("KGW_TEST_MARKER", self.marker)):
            previous = os.environ.get(name)
            os.environ[name] = value
            self.addCleanup(self.restore, name, previous)

    def restore(self, name: str, previous: str | None) -> None:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous

    async def start(self, **settings: Any) -> RunningGateway:
        return await RunningGateway(self, auth_token=self.token, **settings).start()

    async def startKernel(self, gateway: RunningGateway, body: dict[str, Any]) -> str:
        code, model = await gateway.request("POST", "api/kernels", body, headers=self.header)
        self.assertEqual(code, 201, model)
        return model["id"]

    async def test_tokenInNoLogEvent(self) -> None:
        """No log event holds the token, sent in query, header, Referer and websocket URL."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        # Checked once the gateway has stopped (clean-ups run last first), so that what it logs
        # while its kernels shut down is checked too.
        self.addCleanup(self.assertTokenNotIn, events)
        gateway = await self.start()
        query = {"token": self.token}
        referer = {"Referer": f"http://{gateway.address}/page?token={self.token}"}
        requests = [
            ("GET", f"api?token={self.token}", {}),
            ("GET", "api", self.header),
            ("GET", f"api/kernels?x=1&token={self.token};y=2", referer),
            ("GET", f"api/nope?token={self.token}", {}),
            ("GET", f"api/kernels/nope?token={self.token}", self.header),
            ("GET", f"api?token={self.token}x", {}),
            ("GET", "api", {"Authorization": f"token {self.token}x"}),
            ("GET", "api", {"Authorization": f"Bearer {self.token}"}),
            ("GET", f"api?token={self.token}", {"Origin": "http://evil.example"}),
            ("PUT", f"api/kernels?token={self.token}", {}),
        ]
        for method, path, headers in requests:
            code, _ = await gateway.request(method, path, headers=headers)
            self.assertNotEqual(code, 500, path)
        kernelId = await self.startKernel(gateway, {})
        client = await connect(gateway, kernelId, **query)
        messages = await client.execute("print('hello')")
        self.assertEqual(stdout(messages), "hello\n")
        await client.disconnect()
        with self.assertRaises(ConnectionError):
            await connect(gateway, kernelId, token=self.token + "x")
        code, _ = await gateway.request("DELETE", f"api/kernels/{kernelId}?token={self.token}")
        self.assertEqual(code, 204)

    async def test_tokenInNoJSONLogLine(self) -> None:
        """No JSON log line holds the token, wherever requests carried it; every line parses."""
        output = io.StringIO()
        observer = jsonLineObserver(output)
        globalLogPublisher.addObserver(observer)
        self.addCleanup(self.assertNoTokenInLines, output)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        gateway = await self.start()
        referer = {"Referer": f"http://{gateway.address}/page?token={self.token}"}
        for method, path, headers in [
            ("GET", f"api?token={self.token}", referer),
            ("GET", "metrics", self.header),
            ("GET", f"metrics?token={self.token}", {}),
            ("GET", f"api/kernels/nope?token={self.token}x", {}),
            ("GET", "api", {"Authorization": f"token {self.token}x"}),
        ]:
            code, _ = await gateway.request(method, path, headers=headers)
            self.assertNotEqual(code, 500, path)
        kernelId = await self.startKernel(gateway, {})
        client = await connect(gateway, kernelId, token=self.token)
        self.assertEqual(stdout(await client.execute("print('hello')")), "hello\n")
        await client.disconnect()

    def assertNoTokenInLines(self, output: io.StringIO) -> None:
        """Every line is a JSON object without the token; the requests were logged."""
        lines = [json.loads(line) for line in output.getvalue().splitlines()]
        self.assertIn(
            ("GET", "/api", 200),
            [(line.get("method"), line.get("route"), line.get("status")) for line in lines],
        )
        self.assertTrue(any("GET /api?token=[secret]" in line["message"] for line in lines))
        self.assertNotIn(self.token, output.getvalue())

    def assertTokenNotIn(self, events: list[dict[str, Any]]) -> None:
        """No event holds the token, formatted or in any of its fields."""
        lines = [formatEvent(event) for event in events]
        # The access log did see the requests: the check is not vacuous.
        self.assertTrue(any("GET /api?token=[secret]" in line for line in lines), lines)
        for event, line in zip(events, lines, strict=True):
            self.assertNotIn(self.token, line)
            self.assertNotIn(self.token, repr(event))

    async def test_tokenInNoKernelEnvironment(self) -> None:
        """No kernel, inheriting or given an env, sees the KG_AUTH_TOKEN of the gateway."""
        gateway = await self.start(
            env_whitelist=("KG_AUTH_TOKEN", "KGW_TEST_MARKER"),
            env_process_whitelist=("KG_AUTH_TOKEN", "KGW_TEST_MARKER"),
        )
        inherited = await self.startKernel(gateway, {})
        requested = await self.startKernel(
            gateway, {"env": {"KG_AUTH_TOKEN": "from-client", "KERNEL_X": "1"}}
        )
        for kernelId in (inherited, requested):
            client = await connect(gateway, kernelId, token=self.token)
            messages = await client.execute("import os; print(sorted(os.environ.items()))")
            printed = stdout(messages)
            # The kernel did get the gateway's variables: the token is missing, not everything.
            self.assertIn(self.marker, printed)
            self.assertNotIn(self.token, printed)
            self.assertNotIn("KG_AUTH_TOKEN", printed)
            pid = gateway.kernels.get(kernelId).process.pid
            with open(f"/proc/{pid}/environ", "rb") as f:
                environ = f.read()
            self.assertIn(self.marker.encode(), environ)
            self.assertNotIn(self.token.encode(), environ)
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                self.assertNotIn(self.token.encode(), f.read())
