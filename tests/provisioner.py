"""A kernel provisioner for the tests: local kernels listening on another loopback address."""

from __future__ import annotations

from typing import Any

from jupyter_client import localinterfaces
from jupyter_client.provisioning import LocalProvisioner
from traitlets import Unicode

NAME = "kgw-test-loopback"
ENTRY_POINT = "tests.provisioner:LoopbackProvisioner"


class LoopbackProvisioner(LocalProvisioner):
    """
    Start a kernel as L{LocalProvisioner} does, but listening on C{address} (127.0.0.2 unless the
    kernelspec's C{kernel_provisioner} C{config} says otherwise) rather than on the kernel
    manager's own address.

    L{LocalProvisioner.pre_launch} picks the kernel's ports on the manager's C{ip} and writes
    that address into the connection file, and ipykernel binds to the file's address; so setting
    the manager's C{ip} first is all it takes.
    """

    address = Unicode("127.0.0.2", config=True, help="The loopback address the kernel binds to.")

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        self.parent.ip = self.address
        # jupyter_client launches kernels only on addresses it knows are this host's, and it
        # knows those of the interfaces: 127.0.0.1 alone for the loopback interface, although
        # Linux routes the whole of 127.0.0.0/8 to it.
        known = localinterfaces.local_ips()
        if self.address not in known:
            known.append(self.address)
        return await super().pre_launch(**kwargs)
