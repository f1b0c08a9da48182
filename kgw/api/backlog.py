"""
What waits to be sent to one websocket client that reads slower than its kernel writes. Pure: no
reactor, no I/O.

The client's transport says when its buffer is full (it pauses its producer, the websocket);
from then on the kernel's messages wait here, in order, within a bound of bytes and messages.
Past the bound, iopub output (every iopub message but those the rate limiter never limits:
C{status}, C{comm_open}, C{execute_input}) is dropped until the client has caught up with all
that waits for it; then it is told how much it lost (L{Backlog.notice}; the websocket tells
at most every L{NOTICE_INTERVAL} seconds, adding up what was dropped meanwhile). Replies on
shell, control and stdin are never dropped; a client that lets even those pile up past twice
the bound is hopeless, and is disconnected (L{Backlog.add} says so).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kgw.api.ratelimit import UNLIMITED_TYPES

QUEUED = "queued"
DROPPED = "dropped"
OVERFLOW = "overflow"
# Seconds between two notices of dropped output to one client.
NOTICE_INTERVAL = 10.0


@dataclass(frozen=True)
class BacklogLimits:
    """The most that may wait for one client: bytes of message parts, and messages."""

    maxBytes: int = 8 * 1024 * 1024
    maxMessages: int = 10_000


def droppable(channel: str, msgType: str) -> bool:
    """Whether a message may be dropped for a client that cannot keep up: iopub output only."""
    return channel == "iopub" and msgType not in UNLIMITED_TYPES


class Backlog:
    """
    The messages waiting for one client, oldest first, and what was dropped that the client
    was not told of yet.

    @ivar dropping: whether output is dropped, from the first message that did not fit until
        the client has caught up.
    @ivar droppedMessages: messages dropped that the client was not told of.
    @ivar droppedBytes: their bytes.
    @ivar droppedParent: the parent header (raw) of the last one dropped, under which the
        client is told: a notebook shows the notice in the cell whose output was lost.
    """

    def __init__(self, limits: BacklogLimits) -> None:
        self.limits = limits
        self.messages: deque[tuple[str, dict[str, Any], Sequence[bytes], int]] = deque()
        self.size = 0
        self.dropping = False
        self.droppedMessages = 0
        self.droppedBytes = 0
        self.droppedParent = b"{}"

    def __len__(self) -> int:
        return len(self.messages)

    def add(
        self, channel: str, header: dict[str, Any], parts: Sequence[bytes], mayDrop: bool
    ) -> str:
        """
        Keep a message for the client, or drop it if C{mayDrop} (see L{droppable}): L{QUEUED},
        L{DROPPED}, or L{OVERFLOW} when a message that is never dropped finds twice the bound
        used (it is not kept).
        """
        size = sum(len(part) for part in parts)
        limits = self.limits
        if mayDrop:
            # One message fits in an empty backlog whatever its size: a large output is not
            # lost to a client that is merely a little behind.
            full = self.messages and (
                self.size + size > limits.maxBytes or len(self.messages) >= limits.maxMessages
            )
            if self.dropping or full:
                self.dropping = True
                self.droppedMessages += 1
                self.droppedBytes += size
                self.droppedParent = parts[1]
                return DROPPED
        elif self.size + size > 2 * limits.maxBytes or len(self.messages) >= 2 * limits.maxMessages:
            return OVERFLOW
        self.messages.append((channel, header, parts, size))
        self.size += size
        return QUEUED

    def pop(self) -> tuple[str, dict[str, Any], Sequence[bytes]]:
        """The oldest message waiting."""
        channel, header, parts, size = self.messages.popleft()
        self.size -= size
        return channel, header, parts

    def caughtUp(self) -> None:
        """The client has been sent all that waited: dropping ends."""
        self.dropping = False

    def notice(self) -> str | None:
        """A notice for the client of what was dropped since the last one; C{None} if nothing."""
        if not self.droppedMessages:
            return None
        notice = (
            f"[kgw] {self.droppedMessages} output messages ({_megabytes(self.droppedBytes)}) "
            "were dropped: this client did not read them as fast as the kernel wrote them.\n"
            "The gateway keeps at most "
            f"{_megabytes(self.limits.maxBytes)} or {self.limits.maxMessages} messages "
            "waiting for a client.\n"
            "To change this limit, set the options\n"
            "`--client-buffer-max-bytes` and `--client-buffer-max-messages`.\n"
        )
        self.droppedMessages = self.droppedBytes = 0
        return notice

    def clear(self) -> None:
        self.messages.clear()
        self.size = 0


def _megabytes(size: int) -> str:
    return f"{size / 1e6:.1f} MB" if size >= 1_000_000 else f"{size} bytes"
