"""
How kgw is deployed: the systemd units of C{etc/systemd} (and socket activation as they use it),
the image of C{etc/docker/Dockerfile}, and the C{kgw} command (C{python -m kgw}).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import os
import shlex
import shutil
import signal
import socket
import sys
import tempfile

from twisted.internet import reactor
from twisted.internet.utils import getProcessOutputAndValue
from twisted.trial.unittest import SkipTest, TestCase

from kgw.config import Config, envVar
from tests.integration.test_daemon import TWISTD, Twistd
from tests.support import GatewayClient, RunningGateway, withTimeout

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SERVICE = os.path.join(ROOT, "etc", "systemd", "kgw.service")
SOCKET = os.path.join(ROOT, "etc", "systemd", "kgw.socket")
DOCKERFILE = os.path.join(ROOT, "etc", "docker", "Dockerfile")
DOCKERIGNORE = os.path.join(ROOT, ".dockerignore")

SYSTEMD_LISTEN = "--listen=systemd:domain=INET:index=0"
# Variables the units and the image set for options kgw does not have yet.
FUTURE_VARIABLES: set[str] = set()

# systemd sets LISTEN_PID to the pid of the process it execs; a shell that execs twistd in its
# own place can do the same, since it knows its pid and exec keeps it.
LISTEN_PID_SHIM = 'LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@"'


def parseUnit(path: str) -> dict[str, list[tuple[str, str]]]:
    """
    The settings of a systemd unit file, by section, in order: C{Key=} lines may repeat, so a
    section is a list of C{(key, value)} pairs. Lines ending in a backslash continue.

    @raise ValueError: for a line that is neither a section header, a setting nor a comment.
    """
    with open(path) as f:
        text = f.read().replace("\\\n", " ")
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        if current is None or not sep or not key.strip():
            raise ValueError(f"{path}:{number}: not a setting: {raw!r}")
        current.append((key.strip(), value.strip()))
    return sections


def settings(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> list[str]:
    """Every value given to C{key} in C{section}, in order."""
    return [value for k, value in unit.get(section, []) if k == key]


def setting(unit: dict[str, list[tuple[str, str]]], section: str, key: str) -> str | None:
    """The value of a single-valued setting: the last one given, as systemd takes it."""
    values = settings(unit, section, key)
    return values[-1] if values else None


def environment(assignments: list[str]) -> dict[str, str]:
    """The variables of C{Environment=} lines (or an C{ENV} instruction): C{A=1 "B=2 3"}."""
    variables = {}
    for assignment in assignments:
        for word in shlex.split(assignment):
            name, _, value = word.partition("=")
            variables[name] = value
    return variables


def dockerInstructions(path: str) -> list[tuple[str, str]]:
    """
    The instructions of a Dockerfile as C{(KEYWORD, arguments)}, continuation lines joined and
    comments left out.
    """
    instructions = []
    pending = ""
    with open(path) as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.endswith("\\"):
                pending += line[:-1].strip() + " "
                continue
            keyword, _, arguments = (pending + line).partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
            pending = ""
    return instructions


def run(executable: str, *args: str, env: dict[str, str] | None = None, path: str | None = None):
    """Run a command to its end; fire with its output, errors and exit status."""
    return withTimeout(
        getProcessOutputAndValue(
            executable, args, env=os.environ if env is None else env, path=path, reactor=reactor
        ),
        60,
    )


def spawn(test: TestCase, executable: str, args: list[str], env: dict[str, str], **kw) -> Twistd:
    """
    Start a process from an empty directory; the test's clean-up kills it by its pid if it is
    still alive.
    """
    process = Twistd()
    cwd = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, cwd, True)
    transport = reactor.spawnProcess(process, executable, args, env=env, path=cwd, **kw)
    process.pid = transport.pid
    process.cwd = cwd

    def reap():
        if process.ended.called:
            return None
        os.kill(transport.pid, signal.SIGKILL)
        return process.ended

    test.addCleanup(reap)
    return process


async def stop(test: TestCase, process: Twistd) -> None:
    """End a daemon with SIGTERM, as systemd and docker stop it, and check that it obeyed."""
    os.kill(process.pid, signal.SIGTERM)
    await withTimeout(process.ended, 20)
    test.assertEqual(process.signal, signal.SIGTERM, process.output.decode(errors="replace"))
    test.assertIn(b"Server Shut Down.", process.output)


class UnitFileTests(TestCase):
    """The systemd units: what they run, how they are hardened, and that systemd accepts them."""

    def setUp(self) -> None:
        self.service = parseUnit(SERVICE)
        self.socket = parseUnit(SOCKET)

    def test_sections(self):
        """The service and the socket have the sections of their unit types."""
        self.assertEqual(set(self.service), {"Unit", "Service", "Install"})
        self.assertEqual(set(self.socket), {"Unit", "Socket", "Install"})

    def test_serviceRunsTwistdInForeground(self):
        """The service runs twistd kgw in the foreground, without a pid file, on the socket."""
        commands = settings(self.service, "Service", "ExecStart")
        self.assertEqual(len(commands), 1)
        argv = shlex.split(commands[0])
        self.assertTrue(os.path.isabs(argv[0]), argv[0])
        self.assertEqual(os.path.basename(argv[0]), "twistd")
        self.assertEqual(argv[1:], ["--nodaemon", "--pidfile=", "kgw", SYSTEMD_LISTEN])
        self.assertIn(setting(self.service, "Service", "Type"), ("exec", "simple"))

    def test_serviceHardening(self):
        """The service runs as its own user, sandboxed, with state and runtime directories."""
        expected = {
            "User": "kgw",
            "DynamicUser": "yes",
            "NoNewPrivileges": "yes",
            "ProtectSystem": "strict",
            "ProtectHome": "yes",
            "PrivateTmp": "yes",
            "StateDirectory": "kgw",
            "RuntimeDirectory": "kgw",
            "CapabilityBoundingSet": "",
        }
        found = {key: setting(self.service, "Service", key) for key in expected}
        self.assertEqual(found, expected)
        variables = environment(settings(self.service, "Service", "Environment"))
        self.assertEqual(variables["HOME"], "/var/lib/kgw")
        self.assertEqual(variables["JUPYTER_RUNTIME_DIR"], "/run/kgw")

    def test_serviceStopsKernelsItself(self):
        """
        SIGTERM goes to kgw alone, which shuts its kernels down, and systemd kills what is left
        within a bounded time; the service is restarted when it fails.
        """
        self.assertEqual(setting(self.service, "Service", "KillMode"), "process")
        self.assertIn(setting(self.service, "Service", "KillSignal"), (None, "SIGTERM"))
        timeout = setting(self.service, "Service", "TimeoutStopSec")
        self.assertIsNotNone(timeout)
        self.assertRegex(timeout, r"^\d+s?$")
        # jupyter_client waits 5 s for a kernel to stop before it kills it.
        self.assertGreater(int(timeout.rstrip("s")), 5)
        self.assertEqual(setting(self.service, "Service", "Restart"), "on-failure")

    def test_serviceVariablesAreOptions(self):
        """Every KG_* variable the service sets is the variable of one of kgw's options."""
        variables = environment(settings(self.service, "Service", "Environment"))
        names = {name for name in variables if name.startswith("KG_")}
        self.assertTrue(names)
        known = {envVar(f) for f in Config.options()} | FUTURE_VARIABLES
        self.assertEqual(names - known, set())

    def test_socketMatchesService(self):
        """
        The socket activates the service, which adopts it with the address family it has; it
        starts with the system's sockets.
        """
        self.assertIn(setting(self.socket, "Socket", "Service"), (None, "kgw.service"))
        self.assertIn(setting(self.socket, "Socket", "Accept"), (None, "no", "false"))
        listens = settings(self.socket, "Socket", "ListenStream")
        self.assertEqual(listens, ["127.0.0.1:8888"])
        host, _, port = listens[0].rpartition(":")
        self.assertEqual(ipaddress.ip_address(host).version, 4)
        self.assertIn("domain=INET:", SYSTEMD_LISTEN)
        self.assertEqual(int(port), 8888)
        self.assertEqual(setting(self.socket, "Install", "WantedBy"), "sockets.target")

    def installed(self) -> str:
        """
        A directory holding both units, with the service's twistd replaced by this
        environment's, since systemd checks that the command exists.
        """
        directory = self.mktemp()
        os.makedirs(directory)
        twistd = shlex.split(setting(self.service, "Service", "ExecStart") or "")[0]
        with open(SERVICE) as f:
            text = f.read()
        with open(os.path.join(directory, "kgw.service"), "w") as f:
            f.write(text.replace(twistd, TWISTD))
        shutil.copy(SOCKET, os.path.join(directory, "kgw.socket"))
        return directory

    async def test_systemdVerifies(self):
        """systemd-analyze verify finds nothing wrong with either unit, not even a warning."""
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise SkipTest("systemd-analyze is not on PATH")
        directory = self.installed()
        units = [os.path.join(directory, name) for name in ("kgw.socket", "kgw.service")]
        out, err, code = await run(analyze, "verify", "--man=no", *units)
        output = (out + err).decode(errors="replace")
        self.assertEqual(code, 0, output)
        # Unknown keys and bad values are warnings that leave the status 0.
        self.assertEqual([line for line in output.splitlines() if "kgw." in line], [], output)

    async def test_systemdSecurityExposure(self):
        """systemd-analyze security rates the service's sandbox at 3.0 or better (0 is best)."""
        analyze = shutil.which("systemd-analyze")
        if analyze is None:
            raise SkipTest("systemd-analyze is not on PATH")
        service = os.path.join(self.installed(), "kgw.service")
        out, err, code = await run(analyze, "security", "--offline=yes", "--threshold=30", service)
        output = (out + err).decode(errors="replace")
        if code != 0 and "Overall exposure level" not in output:
            raise SkipTest(f"this systemd-analyze cannot rate a unit file offline: {output}")
        self.assertEqual(code, 0, output)


