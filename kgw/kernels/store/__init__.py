"""The kernel store: what a later gateway, or another one, must know of this gateway's kernels.

One interface, L{KernelStore}: records (how to reach and adopt each kernel), their owner (which
gateway may serve a kernel), and adoption (L{kgw.kernels.adoption}), which reads them back.
The state directory of one host is one backend (L{kgw.kernels.store.directory}); etcd, shared by
several gateways with owner keys bound to each gateway's lease, is the other
(L{kgw.kernels.store.etcd}). A verb may answer at once (a directory) or later (etcd): callers
await it through L{answer}.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, cast

from twisted.internet.defer import Deferred

from kgw.kernels.kernel import Kernel
from kgw.kernels.store.directory import InvalidRecord, KernelRecord

_T = TypeVar("_T")
Records = tuple[list[KernelRecord], list[InvalidRecord]]


class KernelStore(Protocol):
    """Where the records of a gateway's kernels are kept."""

    #: How often to look for kernels whose gateway is gone, to adopt them (none: at start only).
    sweepInterval: float | None

    def owns(self, kernelId: str) -> bool:
        """Whether this gateway owns the kernel already (a sweep leaves it alone)."""

    def start(self, lost: Callable[[str], None]) -> None:
        """
        Begin: a shared store takes this gateway's lease, and calls C{lost} with the id of
        each kernel of this gateway that another gateway took over (this one's lease lapsed).
        """

    def stop(self) -> Awaitable[None] | None:
        """End, once the records written are: a shared store gives up this gateway's lease."""

    def own(self, record: KernelRecord) -> Awaitable[None] | None:
        """
        Record a new kernel as this gateway's.

        @raise StoreUnavailable: if a shared store cannot be reached: the kernel must not run.
        """

    def write(self, record: KernelRecord) -> None:
        """Record a kernel, replacing its earlier record; whole or not at all."""

    def remove(self, kernelId: str) -> None:
        """Forget a kernel: it was shut down, or could not be adopted."""

    def read(self) -> Awaitable[Records] | Records:
        """Every record: the usable ones, and those that are not (set aside, never used)."""

    def claim(self, kernelId: str) -> Awaitable[bool] | bool:
        """Make this gateway the owner of a recorded kernel, if no live gateway owns it."""

    def peerOf(self, kernelId: str) -> Awaitable[tuple[str, str] | None] | tuple[str, str] | None:
        """
        The id and address (scheme, host, port) of the live gateway that owns a kernel, when
        it is another gateway that can be reached; else C{None}.
        """

    def kernelModels(self) -> Awaitable[list[dict[str, Any]]] | list[dict[str, Any]]:
        """
        The REST models of the kernels handed out by every gateway sharing the store (none
        for a store of one gateway, whose registry knows them all).
        """


async def answer(value: Awaitable[_T] | _T) -> _T:
    """The answer of a store's verb, whether given at once or later."""
    if isinstance(value, Deferred) or hasattr(value, "__await__"):
        return await cast(Awaitable[_T], value)
    return value


def recordOf(kernel: Kernel, connectionFile: str, handedOut: bool = True) -> KernelRecord:
    """The record of a running kernel: how a later gateway reaches and adopts it."""
    info = dict(kernel.process.connectionInfo)
    if isinstance(info.get("key"), bytes):
        info["key"] = info["key"].decode("ascii")
    pid = kernel.process.pid
    assert pid is not None, "a kernel without a process id cannot be recorded"
    return KernelRecord(
        kernel.id,
        kernel.name,
        pid,
        connectionFile,
        info,
        kernel.launchEnv,
        kernel.cwd,
        handedOut,
        getattr(kernel.process, "provisionerInfo", None),
    )
