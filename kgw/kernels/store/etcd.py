"""The kernel store shared by several gateways: etcd, through its v3 JSON gateway.

Under a prefix (C{/kgw} unless the store's URL names another):

  - C{<prefix>/kernels/<id>}: the kernel's record (kernelspec, pid, connection info,
    environment, working directory, provisioner, last activity), JSON;
  - C{<prefix>/gateways/<gateway id>}: where that gateway can be reached (scheme, host and
    port), bound to its lease: other gateways forward requests for its kernels there;
  - C{<prefix>/owners/<id>}: the id of the gateway that owns the kernel, bound to that gateway's
    lease. It is created in a transaction only if absent (C{create_revision == 0}), so two
    gateways can never both own a kernel; when a gateway stops renewing its lease (crashed,
    paused, cut off), etcd deletes its owner keys and another gateway may claim its kernels;
  - C{<prefix>/sessions/<session id>}: a REST session (path, name, type, kernel id), JSON, bound
    to no lease: it lives as long as its kernel, whichever gateway owns that.

The lease is granted at start and renewed on the gateway's clock, every third of its TTL. The
calls to etcd are those of L{kgw.kernels.store.etcdwire}.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

from twisted.internet.defer import Deferred, DeferredList, DeferredLock, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from kgw.errors import StoreUnavailable
from kgw.jupyter import isoformat
from kgw.kernels.store.directory import (
    InvalidRecord,
    KernelRecord,
    RecordError,
    kernelIdOf,
)
from kgw.kernels.store.etcdwire import (
    EtcdClient,
    b64,
    modelOf,
    ownerIn,
    parseEtcdRecord,
    parseStoreURL,
    rangeEnd,
    unb64,
)

log = Logger()


class EtcdStore:
    """
    The records and owners of the kernels of every gateway sharing one etcd.

    @param reactor: makes the HTTP connections and schedules the lease's renewal.
    @param url: C{etcd://HOST:PORT[/prefix]}.
    @param gatewayId: this gateway's name in owner keys.
    @param leaseTTL: seconds after which a gateway that stopped renewing loses its kernels.
    """

    def __init__(
        self,
        reactor: Any,
        url: str,
        gatewayId: str,
        leaseTTL: float = 10.0,
        clock: IReactorTime | None = None,
        sweepInterval: float = 1.0,
        address: str | None = None,
    ) -> None:
        host, port, self.prefix = parseStoreURL(url)
        self.clock: IReactorTime = clock if clock is not None else reactor
        self.gatewayId = gatewayId
        self.leaseTTL = leaseTTL
        self.client = EtcdClient(reactor, host, port, timeout=max(1.0, min(5.0, leaseTTL / 2)))
        #: Where other gateways reach this one (none: they cannot forward requests to it).
        self.address = address
        #: The current lease's id, while this gateway holds one.
        self.lease: str | None = None
        #: The kernels this gateway owns: re-claimed under a new lease if the old one expired.
        self.owned: set[str] = set()
        self._renewal: LoopingCall | None = None
        self._pending: set[Deferred[Any]] = set()
        self._leaseLock = DeferredLock()
        self._lost: Callable[[str], None] = lambda kernelId: None
        #: The owner of each kernel as last read (by a sweep), by kernel id; none read yet.
        self.lastOwners: dict[str, str] | None = None
        #: How often kernels whose owner's lease expired are looked for, and adopted.
        self.sweepInterval: float | None = sweepInterval

    def _key(self, kind: str, kernelId: str = "") -> str:
        return f"{self.prefix}/{kind}/{kernelId}"

    # Lease

    def start(self, lost: Callable[[str], None] = lambda kernelId: None) -> None:
        """
        Grant the lease now, and renew it every third of its TTL on the clock; C{lost} is
        called with each kernel another gateway took over while this one's lease had lapsed.
        """
        self._lost = lost

        def renew() -> Deferred[None]:
            return ensureDeferred(self.renew()).addErrback(
                lambda f: log.failure("Renewing the lease in the kernel store failed", f)
            )

        self._renewal = LoopingCall(renew)
        self._renewal.clock = self.clock
        self._renewal.start(self.leaseTTL / 3, now=True)

    async def renew(self) -> None:
        """Renew the lease; grant a new one (and re-claim this gateway's kernels) if it lapsed."""
        try:
            if self.lease is not None:
                answer = await self.client.call("lease/keepalive", {"ID": self.lease})
                if int(answer.get("result", {}).get("TTL", 0)) > 0:
                    return
                log.error(
                    "The lease of gateway {gatewayId} in the kernel store expired",
                    gatewayId=self.gatewayId,
                )
                self.lease = None
            await self.holdLease()
            for kernelId in sorted(self.owned):
                if not await self.claim(kernelId):
                    log.error(
                        "Kernel {kernelId} is now owned by another gateway", kernelId=kernelId
                    )
                    self.owned.discard(kernelId)
                    self._lost(kernelId)
        except StoreUnavailable as e:
            log.warn("Cannot renew the lease in the kernel store: {error}", error=e)

    async def holdLease(self) -> str:
        """
        This gateway's lease: the current one, or one granted now (one grant at a time).

        @raise StoreUnavailable: if etcd cannot be reached.
        """
        async with self._leaseLock:
            if self.lease is None:
                await self.grant()
            assert self.lease is not None
            return self.lease

    async def grant(self) -> str:
        """A new lease of C{leaseTTL} seconds, now this gateway's."""
        answer = await self.client.call("lease/grant", {"TTL": max(1, round(self.leaseTTL))})
        lease = str(answer["ID"])
        if self.address is not None:
            put = {
                "key": b64(self._key("gateways", self.gatewayId)),
                "value": b64(self.address),
                "lease": lease,
            }
            await self.client.call("kv/put", put)
        self.lease = lease
        log.info(
            "Gateway {gatewayId} holds lease {lease} in the kernel store ({ttl} s)",
            gatewayId=self.gatewayId,
            lease=self.lease,
            ttl=answer.get("TTL"),
        )
        return self.lease

    async def stop(self) -> None:
        """Stop renewing; revoke the lease, so that this gateway's owner keys go at once."""
        if self._renewal is not None and self._renewal.running:
            self._renewal.stop()
        if self._pending:
            await DeferredList(list(self._pending))
        if self.lease is not None:
            try:
                await self.client.call("lease/revoke", {"ID": self.lease})
            except StoreUnavailable as e:
                log.warn("Cannot revoke the lease: {error}", error=e)
            self.lease = None
        await self.client.close()

    # The KernelStore interface

    def owns(self, kernelId: str) -> bool:
        return kernelId in self.owned

    def _value(self, record: KernelRecord) -> str:
        values = asdict(record)
        values["owner"] = self.gatewayId
        values["lastActivity"] = isoformat(datetime.now(timezone.utc))
        return b64(json.dumps(values))

    def _background(self, work: Any, doing: str, kernelId: str) -> None:
        d = ensureDeferred(work)
        self._pending.add(d)

        def done(result: object) -> None:
            self._pending.discard(d)
            if isinstance(result, Failure):
                log.error(
                    "Cannot {doing} kernel {kernelId} in the kernel store: {error}",
                    doing=doing,
                    kernelId=kernelId,
                    error=result.value,
                )

        d.addBoth(done)

    def write(self, record: KernelRecord) -> None:
        """Replace the record of a kernel (in the background; a failure is logged)."""
        put = {"key": b64(self._key("kernels", record.id)), "value": self._value(record)}
        self._background(self.client.call("kv/put", put), "record", record.id)

    def remove(self, kernelId: str) -> None:
        """Forget a kernel: its record and, if this gateway's, its owner key (in the background)."""
        self.owned.discard(kernelId)
        owner = b64(self._key("owners", kernelId))
        txn = {
            "compare": [
                {"key": owner, "target": "VALUE", "result": "EQUAL", "value": b64(self.gatewayId)}
            ],
            "success": [{"request_delete_range": {"key": owner}}],
        }

        async def both() -> None:
            await self.client.call("kv/txn", txn)
            await self.client.call("kv/deleterange", {"key": b64(self._key("kernels", kernelId))})

        self._background(both(), "forget", kernelId)

    def _ownerPut(self, owner: str, lease: str) -> dict[str, Any]:
        """The put of owner key C{owner} (base64) naming this gateway, bound to C{lease}."""
        return {"request_put": {"key": owner, "value": b64(self.gatewayId), "lease": lease}}

    async def _createOwner(
        self, kernelId: str, also: Sequence[dict[str, Any]] = (), readBack: bool = False
    ) -> tuple[dict[str, Any], str, str]:
        """
        In one transaction, create kernel C{kernelId}'s owner key naming this gateway, under its
        lease, if the key does not exist, with the operations C{also}; else (with C{readBack})
        read the key back. The transaction's answer, the owner key (base64) and the lease.

        @raise StoreUnavailable: if etcd cannot be reached or this gateway holds no lease.
        """
        lease = await self.holdLease()
        owner = b64(self._key("owners", kernelId))
        transaction: dict[str, Any] = {
            "compare": [
                {"key": owner, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}
            ],
            "success": [self._ownerPut(owner, lease), *also],
        }
        if readBack:
            transaction["failure"] = [{"request_range": {"key": owner}}]
        return await self.client.call("kv/txn", transaction), owner, lease

    async def own(self, record: KernelRecord) -> None:
        """
        Record a new kernel as this gateway's, record and owner key in one transaction.

        @raise StoreUnavailable: if etcd cannot be reached, or this gateway holds no lease.
        """
        put = {"key": b64(self._key("kernels", record.id)), "value": self._value(record)}
        answer, _, _ = await self._createOwner(record.id, also=[{"request_put": put}])
        if not answer.get("succeeded"):
            raise StoreUnavailable(f"Kernel {record.id} is already owned by another gateway")
        self.owned.add(record.id)

    async def claim(self, kernelId: str) -> bool:
        """
        Make this gateway the owner of a kernel if no gateway holding a live lease owns it;
        whether it is now this gateway's (C{True} too if it already was).

        @raise StoreUnavailable: if etcd cannot be reached or this gateway holds no lease.
        """
        answer, owner, lease = await self._createOwner(kernelId, readBack=True)
        if answer.get("succeeded"):
            self.owned.add(kernelId)
            return True
        current = ownerIn(answer)
        if current is None or unb64(current.get("value", "")) != self.gatewayId.encode():
            return False
        if current.get("lease") != lease:
            # This gateway's, under the lease of an earlier run of it (restarted after a crash):
            # bound to today's lease, unless it changed meanwhile.
            rebound = await self.client.call(
                "kv/txn",
                {
                    "compare": [
                        {
                            "key": owner,
                            "target": "MOD",
                            "result": "EQUAL",
                            "mod_revision": current.get("mod_revision", "0"),
                        }
                    ],
                    "success": [self._ownerPut(owner, lease)],
                },
            )
            if not rebound.get("succeeded"):
                return False
        self.owned.add(kernelId)
        return True

    async def _range(self, kind: str) -> list[tuple[str, bytes]]:
        """Every key under C{<prefix>/<kind>/}: its last part (a kernel id) and its value."""
        prefix = self._key(kind)
        answer = await self.client.call(
            "kv/range", {"key": b64(prefix), "range_end": rangeEnd(prefix)}
        )
        return [
            (unb64(kv["key"]).decode(errors="replace")[len(prefix) :], unb64(kv.get("value", "")))
            for kv in answer.get("kvs", [])
        ]

    async def read(self) -> tuple[list[KernelRecord], list[InvalidRecord]]:
        """
        The records this gateway may adopt: those of its own kernels and of kernels no live
        gateway owns; the usable ones, and the others (logged, left in place). A sweep costs
        two reads, however many kernels other gateways own.
        """
        owners = await self.owners()
        found, invalid = [], []
        for kernelId, value in await self._range("kernels"):
            if owners.get(kernelId, self.gatewayId) != self.gatewayId:
                continue  # another gateway's, alive
            try:
                found.append(parseEtcdRecord(kernelId, value))
            except RecordError as e:
                log.warn(
                    "Kernel record {key} in the kernel store is invalid ({problem})",
                    key=self._key("kernels", kernelId),
                    problem=e,
                )
                invalid.append(
                    InvalidRecord(
                        kernelId,
                        self._key("kernels", kernelId),
                        str(e),
                        kernelIdOf(f"{kernelId}.json"),
                        {},
                    )
                )
        return found, invalid

    async def _value1(self, key: str) -> str | None:
        answer = await self.client.call("kv/range", {"key": b64(key)})
        for kv in answer.get("kvs", []):
            return unb64(kv.get("value", "")).decode(errors="replace")
        return None

    async def peerOf(self, kernelId: str) -> tuple[str, str] | None:
        """The id and address of the other live gateway that owns a kernel, if any."""
        owner = await self._value1(self._key("owners", kernelId))
        if owner is None or owner == self.gatewayId:
            return None
        address = await self._value1(self._key("gateways", owner))
        return None if address is None else (owner, address)

    async def owners(self) -> dict[str, str]:
        """The owner of each owned kernel, by kernel id."""
        owners = {
            kernelId: value.decode(errors="replace")
            for kernelId, value in await self._range("owners")
        }
        self.lastOwners = owners
        return owners

    async def sessionRecords(self) -> list[tuple[str, bytes]]:
        """Every session recorded, as its id and its JSON value."""
        return await self._range("sessions")

    async def sessionRecord(self, sessionId: str) -> bytes | None:
        """The JSON value of one session, if recorded."""
        value = await self._value1(self._key("sessions", sessionId))
        return None if value is None else value.encode()

    async def putSession(self, sessionId: str, value: bytes) -> None:
        """Record a session, replacing its earlier record."""
        put = {"key": b64(self._key("sessions", sessionId)), "value": b64(value)}
        await self.client.call("kv/put", put)

    async def removeSession(self, sessionId: str) -> None:
        """Forget a session."""
        await self.client.call("kv/deleterange", {"key": b64(self._key("sessions", sessionId))})

    async def kernelModels(self) -> list[dict[str, Any]]:
        """
        The REST model of every kernel recorded, whichever gateway owns it (the cluster view):
        what the record tells; the state a kernel's owner alone knows is C{unknown} here.
        """
        now = isoformat(datetime.now(timezone.utc))
        found = (modelOf(kernelId, value, now) for kernelId, value in await self._range("kernels"))
        return [model for model in found if model is not None]
