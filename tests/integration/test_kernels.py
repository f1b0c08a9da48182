"""Kernels through a real gateway: real ipykernel processes, ZeroMQ, HTTP and websockets."""

from __future__ import annotations

import json
import os
import re
import signal

from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.logger import globalLogPublisher
from twisted.trial.unittest import TestCase

from kgw import wire
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
        An output larger than L{kgw.websocket.LARGE_FRAME}, sent piece by piece in one frame,
        arrives whole in both protocols, and the messages after it as usual.
        """
        from kgw.websocket import LARGE_FRAME

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
        self.gateway.kernels.startTimeout = 1.0

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


class FailedStartTests(TestCase):
    """A kernel process that dies before it answers."""

    timeout = 60

    async def test_deadOnArrival(self):
        """A kernel that exits at once fails its start with 500 saying so, not a timeout."""
        import sys

        from jupyter_client.kernelspec import KernelSpecManager

        specs = os.path.join(os.path.abspath(self.mktemp()), "doomed")
        os.makedirs(specs)
        with open(os.path.join(specs, "kernel.json"), "w") as f:
            argv = [sys.executable, "-c", "import sys; sys.exit(3)", "{connection_file}"]
            json.dump({"argv": argv, "display_name": "Doomed", "language": "python"}, f)
        gateway = await RunningGateway(
            self,
            registryArguments={
                "specs": KernelSpecManager(kernel_dirs=[os.path.dirname(specs)]),
                "startTimeout": 50.0,
            },
        ).start()
        code, body = await gateway.request("POST", "api/kernels", {"name": "doomed"})
        self.assertEqual(code, 500)
        self.assertIn("died while starting", body["message"])
        _, listed = await gateway.request("GET", "api/kernels")
        self.assertEqual(listed, [])
