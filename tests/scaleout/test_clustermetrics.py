"""The metrics of gateways sharing one etcd: which gateway is which, and owns what."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import reactor
from twisted.internet.task import deferLater

from tests.scaleout.test_gateways import ClusterCase
from tests.support import GatewayClient, childProcesses, stdout, withTimeout


async def samples(gateway: GatewayClient) -> dict[tuple[str, frozenset[Any]], float]:
    """The samples of a gateway's metrics page, by name and labels."""
    code, page = await gateway.request("GET", "metrics")
    assert code == 200, page
    text = page.decode() if isinstance(page, bytes) else str(page)
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict[tuple[str, frozenset[Any]], float], name: str, **labels: str) -> float:
    """The value of one sample, 0 if absent."""
    return found.get((name, frozenset(labels.items())), 0.0)


class ClusterMetricsTests(ClusterCase):
    async def eventually(self, gateway: GatewayClient, name: str, expected: float, **labels: str):
        """Wait until a gateway's sample C{name} reads C{expected}; its samples then."""
        deadline = time.monotonic() + 15
        while True:
            found = await samples(gateway)
            if value(found, name, **labels) == expected:
                return found
            self.assertLess(time.monotonic(), deadline, f"{name}{labels} never {expected}")
            await deferLater(reactor, 0.05)

    async def test_metricsSayWhichGatewayOwnsWhat(self):
        """
        Each gateway's metrics name it and its address, count the kernels each gateway of the
        cluster owns, the requests and websockets it forwarded, the kernels it adopted from a
        paused owner and, on the owner resumed, the kernels it stopped serving (fenced).
        """
        ttl = 3
        first, a = await self.gateways.start("a", f"--lease-ttl={ttl}")
        _, b = await self.gateways.start("b", f"--lease-ttl={ttl}")
        model = await a.startKernel()
        path = f"api/kernels/{model['id']}"
        found = await samples(a)
        self.assertEqual(
            value(
                found,
                "kgw_gateway_info",
                gateway_id="a",
                address=f"http://127.0.0.1:{a.portNumber}",
            ),
            1.0,
        )
        kernels = {k: v for k, v in found.items() if k[0] == "kgw_kernels"}
        self.assertEqual(sum(kernels.values()), 1.0)
        found = await self.eventually(b, "kgw_cluster_kernels", 1.0, gateway_id="a")
        self.assertEqual(value(found, "kgw_cluster_kernels", gateway_id="b"), 0.0)
        self.assertEqual([k for k in found if k[0] == "kgw_kernels"], [])

        self.assertEqual((await b.request("GET", path))[0], 200)
        client = await b.connect(model["id"])
        await client.execute("x = 42")
        found = await samples(b)
        self.assertEqual(
            value(found, "kgw_forwarded_requests_total", kind="http", outcome="forwarded"), 1.0
        )
        self.assertEqual(
            value(found, "kgw_forwarded_requests_total", kind="websocket", outcome="forwarded"),
            1.0,
        )
        self.assertEqual(
            value(
                await samples(a), "kgw_forwarded_requests_total", kind="http", outcome="forwarded"
            ),
            0.0,
        )

        os.kill(first.pid, signal.SIGSTOP)
        self.addCleanup(lambda: first.ended.called or os.kill(first.pid, signal.SIGCONT))
        found = await self.eventually(b, "kgw_kernels_adopted_total", 1.0)
        found = await self.eventually(b, "kgw_cluster_kernels", 1.0, gateway_id="b")
        self.assertEqual(value(found, "kgw_cluster_kernels", gateway_id="a"), 0.0)
        os.kill(first.pid, signal.SIGCONT)
        await withTimeout(client.closed)
        await self.eventually(a, "kgw_kernels_fenced_total", 1.0)
        found = await samples(a)
        self.assertEqual(value(found, "kgw_kernels_adopted_total"), 0.0)
        self.assertEqual([k for k in found if k[0] == "kgw_kernels"], [])
        client = await b.connect(model["id"])
        self.assertEqual(stdout(await client.execute("print(x)")), "42\n")
        self.assertEqual(len(childProcesses(first.pid)), 1)
