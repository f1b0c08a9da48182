"""
The load run of the reliability issue: many clients executing while others come and go.

Two identical rounds against one kgw: 100 websocket clients on 10 kernels, 50 executes each,
while 20 more clients repeatedly connect, ask for kernel info and drop. Every execute must get
its reply and idle status (0 lost, 0 errors), and the gateway's RSS after the second round must
be within 5% of its RSS after the first. Loopback only; bounded in count and time.

    python benchmarks/load.py [--clients 100 --kernels 10 --executes 50 --churners 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.client import GatewayClient
from benchmarks.gateways import Gateway, free_port, kgw_command

RESULTS = Path(__file__).resolve().parent / "results"


async def worker(client: GatewayClient, kernel: str, executes: int, tally: dict) -> None:
    """One client: connect, run C{executes} cells one after the other, close."""
    try:
        socket = await client.connect(kernel)
    except Exception as e:
        tally["errors"].append(f"connect: {e!r}")
        return
    try:
        for i in range(executes):
            try:
                run = await socket.execute(f"x = {i}", timeout=120.0)
            except Exception as e:
                tally["lost"] += 1
                tally["errors"].append(f"execute: {e!r}")
                continue
            if run.complete and run.status == "ok":
                tally["replies"] += 1
                tally["round_trips"].append(run.round_trip)
            else:
                tally["lost"] += 1
    finally:
        await socket.close()


async def churner(client: GatewayClient, kernel: str, stop: asyncio.Event, tally: dict) -> None:
    """A client that connects, asks for kernel info and drops, over and over, until C{stop}."""
    while not stop.is_set():
        try:
            socket = await client.connect(kernel)
            await socket.kernel_info(timeout=60.0)
            await socket.close()
            tally["churns"] += 1
        except Exception as e:
            tally["errors"].append(f"churn: {e!r}")


async def loadRound(
    client: GatewayClient, kernels: list[str], clients: int, executes: int, churners: int
) -> dict:
    tally: dict = {"replies": 0, "lost": 0, "errors": [], "round_trips": [], "churns": 0}
    stop = asyncio.Event()
    churning = [
        asyncio.ensure_future(churner(client, kernels[i % len(kernels)], stop, tally))
        for i in range(churners)
    ]
    started = time.perf_counter()
    await asyncio.gather(
        *(worker(client, kernels[i % len(kernels)], executes, tally) for i in range(clients))
    )
    tally["seconds"] = time.perf_counter() - started
    stop.set()
    await asyncio.gather(*churning)
    trips = sorted(tally.pop("round_trips"))
    tally["p99_ms"] = trips[int(0.99 * (len(trips) - 1))] * 1000 if trips else None
    return tally


async def main(arguments: argparse.Namespace) -> int:
    work = Path(tempfile.mkdtemp(prefix="kgw-load-"))
    port = free_port()
    gateway = Gateway("kgw", kgw_command(port, "--list-kernels=True"), port, work / "kgw.log")
    rounds = []
    async with aiohttp.ClientSession() as http:
        gateway.start(work)
        try:
            await gateway.wait_ready(http)
            client = GatewayClient(gateway.base_url, http)
            kernels = [await client.start_kernel() for _ in range(arguments.kernels)]
            gateway.note_kernels()
            for number in (1, 2):
                result = await loadRound(
                    client, kernels, arguments.clients, arguments.executes, arguments.churners
                )
                result["rss_mb"] = gateway.rss_mb()
                result["errors"] = result["errors"][:10] + (
                    [f"... {len(result['errors']) - 10} more"] if len(result["errors"]) > 10 else []
                )
                print(f"round {number}: {json.dumps(result)}", flush=True)
                rounds.append(result)
            for kernel in kernels:
                await client.shutdown_kernel(kernel)
        finally:
            await gateway.stop()
    growth = rounds[1]["rss_mb"] / rounds[0]["rss_mb"] - 1
    expected = arguments.clients * arguments.executes
    ok = all(r["lost"] == 0 and not r["errors"] and r["replies"] == expected for r in rounds)
    ok = ok and growth <= 0.05
    lines = [
        "# kgw load run",
        "",
        f"{arguments.clients} clients on {arguments.kernels} kernels, {arguments.executes} "
        f"executes each, with {arguments.churners} clients connecting and dropping; two rounds.",
        "",
        "| round | replies | lost | errors | churns | total (s) | p99 round trip (ms) | RSS (MB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for number, r in enumerate(rounds, 1):
        lines.append(
            f"| {number} | {r['replies']} | {r['lost']} | {len(r['errors'])} | {r['churns']} "
            f"| {r['seconds']:.1f} | {r['p99_ms']:.0f} | {r['rss_mb']:.1f} |"
        )
    lines += ["", f"RSS growth from round 1 to round 2: {growth * 100:+.1f}% (at most +5%).", ""]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "load.md").write_text("\n".join(lines))
    print("\n".join(lines))
    print("load: " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--kernels", type=int, default=10)
    parser.add_argument("--executes", type=int, default=50)
    parser.add_argument("--churners", type=int, default=20)
    sys.exit(asyncio.run(main(parser.parse_args())))
