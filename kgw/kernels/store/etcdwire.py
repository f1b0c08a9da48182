"""etcd's v3 JSON gateway, as the etcd kernel store calls it: one POST per call.

Keys and values travel base64-encoded; int64 fields (lease ids, revisions) are JSON strings.
The HTTP client is Twisted's own L{Agent} over persistent connections: the JSON gateway needs
nothing more, so kgw gains no dependency (treq, or an etcd client library, would add one).
"""

from __future__ import annotations

import base64
import json
from io import BytesIO
from typing import Any
from urllib.parse import urlsplit

from twisted.internet.defer import Deferred
from twisted.internet.task import Cooperator
from twisted.web.client import Agent, FileBodyProducer, HTTPConnectionPool, readBody
from twisted.web.http_headers import Headers

from kgw.errors import StoreUnavailable
from kgw.kernels.store.directory import KernelRecord, RecordError, checkRecord, kernelIdOf


def parseStoreURL(url: str) -> tuple[str, int, str]:
    """
    The host, port and key prefix of C{etcd://HOST:PORT[/prefix]} (prefix C{/kgw} by default).

    @raise ValueError: saying what is wrong with C{url}.
    """
    parts = urlsplit(url)
    if parts.scheme != "etcd":
        raise ValueError(f"expected etcd://HOST:PORT[/prefix], got {url!r}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if not parts.hostname or port is None:
        raise ValueError(f"expected etcd://HOST:PORT[/prefix] with a host and port, got {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"no query or fragment expected in {url!r}")
    prefix = parts.path.rstrip("/") or "/kgw"
    return parts.hostname, port, prefix


def b64(data: str | bytes) -> str:
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode("ascii")


def unb64(text: str) -> bytes:
    return base64.b64decode(text)


def rangeEnd(prefix: str) -> str:
    """The C{range_end} of every key starting with C{prefix} (its last byte plus one)."""
    raw = prefix.encode()
    return b64(raw[:-1] + bytes([raw[-1] + 1]))


class EtcdClient:
    """Calls of etcd's v3 JSON gateway at C{host:port}, each bounded by C{timeout} seconds."""

    def __init__(
        self, reactor: Any, host: str, port: int, timeout: float = 5.0, pool: Any = None
    ) -> None:
        self.reactor = reactor
        self.base = f"http://{host}:{port}"
        self.timeout = timeout
        self.pool = pool if pool is not None else HTTPConnectionPool(reactor, persistent=True)
        self.agent = Agent(reactor, pool=self.pool)
        # Bodies are written on this reactor, not on the global one.
        self.cooperator = Cooperator(scheduler=lambda work: reactor.callLater(0, work))

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """
        POST C{body} to C{/v3/<path>} and the JSON answer.

        @raise StoreUnavailable: etcd cannot be reached, does not answer in time, or refuses.
        """
        url = f"{self.base}/v3/{path}"
        try:
            request = self.agent.request(
                b"POST",
                url.encode(),
                Headers({b"Content-Type": [b"application/json"]}),
                FileBodyProducer(BytesIO(json.dumps(body).encode()), cooperator=self.cooperator),
            )
            request.addTimeout(self.timeout, self.reactor)
            response = await request
            content = await readBody(response).addTimeout(self.timeout, self.reactor)
        except Exception as e:
            raise StoreUnavailable(
                f"The kernel store (etcd at {self.base}) cannot be reached: {e.__class__.__name__}"
            ) from e
        try:
            answer = json.loads(content)
        except ValueError:
            answer = None
        if response.code != 200 or not isinstance(answer, dict):
            message = (
                answer.get("message")
                if isinstance(answer, dict)
                else content[:200].decode(errors="replace")
            )
            raise StoreUnavailable(
                f"The kernel store (etcd at {self.base}) answered {response.code}: {message}"
            )
        return answer

    def close(self) -> Deferred[None]:
        return self.pool.closeCachedConnections()


def ownerIn(answer: dict[str, Any]) -> dict[str, Any] | None:
    """The owner key read by a transaction's C{request_range}: value, lease, revisions."""
    for response in answer.get("responses", []):
        for kv in response.get("response_range", {}).get("kvs", []):
            return kv
    return None


def parseEtcdRecord(kernelId: str, value: bytes) -> KernelRecord:
    """
    The record of kernel C{kernelId} held by C{value}, checked field by field.

    @raise RecordError: naming the first problem found.
    """
    if kernelIdOf(f"{kernelId}.json") is None:
        raise RecordError("the key does not end with a kernel id")
    try:
        values = json.loads(value)
    except ValueError as e:
        raise RecordError(f"not JSON: {e}") from None
    if not isinstance(values, dict):
        raise RecordError("not a JSON object")
    return checkRecord(values, kernelId)


def modelOf(kernelId: str, value: bytes, now: str) -> dict[str, Any] | None:
    """
    The REST model of a kernel as its record C{value} tells it, the state its owner alone knows
    being C{unknown}; C{None} for a record not handed out (a kernel starting, or warm in a
    pool: nobody's kernel yet) or not readable.
    """
    try:
        values = json.loads(value)
    except ValueError:
        return None
    if not isinstance(values, dict) or not isinstance(values.get("name"), str):
        return None
    if values.get("handedOut") is not True:
        return None
    return {
        "id": kernelId,
        "name": values["name"],
        "last_activity": values.get("lastActivity") or now,
        "execution_state": "unknown",
        "connections": 0,
    }
