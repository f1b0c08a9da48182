"""
Remote kernels when things go wrong: a gateway killed with SIGKILL, a host that goes away, a
host that refuses SSH; and the gateway's token in front of a remote kernel.
"""

from __future__ import annotations

import os
import signal
import time

from twisted.internet import reactor
from twisted.internet.task import deferLater

from kgw.api.openapi import routes
from tests.cluster.support import SPEC, ClusterCase, writeSpec
from tests.integration.test_daemon import spawnTwistd
from tests.support import GatewayClient, RunningGateway, stdout, withTimeout


class AdoptionTests(ClusterCase):
    """A new gateway adopts the remote kernels of one killed with SIGKILL."""

    async def startDaemon(self, stateDir: str, runtime: str):
        env = dict(os.environ, JUPYTER_RUNTIME_DIR=runtime, **self.environment)
        process = spawnTwistd(
            self, "-n", "--pidfile=", "kgw", "--port=0", f"--state-dir={stateDir}", env=env
        )
        port = await withTimeout(process.listening, 60)
        return process, GatewayClient(self, port)

    async def test_remoteKernelAdopted(self):
        """
        After kill -9 of the gateway, a new one finds the remote kernel through its recorded
        provisioner info, and the kernel still holds C{x = 42}.
        """
        writeSpec(self.kernelsDir, self.cluster.addresses)
        stateDir = os.path.join(self.workdir, "state")
        runtime = os.path.join(self.workdir, "runtime")
        os.makedirs(runtime)
        first, gateway = await self.startDaemon(stateDir, runtime)
        model = await gateway.startKernel(name=SPEC)
        client = await gateway.connect(model["id"])
        messages = await client.execute("import os\nx = 42\nprint(os.getpid())")
        pid = int(stdout(messages))
        host = next(h for h in self.cluster.hosts if pid in h.kernelPids())

        os.kill(first.pid, signal.SIGKILL)
        await withTimeout(first.ended)
        await withTimeout(client.closed)
        self.assertIn(pid, host.kernelPids())

        second, gateway = await self.startDaemon(stateDir, runtime)
        deadline = time.monotonic() + 60
        while (await gateway.request("GET", f"api/kernels/{model['id']}"))[0] != 200:
            if time.monotonic() > deadline:
                self.fail(f"the kernel was not adopted: {second.output.decode()[:6000]}")
            await deferLater(reactor, 0.1)
        client = await gateway.connect(model["id"])
        self.assertEqual(stdout(await client.execute("print(x)")), "42\n")

        code, _ = await gateway.request("DELETE", f"api/kernels/{model['id']}")
        self.assertEqual(code, 204)
        await self.waitFor(lambda: not host.kernelPids(), "the adopted kernel's end")
        os.kill(second.pid, signal.SIGTERM)
        await withTimeout(second.ended, 30)


class HostFailureTests(ClusterCase):
    """A host that goes away, or refuses SSH."""

    async def gateway(self) -> RunningGateway:
        return await RunningGateway(self, registryArguments={"specs": self.specs()}).start()

    async def test_hostGoesAway(self):
        """
        With one host's link down, its kernel is reported dead to its client and removed; the
        other host's kernel is untouched and the gateway serves on. Once the link is back,
        kernels start there again.
        """
        writeSpec(self.kernelsDir, self.cluster.addresses)
        gateway = await self.gateway()
        lost = await gateway.startKernel(name=SPEC)
        kept = await gateway.startKernel(name=SPEC)
        down = self.hostOfKernel(gateway, lost["id"])
        self.assertIsNot(down, self.hostOfKernel(gateway, kept["id"]))
        lostClient = await gateway.connect(lost["id"])
        keptClient = await gateway.connect(kept["id"])
        await keptClient.execute("y = 7")

        down.linkDown()
        self.addCleanup(down.linkUp)
        sent = time.monotonic()
        await lostClient.next(
            lambda m: (
                m["header"]["msg_type"] == "status" and m["content"]["execution_state"] == "dead"
            ),
            timeout=60,
        )
        code, _ = await withTimeout(lostClient.closed)
        self.assertEqual(code, 1011)
        print(f"\nhost gone: kernel reported dead after {time.monotonic() - sent:.1f} s")
        code, _ = await gateway.request("GET", f"api/kernels/{lost['id']}")
        self.assertEqual(code, 404)
        self.assertEqual(stdout(await keptClient.execute("print(y)")), "7\n")
        code, body = await gateway.request("GET", "api/kernels")
        self.assertEqual([k["id"] for k in body], [kept["id"]])

        down.linkUp()
        placed = set()
        for _ in range(2):
            model = await gateway.startKernel(name=SPEC)
            placed.add(self.hostOfKernel(gateway, model["id"]).address)
            client = await gateway.connect(model["id"])
            self.assertEqual(stdout(await client.execute("print(1)")), "1\n")
        self.assertIn(down.address, placed)
        # The gateway logged each vain restart of the lost kernel.
        self.flushLoggedErrors(RuntimeError)

    async def test_sshRefused(self):
        """
        A start on a host that refuses SSH fails with a JSON 500 naming the host, within the
        launch timeout, and leaves no kernel behind.
        """
        refusing = self.cluster.hosts[0]
        refusing.stopSshd()
        writeSpec(self.kernelsDir, [refusing.address], launchTimeout=20)
        gateway = await self.gateway()
        sent = time.monotonic()
        code, body = await gateway.request("POST", "api/kernels", {"name": SPEC})
        elapsed = time.monotonic() - sent
        self.assertEqual(code, 500, body)
        self.assertIn(refusing.address, body["message"])
        self.assertLess(elapsed, 20)
        self.assertEqual(len(gateway.kernels), 0)
        self.assertEqual(gateway.kernels.launcher.launching, {})
        code, body = await gateway.request("GET", "api/kernels")
        self.assertEqual(body, [])
        # The gateway logged the failed start, with its traceback.
        self.flushLoggedErrors(RuntimeError)


class TokenTests(ClusterCase):
    """kgw's own token guards every route while a remote kernel runs."""

    hostCount = 1

    async def test_everyRouteNeedsToken(self):
        """Without the token, every route, the remote kernel's own included, answers 401."""
        writeSpec(self.kernelsDir, self.cluster.addresses)
        token = "cluster-test-token"
        gateway = await RunningGateway(
            self, registryArguments={"specs": self.specs()}, auth_token=token
        ).start()
        code, model = await gateway.request(
            "POST", "api/kernels", {"name": SPEC}, headers={"Authorization": f"token {token}"}
        )
        self.assertEqual(code, 201, model)
        values = {
            "kernel_id": model["id"],
            "kernel_name": SPEC,
            "resource": "kernel.json",
            "session_id": "nope",
        }
        for method, route in routes():
            path = route.format(**values).lstrip("/")
            code, body = await gateway.request(method, path, {} if method != "GET" else None)
            self.assertEqual(code, 401, f"{method} {path}: {body}")
        self.assertIn(model["id"], gateway.kernels)
        code, _ = await gateway.request(
            "DELETE", f"api/kernels/{model['id']}", headers={"Authorization": f"token {token}"}
        )
        self.assertEqual(code, 204)
