"""
Gateway processes: how each is started and stopped, and what /proc says of its CPU and memory.

Only the gateway's own process is measured, never its kernels. Every process started here is
stopped by its own pid, and so is every kernel a gateway leaves behind.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from benchmarks.client import BenchError

BIN = Path(sys.executable).parent
# kgw's own environment, where KG's dependencies are not installed (see tox.ini).
KGW_BIN = Path(os.environ.get("KGW_BENCH_BIN") or BIN)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kgw_command(port: int, *options: str) -> list[str]:
    return [
        str(KGW_BIN / "twistd"),
        "--nodaemon",
        "--pidfile=",
        "kgw",
        f"--port={port}",
        "--port-retries=0",
        *options,
    ]


def kg_command(port: int, *options: str) -> list[str]:
    return [
        str(BIN / "jupyter-kernelgateway"),
        "--KernelGatewayApp.ip=127.0.0.1",
        f"--KernelGatewayApp.port={port}",
        "--KernelGatewayApp.port_retries=0",
        *options,
    ]


def kgw_options(source: Path) -> str:
    """The help text of C{twistd kgw}, to learn which options this kgw has."""
    result = subprocess.run(
        [str(KGW_BIN / "twistd"), "kgw", "--help"],
        env=gateway_environment(str(source)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.stdout


def gateway_environment(python_path: str = "") -> dict[str, str]:
    """
    This process's environment without the C{KG_*} variables, which both gateways read; with
    C{python_path} (a copy of kgw's source) as the gateway's C{PYTHONPATH} if given.
    """
    environment = {k: v for k, v in os.environ.items() if not k.startswith("KG_")}
    if python_path:
        environment["PYTHONPATH"] = python_path
    return environment


def snapshot_kgw(root: Path, target: Path, revision: str = "") -> str:
    """
    Copy kgw's source (its package and its Twisted plugin) from the tree at C{root}, or from
    its git C{revision}, into C{target}, so that edits made during a run do not reach it.

    @return: what was copied: a commit, and whether the tree had changes of its own.
    """
    target.mkdir(parents=True)
    if revision:
        archive = subprocess.run(
            ["git", "archive", revision, "kgw", "twisted"],
            cwd=root,
            capture_output=True,
            check=True,
        ).stdout
        subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
        return _git(root, "rev-parse", "--short", revision)
    for name in ("kgw", "twisted"):
        ignore = shutil.ignore_patterns("__pycache__", "dropin.cache")
        shutil.copytree(root / name, target / name, ignore=ignore)
    changed = _git(root, "status", "--porcelain", "--", "kgw", "twisted", "setup.py")
    commit = _git(root, "rev-parse", "--short", "HEAD")
    return f"{commit} + uncommitted changes" if changed else commit


def _git(root: Path, *args: str) -> str:
    try:
        return subprocess.check_output(["git", *args], cwd=root, text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _children() -> dict[int, list[int]]:
    """Every process's children, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(b")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    return children


def descendants(pid: int) -> set[int]:
    """The pids of a process's children, their children, and so on."""
    children = _children()
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _live_kernel(pid: int) -> bool:
    """Whether C{pid} is still a running ipykernel (and not a reused pid)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return b"ipykernel" in f.read()
    except OSError:
        return False


@dataclass
class Gateway:
    """One gateway process, listening on 127.0.0.1:C{port}, its output in C{log}."""

    label: str
    command: list[str]
    port: int
    log: Path
    ready_path: str = "/api"
    python_path: str = ""
    process: subprocess.Popen | None = None
    _kernels: set[int] = field(default_factory=set)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self, cwd: Path) -> None:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=cwd,
                env=gateway_environment(self.python_path),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    async def wait_ready(self, http: aiohttp.ClientSession, timeout: float = 90.0) -> None:
        """Poll C{ready_path} until it answers 200."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                tail = "".join(self.log.read_text(errors="replace").splitlines(True)[-5:])
                raise BenchError(f"{self.label} exited at start-up; {self.log} ends:\n{tail}")
            try:
                async with http.get(self.base_url + self.ready_path) as r:
                    await r.read()
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
        raise BenchError(f"{self.label} did not answer within {timeout} s; see {self.log}")

    def cpu_seconds(self) -> float:
        """User and system CPU time of the gateway process (all its threads, no children)."""
        with open(f"/proc/{self.pid}/stat", "rb") as f:
            stat = f.read()
        fields = stat[stat.rindex(b")") + 2 :].split()
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS

    def rss_mb(self) -> float:
        """Resident set size of the gateway process, in MB (10^6 bytes)."""
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024 / 1e6
        raise BenchError(f"no VmRSS for {self.label}")

    def note_kernels(self) -> None:
        """Remember the gateway's kernel processes, to be sure none outlives L{stop}."""
        if self.process is not None and self.process.poll() is None:
            self._kernels |= descendants(self.pid)

    async def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM the gateway, SIGKILL it after C{timeout}, then any kernel it left."""
        if self.process is None:
            return
        self.note_kernels()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self.process.poll() is None and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            if self.process.poll() is None:
                self.process.kill()
                self.process.wait()
        for pid in self._kernels:
            if _live_kernel(pid):
                os.kill(pid, signal.SIGKILL)
        self._kernels.clear()
        self.process = None
