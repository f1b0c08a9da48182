"""Settings reach the parts they configure, through buildGateway."""

from __future__ import annotations

import os

from jupyter_client.kernelspec import KernelSpecManager
from twisted.internet.defer import fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kgw.config import Config
from kgw.gateway import buildGateway
from tests.fakes import FakeProcess, makeRegistry, writeKernelspecs


class WiringTests(SynchronousTestCase):
    def build(self, **settings):
        specsDir = os.path.join(os.path.abspath(self.mktemp()), "kernels")
        writeKernelspecs(specsDir)
        specs = KernelSpecManager(kernel_dirs=[specsDir], ensure_native_kernel=False)
        gateway = buildGateway(Config(**settings), Clock(), specs=specs, processFactory=FakeProcess)
        return gateway.kernels

    def test_defaultKernelName(self):
        """default_kernel_name is the kernelspec started when a request names none."""
        self.assertEqual(self.build(default_kernel_name="other").defaultKernelName, "other")

    def test_environmentLists(self):
        """env_whitelist and env_process_whitelist shape the environment of a new kernel."""
        self.patch(os, "environ", {"PATH": "/bin", "HOME": "/home/k", "SECRET": "s"})
        kernels = self.build(env_whitelist=("FOO",), env_process_whitelist=("HOME",))
        env = kernels._environment({"FOO": "f", "BAR": "b", "KERNEL_X": "x"})
        self.assertEqual(
            env,
            {"PATH": "/bin", "HOME": "/home/k", "FOO": "f", "KERNEL_X": "x", "KERNEL_GATEWAY": "1"},
        )


class RestartLimitTests(SynchronousTestCase):
    def test_givesUpAfterRestartLimit(self):
        """A dead kernel is restarted restart_limit times, then dropped as dead."""
        made = []

        def factory(name, specs, connectionFile):
            process = FakeProcess(name, specs, connectionFile)
            process.isAlive = lambda: succeed(False)

            def restart(now):
                process.calls.append(("restart", {"now": now}))
                return fail(RuntimeError("cannot restart"))

            process.restart = restart
            made.append(process)
            return process

        kernels = makeRegistry(self, processFactory=factory, restartLimit=3)
        kernel = self.successResultOf(kernels.startKernel())
        kernels.clock.advance(kernels.policy.watchInterval)
        self.assertNotIn(kernel.id, kernels)
        self.assertEqual(made[0].operations().count("restart"), 3)
        self.assertEqual(kernel.executionState, "dead")
        self.flushLoggedErrors(RuntimeError)
