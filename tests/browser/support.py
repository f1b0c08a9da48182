"""
What the browser tests share: whether they can run, Chromium's flags, gateways in processes of
their own, and a watch on every process a test starts.

The tests run in tox's C{browser} env, which sets C{KGW_BROWSER_TEST=1}, installs JupyterLab and
Playwright for Python, and puts Jupyter Kernel Gateway 3.0.1 in a venv of its own
(C{KGW_BROWSER_KG} names its C{jupyter-kernelgateway}). Playwright drives the system's Chromium
(C{/usr/bin/chromium}, or C{KGW_CHROMIUM}) and never downloads a browser of its own.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import shlex
import shutil
import signal
import socket
import sys
from collections.abc import Coroutine
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, TimeoutError
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import LoopingCall, deferLater
from twisted.trial.unittest import TestCase

import kgw
from tests.support import GatewayClient, withTimeout

CHROMIUM = os.environ.get("KGW_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# Milliseconds Playwright waits for one step: JupyterLab's first load is slow.
STEP_TIMEOUT = 90_000
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
# Where kgw's package is, so that a gateway process runs the kgw these tests import.
KGW_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(kgw.__file__)))
# Both gateways say where they listen in the same words.
AVAILABLE = re.compile(rb"is available at http://127\.0\.0\.1:(\d+)")


def required() -> bool:
    """
    Whether the browser tests must run: in tox's C{browser} env (C{KGW_BROWSER_TEST=1}) and in
    CI (C{CI=true}) a missing requirement fails them; elsewhere they are skipped.
    """
    flag = os.environ.get("KGW_BROWSER_TEST")
    return flag == "1" or (os.environ.get("CI") == "true" and flag != "0")


def skipUnlessRequired() -> str | None:
    if required():
        return None
    return "set KGW_BROWSER_TEST=1 to run the browser tests (tox -e browser does)"


def missing(kg: bool = False, chromium: str = CHROMIUM) -> str | None:
    """What the browser tests need and this machine lacks, said as how to get it; or None."""
    for module in ("jupyterlab", "playwright"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (tox -e browser installs it)"
    if not shutil.which(chromium):
        return f"no Chromium at {chromium} (apt-get install chromium, or set KGW_CHROMIUM)"
    if kg:
        found = os.environ.get("KGW_BROWSER_KG", "")
        if not (found and os.access(found, os.X_OK)):
            return (
                f"no Jupyter Kernel Gateway 3.0.1 at KGW_BROWSER_KG={found!r} (tox -e browser "
                "installs it in a venv of its own)"
            )
    return None


def onReactor(coroutine: Coroutine[Any, Any, Any]) -> Deferred[Any]:
    """Run an asyncio coroutine on the asyncio loop under Trial's reactor, as a Deferred."""
    return Deferred.fromFuture(asyncio.ensure_future(coroutine))


def _stat(pid: int) -> list[str] | None:
    """The fields of C{/proc/PID/stat} after the command name, or None if there is no such pid."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None


def commandLine(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(pid: int) -> set[int]:
    """The live processes below C{pid}: its children, theirs, and so on."""
    children: dict[int, set[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (fields := _stat(int(entry))) and fields[0] != "Z":
            children.setdefault(int(fields[1]), set()).add(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), set()) - found:
            found.add(child)
            todo.append(child)
    return found


class ProcessWatch:
    """
    Every process started below this one during a test: its gateways, their kernels, JupyterLab,
    Playwright's driver and Chromium's processes. L{check} fails the test if one of them is still
    alive at the end, after killing it by its pid.

    A process seen once is watched even if its parent dies and it is adopted elsewhere; a pid is
    known by its start time, so a pid reused by an unrelated process is not mistaken for it.
    """

    def __init__(self, test: TestCase, interval: float = 0.5) -> None:
        self.test = test
        self.before = descendants(os.getpid())
        self.seen: dict[int, tuple[str, str]] = {}
        self._loop = LoopingCall(self.look)
        self._loop.clock = reactor
        self._loop.start(interval)
        test.addCleanup(self._stop)

    def _stop(self) -> None:
        if self._loop.running:
            self._loop.stop()

    def look(self) -> None:
        for pid in descendants(os.getpid()) - self.before:
            fields = _stat(pid)
            if fields and pid not in self.seen:
                self.seen[pid] = (fields[19], commandLine(pid))

    def alive(self) -> dict[int, str]:
        found = {}
        for pid, (started, command) in self.seen.items():
            fields = _stat(pid)
            if fields and fields[0] != "Z" and fields[19] == started:
                found[pid] = command
        return found

    async def check(self, grace: float = 10.0) -> None:
        """Give the processes C{grace} seconds to end; kill the survivors and fail the test."""
        self.look()
        self._stop()
        deadline = reactor.seconds() + grace
        while (survivors := self.alive()) and reactor.seconds() < deadline:
            await deferLater(reactor, 0.2)
        for pid in survivors:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass  # it ended meanwhile
        deadline = reactor.seconds() + 5
        while self.alive() and reactor.seconds() < deadline:
            await deferLater(reactor, 0.05)
        self.test.assertEqual(survivors, {}, "processes outlived the test")


def freePort() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatewayProcess(ProcessProtocol):
    """A gateway (kgw or KG) in a process of its own: its output, its port and its end."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.output = b""
        self.listening: Deferred[int] = Deferred()
        self.ended: Deferred[None] = Deferred()
        self.pid = 0

    def outReceived(self, data: bytes) -> None:
        self.output += data
        found = AVAILABLE.search(self.output)
        if found and not self.listening.called:
            self.listening.callback(int(found.group(1)))

    errReceived = outReceived

    def processExited(self, reason) -> None:
        # Exited, not ended: a kernel left behind would hold the output pipes open.
        self.transport.loseConnection()
        if not self.listening.called:
            self.listening.errback(RuntimeError(f"{self.label} exited:\n{self.log()}"))
        if reason.check(ProcessDone, ProcessTerminated):
            self.ended.callback(None)
        else:
            self.ended.errback(reason)

    def log(self) -> str:
        return self.output.decode(errors="replace")


