"""kgw daemons sharing one real etcd: one view of the cluster, etcd gone, takeover."""

from __future__ import annotations

import os
import signal
import time

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from kgw.kernels.store.etcd import EtcdStore
from tests.scaleout.support import Etcd, Gateways, HAProxy, skipUnlessRequired
from tests.support import GatewayClient, childProcesses, isAlive, stdout, withTimeout

log = Logger()


class ClusterCase(TestCase):
    skip = skipUnlessRequired()

    timeout = 120

    async def setUp(self):
        self.etcd = await Etcd(self).start()
        self.gateways = Gateways(self, self.etcd)


class ClusterViewTests(ClusterCase):
    async def test_everyKernelListedEverywhere(self):
        """GET /api/kernels on any gateway lists the kernels of every gateway."""
        _, a = await self.gateways.start("a", "--lease-ttl=3")
        _, b = await self.gateways.start("b", "--lease-ttl=3")
        onA = await a.startKernel()
        onB = await b.startKernel()
        # A start is answered once the kernel is launched; its record says it is handed out a
        # moment later (a write to etcd), and from then on every gateway lists it.
        expected = {onA["id"], onB["id"]}
        for gateway in (a, b):
            deadline = reactor.seconds() + 5
            while True:
                code, listed = await gateway.request("GET", "api/kernels")
                self.assertEqual(code, 200, listed)
                if {k["id"] for k in listed} == expected or reactor.seconds() > deadline:
                    break
                await deferLater(reactor, 0.05)
            self.assertEqual({k["id"] for k in listed}, expected)
        # A kernel of the other gateway says what its record tells, no more.
        code, listed = await a.request("GET", "api/kernels")
        [remote] = [k for k in listed if k["id"] == onB["id"]]
        self.assertEqual(remote["name"], onB["name"])
        self.assertEqual(remote["execution_state"], "unknown")

    async def test_maxKernelsPerInstance(self):
        """max_kernels counts the kernels of the gateway asked, not those of the cluster."""
        _, a = await self.gateways.start("a", "--max-kernels=1")
        _, b = await self.gateways.start("b", "--max-kernels=1")
        await a.startKernel()
        await b.startKernel()
        code, body = await a.request("POST", "api/kernels", {})
        self.assertEqual(code, 403, body)


class EtcdDownTests(ClusterCase):
    async def test_newStartsRefusedExistingKernelsServed(self):
        """
        With etcd stopped, a new start answers 503 saying the kernel store cannot be reached,
        a kernel already running keeps answering; once etcd is back, kernels start again.
        """
        _, a = await self.gateways.start("a", "--lease-ttl=5")
        model = await a.startKernel()
        client = await a.connect(model["id"])
        await client.execute("x = 41")
        await self.etcd.stop()
        code, body = await a.request("POST", "api/kernels", {})
        self.assertEqual(code, 503, body)
        self.assertIn("kernel store", body["message"])
        self.assertIn("cannot be reached", body["message"])
        self.assertEqual(stdout(await client.execute("print(x + 1)")), "42\n")
        code, listed = await a.request("GET", "api/kernels")
        self.assertEqual((code, [k["id"] for k in listed]), (200, [model["id"]]))
        await self.etcd.start()
        await a.startKernel()


