"""Test fixtures: a real gateway on loopback, websocket clients, and a check for stray processes."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import treq
from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import reactor
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.trial.unittest import TestCase
from twisted.web.client import HTTPConnectionPool

from kgw.api import wire
from kgw.config import Config
from kgw.gateway import buildGateway, buildSite
from kgw.kernels.registry import KernelRegistry
from kgw.kernels.store.directory import pidAlive

TIMEOUT = 30.0


def childProcesses(parent: int | None = None) -> set[int]:
    """Pids of the live (not zombie) children of C{parent}, this process by default."""
    parent = os.getpid() if parent is None else parent
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == parent and fields[0] != "Z":
            found.add(int(entry))
    return found


# Whether a process runs and is not a zombie: the gateway's own test of its kernels.
isAlive = pidAlive


def withTimeout(d: Deferred[Any], seconds: float = TIMEOUT) -> Deferred[Any]:
    return d.addTimeout(seconds, reactor)


class GatewayClient:
    """HTTP and websocket access to a gateway at C{127.0.0.1:port}, for one test."""

    def __init__(self, test: TestCase, port: int = 0, baseURL: str = "/") -> None:
        self.test = test
        self.portNumber = port
        self.baseURL = baseURL
        self.pool = HTTPConnectionPool(reactor, persistent=False)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.portNumber}"

    def url(self, path: str) -> str:
        return f"http://{self.address}{self.baseURL}{path.lstrip('/')}"

    async def request(self, method: str, path: str, body: Any = None, **kw: Any) -> tuple[int, Any]:
        """Make a request and return its status and decoded JSON body (or None)."""
        if body is not None and not isinstance(body, bytes):
            body = json.dumps(body).encode()
        response = await treq.request(method, self.url(path), data=body, pool=self.pool, **kw)
        content = await response.content()
        try:
            decoded = json.loads(content) if content else None
        except ValueError:
            decoded = content
        return response.code, decoded

    async def startKernel(self, **body: Any) -> dict[str, Any]:
        code, model = await self.request("POST", "api/kernels", body)
        self.test.assertEqual(code, 201, model)
        return model

    async def connect(
        self,
        kernelId: str,
        v1: bool = False,
        sessionId: str | None = None,
        query: dict[str, str] | None = None,
        origin: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Client:
        """
        Open the channels websocket of a kernel, in the v1 or the legacy protocol, with a new
        session id unless C{sessionId} gives one (C{""}: none at all), C{query} added to its URL,
        and the handshake sent from C{origin} with C{headers}.

        @raise ConnectionError: naming the HTTP status, if the handshake is refused.
        """
        session = uuid.uuid4().hex if sessionId is None else sessionId
        arguments = {"session_id": session} if session else {}
        arguments.update(query or {})
        suffix = "?" + urlencode(arguments) if arguments else ""
        url = f"{self.websocketScheme}://{self.address}{self.baseURL}"
        factory = WebSocketClientFactory(
            f"{url}api/kernels/{kernelId}/channels{suffix}",
            protocols=[wire.V1_PROTOCOL] if v1 else [],
            origin=origin,
            headers={**(self.websocketHeaders or {}), **(headers or {})} or None,
        )
        factory.protocol = Client
        factory.setProtocolOptions(maxMessagePayloadSize=0, maxFramePayloadSize=0)
        connected: Deferred[Client] = Deferred()
        factory.connected = connected
        self.openConnection(factory)
        client = await withTimeout(connected)
        self.test.addCleanup(client.disconnect)
        return client

    websocketScheme = "ws"
    websocketHeaders: dict[str, str] | None = None

    def openConnection(self, factory: WebSocketClientFactory) -> None:
        """Connect C{factory} to the gateway (over TCP; a TLS client overrides it)."""
        reactor.connectTCP("127.0.0.1", self.portNumber, factory)


class RunningGateway(GatewayClient):
    """
    A gateway listening on 127.0.0.1 with a real kernel registry, started and stopped by one test.

    Its clean-up fails the test if a kernel process outlives the gateway, after killing that
    process by its pid.
    """

    def __init__(
        self, test: TestCase, registryArguments: dict[str, Any] | None = None, **settings: Any
    ) -> None:
        settings.setdefault("list_kernels", True)
        self.config = Config(**settings)
        super().__init__(test, baseURL=self.config.base_url)
        self._registryArguments = registryArguments or {}
        self.kernels: KernelRegistry
        self._before = childProcesses()

    async def start(self) -> RunningGateway:
        self.gateway = buildGateway(self.config, reactor, **self._registryArguments)
        self.kernels = self.gateway.kernels
        self.gateway.startService()
        self.port = reactor.listenTCP(0, buildSite(self.gateway.resource), interface="127.0.0.1")
        self.portNumber = self.port.getHost().port
        self.test.addCleanup(self.stop)
        return self

    async def stop(self) -> None:
        await self.port.stopListening()
        if self.gateway.running:
            await self.gateway.stopService()
        elif self.kernels.running:
            await self.kernels.stopService()
        strays = childProcesses() - self._before
        for pid in strays:
            os.kill(pid, 9)
        self.test.assertEqual(strays, set(), "kernel processes outlived the gateway")


class Client(WebSocketClientProtocol):
    """A websocket client of the channels route that collects what the kernel sends."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: DeferredQueue[dict[str, Any]] = DeferredQueue()
        self.closed: Deferred[tuple[int | None, str | None]] = Deferred()
        self.session = uuid.uuid4().hex
        self.protocolName: str | None = None

    def onConnect(self, response: Any) -> None:
        self.protocolName = response.protocol

    def onOpen(self) -> None:
        self.factory.connected.callback(self)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if not self.factory.connected.called:
            self.factory.connected.errback(ConnectionError(f"{code} {reason}"))
        if not self.closed.called:
            self.closed.callback((code, reason))

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.protocolName == wire.V1_PROTOCOL:
            channel, parts = wire.decode_v1(payload)
            msg = {
                "channel": channel,
                "header": json.loads(parts[0]),
                "parent_header": json.loads(parts[1]),
                "metadata": json.loads(parts[2]),
                "content": json.loads(parts[3]),
                "buffers": parts[4:],
            }
        else:
            channel, msg = wire.decode_legacy(payload, isBinary)
            msg["channel"] = channel
        self.messages.put(msg)

    def disconnect(self) -> Deferred[Any]:
        if not self.closed.called:
            self.sendClose(1000)
        return withTimeout(self.closed)

    def send(
        self,
        msgType: str,
        content: dict[str, Any],
        channel: str | None = "shell",
        msgId: str = "",
    ) -> str:
        """
        Send a message in this connection's wire format and return its id; a legacy message
        with C{channel} C{None} carries C{"channel": null}.
        """
        msgId = msgId or uuid.uuid4().hex
        msg = {
            "header": {
                "msg_id": msgId,
                "msg_type": msgType,
                "username": "test",
                "session": self.session,
                "version": "5.3",
                "date": "2026-01-01T00:00:00.000000Z",
            },
            "parent_header": {},
            "metadata": {},
            "content": content,
        }
        if self.protocolName == wire.V1_PROTOCOL:
            parts = wire.dict_to_parts(msg)
            self.sendMessage(
                wire.encode_v1("shell" if channel is None else channel, parts), isBinary=True
            )
        else:
            msg["channel"] = channel
            self.sendMessage(json.dumps(msg).encode())
        return msgId

    async def next(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = TIMEOUT
    ) -> dict[str, Any]:
        """The next message that C{match} accepts; the others are dropped."""
        while True:
            msg = await withTimeout(self.messages.get(), timeout)
            if match(msg):
                return msg

    async def execute(self, code: str, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        """Run C{code}; return every message of its execution, up to its reply and idle status."""
        msgId = self.send("execute_request", {"code": code, "silent": False})
        return await self.collect(msgId, timeout)

    async def collect(self, msgId: str, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        """Every message answering request C{msgId}, up to its reply and idle status."""
        seen: list[dict[str, Any]] = []
        reply = idle = False
        while not (reply and idle):
            msg = await self.next(lambda m: m["parent_header"].get("msg_id") == msgId, timeout)
            seen.append(msg)
            reply = reply or msg["header"]["msg_type"] == "execute_reply"
            idle = idle or (
                msg["header"]["msg_type"] == "status"
                and msg["content"]["execution_state"] == "idle"
            )
        return seen


def stdout(messages: list[dict[str, Any]]) -> str:
    return "".join(
        m["content"]["text"]
        for m in messages
        if m["header"]["msg_type"] == "stream" and m["content"]["name"] == "stdout"
    )


def reply(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return next(m for m in messages if m["header"]["msg_type"] == "execute_reply")
