"""A gateway killed with SIGKILL: a new one adopts its kernels from the state directory."""

from __future__ import annotations

import json
import os
import signal

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from kgw.kernels.state import KernelRecord, StateDirectory
from tests.integration.test_daemon import spawnTwistd
from tests.support import GatewayClient, childProcesses, isAlive, stdout, withTimeout


class StateDirectoryTests(SynchronousTestCase):
    def test_writeReadRemove(self):
        """Records are written whole, read back, and removed."""
        state = StateDirectory(self.mktemp())
        record = KernelRecord("k1", "python3", 123, "/run/k.json", {"key": "s"}, {"A": "1"})
        state.write(record)
        self.assertEqual(state.records(), [record])
        state.remove("k1")
        self.assertEqual(state.records(), [])

    def test_brokenRecordsDropped(self):
        """An unreadable record and a half-written temporary file are removed, not adopted."""
        state = StateDirectory(self.mktemp())
        with open(os.path.join(state.path, "bad.json"), "w") as f:
            f.write("{not json")
        with open(os.path.join(state.path, ".half.tmp"), "w") as f:
            f.write("{")
        self.assertEqual(state.records(), [])
        self.assertEqual(os.listdir(state.path), [])


class AdoptionTests(TestCase):
    timeout = 120

    def setUp(self):
        self.stateDir = os.path.abspath(self.mktemp())
        self.runtime = os.path.abspath(self.mktemp())
        os.makedirs(self.runtime)
        self.orphans: set[int] = set()
        # Kernels outlive a killed gateway by design: whatever is left is ended here.
        self.addCleanup(self.endOrphans)

    def endOrphans(self):
        for pid in self.orphans:
            if isAlive(pid):
                os.kill(pid, signal.SIGKILL)

    async def startDaemon(self):
        env = dict(os.environ, JUPYTER_RUNTIME_DIR=self.runtime)
        process = spawnTwistd(
            self,
            "-n",
            "--pidfile=",
            "kgw",
            "--port=0",
            f"--state-dir={self.stateDir}",
            env=env,
        )
        # Before the daemon is reaped, note its kernels: they outlive it by design.
        self.addCleanup(lambda: self.orphans.update(childProcesses(process.pid)))
        port = await withTimeout(process.listening)
        return process, GatewayClient(self, port)

    async def crash(self, process) -> set[int]:
        """SIGKILL the gateway; return the pids of the kernels it leaves behind."""
        kernels = childProcesses(process.pid)
        self.orphans |= kernels
        os.kill(process.pid, signal.SIGKILL)
        await withTimeout(process.ended)
        return kernels

    async def eventually(self, gateway, path, status, timeout=30.0):
        waited = 0.0
        while True:
            code, body = await gateway.request("GET", path)
            if code == status:
                return body
            if waited > timeout:
                raise AssertionError(f"GET {path} answered {code}, not {status}")
            await deferLater(reactor, 0.1)
            waited += 0.1

    async def test_adoptedWithStateIntact(self):
        """After SIGKILL of the gateway, a new one serves the same kernel, variables intact."""
        first, gateway = await self.startDaemon()
        model = await gateway.startKernel()
        client = await gateway.connect(model["id"])
        await client.execute("x = 42")
        [kernelPid] = await self.crash(first)
        await withTimeout(client.closed)
        self.assertTrue(isAlive(kernelPid))

        second, gateway = await self.startDaemon()
        adopted = await self.eventually(gateway, f"api/kernels/{model['id']}", 200)
        self.assertEqual(adopted["name"], model["name"])
        client = await gateway.connect(model["id"])
        self.assertEqual(stdout(await client.execute("print(x)")), "42\n")

        # An adopted kernel that dies is restarted under its id, as a kernel of the new gateway.
        os.kill(kernelPid, signal.SIGKILL)
        await client.next(
            lambda m: (
                m["header"]["msg_type"] == "status"
                and m["content"]["execution_state"] == "restarting"
            )
        )
        self.assertEqual(stdout(await client.execute("print('again')")), "again\n")
        [newPid] = childProcesses(second.pid)
        self.orphans.add(newPid)

        os.kill(second.pid, signal.SIGTERM)
        await withTimeout(second.ended, 10)
        self.assertFalse(isAlive(newPid))
        self.assertEqual(os.listdir(os.path.join(self.stateDir, "kernels")), [])
        self.assertEqual([f for f in os.listdir(self.runtime) if f.startswith("kernel-")], [])

    async def test_deadKernelsCleanedUp(self):
        """A recorded kernel that died with the gateway is forgotten and its files removed."""
        first, gateway = await self.startDaemon()
        model = await gateway.startKernel()
        for pid in await self.crash(first):
            os.kill(pid, signal.SIGKILL)
        records = os.listdir(os.path.join(self.stateDir, "kernels"))
        self.assertEqual(records, [f"{model['id']}.json"])
        with open(os.path.join(self.stateDir, "kernels", records[0])) as f:
            connectionFile = json.load(f)["connectionFile"]
        self.assertTrue(os.path.exists(connectionFile))

        second, gateway = await self.startDaemon()
        await self.eventually(gateway, f"api/kernels/{model['id']}", 404)
        waited = 0.0
        while os.listdir(os.path.join(self.stateDir, "kernels")) and waited < 10:
            await deferLater(reactor, 0.1)
            waited += 0.1
        self.assertEqual(os.listdir(os.path.join(self.stateDir, "kernels")), [])
        self.assertFalse(os.path.exists(connectionFile))
        os.kill(second.pid, signal.SIGTERM)
        await withTimeout(second.ended, 10)
