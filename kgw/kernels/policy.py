"""The kernel service's settings, in one object: what the registry, launcher and restarter obey."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

from kgw.kernels.buffering import BufferLimits
from kgw.kernels.culling import Culling


@dataclass
class KernelPolicy:
    """
    How kernels are chosen, limited, started, watched and culled.

    @ivar defaultKernelName: the kernelspec of a start that names none (the native one if empty).
    @ivar forceKernelName: the kernelspec of every kernel, whatever a request names.
    @ivar maxKernels: how many kernels may run or start at once (0: no limit).
    @ivar prespawnCount: how many kernels to start with the service.
    @ivar restartLimit: how many times a dead kernel is restarted before it is declared dead.
    @ivar watchInterval: seconds between two checks that a kernel's process lives.
    @ivar startTimeout: seconds a new kernel has to answer on its channels.
    @ivar warmKernels: how many started, seeded kernels to keep ready for each kernelspec of
        C{warmKernelNames} (the default kernelspec when empty).
    @ivar bufferLimits: what is kept for sessions whose clients went away.
    @ivar culling: when idle kernels are shut down.
    """

    defaultKernelName: str = ""
    forceKernelName: str = ""
    maxKernels: int = 0
    prespawnCount: int = 0
    restartLimit: int = 5
    watchInterval: float = 1.0
    startTimeout: float = 60.0
    warmKernels: int = 0
    warmKernelNames: Sequence[str] = ()
    bufferLimits: BufferLimits = field(default_factory=BufferLimits)
    culling: Culling = field(default_factory=Culling)

    def apply(self, arguments: dict[str, Any]) -> tuple[KernelPolicy, dict[str, Any]]:
        """
        This policy with the settings of C{arguments} that are its fields, and the other
        arguments (a test's settings and components, given together).
        """
        names = {f.name for f in fields(self)}
        settings = {k: v for k, v in arguments.items() if k in names}
        return replace(self, **settings), {k: v for k, v in arguments.items() if k not in names}