async def startGateway(test: TestCase, label: str, argv: list[str], token: str) -> GatewayClient:
    """
    Run a gateway with C{argv} from an empty home of its own (fresh Jupyter directories, no
    C{KG_*} variables) and wait until it listens. The test's clean-up stops it by its pid:
    SIGTERM, then SIGKILL after L{STOP_TIMEOUT} seconds. Returns a client of its API that sends
    C{token}, with the process as its C{process}.
    """
    home = os.path.abspath(test.mktemp())
    directories = {name: os.path.join(home, name) for name in ("config", "data", "runtime")}
    for path in directories.values():
        os.makedirs(path)
    env = {name: value for name, value in os.environ.items() if name in ("PATH", "LANG")}
    env.update(
        HOME=home,
        JUPYTER_CONFIG_DIR=directories["config"],
        JUPYTER_DATA_DIR=directories["data"],
        JUPYTER_RUNTIME_DIR=directories["runtime"],
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONPATH=KGW_ROOT,
        PYTHONWARNINGS="ignore::DeprecationWarning",
    )
    process = GatewayProcess(label)
    transport = reactor.spawnProcess(process, argv[0], argv, env=env, path=home)
    process.pid = transport.pid

    async def stop() -> None:
        if process.ended.called:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            await withTimeout(process.ended, STOP_TIMEOUT)
        except TimeoutError:
            os.kill(process.pid, signal.SIGKILL)
            await process.ended

    test.addCleanup(stop)
    port = await withTimeout(process.listening, START_TIMEOUT)
    client = TokenClient(test, port, token)
    client.process = process
    return client


async def startKgw(test: TestCase, token: str) -> GatewayClient:
    """
    This tree's kgw, as its users start it: C{python -m kgw}, with the options in
    C{KGW_BROWSER_KGW_OPTIONS} (say C{--warm-kernels=1}) added.
    """
    argv = [sys.executable, "-m", "kgw", "--ip=127.0.0.1", "--port=0", "--port-retries=0"]
    argv += ["--list-kernels=True", f"--auth-token={token}"]
    argv += shlex.split(os.environ.get("KGW_BROWSER_KGW_OPTIONS", ""))
    return await startGateway(test, "kgw", argv, token)


async def startKG(test: TestCase, token: str) -> GatewayClient:
    """Jupyter Kernel Gateway 3.0.1, from its own venv (C{KGW_BROWSER_KG})."""
    argv = [
        os.environ["KGW_BROWSER_KG"],
        "--KernelGatewayApp.ip=127.0.0.1",
        f"--KernelGatewayApp.port={freePort()}",
        "--KernelGatewayApp.port_retries=0",
        f"--KernelGatewayApp.auth_token={token}",
        "--JupyterWebsocketPersonality.list_kernels=True",
    ]
    return await startGateway(test, "KG", argv, token)


class TokenClient(GatewayClient):
    """A gateway's API, with its token on every request."""

    def __init__(self, test: TestCase, port: int, token: str) -> None:
        super().__init__(test, port)
        self.token = token
        self.process: GatewayProcess | None = None

    async def request(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        kw.setdefault("headers", {"Authorization": f"token {self.token}"})
        return await super().request(method, path, body, **kw)