class SocketActivationTests(TestCase):
    """kgw started as systemd starts the socket-activated service."""

    timeout = 60

    async def test_servesOnInheritedSocket(self):
        """
        Given a listening socket as file descriptor 3 and LISTEN_* variables naming it, kgw
        serves the API on that socket, and stops on SIGTERM.
        """
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(50)
        port = listener.getsockname()[1]
        runtime = os.path.abspath(self.mktemp())
        os.makedirs(runtime)
        # LISTEN_FDNAMES as systemd 227 and later set it: Twisted ignores the descriptors without.
        env = dict(os.environ, LISTEN_FDS="1", LISTEN_FDNAMES="kgw.socket")
        env.update(JUPYTER_RUNTIME_DIR=runtime)
        shell = shutil.which("sh") or "/bin/sh"
        args = [shell, "-c", LISTEN_PID_SHIM, TWISTD, "-n", "--pidfile=", "kgw", SYSTEMD_LISTEN]
        process = spawn(
            self, shell, args, env, childFDs={0: "w", 1: "r", 2: "r", 3: listener.fileno()}
        )
        # Only the daemon holds the socket now.
        listener.close()
        self.assertEqual(await withTimeout(process.listening), port)
        code, body = await GatewayClient(self, port).request("GET", "api")
        self.assertEqual(code, 200)
        self.assertIn("version", body)
        await stop(self, process)
        self.assertIn(
            f"kgw is listening on systemd:domain=INET:index=0 (127.0.0.1:{port})".encode(),
            process.output,
        )


