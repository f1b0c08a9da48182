"""A gateway killed with SIGKILL: a new one adopts its kernels from the state directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import SynchronousTestCase, TestCase

from kgw.kernels.adoption import kernelProcesses
from tests.integration.test_daemon import spawnTwistd
from tests.support import GatewayClient, childProcesses, isAlive, stdout, withTimeout


class KernelProcessesTests(SynchronousTestCase):
    """L{kernelProcesses} finds a kernel by its connection file, and nothing else."""

    kernelId = "0b8d1c52-5f0e-4e7a-9d63-1a2b3c4d5e6f"

    def spawn(self, *arguments: str, newSession: bool = True) -> int:
        """A process idling with C{arguments} on its command line, ended by the test's clean-up."""
        process = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(120)", *arguments],
            start_new_session=newSession,
        )
        self.addCleanup(process.wait)
        self.addCleanup(process.kill)
        return process.pid

    def test_foundByConnectionFile(self):
        """A session leader started with C{kernel-<id>.json} is found, with that file's path."""
        path = os.path.abspath(os.path.join(self.mktemp(), f"kernel-{self.kernelId}.json"))
        pid = self.spawn("-f", path)
        self.assertEqual(kernelProcesses(self.kernelId), [(pid, path)])

    def test_notByNameAlone(self):
        """
        A process naming the file without leading its session (a client run from the kernel, as
        C{jupyter console --existing}), or naming another file, is not taken for the kernel.
        """
        path = os.path.abspath(os.path.join(self.mktemp(), f"kernel-{self.kernelId}.json"))
        self.spawn("--existing", path, newSession=False)
        self.spawn("-f", path + ".bak")
        self.spawn("-f", path.replace(self.kernelId, "other"))
        self.assertEqual(kernelProcesses(self.kernelId), [])


class StateDirectoryCase(TestCase):
    """Gateways run as daemons over one state directory and one runtime directory."""

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


class AdoptionTests(StateDirectoryCase):
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

    async def test_busyKernelAdoptedAtOnce(self):
        """
        A kernel that runs code when its gateway is killed is adopted at once by the next
        gateway, listed busy, not after the code ends; interrupted, its clients get the
        code's end.
        """
        first, gateway = await self.startDaemon()
        model = await gateway.startKernel()
        path = f"api/kernels/{model['id']}"
        client = await gateway.connect(model["id"])
        await client.execute("x = 42")
        cell = client.send("execute_request", {"code": "import time; time.sleep(60); x += 1"})
        await client.next(lambda m: m["header"]["msg_type"] == "execute_input")
        await self.crash(first)
        began = reactor.seconds()
        _, gateway = await self.startDaemon()
        adopted = await self.eventually(gateway, path, 200)
        self.assertEqual(adopted["execution_state"], "busy")
        # Well before the code would end (60 s), or the start timeout (60 s) ran out.
        self.assertLess(reactor.seconds() - began, 30)
        client = await gateway.connect(model["id"])
        self.assertEqual((await gateway.request("POST", f"{path}/interrupt"))[0], 204)
        await client.next(
            lambda m: (
                m["header"]["msg_type"] == "status"
                and m["parent_header"].get("msg_id") == cell
                and m["content"]["execution_state"] == "idle"
            )
        )
        self.assertEqual(stdout(await client.execute("print(x)")), "42\n")
        self.assertEqual((await gateway.request("GET", path))[1]["execution_state"], "idle")

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


