"""A kernelspec naming a kernel provisioner that is not installed."""

from __future__ import annotations

import json
import os
import sys

from jupyter_client.kernelspec import KernelSpecManager
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from tests.support import RunningGateway


class MissingProvisionerTests(TestCase):
    async def test_startRefusedNamingIt(self):
        """
        POST /api/kernels of such a kernelspec answers a JSON 404 naming the provisioner, and
        the gateway's start-up logs it once.
        """
        kernels = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(kernels, "elsewhere"))
        spec = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python elsewhere",
            "language": "python",
            "metadata": {"kernel_provisioner": {"provisioner_name": "no-such-provisioner"}},
        }
        with open(os.path.join(kernels, "elsewhere", "kernel.json"), "w") as f:
            json.dump(spec, f)
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        specs = KernelSpecManager(kernel_dirs=[kernels])
        gateway = await RunningGateway(self, registryArguments={"specs": specs}).start()
        code, body = await gateway.request("POST", "api/kernels", {"name": "elsewhere"})
        self.assertEqual(code, 404)
        self.assertIn("'no-such-provisioner'", body["message"])
        self.assertIn("elsewhere", body["message"])
        await gateway.request("POST", "api/kernels", {"name": "elsewhere"})
        logged = [
            e
            for e in events
            if e.get("provisioner") == "no-such-provisioner" and e.get("log_level") is not None
        ]
        self.assertEqual(len(logged), 1)
        self.assertEqual(logged[0]["name"], "elsewhere")
        self.assertEqual(len(gateway.kernels), 0)
