"""
Fixtures of the scale-out tests: a real etcd, a real HAProxy and kgw daemons, on loopback.

Each is started by the test with its own data directory or configuration file and ports chosen
free on 127.0.0.1, and stopped by its own pid at the test's clean-up. They run in tox's
C{scaleout} env (C{KGW_SCALEOUT_TEST=1}) and in CI (C{CI=true}), where a component that cannot be
started fails the test saying why (a program missing says which Debian package holds it); in the
default env, whose README command needs nothing but Python, they are skipped, saying how to run
them.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
from typing import Any

import treq
from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from tests.integration.test_daemon import spawnTwistd
from tests.support import GatewayClient, childProcesses, isAlive, withTimeout

# How long a component may take to answer once started, on a busy machine.
STARTUP = 30.0


def required() -> bool:
    """Whether the scale-out tests must run: in tox's C{scaleout} env and in CI."""
    flag = os.environ.get("KGW_SCALEOUT_TEST")
    return flag == "1" or (os.environ.get("CI") == "true" and flag != "0")


def skipUnlessRequired() -> str | None:
    if required():
        return None
    return "set KGW_SCALEOUT_TEST=1 to run the scale-out tests (tox -e scaleout does)"


def freePort() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def program(name: str, package: str) -> str:
    """The path of the program C{name}; fails the test naming the Debian package if missing."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path is None:
        raise AssertionError(
            f"{name} is not installed: the scale-out tests need Debian's {package} "
            f"(apt-get install -y {package}; .ci/run installs it)"
        )
    return path


class Program(protocol.ProcessProtocol):
    """A process of a test, its output collected; C{ended} fires with its exit status."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.output = b""
        self.ended: Deferred[Any] = Deferred()
        self.pid = 0

    def outReceived(self, data: bytes) -> None:
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(reason.value)

    @property
    def running(self) -> bool:
        return not self.ended.called

    def tail(self, lines: int = 15) -> str:
        return b"\n".join(self.output.splitlines()[-lines:]).decode(errors="replace")


def spawnProgram(test: TestCase, name: str, args: list[str], cwd: str | None = None) -> Program:
    """Start C{args}; the test's clean-up ends it by its pid (SIGTERM, then SIGKILL)."""
    process = Program(name)
    transport = reactor.spawnProcess(process, args[0], args, env=dict(os.environ), path=cwd)
    process.pid = transport.pid

    async def stop() -> None:
        if not process.running:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            await process.ended.addTimeout(10, reactor)
        except Exception:
            os.kill(process.pid, signal.SIGKILL)
            await process.ended

    test.addCleanup(stop)
    return process


async def waitFor(check: Any, what: str, process: Program, timeout: float = STARTUP) -> Any:
    """
    Poll C{check()} (a coroutine function answering a true value when ready) until it does;
    fail naming C{what} and the end of C{process}'s output if it exits or the time runs out.
    """
    waited = 0.0
    while True:
        if not process.running:
            raise AssertionError(f"{what}: {process.name} exited:\n{process.tail()}")
        try:
            result = await check()
        except Exception:
            result = None
        if result:
            return result
        if waited > timeout:
            raise AssertionError(f"{what}: not ready after {timeout} s:\n{process.tail()}")
        await deferLater(reactor, 0.05)
        waited += 0.05


class Etcd:
    """One etcd member of its own on loopback, with its own data directory."""

    def __init__(self, test: TestCase) -> None:
        self.test = test
        self.dataDir = os.path.abspath(test.mktemp())
        self.clientPort = freePort()
        self.peerPort = freePort()
        self.process: Program | None = None
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.clientPort}"

    def storeURL(self, prefix: str = "/kgw") -> str:
        """The C{--kernel-store} value of a gateway using this etcd."""
        return f"etcd://{self.address}{prefix}"

    async def start(self) -> Etcd:
        """Start etcd (again, over the same data) and wait until it answers as healthy."""
        client = f"http://{self.address}"
        peer = f"http://127.0.0.1:{self.peerPort}"
        self.process = spawnProgram(
            self.test,
            "etcd",
            [
                program("etcd", "etcd-server"),
                "--name=kgw-test",
                f"--data-dir={self.dataDir}",
                f"--listen-client-urls={client}",
                f"--advertise-client-urls={client}",
                f"--listen-peer-urls={peer}",
                f"--initial-advertise-peer-urls={peer}",
                f"--initial-cluster=kgw-test={peer}",
                "--logger=zap",
            ],
        )

        async def healthy() -> bool:
            response = await treq.get(f"{client}/health", pool=self.pool)
            return b'"true"' in await response.content()

        await waitFor(healthy, "etcd", self.process)
        return self

    async def stop(self) -> None:
        """Stop etcd by its pid; its data stays for a restart."""
        assert self.process is not None
        if self.process.running:
            os.kill(self.process.pid, signal.SIGTERM)
            await withTimeout(self.process.ended)


