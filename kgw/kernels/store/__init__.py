"""The kernel store: what a later gateway, or another one, must know of this gateway's kernels.

One interface, L{KernelStore}: records (how to reach and adopt each kernel), their owner (which
gateway may serve a kernel), and adoption (L{kgw.kernels.adoption}), which reads them back.
The state directory of one host is its backend today (L{kgw.kernels.store.directory}); a store
shared by several gateways (etcd, owner keys bound to a lease) is another behind the same
interface.
"""

from __future__ import annotations

from typing import Protocol

from kgw.kernels.kernel import Kernel
from kgw.kernels.store.directory import InvalidRecord, KernelRecord


class KernelStore(Protocol):
    """Where the records of a gateway's kernels are kept."""

    def write(self, record: KernelRecord) -> None:
        """Record a kernel, replacing its earlier record; whole or not at all."""

    def remove(self, kernelId: str) -> None:
        """Forget a kernel: it was shut down, or could not be adopted."""

    def read(self) -> tuple[list[KernelRecord], list[InvalidRecord]]:
        """Every record: the usable ones, and those that are not (set aside, never used)."""

    def claim(self, kernelId: str) -> bool:
        """Make this gateway the owner of a recorded kernel, if no live gateway owns it."""


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