class TakeoverTests(ClusterCase):
    async def test_killedOwnersKernelAdopted(self):
        """
        When the owner of a kernel is killed with SIGKILL, the other gateway adopts the kernel
        once the owner's lease expires: same id, same process, variables intact.
        """
        ttl = 3
        first, a = await self.gateways.start("a", f"--lease-ttl={ttl}")
        _, b = await self.gateways.start("b", f"--lease-ttl={ttl}")
        model = await a.startKernel()
        client = await a.connect(model["id"])
        await client.execute("x = 42")
        [pid] = await self.gateways.crash(first)
        killed = time.monotonic()
        # Until the owner's lease expires, the other gateway forwards to it, in vain.
        code, body = await b.request("GET", f"api/kernels/{model['id']}")
        self.assertEqual(code, 502, body)
        self.assertIn("gateway a that owns this kernel cannot be reached", body["message"])
        while (await b.request("GET", f"api/kernels/{model['id']}"))[0] != 200:
            self.assertLess(time.monotonic() - killed, ttl + 10, "never adopted")
            await deferLater(reactor, 0.05)
        adopted = time.monotonic() - killed
        client = await b.connect(model["id"])
        self.assertEqual(
            stdout(await client.execute("import os; print(x, os.getpid())")), f"42 {pid}\n"
        )
        answered = time.monotonic() - killed
        log.info(
            "Takeover: adopted {adopted:.2f} s, first reply {answered:.2f} s after kill -9 "
            "(lease TTL {ttl} s)",
            adopted=adopted,
            answered=answered,
            ttl=ttl,
        )
        self.assertLess(answered, ttl + 2 + 1.5)

    async def test_pausedOwnerFenced(self):
        """
        An owner paused past its lease (SIGSTOP) whose kernel another gateway adopted stops
        serving it when it resumes: its clients are closed with 1012, the kernel runs on, and
        exactly one gateway owns it.
        """
        ttl = 3
        first, a = await self.gateways.start("a", f"--lease-ttl={ttl}")
        _, b = await self.gateways.start("b", f"--lease-ttl={ttl}")
        model = await a.startKernel()
        path = f"api/kernels/{model['id']}"
        client = await a.connect(model["id"])
        await client.execute("x = 42")
        [pid] = childProcesses(first.pid)
        os.kill(first.pid, signal.SIGSTOP)
        self.addCleanup(lambda: first.ended.called or os.kill(first.pid, signal.SIGCONT))
        paused = time.monotonic()
        # Asked as if forwarded, b answers for itself, never waiting on the paused owner.
        alone = {"X-Kgw-Forwarded": ["1"]}
        while (await b.request("GET", path, headers=alone))[0] != 200:
            self.assertLess(time.monotonic() - paused, ttl + 10, "never adopted")
            await deferLater(reactor, 0.05)
        os.kill(first.pid, signal.SIGCONT)
        code, reason = await withTimeout(client.closed)
        self.assertEqual(code, 1012, reason)
        # The old owner no longer serves the kernel itself: it forwards to the new one.
        self.assertEqual((await a.request("GET", path, headers=alone))[0], 404)
        self.assertEqual((await a.request("GET", path))[0], 200)
        store = EtcdStore(reactor, self.etcd.storeURL(), "test")
        self.addCleanup(store.client.close)
        self.assertEqual(await store.owners(), {model["id"]: "b"})
        self.assertTrue(isAlive(pid))
        client = await b.connect(model["id"])
        self.assertEqual(
            stdout(await client.execute("import os; print(x, os.getpid())")), f"42 {pid}\n"
        )

    async def test_bothKilledBothRestarted(self):
        """
        Both gateways killed with SIGKILL and started again under their ids: every kernel is
        listed by both and answers on its owner, same process, variables intact.
        """
        first, a = await self.gateways.start("a", "--lease-ttl=3")
        second, b = await self.gateways.start("b", "--lease-ttl=3")
        kernels = {}
        for value, gateway in ((1, a), (2, b)):
            model = await gateway.startKernel()
            client = await gateway.connect(model["id"])
            await client.execute(f"x = {value}")
            kernels[model["id"]] = value
        pids = await self.gateways.crash(first) | await self.gateways.crash(second)
        restarted = time.monotonic()
        _, a = await self.gateways.start("a", "--lease-ttl=3")
        _, b = await self.gateways.start("b", "--lease-ttl=3")
        served = {}
        for kernelId in kernels:
            while kernelId not in served:
                for gateway in (a, b):
                    if (await gateway.request("GET", f"api/kernels/{kernelId}"))[0] == 200:
                        served[kernelId] = gateway
                self.assertLess(time.monotonic() - restarted, 30, "not adopted")
                await deferLater(reactor, 0.05)
        log.info("Both restarted: kernels adopted {s:.2f} s after", s=time.monotonic() - restarted)
        for gateway in (a, b):
            code, listed = await gateway.request("GET", "api/kernels")
            self.assertEqual((code, {k["id"] for k in listed}), (200, set(kernels)))
        answered = set()
        for kernelId, value in kernels.items():
            client = await served[kernelId].connect(kernelId)
            output = stdout(await client.execute("import os; print(x, os.getpid())"))
            self.assertEqual(int(output.split()[0]), value)
            answered.add(int(output.split()[1]))
        self.assertEqual(answered, pids)


