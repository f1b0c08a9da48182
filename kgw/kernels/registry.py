"""The kernels a gateway runs: start, look up, interrupt, restart and shut down.

Kernels are started with jupyter_client's L{AsyncKernelManager}, so kernelspec provisioners are
honoured, and every kernel gets its own signing key. The registry watches each kernel process
and restarts it, under the same id, when it dies without being asked to.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from jupyter_client.kernelspec import NATIVE_KERNEL_NAME, KernelSpecManager
from jupyter_client.kernelspec import NoSuchKernel as _NoSuchSpec
from jupyter_core.paths import jupyter_runtime_dir
from twisted.application.service import Service
from twisted.internet.defer import (
    CancelledError,
    Deferred,
    DeferredList,
    DeferredLock,
    ensureDeferred,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from txzmq import ZmqFactory

from kgw.errors import (
    GatewayError,
    KernelLimitReached,
    KernelStartFailed,
    NoSuchKernel,
    NoSuchKernelSpec,
)
from kgw.kernels.adoption import recoverRecords
from kgw.kernels.buffering import BufferLimits
from kgw.kernels.channels import KernelChannels
from kgw.kernels.pool import WarmPool, environmentCode
from kgw.kernels.process import AdoptedProcess, KernelProcess
from kgw.kernels.seed import Seed, SeedFailed
from kgw.kernels.state import KernelRecord, StateDirectory, endProcess, isKernelProcess
from kgw.metrics import GatewayMetrics

log = Logger()


def isoformat(moment: datetime) -> str:
    """ISO 8601 in UTC with microseconds and a C{Z}, the form Jupyter clients parse."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Kernel:
    """One running kernel: its process, its channels and the state clients see."""

    def __init__(self, kernelId: str, name: str, process: KernelProcess) -> None:
        self.id = kernelId
        self.name = name
        self.process = process
        self.channels: KernelChannels | None = None
        self.lastActivity = datetime.now(timezone.utc)
        self.executionState = "starting"
        # Set while the gateway itself stops or restarts the process, so the watcher leaves it.
        self.busyWith: str | None = None
        # Restarts and the shutdown of one kernel run one after the other, never interleaved.
        self.lifecycle = DeferredLock()
        self.watcher: LoopingCall | None = None
        # How it was started, for the state directory.
        self.launchEnv: dict[str, str] = {}
        self.cwd: str | None = None

    @property
    def connections(self) -> int:
        return len(self.channels.clients) if self.channels is not None else 0

    def model(self) -> dict[str, Any]:
        """The kernel as the REST API shows it."""
        return {
            "id": self.id,
            "name": self.name,
            "last_activity": isoformat(self.lastActivity),
            "execution_state": self.executionState,
            "connections": self.connections,
        }

    def observe(self, channel: str, header: dict[str, Any], parts: Sequence[bytes]) -> None:
        """Keep activity and execution state up to date from a message the kernel sent."""
        self.lastActivity = datetime.now(timezone.utc)
        if channel == "iopub" and header.get("msg_type") == "status":
            try:
                state = json.loads(parts[3]).get("execution_state")
            except (ValueError, AttributeError):
                return
            if isinstance(state, str):
                self.executionState = state


