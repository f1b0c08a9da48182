"""
Fixtures of the cluster tests: two SSH test hosts (L{tests.cluster.hosts}), an C{ssh_python}
kernelspec of gateway_provisioners' C{DistributedProvisioner} naming them, and a gateway.

The tests run in tox's C{cluster} env, which installs C{kgw[cluster]} and sets
C{KGW_CLUSTER_TEST=1}; there, and in CI (C{CI=true}), a machine that cannot make the test hosts
(no root, no sshd) fails them with the reason. Elsewhere they are skipped, saying how to run them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.cluster.hosts import GATEWAY_ADDRESS, ClusterUnavailable, TestCluster

SPEC = "ssh_python"


def required() -> bool:
    """Whether the cluster tests must run: in tox's C{cluster} env and in CI."""
    flag = os.environ.get("KGW_CLUSTER_TEST")
    return flag == "1" or (os.environ.get("CI") == "true" and flag != "0")


def skipUnlessRequired() -> str | None:
    if required():
        return None
    return "set KGW_CLUSTER_TEST=1 to run the cluster tests as root (tox -e cluster does)"


def missingPackages() -> str | None:
    for module in ("gateway_provisioners", "paramiko"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed: pip install .[cluster] (tox -e cluster does)"
    return None


def launcherScript() -> str:
    """gateway_provisioners' Python kernel launcher, as installed."""
    import gateway_provisioners

    return os.path.join(
        os.path.dirname(gateway_provisioners.__file__),
        "kernel-launchers",
        "python",
        "scripts",
        "launch_ipykernel.py",
    )


def writeSpec(
    kernels: str,
    hosts: list[str],
    name: str = SPEC,
    algorithm: str = "round-robin",
    launchTimeout: int = 30,
) -> str:
    """
    Generate an C{ssh_python} kernelspec under C{kernels} with gateway_provisioners' own
    C{jupyter-ssh-spec}, then point it at this interpreter (the hosts share this machine's
    files) and configure its provisioner. Returns its directory.
    """
    # Installed with prefix P, a kernelspec lands in P/share/jupyter/kernels.
    prefix = os.path.dirname(os.path.dirname(os.path.dirname(kernels)))
    command = [
        os.path.join(os.path.dirname(sys.executable), "jupyter-ssh-spec"),
        "install",
        f"--prefix={prefix}",
        f"--kernel-name={name}",
    ]
    for host in hosts:
        command.append(f"--remote-hosts={host}")
    subprocess.run(command, check=True, capture_output=True)
    target = os.path.join(kernels, name)
    path = os.path.join(target, "kernel.json")
    with open(path) as f:
        spec = json.load(f)
    spec["argv"][0] = sys.executable
    spec["metadata"]["kernel_provisioner"]["config"].update(
        {
            "remote_hosts": hosts,
            "load_balancing_algorithm": algorithm,
            "launch_timeout": launchTimeout,
            # The test hosts log in as the user running the tests: root in CI, which
            # gateway_provisioners refuses by default.
            "unauthorized_users": [],
        }
    )
    with open(path, "w") as f:
        json.dump(spec, f, indent=1)
    return target


def resetProvisioners() -> None:
    """
    Forget what gateway_provisioners keeps per process: its response socket (a singleton,
    bound on first use) and the placement counts of DistributedProvisioner.
    """
    from gateway_provisioners.distributed import DistributedProvisioner
    from gateway_provisioners.response_manager import ResponseManager

    if ResponseManager.initialized():
        ResponseManager.instance().stop_response_manager()
        ResponseManager.clear_instance()
    DistributedProvisioner.host_index = 0
    DistributedProvisioner.kernel_on_host._host_kernels.clear()
    DistributedProvisioner.kernel_on_host._kernel_host_mapping.clear()


class ClusterCase(TestCase):
    """Two SSH test hosts and a kernelspec of theirs; L{provisionerEnvironment} for a gateway."""

    timeout = 240
    skip = skipUnlessRequired()
    hostCount = 2

    def setUp(self) -> None:
        problem = missingPackages()
        if problem is not None:
            self.fail(problem)
        self.workdir = os.path.abspath(self.mktemp())
        os.makedirs(self.workdir)
        self.cluster = TestCluster(os.path.join(self.workdir, "cluster"), self.hostCount)
        try:
            self.cluster.start()
        except ClusterUnavailable as e:
            self.fail(f"Cannot make the SSH test hosts: {e}")
        self.addCleanup(self.cluster.stop)
        self.kernelsDir = os.path.join(self.workdir, "share", "jupyter", "kernels")
        os.makedirs(self.kernelsDir)
        self.logDir = os.path.join(self.workdir, "logs")
        os.makedirs(self.logDir)
        self.environment = self.provisionerEnvironment()
        # In-process gateways: the same settings, where gateway_provisioners reads them.
        from gateway_provisioners import distributed, response_manager

        saved = {name: os.environ.get(name) for name in self.environment}
        os.environ.update(self.environment)
        self.addCleanup(_restoreEnvironment, saved)
        self.patch(response_manager, "response_ip", GATEWAY_ADDRESS)
        self.patch(distributed, "kernel_log_dir", self.logDir)
        resetProvisioners()
        self.addCleanup(resetProvisioners)

    def provisionerEnvironment(self) -> dict[str, str]:
        """
        What a gateway process needs to reach the test hosts: a C{HOME} holding the client key
        and C{known_hosts}, and the response address on the gateway's test address.
        """
        return {
            "HOME": self.cluster.home,
            "GP_RESPONSE_IP": GATEWAY_ADDRESS,
            "GP_KERNEL_LOG_DIR": self.logDir,
            "JUPYTER_PATH": os.path.dirname(self.kernelsDir),
        }

    def specs(self) -> Any:
        from jupyter_client.kernelspec import KernelSpecManager

        return KernelSpecManager(kernel_dirs=[self.kernelsDir])

    def hostOfKernel(self, gateway: Any, kernelId: str) -> Any:
        """The test host a kernel runs on, as its provisioner placed it."""
        provisioner = gateway.kernels.get(kernelId).process.manager.provisioner
        return self.cluster.hostOf(provisioner.assigned_host)

    async def waitFor(self, condition: Any, what: str, seconds: float = 30.0) -> None:
        """Wait until C{condition()} holds, checking every 50 ms; fail naming C{what}."""
        deadline = time.monotonic() + seconds
        while not condition():
            if time.monotonic() > deadline:
                self.fail(f"{what} did not happen within {seconds} s")
            await deferLater(reactor, 0.05)


def _restoreEnvironment(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
