"""Kernels through a real gateway: real ipykernel processes, ZeroMQ, HTTP and websockets."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from kgw.api import wire
from tests.support import RunningGateway, isAlive, reply, stdout, withTimeout

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


async def eventually(predicate, timeout: float = 20.0, step: float = 0.05):
    """Poll C{predicate} until it returns a true value, failing after C{timeout} seconds."""
    waited = 0.0
    while waited < timeout:
        value = await predicate()
        if value:
            return value
        await deferLater(reactor, step)
        waited += step
    raise AssertionError("condition not met in time")


class ExecuteTests(TestCase):
    """Running code over the channels websocket."""

    timeout = 120

    async def setUp(self):
        self.gateway = await RunningGateway(self).start()
        self.model = await self.gateway.startKernel()

    async def test_legacyExecutePrintsStream(self):
        """An execute_request over a legacy JSON websocket returns the kernel's stdout."""
        client = await self.gateway.connect(self.model["id"])
        self.assertIsNone(client.protocolName)
        messages = await client.execute("print('Hello world!')")
        self.assertEqual(stdout(messages), "Hello world!\n")
        self.assertEqual(reply(messages)["content"]["status"], "ok")
        legacy = messages[0]
        self.assertEqual(legacy["channel"], "iopub")
        self.assertEqual(legacy["msg_id"], legacy["header"]["msg_id"])
        self.assertEqual(legacy["msg_type"], legacy["header"]["msg_type"])

    async def test_v1ExecutePrintsStream(self):
        """A client offering the v1 subprotocol gets it, and executes over binary frames."""
        client = await self.gateway.connect(self.model["id"], v1=True)
        self.assertEqual(client.protocolName, wire.V1_PROTOCOL)
        messages = await client.execute("print('Hello world!')")
        self.assertEqual(stdout(messages), "Hello world!\n")

    async def test_largeOutputWhole(self):
        """
        An output larger than L{kgw.api.websocket.LARGE_FRAME}, sent piece by piece in one frame,
        arrives whole in both protocols, and the messages after it as usual.
        """
        from kgw.api.websocket import LARGE_FRAME

        size = LARGE_FRAME * 3 + 7
        code = f"display({{'text/plain': 'x' * {size} + 'end'}}, raw=True)"
        for v1 in (False, True):
            client = await self.gateway.connect(self.model["id"], v1=v1)
            messages = await client.execute(code)
            [display] = [m for m in messages if m["header"]["msg_type"] == "display_data"]
            text = display["content"]["data"]["text/plain"]
            self.assertEqual((len(text), text[-4:]), (size + 3, "xend"), f"v1={v1}")
            self.assertEqual(reply(messages)["content"]["status"], "ok")
            self.assertEqual(stdout(await client.execute("print(1)")), "1\n")
            await client.disconnect()

    async def test_stdinReachesItsClient(self):
        """An input() call asks the client that ran it, and its answer reaches the kernel."""
        client = await self.gateway.connect(self.model["id"])
        msgId = client.send(
            "execute_request", {"code": "print(input('name?') + '!')", "allow_stdin": True}
        )
        request = await client.next(lambda m: m["header"]["msg_type"] == "input_request")
        self.assertEqual(request["channel"], "stdin")
        client.send("input_reply", {"value": "kgw"}, channel="stdin")
        stream = await client.next(
            lambda m: (
                m["header"]["msg_type"] == "stream" and m["parent_header"].get("msg_id") == msgId
            )
        )
        self.assertEqual(stream["content"]["text"], "kgw!\n")

    async def test_sharedKernel(self):
        """Two clients of a kernel both see iopub; each gets only its own shell replies."""
        first = await self.gateway.connect(self.model["id"])
        second = await self.gateway.connect(self.model["id"])
        firstMessages = await first.execute("print('from first')")
        # The second client sees the first one's output on iopub...
        seen = await second.next(
            lambda m: (
                m["header"]["msg_type"] == "stream"
                and m["parent_header"].get("msg_id")
                == reply(firstMessages)["parent_header"]["msg_id"]
            )
        )
        self.assertEqual(seen["content"]["text"], "from first\n")
        # ...but not its execute_reply: everything before its own reply is checked.
        msgId = second.send("execute_request", {"code": "1"})
        while True:
            msg = await second.next(lambda m: True)
            if msg["header"]["msg_type"] == "execute_reply":
                self.assertEqual(msg["parent_header"]["msg_id"], msgId)
                break

    async def test_connectionsCounted(self):
        """The kernel model counts open websockets."""
        client = await self.gateway.connect(self.model["id"])
        _, model = await self.gateway.request("GET", f"api/kernels/{self.model['id']}")
        self.assertEqual(model["connections"], 1)
        await client.disconnect()

        async def closed():
            _, model = await self.gateway.request("GET", f"api/kernels/{self.model['id']}")
            return model["connections"] == 0

        await eventually(closed)

    async def test_modelFollowsKernel(self):
        """last_activity is ISO 8601 with microseconds and Z; execution_state follows iopub."""
        client = await self.gateway.connect(self.model["id"])
        self.assertRegex(self.model["last_activity"], ISO)
        msgId = client.send("execute_request", {"code": "import time; time.sleep(1)"})

        def status(state):
            return lambda m: (
                m["header"]["msg_type"] == "status"
                and m["parent_header"].get("msg_id") == msgId
                and m["content"]["execution_state"] == state
            )

        await client.next(status("busy"))
        _, busy = await self.gateway.request("GET", f"api/kernels/{self.model['id']}")
        self.assertEqual(busy["execution_state"], "busy")
        await client.next(status("idle"))
        _, idle = await self.gateway.request("GET", f"api/kernels/{self.model['id']}")
        self.assertEqual(idle["execution_state"], "idle")
        self.assertRegex(idle["last_activity"], ISO)
        self.assertGreater(idle["last_activity"], self.model["last_activity"])

    async def test_ownSigningKey(self):
        """Each kernel signs with its own key."""
        other = await self.gateway.startKernel()
        keys = {
            self.gateway.kernels.get(k).process.session.key for k in (self.model["id"], other["id"])
        }
        self.assertEqual(len(keys), 2)
        self.assertNotIn(b"", keys)


