"""In-memory stand-ins for kernel processes and ZeroMQ, and an API wired to them for treq tests."""

from __future__ import annotations

import json
import os
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from jupyter_client.session import Session
from treq.testing import StubTreq
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kgw.api.app import GatewayAPI
from kgw.api.factory import ChannelsFactory
from kgw.api.sessions import SessionRegistry
from kgw.http.access import AccessPolicy
from kgw.http.edge import Edge
from kgw.http.routes import RouteTemplates
from kgw.kernels.environment import kernelEnvironment
from kgw.kernels.kernel import Kernel
from kgw.kernels.launcher import Launcher
from kgw.kernels.policy import KernelPolicy
from kgw.kernels.registry import KernelRegistry
from kgw.metrics import GatewayMetrics

# The PNG signature and a few more bytes: enough for a logo nobody looks at.
LOGO = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
KERNEL_JS = b"define([], function () { return {onload: function () {}}; });\n"


class FakeProcess:
    """
    A L{kgw.kernels.process.KernelProcess} without a process: every operation succeeds at once
    and is recorded in C{calls} as C{(operation, arguments)}.

    @param startLater: make C{start} wait until the test fires C{self.starting}.
    """

    def __init__(
        self,
        name: str,
        specs: KernelSpecManager,
        connectionFile: str,
        startLater: bool = False,
    ) -> None:
        self.name = name
        self.specs = specs
        self.connectionFile = connectionFile
        self.session = Session(key=os.urandom(32).hex().encode())
        self.connectionInfo: dict[str, Any] = {
            "transport": "tcp",
            "ip": "127.0.0.1",
            "shell_port": 0,
            "iopub_port": 0,
            "stdin_port": 0,
            "control_port": 0,
            "hb_port": 0,
            "key": self.session.key,
            "signature_scheme": "hmac-sha256",
        }
        self.pid: int | None = None
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.startLater = startLater
        self.starting: Deferred[None] | None = None

    def _record(self, operation: str, result: Any = None, **arguments: Any) -> Deferred[Any]:
        self.calls.append((operation, arguments))
        return succeed(result)

    def operations(self) -> list[str]:
        """The names of the operations called so far, in order."""
        return [operation for operation, _ in self.calls]

    def start(self, **launch: Any) -> Deferred[None]:
        started = self._record("start", **launch)
        if self.startLater:
            self.starting = Deferred()
            return self.starting
        return started

    def cleanup(self) -> Deferred[None]:
        return self._record("cleanup")

    def interrupt(self) -> Deferred[None]:
        return self._record("interrupt")

    def restart(self, now: bool) -> Deferred[None]:
        return self._record("restart", now=now)

    def shutdown(self, now: bool = False) -> Deferred[None]:
        return self._record("shutdown", now=now)

    def isAlive(self) -> Deferred[bool]:
        return self._record("isAlive", True)


class OfflineLauncher(Launcher):
    """A launcher whose kernels answer at once, with no ZeroMQ channels."""

    def openChannels(self, kernel: Kernel) -> None:
        pass

    def answers(self, kernel: Kernel) -> Deferred[None]:
        return succeed(None)


class OfflineRegistry(KernelRegistry):
    """A kernel registry whose kernels answer at once, with no ZeroMQ channels."""

    launcherType = OfflineLauncher


def writeKernelspecs(directory: str) -> None:
    """
    Write two kernelspecs into C{directory}: C{fake}, with a logo and a C{kernel.js}, and
    C{other}, with neither.
    """
    for name, displayName in (("fake", "Fake Python"), ("other", "Other Python")):
        specDir = os.path.join(directory, name)
        os.makedirs(specDir)
        spec = {
            "argv": ["python3", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": displayName,
            "language": "python",
        }
        with open(os.path.join(specDir, "kernel.json"), "w") as f:
            json.dump(spec, f)
    with open(os.path.join(directory, "fake", "logo-64x64.png"), "wb") as f:
        f.write(LOGO)
    with open(os.path.join(directory, "fake", "kernel.js"), "wb") as f:
        f.write(KERNEL_JS)


def makeRegistry(testCase: SynchronousTestCase, **kw: Any) -> OfflineRegistry:
    """
    An offline registry of L{FakeProcess}es (unless C{processFactory} says otherwise) over fresh
    kernelspecs C{fake} and C{other}.
    """
    root = os.path.abspath(testCase.mktemp())
    specsDir = os.path.join(root, "kernels")
    writeKernelspecs(specsDir)
    kw.setdefault("defaultKernelName", "fake")
    kw.setdefault("processFactory", FakeProcess)
    policy, kw = KernelPolicy().apply(kw)
    return OfflineRegistry(
        Clock(),
        policy,
        specs=KernelSpecManager(kernel_dirs=[specsDir], ensure_native_kernel=False),
        environment=lambda requested: kernelEnvironment(requested, {"PATH": "/bin"}),
        runtimeDir=os.path.join(root, "runtime"),
        **kw,
    )


def makeAPI(
    testCase: SynchronousTestCase,
    baseURL: str = "/",
    listKernels: bool = True,
    maxKernels: int = 0,
    access: AccessPolicy | None = None,
    maxBodySize: int = 0,
    metrics: GatewayMetrics | None = None,
    metricsOpen: bool = False,
    **kw: Any,
) -> tuple[StubTreq, OfflineRegistry]:
    """
    The gateway's resource tree over an offline registry, behind a L{StubTreq}.

    @param access: the edge's access policy (none: no token, no CORS headers).
    @param maxBodySize: the edge's limit on request bodies (0: none).
    @param metrics: record the registry's kernels, the requests and the messages in these
        metrics and serve them at C{/metrics} (none: no metrics page), open with C{metricsOpen}.
    @param kw: passed on to L{OfflineRegistry}.
    @return: the client and the registry.
    """
    kernels = makeRegistry(testCase, maxKernels=maxKernels, metrics=metrics, **kw)
    if metrics is not None:
        metrics.watchKernels(kernels)
    api = GatewayAPI(
        kernels,
        SessionRegistry(kernels),
        ChannelsFactory(1024 * 1024, metrics=metrics),
        baseURL=baseURL,
        listKernels=listKernels,
    )
    edge = Edge(
        api.app.resource(),
        baseURL,
        access,
        maxBodySize=maxBodySize,
        routes=RouteTemplates(GatewayAPI.app.url_map),
        metrics=metrics,
        metricsOpen=metricsOpen,
    )
    return StubTreq(edge), kernels
