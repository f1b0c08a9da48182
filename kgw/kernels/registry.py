"""The kernels a gateway runs, by id: start, look up, interrupt, restart and shut down.

The registry holds the ids, the limits and the prespawned kernels, and answers the public verbs;
the L{Launcher} starts kernels (every one with its own signing key, through jupyter_client's
provisioners), the L{Restarter} watches and restarts them, the L{Culler} shuts idle ones down,
and the kernel store (L{kgw.kernels.store}) lets a later gateway adopt them.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from jupyter_client.kernelspec import NATIVE_KERNEL_NAME, KernelSpecManager
from jupyter_core.paths import jupyter_runtime_dir
from twisted.application.service import Service
from twisted.internet.defer import (
    Deferred,
    DeferredList,
    ensureDeferred,
    gatherResults,
    maybeDeferred,
    succeed,
)
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from kgw.errors import GatewayError, KernelLimitReached, NoSuchKernel
from kgw.kernels.adoption import adoptRecorded
from kgw.kernels.cluster import fence
from kgw.kernels.culling import Culler
from kgw.kernels.inflight import InFlight, uncancellable, whenDone
from kgw.kernels.kernel import Kernel
from kgw.kernels.launcher import Launcher, ProcessFactory
from kgw.kernels.policy import KernelPolicy
from kgw.kernels.process import KernelProcess
from kgw.kernels.provisioners import checkSpecs, useThreadedLaunches
from kgw.kernels.restarter import Restarter
from kgw.kernels.seed import Seed
from kgw.kernels.specs import specModel
from kgw.kernels.store import KernelStore, answer
from kgw.kernels.warmpool import WarmPool, environmentCode
from kgw.metrics import GatewayMetrics

log = Logger()


class KernelRegistry(Service):
    """
    The gateway's kernels, by id.

    @param clock: schedules the process watcher, culling and the start-up handshake.
    @param policy: the settings: kernelspecs, limits, prespawn, restarts, warm pool, culling.
    @param specs: where kernelspecs are found.
    @param seed: the notebook whose code runs on each new kernel it applies to.
    @param environment: builds a kernel's environment from a client's C{env} request.
    @param processFactory: makes the process of a new kernel from its kernelspec name, the
        kernelspec manager and its connection file's path.
    @param store: where kernels are recorded for a later gateway to adopt (none: nowhere).
    @param metrics: where each start and how long it took is recorded.
    """

    name = "kernels"
    launcherType = Launcher

    def __init__(
        self,
        clock: IReactorTime,
        policy: KernelPolicy | None = None,
        *,
        specs: KernelSpecManager | None = None,
        seed: Seed | None = None,
        environment: Callable[[Any], dict[str, str]] | None = None,
        runtimeDir: str | None = None,
        processFactory: ProcessFactory = KernelProcess,
        store: KernelStore | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        self.clock = clock
        self.policy = policy = policy if policy is not None else KernelPolicy()
        self.metrics = metrics if metrics is not None else GatewayMetrics()
        self.specs = specs if specs is not None else KernelSpecManager()
        self.defaultKernelName = policy.defaultKernelName or NATIVE_KERNEL_NAME
        self.seed = seed
        self._environment = environment or (lambda requested: dict(os.environ))
        self.store = store
        self.launcher = self.launcherType(
            clock,
            policy,
            self.specs,
            runtimeDir or jupyter_runtime_dir(),
            processFactory,
            store,
        )
        stop = self.shutdownKernel
        self.restarter = Restarter(clock, policy, self.launcher, self.__contains__, stop)
        self.culler = Culler(
            policy.culling,
            clock,
            self.kernels,
            lambda kernelId, reason: self.shutdownKernel(kernelId, reason=reason),
        )
        self._kernels: dict[str, Kernel] = {}
        self._starting = 0
        # Starts and shutdowns under way: the service's stop waits for them.
        self._inFlight = InFlight()
        self._prespawning: Deferred[None] = succeed(None)
        self._adopting: Deferred[None] = succeed(None)
        self._sweep: LoopingCall | None = None
        # Kernels taken over by another gateway: see release.
        self._released: dict[str, Kernel] = {}
        self.pool: WarmPool | None = None
        if policy.warmKernels:
            names = policy.warmKernelNames or [policy.forceKernelName or self.defaultKernelName]
            self.pool = WarmPool(
                policy.warmKernels,
                names,
                self._createWarm,
                self.launcher.shutDownUnclaimed,
                clock,
            )

    # Service

    def startService(self) -> None:
        super().startService()
        useThreadedLaunches(self.specs)
        checkSpecs(self.specs)
        self.launcher.start()
        if self.policy.prespawnCount:
            self._prespawning = self._prespawn(self.policy.prespawnCount)
        if self.store is not None:
            fenced = self.metrics.fencings.inc
            self.store.start(partial(fence, self._kernels, self._released, self.restarter, fenced))
            self._adopting = self._adopt()
            if self.store.sweepInterval:
                # Kernels whose gateway is gone (its lease expired) are adopted here too.
                self._sweep = LoopingCall(self._adopt)
                self._sweep.clock = self.clock
                self._sweep.start(self.store.sweepInterval, now=False)
        if self.pool is not None:
            self.pool.start()
        self.culler.start()

    def _adopt(self) -> Deferred[None]:
        """Adopt the recorded kernels no live gateway owns (this one's aside)."""
        store = self.store
        assert store is not None
        adopting = adoptRecorded(
            store,
            self.launcher.runtimeDir,
            self.specs,
            self.clock,
            self.launcher.reach,
            self._adopted,
            known=lambda kernelId: kernelId in self._kernels or store.owns(kernelId),
        )
        return ensureDeferred(adopting).addErrback(
            lambda f: log.failure("Adopting the recorded kernels failed", f)
        )

    def _adopted(self, kernel: Kernel) -> None:
        self._register(kernel)
        self.metrics.adoptions.inc()

    def stopService(self) -> Deferred[None]:
        """
        Shut every kernel down, telling its clients first, and wait for the starts in flight to
        give up; then close ZeroMQ.
        """
        super().stopService()
        if self._sweep is not None and self._sweep.running:
            self._sweep.stop()
        self.culler.stop()
        self.launcher.stopLaunching()
        d = DeferredList(
            [
                self.shutdownKernel(k, code=1001, reason="gateway shutting down")
                for k in list(self._kernels)
            ]
            + [self._inFlight.whenDone()]
            + ([self.pool.stop()] if self.pool is not None else [])
        )
        d.addCallback(lambda _: self.launcher.stop())
        if self.store is not None:
            store = self.store
            d.addCallback(lambda _: ensureDeferred(answer(store.stop())))
        return d.addCallback(lambda _: None)

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
        return whenDone(self._prespawning)

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
        policy = self.policy
        name = policy.forceKernelName or name or self.defaultKernelName
        spec, _ = specModel(self.specs, name)
        if policy.maxKernels and len(self._kernels) + self._starting >= policy.maxKernels:
            raise KernelLimitReached(
                f"A max kernels limit of {policy.maxKernels} has been set; "
                "no more kernels may start"
            )
        environment = self._environment(env)
        seed = self._seedFor(name, spec.get("language"))
        self._starting += 1
        began = self.clock.seconds()

        def started(result: object) -> object:
            self._starting -= 1
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
        return uncancellable(self._inFlight.track(start.addBoth(started)))

    def _seedFor(self, name: str, language: str | None) -> Seed | None:
        """The seed notebook, if it applies to kernels of this kernelspec and language."""
        seed = self.seed
        return seed if seed is not None and seed.appliesTo(name, language) else None

    def _createWarm(self, name: str) -> Coroutine[Any, Any, Kernel]:
        """A kernel for the warm pool: started as for a request without C{env}, and seeded."""
        seed = self._seedFor(name, specModel(self.specs, name)[0].get("language"))
        return self.launcher.create(name, self._environment(None), seed)

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
            reply = await kernel.execute(
                environmentCode(environment), storeHistory=False, silent=True
            )
            usable = reply.get("status") == "ok"
        if not usable:
            log.warn("Warm kernel {kernelId} is not usable; starting afresh", kernelId=kernel.id)
            self.launcher.shutDownUnclaimed(kernel)
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
        launcher = self.launcher
        if seed is not None:
            kernel = await launcher.create(name, env, seed)
            self._register(kernel)
            return kernel
        kernel = await launcher.launched(name, env)
        self._register(kernel)
        settling = kernel.lifecycle.run(lambda: ensureDeferred(self._settleRegistered(kernel)))
        settling.addErrback(
            lambda f: log.failure("Starting kernel {kernelId} failed", f, kernelId=kernel.id)
        )
        return kernel

    async def _settleRegistered(self, kernel: Kernel) -> None:
        """
        Wait for a kernel handed out at launch to answer, then send what its clients said
        meanwhile. If it never answers, tell its clients it is dead and shut it down.
        """
        launcher = self.launcher
        try:
            await launcher.whileAlive(kernel, launcher.answers(kernel), "while starting")
        except Exception as e:
            kernel.busyWith = None
            kernelId = kernel.id
            if kernelId not in self._kernels:
                return  # shut down while it started: nothing went wrong
            log.error("Kernel {kernelId} failed to start: {error}", kernelId=kernel.id, error=e)
            kernel.announce("dead")
            # Queued behind this start on the kernel's lifecycle lock.
            shutdown = self.shutdownKernel(kernel.id, code=1011, reason="kernel failed to start")
            shutdown.addErrback(
                lambda f: log.failure("Shutting down kernel {id} failed", f, id=kernelId)
            )
            return
        kernel.busyWith = None
        # Its first statuses were published before iopub was subscribed.
        kernel.announce("idle")
        kernel.release()
        log.info("Kernel {kernelId} is ready", kernelId=kernel.id)

    def _register(self, kernel: Kernel) -> None:
        """Make a started kernel known by its id, and watch its process."""
        self._kernels[kernel.id] = kernel
        self.launcher.writeRecord(kernel)
        self.restarter.watch(kernel)
        log.info("Kernel {kernelId} started", kernelId=kernel.id)

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
        return uncancellable(self.restarter.restart(self.get(kernelId)))

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
        self.restarter.unwatch(kernel)
        if kernel.channels is not None:
            kernel.channels.close(code, reason)
        log.info("Shutting down kernel {kernelId}", kernelId=kernelId)
        shutdown = kernel.lifecycle.run(kernel.process.shutdown)

        def forgotten(result: object) -> object:
            self.launcher.forget(kernel.id)
            return result

        # stopService waits for shutdowns under way, so no process outlives the gateway.
        return self._inFlight.track(shutdown.addBoth(forgotten))
