"""The kernel registry in memory: limits, forced kernel names, prespawning and seeding."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.internet.defer import Deferred, succeed
from twisted.logger import capturedLogs, formatEvent, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from kgw.errors import KernelLimitReached, KernelStartFailed
from kgw.kernels.kernel import Kernel
from kgw.kernels.seed import Seed, SeedFailed
from tests.fakes import FakeProcess, OfflineRegistry, makeAPI, makeRegistry

OK = {"status": "ok"}


class Processes:
    """A process factory for the registry that keeps every L{FakeProcess} it makes."""

    def __init__(self, startLater: bool = False, alive: bool = True) -> None:
        self.made: list[FakeProcess] = []
        self.startLater = startLater
        self.alive = alive

    def __call__(self, name: str, specs: Any, connectionFile: str) -> FakeProcess:
        process = FakeProcess(name, specs, connectionFile, startLater=self.startLater)
        if not self.alive:
            process.isAlive = lambda: succeed(False)  # type: ignore[method-assign]
        self.made.append(process)
        return process

    def startAll(self) -> None:
        for process in self.made:
            if process.starting is not None and not process.starting.called:
                process.starting.callback(None)


class Executions:
    """
    Stands in for running code on a kernel: records each C{(kernel id, code)} and answers with
    the reply C{replies} gives for the code (C{ok} by default), or leaves it to the test.
    """

    def __init__(self, replies: dict[str, Any] | None = None, later: bool = False) -> None:
        self.replies = replies or {}
        self.later = later
        self.calls: list[tuple[str, str]] = []
        self.history: list[bool] = []
        self.waiting: list[Deferred[dict[str, Any]]] = []

    def __call__(
        self, kernel: Kernel, code: str, storeHistory: bool = True
    ) -> Deferred[dict[str, Any]]:
        self.calls.append((kernel.id, code))
        self.history.append(storeHistory)
        if self.later:
            d: Deferred[dict[str, Any]] = Deferred()
            self.waiting.append(d)
            return d
        return succeed(self.replies.get(code, OK))

    def codes(self) -> list[str]:
        return [code for _, code in self.calls]


def writeSpec(registry: OfflineRegistry, name: str, language: str) -> None:
    """Add a kernelspec of C{language} to the registry's kernelspec directory."""
    specDir = os.path.join(registry.specs.kernel_dirs[0], name)
    os.makedirs(specDir)
    with open(os.path.join(specDir, "kernel.json"), "w") as f:
        json.dump({"argv": ["x"], "display_name": name, "language": language}, f)


def runService(testCase: SynchronousTestCase, registry: OfflineRegistry) -> None:
    """Start the registry's service; the test's clean-up stops it."""
    registry.startService()

    def stop() -> None:
        if registry.running:
            testCase.successResultOf(registry.stopService())

    testCase.addCleanup(stop)


def post(stub: Any, path: str, body: Any) -> Deferred[Any]:
    return stub.request("POST", "http://gateway" + path, data=json.dumps(body).encode())


def answer(testCase: SynchronousTestCase, stub: Any, pending: Deferred[Any]) -> tuple[int, Any]:
    """The status and decoded JSON body of a response."""
    stub.flush()
    response = testCase.successResultOf(pending)
    reading = response.content()
    stub.flush()
    return response.code, json.loads(testCase.successResultOf(reading))