class BalancerTests(ClusterCase):
    async def test_startsSpreadOverGateways(self):
        """
        Kernels started through HAProxy (round robin) are spread over both gateways, each owned
        by the gateway that started it, and listed by both.
        """
        _, a = await self.gateways.start("a")
        _, b = await self.gateways.start("b")
        balancer = await HAProxy(self, [a.portNumber, b.portNumber]).start()
        front = GatewayClient(self, balancer.port)
        started = [(await front.startKernel())["id"] for _ in range(6)]
        store = EtcdStore(reactor, self.etcd.storeURL(), "test")
        self.addCleanup(store.client.close)
        owners = await store.owners()
        self.assertEqual(set(owners), set(started))
        self.assertEqual(sorted(owners.values()), ["a"] * 3 + ["b"] * 3)
        for gateway in (a, b, front):
            code, listed = await gateway.request("GET", "api/kernels")
            self.assertEqual(code, 200, listed)
            self.assertEqual({k["id"] for k in listed}, set(started))
        byGateway = {"a": a, "b": b}
        for kernelId, owner in owners.items():
            client = await byGateway[owner].connect(kernelId)
            self.assertEqual(stdout(await client.execute("print(6 * 7)")), "42\n")


class ForwardingTests(ClusterCase):
    async def test_kernelRequestsForwardedToOwner(self):
        """
        GET, interrupt, restart and DELETE of a kernel, sent to a gateway that does not own it,
        are answered by its owner, the token passed on.
        """
        token = {"Authorization": ["token s3cret"]}
        _, a = await self.gateways.start("a", "--auth-token=s3cret")
        _, b = await self.gateways.start("b", "--auth-token=s3cret")
        code, model = await a.request("POST", "api/kernels", {}, headers=token)
        self.assertEqual(code, 201, model)
        path = f"api/kernels/{model['id']}"
        self.assertEqual((await b.request("GET", path))[0], 401)
        code, seen = await b.request("GET", path, headers=token)
        self.assertEqual(code, 200, seen)
        self.assertEqual(seen["id"], model["id"])
        self.assertNotEqual(seen["execution_state"], "unknown")
        code, _ = await b.request("POST", f"{path}/interrupt", headers=token)
        self.assertEqual(code, 204)
        code, restarted = await b.request("POST", f"{path}/restart", headers=token)
        self.assertEqual((code, restarted["id"]), (200, model["id"]))
        # The forwarding cost: the same GET through the owner and through the other gateway.
        timings = {}
        for name, gateway in (("owner", a), ("other", b)):
            began = time.monotonic()
            for _ in range(50):
                self.assertEqual((await gateway.request("GET", path, headers=token))[0], 200)
            timings[name] = (time.monotonic() - began) / 50 * 1000
        log.info(
            "GET {path}: {owner:.2f} ms through the owner, {other:.2f} ms through the other",
            path=path,
            **timings,
        )
        code, _ = await b.request("DELETE", path, headers=token)
        self.assertEqual(code, 204)
        for gateway in (a, b):
            self.assertEqual((await gateway.request("GET", path, headers=token))[0], 404)

    async def test_unknownKernelNotForwarded(self):
        """A kernel no gateway owns is answered 404 at once, by the gateway asked."""
        await self.gateways.start("a")
        _, b = await self.gateways.start("b")
        code, body = await b.request("GET", "api/kernels/0b8d1c52-5f0e-4e7a-9d63-1a2b3c4d5e6f")
        self.assertEqual(code, 404, body)

    async def test_websocketSplicedToOwner(self):
        """
        A kernel's websocket opened on a gateway that does not own it reaches the kernel
        through its owner, in either protocol, the token passed on.
        """
        token = {"Authorization": "token s3cret"}
        _, a = await self.gateways.start("a", "--auth-token=s3cret")
        _, b = await self.gateways.start("b", "--auth-token=s3cret")
        code, model = await a.request(
            "POST", "api/kernels", {}, headers={"Authorization": ["token s3cret"]}
        )
        self.assertEqual(code, 201, model)
        for v1 in (False, True):
            client = await b.connect(model["id"], v1=v1, headers=token)
            self.assertEqual(stdout(await client.execute("print(6 * 7)")), "42\n")
            await client.disconnect()
        with self.assertRaises(ConnectionError):
            await b.connect(model["id"])

    async def test_ownerKilledClientReconnectsThroughBalancer(self):
        """
        While a client runs code on a kernel through HAProxy, its owner is killed with SIGKILL:
        the other gateway adopts the kernel within the lease TTL plus 2 s, without waiting for
        the code to end, and lists it busy; the client reconnects through the balancer and gets
        the idle status ending the code; same process, and the code's effect is there (x reads
        43).
        """
        ttl = 3
        first, a = await self.gateways.start("a", f"--lease-ttl={ttl}")
        second, b = await self.gateways.start("b", f"--lease-ttl={ttl}")
        balancer = await HAProxy(self, [a.portNumber, b.portNumber]).start()
        front = GatewayClient(self, balancer.port)
        model = await front.startKernel()
        path = f"api/kernels/{model['id']}"
        store = EtcdStore(reactor, self.etcd.storeURL(), "test")
        self.addCleanup(store.client.close)
        owner = first if (await store.owners())[model["id"]] == "a" else second
        [pid] = childProcesses(owner.pid)
        client = await front.connect(model["id"])
        await client.execute("x = 42")
        cell = client.send("execute_request", {"code": "import time; time.sleep(5); x += 1"})
        await client.next(lambda m: m["header"]["msg_type"] == "execute_input")
        await self.gateways.crash(owner)
        killed = time.monotonic()
        await withTimeout(client.closed)
        while True:
            code, seen = await front.request("GET", path)
            if code == 200:
                break
            self.assertLess(time.monotonic() - killed, ttl + 2, "not adopted within TTL + 2 s")
            await deferLater(reactor, 0.05)
        adopted = time.monotonic() - killed
        # The cell sleeps on: the adopted kernel is busy.
        self.assertEqual(seen["execution_state"], "busy")
        client = await front.connect(model["id"])

        def cellEnded(m):
            return (
                m["header"]["msg_type"] == "status"
                and m["parent_header"].get("msg_id") == cell
                and m["content"]["execution_state"] == "idle"
            )

        await client.next(cellEnded)
        ended = time.monotonic() - killed
        output = stdout(await client.execute("import os; print(x, os.getpid())"))
        log.info(
            "Through HAProxy: adopted {adopted:.2f} s, the cell's idle status {ended:.2f} s, "
            "first reply {answered:.2f} s after kill -9 (lease TTL {ttl} s; the kernel sleeps "
            "5 s)",
            adopted=adopted,
            ended=ended,
            answered=time.monotonic() - killed,
            ttl=ttl,
        )
        self.assertEqual(output, f"43 {pid}\n")
        self.assertEqual((await front.request("GET", path))[1]["execution_state"], "idle")
