"""Sessions in a cluster: kept in etcd, listed by every gateway, changed through any of them."""

from __future__ import annotations

import time

from twisted.internet import reactor
from twisted.internet.task import deferLater

from tests.scaleout.test_gateways import ClusterCase
from tests.support import isAlive, stdout

NOTEBOOK = {"path": "work/analysis.ipynb", "type": "notebook", "name": "analysis.ipynb"}


class ClusterSessionTests(ClusterCase):
    async def test_sessionSeenAndChangedEverywhere(self):
        """
        A session created on one gateway is listed and found by id on the other; created again
        there for its path, it is the same session; renamed, moved to a new kernel and deleted
        through the other gateway, whose changes its kernel's owner makes (it shuts the kernels
        left down).
        """
        _, a = await self.gateways.start("a")
        _, b = await self.gateways.start("b")
        code, created = await a.request("POST", "api/sessions", NOTEBOOK)
        self.assertEqual(code, 201, created)
        sessionId, kernelId = created["id"], created["kernel"]["id"]
        path = f"api/sessions/{sessionId}"
        for gateway in (a, b):
            code, listed = await gateway.request("GET", "api/sessions")
            self.assertEqual(code, 200, listed)
            self.assertEqual(
                [(s["id"], s["kernel"]["id"]) for s in listed], [(sessionId, kernelId)]
            )
            code, found = await gateway.request("GET", path)
            self.assertEqual(
                (code, found["path"], found["kernel"]["id"]), (200, NOTEBOOK["path"], kernelId)
            )
        code, again = await b.request("POST", "api/sessions", NOTEBOOK)
        self.assertEqual((code, again["id"]), (201, sessionId))

        code, renamed = await b.request("PATCH", path, {"path": "work/renamed.ipynb"})
        self.assertEqual((code, renamed["path"]), (200, "work/renamed.ipynb"), renamed)
        code, found = await a.request("GET", path)
        self.assertEqual(found["path"], "work/renamed.ipynb")

        code, moved = await b.request(
            "PATCH", path, {"kernel": {"name": created["kernel"]["name"]}}
        )
        self.assertEqual(code, 200, moved)
        newKernel = moved["kernel"]["id"]
        self.assertNotEqual(newKernel, kernelId)
        for gateway in (a, b):
            self.assertEqual((await gateway.request("GET", f"api/kernels/{kernelId}"))[0], 404)
            self.assertEqual((await gateway.request("GET", path))[1]["kernel"]["id"], newKernel)
        client = await b.connect(newKernel)
        self.assertEqual(stdout(await client.execute("print(6 * 7)")), "42\n")

        code, _ = await b.request("DELETE", path)
        self.assertEqual(code, 204)
        for gateway in (a, b):
            self.assertEqual(await gateway.request("GET", "api/sessions"), (200, []))
            self.assertEqual((await gateway.request("GET", path))[0], 404)
            self.assertEqual((await gateway.request("GET", f"api/kernels/{newKernel}"))[0], 404)

    async def test_sessionOutlivesItsGateway(self):
        """
        A session whose gateway is killed with SIGKILL is still found, on the gateway that
        adopted its kernel, which shuts that kernel down when the session is deleted.
        """
        ttl = 3
        first, a = await self.gateways.start("a", f"--lease-ttl={ttl}")
        _, b = await self.gateways.start("b", f"--lease-ttl={ttl}")
        code, created = await a.request("POST", "api/sessions", NOTEBOOK)
        self.assertEqual(code, 201, created)
        kernelId = created["kernel"]["id"]
        client = await a.connect(kernelId)
        await client.execute("x = 42")
        [pid] = await self.gateways.crash(first)
        killed = time.monotonic()
        while (await b.request("GET", f"api/kernels/{kernelId}"))[0] != 200:
            self.assertLess(time.monotonic() - killed, ttl + 10, "never adopted")
            await deferLater(reactor, 0.05)
        code, listed = await b.request("GET", "api/sessions")
        self.assertEqual((code, [s["id"] for s in listed]), (200, [created["id"]]))
        self.assertEqual(listed[0]["kernel"]["execution_state"], "idle")
        code, _ = await b.request("DELETE", f"api/sessions/{created['id']}")
        self.assertEqual(code, 204)
        self.assertEqual((await b.request("GET", f"api/kernels/{kernelId}"))[0], 404)
        while isAlive(pid):
            self.assertLess(time.monotonic() - killed, ttl + 20, "kernel not shut down")
            await deferLater(reactor, 0.05)
