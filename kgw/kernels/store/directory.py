"""What the gateway writes down about its kernels, so that a new gateway can adopt them.

With a state directory, each kernel has a record there: its id, kernelspec, process id, the
environment and working directory it was started with, and its connection info (ports and
signing key). Records are written atomically (a temporary file renamed over the old one), so a
gateway killed at any moment leaves each record whole or absent.

Records are read back field by field: one that is not JSON, lacks a field or has a field of the
wrong type is never used, nor deleted: it is moved to C{invalid/} beside the records, where it can
be looked at, and its kernel is recovered by L{kgw.kernels.adoption}.
"""

from __future__ import annotations

import json
import os
import re
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
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
    # A remote kernel's provisioner info (get_provisioner_info()); None for a local kernel.
    provisionerInfo: dict[str, Any] | None = None


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

    # One gateway at a time: its kernels are adopted when it starts, never by a sweep.
    sweepInterval: float | None = None

    def owns(self, kernelId: str) -> bool:
        return False

    def start(self, lost: Callable[[str], None]) -> None:
        pass

    def stop(self) -> None:
        pass

    def kernelModels(self) -> list[dict[str, Any]]:
        return []

    def peerOf(self, kernelId: str) -> None:
        return None

    def own(self, record: KernelRecord) -> None:
        """A new kernel's record: a state directory serves one gateway, whose kernels are its."""
        self.write(record)

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

    def claim(self, kernelId: str) -> bool:
        """A state directory serves one gateway at a time: its kernels are that gateway's."""
        return True

    def read(self) -> tuple[list[KernelRecord], list[InvalidRecord]]:
        """
        Every usable record, and every other record file: each of those is logged with its name
        and moved to C{invalid/} beside the records.
        """
        found, invalid = [], []
        for name in sorted(os.listdir(self.path)):
            path = os.path.join(self.path, name)
            if name.startswith("."):
                os.unlink(path)  # a write interrupted before its rename
                continue
            if not os.path.isfile(path):
                continue  # invalid/ itself
            try:
                with open(path, "rb") as f:
                    data = f.read()
            except OSError as e:
                data, problem = b"", f"unreadable: {e.strerror}"
            else:
                try:
                    found.append(parseRecord(data, name))
                    continue
                except RecordError as e:
                    problem = str(e)
            invalid.append(self._setAside(name, data, problem))
        return found, invalid

    def _setAside(self, name: str, data: bytes, problem: str) -> InvalidRecord:
        """Move the record file C{name} to C{invalid/}, never over an earlier one."""
        folder = os.path.join(self.path, "invalid")
        target = os.path.join(folder, name)
        if os.path.lexists(target):
            target = os.path.join(folder, f"{name}.{time.time_ns()}")
        try:
            os.makedirs(folder, mode=0o700, exist_ok=True)
            os.replace(os.path.join(self.path, name), target)
        except OSError as e:
            target = os.path.join(self.path, name)
            log.error("Cannot move invalid kernel record {name}: {error}", name=name, error=e)
        log.warn(
            "Kernel record {name} is invalid ({problem}); moved to {target}",
            name=name,
            problem=problem,
            target=target,
        )
        try:
            values = json.loads(data)
        except ValueError:
            values = None
        return InvalidRecord(
            name, target, problem, kernelIdOf(name), values if isinstance(values, dict) else {}
        )


@dataclass
class InvalidRecord:
    """A record file that could not be used, once moved aside."""

    name: str
    #: Where the file is now.
    path: str
    problem: str
    #: The kernel id its file name gives, if any: records are named C{<kernel id>.json}.
    kernelId: str | None
    #: What the file holds, when it is a JSON object; else empty.
    fields: dict[str, Any] = field(default_factory=dict)


class RecordError(ValueError):
    """A kernel record that cannot be used; the message says which field is wrong and how."""


_KERNEL_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_PORTS = ("shell_port", "iopub_port", "stdin_port", "control_port", "hb_port")


def kernelIdOf(fileName: str) -> str | None:
    """The kernel id of the record file C{fileName}, or C{None} if it names no record."""
    stem, extension = os.path.splitext(fileName)
    if extension == ".json" and _KERNEL_ID.fullmatch(stem):
        return stem
    return None


