"""
Fuzz kgw's REST API with Schemathesis, driven by kgw's own OpenAPI document.

This is a script, not a test module: Trial's run of C{tests} does not collect it. Run it with
C{tox -e fuzz} (the long run), or directly::

    python tests/fuzz/run_fuzz.py            # long: each phase fuzzes for 4 minutes
    python tests/fuzz/run_fuzz.py --quick    # short: 40 seconds a phase, a fixed seed

The short run is part of the test suite, as C{tests/integration/test_fuzz.py}.

Each of the two phases starts its own C{twistd kgw} on 127.0.0.1 (port 0, C{list_kernels} on,
C{max_kernels} 3) and runs C{schemathesis run} against its C{/api/swagger.json}:

 - C{open}: no token is configured;
 - C{token}: C{--auth-token} is set and Schemathesis sends C{Authorization: token T}; its
   C{ignored_auth} check then also makes sure that requests without the token are refused.

Every operation is fuzzed, those that start kernels (C{POST /api/kernels}, C{POST /api/sessions},
C{PATCH /api/sessions/{id}}, C{POST .../restart}) included: C{max_kernels} 3 bounds how many real
kernels run at once (past it the gateway answers 403 at once), and the time budget bounds the run.
After each phase every kernel left is deleted through the API, the gateway is stopped by its pid
and its kernel processes are checked to be gone.

Schemathesis runs all its checks but two that would report what kgw does by design:

 - C{positive_data_acceptance}: OpenAPI 3.0 cannot say what kgw also refuses with 400 (a variable
   name that is not C{[A-Za-z_][A-Za-z0-9_]*}, the id of a kernel that does not exist in a
   session, a channels request that is not a websocket upgrade);
 - C{ensure_resource_availability}: a session goes with its kernel, as in jupyter_server, so after
   C{POST /api/sessions} then C{DELETE /api/kernels/{kernel.id}} the session is rightly 404,
   which the check takes for a created resource that cannot be found.

Its other checks cover what matters: no 5xx (C{not_a_server_error}), bodies as documented
(C{response_schema_conformance}), statuses, content types and headers as documented
(C{status_code_conformance}, C{content_type_conformance}, C{response_headers_conformance}),
invalid requests refused (C{negative_data_rejection}), 405s with C{Allow}, deleted resources
gone (C{use_after_free}).

Besides Schemathesis's verdict, the gateway's access log is read: it counts the requests the
gateway answered, and any 5xx in it is a failure too. The script exits 0 when both phases found
nothing, 1 otherwise; its last line is C{fuzz: N requests, N failures}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from kgw.kernels.store.directory import pidAlive

BIN = os.path.dirname(sys.executable)
TWISTD = os.path.join(BIN, "twistd")
MAX_KERNELS = 3
# Every check but two: see the module docstring.
CHECKS = [
    "--checks",
    "all",
    "--exclude-checks",
    "positive_data_acceptance,ensure_resource_availability",
]
ACCESS = re.compile(rb'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/1\.[01]" (?P<status>\d{3}) ')


@dataclass
class Settings:
    """How long and how hard each phase fuzzes."""

    maxExamples: int
    maxTime: int
    seed: int | None = None


QUICK = Settings(maxExamples=10, maxTime=40, seed=20261126)
LONG = Settings(maxExamples=100, maxTime=240)


@dataclass
class Result:
    """What one phase found."""

    phase: str
    requests: int = 0
    statuses: Counter[int] = field(default_factory=Counter)
    serverErrors: list[str] = field(default_factory=list)
    testCases: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> int:
        return len(self.failures) + len(self.serverErrors)

    def summary(self) -> str:
        statuses = ", ".join(f"{code}: {n}" for code, n in sorted(self.statuses.items()))
        return (
            f"phase {self.phase}: {self.requests} requests answered ({statuses}), "
            f"{len(self.serverErrors)} with 5xx; schemathesis: {self.testCases} test cases, "
            f"{len(self.failures)} failures ({self.seconds:.1f} s)"
        )


def childProcesses(parent: int) -> set[int]:
    """Pids of the live children of C{parent}."""
    found = set()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            found.add(int(entry))
    return found


class Gateway:
    """A C{twistd kgw} on 127.0.0.1 that this script starts, and stops by its pid."""

    def __init__(self, directory: str, token: str = "") -> None:
        self.directory = directory
        self.token = token
        self.logPath = os.path.join(directory, "twistd.log")
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.kernelPids: set[int] = set()

    def start(self, timeout: float = 60.0) -> None:
        runtime = os.path.join(self.directory, "runtime")
        os.makedirs(runtime, exist_ok=True)
        env = dict(os.environ, JUPYTER_RUNTIME_DIR=runtime)
        env.pop("KG_AUTH_TOKEN", None)
        arguments = [
            TWISTD,
            "-n",
            "--pidfile=",
            "kgw",
            "--ip=127.0.0.1",
            "--port=0",
            "--list-kernels=True",
            f"--max-kernels={MAX_KERNELS}",
        ]
        if self.token:
            arguments.append(f"--auth-token={self.token}")
        with open(self.logPath, "wb") as log:
            self.process = subprocess.Popen(
                arguments, stdout=log, stderr=subprocess.STDOUT, cwd=self.directory, env=env
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(rb"Site starting on (\d+)", self.log())
            if found:
                self.port = int(found.group(1))
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError("kgw did not start:\n" + self.log().decode(errors="replace"))

    def log(self) -> bytes:
        with open(self.logPath, "rb") as f:
            return f.read()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}/{path}"

    def request(self, method: str, path: str) -> tuple[int, Any]:
        request = urllib.request.Request(self.url(path), method=method)
        if self.token:
            request.add_header("Authorization", f"token {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                body = response.read()
                return response.status, json.loads(body) if body else None
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    def deleteKernels(self) -> int:
        """Delete every kernel through the API; return how many there were."""
        code, kernels = self.request("GET", "api/kernels")
        if code != 200:
            raise RuntimeError(f"cannot list kernels: {code} {kernels!r}")
        for kernel in kernels:
            self.request("DELETE", f"api/kernels/{kernel['id']}")
        code, left = self.request("GET", "api/kernels")
        if left:
            raise RuntimeError(f"kernels left after deleting them all: {left!r}")
        return len(kernels)

    def stop(self) -> None:
        """Stop the gateway by its pid, SIGTERM then SIGKILL, and any kernel it left."""
        if self.process is None:
            return
        self.kernelPids |= childProcesses(self.process.pid)
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        strays = {pid for pid in self.kernelPids if pidAlive(pid)}
        for pid in strays:
            os.kill(pid, signal.SIGKILL)
        if strays:
            raise RuntimeError(f"kernel processes outlived the gateway: {sorted(strays)}")

    def accessLog(self) -> list[tuple[bytes, bytes, int]]:
        """(method, path, status) of every request the gateway answered."""
        return [
            (m.group("method"), m.group("path"), int(m.group("status")))
            for m in ACCESS.finditer(self.log())
        ]


def schemathesis(gateway: Gateway, settings: Settings, reportDir: str) -> subprocess.Popen[bytes]:
    """Start C{schemathesis run} against C{gateway}; its output goes to this one's."""
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        gateway.url("api/swagger.json"),
        *CHECKS,
        "--phases",
        "examples,coverage,fuzzing,stateful",
        "--max-examples",
        str(settings.maxExamples),
        "--max-time",
        str(settings.maxTime),
        "--request-timeout",
        "60",
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "json",
        "--report-dir",
        reportDir,
    ]
    if settings.seed is not None:
        command += ["--seed", str(settings.seed)]
    if gateway.token:
        command += ["--header", f"Authorization: token {gateway.token}"]
    # Its working directory is the phase's, so that nothing it writes lands in the tree.
    return subprocess.Popen(command, cwd=gateway.directory)