class MaxKernelsTests(SynchronousTestCase):
    def test_concurrentStartsCounted(self) -> None:
        """With max_kernels 5, 20 overlapping POSTs start exactly 5 kernels; 15 get 403."""
        processes = Processes(startLater=True)
        stub, kernels = makeAPI(self, maxKernels=5, processFactory=processes)
        pending = [post(stub, "/api/kernels", {}) for _ in range(20)]
        early: list[int] = []
        for d in pending:
            d.addCallback(lambda response: early.append(response.code) or response)
        stub.flush()
        # No start has finished yet: 15 were refused while 5 were in flight.
        self.assertEqual(len(processes.made), 5)
        self.assertEqual(early, [403] * 15)
        processes.startAll()
        codes = sorted(answer(self, stub, d)[0] for d in pending)
        self.assertEqual(codes, [201] * 5 + [403] * 15)
        self.assertEqual(len(kernels), 5)

    def test_failedStartFreesItsPlace(self) -> None:
        """A start that fails no longer counts toward max_kernels."""
        processes = Processes(startLater=True)
        kernels = makeRegistry(self, maxKernels=1, processFactory=processes)
        first = kernels.startKernel()
        self.assertRaises(KernelLimitReached, kernels.startKernel)
        processes.made[0].starting.errback(RuntimeError("no"))
        self.failureResultOf(first, KernelStartFailed)
        self.flushLoggedErrors(RuntimeError)
        second = kernels.startKernel()
        processes.startAll()
        self.assertIsInstance(self.successResultOf(second), Kernel)


class ForceKernelNameTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.stub, self.kernels = makeAPI(self, forceKernelName="other")

    def test_requestedNameIgnored(self) -> None:
        """Every POST starts the forced kernelspec: none, another or an unknown one named."""
        for body in ({}, {"name": "fake"}, {"name": "nope"}):
            code, model = answer(self, self.stub, post(self.stub, "/api/kernels", body))
            self.assertEqual((code, model["name"]), (201, "other"), body)
            self.assertEqual(self.kernels.get(model["id"]).process.name, "other")

    def test_sessions(self) -> None:
        """A session's new kernel is of the forced kernelspec too."""
        body = {"path": "a.ipynb", "type": "notebook", "kernel": {"name": "fake"}}
        code, model = answer(self, self.stub, post(self.stub, "/api/sessions", body))
        self.assertEqual((code, model["kernel"]["name"]), (201, "other"))


class PrespawnTests(SynchronousTestCase):
    def test_startedWithService(self) -> None:
        """prespawn_count kernels of the default kernelspec start with the service."""
        kernels = makeRegistry(self, prespawnCount=2)
        self.assertEqual(len(kernels), 0)
        runService(self, kernels)
        self.successResultOf(kernels.whenPrespawned())
        self.assertEqual([k.name for k in kernels.kernels()], ["fake", "fake"])

    def test_usableById(self) -> None:
        """Prespawned kernels are listed and found by id like any other."""
        stub, kernels = makeAPI(self, prespawnCount=2)
        runService(self, kernels)
        response = self.successResultOf(stub.get("http://gateway/api/kernels"))
        listed = json.loads(self.successResultOf(response.content()))
        self.assertEqual(len(listed), 2)
        for model in listed:
            response = self.successResultOf(stub.get(f"http://gateway/api/kernels/{model['id']}"))
            self.assertEqual(response.code, 200)

    def test_countTowardMaxKernels(self) -> None:
        """Prespawned kernels count toward max_kernels."""
        kernels = makeRegistry(self, prespawnCount=2, maxKernels=3)
        runService(self, kernels)
        self.successResultOf(kernels.startKernel())
        self.assertRaises(KernelLimitReached, kernels.startKernel)

    def test_seedOrForcedKernelspec(self) -> None:
        """Prespawned kernels are of the seed's kernelspec, or the forced one, as in KG."""
        seed = Seed("/s.ipynb", (), "other", None)
        kernels = makeRegistry(self, prespawnCount=1, seed=seed)
        kernels.launcher.execute = Executions()  # type: ignore[method-assign]
        runService(self, kernels)
        self.assertEqual([k.name for k in kernels.kernels()], ["other"])
        forced = makeRegistry(self, prespawnCount=1, forceKernelName="other")
        runService(self, forced)
        self.assertEqual([k.name for k in forced.kernels()], ["other"])

    def test_failureLogged(self) -> None:
        """A kernel that fails to prespawn is logged with its error; the service runs on."""
        events: list[dict[str, Any]] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        processes = Processes(startLater=True)
        kernels = makeRegistry(self, prespawnCount=2, processFactory=processes)
        runService(self, kernels)
        prespawned = kernels.whenPrespawned()
        self.assertNoResult(prespawned)
        processes.made[0].starting.errback(RuntimeError("out of kernels"))
        processes.made[1].starting.callback(None)
        self.successResultOf(prespawned)
        self.flushLoggedErrors(RuntimeError)
        self.assertTrue(kernels.running)
        self.assertEqual(len(kernels), 1)
        errors = [e for e in events if e.get("log_format", "").startswith("Prespawning")]
        self.assertEqual(len(errors), 1)
        self.assertIn("out of kernels", str(errors[0]["error"]))

    def test_stopWhileStarting(self) -> None:
        """Stopping while kernels start waits for them and shuts them down: none is leaked."""
        processes = Processes(startLater=True)
        kernels = makeRegistry(self, prespawnCount=2, processFactory=processes)
        kernels.startService()
        stopped = kernels.stopService()
        self.assertNoResult(stopped)
        processes.startAll()
        self.successResultOf(stopped)
        self.assertEqual(len(kernels), 0)
        for process in processes.made:
            self.assertEqual(process.operations(), ["start", "shutdown"])


class SeedingTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.seed = Seed("/seed.ipynb", ("a = 1", "b = 2"), None, "python")
        self.processes = Processes()
        self.stub, self.kernels = makeAPI(self, processFactory=self.processes)
        self.kernels.seed = self.seed
        self.executions = Executions()
        self.kernels.launcher.execute = self.executions  # type: ignore[method-assign]

    def test_cellsRunBeforeHandout(self) -> None:
        """Every code cell runs, in order, before the kernel is listed or handed out."""
        self.executions.later = True
        started = self.kernels.startKernel()
        self.assertEqual(self.executions.codes(), ["a = 1"])
        self.executions.waiting[0].callback(OK)
        self.assertEqual(self.executions.codes(), ["a = 1", "b = 2"])
        self.assertNoResult(started)
        self.assertEqual(len(self.kernels), 0)
        self.executions.waiting[1].callback(OK)
        kernel = self.successResultOf(started)
        self.assertEqual(self.kernels.kernels(), [kernel])
        self.assertEqual({kernelId for kernelId, _ in self.executions.calls}, {kernel.id})

    def test_historyAsTheSeedSays(self) -> None:
        """Seed cells are kept in the kernel's history unless the seed says otherwise."""
        self.successResultOf(self.kernels.startKernel())
        self.kernels.seed = replace(self.seed, storeHistory=False)
        self.successResultOf(self.kernels.startKernel())
        self.assertEqual(self.executions.history, [True, True, False, False])

    def test_failingCellFailsStart(self) -> None:
        """A cell that raises fails the POST with 500 naming its error; the kernel is gone."""
        self.executions.replies["a = 1"] = {
            "status": "error",
            "ename": "ValueError",
            "evalue": "no seed for you",
            "traceback": [],
        }
        code, body = answer(self, self.stub, post(self.stub, "/api/kernels", {}))
        self.assertEqual(code, 500)
        self.assertIn("ValueError: no seed for you", body["message"])
        self.assertEqual(self.executions.codes(), ["a = 1"])
        self.assertEqual(self.processes.made[0].operations(), ["start", "shutdown"])
        self.assertEqual(len(self.kernels), 0)

    def test_abortedCellFailsStart(self) -> None:
        """A reply that is neither ok nor error fails the start too."""
        self.executions.replies["b = 2"] = {"status": "aborted"}
        failure = self.failureResultOf(self.kernels.startKernel(), SeedFailed)
        self.assertIn("aborted", str(failure.value))

    def test_kernelDiesWhileSeeding(self) -> None:
        """A kernel that dies during a seed cell fails its start rather than hanging it."""
        self.processes.alive = False
        self.executions.later = True
        started = self.kernels.startKernel()
        self.assertNoResult(started)
        self.kernels.clock.advance(self.kernels.policy.watchInterval)
        failure = self.failureResultOf(started, KernelStartFailed)
        self.assertIn("died", str(failure.value))
        self.assertTrue(self.executions.waiting[0].called)
        self.assertIn("shutdown", self.processes.made[0].operations())

    def test_otherLanguageNotSeeded(self) -> None:
        """A kernel of another language than the seed's is not seeded."""
        writeSpec(self.kernels, "rlang", "R")
        self.successResultOf(self.kernels.startKernel("rlang"))
        self.assertEqual(self.executions.calls, [])
        self.successResultOf(self.kernels.startKernel("other"))
        self.assertEqual(len(self.executions.calls), 2)

    def test_namedKernelspecSeeded(self) -> None:
        """Kernels of the kernelspec the notebook names are seeded, whatever their language."""
        writeSpec(self.kernels, "rlang", "R")
        self.kernels.seed = Seed("/seed.ipynb", ("x <- 1",), "rlang", "python")
        self.successResultOf(self.kernels.startKernel("rlang"))
        self.assertEqual(self.executions.codes(), ["x <- 1"])

    def test_sessionsSeeded(self) -> None:
        """A kernel a session starts is seeded before the session is created."""
        body = {"path": "a.ipynb", "type": "notebook", "kernel": {"name": "other"}}
        code, model = answer(self, self.stub, post(self.stub, "/api/sessions", body))
        self.assertEqual(code, 201)
        kernelId = model["kernel"]["id"]
        self.assertEqual(self.executions.calls, [(kernelId, "a = 1"), (kernelId, "b = 2")])

    def test_prespawnedSeeded(self) -> None:
        """Prespawned kernels are seeded before they are listed."""
        self.kernels.policy.prespawnCount = 2
        runService(self, self.kernels)
        self.assertEqual(len(self.kernels), 2)
        self.assertEqual(
            sorted(self.executions.calls),
            sorted((k.id, code) for k in self.kernels.kernels() for code in ("a = 1", "b = 2")),
        )

    def test_stopWhileSeeding(self) -> None:
        """Stopping the service while a kernel is being seeded shuts that kernel down."""
        self.executions.later = True
        runService(self, self.kernels)
        started = self.kernels.startKernel()
        stopped = self.kernels.stopService()
        self.executions.waiting[0].callback(OK)
        self.executions.waiting[1].callback(OK)
        self.failureResultOf(started, KernelStartFailed)
        self.successResultOf(stopped)
        self.assertEqual(self.processes.made[0].operations(), ["start", "shutdown"])


class LifecycleLogTests(SynchronousTestCase):
    """Each step of a kernel's life is logged with the kernel's id."""

    def logged(self, act: Callable[[OfflineRegistry, str], object]) -> list[str]:
        """What C{act} on a started kernel logs, as text, each line checked for the id."""
        kernels = makeRegistry(self)
        runService(self, kernels)
        kernel = self.successResultOf(kernels.startKernel())
        with capturedLogs() as events:
            self.successResultOf(act(kernels, kernel.id))
        for event in events:
            self.assertEqual(event.get("kernelId"), kernel.id, event)
        return [formatEvent(event).replace(kernel.id, "K") for event in events]

    def test_interruptLogged(self) -> None:
        """An interrupt logs the kernel id."""
        self.assertEqual(self.logged(OfflineRegistry.interrupt), ["Interrupting kernel K"])

    def test_restartLogged(self) -> None:
        """A restart asked for through the API logs the kernel id, when asked and when done."""
        self.assertEqual(
            self.logged(OfflineRegistry.restart), ["Restarting kernel K", "Kernel K restarted"]
        )
