"""A gateway on --listen endpoints, reached by the others at the URL it advertises."""

from __future__ import annotations

from tests.scaleout.support import STARTUP, freePort
from tests.scaleout.test_clustermetrics import samples, value
from tests.scaleout.test_gateways import ClusterCase
from tests.support import GatewayClient, stdout, withTimeout


class AdvertiseURLTests(ClusterCase):
    async def test_listenEndpointsReachedAtAdvertisedURL(self):
        """
        A gateway listening on --listen endpoints, which have no address of their own to give
        the others, is reached at its --advertise-url: requests and websockets for its kernels
        sent to another gateway are forwarded there, and its metrics show the URL.
        """
        port = freePort()
        url = f"http://127.0.0.1:{port}"
        process, _ = await self.gateways.start(
            "a", f"--listen=tcp:{port}:interface=127.0.0.1", f"--advertise-url={url}/"
        )
        self.assertEqual(await withTimeout(process.listening, STARTUP), port)
        a = GatewayClient(self, port)
        _, b = await self.gateways.start("b")
        model = await a.startKernel()
        code, seen = await b.request("GET", f"api/kernels/{model['id']}")
        self.assertEqual((code, seen["id"]), (200, model["id"]), seen)
        client = await b.connect(model["id"])
        self.assertEqual(stdout(await client.execute("print(6 * 7)")), "42\n")
        self.assertEqual(
            value(await samples(a), "kgw_gateway_info", gateway_id="a", address=url), 1.0
        )
