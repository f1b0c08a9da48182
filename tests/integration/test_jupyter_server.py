"""
jupyter_server in front of kgw, as JupyterLab runs it: C{jupyter server --gateway-url=<kgw>}.

jupyter_server's GatewayClient sends every kernel and kernelspec request on to the gateway, with
the gateway's token, and relays its own channels websocket to the gateway's. jupyter_server is
not a kgw dependency: these tests are skipped where it is not installed (tox's C{clients} env
installs it).
"""

from __future__ import annotations

import importlib.util
import os
import re
import signal
import sys
from typing import Any

import treq
from twisted.internet import defer, error, reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase

from tests.support import GatewayClient, RunningGateway, reply, stdout, withTimeout

GATEWAY_TOKEN = "kgw-token-for-jupyter-server"
SERVER_TOKEN = "jupyter-server-own-token"
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0

HAVE_JUPYTER_SERVER = importlib.util.find_spec("jupyter_server") is not None
# The first URL jupyter_server logs after "is running at:" is its own; the gateway's comes later.
LISTENING = re.compile(rb"is running at:\s*\n[^\n]*?http://127\.0\.0\.1:(\d+)/")


class JupyterProcess(ProcessProtocol):
    """A C{jupyter server} (or C{jupyter lab}) process: its log, port and end."""

    def __init__(self) -> None:
        self.output = b""
        self.listening: Deferred[int] = Deferred()
        self.ended: Deferred[int | None] = Deferred()
        self.pid = 0
        self._waiting: list[Deferred[None]] = []

    def outReceived(self, data: bytes) -> None:
        self.output += data
        found = LISTENING.search(self.output)
        if found and not self.listening.called:
            self.listening.callback(int(found.group(1)))

    errReceived = outReceived

    def processEnded(self, reason) -> None:
        if not self.listening.called:
            self.listening.errback(RuntimeError(self.output.decode(errors="replace")))
        if reason.check(ProcessDone, ProcessTerminated):
            self.ended.callback(reason.value.exitCode)
        else:
            self.ended.errback(reason)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(None)

    def whenEnded(self) -> Deferred[None]:
        """A new Deferred that fires once the process has ended and been reaped."""
        if self.ended.called:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._waiting.append(d)
        return d

    def log(self) -> str:
        return self.output.decode(errors="replace")


async def startJupyter(
    test: TestCase, gateway: GatewayClient, module: str = "jupyter_server", *args: str
) -> tuple[JupyterProcess, JupyterServerClient]:
    """
    Run C{python -m MODULE} on 127.0.0.1 in front of C{gateway}, with a token of its own.

    It gets fresh Jupyter config, data and runtime directories and an empty root directory, so
    nothing of the user's configuration applies. The test's clean-up stops it by its pid:
    SIGTERM first, then SIGKILL if it has not ended within L{STOP_TIMEOUT} seconds. Returns the
    process and a client of its API, which sends its token with every request.
    """
    home = os.path.abspath(test.mktemp())
    directories = {name: os.path.join(home, name) for name in ("config", "data", "runtime", "root")}
    for path in directories.values():
        os.makedirs(path)
    env = {name: value for name, value in os.environ.items() if name in ("PATH", "LANG")}
    env.update(
        HOME=home,
        JUPYTER_CONFIG_DIR=directories["config"],
        JUPYTER_DATA_DIR=directories["data"],
        JUPYTER_RUNTIME_DIR=directories["runtime"],
        JUPYTER_PLATFORM_DIRS="1",
        PYTHONWARNINGS="ignore::DeprecationWarning",
    )
    argv = [
        sys.executable,
        "-m",
        module,
        "--ServerApp.ip=127.0.0.1",
        "--ServerApp.port=0",
        "--ServerApp.port_retries=0",
        "--ServerApp.open_browser=False",
        f"--ServerApp.root_dir={directories['root']}",
        f"--IdentityProvider.token={SERVER_TOKEN}",
        f"--gateway-url=http://{gateway.address}",
        f"--GatewayClient.auth_token={GATEWAY_TOKEN}",
        "--GatewayClient.request_timeout=60",
        *args,
    ]
    if os.getuid() == 0:
        argv.append("--ServerApp.allow_root=True")  # CI runs as root
    process = JupyterProcess()
    transport = reactor.spawnProcess(process, sys.executable, argv, env=env, path=home)
    process.pid = transport.pid

    async def stop() -> None:
        if process.ended.called:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            await withTimeout(process.whenEnded(), STOP_TIMEOUT)
        except defer.TimeoutError:
            os.kill(process.pid, signal.SIGKILL)
            await process.whenEnded()

    test.addCleanup(stop)
    port = await withTimeout(process.listening, START_TIMEOUT)
    client = JupyterServerClient(test, port)
    # jupyter_server logs its URL before its event loop starts and binds the port: wait for it.
    deadline = reactor.seconds() + START_TIMEOUT
    while True:
        try:
            code, _ = await client.request("GET", "api")
        except error.ConnectionRefusedError:
            if process.ended.called or reactor.seconds() > deadline:
                test.fail(f"jupyter_server never answered on port {port}\n{process.log()}")
            await deferLater(reactor, 0.1)
        else:
            test.assertEqual(code, 200, process.log())
            return process, client