class BadFrameTests(TestCase):
    """What a client sends that is not a valid message."""

    timeout = 120

    async def setUp(self):
        self.gateway = await RunningGateway(self, max_message_size=64 * 1024).start()
        self.model = await self.gateway.startKernel()
        self.warnings: list[str] = []

        def observe(event):
            if event.get("log_level") is not None and event["log_level"].name == "warn":
                self.warnings.append(event.get("log_format", ""))

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)

    async def test_invalidFramesAreLoggedAndIgnored(self):
        """
        Invalid frames are dropped, the first logged (the next ones only counted); the
        connection stays open and works.
        """
        client = await self.gateway.connect(self.model["id"])
        client.sendMessage(b"not json")
        client.sendMessage(json.dumps([1, 2]).encode())
        client.sendMessage(json.dumps({"header": {"msg_type": "x"}}).encode())
        client.sendMessage(b"\x00\x01garbage", isBinary=True)
        client.send("execute_request", {"code": "1"}, channel="iopub")
        client.send("execute_request", {"code": "1"}, channel="nope")
        messages = await client.execute("print('still here')")
        self.assertEqual(stdout(messages), "still here\n")
        self.assertEqual(len(self.warnings), 1, self.warnings)
        self.assertIn("Ignored an invalid message", self.warnings[0])

    async def test_invalidV1FramesAreIgnored(self):
        """A v1 connection survives truncated frames, text frames and bad headers."""
        client = await self.gateway.connect(self.model["id"], v1=True)
        good = wire.encode_v1("shell", [b'{"msg_id": "a", "msg_type": "x"}', b"{}", b"{}", b"{}"])
        client.sendMessage(good[:-3], isBinary=True)
        client.sendMessage(b"text", isBinary=False)
        client.sendMessage(wire.encode_v1("shell", [b"[]", b"{}", b"{}", b"{}"]), isBinary=True)
        messages = await client.execute("print('still here')")
        self.assertEqual(stdout(messages), "still here\n")
        self.assertEqual(len(self.warnings), 1, self.warnings)

    async def test_oversizedFrameCloses1009(self):
        """A message over max_message_size closes the websocket with 1009; the kernel lives."""
        client = await self.gateway.connect(self.model["id"])
        client.send("execute_request", {"code": "x = '" + "a" * 100_000 + "'"})
        code, _ = await withTimeout(client.closed)
        self.assertEqual(code, 1009)
        again = await self.gateway.connect(self.model["id"])
        messages = await again.execute("print('x' in globals())")
        self.assertEqual(stdout(messages), "False\n")

    async def test_unknownKernelWebsocketIs404(self):
        """A websocket to an unknown kernel id is refused with 404 before the upgrade."""
        code, body = await self.gateway.request(
            "GET",
            "api/kernels/0000/channels",
            headers={
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                "Sec-WebSocket-Version": "13",
            },
        )
        self.assertEqual(code, 404)
        self.assertEqual(body["reason"], "Not Found")
        with self.assertRaises(ConnectionError):
            await self.gateway.connect("0000")


