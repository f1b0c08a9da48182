"""Finding every kernel an earlier gateway left running, whatever became of its record.

A kernel's record in the state directory is how a new gateway adopts it, but a record can be
damaged while its kernel runs on. Such a kernel is found by its connection file,
C{kernel-<id>.json}, which jupyter_client names on the kernel's command line: the id comes from
the record's file name, which survives any damage to its content since records are renamed into
place. Only processes of this user that lead their own session, as jupyter_client starts every
kernel, and that were started with that very file, are considered; never a process by its name.

A kernel so found is adopted when its connection file is intact, with what its record and its
process still tell (environment, working directory); otherwise it is shut down by its own pid.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from kgw.kernels.kernel import Kernel
from kgw.kernels.process import AdoptedProcess, KernelProcess
from kgw.kernels.store import KernelStore, answer
from kgw.kernels.store.directory import (
    InvalidRecord,
    KernelRecord,
    RecordError,
    checkRecord,
    endProcess,
    isKernelProcess,
    isValidField,
)

log = Logger()


def kernelProcesses(kernelId: str) -> list[tuple[int, str]]:
    """
    The processes of this user started with the connection file C{kernel-<kernelId>.json} and
    leading their own session, each as its pid and the connection file's path, lowest pid first.
    """
    fileName = f"kernel-{kernelId}.json"
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            if os.stat(f"/proc/{pid}").st_uid != os.getuid():
                continue
            with open(f"/proc/{pid}/stat") as f:
                state, _, _, session = f.read().rsplit(")", 1)[1].split()[:4]
            if state == "Z" or int(session) != pid:
                continue
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                arguments = [os.fsdecode(a) for a in f.read().split(b"\0")]
            paths = [a for a in arguments if os.path.basename(a) == fileName]
            if paths and not os.path.isabs(paths[0]):
                paths[0] = os.path.join(os.readlink(f"/proc/{pid}/cwd"), paths[0])
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
        if paths:
            found.append((pid, paths[0]))
    return sorted(found)


def _environment(pid: int) -> dict[str, str]:
    """The environment process C{pid} was started with."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            entries = f.read().split(b"\0")
    except OSError:
        return {}
    pairs = (os.fsdecode(entry).partition("=") for entry in entries if b"=" in entry)
    return {name: value for name, _, value in pairs}


