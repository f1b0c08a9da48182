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

Left to itself, glibc maps a block on its own once it is as large as the largest mapped
block freed so far, and gives the top of its heap back as soon as twice that is free there.
A large output is held twice at once while it is relayed (as read from ZeroMQ, and as the
websocket frame), so both of its blocks were mapped afresh for every message, and each page
faulted in: for 8 MB, about 8 ms of the gateway's 20. L{keepLargeBlocks} fixes glibc's
thresholds where its moving ones would end up after a 32 MiB block: blocks up to
L{LARGE_BLOCK} come from the heap, and up to L{KEEP_FREE} freed at its top stays there for
the next message, until the next trim.
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
# glibc's ceiling for its moving mmap threshold on 64-bit systems, and its trim rule: twice that.
LARGE_BLOCK = 32 * 1024 * 1024
KEEP_FREE = 2 * LARGE_BLOCK
# glibc's mallopt parameters.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


def _glibc() -> ctypes.CDLL | None:
    """The C library, if it is glibc."""
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def mallocTrim() -> Callable[[], object] | None:
    """glibc's C{malloc_trim(0)}, which returns every arena's free pages; C{None} elsewhere."""
    libc = _glibc()
    trim = getattr(libc, "malloc_trim", None)
    if trim is None:
        return None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


def keepLargeBlocks() -> bool:
    """
    Have glibc serve blocks of up to L{LARGE_BLOCK} from its heap, and keep up to L{KEEP_FREE}
    freed at its top, so that large messages reuse memory rather than fault in new pages.

    @return: whether glibc took both settings (C{False} elsewhere).
    """
    libc = _glibc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # Setting either stops glibc moving both: each is set.
    return bool(mallopt(M_TRIM_THRESHOLD, KEEP_FREE)) and bool(
        mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK)
    )


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