def parseRecord(data: bytes, fileName: str) -> KernelRecord:
    """
    The record held by the file C{fileName}, checked field by field.

    @raise RecordError: naming the first problem found.
    """
    kernelId = kernelIdOf(fileName)
    if kernelId is None:
        raise RecordError("the file name is not <kernel id>.json")
    try:
        values = json.loads(data)
    except UnicodeDecodeError:
        raise RecordError("not JSON: not text") from None
    except ValueError as e:
        raise RecordError(f"not JSON: {e}") from None
    if not isinstance(values, dict):
        raise RecordError(f"not a JSON object but {_kind(values)}")
    return checkRecord(values, kernelId)


def checkRecord(values: dict[str, Any], kernelId: str) -> KernelRecord:
    """
    A L{KernelRecord} of C{values}, those of the kernel C{kernelId}; unknown fields are ignored.

    @raise RecordError: naming the first field that is missing or wrong.
    """
    given = {name: values[name] for name in _FIELDS if name in values}
    given.setdefault("cwd", None)
    given.setdefault("handedOut", False)
    given.setdefault("provisionerInfo", None)
    for name, (valid, expected) in _FIELDS.items():
        if name not in given:
            raise RecordError(f"no {name!r} field")
        _check(valid(given[name]), name, given[name], expected)
    _check(given["id"] == kernelId, "id", given["id"], f"the file's kernel id {kernelId!r}")
    given["connectionInfo"] = checkConnectionInfo(given["connectionInfo"])
    return KernelRecord(**given)


def isValidField(name: str, value: object) -> bool:
    """Whether C{value} would do as the field C{name} of a record (connectionInfo aside)."""
    return _FIELDS[name][0](value)


def checkConnectionInfo(info: Any) -> dict[str, Any]:
    """
    C{info}, checked as a kernel's connection info: the fields clients and the gateway use.

    @raise RecordError: naming the first field that is missing or wrong.
    """
    _check(isinstance(info, dict), "connectionInfo", info, "an object")
    for name in _PORTS:
        port = info.get(name)
        _check(_isInteger(port) and 0 < port < 65536, f"connectionInfo.{name}", port, "a port")
    transport = info.get("transport")
    _check(transport in ("tcp", "ipc"), "connectionInfo.transport", transport, "tcp or ipc")
    _check(_isString(info.get("ip")), "connectionInfo.ip", info.get("ip"), "an address")
    key = info.get("key")
    _check(_isString(key) and key.isascii(), "connectionInfo.key", key, "an ASCII key")
    scheme = info.get("signature_scheme", "hmac-sha256")
    _check(
        _isString(scheme) and scheme.startswith("hmac-"),
        "connectionInfo.signature_scheme",
        scheme,
        "hmac-<hash>",
    )
    return info


def _isString(value: object, empty: bool = False) -> bool:
    return isinstance(value, str) and (empty or value != "") and "\0" not in value


def _isInteger(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _isPid(value: object) -> bool:
    # Never 0, 1 or below: signals sent to those reach a whole process group, init, or everything.
    return _isInteger(value) and 1 < value < 2**22 and value != os.getpid()  # type: ignore[operator]


def _isEnvironment(value: object) -> bool:
    return isinstance(value, dict) and all(_isString(v, empty=True) for v in value.values())


# Each field of a record: whether a value will do, and what is expected, to say so.
_FIELDS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "id": (_isString, "a kernel id"),
    "name": (_isString, "a kernelspec name"),
    "pid": (_isPid, "a pid"),
    "connectionFile": (lambda v: _isString(v) and os.path.isabs(v), "an absolute path"),
    "connectionInfo": (lambda v: isinstance(v, dict), "an object"),
    "env": (_isEnvironment, "an object of strings"),
    "cwd": (lambda v: v is None or _isString(v), "a path or null"),
    "handedOut": (lambda v: isinstance(v, bool), "true or false"),
    "provisionerInfo": (lambda v: v is None or isinstance(v, dict), "an object or null"),
}


def _check(condition: bool, name: str, value: object, expected: str) -> None:
    if not condition:
        shown = repr(value) if len(repr(value)) <= 60 else f"{repr(value)[:57]}..."
        raise RecordError(f"{name} is {shown}, not {expected}")


def _kind(value: object) -> str:
    kinds = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    return kinds.get(type(value), "a number")


def endProcess(pid: int, sig: int = signal.SIGTERM) -> None:
    """Send C{sig} to a kernel's process group (it leads its own session), else to it alone."""
    try:
        os.killpg(pid, sig)
    except OSError:
        try:
            os.kill(pid, sig)
        except OSError:
            pass
