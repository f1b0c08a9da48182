"""Keeping a disconnected session's messages until its client comes back.

When the last websocket of a C{session_id} closes without saying it is done (any close but a
normal one, code 1000, from the client: a dropped network, a page going away), its sockets stay
open and what the kernel sends for it is kept, within bounds, to be replayed in order when a
websocket with the same C{session_id} reconnects. Unlike jupyter_server's, the buffer is bounded
(messages, bytes, time, sessions): past the bound the oldest iopub messages go, and the client is
told how many on reconnection. Replies (shell, control, stdin) go only when nothing but replies
is left to drop: a kernel flooding its output does not push them out.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class BufferLimits:
    """
    How much a disconnected session may keep, and for how long.

    @ivar enabled: whether disconnected sessions are buffered at all.
    @ivar timeout: seconds after which an unclaimed buffer is discarded.
    """

    enabled: bool = True
    maxMessages: int = 10_000
    maxBytes: int = 16 * 1024 * 1024
    timeout: float = 600.0
    # Disconnected sessions kept per kernel; past it the oldest one's buffer goes.
    maxSessions: int = 32


Entry = tuple[int, str, dict[str, Any], Sequence[bytes], int]


class SessionBuffer:
    """
    Stands in for a departed client: keeps the messages the kernel sends it, and drops the
    oldest past C{limits}, iopub first.
    """

    def __init__(self, limits: BufferLimits) -> None:
        self.limits = limits
        # Numbered as they come, so that the two queues replay in one order.
        self._iopub: deque[Entry] = deque()
        self._replies: deque[Entry] = deque()
        self._count = 0
        self.size = 0
        self.dropped = 0

    @property
    def messages(self) -> Iterator[tuple[str, dict[str, Any], Sequence[bytes], int]]:
        """The messages kept, in the order they came: C{(channel, header, parts, size)}."""
        for _, channel, header, parts, size in heapq.merge(self._iopub, self._replies):
            yield channel, header, parts, size

    def __len__(self) -> int:
        return len(self._iopub) + len(self._replies)

    def relay(self, channel: str, header: dict[str, Any], parts: Sequence[bytes]) -> None:
        size = sum(len(part) for part in parts)
        self._count += 1
        queue = self._iopub if channel == "iopub" else self._replies
        queue.append((self._count, channel, header, parts, size))
        self.size += size
        while len(self) > self.limits.maxMessages or self.size > self.limits.maxBytes:
            *_, oldest = (self._iopub or self._replies).popleft()
            self.size -= oldest
            self.dropped += 1

    def kernelGone(self, code: int, reason: str) -> None:
        """Nobody is connected to tell: the buffer simply goes with the kernel."""
        self._iopub.clear()
        self._replies.clear()
        self.size = 0
