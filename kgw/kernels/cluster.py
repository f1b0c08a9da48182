"""
What the other gateways sharing a kernel store hold: every kernel of the cluster, and the owner
of one this gateway does not run. With no shared store (or one that cannot be reached), only
this gateway's own kernels count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from twisted.logger import Logger

from kgw.errors import StoreUnavailable
from kgw.kernels.kernel import Kernel
from kgw.kernels.restarter import Restarter
from kgw.kernels.store import KernelStore, answer

log = Logger()


async def clusterModels(
    store: KernelStore | None, kernels: Iterable[Kernel]
) -> list[dict[str, Any]]:
    """
    The REST models of this gateway's C{kernels} and, with a kernel store shared by several
    gateways, of every other kernel recorded there. If the store cannot be reached, this
    gateway's alone (logged).
    """
    local = [kernel.model() for kernel in kernels]
    if store is None:
        return local
    try:
        recorded = await answer(store.kernelModels())
    except StoreUnavailable as e:
        log.warn("Listing this gateway's kernels only: {error}", error=e)
        return local
    known = {model["id"] for model in local}
    return local + [model for model in recorded if model["id"] not in known]


async def peerOf(store: KernelStore | None, kernelId: str) -> tuple[str, str] | None:
    """
    The id and address of another live gateway that owns kernel C{kernelId}, with a kernel
    store shared by several; else (or if the store cannot be reached) C{None}. The caller asks
    only for a kernel it does not run itself.
    """
    if store is None:
        return None
    try:
        return await answer(store.peerOf(kernelId))
    except StoreUnavailable as e:
        log.warn("No owner found for kernel {kernelId}: {error}", kernelId=kernelId, error=e)
        return None


def fence(
    kernels: dict[str, Kernel],
    released: dict[str, Kernel],
    restarter: Restarter,
    fenced: Callable[[], object],
    kernelId: str,
) -> None:
    """
    Stop serving a kernel another gateway took over while this one's lease had lapsed: take it
    out of C{kernels}, close its clients with 1012 (service restart), so that they reconnect
    through the balancer, and leave its process alone. It is kept in C{released}, never
    collected: jupyter_client's manager deletes the connection file then. C{fenced} is called
    if this gateway served the kernel.
    """
    kernel = kernels.pop(kernelId, None)
    if kernel is None:
        return
    fenced()
    restarter.unwatch(kernel)
    if kernel.channels is not None:
        kernel.channels.close(1012, "kernel taken over by another gateway")
    released[kernelId] = kernel
    log.warn("Kernel {kernelId} is now served by another gateway", kernelId=kernelId)
