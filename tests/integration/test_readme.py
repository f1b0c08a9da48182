"""
The README as a newcomer pastes it: the set-up command's gateway and every command of the quick
start, taken from the README's own text and run in a sandbox.

The set-up command installs kgw into C{~/.kgw} from the package index, which a test cannot do.
The sandbox stands in for its first two steps: C{HOME} is a temporary directory whose C{.kgw} is a
virtualenv of this test's Python seeing this test's packages, with the console scripts the
install would have written (C{kgw}, C{twistd}, C{pip}; C{jupyter} when JupyterLab is installed).
Everything else is the README's text: the set-up command's last step starts the gateway, each
block marked C{<!-- quickstart -->} runs in C{bash -e} from a directory laid out as the clone,
a C{gateway} block replaces the running gateway (stopped with SIGINT, as Ctrl-C does), and the
C{jupyterlab} block starts JupyterLab on it. Only the port changes: C{127.0.0.1:8888} becomes a
free port, given to the gateway as C{KG_PORT}, so that the test never meets another gateway.
C{PATH} holds none of C{twistd}, C{kgw} and C{jupyter}, so a bare one in the README fails, and
C{pip} may not reach an index.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import venv
from typing import Any

from twisted.internet import reactor
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.task import deferLater
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

import kgw
from tests.integration.test_daemon import Twistd
from tests.support import childProcesses, isAlive, withTimeout

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
README = os.path.join(ROOT, "README.md")
CI = os.path.join(ROOT, ".ci", "run")
TOKEN = "SECRET"

BLOCK = re.compile(r"<!-- quickstart(?:: ([\w-]+))? -->\n```sh\n(.*?)```", re.S)

# The console scripts that `pip install .` (and `pip install jupyterlab`) write into ~/.kgw/bin.
SCRIPTS = {
    "kgw": ("kgw.__main__", "main"),
    "twistd": ("twisted.scripts.twistd", "run"),
    "pip": ("pip._internal.cli.main", "main"),
    "jupyter": ("jupyter_core.command", "main"),
    "jupyter-lab": ("jupyterlab.labapp", "main"),
}


def readme() -> str:
    with open(README, encoding="utf-8") as f:
        return f.read()


def quickstartBlocks(text: str) -> list[tuple[str, str]]:
    """The marked shell blocks of the README, in order, as (kind, text); kind "run" by default."""
    return [(kind or "run", body) for kind, body in BLOCK.findall(text)]


def freePort() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def makeVirtualenv(path: str) -> None:
    """A virtualenv at C{path} that imports what this process imports, with kgw's scripts."""
    venv.EnvBuilder(with_pip=False).create(path)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    sitePackages = os.path.join(path, "lib", version, "site-packages")
    # The tree under test first, then every directory this process imports from.
    paths = [os.path.dirname(os.path.dirname(os.path.abspath(kgw.__file__)))]
    paths += [p for p in sys.path if os.path.isabs(p) and os.path.isdir(p) and p not in paths]
    with open(os.path.join(sitePackages, "kgw-test-paths.pth"), "w") as f:
        f.write("\n".join(paths) + "\n")
    python = os.path.join(path, "bin", "python")
    for name, (module, function) in SCRIPTS.items():
        if not installed(module.split(".")[0]):
            continue
        script = os.path.join(path, "bin", name)
        with open(script, "w") as f:
            f.write(
                f"#!{python}\nimport sys\nfrom {module} import {function}\nsys.exit({function}())\n"
            )
        os.chmod(script, 0o755)


def searchPath() -> str:
    """C{PATH} without the directories that hold a C{twistd}, C{kgw} or C{jupyter}."""
    kept = []
    for directory in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep):
        names = ("twistd", "kgw", "jupyter")
        if not any(os.access(os.path.join(directory, n), os.X_OK) for n in names):
            kept.append(directory)
    return os.pathsep.join(kept)


