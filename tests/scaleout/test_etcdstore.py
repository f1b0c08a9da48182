"""The etcd kernel store against a real etcd: records, owners, leases, and etcd gone."""

from __future__ import annotations

import time

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from kgw.errors import StoreUnavailable
from kgw.kernels.store.directory import KernelRecord
from kgw.kernels.store.etcd import EtcdStore
from kgw.kernels.store.etcdwire import parseStoreURL
from tests.scaleout.support import Etcd, skipUnlessRequired

KERNEL = "4f0c9a52-5f0e-4e7a-9d63-1a2b3c4d5e6f"


def record(kernelId: str = KERNEL, handedOut: bool = True) -> KernelRecord:
    return KernelRecord(
        kernelId,
        "python3",
        4242,
        f"/tmp/kernel-{kernelId}.json",
        {
            "shell_port": 50001,
            "iopub_port": 50002,
            "stdin_port": 50003,
            "control_port": 50004,
            "hb_port": 50005,
            "ip": "127.0.0.1",
            "transport": "tcp",
            "key": "secret",
            "signature_scheme": "hmac-sha256",
        },
        {"FOO": "bar"},
        "/srv/work",
        handedOut,
    )


class StoreURLTests(TestCase):
    def test_parsed(self):
        """etcd://HOST:PORT[/prefix] gives host, port and prefix (/kgw unless named)."""
        self.assertEqual(parseStoreURL("etcd://127.0.0.1:2379"), ("127.0.0.1", 2379, "/kgw"))
        self.assertEqual(parseStoreURL("etcd://db:1/team/a/"), ("db", 1, "/team/a"))
        for bad in ("http://h:1", "etcd://h", "etcd://h:x", "etcd://h:1?q=1"):
            self.assertRaises(ValueError, parseStoreURL, bad)


class EtcdStoreTests(TestCase):
    """Two stores, as two gateways would hold them, over one real etcd."""

    skip = skipUnlessRequired()

    timeout = 60

    async def setUp(self):
        self.etcd = await Etcd(self).start()

    def store(self, gatewayId: str, ttl: float = 2.0) -> EtcdStore:
        store = EtcdStore(reactor, self.etcd.storeURL(), gatewayId, ttl)
        store.start()
        self.addCleanup(store.stop)
        return store

    async def test_recordsRoundTrip(self):
        """
        A record is read back whole by its owner, listed by another gateway, and removed; a
        gateway does not read the records of kernels another, alive, owns.
        """
        first, second = self.store("a"), self.store("b")
        await first.own(record())
        self.assertEqual(await first.read(), ([record()], []))
        self.assertEqual(await second.read(), ([], []))
        [model] = await second.kernelModels()
        self.assertEqual((model["id"], model["name"]), (KERNEL, "python3"))
        self.assertEqual(await second.owners(), {KERNEL: "a"})
        first.remove(KERNEL)
        await first.stop()
        self.assertEqual(await second.read(), ([], []))
        self.assertEqual(await second.owners(), {})

    async def test_notListedUntilHandedOut(self):
        """A kernel still starting (not handed out) is not in the cluster's list."""
        first = self.store("a")
        await first.own(record(handedOut=False))
        self.assertEqual(await first.kernelModels(), [])

    async def test_claimFailsWhileOwnerLives(self):
        """A second gateway cannot claim a kernel the first owns, for as long as it renews."""
        first, second = self.store("a"), self.store("b")
        await first.own(record())
        self.assertFalse(await second.claim(KERNEL))
        self.assertTrue(await first.claim(KERNEL))
        # Past twice the TTL, renewed all along: still the first's.
        await deferLater(reactor, 4.5)
        self.assertFalse(await second.claim(KERNEL))
        self.assertEqual(await second.owners(), {KERNEL: "a"})

    async def test_claimSucceedsAfterLeaseExpires(self):
        """Once the owner stops renewing its lease, another gateway claims its kernel."""
        first, second = self.store("a"), self.store("b")
        await first.own(record())
        first._renewal.stop()  # the owner is paused, or gone
        stopped = time.monotonic()
        while not await second.claim(KERNEL):
            self.assertLess(time.monotonic() - stopped, 10, "the lease never expired")
            await deferLater(reactor, 0.1)
        self.assertEqual(await second.owners(), {KERNEL: "b"})
        self.assertFalse(await first.claim(KERNEL), "two gateways own one kernel")

    async def test_restartedGatewayRebindsItsKernels(self):
        """
        A gateway restarted under the same id reads and claims its kernels at once, bound to
        its new lease: they stay its own after the old lease expires.
        """
        first = self.store("a")
        await first.own(record())
        first._renewal.stop()  # crashed: its lease runs out on its own
        again, other = self.store("a"), self.store("b")
        self.assertEqual(await again.read(), ([record()], []))
        self.assertTrue(await again.claim(KERNEL))
        await deferLater(reactor, 3.5)  # past the first lease's TTL
        self.assertFalse(await other.claim(KERNEL))
        self.assertEqual(await other.owners(), {KERNEL: "a"})

    async def test_etcdDown(self):
        """With etcd stopped, owning a new kernel fails with a clear StoreUnavailable."""
        first = self.store("a")
        await first.own(record())
        await self.etcd.stop()
        error = None
        try:
            await first.own(record("another-kernel"))
        except StoreUnavailable as e:
            error = e
        self.assertIsNotNone(error)
        self.assertIn(f"etcd at http://{self.etcd.address}", str(error))
        self.assertIn("cannot be reached", str(error))
        with self.assertRaises(StoreUnavailable):
            await first.read()
