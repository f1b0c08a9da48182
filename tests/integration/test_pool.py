"""The warm kernel pool, with real kernels."""

from __future__ import annotations

import json
import os
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_notebook
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.support import RunningGateway, stdout


async def poolFull(gateway: RunningGateway, size: int, timeout: float = 30.0) -> None:
    """Wait until the gateway's warm pool holds C{size} kernels."""
    waited = 0.0
    while len(gateway.kernels.pool) < size:
        if waited > timeout:
            raise AssertionError(f"the pool holds {len(gateway.kernels.pool)}, not {size}")
        await deferLater(reactor, 0.05)
        waited += 0.05


class WarmPoolTests(TestCase):
    timeout = 120

    async def startGateway(self, **settings):
        gateway = await RunningGateway(self, warm_kernels=2, **settings).start()
        await poolFull(gateway, 2)
        return gateway

    async def test_claimedKernelsUniqueAndUsable(self):
        """Two starts take two different warm kernels, each usable, and neither is listed before."""
        gateway = await self.startGateway()
        warm = {k.id for k in gateway.kernels.pool._ready["python3"]}
        _, listed = await gateway.request("GET", "api/kernels")
        self.assertEqual(listed, [])
        first = await gateway.startKernel()
        second = await gateway.startKernel()
        self.assertNotEqual(first["id"], second["id"])
        self.assertEqual({first["id"], second["id"]}, warm)
        for model in (first, second):
            client = await gateway.connect(model["id"])
            self.assertEqual(stdout(await client.execute("print('ok')")), "ok\n")

    async def test_historyAtOnce(self):
        """
        A history_request sent the instant the websocket of a freshly claimed warm kernel opens
        (with an env, as jupyter_server's start sends) gets its history_reply, in both wire
        formats, after the kernel_info_reply asked for before it.
        """
        gateway = await self.startGateway()
        for v1 in (False, True):
            model = await gateway.startKernel(env={"KERNEL_USERNAME": "someone"})
            client = await gateway.connect(model["id"], v1=v1)
            info = client.send("kernel_info_request", {})
            history = client.send(
                "history_request",
                {"output": False, "raw": True, "hist_access_type": "tail", "n": 1000},
            )
            replies = []
            while len(replies) < 2:
                msg = await client.next(lambda m: m["header"]["msg_type"].endswith("_reply"))
                replies.append((msg["header"]["msg_type"], msg["parent_header"]["msg_id"]))
            self.assertEqual(replies, [("kernel_info_reply", info), ("history_reply", history)])

    async def test_poolRefills(self):
        """Each claim starts a replacement: the pool is full again afterwards."""
        gateway = await self.startGateway()
        claimed = await gateway.startKernel()
        await poolFull(gateway, 2)
        pool = {k.id for k in gateway.kernels.pool._ready["python3"]}
        self.assertNotIn(claimed["id"], pool)

    async def test_seededVariables(self):
        """Warm kernels are seeded before they are handed out."""
        path = os.path.join(os.path.abspath(self.mktemp()), "seed.ipynb")
        os.makedirs(os.path.dirname(path))
        kernelspec = {"name": "python3", "language": "python", "display_name": "Python"}
        notebook = new_notebook(metadata={"kernelspec": kernelspec})
        notebook.cells = [new_code_cell("SEEDED = 42")]
        nbformat.write(notebook, path)
        gateway = await self.startGateway(seed_uri=path)
        model = await gateway.startKernel()
        client = await gateway.connect(model["id"])
        self.assertEqual(stdout(await client.execute("print(SEEDED)")), "42\n")

    async def test_envApplied(self):
        """A request's env reaches a warm kernel: its variables and working directory, only."""
        workdir = os.path.abspath(self.mktemp())
        os.makedirs(workdir)
        os.environ["KGW_TEST_GATEWAY_ONLY"] = "1"
        self.addCleanup(os.environ.pop, "KGW_TEST_GATEWAY_ONLY")
        gateway = await self.startGateway()
        model = await gateway.startKernel(
            env={"KERNEL_USERNAME": "ann", "KERNEL_WORKING_DIR": workdir}
        )
        client = await gateway.connect(model["id"])
        code = (
            "import os, json; print(json.dumps([os.environ.get('KERNEL_USERNAME'), os.getcwd(),"
            " 'KGW_TEST_GATEWAY_ONLY' in os.environ, os.environ.get('KERNEL_GATEWAY')]))"
        )
        found = json.loads(stdout(await client.execute(code)))
        self.assertEqual(found, ["ann", os.path.realpath(workdir), False, "1"])

    async def test_maxKernelsHolds(self):
        """Claims count toward max_kernels like any start."""
        gateway = await self.startGateway(max_kernels=1)
        await gateway.startKernel()
        code, body = await gateway.request("POST", "api/kernels", {})
        self.assertEqual(code, 403, body)


class FallbackTests(TestCase):
    timeout = 120

    async def test_otherLanguageWithEnvStartsFresh(self):
        """A kernel whose environment cannot be set in place starts afresh; the pool is kept."""
        specs = os.path.join(os.path.abspath(self.mktemp()), "kernels", "other")
        os.makedirs(specs)
        with open(os.path.join(specs, "kernel.json"), "w") as f:
            json.dump(
                {
                    "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                    "display_name": "Other",
                    "language": "otherlang",
                },
                f,
            )
        from jupyter_client.kernelspec import KernelSpecManager

        gateway = await RunningGateway(
            self,
            registryArguments={"specs": KernelSpecManager(kernel_dirs=[os.path.dirname(specs)])},
            warm_kernels=1,
            warm_kernel_names=("other",),
        ).start()
        await poolFull(gateway, 1)
        [warm] = gateway.kernels.pool._ready["other"]
        model = await gateway.startKernel(name="other", env={"KERNEL_USERNAME": "ann"})
        self.assertNotEqual(model["id"], warm.id)
        self.assertEqual(list(gateway.kernels.pool._ready["other"]), [warm])
        claimed = await gateway.startKernel(name="other")
        self.assertEqual(claimed["id"], warm.id)