class Sandbox:
    """A home with C{~/.kgw}, a directory laid out as the clone, and the environment to run in."""

    def __init__(self, test: TestCase) -> None:
        self.test = test
        self.home = tempfile.mkdtemp(prefix="kgw-readme-home-")
        test.addCleanup(shutil.rmtree, self.home, True)
        makeVirtualenv(os.path.join(self.home, ".kgw"))
        self.clone = tempfile.mkdtemp(prefix="kgw-readme-clone-")
        test.addCleanup(shutil.rmtree, self.clone, True)
        for name in os.listdir(ROOT):
            if not name.startswith("."):
                os.symlink(os.path.join(ROOT, name), os.path.join(self.clone, name))
        self.port = freePort()
        self.labPort = freePort()
        runtime = os.path.join(self.home, "runtime")
        os.makedirs(runtime)
        if os.geteuid() == 0:
            # Jupyter refuses to serve as root, which a newcomer is not, but a CI container may be.
            os.makedirs(os.path.join(self.home, ".jupyter"))
            config = os.path.join(self.home, ".jupyter", "jupyter_server_config.json")
            with open(config, "w") as f:
                json.dump({"ServerApp": {"allow_root": True}}, f)
        environ = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith("KG_")
        }
        self.env = dict(
            environ,
            HOME=self.home,
            PATH=searchPath(),
            JUPYTER_RUNTIME_DIR=runtime,
            KG_PORT=str(self.port),
            KG_PORT_RETRIES="0",
            # pip finds what is installed or fails: it never reaches an index.
            PIP_NO_INDEX="1",
            PIP_DISABLE_PIP_VERSION_CHECK="1",
            # JupyterLab opens "the browser": here, a program that does nothing.
            BROWSER="true",
            JUPYTER_TOKEN="lab-token",
        )

    def adapt(self, command: str) -> str:
        """The README's command, with the sandbox's ports in place of 8888 and 8889."""
        command = command.replace("127.0.0.1:8888", f"127.0.0.1:{self.port}")
        return command.replace("--port=8889", f"--port={self.labPort}")

    def spawn(self, command: str, process: Twistd | None = None) -> Twistd:
        """Start a long-running command of the README in its own process (C{exec}: one pid)."""
        process = Twistd() if process is None else process
        shell = shutil.which("sh", path=self.env["PATH"]) or "/bin/sh"
        transport = reactor.spawnProcess(
            process, shell, [shell, "-c", "exec " + self.adapt(command)], self.env, self.clone
        )
        process.pid = transport.pid

        def reap() -> Any:
            if process.ended.called:
                return None
            # A test that failed midway: the process and its kernels, each by its pid.
            for pid in [process.pid, *childProcesses(process.pid)]:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass  # exited, and its end is being reported
            return process.ended

        self.test.addCleanup(reap)
        return process

    async def run(self, block: str) -> str:
        """Run a block of commands as pasted into bash, each of which must succeed."""
        bash = shutil.which("bash", path=self.env["PATH"]) or "/bin/bash"
        out, err, code = await withTimeout(
            getProcessOutputAndValue(
                bash,
                ["-e", "-o", "pipefail", "-c", self.adapt(block)],
                env=self.env,
                path=self.clone,
                reactor=reactor,
            ),
            60,
        )
        output = (out + err).decode(errors="replace")
        self.test.assertEqual(code, 0, f"{block}\n{output}")
        self.test.assertNotIn('"reason"', output, f"{block}\n{output}")
        return output


