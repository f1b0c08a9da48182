"""Kernels started through a kernelspec's own provisioner (L{tests.provisioner})."""

from __future__ import annotations

import json
import os
import sys
from importlib.metadata import EntryPoint

from jupyter_client import localinterfaces
from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.provisioning import KernelProvisionerFactory
from twisted.trial.unittest import TestCase

from tests.provisioner import ENTRY_POINT, NAME, LoopbackProvisioner
from tests.support import RunningGateway, isAlive, reply, stdout

ADDRESS = "127.0.0.2"
CHANNELS = ("shell", "iopub", "stdin", "control", "hb")


def listeningOn(address: str) -> set[int]:
    """The TCP ports some socket of this network namespace listens on at C{address} (IPv4)."""
    # /proc/net/tcp writes an IPv4 address as the hex of its bytes in the host's order.
    wanted = "".join(f"{int(part):02X}" for part in reversed(address.split(".")))
    ports = set()
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            local, state = line.split()[1], line.split()[3]
            host, port = local.split(":")
            if host == wanted and state == "0A":
                ports.add(int(port, 16))
    return ports


class LoopbackProvisionerTests(TestCase):
    """
    A kernelspec naming a provisioner in its C{metadata} gets its kernels from that provisioner,
    and the gateway reaches them at the address the provisioner gave them.
    """

    timeout = 120

    def setUp(self) -> None:
        # Register the provisioner as its entry point would, for this test only.
        self.patch(
            KernelProvisionerFactory,
            "provisioners",
            {
                **KernelProvisionerFactory.provisioners,
                NAME: EntryPoint(NAME, ENTRY_POINT, KernelProvisionerFactory.GROUP_NAME),
            },
        )
        # The provisioner tells jupyter_client that 127.0.0.2 is local: keep that to this test.
        self.patch(localinterfaces, "LOCAL_IPS", list(localinterfaces.local_ips()))
        kernels = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(kernels, "loopback"))
        spec = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python on 127.0.0.2",
            "language": "python",
            "metadata": {
                "kernel_provisioner": {"provisioner_name": NAME, "config": {"address": ADDRESS}}
            },
        }
        with open(os.path.join(kernels, "loopback", "kernel.json"), "w") as f:
            json.dump(spec, f)
        self.specs = KernelSpecManager(kernel_dirs=[kernels])

    async def test_kernelListensOnProvisionersAddress(self):
        """
        A kernel of the kernelspec is started by the provisioner, listens on 127.0.0.2 alone,
        runs code over the websocket, and is gone once deleted.
        """
        gateway = await RunningGateway(self, registryArguments={"specs": self.specs}).start()
        code, body = await gateway.request("GET", "api/kernelspecs")
        self.assertEqual(code, 200)
        self.assertIn("loopback", body["kernelspecs"])

        model = await gateway.startKernel(name="loopback")
        self.assertEqual(model["name"], "loopback")
        process = gateway.kernels.get(model["id"]).process
        self.assertIsInstance(process.manager.provisioner, LoopbackProvisioner)
        info = process.connectionInfo
        self.assertEqual(info["ip"], ADDRESS)
        with open(process.manager.connection_file) as f:
            self.assertEqual(json.load(f)["ip"], ADDRESS)

        client = await gateway.connect(model["id"])
        messages = await client.execute(
            "from ipykernel.kernelapp import IPKernelApp\nprint(IPKernelApp.instance().ip)"
        )
        # Answered, so listening (a start is answered at launch, before the kernel listens).
        ports = {info[f"{channel}_port"] for channel in CHANNELS}
        self.assertEqual(ports - listeningOn(ADDRESS), set())
        self.assertEqual(reply(messages)["content"]["status"], "ok")
        self.assertEqual(stdout(messages), f"{ADDRESS}\n")

        pid = process.pid
        self.assertTrue(pid is not None and isAlive(pid))
        code, _ = await gateway.request("DELETE", f"api/kernels/{model['id']}")
        self.assertEqual(code, 204)
        self.assertFalse(isAlive(pid))
