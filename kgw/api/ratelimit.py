"""IOPub rate limiting, with jupyter_server's settings and semantics. Pure: time is passed in.

Over a sliding window of C{window} seconds, output messages (all iopub messages but C{status},
C{comm_open} and C{execute_input}) are counted, and the bytes of C{stream} messages summed. Past
either limit, output is dropped until the rate falls below 80% of the limit again; the client
is told once each time dropping starts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

UNLIMITED_TYPES = frozenset({"status", "comm_open", "execute_input"})


class IOPubRateLimiter:
    """
    The rate limits of one client's iopub stream.

    @param messageRate: most output messages per second (0: no limit).
    @param dataRate: most bytes of stream output per second (0: no limit).
    @param window: seconds over which rates are measured.
    """

    def __init__(self, messageRate: float, dataRate: float, window: float) -> None:
        self.messageRate = messageRate
        self.dataRate = dataRate
        self.window = window
        self._recent: deque[tuple[float, int]] = deque()
        self._messages = 0
        self._bytes = 0
        self.messagesExceeded = False
        self.dataExceeded = False

    @property
    def active(self) -> bool:
        return bool(self.messageRate or self.dataRate)

    def admit(self, now: float, msgType: str, parts: Sequence[bytes]) -> tuple[bool, str | None]:
        """
        Whether to send an iopub message of C{msgType} now, and a notice for the client when
        dropping begins.
        """
        if msgType in UNLIMITED_TYPES:
            return True, None
        while self._recent and self._recent[0][0] <= now:
            _, size = self._recent.popleft()
            self._messages -= 1
            self._bytes -= size
        size = sum(len(part) for part in parts) if msgType == "stream" else 0
        self._recent.append((now + self.window, size))
        self._messages += 1
        self._bytes += size
        notice = None
        messageRate = self._messages / self.window
        if self.messageRate and messageRate > self.messageRate:
            if not self.messagesExceeded:
                self.messagesExceeded = True
                notice = _notice("message", "iopub_msg_rate_limit", self.messageRate, self.window)
        elif self.messagesExceeded and messageRate < 0.8 * self.messageRate:
            self.messagesExceeded = False
        dataRate = self._bytes / self.window
        if self.dataRate and dataRate > self.dataRate:
            if not self.dataExceeded:
                self.dataExceeded = True
                notice = notice or _notice(
                    "data", "iopub_data_rate_limit", self.dataRate, self.window
                )
        elif self.dataExceeded and dataRate < 0.8 * self.dataRate:
            self.dataExceeded = False
        if self.messagesExceeded or self.dataExceeded:
            # What is not sent does not count against the rate.
            self._recent.pop()
            self._messages -= 1
            self._bytes -= size
            return False, notice
        return True, None


def _notice(what: str, option: str, limit: float, window: float) -> str:
    return (
        f"IOPub {what} rate exceeded.\n"
        "The gateway will temporarily stop sending output\n"
        "to the client in order to avoid crashing it.\n"
        "To change this limit, set the option\n"
        f"`--{option.replace('_', '-')}`.\n\n"
        "Current values:\n"
        f"{option}={limit:g}\n"
        f"rate_limit_window={window:g} (secs)\n"
    )