def _workingDirectory(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def rebuildRecord(invalid: InvalidRecord, pid: int, connectionFile: str) -> KernelRecord:
    """
    A record of the running kernel of C{invalid}: its connection info from its connection file,
    the fields of the invalid record that are valid, the rest from its process.

    @raise RecordError: if the connection file is unreadable or incomplete.
    """
    assert invalid.kernelId is not None
    try:
        with open(connectionFile, "rb") as f:
            info = json.loads(f.read())
    except OSError as e:
        raise RecordError(f"connection file {connectionFile}: {e.strerror}") from None
    except ValueError as e:
        raise RecordError(f"connection file {connectionFile} is not JSON: {e}") from None
    if not isinstance(info, dict):
        raise RecordError(f"connection file {connectionFile} is not a JSON object")
    fallbacks = {
        "name": lambda: info.get("kernel_name"),
        "env": lambda: _environment(pid),
        "cwd": lambda: _workingDirectory(pid),
        # A client may hold it: adopting is the safe guess.
        "handedOut": lambda: True,
    }
    values = {
        name: invalid.fields[name]
        if name in invalid.fields and isValidField(name, invalid.fields[name])
        else fallback()
        for name, fallback in fallbacks.items()
    }
    values.update(id=invalid.kernelId, pid=pid, connectionFile=connectionFile, connectionInfo=info)
    return checkRecord(values, invalid.kernelId)


async def recoverRecords(
    state: KernelStore,
    runtimeDir: str,
    specs: KernelSpecManager,
    clock: IReactorTime,
    known: Callable[[str], bool] = lambda kernelId: False,
) -> list[KernelRecord]:
    """
    The records of the kernels left by an earlier gateway, to be adopted or cleaned up.

    Each valid record, with its kernel's pid found again by its connection file if the recorded
    one is not it; and for each invalid record (logged and moved aside by
    L{KernelStore.read}) whose kernel still runs, a record rebuilt from its connection file.
    A kernel whose record cannot be rebuilt is shut down here: SIGTERM, then SIGKILL after
    L{AdoptedProcess.graceTime}.
    """
    records, invalid = await answer(state.read())
    records = [record for record in records if not known(record.id)]
    invalid = [rejected for rejected in invalid if not known(rejected.kernelId or "")]
    for record in records:
        # A remote kernel is no process here: its provisioner finds it (KernelProcess.adopt).
        if record.provisionerInfo is None and not isKernelProcess(record):
            for pid, connectionFile in kernelProcesses(record.id)[:1]:
                log.warn(
                    "Kernel {kernelId} runs as process {pid}, not {recorded} as recorded",
                    kernelId=record.id,
                    pid=pid,
                    recorded=record.pid,
                )
                record.pid, record.connectionFile = pid, connectionFile
    for rejected in invalid:
        if rejected.kernelId is None:
            continue
        if not await answer(state.claim(rejected.kernelId)):
            continue  # another gateway, alive, owns it
        # Two kernels cannot bind the same ports: one connection file, one live kernel.
        processes = kernelProcesses(rejected.kernelId)[:1]
        if not processes:
            _removeConnectionFile(os.path.join(runtimeDir, f"kernel-{rejected.kernelId}.json"))
            continue
        [(pid, connectionFile)] = processes
        try:
            records.append(rebuildRecord(rejected, pid, connectionFile))
        except RecordError as e:
            log.warn(
                "Shutting down process {pid} of kernel {kernelId} (invalid record {name}): "
                "{problem}",
                pid=pid,
                kernelId=rejected.kernelId,
                name=rejected.name,
                problem=e,
            )
            record = KernelRecord(rejected.kernelId, "", pid, connectionFile, {}, {})
            await AdoptedProcess(record, specs, clock).shutdown()
        else:
            log.info(
                "Kernel {kernelId} of invalid record {name} runs as process {pid}; adopting it",
                kernelId=rejected.kernelId,
                name=rejected.name,
                pid=pid,
            )
    return records


def _removeConnectionFile(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


async def adoptRecorded(
    store: KernelStore,
    runtimeDir: str,
    specs: KernelSpecManager,
    clock: IReactorTime,
    connect: Callable[[Kernel], Deferred[bool]],
    register: Callable[[Kernel], None],
    known: Callable[[str], bool] = lambda kernelId: False,
) -> None:
    """
    Take over the kernels an earlier gateway recorded and that still run, under their ids;
    clean up after the others.

    @param connect: opens a kernel's channels and fires once it answers on them, with whether
        its shell is free (a kernel may be running code its gateway died in the middle of).
    @param register: makes an adopted kernel the registry's.
    @param known: whether a kernel is this gateway's already: it is left alone.
    """
    for record in await recoverRecords(store, runtimeDir, specs, clock, known):
        if known(record.id):
            continue
        # Before anything else: a kernel of another gateway, alive, is left alone, whatever
        # this host sees of it (it may run elsewhere, or be starting).
        if not await answer(store.claim(record.id)):
            continue
        if record.provisionerInfo is not None:
            await _adoptRemote(record, store, specs, connect, register)
            continue
        if not record.handedOut or not isKernelProcess(record):
            if isKernelProcess(record):
                endProcess(record.pid, signal.SIGKILL)
            log.info("Cleaning up after kernel {kernelId}", kernelId=record.id)
            _removeConnectionFile(record.connectionFile)
            store.remove(record.id)
            continue
        process = AdoptedProcess(record, specs, clock)
        await _adoptProcess(record, process, store, connect, register)


async def _adoptRemote(
    record: KernelRecord,
    store: KernelStore,
    specs: KernelSpecManager,
    connect: Callable[[Kernel], Deferred[bool]],
    register: Callable[[Kernel], None],
) -> None:
    """
    Take over a remote kernel through its provisioner (C{load_provisioner_info()}, C{poll()}),
    or forget it if it is gone: it is no process of this machine.
    """
    try:
        process = await KernelProcess.adopt(record, specs)
    except Exception:
        log.failure("Remote kernel {kernelId} could not be found again", kernelId=record.id)
        process = None
    if process is None or not record.handedOut:
        if process is not None:
            await process.shutdown(now=True)
        log.info("Cleaning up after remote kernel {kernelId}", kernelId=record.id)
        store.remove(record.id)
        return
    await _adoptProcess(record, process, store, connect, register)


async def _adoptProcess(
    record: KernelRecord,
    process: Any,
    store: KernelStore,
    connect: Callable[[Kernel], Deferred[bool]],
    register: Callable[[Kernel], None],
) -> None:
    """
    Open the channels of a kernel found again, and register it once it answers: busy, if its
    shell is still running code (its clients get the idle status that ends it).
    """
    kernel = Kernel(record.id, record.name, process)
    kernel.launchEnv, kernel.cwd = record.env, record.cwd
    try:
        free = await connect(kernel)
    except Exception:
        log.failure("Kernel {kernelId} could not be adopted", kernelId=record.id)
        if kernel.channels is not None:
            kernel.channels.close(1011, "kernel could not be adopted")
        await kernel.process.shutdown(now=True)
        store.remove(record.id)
        return
    kernel.executionState = "idle" if free else "busy"
    register(kernel)
    log.info("Adopted kernel {kernelId} ({name})", kernelId=record.id, name=record.name)
