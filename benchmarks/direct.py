"""
The baseline without a gateway: jupyter_client's AsyncKernelManager starts the same kernel and
AsyncKernelClients talk to it over ZeroMQ, from the benchmark's own process.

The interface matches L{benchmarks.client}'s, so that the figures run the same steps on it.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import time
from pathlib import Path
from queue import Empty
from typing import ClassVar

import zmq
import zmq.asyncio
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.session import Session

from benchmarks.client import BenchError, Execution, kernel_seconds


class DirectConnection:
    """One AsyncKernelClient of a kernel, with its own session and so its own identity."""

    def __init__(self, manager: AsyncKernelManager, iopub: bool = True) -> None:
        # Clients made by the manager share its Session, and so one ZeroMQ identity: the kernel
        # would route every client's replies to one of them. Each gets its own here.
        session = Session(
            key=manager.session.key, signature_scheme=manager.session.signature_scheme
        )
        self._client = manager.client(session=session)
        self._client.start_channels(iopub=iopub, hb=False)

    async def wait_for_iopub(self, timeout: float = 60.0) -> None:
        """
        Ask for kernel_info until an iopub message arrives. A new SUB socket misses what the
        kernel publishes before its subscription reaches it, such as an execution's idle
        status; gateways do the same before they hand a connection out.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._client.kernel_info()
            try:
                await self._client.get_iopub_msg(timeout=0.2)
            except Empty:
                continue
            return
        raise BenchError(f"no iopub message from the kernel within {timeout} s")

    async def kernel_info(self, timeout: float = 60.0) -> float:
        """Ask for C{kernel_info}; return the C{perf_counter()} time its reply arrived."""

        async def wait() -> float:
            msg_id = self._client.kernel_info()
            while True:
                msg = await self._client.get_shell_msg()
                if msg["parent_header"].get("msg_id") == msg_id:
                    return time.perf_counter()

        return await asyncio.wait_for(wait(), timeout)

    async def execute(self, code: str, watch: str = "", timeout: float = 120.0) -> Execution:
        """Run C{code}; return once both its reply and its idle status arrived."""
        run = Execution(sent=0.0)
        await asyncio.wait_for(self.run(code, run, watch), timeout)
        return run

    async def run(self, code: str, run: Execution, watch: str = "") -> None:
        """Run C{code}, recording into C{run}: iopub is read until idle, then shell until reply."""
        client = self._client
        run.sent = time.perf_counter()
        msg_id = client.execute(code, store_history=False, allow_stdin=False)
        while not run.idle:
            msg = await client.get_iopub_msg()
            run.received += 1
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            msg_type = msg["msg_type"]
            if msg_type == watch:
                run.watched += 1
                if not run.first_watched:
                    run.first_watched = time.perf_counter()
            elif msg_type == "status" and msg["content"]["execution_state"] == "idle":
                run.idle = time.perf_counter()
        while not run.reply:
            msg = await client.get_shell_msg()
            run.received += 1
            if msg["parent_header"].get("msg_id") == msg_id:
                run.reply = time.perf_counter()
                run.status = msg["content"].get("status", "")
                run.kernel_time = kernel_seconds(msg["header"], msg["metadata"])

    async def raw_run(self, code: str, run: Execution, watch: str) -> None:
        """
        Run C{code}, reading iopub with a raw ZeroMQ SUB socket of its own rather than through
        jupyter_client: each message's header and parent header are parsed, nothing else.
        The connection must have been made without jupyter_client's own iopub channel (see
        L{DirectKernel.raw_connect}), or the kernel publishes everything twice.
        """
        client = self._client
        context = zmq.asyncio.Context.instance()
        waiter = context.socket(zmq.SUB)
        waiter.setsockopt(zmq.SUBSCRIBE, b"")
        waiter.connect(client._make_url("iopub"))
        # The same socket, read without a future per message once it is readable.
        reader = zmq.Socket.shadow(waiter.underlying)
        reply: asyncio.Task[None] | None = None
        try:
            await self._subscribed(waiter)
            run.sent = time.perf_counter()
            msg_id = client.execute(code, store_history=False, allow_stdin=False)
            reply = asyncio.ensure_future(self._reply(msg_id, run))
            while not run.idle:
                await waiter.poll(timeout=None)
                while reader.get(zmq.EVENTS) & zmq.POLLIN:
                    frames = reader.recv_multipart(zmq.NOBLOCK)
                    run.received += 1
                    start = frames.index(b"<IDS|MSG>") + 2
                    msg_type = json.loads(frames[start])["msg_type"]
                    if json.loads(frames[start + 1]).get("msg_id") != msg_id:
                        continue
                    if msg_type == watch:
                        run.watched += 1
                        run.last_watched = time.perf_counter()
                        if not run.first_watched:
                            run.first_watched = run.last_watched
                    elif msg_type == "status" and b'"idle"' in frames[start + 3]:
                        run.idle = time.perf_counter()
            await reply
        finally:
            if reply is not None and not reply.done():
                reply.cancel()
            waiter.close(linger=0)

    async def _reply(self, msg_id: str, run: Execution) -> None:
        while True:
            msg = await self._client.get_shell_msg()
            if msg["parent_header"].get("msg_id") == msg_id:
                run.reply = time.perf_counter()
                run.status = msg["content"].get("status", "")
                return

    async def _subscribed(self, socket: zmq.asyncio.Socket, timeout: float = 60.0) -> None:
        """Ask for kernel_info until C{socket}, a new SUB socket, receives something."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._client.kernel_info()
            if await socket.poll(timeout=200):
                # Let the rest of that request's messages arrive, then drop them all.
                await asyncio.sleep(0.2)
                while await socket.poll(timeout=0):
                    await socket.recv_multipart()
                while True:
                    try:
                        await asyncio.wait_for(self._client.get_shell_msg(), 0.2)
                    except asyncio.TimeoutError:
                        return
        raise BenchError(f"no iopub message on a raw reader within {timeout} s")

    async def close(self) -> None:
        self._client.stop_channels()


class DirectKernel:
    """A kernel started by jupyter_client in this process."""

    # Every kernel not shut down yet, so that a failed run can still stop them all.
    running: ClassVar[set[DirectKernel]] = set()

    def __init__(self, manager: AsyncKernelManager) -> None:
        self._manager = manager

    @classmethod
    async def start(cls, log: Path, kernel_name: str = "python3") -> DirectKernel:
        """Start a kernel, its output appended to C{log} (as a gateway's goes to its log)."""
        manager = AsyncKernelManager(kernel_name=kernel_name)
        kernel = cls(manager)
        cls.running.add(kernel)
        with open(log, "ab") as output:
            await manager.start_kernel(stdout=output, stderr=subprocess.STDOUT)
        return kernel

    async def connect(self) -> DirectConnection:
        connection = DirectConnection(self._manager)
        await connection.wait_for_iopub()
        return connection

    async def raw_connect(self) -> DirectConnection:
        """A connection for L{DirectConnection.raw_run}: shell only, iopub read raw."""
        return DirectConnection(self._manager, iopub=False)

    async def shutdown(self) -> None:
        self.running.discard(self)
        await self._manager.shutdown_kernel(now=True)

    @classmethod
    async def shutdown_all(cls) -> None:
        kernels = list(cls.running)
        await asyncio.gather(*(k.shutdown() for k in kernels), return_exceptions=True)
