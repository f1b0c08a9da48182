"""
Run code on a kernel through a kernel gateway, with Twisted and Autobahn.

Starts a kernel over the REST API, opens its channels websocket, runs print("Hello world!") and
prints what comes back, then closes the websocket and deletes the kernel. With --rtt N it also
times N executions of `pass`, each from its execute_request to both its execute_reply and its
idle status.

    GATEWAY_HOST=127.0.0.1:8888 [KG_AUTH_TOKEN=...] python client.py [--rtt N]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import uuid
import warnings
from datetime import datetime, timezone
from io import BytesIO
from typing import Any
from urllib.parse import urlsplit

from autobahn.twisted.websocket import WebSocketClientFactory, WebSocketClientProtocol
from twisted.internet import defer
from twisted.internet.defer import Deferred, DeferredQueue
from twisted.internet.task import react
from twisted.web.client import Agent, FileBodyProducer, readBody
from twisted.web.http_headers import Headers

TIMEOUT = 60.0  # seconds, for the whole run

# readBody warns on every response of Agent, whose transport lacks abortConnection
# (https://github.com/twisted/twisted/issues/8227): the warning says nothing about this client.
warnings.filterwarnings("ignore", "Using readBody", DeprecationWarning)


class ClientError(Exception):
    """The gateway or the kernel did not answer as expected."""


class Gateway:
    """The gateway's REST API, over Twisted's HTTP client."""

    def __init__(self, reactor: Any, host: str, token: str | None) -> None:
        self.host = host
        self.agent = Agent(reactor)
        self.headers = {"Authorization": f"token {token}"} if token else {}
        self.kernelId: str | None = None  # the kernel this client started and has not deleted

    async def request(self, method: str, path: str, body: Any = None) -> Any:
        """Make a request; return its decoded JSON body, raising on a status other than 2xx."""
        headers = Headers({name: [value] for name, value in self.headers.items()})
        producer = None
        if body is not None:
            headers.addRawHeader("Content-Type", "application/json")
            producer = FileBodyProducer(BytesIO(json.dumps(body).encode()))
        url = f"http://{self.host}{path}".encode()
        response = await self.agent.request(method.encode(), url, headers, producer)
        content = await readBody(response)
        if not 200 <= response.code < 300:
            text = content.decode(errors="replace")
            raise ClientError(f"{method} {path} answered {response.code}: {text}")
        return json.loads(content) if content else None


class Channels(WebSocketClientProtocol):
    """A kernel's channels websocket, legacy protocol: a JSON text frame per message."""

    def __init__(self) -> None:
        super().__init__()
        self.inbox: DeferredQueue[Any] = DeferredQueue()
        self.closed: Deferred[None] = Deferred()

    def onOpen(self) -> None:
        self.factory.opened.callback(self)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        # Binary legacy frames carry messages with buffers, which `print` and `pass` never make.
        if not isBinary:
            self.inbox.put(json.loads(payload))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        error = ClientError(f"websocket closed ({code} {reason})")
        if not self.factory.opened.called:
            self.factory.opened.errback(error)
            return
        self.inbox.put(error)  # wakes up a reader still waiting for a message
        self.closed.callback(None)

    async def receive(self) -> dict[str, Any]:
        msg = await self.inbox.get()
        if isinstance(msg, Exception):
            raise msg
        return msg

    def execute(self, code: str) -> str:
        """Send an execute_request on the shell channel; return its msg_id."""
        msgId = uuid.uuid4().hex
        msg = {
            "header": {
                "msg_id": msgId,  # replies and iopub messages name it in their parent_header
                "msg_type": "execute_request",
                "username": "kgw-example",
                "session": self.factory.session,
                "version": "5.3",
                "date": datetime.now(timezone.utc).isoformat(),
            },
            "parent_header": {},
            "metadata": {},
            "content": {
                "code": code,
                "silent": False,
                "store_history": False,
                "user_expressions": {},
                "allow_stdin": False,
            },
            "channel": "shell",  # the legacy protocol names the channel in the message
        }
        self.sendMessage(json.dumps(msg).encode())
        return msgId