class LifecycleTests(TestCase):
    """Interrupt, restart, automatic restart and shutdown of real kernels."""

    timeout = 120

    async def setUp(self):
        self.gateway = await RunningGateway(self).start()
        self.model = await self.gateway.startKernel()
        self.kernel = self.gateway.kernels.get(self.model["id"])

    async def test_interruptStopsSleep(self):
        """POST interrupt stops a running time.sleep with KeyboardInterrupt."""
        client = await self.gateway.connect(self.model["id"])
        code = "import time; print('sleeping', flush=True); time.sleep(60)"
        msgId = client.send("execute_request", {"code": code})
        # Output proves the cell runs: a SIGINT sent before that meets ipykernel's SIG_IGN.
        await client.next(
            lambda m: (
                m["header"]["msg_type"] == "stream" and m["parent_header"].get("msg_id") == msgId
            )
        )
        code, _ = await self.gateway.request("POST", f"api/kernels/{self.model['id']}/interrupt")
        self.assertEqual(code, 204)
        answer = await client.next(
            lambda m: (
                m["header"]["msg_type"] == "execute_reply" and m["parent_header"]["msg_id"] == msgId
            )
        )
        self.assertEqual(answer["content"]["status"], "error")
        self.assertEqual(answer["content"]["ename"], "KeyboardInterrupt")

    async def test_restartClearsState(self):
        """POST restart keeps the id, answers with the model, and the kernel's memory is new."""
        client = await self.gateway.connect(self.model["id"])
        await client.execute("x = 1")
        oldPid = self.kernel.process.pid
        code, model = await self.gateway.request("POST", f"api/kernels/{self.model['id']}/restart")
        self.assertEqual(code, 200)
        self.assertEqual(model["id"], self.model["id"])
        self.assertNotEqual(self.kernel.process.pid, oldPid)
        self.assertFalse(isAlive(oldPid))
        messages = await client.execute("print('x' in globals())")
        self.assertEqual(stdout(messages), "False\n")

    async def test_killedKernelRestarts(self):
        """A kernel killed with SIGKILL comes back under its id; clients see 'restarting'."""
        client = await self.gateway.connect(self.model["id"])
        await client.execute("pass")  # started: a kernel that dies while starting is dead
        oldPid = self.kernel.process.pid
        os.kill(oldPid, signal.SIGKILL)
        await client.next(
            lambda m: (
                m["header"]["msg_type"] == "status"
                and m["content"]["execution_state"] == "restarting"
            )
        )
        messages = await client.execute("print('back')")
        self.assertEqual(stdout(messages), "back\n")
        self.assertNotEqual(self.kernel.process.pid, oldPid)
        code, model = await self.gateway.request("GET", f"api/kernels/{self.model['id']}")
        self.assertEqual((code, model["id"]), (200, self.model["id"]))

    async def test_shutdownLeavesNothing(self):
        """DELETE closes the websockets, ends the process and removes its connection file."""
        client = await self.gateway.connect(self.model["id"])
        pid = self.kernel.process.pid
        connectionFile = self.kernel.process.manager.connection_file
        self.assertTrue(os.path.exists(connectionFile))
        code, _ = await self.gateway.request("DELETE", f"api/kernels/{self.model['id']}")
        self.assertEqual(code, 204)
        closeCode, _ = await withTimeout(client.closed)
        self.assertEqual(closeCode, 1000)
        self.assertFalse(isAlive(pid))
        self.assertFalse(os.path.exists(connectionFile))
        code, _ = await self.gateway.request("GET", f"api/kernels/{self.model['id']}")
        self.assertEqual(code, 404)

    async def test_deadAfterFailedRestarts(self):
        """A kernel that cannot be restarted is announced dead, closed with 1011 and forgotten."""
        client = await self.gateway.connect(self.model["id"])
        await client.execute("pass")
        self.gateway.kernels.policy.startTimeout = 1.0

        def failingRestart(now):
            raise RuntimeError("no kernel for you")

        self.kernel.process.restart = failingRestart
        os.kill(self.kernel.process.pid, signal.SIGKILL)
        states = []
        while "dead" not in states:
            msg = await client.next(lambda m: m["header"]["msg_type"] == "status")
            states.append(msg["content"]["execution_state"])
        # The kernel's own busy/idle may come first; what counts is the order of these two.
        self.assertEqual([s for s in states if s in ("restarting", "dead")], ["restarting", "dead"])
        closeCode, _ = await withTimeout(client.closed)
        self.assertEqual(closeCode, 1011)
        code, _ = await self.gateway.request("GET", f"api/kernels/{self.model['id']}")
        self.assertEqual(code, 404)
        self.flushLoggedErrors(RuntimeError)

    async def test_stopClosesWebsocketsGoingAway(self):
        """Stopping the gateway closes websockets with 1001 and shuts every kernel down."""
        client = await self.gateway.connect(self.model["id"])
        pid = self.kernel.process.pid
        await self.gateway.kernels.stopService()
        closeCode, _ = await withTimeout(client.closed)
        self.assertEqual(closeCode, 1001)
        self.assertFalse(isAlive(pid))


