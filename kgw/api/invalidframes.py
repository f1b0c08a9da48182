"""
What to do about the invalid messages one websocket client sends. Pure: time is passed in.

Each invalid message used to be logged in full, without limit: a client sending garbage wrote
the log full. Now the first is logged, the ones after it are counted and the count logged at
most every L{WARNING_INTERVAL} seconds, and a client that sends L{CLOSE_AFTER} invalid messages
in a row, with no valid one between them, is closed (with 1008, policy violation).
"""

from __future__ import annotations

from dataclasses import dataclass

WARNING_INTERVAL = 10.0
CLOSE_AFTER = 100


@dataclass(frozen=True)
class Verdict:
    """
    What one invalid message calls for.

    @ivar first: log this message in full: it is the connection's first invalid one.
    @ivar counted: log that this many invalid messages (this one included) came since the
        last warning (0: not now).
    @ivar close: close the connection: too many invalid messages in a row.
    """

    first: bool = False
    counted: int = 0
    close: bool = False


class InvalidFrames:
    """The invalid messages of one connection: its streak, and what is still to be logged."""

    def __init__(self, interval: float = WARNING_INTERVAL, closeAfter: int = CLOSE_AFTER) -> None:
        self.interval = interval
        self.closeAfter = closeAfter
        self.streak = 0
        self.unlogged = 0
        self._lastWarning: float | None = None

    def valid(self) -> None:
        """A valid message: the streak ends."""
        self.streak = 0

    def invalid(self, now: float) -> Verdict:
        """An invalid message, at time C{now}."""
        self.streak += 1
        close = self.streak >= self.closeAfter
        if self._lastWarning is None:
            self._lastWarning = now
            return Verdict(first=True, close=close)
        self.unlogged += 1
        if now - self._lastWarning >= self.interval:
            self._lastWarning = now
            return Verdict(counted=self.flush(), close=close)
        return Verdict(close=close)

    def flush(self) -> int:
        """How many invalid messages were not logged yet (the connection is ending); now none."""
        count, self.unlogged = self.unlogged, 0
        return count
