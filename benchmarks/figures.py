"""
The measurements, each written once and run on every subject: kgw, KG, or no gateway at all.

A subject starts kernels; a kernel gives connections; a connection runs code and says when its
reply, its idle status and its outputs arrived (see L{benchmarks.client.Execution}).
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import aiohttp

from benchmarks.client import LEGACY, BenchError, Execution, GatewayClient, KernelSocket
from benchmarks.direct import DirectConnection, DirectKernel
from benchmarks.gateways import Gateway

DISPLAYS = 3000
LARGE_BYTES = 8_000_000
# Figure 7: seconds after which an execution's reply counts as lost.
REPLY_TIMEOUT = 60.0

# Run once on each benchmark kernel, so that the measured cells do only what they measure.
SETUP_CODE = f"from IPython.display import display\n_bench_text = 'x' * {LARGE_BYTES}"
ROUND_TRIP_CODE = "pass"
RELAY_CODE = f"for i in range({DISPLAYS}):\n    display(i)"
LARGE_CODE = "display({'text/plain': _bench_text}, raw=True)"
# Figure 2b: stream messages sent straight onto iopub, as fast as the kernel's session signs
# them, under the cell's own request: no stdout, so no flush waits.
FLOOD = 20_000
FLOOD_QUIET = 3.0
FLOOD_TIMEOUT = 300.0
FLOOD_CODE = f"""\
_k = get_ipython().kernel
_p = _k.get_parent("shell")
for _i in range({FLOOD}):
    _k.session.send(_k.iopub_socket, "stream", {{"name": "stdout", "text": "x\\n"}}, parent=_p)
