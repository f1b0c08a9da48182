"""
etc/node_client_example/client.js, the @jupyterlab/services client, run by Node against a gateway.

The example's dependencies are installed once per run with C{npm ci} from its lock file, into a
temporary copy of the example; the tests are skipped when Node or npm is missing, or when npm
cannot reach its registry.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.trial.unittest import SkipTest, TestCase

from kgw.api import wire
from kgw.api.websocket import ChannelsProtocol
from tests.support import RunningGateway

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "etc" / "node_client_example"
TOKEN = "node-client-test-token"
# Longer than the client's own 60 second limit, so a client that does not stop is a failure here.
CLIENT_TIMEOUT = 90.0
INSTALL_TIMEOUT = 300.0
# What npm says when it cannot reach the registry.
OFFLINE = re.compile(
    r"ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|ENETUNREACH|EHOSTUNREACH|"
    r"network request to .* failed|request to .* failed"
)


class Output(ProcessProtocol):
    """Collects a process's output and fires C{ended} with its exit code once it is reaped."""

    def __init__(self) -> None:
        self.out = b""
        self.err = b""
        self.ended: Deferred[int | None] = Deferred()

    def outReceived(self, data: bytes) -> None:
        self.out += data

    def errReceived(self, data: bytes) -> None:
        self.err += data

    def processEnded(self, reason) -> None:
        if reason.check(ProcessDone, ProcessTerminated):
            self.ended.callback(reason.value.exitCode)
        else:
            self.ended.errback(reason)

    def text(self) -> str:
        out, err = self.out.decode(errors="replace"), self.err.decode(errors="replace")
        return f"stdout:\n{out}\nstderr:\n{err}"


async def run(
    test: TestCase, argv: list[str], env: dict[str, str], cwd: Path, timeout: float
) -> tuple[int | None, Output]:
    """
    Run C{argv}; return its exit code and output.

    When it runs longer than C{timeout}, or is still running when the test ends, it is killed by
    its pid, and waited for.
    """
    output = Output()
    process = reactor.spawnProcess(output, argv[0], argv, env=env, path=str(cwd))
    pid = process.pid

    def kill() -> Deferred[int | None] | None:
        if output.ended.called:
            return None
        os.kill(pid, signal.SIGKILL)
        return output.ended

    test.addCleanup(kill)
    timer = reactor.callLater(timeout, kill)
    try:
        code = await output.ended
    finally:
        if timer.active():
            timer.cancel()
    if timer.called:
        test.fail(f"{argv[:2]} ran longer than {timeout} seconds and was killed\n{output.text()}")
    return code, output


def baseEnvironment() -> dict[str, str]:
    """The variables Node and npm need: where they are, npm's settings and any proxy."""
    return {
        name: value
        for name, value in os.environ.items()
        if name in ("PATH", "HOME", "LANG")
        or name.lower() in ("http_proxy", "https_proxy", "no_proxy")
        or name.lower().startswith("npm_config_")
    }


class NodeClientExampleTests(TestCase):
    """etc/node_client_example/client.js against a gateway that requires a token."""

    timeout = INSTALL_TIMEOUT + 2 * CLIENT_TIMEOUT

    # The example installed by npm ci, shared by the tests of one run; or why it could not be.
    # It lies in the first test's temporary directory, which Trial removes at its next run.
    installed: Path | None = None
    skipReason: str | None = None

    async def install(self) -> Path:
        """The example with its dependencies installed, or SkipTest saying why it cannot be."""
        cls = type(self)
        if cls.skipReason is not None:
            raise SkipTest(cls.skipReason)
        if cls.installed is not None:
            return cls.installed
        for tool in ("node", "npm"):
            if shutil.which(tool) is None:
                cls.skipReason = f"{tool} is not on PATH"
                raise SkipTest(cls.skipReason)
        copy = Path(self.mktemp()).resolve()
        shutil.copytree(EXAMPLE, copy, ignore=shutil.ignore_patterns("node_modules"))
        code, output = await run(
            self,
            [shutil.which("npm"), "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
            baseEnvironment(),
            copy,
            INSTALL_TIMEOUT,
        )
        if code != 0:
            if OFFLINE.search(output.err.decode(errors="replace")):
                cls.skipReason = "npm ci cannot reach the npm registry"
                raise SkipTest(f"{cls.skipReason}\n{output.text()}")
            self.fail(f"npm ci failed with status {code}\n{output.text()}")
        cls.installed = copy
        return copy

    async def setUp(self):
        self.example = await self.install()
        self.gateway = await RunningGateway(self, auth_token=TOKEN).start()
        # What the gateway saw: the kernel id and wire protocol of every websocket it opened.
        self.opened: list[tuple[str, str]] = []
        original = ChannelsProtocol.onOpen

        def onOpen(protocol: ChannelsProtocol) -> None:
            self.opened.append((protocol.kernel.id, "v1" if protocol.v1 else "legacy"))
            original(protocol)

        self.patch(ChannelsProtocol, "onOpen", onOpen)

    async def runClient(self, **variables: str) -> tuple[int | None, str, Output]:
        """Run the client against this test's gateway; return its exit code, stdout, output."""
        env = baseEnvironment()
        env.update(GATEWAY_HOST=self.gateway.address, KG_AUTH_TOKEN=TOKEN)
        env.update(variables)
        node = shutil.which("node")
        code, output = await run(self, [node, "client.js"], env, self.example, CLIENT_TIMEOUT)
        return code, output.out.decode(errors="replace"), output

    async def assertHelloWorld(self, protocol: str, **variables: str) -> None:
        code, out, output = await self.runClient(**variables)
        self.assertEqual(code, 0, output.text())
        lines = out.splitlines()
        self.assertIn("Hello world!", lines)
        self.assertIn("Received message type: stream", lines)
        self.assertIn("Kernelspecs: default=python3 available=python3", lines)
        kernelId = re.search(r"^Started kernel (\S+) ", out, re.M).group(1)
        # The gateway opened one websocket for that kernel, in the expected protocol, and the
        # client saw the same protocol accepted.
        self.assertEqual(self.opened, [(kernelId, protocol)])
        accepted = wire.V1_PROTOCOL if protocol == "v1" else "legacy"
        self.assertIn(f"Wire protocol: {accepted}", lines)
        # The client shut its kernel down.
        code, kernels = await self.gateway.request(
            "GET", "api/kernels", headers={"Authorization": f"token {TOKEN}"}
        )
        self.assertEqual((code, kernels), (200, []))

    async def test_v1ByDefault(self):
        """By default the client speaks v1.kernel.websocket.jupyter.org and prints Hello world!."""
        await self.assertHelloWorld("v1")

    async def test_legacyOnRequest(self):
        """With KGW_PROTOCOL=legacy the client speaks the legacy JSON protocol, to the same end."""
        await self.assertHelloWorld("legacy", KGW_PROTOCOL="legacy")

    async def test_wrongToken(self):
        """A token the gateway refuses makes the client exit 1 with the gateway's message."""
        code, _, output = await self.runClient(KG_AUTH_TOKEN="wrong")
        self.assertEqual(code, 1, output.text())
        self.assertIn(b"error: ", output.err)
        self.assertIn(b"token", output.err)
        self.assertEqual(self.opened, [])
