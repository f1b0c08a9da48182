"""The daemon as users run it: C{twistd kgw} in a process of its own."""

from __future__ import annotations

import os
import platform
import re
import shutil
import signal
import sys
import tempfile

from twisted.internet import protocol, reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SkipTest, TestCase

from tests.support import GatewayClient, childProcesses, isAlive, withTimeout

TWISTD = os.path.join(os.path.dirname(sys.executable), "twistd")


class Twistd(protocol.ProcessProtocol):
    """A C{twistd} process whose output is collected, with Deferreds for its milestones."""

    def __init__(self) -> None:
        self.output = b""
        self.listening: Deferred[int] = Deferred()
        self.ended: Deferred[int | None] = Deferred()
        self.signal: int | None = None

    def outReceived(self, data: bytes) -> None:
        self.output += data
        found = re.search(rb"Site starting on (\d+)", self.output)
        if found and not self.listening.called:
            self.listening.callback(int(found.group(1)))

    errReceived = outReceived

    def processExited(self, reason) -> None:
        # Exited, not ended: kernels that outlive twistd on purpose still hold its output pipes.
        self.transport.loseConnection()
        if not self.listening.called:
            self.listening.errback(RuntimeError(self.output.decode(errors="replace")))
            self.listening.addErrback(lambda _: None)  # nobody may be waiting for it
        # twistd ends by re-raising the signal that stopped it, as a daemon should.
        self.signal = reason.value.signal
        self.ended.callback(reason.value.exitCode)


def minorFaults(pid: int) -> int:
    """The pages process C{pid} has faulted in without reading a disk, from C{/proc}."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return int(stat[stat.rindex(b")") + 2 :].split()[7])


def spawnTwistd(test: TestCase, *args: str, env: dict[str, str] | None = None) -> Twistd:
    """Run C{twistd ARGS} from an empty directory; the test's clean-up kills it if still alive."""
    process = Twistd()
    cwd = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, cwd, True)
    environ = dict(os.environ if env is None else env)
    transport = reactor.spawnProcess(process, TWISTD, [TWISTD, *args], env=environ, path=cwd)

    def reap() -> Deferred[int | None] | None:
        if process.ended.called:
            return None
        os.kill(transport.pid, signal.SIGKILL)
        return process.ended

    test.addCleanup(reap)
    process.pid = transport.pid
    return process


class CommandLineTests(TestCase):
    """Usage of C{twistd kgw}."""

    timeout = 60

    async def test_helpListsOptions(self):
        """C{twistd kgw --help} lists every option with its environment variable."""
        process = spawnTwistd(self, "kgw", "--help")
        code = await withTimeout(process.ended)
        self.assertEqual(code, 0)
        for expected in (b"--port=", b"--ip=", b"--base-url=", b"KG_PORT", b"KG_MAX_KERNELS"):
            self.assertIn(expected, process.output)

    async def test_otherReactorRefused(self):
        """Choosing a reactor other than asyncio is a usage error saying why."""
        process = spawnTwistd(self, "--reactor=poll", "-n", "kgw")
        code = await withTimeout(process.ended)
        self.assertNotEqual(code, 0)
        self.assertIn(b"asyncio reactor", process.output)

    async def test_unknownOptionRefused(self):
        """An unknown option, in either spelling, is a usage error naming it."""
        for option, name in (("--nope=1", b"nope"), ("--KernelGatewayApp.nope=1", b"nope")):
            process = spawnTwistd(self, "-n", "kgw", option)
            code = await withTimeout(process.ended)
            self.assertNotEqual(code, 0)
            self.assertIn(name, process.output)

    async def test_badListenDescriptionRefused(self):
        """A --listen description that names no endpoint here ends start-up with one line."""
        for description, why in (("tpc:1", b"Unknown endpoint type"), ("systemd:index=0", b"")):
            process = spawnTwistd(self, "-n", "--pidfile=", "kgw", f"--listen={description}")
            code = await withTimeout(process.ended)
            self.assertEqual(code, 1)
            self.assertIn(f"cannot listen on {description!r}".encode(), process.output)
            self.assertIn(why, process.output)
            self.assertNotIn(b"Traceback", process.output)

    async def test_usageErrorIsShort(self):
        """A usage error prints the error and one hint to --help, not the whole option list."""
        for args, error in (
            (("kgw", "--bad"), b"twistd kgw: option --bad not recognized"),
            (("-n", "kgw", "--port=eighty"), b"twistd kgw: --port: expected an integer"),
            (("--reactor=poll", "kgw"), b"twistd kgw: kgw needs the asyncio reactor"),
        ):
            process = spawnTwistd(self, *args)
            code = await withTimeout(process.ended)
            self.assertEqual(code, 1, process.output)
            lines = process.output.splitlines()
            self.assertEqual(len(lines), 2, process.output)
            self.assertTrue(lines[0].startswith(error), process.output)
            self.assertEqual(lines[1], b"Run 'twistd kgw --help' for the options.")

    async def test_badValueRefused(self):
        """A value that does not parse is a usage error naming the option."""
        process = spawnTwistd(self, "-n", "kgw", "--port=eighty")
        code = await withTimeout(process.ended)
        self.assertNotEqual(code, 0)
        self.assertIn(b"--port", process.output)