"""


class Connection(Protocol):
    async def kernel_info(self, timeout: float = 60.0) -> float: ...

    async def execute(self, code: str, watch: str = "", timeout: float = 120.0) -> Execution: ...

    async def run(self, code: str, run: Execution, watch: str = "") -> None: ...

    async def close(self) -> None: ...


class Kernel(Protocol):
    async def connect(self, protocol: str = LEGACY) -> Connection: ...

    async def shutdown(self) -> None: ...


class Subject(Protocol):
    label: str
    gateway: Gateway | None

    async def start_kernel(self) -> Kernel: ...


class GatewayKernel:
    def __init__(self, client: GatewayClient, kernel_id: str) -> None:
        self.client = client
        self.id = kernel_id

    async def connect(self, protocol: str = LEGACY) -> KernelSocket:
        return await self.client.connect(self.id, protocol)

    async def shutdown(self) -> None:
        await self.client.shutdown_kernel(self.id)


class GatewaySubject:
    """Kernels of a gateway, reached through HTTP and websockets only."""

    def __init__(self, label: str, gateway: Gateway, http: aiohttp.ClientSession) -> None:
        self.label = label
        self.gateway: Gateway | None = gateway
        self.client = GatewayClient(gateway.base_url, http)

    async def start_kernel(self) -> GatewayKernel:
        return GatewayKernel(self.client, await self.client.start_kernel())


class DirectKernelAdapter:
    def __init__(self, kernel: DirectKernel) -> None:
        self.kernel = kernel

    async def connect(self, protocol: str = LEGACY) -> DirectConnection:
        return await self.kernel.connect()

    async def shutdown(self) -> None:
        await self.kernel.shutdown()


class DirectSubject:
    """Kernels started and reached by jupyter_client in this process; their output to C{log}."""

    label = "direct"
    gateway: Gateway | None = None

    def __init__(self, log: Path) -> None:
        self.log = log

    async def start_kernel(self) -> DirectKernelAdapter:
        return DirectKernelAdapter(await DirectKernel.start(self.log))


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest sample at or above C{fraction} of them."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _checked(run: Execution, what: str) -> Execution:
    if run.status != "ok":
        raise BenchError(f"{what} ended with status {run.status!r}")
    return run


async def prepare(connection: Connection) -> None:
    """Define what the measured cells use, and warm the kernel and the path up."""
    _checked(await connection.execute(SETUP_CODE), "the setup cell")
    for _ in range(10):
        _checked(await connection.execute(ROUND_TRIP_CODE), "a warm-up execution")


async def round_trips(connection: Connection, count: int) -> dict[str, float]:
    """Figure 1: C{count} sequential executions of C{pass}; median and p99 round trip (ms)."""
    samples = []
    for _ in range(count):
        run = _checked(await connection.execute(ROUND_TRIP_CODE), "a round trip")
        samples.append(run.round_trip * 1000)
    return {"median": statistics.median(samples), "p99": percentile(samples, 0.99)}


async def iopub_relay(connection: Connection, gateway: Gateway | None) -> dict[str, float]:
    """
    Figure 2 (and the CPU part of 5): one cell displays C{DISPLAYS} values. The rate is the
    display messages received over the time from sending the request to the idle status.
    """
    cpu = gateway.cpu_seconds() if gateway else 0.0
    run = _checked(await connection.execute(RELAY_CODE, watch="display_data"), "the relay cell")
    result = {
        "rate": run.watched / (run.idle - run.sent),
        "messages": float(run.received),
        "lost": float(DISPLAYS - run.watched),
        # How fast the kernel itself published them, by its own clock.
        "kernel_rate": DISPLAYS / run.kernel_time if run.kernel_time > 0 else 0.0,
    }
    if gateway:
        result["cpu"] = gateway.cpu_seconds() - cpu
    return result


async def flood(
    connection: Connection, gateway: Gateway | None, raw: bool = False
) -> dict[str, float]:
    """
    Figure 2b: one cell sends L{FLOOD} stream messages straight onto iopub. The rate is the
    stream messages received over the time from sending the request to the idle status; a
    message not received is lost. C{raw}: C{connection} is a direct one, read raw.
    """
    cpu = gateway.cpu_seconds() if gateway else 0.0
    run = Execution(sent=0.0)
    if raw:
        assert isinstance(connection, DirectConnection)
        task = asyncio.ensure_future(connection.raw_run(FLOOD_CODE, run, "stream"))
    else:
        task = asyncio.ensure_future(connection.run(FLOOD_CODE, run, watch="stream"))
    # The idle status may itself be lost at a queue's limit: once the reply has come and
    # nothing more for FLOOD_QUIET seconds, the run is over.
    began = seen_at = time.perf_counter()
    seen = -1
    try:
        while not task.done():
            await asyncio.wait([task], timeout=0.25)
            now = time.perf_counter()
            if run.received != seen:
                seen, seen_at = run.received, now
            elif run.reply and now - seen_at > FLOOD_QUIET:
                break
            if now - began > FLOOD_TIMEOUT:
                raise BenchError(f"the flooding cell did not end within {FLOOD_TIMEOUT} s")
    finally:
        if not task.done():
            task.cancel()
    if task.done() and not task.cancelled() and task.exception():
        raise task.exception()  # type: ignore[misc]
    _checked(run, "the flooding cell")
    end = run.idle or run.last_watched
    result = {
        "rate": run.watched / (end - run.sent),
        "lost": float(FLOOD - run.watched),
        "idle_lost": float(not run.idle),
    }
    if gateway:
        result["cpu"] = (gateway.cpu_seconds() - cpu) / max(run.received, 1) * 10_000
    return result


async def large_output(connection: Connection) -> dict[str, float]:
    """Figure 3: one 8 MB text/plain display; MB/s from the request to that message's arrival."""
    run = _checked(await connection.execute(LARGE_CODE, watch="display_data"), "the large cell")
    if run.watched != 1:
        raise BenchError(f"the large output arrived {run.watched} times")
    return {"rate": LARGE_BYTES / 1e6 / (run.first_watched - run.sent)}


async def kernel_start(subject: Subject) -> dict[str, float]:
    """Figure 4: from the start request to the first kernel_info_reply on a new connection."""
    start = time.perf_counter()
    kernel = await subject.start_kernel()
    connection = await kernel.connect()
    replied = await connection.kernel_info()
    await connection.close()
    await kernel.shutdown()
    return {"start": (replied - start) * 1000}


@dataclass
class Crowd:
    """Figure 7's kernels and connections, kept for the memory figure in between."""

    kernels: list[Kernel]
    connections: list[Connection]
    # Kernels that died while starting and were replaced (see L{gather_crowd}).
    replaced: int = 0


async def gather_crowd(subject: Subject, kernels: int, tries: int = 3) -> Crowd:
    """
    Start C{kernels} kernels at once, with one connection each, checked by kernel_info.

    A kernel that dies while starting is replaced, up to C{tries} times: on a busy machine a
    kernel sometimes loses the race for the ports it was given (both gateways pick them
    alike, through jupyter_client), and figure 8's thousands of connections make that likelier.
    """
    crowd = Crowd([], [])

    async def one() -> None:
        for attempt in range(tries):
            kernel = None
            try:
                kernel = await subject.start_kernel()
                connection = await kernel.connect()
                await connection.kernel_info()
            except (BenchError, aiohttp.ClientError, asyncio.TimeoutError):
                if attempt == tries - 1:
                    raise
                crowd.replaced += 1
                if kernel is not None:
                    try:
                        await kernel.shutdown()
                    except (BenchError, aiohttp.ClientError):
                        pass
                continue
            crowd.kernels.append(kernel)
            crowd.connections.append(connection)
            return

    await asyncio.gather(*(one() for _ in range(kernels)))
    return crowd