class JupyterServerClient(GatewayClient):
    """The API of a jupyter_server, with its token on every request and websocket."""

    async def request(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        kw.setdefault("headers", {"Authorization": f"token {SERVER_TOKEN}"})
        return await super().request(method, path, body, **kw)

    async def resource(self, path: str) -> tuple[int, bytes, str]:
        """GET a non-JSON resource: its status, body and content type."""
        response = await treq.get(
            self.url(path), headers={"Authorization": f"token {SERVER_TOKEN}"}, pool=self.pool
        )
        content = await response.content()
        contentType = (response.headers.getRawHeaders("content-type") or [""])[0]
        return response.code, content, contentType

    websocketHeaders = {"Authorization": f"token {SERVER_TOKEN}"}


class JupyterServerGatewayTests(TestCase):
    """jupyter_server's GatewayClient in front of a kgw that requires a token."""

    timeout = 180
    if not HAVE_JUPYTER_SERVER:
        skip = "jupyter_server is not installed (tox -e clients installs it)"

    async def setUp(self):
        self.gateway = await RunningGateway(self, auth_token=GATEWAY_TOKEN).start()
        self.jupyter, self.server = await startJupyter(self, self.gateway)

    async def gatewayKernels(self) -> list[str]:
        """The ids of the kernels kgw itself runs."""
        code, kernels = await self.gateway.request(
            "GET", "api/kernels", headers={"Authorization": f"token {GATEWAY_TOKEN}"}
        )
        self.assertEqual(code, 200, kernels)
        return [kernel["id"] for kernel in kernels]

    async def test_kernelspecsAndLogo(self):
        """jupyter_server lists kgw's kernelspecs and serves their logo from kgw."""
        code, specs = await self.server.request("GET", "api/kernelspecs")
        self.assertEqual(code, 200, self.jupyter.log())
        self.assertEqual(specs["default"], "python3")
        python3 = specs["kernelspecs"]["python3"]
        self.assertEqual(python3["spec"]["language"], "python")
        self.assertEqual(python3["resources"]["logo-64x64"], "/kernelspecs/python3/logo-64x64.png")
        code, logo, contentType = await self.server.resource("kernelspecs/python3/logo-64x64.png")
        self.assertEqual((code, contentType), (200, "image/png"))
        self.assertTrue(logo.startswith(b"\x89PNG\r\n\x1a\n"), logo[:16])
        # kgw's own logo is the same file.
        direct = await self.gatewayLogo()
        self.assertEqual(logo, direct)

    async def gatewayLogo(self) -> bytes:
        response = await treq.get(
            self.gateway.url("kernelspecs/python3/logo-64x64.png"),
            headers={"Authorization": f"token {GATEWAY_TOKEN}"},
            pool=self.gateway.pool,
        )
        self.assertEqual(response.code, 200)
        return await response.content()

    async def test_kernelLifecycle(self):
        """
        A kernel started through jupyter_server runs on kgw, executes over jupyter_server's
        websocket, and is interrupted, restarted and shut down through jupyter_server.
        """
        code, model = await self.server.request("POST", "api/kernels", {"name": "python3"})
        self.assertEqual(code, 201, self.jupyter.log())
        kernelId = model["id"]
        self.assertEqual(model["name"], "python3")
        self.assertEqual(await self.gatewayKernels(), [kernelId])
        code, listed = await self.server.request("GET", "api/kernels")
        self.assertEqual((code, [kernel["id"] for kernel in listed]), (200, [kernelId]))

        client = await self.server.connect(kernelId)
        messages = await client.execute("x = 6 * 7\nprint(x)")
        self.assertEqual(stdout(messages), "42\n")
        self.assertEqual(reply(messages)["content"]["status"], "ok")

        # Interrupt: a long sleep ends at once with KeyboardInterrupt.
        msgId = client.send("execute_request", {"code": "import time; time.sleep(60)"})
        await client.next(
            lambda m: (
                m["parent_header"].get("msg_id") == msgId
                and m["header"]["msg_type"] == "execute_input"
            )
        )
        code, _ = await self.server.request("POST", f"api/kernels/{kernelId}/interrupt")
        self.assertEqual(code, 204, self.jupyter.log())
        interrupted = await client.next(
            lambda m: (
                m["parent_header"].get("msg_id") == msgId
                and m["header"]["msg_type"] == "execute_reply"
            ),
            timeout=20,
        )
        self.assertEqual(interrupted["content"]["status"], "error")
        self.assertEqual(interrupted["content"]["ename"], "KeyboardInterrupt")
        await client.disconnect()

        # Restart: the same kernel id, a new process, the variable gone.
        code, restarted = await self.server.request("POST", f"api/kernels/{kernelId}/restart")
        self.assertEqual(code, 200, self.jupyter.log())
        self.assertEqual(restarted["id"], kernelId)
        self.assertEqual(await self.gatewayKernels(), [kernelId])
        client = await self.server.connect(kernelId)
        messages = await client.execute("print('x' in globals())")
        self.assertEqual(stdout(messages), "False\n")
        await client.disconnect()

        # Shut down: gone from jupyter_server and from kgw.
        code, _ = await self.server.request("DELETE", f"api/kernels/{kernelId}")
        self.assertEqual(code, 204, self.jupyter.log())
        self.assertEqual(await self.gatewayKernels(), [])
        code, listed = await self.server.request("GET", "api/kernels")
        self.assertEqual((code, listed), (200, []))
