"""etc/haproxy/haproxy.cfg, the balancer configuration users copy, in front of two gateways."""

from __future__ import annotations

import os
import subprocess

from twisted.trial.unittest import TestCase

from tests.scaleout.support import Etcd, Gateways, HAProxy, program, skipUnlessRequired
from tests.support import GatewayClient, stdout

SHIPPED = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "etc", "haproxy", "haproxy.cfg"
)


class ShippedConfigurationTests(TestCase):
    skip = skipUnlessRequired()

    timeout = 120

    def test_valid(self):
        """HAProxy finds the shipped configuration valid as it is."""
        checked = subprocess.run(
            [program("haproxy", "haproxy"), "-c", "-f", SHIPPED], capture_output=True, text=True
        )
        self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)

    async def test_servesKernels(self):
        """
        With its addresses set to two gateways', the shipped configuration starts kernels on
        both and carries each one's requests and websocket (sticky on the kernel id; the plain
        round robin of support.HAProxy is BalancerTests').
        """
        etcd = await Etcd(self).start()
        gateways = Gateways(self, etcd)
        _, a = await gateways.start("a")
        _, b = await gateways.start("b")
        with open(SHIPPED) as f:
            shipped = f.read()
        balancer = await HAProxy(self, [a.portNumber, b.portNumber], shipped).start()
        front = GatewayClient(self, balancer.port)
        started = [(await front.startKernel())["id"] for _ in range(2)]
        for gateway in (a, b):
            code, listed = await gateway.request("GET", "api/kernels")
            self.assertEqual({k["id"] for k in listed}, set(started))
        for kernelId in started:
            for _ in range(2):
                code, model = await front.request("GET", f"api/kernels/{kernelId}")
                self.assertEqual((code, model["id"]), (200, kernelId))
            client = await front.connect(kernelId)
            self.assertEqual(stdout(await client.execute("print(6 * 7)")), "42\n")