class DamagedRecordTests(StateDirectoryCase):
    """
    Three kernels recorded, one record damaged: a new gateway adopts the other two, sets the
    damaged record aside, and adopts or shuts down its kernel; none is left without an owner.
    """

    async def leaveThree(self) -> tuple[list[str], dict[str, int]]:
        """Start three kernels and SIGKILL their gateway: their ids, and pids by id."""
        first, gateway = await self.startDaemon()
        ids = [(await gateway.startKernel())["id"] for _ in range(3)]
        for kernelId in ids:
            # Started, not starting: a kernel still starting writes to the dead gateway's pipes.
            client = await gateway.connect(kernelId)
            await client.execute("pass")
        await self.crash(first)
        pids = {}
        for kernelId in ids:
            with open(self.recordPath(kernelId)) as f:
                pids[kernelId] = json.load(f)["pid"]
        self.assertEqual(set(pids.values()), self.orphans)
        return ids, pids

    def recordPath(self, kernelId: str) -> str:
        return os.path.join(self.stateDir, "kernels", f"{kernelId}.json")

    async def until(self, condition, what: str, timeout: float = 30.0) -> None:
        waited = 0.0
        while not await condition():
            if waited > timeout:
                raise AssertionError(f"not {what} after {timeout} s")
            await deferLater(reactor, 0.1)
            waited += 0.1

    async def listed(self, gateway, ids) -> set[str]:
        """Which of C{ids} the gateway serves."""
        found = set()
        for kernelId in ids:
            code, _ = await gateway.request("GET", f"api/kernels/{kernelId}")
            self.assertIn(code, (200, 404))
            if code == 200:
                found.add(kernelId)
        return found

    async def recover(self, damage, adopted: bool, invalid: bool = True) -> bytes:
        """
        Damage the first kernel's record with C{damage} (its bytes to new bytes), start a new
        gateway, and check that the record is set aside and logged (if C{invalid}), the two
        others adopted, and the first kernel adopted (C{adopted}) or shut down; then that no
        kernel outlives the new gateway. Return the new gateway's output.
        """
        ids, pids = await self.leaveThree()
        bad = ids[0]
        with open(self.recordPath(bad), "rb") as f:
            damaged = damage(f.read())
        with open(self.recordPath(bad), "wb") as f:
            f.write(damaged)

        second, gateway = await self.startDaemon()
        expected = set(ids) if adopted else set(ids[1:])

        async def recovered() -> bool:
            served = await self.listed(gateway, ids)
            return served == expected and (adopted or not isAlive(pids[bad]))

        await self.until(recovered, "recovered")
        if invalid:
            self.assertIn(f"Kernel record {bad}.json is invalid".encode(), second.output)
            with open(os.path.join(self.stateDir, "kernels", "invalid", f"{bad}.json"), "rb") as f:
                self.assertEqual(f.read(), damaged)
        for kernelId in ids[1:] + ([bad] if adopted else []):
            client = await gateway.connect(kernelId)
            self.assertEqual(stdout(await client.execute("print(6 * 7)")), "42\n")

        os.kill(second.pid, signal.SIGTERM)
        await withTimeout(second.ended, 30)
        self.assertEqual([pid for pid in pids.values() if isAlive(pid)], [])
        left = ["invalid"] if invalid else []
        self.assertEqual(os.listdir(os.path.join(self.stateDir, "kernels")), left)
        return second.output

    def test_wrongTypedField(self):
        """A record whose pid is a string: its kernel is found by its connection file, adopted."""

        def damage(data: bytes) -> bytes:
            return json.dumps(dict(json.loads(data), pid="abc")).encode()

        return self.recover(damage, adopted=True)

    def test_truncated(self):
        """A record cut short: its kernel is found by its connection file and adopted."""
        return self.recover(lambda data: data[: len(data) // 3], adopted=True)

    def test_garbage(self):
        """A record of garbage bytes: its kernel is found by its connection file and adopted."""
        return self.recover(lambda data: b"\x00\xff\x9c garbage \x13" * 20, adopted=True)

    def test_connectionFileDamagedToo(self):
        """A garbage record and a truncated connection file: its kernel is shut down."""

        def damage(data: bytes) -> bytes:
            connectionFile = json.loads(data)["connectionFile"]
            with open(connectionFile, "r+b") as f:
                f.truncate(10)
            return b"\xff" * 64

        return self.recover(damage, adopted=False)

    async def test_stalePid(self):
        """A valid record naming a pid that is not its kernel: the kernel is found and adopted."""

        def damage(data: bytes) -> bytes:
            return json.dumps(dict(json.loads(data), pid=self.deadPid)).encode()

        ended = subprocess.Popen(["true"])
        ended.wait()
        self.deadPid = ended.pid
        output = await self.recover(damage, adopted=True, invalid=False)
        self.assertIn(f"not {self.deadPid} as recorded".encode(), output)