async def fill_crowd(crowd: Crowd, clients: int) -> None:
    """Open more connections, round-robin over the kernels, until there are C{clients}."""
    more = [crowd.kernels[i % len(crowd.kernels)] for i in range(len(crowd.connections), clients)]
    opened = await asyncio.gather(*(k.connect() for k in more))
    await asyncio.gather(*(c.kernel_info() for c in opened))
    crowd.connections.extend(opened)


async def many_clients(crowd: Crowd, executes: int, deadline: float) -> dict[str, float]:
    """
    Figure 7: every connection runs C{executes} executions one after another, all connections
    at once. An execution whose reply has not come within L{REPLY_TIMEOUT} is lost; those not
    finished by C{deadline} seconds are counted apart, as unfinished. A connection the gateway
    closes loses the executions it had left (and counts as failed).
    """
    samples: list[float] = []
    counts = {"lost": 0, "lost_idle": 0, "unfinished": 0, "failed": 0}
    start = time.perf_counter()
    stop = start + deadline

    async def client(connection: Connection) -> None:
        for done in range(executes):
            remaining = stop - time.perf_counter()
            run = Execution(sent=0.0)
            try:
                if remaining <= 0:
                    raise asyncio.TimeoutError()
                await asyncio.wait_for(
                    connection.run(ROUND_TRIP_CODE, run), min(REPLY_TIMEOUT, remaining)
                )
            except (BenchError, aiohttp.ClientError):
                # The gateway closed the connection: the rest of its executions are lost.
                counts["failed"] += 1
                counts["lost"] += executes - done
                return
            except asyncio.TimeoutError:
                if remaining < REPLY_TIMEOUT:
                    counts["unfinished"] += executes - done
                    return
                counts["lost"] += not run.reply
                counts["lost_idle"] += not run.idle
                continue
            samples.append(run.round_trip * 1000)

    await asyncio.gather(*(client(c) for c in crowd.connections))
    total = time.perf_counter() - start
    return {
        "total": total,
        "p99": percentile(samples, 0.99) if samples else math.inf,
        **{name: float(count) for name, count in counts.items()},
    }


async def open_idle(kernels: list[Kernel], clients: int, at_once: int = 50) -> list[Connection]:
    """
    Figure 8: open C{clients} websockets round-robin over C{kernels}, C{at_once} at a time,
    and send nothing on them.
    """
    opened: list[Connection] = []
    gate = asyncio.Semaphore(at_once)

    async def one(kernel: Kernel) -> None:
        async with gate:
            opened.append(await kernel.connect())

    try:
        await asyncio.gather(*(one(kernels[i % len(kernels)]) for i in range(clients)))
    except BaseException:
        await asyncio.gather(*(c.close() for c in opened), return_exceptions=True)
        raise
    return opened


async def disperse(crowd: Crowd) -> None:
    await asyncio.gather(*(c.close() for c in crowd.connections), return_exceptions=True)
    await asyncio.gather(*(k.shutdown() for k in crowd.kernels), return_exceptions=True)


async def wait_endpoint(http: aiohttp.ClientSession, url: str, timeout: float = 60.0) -> None:
    """Wait until GET C{url} answers 200: a notebook-http gateway's kernels are ready."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        async with http.get(url) as r:
            await r.read()
            if r.status == 200:
                return
        await asyncio.sleep(0.2)
    raise BenchError(f"GET {url} did not answer 200 within {timeout} s")


async def hammer(url: str, duration: float, connections: int) -> dict[str, float]:
    """
    Figure 6: C{connections} keep-alive connections each send GET C{url} back to back for
    C{duration} seconds; requests/s, p99 latency (ms) and the count of failed requests.
    """
    latencies: list[float] = []
    failures = 0
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:
        start = time.perf_counter()
        stop = start + duration

        async def worker() -> None:
            nonlocal failures
            while time.perf_counter() < stop:
                sent = time.perf_counter()
                async with http.get(url) as r:
                    await r.read()
                    if r.status != 200:
                        failures += 1
                        continue
                latencies.append((time.perf_counter() - sent) * 1000)

        await asyncio.gather(*(worker() for _ in range(connections)))
        elapsed = time.perf_counter() - start
    if not latencies:
        raise BenchError(f"no request to {url} succeeded")
    return {
        "rate": len(latencies) / elapsed,
        "p99": percentile(latencies, 0.99),
        "failures": float(failures),
    }