class DockerfileTests(TestCase):
    """The image's Dockerfile, read as Docker would (no Docker engine is needed)."""

    def setUp(self) -> None:
        self.instructions = dockerInstructions(DOCKERFILE)

    def arguments(self, keyword: str) -> list[str]:
        return [arguments for k, arguments in self.instructions if k == keyword]

    def test_base(self):
        """The image is built on the slim Python 3.12 image."""
        self.assertEqual(self.instructions[0], ("FROM", "python:3.12-slim"))

    def test_installsWithPip(self):
        """kgw is installed from the source tree with pip, keeping no cache."""
        runs = " ".join(self.arguments("RUN"))
        self.assertRegex(runs, r"pip install --no-cache-dir /tmp/kgw-source\b")
        self.assertIn("COPY . /tmp/kgw-source", [f"COPY {a}" for a in self.arguments("COPY")])

    def test_nonRootUser(self):
        """The gateway runs as a user other than root, set before the command."""
        users = [i for i, (k, _) in enumerate(self.instructions) if k == "USER"]
        self.assertTrue(users)
        user = self.instructions[users[-1]][1].split(":")[0]
        self.assertNotIn(user, ("root", "0", ""))
        command = [i for i, (k, _) in enumerate(self.instructions) if k == "CMD"][-1]
        self.assertLess(users[-1], command)
        self.assertFalse(any(k == "RUN" for k, _ in self.instructions[users[-1] :]))

    def test_command(self):
        """The command runs twistd kgw in the foreground, without a pid file, on every address."""
        self.assertEqual(
            [json.loads(a) for a in self.arguments("CMD")],
            [["twistd", "--nodaemon", "--pidfile=", "kgw", "--ip=0.0.0.0"]],
        )

    def test_stateVolumeAndPort(self):
        """The state directory is a volume, named by KG_STATE_DIR and HOME; port 8888 is open."""
        self.assertEqual([json.loads(a) for a in self.arguments("VOLUME")], [["/var/lib/kgw"]])
        variables = environment(self.arguments("ENV"))
        self.assertEqual(variables["KG_STATE_DIR"], "/var/lib/kgw")
        self.assertEqual(variables["HOME"], "/var/lib/kgw")
        self.assertEqual(self.arguments("EXPOSE"), ["8888"])
        self.assertEqual(
            {n for n in variables if n.startswith("KG_")} - {envVar(f) for f in Config.options()},
            FUTURE_VARIABLES,
        )

    def test_contextHoldsSource(self):
        """.dockerignore leaves out of the build context nothing pip needs to install kgw."""
        with open(DOCKERIGNORE) as f:
            patterns = [p.strip() for p in f if p.strip() and not p.startswith("#")]
        needed = ["setup.py", "README.md", "kgw", "kgw/tap.py", "twisted/plugins/kgw_plugin.py"]
        for path in needed:
            ignored = [p for p in patterns if fnmatch.fnmatch(path, p.lstrip("/"))]
            self.assertEqual(ignored, [], path)

    def healthcheck(self) -> list[str]:
        """The health check's command, run by this environment's Python."""
        [arguments] = self.arguments("HEALTHCHECK")
        _, _, command = arguments.partition("CMD ")
        argv = json.loads(command)
        self.assertEqual(argv[0], "python")
        return argv[1:]

    async def test_healthcheck(self):
        """
        The health check passes against a gateway answering GET /api, with the image's KG_*
        variables telling it the port, base URL and token, and fails when they are wrong.
        """
        gateway = await RunningGateway(self, auth_token="s3cret", base_url="/gw/").start()
        good = {
            "KG_PORT": str(gateway.portNumber),
            "KG_AUTH_TOKEN": "s3cret",
            "KG_BASE_URL": "/gw/",
        }
        out, err, code = await run(sys.executable, *self.healthcheck(), env=good)
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))
        for wrong in ({"KG_AUTH_TOKEN": ""}, {"KG_BASE_URL": "/"}):
            out, err, code = await run(sys.executable, *self.healthcheck(), env={**good, **wrong})
            self.assertNotEqual(code, 0, wrong)

    async def test_hadolint(self):
        """hadolint, when installed, finds nothing to report in the Dockerfile."""
        hadolint = shutil.which("hadolint")
        if hadolint is None:
            raise SkipTest("hadolint is not on PATH")
        out, err, code = await run(hadolint, DOCKERFILE)
        self.assertEqual(code, 0, (out + err).decode(errors="replace"))