class ChannelsFactory(WebSocketClientFactory):
    protocol = Channels

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        super().__init__(url, headers=headers)
        self.session = uuid.uuid4().hex  # the session of the messages this client sends
        self.opened: Deferred[Channels] = Deferred()

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self.opened.errback(reason)


async def hello(ws: Channels) -> None:
    """Run print("Hello world!"), printing each message type, until its output arrives."""
    msgId = ws.execute('print("Hello world!")')
    while True:
        msg = await ws.receive()
        msgType = msg["header"]["msg_type"]
        print(f"Received message type: {msgType}")
        if msg["parent_header"].get("msg_id") != msgId:
            continue  # e.g. the status messages of a kernel that is just starting
        if msgType == "error":
            raise ClientError(f"{msg['content']['ename']}: {msg['content']['evalue']}")
        if msgType == "stream":
            print(msg["content"]["text"], end="")
            return
        if msgType == "status" and msg["content"]["execution_state"] == "idle":
            raise ClientError("the execution finished without output")


async def roundTrips(ws: Channels, count: int) -> None:
    """Time `count` executions of `pass` one after another, and print their median and p90."""
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        msgId = ws.execute("pass")
        # The reply comes on shell and the idle status on iopub, in either order.
        reply = idle = False
        while not (reply and idle):
            msg = await ws.receive()
            if msg["parent_header"].get("msg_id") != msgId:
                continue  # leftovers of the previous execution
            msgType = msg["header"]["msg_type"]
            reply = reply or msgType == "execute_reply"
            idle = idle or (msgType == "status" and msg["content"]["execution_state"] == "idle")
        samples.append((time.perf_counter() - start) * 1000)
    samples.sort()
    p90 = samples[math.ceil(0.9 * count) - 1]  # nearest rank
    print(f"rtt_ms median={statistics.median(samples):.3f} p90={p90:.3f} n={count}")


async def run(reactor: Any, gateway: Gateway, rtt: int) -> None:
    model = await gateway.request("POST", "/api/kernels", {})
    gateway.kernelId = model["id"]
    print(f"Created kernel {json.dumps(model)}")
    url = f"ws://{gateway.host}/api/kernels/{model['id']}/channels"
    factory = ChannelsFactory(url, gateway.headers)
    address = urlsplit(url)
    reactor.connectTCP(address.hostname, address.port or 80, factory)
    ws = await factory.opened
    await hello(ws)
    if rtt:
        await roundTrips(ws, rtt)
    ws.sendClose(1000)
    await ws.closed
    await gateway.request("DELETE", f"/api/kernels/{model['id']}")
    gateway.kernelId = None
    print(f"Deleted kernel {model['id']}")


async def main(reactor: Any) -> None:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--rtt", type=int, default=0, metavar="N", help="time N runs of pass")
    args = parser.parse_args()
    if args.rtt < 0:
        parser.error("--rtt takes a number of executions")
    host = os.environ.get("GATEWAY_HOST", "127.0.0.1:8888")
    gateway = Gateway(reactor, host, os.environ.get("KG_AUTH_TOKEN"))
    try:
        await Deferred.fromCoroutine(run(reactor, gateway, args.rtt)).addTimeout(TIMEOUT, reactor)
    except defer.TimeoutError:
        error = f"no result within {TIMEOUT:.0f} seconds"
    except Exception as e:
        error = str(e) or repr(e)
    else:
        return
    print(f"error: {error}", file=sys.stderr)
    if gateway.kernelId:  # do not leave a kernel running behind, if the gateway still answers
        delete = gateway.request("DELETE", f"/api/kernels/{gateway.kernelId}")
        await Deferred.fromCoroutine(delete).addTimeout(10, reactor).addErrback(lambda _: None)
    raise SystemExit(1)


if __name__ == "__main__":
    react(main)