class KernelRegistry(Service):
    """
    The gateway's kernels, by id.

    @param clock: schedules the process watcher and the start-up handshake.
    @param specs: where kernelspecs are found.
    @param forceKernelName: the kernelspec of every kernel, whatever a request names.
    @param prespawnCount: how many kernels to start with the service.
    @param seed: the notebook whose code runs on each new kernel it applies to.
    @param environment: builds a kernel's environment from a client's C{env} request.
    @param processFactory: makes the L{KernelProcess} of a new kernel from its kernelspec name,
        the kernelspec manager and its connection file's path.
    @param bufferLimits: what is kept for sessions whose clients went away.
    @param warmKernels: how many started, seeded kernels to keep ready for each kernelspec of
        C{warmKernelNames} (the default kernelspec when empty).
    @param metrics: where each start and how long it took is recorded.
    """

    name = "kernels"

    def __init__(
        self,
        clock: IReactorTime,
        specs: KernelSpecManager | None = None,
        defaultKernelName: str = "",
        forceKernelName: str = "",
        maxKernels: int = 0,
        prespawnCount: int = 0,
        seed: Seed | None = None,
        restartLimit: int = 5,
        watchInterval: float = 1.0,
        startTimeout: float = 60.0,
        environment: Callable[[Any], dict[str, str]] | None = None,
        runtimeDir: str | None = None,
        processFactory: Callable[[str, KernelSpecManager, str], KernelProcess] = KernelProcess,
        warmKernels: int = 0,
        warmKernelNames: Sequence[str] = (),
        bufferLimits: BufferLimits | None = None,
        culling: Culling | None = None,
        stateDir: str | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.clock = clock
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        self.specs = specs if specs is not None else KernelSpecManager()
        self.defaultKernelName = defaultKernelName or NATIVE_KERNEL_NAME
        self.forceKernelName = forceKernelName
        self.maxKernels = maxKernels
        self.prespawnCount = prespawnCount
        self.seed = seed
        self.restartLimit = restartLimit
        self.watchInterval = watchInterval
        self.startTimeout = startTimeout
        self._environment = environment or (lambda requested: dict(os.environ))
        self.runtimeDir = runtimeDir or jupyter_runtime_dir()
        self._kernels: dict[str, Kernel] = {}
        self._starting = 0
        # Kernels started but not handed out yet, and a Deferred per start that fires at its end.
        self._launching: dict[str, Kernel] = {}
        self._pending: set[Deferred[None]] = set()
        self._prespawning: Deferred[None] = succeed(None)
        self._stopping = False
        self._zmq: ZmqFactory | None = None
        self._processFactory = processFactory
        self.bufferLimits = bufferLimits if bufferLimits is not None else BufferLimits()
        self.culling = culling if culling is not None else Culling()
        self.state = StateDirectory(stateDir) if stateDir else None
        self._adopting: Deferred[None] = succeed(None)
        self._culler: LoopingCall | None = None
        self.pool: WarmPool | None = None
        if warmKernels:
            names = warmKernelNames or [self.forceKernelName or self.defaultKernelName]
            self.pool = WarmPool(warmKernels, names, self._createWarm, self._discard, clock)

    # Service

    def startService(self) -> None:
        super().startService()
        os.makedirs(self.runtimeDir, exist_ok=True)
        self._zmq = ZmqFactory()
        # Each websocket holds three DEALER sockets: ZeroMQ's default of 1023 sockets is too few.
        self._zmq.context.max_sockets = 65536
        self._stopping = False
        if self.prespawnCount:
            self._prespawning = self._prespawn(self.prespawnCount)
        if self.state is not None:
            self._adopting = ensureDeferred(self._adopt()).addErrback(
                lambda f: log.failure("Adopting the recorded kernels failed", f)
            )
        if self.pool is not None:
            self.pool.start()
        if self.culling.idleTimeout > 0:
            self._culler = LoopingCall(self.cull)
            self._culler.clock = self.clock
            self._culler.start(self.culling.interval, now=False).addErrback(
                lambda f: log.failure("Culling idle kernels failed", f)
            )

    def stopService(self) -> Deferred[None]:
        """
        Shut every kernel down, telling its clients first, and wait for the starts in flight to
        give up; then close ZeroMQ.
        """
        super().stopService()
        self._stopping = True
        if self._culler is not None and self._culler.running:
            self._culler.stop()
        for kernel in list(self._launching.values()):
            if kernel.channels is not None:
                kernel.channels.close(1001, "gateway shutting down")
        kernels = list(self._kernels)
        d = DeferredList(
            [self.shutdownKernel(k, code=1001, reason="gateway shutting down") for k in kernels]
            + list(self._pending)
            + ([self.pool.stop()] if self.pool is not None else [])
        )

        def closeZmq(_: object) -> None:
            if self._zmq is not None:
                self._zmq.shutdown()
                self._zmq = None

        return d.addCallback(closeZmq)

    def _prespawn(self, count: int) -> Deferred[None]:
        """
        Start C{count} kernels at once, of the seed's kernelspec if it names one, as KG does; a
        kernel that fails to start is logged.
        """
        name = self.seed.kernelName if self.seed is not None else None

        def failed(failure: Failure) -> None:
            if failure.check(GatewayError):
                log.error("Prespawning a kernel failed: {error}", error=failure.value)
            else:
                log.failure("Prespawning a kernel failed", failure)

        starts = [maybeDeferred(self.startKernel, name).addErrback(failed) for _ in range(count)]
        return gatherResults(starts).addCallback(lambda _: None)

    def whenPrespawned(self) -> Deferred[None]:
        """Fire once the kernels started with the service are handed out or have failed."""
        return _whenDone(self._prespawning)

    # Queries

    def __contains__(self, kernelId: object) -> bool:
        return kernelId in self._kernels

    def __len__(self) -> int:
        return len(self._kernels)

    def kernels(self) -> list[Kernel]:
        return list(self._kernels.values())

    def get(self, kernelId: str) -> Kernel:
        """@raise NoSuchKernel: if no kernel has this id."""
        try:
            return self._kernels[kernelId]
        except KeyError:
            raise NoSuchKernel(kernelId) from None

    def specModel(self, name: str) -> tuple[dict[str, Any], str]:
        """
        A kernelspec's JSON and its resource directory.

        @raise NoSuchKernelSpec: if there is no kernelspec of this name.
        """
        try:
            spec = self.specs.get_kernel_spec(name)
        except (_NoSuchSpec, KeyError, ValueError):
            raise NoSuchKernelSpec(name) from None
        return spec.to_dict(), spec.resource_dir

    def specNames(self) -> list[str]:
        return sorted(self.specs.find_kernel_specs())

    # Lifecycle

    def startKernel(self, name: str | None = None, env: Any = None) -> Deferred[Kernel]:
        """
        Start a kernel and fire with it once it answers on shell and iopub.

        Cancelling the returned Deferred does not stop the start: a kernel whose client went
        away is still registered, as jupyter_server does, rather than leaked half-started.

        With C{force_kernel_name} set, C{name} is ignored. A kernel the seed notebook applies
        to is handed out only once every cell of the notebook has run on it.

        @raise NoSuchKernelSpec: synchronously, for an unknown kernelspec name.
        @raise KernelLimitReached: synchronously, when C{max_kernels} kernels run or start.
        @raise InvalidRequest: synchronously, for a malformed C{env}.
        """
        name = self.forceKernelName or name or self.defaultKernelName
        spec, _ = self.specModel(name)
        if self.maxKernels and len(self._kernels) + self._starting >= self.maxKernels:
            raise KernelLimitReached(
                f"A max kernels limit of {self.maxKernels} has been set; no more kernels may start"
            )
        environment = self._environment(env)
        seed = self.seed
        if seed is not None and not seed.appliesTo(name, spec.get("language")):
            seed = None
        self._starting += 1
        finished: Deferred[None] = Deferred()
        self._pending.add(finished)
        began = self.clock.seconds()

        def started(result: object) -> object:
            self._starting -= 1
            self._pending.discard(finished)
            finished.callback(None)
            outcome = "failed" if isinstance(result, Failure) else "started"
            self.metrics.kernelStarted(name, outcome, self.clock.seconds() - began)
            return result

        warm = None
        if self.pool is not None and (env is None or spec.get("language") == "python"):
            warm = self.pool.take(name)
        if warm is not None:
            start = ensureDeferred(self._handOut(warm, env is not None, environment, seed))
        else:
            start = ensureDeferred(self._start(name, environment, seed))
        return _uncancellable(start.addBoth(started))

    def _seedFor(self, name: str) -> Seed | None:
        seed = self.seed
        if seed is None:
            return None
        spec, _ = self.specModel(name)
        return seed if seed.appliesTo(name, spec.get("language")) else None

    def _createWarm(self, name: str) -> Awaitable[Kernel]:
        """A kernel for the warm pool: started as for a request without C{env}, and seeded."""
        return self._create(name, self._environment(None), self._seedFor(name))

    async def _handOut(
        self, kernel: Kernel, applyEnv: bool, environment: dict[str, str], seed: Seed | None
    ) -> Kernel:
        """
        Register a warm kernel for a start request; first give it the request's environment,
        as a fresh start would have (Python kernels only). A kernel that died in the pool, or
        cannot take the environment, is replaced by a fresh start.
        """
        usable = await kernel.process.isAlive() and kernel.channels is not None
        if usable and applyEnv:
            assert kernel.channels is not None
            reply = await kernel.channels.caller.execute(
                environmentCode(environment), silent=True, storeHistory=False
            )
            usable = reply.get("status") == "ok"
        if not usable:
            log.warn("Warm kernel {kernelId} is not usable; starting afresh", kernelId=kernel.id)
            self._discard(kernel)
            return await self._start(kernel.name, environment, seed)
        self._register(kernel)
        return kernel

    async def _start(self, name: str, env: dict[str, str], seed: Seed | None) -> Kernel:
        """
        Start a kernel for a request. Without a seed, the request is answered as soon as the
        process is launched, as KG does: clients may connect at once, their messages are held
        until the kernel answers, and a kernel that never does is announced C{dead} and removed.
        A seeded kernel is handed out once seeded, so that a failing seed cell is the request's
        error.
        """
        if seed is not None:
            kernel = await self._create(name, env, seed)
            self._register(kernel)
            return kernel
        kernel = await self._spawn(name, env)
        del self._launching[kernel.id]
        if self._stopping:
            await self._abandon(kernel)
            raise KernelStartFailed("The gateway is shutting down")
        _hold(kernel)
        kernel.busyWith = "starting"
        self._register(kernel)
        kernel.lifecycle.run(lambda: ensureDeferred(self._settleRegistered(kernel)))
        return kernel

    async def _settleRegistered(self, kernel: Kernel) -> None:
        """
        Wait for a kernel handed out at launch to answer, then send what its clients said
        meanwhile. If it never answers, tell its clients it is dead and shut it down.
        """
        try:
            await self._whileAlive(kernel, self._answers(kernel), "while starting")
        except Exception as e:
            kernel.busyWith = None
            kernelId = kernel.id
            if kernelId not in self._kernels:
                return  # shut down while it started: nothing went wrong
            log.error("Kernel {kernelId} failed to start: {error}", kernelId=kernel.id, error=e)
            _announce(kernel, "dead")
            # Queued behind this start on the kernel's lifecycle lock.
            shutdown = self.shutdownKernel(kernel.id, code=1011, reason="kernel failed to start")
            shutdown.addErrback(
                lambda f: log.failure("Shutting down kernel {id} failed", f, id=kernelId)
            )
            return
        kernel.busyWith = None
        # Its first statuses were published before iopub was subscribed.
        _announce(kernel, "idle")
        _release(None, kernel)
        log.info("Kernel {kernelId} is ready", kernelId=kernel.id)

    async def _create(self, name: str, env: dict[str, str], seed: Seed | None) -> Kernel:
        """A started (and seeded) kernel, not yet registered: nobody can find it by id."""
        kernel = await self._spawn(name, env)
        try:
            await self._settle(kernel, seed)
        finally:
            del self._launching[kernel.id]
        return kernel

    async def _spawn(self, name: str, env: dict[str, str]) -> Kernel:
        """
        Launch a kernel's process and open its channels, without waiting for it to answer. The
        kernel is left in C{_launching}; a launch that fails leaves nothing behind.
        """
        kernelId = str(uuid.uuid4())
        process = self._processFactory(
            name, self.specs, os.path.join(self.runtimeDir, f"kernel-{kernelId}.json")
        )
        kernel = Kernel(kernelId, name, process)
        launch: dict[str, Any] = {"kernel_id": kernelId, "env": env}
        if self.state is not None:
            # A kernel that watches its parent (JPY_PARENT_PID) would die with a crashed
            # gateway; with a state directory the next gateway adopts it instead.
            launch["independent"] = True
        workdir = env.get("KERNEL_WORKING_DIR")
        if workdir and os.path.isdir(workdir):
            launch["cwd"] = workdir
        kernel.launchEnv = env
        kernel.cwd = launch.get("cwd")
        log.info("Starting kernel {kernelId} ({name})", kernelId=kernelId, name=name)
        self._launching[kernelId] = kernel
        try:
            await process.start(**launch)
        except Exception as e:
            del self._launching[kernelId]
            log.failure("Kernel {kernelId} failed to start", kernelId=kernel.id)
            await process.cleanup()
            raise KernelStartFailed(f"Kernel {kernel.name} failed to start: {e}") from e
        self._writeRecord(kernel, handedOut=False)
        self._openChannels(kernel)
        return kernel

    def _register(self, kernel: Kernel) -> None:
        """Make a started kernel known by its id, and watch its process."""
        self._kernels[kernel.id] = kernel
        self._writeRecord(kernel)
        kernel.watcher = LoopingCall(self._watch, kernel)
        kernel.watcher.clock = self.clock
        kernel.watcher.start(self.watchInterval, now=False).addErrback(
            lambda f: log.failure("Watching kernel {kernelId} failed", f, kernelId=kernel.id)
        )
        log.info("Kernel {kernelId} started", kernelId=kernel.id)

    async def _settle(self, kernel: Kernel, seed: Seed | None) -> None:
        """Wait for a launched kernel to answer and seed it; or leave nothing behind."""
        try:
            if self._stopping:
                raise KernelStartFailed("The gateway is shutting down")
            # A kernel that dies while starting (a port taken meanwhile) fails at once.
            await self._whileAlive(kernel, self._answers(kernel), "while starting")
            if seed is not None:
                await self._applySeed(kernel, seed)
            if self._stopping:
                raise KernelStartFailed("The gateway is shutting down")
        except Exception as e:
            await self._abandon(kernel)
            if isinstance(e, KernelStartFailed):
                raise
            raise KernelStartFailed(f"Kernel {kernel.name} did not answer: {e}") from e
        if kernel.executionState == "starting":
            # Its first statuses were published before iopub was subscribed.
            kernel.executionState = "idle"

    async def _abandon(self, kernel: Kernel) -> None:
        """Close the channels of a kernel nobody was handed, end its process, drop its record."""
        if kernel.channels is not None:
            kernel.channels.close(1011, "kernel failed to start")
        await kernel.process.shutdown(now=True)
        self._forget(None, kernel.id)

    async def _applySeed(self, kernel: Kernel, seed: Seed) -> None:
        """
        Run the seed notebook's code cells on a new kernel, one after the other.

        @raise SeedFailed: naming the error of the first cell that fails.
        """
        log.info("Seeding kernel {kernelId} with {path}", kernelId=kernel.id, path=seed.path)
        for number, code in enumerate(seed.cells, 1):
            reply = await self._whileAlive(
                kernel,
                self._execute(kernel, code, seed.storeHistory),
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

    def _execute(
        self, kernel: Kernel, code: str, storeHistory: bool = True
    ) -> Deferred[dict[str, Any]]:
        """Run C{code} on a kernel and fire with its C{execute_reply} content."""
        assert kernel.channels is not None
        return kernel.channels.execute(code, storeHistory)

    def _whileAlive(self, kernel: Kernel, d: Deferred[Any], doing: str) -> Deferred[Any]:
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
        watch.start(self.watchInterval, now=False)

        def stop(result: object) -> object:
            if watch.running:
                watch.stop()
            if died and isinstance(result, Failure) and result.check(CancelledError):
                raise KernelStartFailed(f"Kernel {kernel.name} died {doing}")
            return result

        return d.addBoth(stop)

    def _openChannels(self, kernel: Kernel) -> None:
        """Open a kernel's channels: its iopub subscription starts at once."""
        assert self._zmq is not None, "the registry is not running"
        process = kernel.process
        kernel.channels = KernelChannels(
            self._zmq,
            process.connectionInfo,
            process.session,
            self.clock,
            kernel.observe,
            self.bufferLimits,
        )

    def _answers(self, kernel: Kernel) -> Deferred[None]:
        """Fire once a kernel whose channels are open answers on them."""
        assert kernel.channels is not None
        return kernel.channels.waitUntilReady(self.startTimeout)

    def _connect(self, kernel: Kernel) -> Deferred[None]:
        """Open a kernel's channels and fire once it answers on them."""
        self._openChannels(kernel)
        return self._answers(kernel)

    def interrupt(self, kernelId: str) -> Deferred[None]:
        """
        Interrupt a kernel, by signal or message as its kernelspec says. A kernel still starting
        runs nothing yet, and a SIGINT while it imports would kill it: it is left alone.
        """
        kernel = self.get(kernelId)
        if kernel.busyWith == "starting":
            log.info("Kernel {kernelId} is starting: nothing to interrupt", kernelId=kernelId)
            return succeed(None)
        log.info("Interrupting kernel {kernelId}", kernelId=kernelId)
        return kernel.process.interrupt()

    def restart(self, kernelId: str) -> Deferred[Kernel]:
        """Restart a kernel in place, keeping its id, and fire once it answers again."""
        kernel = self.get(kernelId)
        log.info("Restarting kernel {kernelId}", kernelId=kernelId)
        _hold(kernel)
        restarting = self._restartLocked(kernel, now=False).addBoth(_release, kernel)
        return _uncancellable(restarting.addCallback(_restarted))

    def _restartLocked(self, kernel: Kernel, now: bool) -> Deferred[Kernel]:
        return kernel.lifecycle.run(lambda: ensureDeferred(self._restart(kernel, now)))

    async def _restart(self, kernel: Kernel, now: bool) -> Kernel:
        if kernel.id not in self._kernels:
            # Shut down (a start that failed, say) while this restart waited for its turn.
            raise NoSuchKernel(kernel.id)
        kernel.busyWith = "restarting"
        try:
            await kernel.process.restart(now=now)
            self._writeRecord(kernel)
            # The new process's own statuses come before iopub is subscribed again: the
            # gateway tells clients, and the REST model, what they would have said.
            _announce(kernel, "starting")
            if kernel.channels is not None:
                await kernel.channels.waitUntilReady(self.startTimeout)
            _announce(kernel, "idle")
        finally:
            kernel.busyWith = None
        return kernel

    def shutdownKernel(
        self, kernelId: str, code: int = 1000, reason: str = "kernel shut down"
    ) -> Deferred[None]:
        """
        Tell a kernel's clients it is going, closing their websockets with C{code}; then shut its
        process down and forget it.
        """
        kernel = self.get(kernelId)
        del self._kernels[kernelId]
        kernel.busyWith = "shutting down"
        if kernel.watcher is not None and kernel.watcher.running:
            kernel.watcher.stop()
        if kernel.channels is not None:
            kernel.channels.close(code, reason)
        log.info("Shutting down kernel {kernelId}", kernelId=kernelId)
        shutdown = kernel.lifecycle.run(kernel.process.shutdown)
        shutdown.addBoth(self._forget, kernel.id)
        # stopService waits for shutdowns under way, so no process outlives the gateway.
        finished: Deferred[None] = Deferred()
        self._pending.add(finished)

        def done(result: object) -> object:
            self._pending.discard(finished)
            finished.callback(None)
            return result

        return shutdown.addBoth(done)

    # State directory

    def _writeRecord(self, kernel: Kernel, handedOut: bool = True) -> None:
        """Write down how to adopt C{kernel}, when there is a state directory."""
        if self.state is None or kernel.process.pid is None:
            return
        info = dict(kernel.process.connectionInfo)
        if isinstance(info.get("key"), bytes):
            info["key"] = info["key"].decode("ascii")
        connectionFile = os.path.join(self.runtimeDir, f"kernel-{kernel.id}.json")
        record = KernelRecord(
            kernel.id,
            kernel.name,
            kernel.process.pid,
            connectionFile,
            info,
            kernel.launchEnv,
            kernel.cwd,
            handedOut,
        )
        try:
            self.state.write(record)
        except OSError as e:
            log.error("Cannot record kernel {kernelId}: {error}", kernelId=kernel.id, error=e)

    def _discard(self, kernel: Kernel) -> Deferred[None]:
        """Shut down a kernel nobody was handed, and forget its record."""
        return _discard(kernel).addBoth(self._forget, kernel.id)

    def _forget(self, result: object, kernelId: str) -> object:
        if self.state is not None:
            self.state.remove(kernelId)
        return result

    async def _adopt(self) -> None:
        """
        Take over the kernels an earlier gateway recorded and that still run, under their ids;
        clean up after the others.
        """
        assert self.state is not None
        for record in await recoverRecords(self.state, self.runtimeDir, self.specs, self.clock):
            if not record.handedOut or not isKernelProcess(record):
                if isKernelProcess(record):
                    endProcess(record.pid, signal.SIGKILL)
                log.info("Cleaning up after kernel {kernelId}", kernelId=record.id)
                for path in (record.connectionFile,):
                    if os.path.exists(path):
                        os.unlink(path)
                self.state.remove(record.id)
                continue
            kernel = Kernel(record.id, record.name, AdoptedProcess(record, self.specs, self.clock))
            kernel.launchEnv, kernel.cwd = record.env, record.cwd
            try:
                await self._connect(kernel)
            except Exception:
                log.failure("Kernel {kernelId} could not be adopted", kernelId=record.id)
                if kernel.channels is not None:
                    kernel.channels.close(1011, "kernel could not be adopted")
                await kernel.process.shutdown(now=True)
                self.state.remove(record.id)
                continue
            kernel.executionState = "idle"
            self._register(kernel)
            log.info("Adopted kernel {kernelId} ({name})", kernelId=record.id, name=record.name)

    def whenAdopted(self) -> Deferred[None]:
        """Fire once the kernels of the state directory are adopted or cleaned up."""
        return _whenDone(self._adopting)

    # Culling

    def cull(self) -> None:
        """Shut down the kernels idle for longer than the culling settings allow."""
        now = datetime.now(timezone.utc)
        for kernel in self.kernels():
            idle = (now - kernel.lastActivity).total_seconds()
            if not self.culling.applies(idle, kernel.connections, kernel.executionState):
                continue
            log.warn(
                "Culling kernel {kernelId} ({name}): idle for {idle:.0f} s, "
                "{connections} connections, {state}",
                kernelId=kernel.id,
                name=kernel.name,
                idle=idle,
                connections=kernel.connections,
                state=kernel.executionState,
            )
            _announce(kernel, "dead")
            self.shutdownKernel(
                kernel.id, reason=f"kernel culled after {idle:.0f} s of inactivity"
            ).addErrback(lambda f: log.failure("Culling a kernel failed", f))

    # Watching

    def _watch(self, kernel: Kernel) -> Deferred[None] | None:
        if kernel.busyWith is not None:
            return None

        def checked(alive: bool) -> Deferred[None] | None:
            if alive or kernel.busyWith is not None or kernel.id not in self._kernels:
                return None
            return ensureDeferred(self._autoRestart(kernel))

        return kernel.process.isAlive().addCallback(checked)

    async def _autoRestart(self, kernel: Kernel) -> None:
        """Bring a kernel that died back under the same id, or declare it dead."""
        log.warn("Kernel {kernelId} died; restarting it", kernelId=kernel.id)
        _hold(kernel)
        try:
            await self._restartOrGiveUp(kernel)
        finally:
            _release(None, kernel)

    async def _restartOrGiveUp(self, kernel: Kernel) -> None:
        _announce(kernel, "restarting")
        for attempt in range(1, self.restartLimit + 1):
            if kernel.id not in self._kernels:
                return
            try:
                await self._restartLocked(kernel, now=True)
            except Exception:
                if kernel.id not in self._kernels:
                    return  # shut down while restarting: nothing went wrong
                log.failure(
                    "Restart {attempt} of kernel {kernelId} failed",
                    attempt=attempt,
                    kernelId=kernel.id,
                )
                continue
            log.info("Kernel {kernelId} restarted", kernelId=kernel.id)
            return
        log.error("Kernel {kernelId} is dead; giving up", kernelId=kernel.id)
        _announce(kernel, "dead")
        if kernel.id in self._kernels:
            await self.shutdownKernel(kernel.id, code=1011, reason="kernel died")


@dataclass(frozen=True)
class Culling:
    """
    jupyter_server's culling settings: kernels idle for C{idleTimeout} seconds (0: never) are
    shut down, checked every C{interval} seconds; connected and busy kernels only if allowed.
    """

    idleTimeout: float = 0.0
    interval: float = 300.0
    connected: bool = False
    busy: bool = False

    def applies(self, idle: float, connections: int, state: str) -> bool:
        """Whether a kernel idle for C{idle} seconds, so connected and in C{state}, is culled."""
        return (
            self.idleTimeout > 0
            and idle > self.idleTimeout
            and (self.connected or connections == 0)
            and (self.busy or state != "busy")
        )


def _discard(kernel: Kernel) -> Deferred[None]:
    """Shut down a kernel nobody was handed."""
    if kernel.channels is not None:
        kernel.channels.close(1001, "gateway shutting down")
    return kernel.process.shutdown().addErrback(
        lambda f: log.failure("Shutting down kernel {kernelId} failed", f, kernelId=kernel.id)
    )


def _whenDone(work: Deferred[Any]) -> Deferred[None]:
    """A new Deferred that fires with C{None} when C{work} has, leaving C{work}'s result alone."""
    waiter: Deferred[None] = Deferred()

    def fire(result: object) -> object:
        waiter.callback(None)
        return result

    work.addBoth(fire)
    return waiter


def _restarted(kernel: Kernel) -> Kernel:
    log.info("Kernel {kernelId} restarted", kernelId=kernel.id)
    return kernel


def _hold(kernel: Kernel) -> None:
    """Keep clients' messages back until the restarting kernel's iopub is subscribed again."""
    if kernel.channels is not None:
        kernel.channels.hold()


def _release(result: object, kernel: Kernel) -> object:
    if kernel.channels is not None:
        kernel.channels.release()
    return result


def _announce(kernel: Kernel, state: str) -> None:
    """Set a kernel's state and tell its clients with an iopub status message."""
    kernel.executionState = state
    if kernel.channels is not None:
        kernel.channels.broadcast(*kernel.channels.statusMessage(state))


def _uncancellable(d: Deferred[Any]) -> Deferred[Any]:
    """A Deferred of C{d}'s result whose cancellation leaves C{d} running."""
    result: Deferred[Any] = Deferred()

    def forward(outcome: object) -> None:
        if not result.called:
            result.callback(outcome)

    d.addBoth(forward)
    return result


def specResources(name: str, resourceDir: str, baseURL: str) -> dict[str, str]:
    """URLs of a kernelspec's logos, C{kernel.js} and C{kernel.css}, as jupyter_server does."""
    resources: dict[str, str] = {}
    try:
        files = sorted(os.listdir(resourceDir))
    except OSError:
        return resources
    for fileName in files:
        url = f"{baseURL}kernelspecs/{name}/{fileName}"
        if fileName.startswith("logo-"):
            resources[os.path.splitext(fileName)[0]] = url
        elif fileName in ("kernel.js", "kernel.css"):
            resources[fileName] = url
    return resources