class RestartStatusTests(TestCase):
    """What clients and the REST model hear after a restart."""

    timeout = 120

    async def statesAfter(self, client, first: str) -> list[str]:
        """
        The states of the gateway's and the kernel's own statuses (no parent request) that a
        client hears from C{first} on, up to the next C{idle}, a repeated one once.
        """
        states = []
        while "idle" not in states:
            msg = await client.next(
                lambda m: m["header"]["msg_type"] == "status" and not m["parent_header"]
            )
            state = msg["content"]["execution_state"]
            # The new process's own "starting" may also arrive, if iopub was subscribed in time.
            if (states or state == first) and states[-1:] != [state]:
                states.append(state)
        return states

    async def test_automaticRestart(self):
        """After an automatic restart, clients hear starting and idle, and the model says idle."""
        gateway = await RunningGateway(self).start()
        model = await gateway.startKernel()
        kernel = gateway.kernels.get(model["id"])
        client = await gateway.connect(model["id"])
        await client.execute("pass")
        os.kill(kernel.process.pid, signal.SIGKILL)
        states = await self.statesAfter(client, "restarting")
        self.assertEqual(states, ["restarting", "starting", "idle"])
        code, model = await gateway.request("GET", f"api/kernels/{model['id']}")
        self.assertEqual((code, model["execution_state"]), (200, "idle"))

    async def test_requestedRestart(self):
        """After a restart asked for through REST, clients hear starting and idle."""
        gateway = await RunningGateway(self).start()
        model = await gateway.startKernel()
        client = await gateway.connect(model["id"])
        await client.execute("pass")
        code, restarted = await gateway.request("POST", f"api/kernels/{model['id']}/restart")
        self.assertEqual((code, restarted["execution_state"]), (200, "idle"))
        self.assertEqual(await self.statesAfter(client, "starting"), ["starting", "idle"])


class RelayTests(TestCase):
    """What the relay does to messages and sockets."""

    timeout = 120

    async def test_websocketsHaveNoDelay(self):
        """The gateway's end of each channels websocket has TCP_NODELAY set."""
        import socket

        gateway = await RunningGateway(self).start()
        model = await gateway.startKernel()
        await gateway.connect(model["id"])
        await gateway.connect(model["id"], v1=True)
        servers = list(gateway.kernels.get(model["id"]).channels.clients)
        self.assertEqual(len(servers), 2)
        for server in servers:
            handle = server.transport.getHandle()
            self.assertTrue(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))


class CrashTests(TestCase):
    """A kernel that dies under a client."""

    timeout = 120

    async def test_killedMidExecute(self):
        """Killed mid-execute: the client gets 'restarting' and its websocket keeps working."""
        gateway = await RunningGateway(self).start()
        model = await gateway.startKernel()
        kernel = gateway.kernels.get(model["id"])
        client = await gateway.connect(model["id"])
        msgId = client.send(
            "execute_request", {"code": "import time; print('running', flush=True); time.sleep(60)"}
        )
        await client.next(
            lambda m: (
                m["header"]["msg_type"] == "stream" and m["parent_header"].get("msg_id") == msgId
            )
        )
        os.kill(kernel.process.pid, signal.SIGKILL)
        await client.next(
            lambda m: (
                m["header"]["msg_type"] == "status"
                and m["content"]["execution_state"] == "restarting"
            )
        )
        # The killed execute will never answer; the same websocket runs the next one.
        messages = await client.execute("print('after the crash')")
        self.assertEqual(stdout(messages), "after the crash\n")


def writeSpec(test: TestCase, name: str, code: str, program: str = sys.executable) -> Any:
    """A kernelspec manager of one kernelspec, C{name}, whose process runs C{code}."""
    root = os.path.abspath(test.mktemp())
    os.makedirs(os.path.join(root, name))
    with open(os.path.join(root, name, "kernel.json"), "w") as f:
        argv = [program, "-c", code, "{connection_file}"]
        json.dump({"argv": argv, "display_name": name, "language": "python"}, f)
    return KernelSpecManager(kernel_dirs=[root], ensure_native_kernel=False)