class HAProxy:
    """An HAProxy of its own, round robin over the given gateways, on a free loopback port."""

    def __init__(self, test: TestCase, backends: list[int], shipped: str | None = None) -> None:
        self.test = test
        self.port = freePort()
        self.backends = backends
        self.process: Program | None = None
        self.shipped = None if shipped is None else self.onTestPorts(shipped)

    def onTestPorts(self, text: str) -> str:
        """A configuration file (etc/haproxy/haproxy.cfg) bound and pointed at this test's ports."""
        lines = []
        servers = iter(self.backends)
        for line in text.splitlines():
            words = line.split()
            if words[:1] == ["bind"]:
                line = f"    bind 127.0.0.1:{self.port}"
            elif words[:1] == ["server"]:
                line = f"    server {words[1]} 127.0.0.1:{next(servers)}"
            lines.append(line)
        return "\n".join(lines) + "\n"

    def configuration(self) -> str:
        if self.shipped is not None:
            return self.shipped
        servers = "".join(
            f"    server kgw{n} 127.0.0.1:{port} check inter 500ms fall 2 rise 1\n"
            for n, port in enumerate(self.backends)
        )
        return (
            "global\n"
            "    maxconn 1000\n"
            "defaults\n"
            "    mode http\n"
            # A gateway that refuses connections (killed) is skipped at once, its request
            # sent to another.
            "    option redispatch\n"
            "    retries 3\n"
            "    timeout connect 5s\n"
            "    timeout client 1h\n"
            "    timeout server 1h\n"
            "    timeout tunnel 1h\n"
            "frontend kgw\n"
            f"    bind 127.0.0.1:{self.port}\n"
            "    default_backend gateways\n"
            "backend gateways\n"
            "    balance roundrobin\n"
            "    option httpchk GET /api\n" + servers
        )

    async def start(self) -> HAProxy:
        folder = os.path.abspath(self.test.mktemp())
        os.makedirs(folder)
        path = os.path.join(folder, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(self.configuration())
        # -db: stay in the foreground, so that the pid is HAProxy's own.
        self.process = spawnProgram(
            self.test, "haproxy", [program("haproxy", "haproxy"), "-db", "-f", path], cwd=folder
        )
        gateway = GatewayClient(self.test, self.port)

        async def answers() -> bool:
            code, _ = await gateway.request("GET", "api")
            return code == 200

        await waitFor(answers, "haproxy", self.process)
        return self


class Gateways:
    """
    kgw daemons (C{twistd -n --pidfile= kgw}) sharing one etcd and one runtime directory.

    Kernels outlive a killed gateway by design: every kernel a daemon started is noted before
    the daemon is reaped, and ended by its pid at the test's clean-up.
    """

    def __init__(self, test: TestCase, etcd: Etcd) -> None:
        self.test = test
        self.etcd = etcd
        self.runtime = os.path.abspath(test.mktemp())
        os.makedirs(self.runtime)
        self.kernelPids: set[int] = set()
        test.addCleanup(self.endKernels)

    def endKernels(self) -> None:
        for pid in self.kernelPids:
            if isAlive(pid):
                os.kill(pid, signal.SIGKILL)

    async def start(self, gatewayId: str, *options: str) -> tuple[Any, GatewayClient]:
        """Start one gateway; its process (C{pid}, C{ended}) and a client of it."""
        port = freePort()
        process = spawnTwistd(
            self.test,
            "-n",
            "--pidfile=",
            "kgw",
            f"--port={port}",
            "--port-retries=0",
            f"--kernel-store={self.etcd.storeURL()}",
            f"--gateway-id={gatewayId}",
            "--list-kernels=True",
            *options,
            env=dict(os.environ, JUPYTER_RUNTIME_DIR=self.runtime),
        )
        self.test.addCleanup(lambda: self.kernelPids.update(childProcesses(process.pid)))
        await withTimeout(process.listening, STARTUP)
        return process, GatewayClient(self.test, port)

    async def crash(self, process: Any) -> set[int]:
        """SIGKILL a gateway; the pids of the kernels it leaves behind."""
        kernels = childProcesses(process.pid)
        self.kernelPids |= kernels
        os.kill(process.pid, signal.SIGKILL)
        await withTimeout(process.ended)
        return kernels
