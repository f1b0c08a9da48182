"""Culling idle kernels and limiting iopub rates, with real kernels."""

from __future__ import annotations

from twisted.trial.unittest import TestCase

from tests.support import RunningGateway, stdout, withTimeout


class CullingTests(TestCase):
    timeout = 60

    async def test_culledKernelsClientsAreTold(self):
        """A culled kernel's clients get a dead status and a close with a reason; then 404."""
        gateway = await RunningGateway(
            self, cull_idle_timeout=0.5, cull_interval=0.1, cull_connected=True
        ).start()
        model = await gateway.startKernel()
        client = await gateway.connect(model["id"])
        dead = await client.next(
            lambda m: (
                m["header"]["msg_type"] == "status" and m["content"]["execution_state"] == "dead"
            ),
            timeout=20,
        )
        self.assertEqual(dead["channel"], "iopub")
        code, reason = await withTimeout(client.closed)
        self.assertEqual(code, 1000)
        self.assertIn("culled", reason)
        status, _ = await gateway.request("GET", f"api/kernels/{model['id']}")
        self.assertEqual(status, 404)

    async def test_activeKernelKept(self):
        """A kernel that keeps running code is not culled."""
        gateway = await RunningGateway(self, cull_idle_timeout=2, cull_interval=0.1).start()
        model = await gateway.startKernel()
        client = await gateway.connect(model["id"], sessionId="")
        for _ in range(5):
            self.assertEqual(
                stdout(await client.execute("import time; time.sleep(0.5); print(1)")), "1\n"
            )
        status, _ = await gateway.request("GET", f"api/kernels/{model['id']}")
        self.assertEqual(status, 200)


class RateLimitTests(TestCase):
    timeout = 60

    async def test_outputDroppedAndClientToldOnce(self):
        """Past iopub_msg_rate_limit output is dropped and the client told once."""
        gateway = await RunningGateway(self, iopub_msg_rate_limit=20, rate_limit_window=1.0).start()
        model = await gateway.startKernel()
        client = await gateway.connect(model["id"])
        messages = await client.execute("for i in range(200): print(i, flush=True)")
        streams = [m for m in messages if m["header"]["msg_type"] == "stream"]
        notices = [m for m in streams if m["content"]["name"] == "stderr"]
        printed = [m for m in streams if m["content"]["name"] == "stdout"]
        self.assertEqual(len(notices), 1)
        self.assertIn("IOPub message rate exceeded", notices[0]["content"]["text"])
        self.assertLess(len(printed), 200)
        self.assertTrue(any(m["header"]["msg_type"] == "execute_reply" for m in messages))