# A kernel that takes SLOW seconds before it starts listening: a start request is answered
# long before it can reply.
SLOW = 3
SLOW_KERNEL = (
    "import runpy, sys, time\n"
    f"time.sleep({SLOW})\n"
    "sys.argv = ['ipykernel_launcher', '-f', sys.argv[1]]\n"
    "runpy.run_module('ipykernel_launcher', run_name='__main__')\n"
)


class EarlyStartTests(TestCase):
    """A start request is answered once the process is launched, as KG does."""

    timeout = 90

    async def test_answeredAtLaunchMessagesHeld(self):
        """
        POST answers while the kernel cannot reply yet; a client that connects and sends at
        once gets every reply, in the order it asked, and the output of its code.
        """
        gateway = await RunningGateway(
            self, registryArguments={"specs": writeSpec(self, "slow", SLOW_KERNEL)}
        ).start()
        model = await gateway.startKernel(name="slow")
        kernel = gateway.kernels.get(model["id"])
        # Answered before the kernel answered: it is still starting, its messages held.
        self.assertEqual(model["execution_state"], "starting")
        self.assertEqual(kernel.busyWith, "starting")
        client = await gateway.connect(model["id"])
        info = client.send("kernel_info_request", {})
        history = client.send(
            "history_request", {"output": False, "raw": True, "hist_access_type": "tail", "n": 10}
        )
        execute = client.send("execute_request", {"code": "print(6 * 7)", "silent": False})
        seen = []

        def idle(m):
            return m["parent_header"].get("msg_id") == execute and (
                m["content"].get("execution_state") == "idle"
            )

        while not (
            any(m["header"]["msg_type"] == "execute_reply" for m in seen)
            and any(idle(m) for m in seen)
        ):
            seen.append(await client.next(lambda m: True))
        replies = [
            m["parent_header"]["msg_id"] for m in seen if m["header"]["msg_type"].endswith("_reply")
        ]
        self.assertEqual(replies, [info, history, execute])
        self.assertEqual(stdout(seen), "42\n")
        code, model = await gateway.request("GET", f"api/kernels/{model['id']}")
        self.assertEqual((code, model["execution_state"]), (200, "idle"))

    async def test_interruptWhileStarting(self):
        """
        An interrupt of a kernel still starting is answered 204 and leaves it alone (a SIGINT
        while it imports would kill it); the kernel then runs code.
        """
        gateway = await RunningGateway(
            self, registryArguments={"specs": writeSpec(self, "slow", SLOW_KERNEL)}
        ).start()
        model = await gateway.startKernel(name="slow")
        pid = gateway.kernels.get(model["id"]).process.pid
        code, _ = await gateway.request("POST", f"api/kernels/{model['id']}/interrupt")
        self.assertEqual(code, 204)
        client = await gateway.connect(model["id"])
        self.assertEqual(stdout(await client.execute("print(6 * 7)")), "42\n")
        self.assertEqual(gateway.kernels.get(model["id"]).process.pid, pid)

    async def test_deadAfterAnswer(self):
        """
        A kernel that exits before it ever answers is announced dead to its clients, who are
        closed with 1011, and removed: not restarted, not left half-started.
        """
        gateway = await RunningGateway(
            self,
            registryArguments={
                "specs": writeSpec(self, "doomed", "import sys, time; time.sleep(1); sys.exit(3)"),
                "startTimeout": 50.0,
            },
        ).start()
        model = await gateway.startKernel(name="doomed")
        client = await gateway.connect(model["id"])
        client.send("kernel_info_request", {})
        dead = await client.next(lambda m: m["header"]["msg_type"] == "status")
        self.assertEqual(dead["content"]["execution_state"], "dead")
        closeCode, _ = await withTimeout(client.closed)
        self.assertEqual(closeCode, 1011)
        code, _ = await gateway.request("GET", f"api/kernels/{model['id']}")
        self.assertEqual(code, 404)
        _, listed = await gateway.request("GET", "api/kernels")
        self.assertEqual(listed, [])
        self.flushLoggedErrors()

    async def test_notLaunched(self):
        """A kernelspec whose program cannot be launched still fails its start with a 500."""
        specs = writeSpec(self, "broken", "", program="/nonexistent/kernel")
        gateway = await RunningGateway(self, registryArguments={"specs": specs}).start()
        code, body = await gateway.request("POST", "api/kernels", {"name": "broken"})
        self.assertEqual(code, 500, body)
        self.assertIn("failed to start", body["message"])
        _, listed = await gateway.request("GET", "api/kernels")
        self.assertEqual(listed, [])
        self.flushLoggedErrors()