def runPhase(phase: str, token: str, settings: Settings, directory: str) -> Result:
    result = Result(phase)
    os.makedirs(directory)
    gateway = Gateway(directory, token)
    reportDir = os.path.join(directory, "report")
    started = time.monotonic()
    try:
        gateway.start()
        print(f"phase {phase}: kgw on port {gateway.port}", flush=True)
        fuzzer = schemathesis(gateway, settings, reportDir)
        try:
            fuzzer.wait(settings.maxTime + 300)
        finally:
            if fuzzer.poll() is None:
                fuzzer.kill()
                fuzzer.wait()
                result.failures.append("schemathesis ran past its time budget")
        result.seconds = time.monotonic() - started
        left = gateway.deleteKernels()
        print(f"phase {phase}: deleted the {left} kernels left", flush=True)
    finally:
        gateway.stop()
    for method, path, status in gateway.accessLog():
        result.requests += 1
        result.statuses[status] += 1
        if status >= 500:
            result.serverErrors.append(f"{method.decode()} {path.decode()} {status}")
    reports = [os.path.join(reportDir, name) for name in os.listdir(reportDir)]
    if len(reports) != 1:
        result.failures.append(f"expected one schemathesis report, found {reports}")
        return result
    with open(reports[0]) as f:
        report = json.load(f)
    result.testCases = report["test_cases"]["generated"]
    for failure in report["failures"]:
        operations = ", ".join(failure.get("operations", []))
        result.failures.append(f"{failure['code']} {failure['title']}: {operations}")
    for error in report["errors"]:
        result.failures.append(f"error: {error}")
    if report["exit_code"] != 0 and not result.failures:
        result.failures.append(f"schemathesis exited with {report['exit_code']}")
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the short run CI makes")
    parser.add_argument("--max-examples", type=int, help="test cases per operation and phase")
    parser.add_argument("--max-time", type=int, help="seconds each phase fuzzes")
    parser.add_argument("--seed", type=int, help="Schemathesis's random seed")
    parser.add_argument("--keep", action="store_true", help="keep the logs and reports")
    options = parser.parse_args(argv)
    chosen = QUICK if options.quick else LONG
    settings = Settings(
        options.max_examples or chosen.maxExamples,
        options.max_time or chosen.maxTime,
        options.seed if options.seed is not None else chosen.seed,
    )
    # A SIGTERM (a test's clean-up) unwinds through the finally clauses that stop the gateway.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    directory = tempfile.mkdtemp(prefix="kgw-fuzz-")
    results = []
    try:
        for phase, token in (("open", ""), ("token", "fuzz-" + secrets.token_hex(16))):
            results.append(runPhase(phase, token, settings, os.path.join(directory, phase)))
    finally:
        if options.keep:
            print(f"logs and reports are in {directory}")
        else:
            shutil.rmtree(directory, ignore_errors=True)
    failed = 0
    for result in results:
        print(result.summary())
        for problem in result.serverErrors + result.failures:
            print(f"  {problem}")
        failed += result.failed
    print(f"fuzz: {sum(r.requests for r in results)} requests, {failed} failures")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
