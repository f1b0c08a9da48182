"""Log events as JSON lines: one object per event, one event per line, for log shippers.

Each object holds the event's C{time} (ISO 8601, UTC), C{level}, C{namespace}, C{system} (when
set), C{message} (the text twistd's text log would show) and C{traceback} (for a failure), then
the event's own keys whose values are JSON: C{kernelId}, C{route}, C{status}... Objects a key
may hold (a request, a failure) are left out; only what a format or JSON can show is written.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import IO, Any

from twisted.logger import FileLogObserver, LogEvent, formatEvent

from kgw.jupyter import isoformat

# Keys of events from twisted.python.log, shown through the message or not at all.
_LEGACY = frozenset({"message", "isError", "format", "failure", "why", "time", "system"})
_OWN = ("time", "level", "namespace", "system", "message", "traceback")


def _isJSON(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError, RecursionError):
        return False
    return True


def eventAsDict(event: LogEvent) -> dict[str, Any]:
    """The JSON object of C{event}, as L{eventAsLine} writes it."""
    when = event.get("log_time")
    level = event.get("log_level")
    found: dict[str, Any] = {
        "time": None if when is None else isoformat(datetime.fromtimestamp(when, timezone.utc)),
        "level": getattr(level, "name", "info"),
        "namespace": event.get("log_namespace", ""),
    }
    system = event.get("log_system")
    if isinstance(system, str) and system != "-":
        found["system"] = system
    found["message"] = formatEvent(event)
    failure = event.get("log_failure")
    if failure is not None:
        try:
            found["traceback"] = failure.getTraceback()
        except Exception:
            found["traceback"] = repr(failure)
    for key, value in event.items():
        if (
            isinstance(key, str)
            and not key.startswith("log_")
            and key not in _LEGACY
            and key not in _OWN
            and _isJSON(value)
        ):
            found[key] = value
    return found


def eventAsLine(event: LogEvent) -> str:
    """C{event} as one line of JSON (non-ASCII characters escaped, so nothing splits it)."""
    return json.dumps(eventAsDict(event)) + "\n"


def jsonLineObserver(outFile: IO[Any]) -> FileLogObserver:
    """An observer writing each event to C{outFile} as one line of JSON."""
    return FileLogObserver(outFile, eventAsLine)
