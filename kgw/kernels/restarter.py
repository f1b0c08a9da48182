"""Watch each kernel's process; restart a kernel in place, and tell its clients."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from kgw.errors import NoSuchKernel
from kgw.kernels.kernel import Kernel
from kgw.kernels.launcher import Launcher
from kgw.kernels.policy import KernelPolicy

log = Logger()


class Restarter:
    """
    Restarts kernels, on request or when their process dies, keeping their ids.

    @param isRegistered: whether a kernel id is still the registry's (not shut down meanwhile).
    @param shutdown: shuts a kernel down by id, closing its websockets with a code and reason.
    """

    def __init__(
        self,
        clock: IReactorTime,
        policy: KernelPolicy,
        launcher: Launcher,
        isRegistered: Callable[[str], bool],
        shutdown: Callable[[str, int, str], Deferred[None]],
    ) -> None:
        self.clock = clock
        self.policy = policy
        self.launcher = launcher
        self._isRegistered = isRegistered
        self._shutdown = shutdown

    def watch(self, kernel: Kernel) -> None:
        """Check every C{watchInterval} seconds that the kernel's process lives."""
        kernel.watcher = LoopingCall(self._check, kernel)
        kernel.watcher.clock = self.clock
        kernel.watcher.start(self.policy.watchInterval, now=False).addErrback(
            lambda f: log.failure("Watching kernel {kernelId} failed", f, kernelId=kernel.id)
        )

    def unwatch(self, kernel: Kernel) -> None:
        if kernel.watcher is not None and kernel.watcher.running:
            kernel.watcher.stop()

    def restart(self, kernel: Kernel) -> Deferred[Kernel]:
        """Restart a kernel in place, keeping its id, and fire once it answers again."""
        log.info("Restarting kernel {kernelId}", kernelId=kernel.id)
        kernel.hold()

        def released(result: object) -> object:
            kernel.release()
            return result

        restarting: Deferred[Kernel] = self._restartLocked(kernel, now=False)
        restarting.addBoth(released)
        return restarting.addCallback(_restarted)

    def _restartLocked(self, kernel: Kernel, now: bool) -> Deferred[Kernel]:
        return kernel.lifecycle.run(lambda: ensureDeferred(self._restart(kernel, now)))

    async def _restart(self, kernel: Kernel, now: bool) -> Kernel:
        if not self._isRegistered(kernel.id):
            # Shut down (a start that failed, say) while this restart waited for its turn.
            raise NoSuchKernel(kernel.id)
        kernel.busyWith = "restarting"
        try:
            await kernel.process.restart(now=now)
            if kernel.channels is not None:
                # A remote kernel may come back on other ports, even another host.
                kernel.channels.follow(kernel.process.connectionInfo)
            self.launcher.writeRecord(kernel)
            # The new process's own statuses come before iopub is subscribed again: the
            # gateway tells clients, and the REST model, what they would have said.
            kernel.announce("starting")
            if kernel.channels is not None:
                await kernel.channels.waitUntilReady(self.policy.startTimeout)
            kernel.announce("idle")
        finally:
            kernel.busyWith = None
        return kernel

    def _check(self, kernel: Kernel) -> Deferred[None] | None:
        if kernel.busyWith is not None:
            return None

        def checked(alive: bool) -> Deferred[None] | None:
            if alive or kernel.busyWith is not None or not self._isRegistered(kernel.id):
                return None
            return ensureDeferred(self._autoRestart(kernel))

        return kernel.process.isAlive().addCallback(checked)

    async def _autoRestart(self, kernel: Kernel) -> None:
        """Bring a kernel that died back under the same id, or declare it dead."""
        log.warn("Kernel {kernelId} died; restarting it", kernelId=kernel.id)
        kernel.hold()
        try:
            await self._restartOrGiveUp(kernel)
        finally:
            kernel.release()

    async def _restartOrGiveUp(self, kernel: Kernel) -> None:
        kernel.announce("restarting")
        for attempt in range(1, self.policy.restartLimit + 1):
            if not self._isRegistered(kernel.id):
                return
            try:
                await self._restartLocked(kernel, now=True)
            except Exception:
                if not self._isRegistered(kernel.id):
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
        kernel.announce("dead")
        if self._isRegistered(kernel.id):
            await self._shutdown(kernel.id, 1011, "kernel died")


def _restarted(kernel: Kernel) -> Kernel:
    log.info("Kernel {kernelId} restarted", kernelId=kernel.id)
    return kernel