class CommandTests(TestCase):
    """The C{kgw} command, run as C{python -m kgw}: C{twistd -n kgw} in short."""

    timeout = 60

    async def test_helpListsOptions(self):
        """C{python -m kgw --help} lists kgw's options with their variables, and exits 0."""
        out, err, code = await run(sys.executable, "-m", "kgw", "--help")
        self.assertEqual(code, 0, err)
        for expected in (b"twistd [options] kgw", b"--port=", b"--listen", b"KG_PORT"):
            self.assertIn(expected, out)

    async def test_usageErrorIsShort(self):
        """C{kgw --bad} prints the error and one hint, naming the kgw command, and exits 1."""
        out, err, code = await run(sys.executable, "-m", "kgw", "--bad")
        self.assertEqual(code, 1)
        self.assertEqual(
            (out + err).splitlines(),
            [b"kgw: option --bad not recognized", b"Run 'kgw --help' for the options."],
        )

    async def test_servesInForeground(self):
        """
        C{python -m kgw --port=0} serves the API in the foreground under the asyncio reactor,
        writes no pid file, and stops on SIGTERM.
        """
        runtime = os.path.abspath(self.mktemp())
        os.makedirs(runtime)
        env = dict(os.environ, JUPYTER_RUNTIME_DIR=runtime)
        python = sys.executable
        process = spawn(self, python, [python, "-m", "kgw", "--port=0"], env)
        port = await withTimeout(process.listening)
        self.assertIn(b"AsyncioSelectorReactor", process.output)
        code, body = await GatewayClient(self, port).request("GET", "api")
        self.assertEqual(code, 200)
        self.assertIn("version", body)
        self.assertEqual(os.listdir(process.cwd), [])
        await stop(self, process)

    async def test_consoleScript(self):
        """setup.py installs a kgw console script running the same main, and every package."""
        capture = (
            "import json, runpy, setuptools\n"
            "found = {}\n"
            "setuptools.setup = lambda **kw: found.update(kw)\n"
            "runpy.run_path('setup.py')\n"
            "print(json.dumps({k: found.get(k) for k in ('entry_points', 'packages')}))\n"
        )
        out, err, code = await run(sys.executable, "-c", capture, path=ROOT)
        self.assertEqual(code, 0, err)
        described = json.loads(out)
        self.assertIn("kgw = kgw.__main__:main", described["entry_points"]["console_scripts"])
        packages = {
            os.path.relpath(directory, ROOT).replace(os.sep, ".")
            for directory, _, files in os.walk(os.path.join(ROOT, "kgw"))
            if "__init__.py" in files
        }
        self.assertEqual(packages - set(described["packages"]), set())
        self.assertIn("twisted.plugins", described["packages"])

    def test_twistdArguments(self):
        """The command's arguments follow twistd's foreground and no-pid-file options and kgw."""
        from kgw.__main__ import twistdArguments

        self.assertEqual(
            twistdArguments(["--port", "9000"]),
            ["--nodaemon", "--pidfile=", "kgw", "--port", "9000"],
        )
