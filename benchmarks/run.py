"""
Run kgw, Jupyter Kernel Gateway 3.0.1 ("KG") and a direct jupyter_client baseline side by side
and print one table of the figures, with ratios and targets.

    tox -e bench                        # the full run: about 5 minutes on 2 idle cores
    tox -e bench -- --quick             # a one-round smoke run, written to results/quick.*
    tox -e bench -- --revision 13497a9  # kgw as of a commit rather than the working tree

Each round starts both gateways afresh, then takes every figure on every subject in turn, the
order rotating from round to round; a subject's figure is the median of its rounds. The
notebook-http figure runs last, on a second pair of gateways.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import aiohttp

# Run as a script (python benchmarks/run.py): make the benchmarks package importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import figures, report
from benchmarks.client import LEGACY, V1, BenchError
from benchmarks.direct import DirectKernel
from benchmarks.gateways import (
    KGW_BIN,
    Gateway,
    free_port,
    kg_command,
    kgw_command,
    kgw_options,
    snapshot_kgw,
)
from benchmarks.report import DIRECT, KG, KGW, KGW_WARM

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
NOTEBOOK = HERE / "notebook.ipynb"
NOTEBOOK_URL = "/hello/bench"

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Settings:
    rounds: int = 3
    round_trips: int = 200
    relay_runs: int = 2
    large_runs: int = 3
    starts: int = 2
    crowd_rounds: int = 1
    crowd_kernels: int = 10
    crowd_clients: int = 100
    crowd_executes: int = 50
    crowd_deadline: float = 300.0
    notebook_seconds: float = 6.0
    notebook_connections: int = 8
    prespawn: int = 2
    warm_kernels: int = 2
    # Figure 8: idle websockets over a few kernels, then as many busy clients over many kernels.
    scale_idle_kernels: int = 10
    scale_clients: int = 1000
    scale_kernels: int = 100
    scale_executes: int = 20
    scale_deadline: float = 900.0
    # Figure 2b: runs of the flooding cell on each subject and protocol.
    flood_runs: int = 3


QUICK = Settings(
    rounds=1,
    round_trips=30,
    relay_runs=1,
    large_runs=1,
    starts=1,
    crowd_executes=5,
    crowd_deadline=60.0,
    notebook_seconds=2.0,
    scale_clients=100,
    scale_kernels=10,
    scale_executes=5,
    scale_deadline=120.0,
    flood_runs=1,
)

# The wire protocols of figures 1 to 3 and the suffix of their rows' keys. The direct client
# has no wire protocol: its values fill both rows.
PROTOCOLS = ((LEGACY, ""), (V1, "_v1"))


def rotated(items: list[T], round_: int) -> list[T]:
    """C{items}, starting at a different one in each round."""
    shift = round_ % len(items)
    return items[shift:] + items[:shift]


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


class Bench:
    """One run: its settings, the gateways' log directory, and the values gathered so far."""

    def __init__(self, settings: Settings, workdir: Path, source: Path, warm: bool) -> None:
        self.settings = settings
        self.workdir = workdir
        self.source = source
        self.warm = warm
        self.results = report.Results()

    def gateway(self, label: str, command: list[str], port: int, ready_path: str) -> Gateway:
        log = self.workdir / f"{label}-{port}.log"
        python_path = str(self.source) if label.startswith(KGW) else ""
        return Gateway(label, command, port, log, ready_path, python_path)

    async def start(self, http: aiohttp.ClientSession, gateways: list[Gateway]) -> None:
        for gateway in gateways:
            gateway.start(self.workdir)
        await asyncio.gather(*(g.wait_ready(http) for g in gateways))

    def record(self, key: str, label: str, values: list[float]) -> None:
        """Record the median of a round's runs; the direct baseline's for v1 rows as well."""
        value = statistics.median(values)
        self.results.add(key, label, value)
        if label == DIRECT and key.split(".")[0] in ("rtt", "relay", "large", "flood"):
            stem, name = key.split(".")
            self.results.add(f"{stem}_v1.{name}", label, value)

    async def websocket_round(self, http: aiohttp.ClientSession, round_: int) -> None:
        """Figures 1 to 5 and 7, on freshly started gateways, in the order of the round."""
        s = self.settings
        p = free_port()
        kgw = self.gateway(KGW, kgw_command(p, "--list-kernels=True"), p, "/api")
        p = free_port()
        kg = self.gateway(
            KG, kg_command(p, "--JupyterWebsocketPersonality.list_kernels=True"), p, "/api"
        )
        gateways = [kgw, kg]
        warm = None
        if self.warm:
            p = free_port()
            warm = self.gateway(
                KGW_WARM, kgw_command(p, f"--warm-kernels={s.warm_kernels}"), p, "/api"
            )
            gateways.append(warm)
        try:
            await self.start(http, gateways)
            subjects: dict[str, figures.Subject] = {
                KGW: figures.GatewaySubject(KGW, kgw, http),
                KG: figures.GatewaySubject(KG, kg, http),
                DIRECT: figures.DirectSubject(self.workdir / "direct-kernels.log"),
            }
            order = rotated([KGW, KG, DIRECT], round_)
            # Memory first, on gateways that have not yet relayed figure 3's large outputs.
            await self.idle_memory(http, [kgw, kg])
            for label in order:
                if round_ < s.crowd_rounds or label != DIRECT:
                    await self.crowd(subjects[label], run=round_ < s.crowd_rounds)
            await self.streams([(label, subjects[label]) for label in order])
            warm_subject = figures.GatewaySubject(KGW_WARM, warm, http) if warm else None
            await self.kernel_starts([(label, subjects[label]) for label in order], warm_subject)
        finally:
            await asyncio.gather(*(g.stop() for g in gateways))
            await DirectKernel.shutdown_all()

    async def idle_memory(self, http: aiohttp.ClientSession, gateways: list[Gateway]) -> None:
        """Figure 5, idle: after one request to each route a client starts with."""
        for gateway in gateways:
            for path in ("/api", "/api/kernelspecs", "/api/kernels"):
                async with http.get(gateway.base_url + path) as r:
                    await r.read()
        await asyncio.sleep(1.0)
        for gateway in gateways:
            self.results.add("rss.idle", gateway.label, gateway.rss_mb())

    async def streams(self, subjects: list[tuple[str, figures.Subject]]) -> None:
        """Figures 1 to 3 and the CPU part of 5, on one kernel per subject."""
        s = self.settings
        say("figures 1-3: round trip, iopub relay, large output")
        kernels: list[figures.Kernel] = []
        # (row key suffix, subject label, gateway or None, connection), in the round's order.
        trials: list[tuple[str, str, Gateway | None, figures.Connection]] = []
        try:
            # A kernel for each connection: a second connection to the same kernel would be sent
            # the first one's iopub messages, and have to read them through.
            for label, subject in subjects:
                for protocol, suffix in PROTOCOLS:
                    if protocol == LEGACY or subject.gateway is not None:
                        kernels.append(await subject.start_kernel())
                        connection = await kernels[-1].connect(protocol)
                        trials.append((suffix, label, subject.gateway, connection))
                        await figures.prepare(connection)

            for suffix, label, _, connection in trials:
                rtt = await figures.round_trips(connection, s.round_trips)
                for name, value in rtt.items():
                    self.record(f"rtt{suffix}.{name}", label, [value])

            rates: dict[tuple[str, str], list[float]] = {}
            published: dict[str, list[float]] = {}
            cpu: dict[str, list[float]] = {}
            for _ in range(s.relay_runs):
                for suffix, label, gateway, connection in trials:
                    result = await figures.iopub_relay(connection, gateway)
                    rates.setdefault((suffix, label), []).append(result["rate"])
                    if not suffix and result["kernel_rate"]:
                        published.setdefault(label, []).append(result["kernel_rate"])
                    if result["lost"]:
                        self.results.notes.append(
                            f"{label}{suffix} lost {result['lost']:.0f} of"
                            f" {figures.DISPLAYS} display messages in a relay run"
                        )
                    if gateway is not None and not suffix:
                        cpu.setdefault(label, []).append(result["cpu"] / result["messages"])
            for (suffix, label), values in rates.items():
                self.record(f"relay{suffix}.rate", label, values)
            for label, values in published.items():
                self.record("relay.kernel", label, values)
            for label, values in cpu.items():
                self.record("cpu.per10k", label, [v * 10_000 for v in values])

            rates = {}
            for _ in range(s.large_runs):
                for suffix, label, _, connection in trials:
                    result = await figures.large_output(connection)
                    rates.setdefault((suffix, label), []).append(result["rate"])
            for (suffix, label), values in rates.items():
                self.record(f"large{suffix}.rate", label, values)
        finally:
            for *_, connection in trials:
                await connection.close()
            for kernel in kernels:
                await kernel.shutdown()

    async def kernel_starts(
        self, subjects: list[tuple[str, figures.Subject]], warm: figures.Subject | None
    ) -> None:
        """Figure 4; a warm pool is measured after the others, then given time to refill."""
        say("figure 4: kernel start")
        times: dict[str, list[float]] = {}
        for _ in range(self.settings.starts):
            for label, subject in subjects:
                result = await figures.kernel_start(subject)
                times.setdefault(label, []).append(result["start"])
            if warm is not None:
                result = await figures.kernel_start(warm)
                times.setdefault(KGW_WARM, []).append(result["start"])
                await asyncio.sleep(3.0)
        for label, values in times.items():
            self.record("start_warm.start" if label == KGW_WARM else "start.start", label, values)

    async def crowd(self, subject: figures.Subject, run: bool) -> None:
        """Figure 5's memory with 10 kernels and, if C{run}, figure 7."""
        s = self.settings
        if run:
            say(
                f"figure 7 on {subject.label}: {s.crowd_clients} clients, {s.crowd_kernels} kernels"
            )
        else:
            say(f"figure 5 on {subject.label}: {s.crowd_kernels} kernels")
        crowd = await figures.gather_crowd(subject, s.crowd_kernels)
        self.note_replaced(crowd, subject.label, "figure 7")
        try:
            gateway = subject.gateway
            if gateway is not None:
                gateway.note_kernels()
                await asyncio.sleep(1.0)
                rss = gateway.rss_mb()
                self.results.add("rss.kernels", subject.label, rss)
                idle = self.results.values.get("rss.idle", {}).get(subject.label)
                if idle:
                    per_kernel = (rss - idle[-1]) / s.crowd_kernels
                    self.results.add("rss.per_kernel", subject.label, per_kernel)
            if not run:
                return
            await figures.fill_crowd(crowd, s.crowd_clients)
            result = await figures.many_clients(crowd, s.crowd_executes, s.crowd_deadline)
            for name in ("total", "p99", "lost"):
                self.results.add(f"crowd.{name}", subject.label, result[name])
            if result["lost_idle"]:
                self.results.notes.append(
                    f"{subject.label} lost {result['lost_idle']:.0f} idle statuses in figure 7"
                )
            if result["unfinished"]:
                self.results.notes.append(
                    f"{subject.label} left {result['unfinished']:.0f} executions of figure 7"
                    f" unfinished at its {s.crowd_deadline:.0f} s deadline: its total is a floor"
                )
            if gateway is not None:
                self.results.add("rss.crowd", subject.label, gateway.rss_mb())
        finally:
            await figures.disperse(crowd)

    async def scale(self, http: aiohttp.ClientSession) -> None:
        """Figures 8 and 2b, on a pair of gateways of their own (KG's iopub rate limit off)."""
        p = free_port()
        kgw = self.gateway(KGW, kgw_command(p), p, "/api")
        p = free_port()
        kg = self.gateway(
            KG, kg_command(p, "--ZMQChannelsWebsocketConnection.limit_rate=False"), p, "/api"
        )
        try:
            await self.start(http, [kgw, kg])
            subjects = [
                (KGW, figures.GatewaySubject(KGW, kgw, http)),
                (KG, figures.GatewaySubject(KG, kg, http)),
            ]
            for _, subject in subjects:
                await self.idle_websockets(subject)
            for _, subject in subjects:
                await self.busy_websockets(subject)
            direct = figures.DirectSubject(self.workdir / "direct-kernels.log")
            await self.flood([*subjects, (DIRECT, direct)])
        finally:
            await asyncio.gather(kgw.stop(), kg.stop())
            await DirectKernel.shutdown_all()

    async def idle_websockets(self, subject: figures.GatewaySubject) -> None:
        """Figure 8, idle: the gateway's RSS before and after opening many websockets."""
        s = self.settings
        gateway = subject.gateway
        assert gateway is not None
        say(
            f"figure 8 on {subject.label}: {s.scale_clients} idle websockets"
            f" on {s.scale_idle_kernels} kernels"
        )
        crowd = await figures.gather_crowd(subject, s.scale_idle_kernels)
        self.note_replaced(crowd, subject.label, "figure 8")
        try:
            gateway.note_kernels()
            await asyncio.sleep(1.0)
            before = gateway.rss_mb()
            idle = await figures.open_idle(crowd.kernels, s.scale_clients)
            crowd.connections.extend(idle)
            await asyncio.sleep(2.0)
            after = gateway.rss_mb()
            self.results.add("scale.before", subject.label, before)
            self.results.add("scale.after", subject.label, after)
            per = (after - before) * 1000 / s.scale_clients
            self.results.add("scale.per_ws", subject.label, per)
            # Every one of them must have been a working connection.
            answered = await asyncio.gather(
                *(c.kernel_info(timeout=300) for c in idle), return_exceptions=True
            )
            failed = sum(isinstance(a, BaseException) for a in answered)
            if failed:
                self.results.notes.append(
                    f"{subject.label}: {failed} of the idle websockets of figure 8 did not"
                    " answer kernel_info afterwards"
                )
        finally:
            await figures.disperse(crowd)

    async def busy_websockets(self, subject: figures.GatewaySubject) -> None:
        """Figure 8, busy: as many clients, each running executions, over many kernels."""
        s = self.settings
        gateway = subject.gateway
        assert gateway is not None
        say(
            f"figure 8 on {subject.label}: {s.scale_clients} clients x {s.scale_executes}"
            f" executes on {s.scale_kernels} kernels"
        )
        crowd = await figures.gather_crowd(subject, s.scale_kernels)
        self.note_replaced(crowd, subject.label, "figure 8")
        try:
            gateway.note_kernels()
            more = await figures.open_idle(crowd.kernels, s.scale_clients - len(crowd.kernels))
            answered = await asyncio.gather(
                *(c.kernel_info(timeout=300) for c in more), return_exceptions=True
            )
            working = [c for c, a in zip(more, answered, strict=True) if isinstance(a, float)]
            refused = len(more) - len(working)
            crowd.connections.extend(working)
            result = await figures.many_clients(crowd, s.scale_executes, s.scale_deadline)
            # A client whose connection never worked lost every execution it would have run.
            result["lost"] += refused * s.scale_executes
            for name in ("total", "p99", "lost"):
                self.results.add(f"scale.{name}", subject.label, result[name])
            if refused or result["failed"]:
                self.results.notes.append(
                    f"{subject.label}: {refused} of the {s.scale_clients} websockets of figure 8"
                    f" did not answer kernel_info and {result['failed']:.0f} were closed while"
                    f" executing; their {result['lost']:.0f} executions count as lost replies"
                )
            await asyncio.gather(*(c.close() for c in more), return_exceptions=True)
            self.results.add("scale.rss", subject.label, gateway.rss_mb())
            if result["lost_idle"]:
                self.results.notes.append(
                    f"{subject.label} lost {result['lost_idle']:.0f} idle statuses in figure 8"
                )
            if result["unfinished"]:
                self.results.notes.append(
                    f"{subject.label} left {result['unfinished']:.0f} executions of figure 8"
                    f" unfinished at its {s.scale_deadline:.0f} s deadline: its total is a floor"
                )
        finally:
            await figures.disperse(crowd)

    async def flood(self, subjects: list[tuple[str, figures.Subject]]) -> None:
        """Figure 2b: the flooding cell on a kernel of each subject, in each protocol."""
        s = self.settings
        say(f"figure 2b: {figures.FLOOD:,} messages straight onto iopub")
        kernels: list[figures.Kernel] = []
        trials: list[tuple[str, str, Gateway | None, figures.Connection]] = []
        try:
            for label, subject in subjects:
                for protocol, suffix in PROTOCOLS:
                    if subject.gateway is None and protocol != LEGACY:
                        continue
                    kernels.append(await subject.start_kernel())
                    if subject.gateway is None:
                        assert isinstance(kernels[-1], figures.DirectKernelAdapter)
                        connection: figures.Connection = await kernels[-1].kernel.raw_connect()
                    else:
                        connection = await kernels[-1].connect(protocol)
                    for _ in range(5):
                        await connection.kernel_info()
                    trials.append((suffix, label, subject.gateway, connection))
            rates: dict[tuple[str, str], list[float]] = {}
            lost: dict[tuple[str, str], list[float]] = {}
            cpu: dict[str, list[float]] = {}
            for run in range(s.flood_runs):
                for suffix, label, gateway, connection in rotated(trials, run):
                    result = await figures.flood(connection, gateway, raw=gateway is None)
                    rates.setdefault((suffix, label), []).append(result["rate"])
                    lost.setdefault((suffix, label), []).append(result["lost"])
                    if gateway is not None and not suffix:
                        cpu.setdefault(label, []).append(result["cpu"])
            for (suffix, label), values in rates.items():
                self.record(f"flood{suffix}.rate", label, values)
            for (suffix, label), values in lost.items():
                # The worst run: a loss is a loss.
                self.record(f"flood{suffix}.lost", label, [max(values)])
            for label, values in cpu.items():
                self.record("flood.cpu", label, values)
        finally:
            for *_, connection in trials:
                await connection.close()
            for kernel in kernels:
                await kernel.shutdown()

    def note_replaced(self, crowd: figures.Crowd, label: str, figure: str) -> None:
        if crowd.replaced:
            self.results.notes.append(
                f"{label}: {crowd.replaced} kernels of {figure} died while starting and were"
                " replaced"
            )

    async def notebook_http(self, http: aiohttp.ClientSession) -> None:
        """Figure 6: the same notebook served by both gateways, taking turns."""
        s = self.settings
        say("figure 6: notebook-http")
        p = free_port()
        kgw = self.gateway(
            KGW,
            kgw_command(
                p,
                "--api=notebook-http",
                f"--seed-uri={NOTEBOOK}",
                f"--prespawn-count={s.prespawn}",
            ),
            p,
            "/_api/spec/swagger.json",
        )
        p = free_port()
        kg = self.gateway(
            KG,
            kg_command(
                p,
                "--KernelGatewayApp.api=kernel_gateway.notebook_http",
                f"--KernelGatewayApp.seed_uri={NOTEBOOK}",
                f"--KernelGatewayApp.prespawn_count={s.prespawn}",
            ),
            p,
            "/_api/spec/swagger.json",
        )
        try:
            await self.start(http, [kgw, kg])
            for gateway in (kgw, kg):
                await figures.wait_endpoint(http, gateway.base_url + NOTEBOOK_URL)
                gateway.note_kernels()
                await figures.hammer(gateway.base_url + NOTEBOOK_URL, 1.0, s.notebook_connections)
            for round_ in range(s.rounds):
                for gateway in rotated([kgw, kg], round_):
                    result = await figures.hammer(
                        gateway.base_url + NOTEBOOK_URL, s.notebook_seconds, s.notebook_connections
                    )
                    self.results.add("nb.rate", gateway.label, result["rate"])
                    self.results.add("nb.p99", gateway.label, result["p99"])
                    if result["failures"]:
                        self.results.notes.append(
                            f"{gateway.label} failed {result['failures']:.0f} requests in figure 6"
                        )
        finally:
            await asyncio.gather(kgw.stop(), kg.stop())


