"""Keeping a disconnected session's messages until its client comes back.

When the last websocket of a C{session_id} closes without saying it is done (any close but a
normal one, code 1000, from the client: a dropped network, a page going away), its sockets stay
open and what the kernel sends for it is kept, within bounds, to be replayed in order when a
websocket with the same C{session_id} reconnects. Unlike jupyter_server's, the buffer is bounded
(messages, bytes, time, sessions): past the bound the oldest messages go, and the client is told
how many on reconnection.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
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


class SessionBuffer:
    """
    Stands in for a departed client: keeps the messages the kernel sends it, oldest first, and
    drops the oldest past C{limits}.
    """

    def __init__(self, limits: BufferLimits) -> None:
        self.limits = limits
        self.messages: deque[tuple[str, dict[str, Any], Sequence[bytes], int]] = deque()
        self.size = 0
        self.dropped = 0

    def relay(self, channel: str, header: dict[str, Any], parts: Sequence[bytes]) -> None:
        size = sum(len(part) for part in parts)
        self.messages.append((channel, header, parts, size))
        self.size += size
        while self.messages and (
            len(self.messages) > self.limits.maxMessages or self.size > self.limits.maxBytes
        ):
            *_, oldest = self.messages.popleft()
            self.size -= oldest
            self.dropped += 1

    def kernelGone(self, code: int, reason: str) -> None:
        """Nobody is connected to tell: the buffer simply goes with the kernel."""
        self.messages.clear()
        self.size = 0
