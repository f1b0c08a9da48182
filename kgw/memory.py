"""
Giving memory the gateway freed back to the system (glibc only).

A kernel flooding its output passes through the gateway as messages of up to megabytes. glibc
serves such blocks from its heap once it has freed one of that size, and gives freed heap pages
back only when they are at its top: after a flood the gateway kept hundreds of megabytes it no
longer used. Mapping every large block on its own (a fixed C{M_MMAP_THRESHOLD}) returns them
at once, but each new block then faults its pages in: measured here, it halved the rate at
which the gateway reads a flooding kernel. So the gateway keeps glibc's heap, and asks glibc
every L{TRIM_INTERVAL} seconds to return its free pages (C{malloc_trim}: a few milliseconds
for hundreds of megabytes).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
from collections.abc import Callable

from twisted.application.service import Service
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall

TRIM_INTERVAL = 10.0


def mallocTrim() -> Callable[[], object] | None:
    """glibc's C{malloc_trim(0)}, which returns every arena's free pages; C{None} elsewhere."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


class MemoryTrimmer(Service):
    """Calls C{trim} every C{interval} seconds while running."""

    def __init__(
        self, clock: IReactorTime, trim: Callable[[], object], interval: float = TRIM_INTERVAL
    ) -> None:
        self._loop = LoopingCall(trim)
        self._loop.clock = clock
        self.interval = interval

    def startService(self) -> None:
        super().startService()
        self._loop.start(self.interval, now=False)

    def stopService(self) -> None:
        if self._loop.running:
            self._loop.stop()
        return super().stopService()