def raise_file_limit() -> None:
    """
    Allow this process, and the gateways it starts, as many open files as the system lets it:
    figure 8's thousand websockets need more than the usual soft limit of 1024.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def load() -> str:
    """The load averages, which say whether other work shared the machine."""
    return " ".join(open("/proc/loadavg").read().split()[:3])


def machine() -> str:
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in open("/proc/cpuinfo")
            if line.startswith("model name")
        ),
        platform.processor() or "unknown CPU",
    )
    memory = next(
        int(line.split()[1]) for line in open("/proc/meminfo") if line.startswith("MemTotal")
    )
    return (
        f"{os.cpu_count()} cores ({model}), {memory / 1024 / 1024:.1f} GiB memory,"
        f" Linux {platform.release()}, Python {platform.python_version()}"
    )


_VERSIONS = """
import json, sys
from importlib import metadata
found = {}
for name in sys.argv[1:]:
    try:
        found[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        pass
print(json.dumps(found))
"""


def versions() -> dict[str, str]:
    """The versions that matter, from kgw's environment and from this one (KG's)."""
    kgw_side = ["twisted", "autobahn", "txzmq", "klein"]
    common = ["jupyter_client", "ipykernel", "pyzmq"]
    kg_side = ["jupyter_kernel_gateway", "jupyter_server", "tornado", "aiohttp"]
    found: dict[str, str] = {}
    result = subprocess.run(
        [str(KGW_BIN / "python"), "-c", _VERSIONS, *kgw_side, *common],
        capture_output=True,
        text=True,
        timeout=60,
    )
    found.update(json.loads(result.stdout or "{}"))
    found.update(json.loads(subprocess.check_output([sys.executable, "-c", _VERSIONS, *kg_side])))
    return found


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--rounds", type=int, help="rounds of the interleaved figures")
    parser.add_argument("--scale-clients", type=int, help="figure 8's websockets (1,000)")
    parser.add_argument(
        "--output", type=Path, default=HERE / "results", help="where to write the results"
    )
    parser.add_argument(
        "--revision",
        default="",
        help="benchmark kgw as of this git revision (default: the working tree, as it is at the"
        " start; either way kgw's dependencies are those of the working tree's setup.py)",
    )
    parser.add_argument(
        "--skip",
        default="",
        help="figure groups to leave out, comma-separated: ws, scale, notebook",
    )
    return parser.parse_args(argv)


async def main(argv: list[str]) -> int:
    args = parse(argv)
    raise_file_limit()
    settings = QUICK if args.quick else Settings()
    if args.rounds:
        settings = dataclasses.replace(settings, rounds=args.rounds)
    if args.scale_clients:
        settings = dataclasses.replace(settings, scale_clients=args.scale_clients)
    skip = {s for s in args.skip.split(",") if s}
    workdir = Path(tempfile.mkdtemp(prefix="kgw-bench-"))
    source = workdir / "kgw-source"
    found = {"kgw": snapshot_kgw(ROOT, source, args.revision), **versions()}
    warm = "--warm-kernels" in kgw_options(source)
    bench = Bench(settings, workdir, source, warm)
    began = time.monotonic()
    load_before = load()
    say(f"kgw from {KGW_BIN}, warm pool option: {'yes' if warm else 'no'}; logs in {workdir}")
    say(", ".join(f"{k} {v}" for k, v in found.items()))
    say(f"{settings}")
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
            if "ws" not in skip:
                for round_ in range(settings.rounds):
                    say(f"round {round_ + 1} of {settings.rounds}")
                    await bench.websocket_round(http, round_)
            if "scale" not in skip:
                await bench.scale(http)
            if "notebook" not in skip:
                await bench.notebook_http(http)
    except (BenchError, asyncio.TimeoutError) as e:
        say(f"failed: {str(e) or 'a figure timed out'}")
        say(f"the gateways' logs are in {workdir}")
        return 1
    rows = report.table_rows(bench.results)
    context = {
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
        "command": "tox -e bench" + (" -- " + shlex.join(argv) if argv else ""),
        "duration_s": time.monotonic() - began,
        "load": f"{load_before} before, {load()} after",
        "machine": machine(),
        "versions": found,
        "settings": dataclasses.asdict(settings),
        "notes": bench.results.notes,
    }
    print()
    print(report.markdown_table(rows))
    for note in bench.results.notes:
        print(f"note: {note}")
    partial = skip or args.rounds or args.scale_clients
    name = "quick" if args.quick else "partial" if partial else "latest"
    paths = report.write(args.output, name, rows, context)
    print()
    say(f"wrote {paths[0]} and {paths[1]}")
    shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main(sys.argv[1:])))
