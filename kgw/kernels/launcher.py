"""Create kernels: launch a process, connect its channels, wait for it to answer, seed it.

Shared by the starts a request asks for and by the warm pool. A kernel the launcher makes is not
registered: nobody can find it by id until the registry registers it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

from jupyter_client.kernelspec import KernelSpecManager
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from txzmq import ZmqFactory

from kgw.errors import KernelStartFailed, StoreUnavailable
from kgw.kernels.channels import KernelChannels
from kgw.kernels.kernel import Kernel, LaunchableProcess
from kgw.kernels.policy import KernelPolicy
from kgw.kernels.seed import Seed, SeedFailed
from kgw.kernels.sockets import ZmqSockets
from kgw.kernels.store import KernelStore, answer, recordOf

log = Logger()

ProcessFactory = Callable[[str, KernelSpecManager, str], LaunchableProcess]
"""Makes a new kernel's process: from its kernelspec name, kernelspecs, connection file."""


class Launcher:
    """
    Starts kernels of C{specs}, with their connection files in C{runtimeDir}, and records each
    in C{store} (when there is one) so that a later gateway can adopt it.

    @ivar launching: kernels launched but not handed out yet, by id.
    @ivar stopping: set when the gateway stops: starts under way give up.
    """

    def __init__(
        self,
        clock: IReactorTime,
        policy: KernelPolicy,
        specs: KernelSpecManager,
        runtimeDir: str,
        processFactory: ProcessFactory,
        store: KernelStore | None = None,
    ) -> None:
        self.clock = clock
        self.policy = policy
        self.specs = specs
        self.runtimeDir = runtimeDir
        self.processFactory = processFactory
        self.store = store
        self.launching: dict[str, Kernel] = {}
        self.stopping = False
        self._zmq: ZmqFactory | None = None

    def start(self) -> None:
        os.makedirs(self.runtimeDir, exist_ok=True)
        self._zmq = ZmqFactory()
        # Each websocket holds three DEALER sockets: ZeroMQ's default of 1023 sockets is too few.
        self._zmq.context.max_sockets = 65536
        self.stopping = False

    def stopLaunching(self) -> None:
        """Make the starts under way give up, telling the clients of kernels still launching."""
        self.stopping = True
        for kernel in list(self.launching.values()):
            if kernel.channels is not None:
                kernel.channels.close(1001, "gateway shutting down")

    def stop(self) -> None:
        """Close ZeroMQ, once every kernel's channels are closed."""
        if self._zmq is not None:
            self._zmq.shutdown()
            self._zmq = None

    def connectionFile(self, kernelId: str) -> str:
        return os.path.join(self.runtimeDir, f"kernel-{kernelId}.json")

    async def create(self, name: str, env: dict[str, str], seed: Seed | None) -> Kernel:
        """A started (and seeded) kernel, not yet registered: nobody can find it by id."""
        kernel = await self.spawn(name, env)
        try:
            await self.settle(kernel, seed)
        finally:
            del self.launching[kernel.id]
        return kernel

    async def launched(self, name: str, env: dict[str, str]) -> Kernel:
        """
        A kernel whose process is launched, to hand out before it answers: its clients'
        messages are held (until L{Kernel.release}) and it is marked C{starting}.
        """
        kernel = await self.spawn(name, env)
        del self.launching[kernel.id]
        if self.stopping:
            await self.abandon(kernel)
            raise KernelStartFailed("The gateway is shutting down")
        kernel.hold()
        kernel.busyWith = "starting"
        return kernel

    async def spawn(self, name: str, env: dict[str, str]) -> Kernel:
        """
        Launch a kernel's process and open its channels, without waiting for it to answer. The
        kernel is left in C{launching}; a launch that fails leaves nothing behind.
        """
        kernelId = str(uuid.uuid4())
        process = self.processFactory(name, self.specs, self.connectionFile(kernelId))
        kernel = Kernel(kernelId, name, process)
        launch: dict[str, Any] = {"kernel_id": kernelId, "env": env}
        if self.store is not None:
            # A kernel that watches its parent (JPY_PARENT_PID) would die with a crashed
            # gateway; with a kernel store the next gateway adopts it instead.
            launch["independent"] = True
        workdir = env.get("KERNEL_WORKING_DIR")
        if workdir and os.path.isdir(workdir):
            launch["cwd"] = workdir
        kernel.launchEnv = env
        kernel.cwd = launch.get("cwd")
        log.info("Starting kernel {kernelId} ({name})", kernelId=kernelId, name=name)
        self.launching[kernelId] = kernel
        try:
            await process.start(**launch)
        except Exception as e:
            del self.launching[kernelId]
            log.failure("Kernel {kernelId} failed to start", kernelId=kernel.id)
            await process.cleanup()
            raise KernelStartFailed(f"Kernel {kernel.name} failed to start: {e}") from e
        try:
            await self.recordNew(kernel)
        except StoreUnavailable:
            # Nobody could find, adopt or cull a kernel the store does not know: it must not run.
            del self.launching[kernelId]
            await process.shutdown(now=True)
            raise
        self.openChannels(kernel)
        return kernel

    async def settle(self, kernel: Kernel, seed: Seed | None) -> None:
        """Wait for a launched kernel to answer and seed it; or leave nothing behind."""
        try:
            if self.stopping:
                raise KernelStartFailed("The gateway is shutting down")
            # A kernel that dies while starting (a port taken meanwhile) fails at once.
            await self.whileAlive(kernel, self.answers(kernel), "while starting")
            if seed is not None:
                await self.applySeed(kernel, seed)
            if self.stopping:
                raise KernelStartFailed("The gateway is shutting down")
        except Exception as e:
            await self.abandon(kernel)
            if isinstance(e, KernelStartFailed):
                raise
            raise KernelStartFailed(f"Kernel {kernel.name} did not answer: {e}") from e
        if kernel.executionState == "starting":
            # Its first statuses were published before iopub was subscribed.
            kernel.executionState = "idle"

    async def abandon(self, kernel: Kernel) -> None:
        """Close the channels of a kernel nobody was handed, end its process, drop its record."""
        if kernel.channels is not None:
            kernel.channels.close(1011, "kernel failed to start")
        await kernel.process.shutdown(now=True)
        self.forget(kernel.id)

    def shutDownUnclaimed(self, kernel: Kernel) -> Deferred[None]:
        """Shut down a kernel nobody was handed (a warm one), and forget its record."""
        if kernel.channels is not None:
            kernel.channels.close(1001, "gateway shutting down")
        shutdown = kernel.process.shutdown().addErrback(
            lambda f: log.failure("Shutting down kernel {kernelId} failed", f, kernelId=kernel.id)
        )

        def forgotten(result: object) -> object:
            self.forget(kernel.id)
            return result

        return shutdown.addBoth(forgotten)

    async def applySeed(self, kernel: Kernel, seed: Seed) -> None:
        """
        Run the seed notebook's code cells on a new kernel, one after the other.

        @raise SeedFailed: naming the error of the first cell that fails.
        """
        log.info("Seeding kernel {kernelId} with {path}", kernelId=kernel.id, path=seed.path)
        for number, code in enumerate(seed.cells, 1):
            reply = await self.whileAlive(
                kernel,
                self.execute(kernel, code, seed.storeHistory),
                "while running the seed notebook",
            )
            status = reply.get("status")
            if status == "ok":
                continue
            if status == "error":
                problem = f"{reply.get('ename')}: {reply.get('evalue')}"
            else:
                problem = f"status {status!r}"
            log.error(
                "Seed cell {number} of {path} failed on kernel {kernelId}: {problem}",
                number=number,
                path=seed.path,
                kernelId=kernel.id,
                problem=problem,
            )
            raise SeedFailed(f"Error seeding kernel {kernel.name}: cell {number} raised {problem}")

    def execute(
        self, kernel: Kernel, code: str, storeHistory: bool = True
    ) -> Deferred[dict[str, Any]]:
        """Run C{code} on a kernel and fire with its C{execute_reply} content."""
        return kernel.execute(code, storeHistory)

    def whileAlive(self, kernel: Kernel, d: Deferred[Any], doing: str) -> Deferred[Any]:
        """
        C{d}'s result, unless the kernel's process dies first: then C{d} is cancelled and
        L{KernelStartFailed} raised.
        """
        died: list[bool] = []

        def check() -> Deferred[None]:
            def alive(isAlive: bool) -> None:
                if not isAlive and not d.called:
                    died.append(True)
                    d.cancel()

            return kernel.process.isAlive().addCallbacks(alive, lambda _: None)

        watch = LoopingCall(check)
        watch.clock = self.clock
        watch.start(self.policy.watchInterval, now=False)

        def stop(result: object) -> object:
            if watch.running:
                watch.stop()
            if died and isinstance(result, Failure) and result.check(CancelledError):
                raise KernelStartFailed(f"Kernel {kernel.name} died {doing}")
            return result

        return d.addBoth(stop)

    def openChannels(self, kernel: Kernel) -> None:
        """Open a kernel's channels: its iopub subscription starts at once."""
        assert self._zmq is not None, "the registry is not running"
        process = kernel.process
        kernel.channels = KernelChannels(
            ZmqSockets(self._zmq, self.clock),
            process.connectionInfo,
            process.session,
            self.clock,
            kernel.observe,
            self.policy.bufferLimits,
        )

    def answers(self, kernel: Kernel) -> Deferred[None]:
        """Fire once a kernel whose channels are open answers on them."""
        assert kernel.channels is not None
        return kernel.channels.waitUntilReady(self.policy.startTimeout)

    def connect(self, kernel: Kernel) -> Deferred[None]:
        """Open a kernel's channels and fire once it answers on them."""
        self.openChannels(kernel)
        return self.answers(kernel)

    def reach(self, kernel: Kernel) -> Deferred[bool]:
        """
        Open the channels of a kernel found running and fire once it answers, on control if
        its shell is busy, with whether its shell is free.
        """
        self.openChannels(kernel)
        assert kernel.channels is not None
        return kernel.channels.waitUntilReachable(self.policy.startTimeout)

    async def recordNew(self, kernel: Kernel) -> None:
        """
        Record a new kernel as this gateway's, when there is a kernel store.

        @raise StoreUnavailable: if a shared store cannot be reached.
        """
        if self.store is None or kernel.process.pid is None:
            return
        record = recordOf(kernel, self.connectionFile(kernel.id), handedOut=False)
        try:
            await answer(self.store.own(record))
        except OSError as e:
            log.error("Cannot record kernel {kernelId}: {error}", kernelId=kernel.id, error=e)

    def writeRecord(self, kernel: Kernel, handedOut: bool = True) -> None:
        """Write down how to adopt C{kernel}, when there is a kernel store."""
        if self.store is None or kernel.process.pid is None:
            return
        try:
            self.store.write(recordOf(kernel, self.connectionFile(kernel.id), handedOut))
        except OSError as e:
            log.error("Cannot record kernel {kernelId}: {error}", kernelId=kernel.id, error=e)

    def forget(self, kernelId: str) -> None:
        """Drop a kernel's record, when there is a kernel store."""
        if self.store is not None:
            self.store.remove(kernelId)
