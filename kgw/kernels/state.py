"""What the gateway writes down about its kernels, so that a new gateway can adopt them.

With a state directory, each kernel has a record there: its id, kernelspec, process id, the
environment and working directory it was started with, and its connection info (ports and
signing key). Records are written atomically (a temporary file renamed over the old one), so a
gateway killed at any moment leaves each record whole or absent.
"""

from __future__ import annotations

import json
import os
import signal
import tempfile
from dataclasses import asdict, dataclass
from typing import Any

from twisted.logger import Logger

log = Logger()


@dataclass
class KernelRecord:
    """One kernel, as a later gateway needs to know it."""

    id: str
    name: str
    pid: int
    connectionFile: str
    connectionInfo: dict[str, Any]
    env: dict[str, str]
    cwd: str | None = None
    # False while the kernel starts or waits in the warm pool: nobody holds it yet.
    handedOut: bool = False


def pidAlive(pid: int) -> bool:
    """Whether process C{pid} runs (and is not a zombie)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True


def isKernelProcess(record: KernelRecord) -> bool:
    """
    Whether the process of C{record} is still that kernel: alive, and started with its
    connection file (a pid may have been reused by another program since).
    """
    if not pidAlive(record.pid):
        return False
    try:
        with open(f"/proc/{record.pid}/cmdline", "rb") as f:
            arguments = f.read().split(b"\0")
    except OSError:
        return True  # no /proc: the pid alone has to do
    return record.connectionFile.encode() in arguments or any(
        record.id.encode() in argument for argument in arguments
    )


class StateDirectory:
    """The kernel records under C{path}/kernels."""

    def __init__(self, path: str) -> None:
        self.path = os.path.join(path, "kernels")
        os.makedirs(self.path, mode=0o700, exist_ok=True)

    def _file(self, kernelId: str) -> str:
        return os.path.join(self.path, f"{kernelId}.json")

    def write(self, record: KernelRecord) -> None:
        """Save C{record}, replacing any earlier one of the same kernel at once."""
        descriptor, temporary = tempfile.mkstemp(dir=self.path, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(descriptor, "w") as f:
                json.dump(asdict(record), f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, self._file(record.id))
        except BaseException:
            if os.path.exists(temporary):
                os.unlink(temporary)
            raise

    def remove(self, kernelId: str) -> None:
        try:
            os.unlink(self._file(kernelId))
        except FileNotFoundError:
            pass

    def records(self) -> list[KernelRecord]:
        """Every whole record; an unreadable one is logged and removed."""
        found = []
        for name in sorted(os.listdir(self.path)):
            path = os.path.join(self.path, name)
            if name.startswith("."):
                os.unlink(path)  # a write interrupted before its rename
                continue
            try:
                with open(path) as f:
                    found.append(KernelRecord(**json.load(f)))
            except (OSError, ValueError, TypeError) as e:
                log.warn("Removing unreadable kernel record {path}: {error}", path=path, error=e)
                os.unlink(path)
        return found


def endProcess(pid: int, sig: int = signal.SIGTERM) -> None:
    """Send C{sig} to a kernel's process group (it leads its own session), else to it alone."""
    try:
        os.killpg(pid, sig)
    except OSError:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
