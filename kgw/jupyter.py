"""What the Jupyter protocols fix and every layer of kgw uses: channel names, the timestamp form."""

from __future__ import annotations

from datetime import datetime, timezone

#: The channels a client sends on, each a socket of its own to the kernel.
CLIENT_CHANNELS = ("shell", "control", "stdin")
#: Every channel a message travels on: the client's, and iopub, which only the kernel sends on.
CHANNELS = (*CLIENT_CHANNELS, "iopub")


def isoformat(moment: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a C{Z}, the form Jupyter clients parse."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