class QuickStartTests(TestCase):
    """The README's set-up gateway and quick start, run from the README's text."""

    timeout = 180

    async def startGateway(self, sandbox: Sandbox, command: str) -> Twistd:
        process = sandbox.spawn(command)
        port = await withTimeout(process.listening, 60)
        self.assertEqual(port, sandbox.port, process.output)
        self.assertNoPidFile(sandbox, command)
        return process

    async def stopGateway(self, sandbox: Sandbox, process: Twistd) -> None:
        """Ctrl-C: the gateway exits, with no kernel left behind and no pid file."""
        kernels = childProcesses(process.pid)
        os.kill(process.pid, signal.SIGINT)
        await withTimeout(process.ended, 60)
        survivors = {pid for pid in kernels if isAlive(pid)}
        for pid in survivors:
            os.kill(pid, signal.SIGKILL)
        self.assertEqual(survivors, set(), process.output)
        self.assertNoPidFile(sandbox, "")

    def assertNoPidFile(self, sandbox: Sandbox, command: str) -> None:
        # A twistd.pid would stop the next gateway started in this directory.
        pidfile = os.path.join(sandbox.clone, "twistd.pid")
        self.assertFalse(os.path.exists(pidfile), f"{command!r} left a twistd.pid behind")

    async def test_quickStartAsPasted(self):
        """
        The set-up command's gateway and every quick start command work as the README writes
        them, from a virtualenv in ~/.kgw, with no twistd, kgw or jupyter on PATH.
        """
        blocks = quickstartBlocks(readme())
        self.assertEqual(blocks[0][0], "set-up")
        steps = blocks[0][1].strip().split(" && ")
        # The two steps the sandbox stands in for; the rest starts the gateway.
        self.assertEqual(steps[:2], ["python3 -m venv ~/.kgw", "~/.kgw/bin/pip install ."])
        sandbox = Sandbox(self)
        gateway = await self.startGateway(sandbox, " && ".join(steps[2:]))
        lab = installed("jupyterlab")
        outputs = []
        for kind, block in blocks[1:]:
            if kind == "gateway":
                await self.stopGateway(sandbox, gateway)
                gateway = await self.startGateway(sandbox, block.strip())
            elif kind == "jupyterlab":
                if lab:
                    await self.checkJupyterLab(sandbox, block.strip())
            elif "jupyterlab" not in block or lab:
                outputs.append(await sandbox.run(block))
        await self.stopGateway(sandbox, gateway)
        text = "".join(outputs)
        self.assertIn('"python3"', text)  # the kernelspecs
        self.assertIn("Hello world!", text)  # the example client's output
        self.assertIn("204", text)  # a kernel shut down by hand
        if not lab:
            raise SkipTest("JupyterLab is not installed: its quick start commands did not run")

    async def checkJupyterLab(self, sandbox: Sandbox, command: str) -> None:
        """JupyterLab started by the README's command starts its kernels on the gateway."""
        import treq
        from twisted.web.client import HTTPConnectionPool

        process = sandbox.spawn(command, JupyterLab(sandbox.labPort))
        await withTimeout(process.listening, 120)
        pool = HTTPConnectionPool(reactor, persistent=False)

        async def call(method: str, url: str, **kw: Any) -> tuple[int, Any]:
            response = await withTimeout(treq.request(method, url, pool=pool, **kw), 60)
            content = await treq.content(response)
            return response.code, json.loads(content) if content else None

        lab = f"http://127.0.0.1:{sandbox.labPort}/api"
        token = {"Authorization": "token lab-token"}
        # JupyterLab prints its URL before its event loop binds the port: wait for it.
        deadline = reactor.seconds() + 60
        while True:
            try:
                code, specs = await call("GET", f"{lab}/kernelspecs", headers=token)
                break
            except ConnectionRefusedError:
                if reactor.seconds() > deadline:
                    raise
                await deferLater(reactor, 0.1)
        self.assertEqual(code, 200, specs)
        self.assertIn("python3", specs["kernelspecs"])
        code, kernel = await call("POST", f"{lab}/kernels", headers=token, json={"name": "python3"})
        self.assertEqual(code, 201, kernel)
        gateway = f"http://127.0.0.1:{sandbox.port}/api/kernels"
        code, kernels = await call("GET", gateway, headers={"Authorization": f"token {TOKEN}"})
        self.assertEqual(code, 200, kernels)
        self.assertIn(kernel["id"], [k["id"] for k in kernels])
        code, _ = await call("DELETE", f"{lab}/kernels/{kernel['id']}", headers=token)
        self.assertEqual(code, 204)
        os.kill(process.pid, signal.SIGTERM)
        await withTimeout(process.ended, 60)


class JupyterLab(Twistd):
    """A C{jupyter lab} process; C{listening} fires when it says it serves on C{port}."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.served = re.compile(rb"http://(?:127\.0\.0\.1|localhost):%d/lab" % port)

    def outReceived(self, data: bytes) -> None:
        self.output += data
        if not self.listening.called and self.served.search(self.output):
            self.listening.callback(None)

    errReceived = outReceived


class SetUpTests(TestCase):
    """The README's commands that the quick start does not run."""

    def test_testCommandIsCIs(self):
        """The README's test command is the one .ci/run runs."""
        text = readme()
        [command] = re.findall(r"^python3 -m venv \.venv && .*$", text, re.M)
        with open(CI, encoding="utf-8") as f:
            ci = f.read()
        [run] = re.findall(r"^# The README's test command:\n(.*?) 2>&1 \| tee", ci, re.M)
        # CI's only changes: pip is quiet, and the output is logged.
        self.assertEqual(run.replace("pip install -q ", "pip install "), command)

    def test_noBareCommands(self):
        """No shell block runs twistd, kgw, jupyter, pip or python bare, or leaves a twistd.pid."""
        for block in re.findall(r"```sh\n(.*?)```", readme(), re.S):
            for line in block.splitlines():
                words = line.split()
                while words and re.match(r"^\w+=", words[0]):
                    words.pop(0)  # VARIABLE=value before the command
                if not words or words[0].startswith("#"):
                    continue
                self.assertNotIn(words[0], ("twistd", "jupyter", "kgw", "pip", "python"), line)
                if "twistd" in words[0]:
                    self.assertIn("--pidfile=", words, line)