class DaemonTests(TestCase):
    """A running daemon: start-up with no reactor flag, and shutdown on signals."""

    timeout = 120

    async def startDaemon(self, *args: str):
        runtime = os.path.abspath(self.mktemp())
        os.makedirs(runtime)
        env = dict(os.environ, JUPYTER_RUNTIME_DIR=runtime)
        process = spawnTwistd(
            self, "-n", "--pidfile=", "kgw", "--port=0", "--list-kernels=True", *args, env=env
        )
        port = await withTimeout(process.listening)
        return process, port, runtime

    async def test_startsWithAsyncioReactor(self):
        """C{twistd -n kgw} installs the asyncio reactor itself and serves the API."""
        process, port, _ = await self.startDaemon()
        self.assertIn(b"AsyncioSelectorReactor", process.output)
        code, body = await GatewayClient(self, port).request("GET", "api")
        self.assertEqual(code, 200)
        self.assertIn("version", body)
        os.kill(process.pid, signal.SIGTERM)
        await withTimeout(process.ended)
        self.assertEqual(process.signal, signal.SIGTERM, process.output)

    async def test_largeOutputsReuseMemory(self):
        """
        Relaying 8 MB outputs, the daemon reuses the memory of the last one (glibc's thresholds
        kept): the third faults in far fewer pages than the some 4,000 of each copy afresh.
        """
        if platform.libc_ver()[0] != "glibc":
            raise SkipTest("glibc only")
        process, port, _ = await self.startDaemon()
        gateway = GatewayClient(self, port)
        model = await gateway.startKernel()
        client = await gateway.connect(model["id"])
        await client.execute("text = 'x' * 8_000_000")
        faults = []
        for _ in range(3):
            before = minorFaults(process.pid)
            messages = await client.execute("display({'text/plain': text}, raw=True)")
            faults.append(minorFaults(process.pid) - before)
            [display] = [m for m in messages if m["header"]["msg_type"] == "display_data"]
            self.assertEqual(len(display["content"]["data"]["text/plain"]), 8_000_000)
        self.assertLess(faults[-1], 1000, faults)
        os.kill(process.pid, signal.SIGTERM)
        await withTimeout(process.ended)

    async def test_sigtermShutsKernelsDown(self):
        """On SIGTERM, websockets close with 1001, kernels end and their files go, within 10 s."""
        await self._stopWith(signal.SIGTERM)

    async def test_sigintShutsKernelsDown(self):
        """SIGINT stops the daemon as SIGTERM does."""
        await self._stopWith(signal.SIGINT)

    async def _stopWith(self, signum: int) -> None:
        process, port, runtime = await self.startDaemon()
        gateway = GatewayClient(self, port)
        model = await gateway.startKernel()
        client = await gateway.connect(model["id"])
        kernels = childProcesses(process.pid)
        self.assertEqual(len(kernels), 1)
        self.assertEqual(len([f for f in os.listdir(runtime) if f.startswith("kernel-")]), 1)
        os.kill(process.pid, signum)
        closeCode, _ = await withTimeout(client.closed)
        self.assertEqual(closeCode, 1001)
        await withTimeout(process.ended, 10)
        self.assertEqual(process.signal, signum)
        self.assertIn(b"Server Shut Down.", process.output)
        self.assertEqual([pid for pid in kernels if isAlive(pid)], [])
        self.assertEqual([f for f in os.listdir(runtime) if f.startswith("kernel-")], [])

    async def test_sigtermUnderLoad(self):
        """SIGTERM while 20 clients execute: all closed with 1001, all kernels gone, within 10 s."""
        process, port, runtime = await self.startDaemon()
        gateway = GatewayClient(self, port)
        models = [await gateway.startKernel() for _ in range(4)]
        clients = []
        for i in range(20):
            client = await gateway.connect(models[i % 4]["id"])
            client.send("execute_request", {"code": f"import time; print({i}); time.sleep(30)"})
            clients.append(client)
        kernels = childProcesses(process.pid)
        self.assertEqual(len(kernels), 4)
        os.kill(process.pid, signal.SIGTERM)
        await withTimeout(process.ended, 10)
        codes = [(await withTimeout(client.closed))[0] for client in clients]
        self.assertEqual(codes, [1001] * 20)
        self.assertEqual([pid for pid in kernels if isAlive(pid)], [])
        self.assertEqual([f for f in os.listdir(runtime) if f.startswith("kernel-")], [])
