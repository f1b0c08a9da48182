"""The metrics page and what it counts, in memory: kernels, starts, requests, relayed messages."""

from __future__ import annotations

import json
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from treq.testing import StubTreq
from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail
from twisted.internet.task import deferLater
from twisted.logger import capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from kgw.api import wire
from kgw.api.app import GatewayAPI
from kgw.api.factory import ChannelsFactory
from kgw.http.access import AccessPolicy
from kgw.http.routes import UNMATCHED, RouteTemplates
from kgw.jsonlog import eventAsLine
from kgw.metrics import TO_CLIENT, TO_KERNEL, GatewayMetrics
from kgw.notebook_http.cells import parseNotebook
from kgw.notebook_http.routes import NotebookAPIResource
from tests.fakes import FakeProcess, makeAPI
from tests.support import TIMEOUT

TOKEN = "metrics-secret"
FAMILIES = {
    "kgw_kernels": "gauge",
    "kgw_websocket_connections": "gauge",
    "kgw_messages": "counter",
    "kgw_kernel_start_duration_seconds": "histogram",
    "kgw_http_request_duration_seconds": "histogram",
}


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The value of each sample named C{name} in a scrape, by its sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


def labels(**given: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(given.items()))


async def fetch(
    stub: StubTreq, path: str, headers: dict[str, list[str]] | None = None
) -> tuple[int, str, str]:
    """
    GET C{path}: its status, C{Content-Type} and body. The metrics page answers from a worker
    thread, so the in-memory connection is pumped until the answer is in.
    """
    response = await pumped(stub, stub.get("http://gateway" + path, headers=headers))
    body = await pumped(stub, response.text())
    return response.code, (response.headers.getRawHeaders("Content-Type") or [""])[0], body


async def pumped(stub: StubTreq, pending: Deferred[Any]) -> Any:
    """C{pending}'s result, flushing C{stub}'s connection until it comes."""
    outcome: list[Any] = []
    pending.addBoth(outcome.append)
    waited = 0.0
    while not outcome:
        if waited > TIMEOUT:
            raise AssertionError("no answer from the metrics page")
        stub.flush()
        await deferLater(reactor, 0.01)
        waited += 0.01
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


def call(stub: StubTreq, method: str, path: str, body: Any = None, **kw: Any) -> int:
    """Make a request that the API answers at once; its status."""
    data = None if body is None else json.dumps(body).encode()
    pending = stub.request(method, "http://gateway" + path, data=data, **kw)
    stub.flush()
    assert pending.called, f"{method} {path} was not answered at once"
    response = pending.result
    response.content()
    stub.flush()
    return response.code


class FailingProcess(FakeProcess):
    """A kernel process that cannot start."""

    def start(self, **launch: Any) -> Any:
        return fail(RuntimeError("no kernel today"))


def failingFake(name: str, specs: Any, connectionFile: str) -> FakeProcess:
    """Kernels of kernelspec C{fake} cannot start; the others can."""
    return (FailingProcess if name == "fake" else FakeProcess)(name, specs, connectionFile)


class MetricsPageTests(TestCase):
    """C{GET /metrics} over an offline registry."""

    def setUp(self) -> None:
        self.metrics = GatewayMetrics()
        self.stub, self.kernels = makeAPI(self, metrics=self.metrics)

    async def test_servedAsPrometheusText(self) -> None:
        """The page is Prometheus's text format and holds every kgw family, typed."""
        code, contentType, text = await fetch(self.stub, "/metrics")
        self.assertEqual(code, 200)
        self.assertTrue(contentType.startswith("text/plain"), contentType)
        types = {f.name: f.type for f in text_string_to_metric_families(text)}
        for name, kind in FAMILIES.items():
            self.assertEqual(types.get(name), kind, name)

    async def test_kernelsByNameAndState(self) -> None:
        """kgw_kernels counts the registry's kernels by kernelspec and state when scraped."""
        first = call(self.stub, "POST", "/api/kernels", {"name": "fake"})
        call(self.stub, "POST", "/api/kernels", {"name": "fake"})
        call(self.stub, "POST", "/api/kernels", {"name": "other"})
        self.assertEqual(first, 201)
        self.kernels.kernels()[0].executionState = "busy"
        _, _, text = await fetch(self.stub, "/metrics")
        self.assertEqual(
            samples(text, "kgw_kernels"),
            {
                labels(kernel_name="fake", execution_state="busy"): 1,
                labels(kernel_name="fake", execution_state="idle"): 1,
                labels(kernel_name="other", execution_state="idle"): 1,
            },
        )
        self.assertEqual(samples(text, "kgw_websocket_connections"), {(): 0})

    async def test_kernelStartsByNameAndOutcome(self) -> None:
        """Each kernel start is observed by kernelspec, with outcome started or failed."""
        stub, _ = makeAPI(self, metrics=GatewayMetrics(), processFactory=failingFake)
        self.assertEqual(call(stub, "POST", "/api/kernels", {"name": "other"}), 201)
        self.assertEqual(call(stub, "POST", "/api/kernels", {"name": "fake"}), 500)
        self.flushLoggedErrors(RuntimeError)
        _, _, text = await fetch(stub, "/metrics")
        self.assertEqual(
            samples(text, "kgw_kernel_start_duration_seconds_count"),
            {
                labels(kernel_name="other", outcome="started"): 1,
                labels(kernel_name="fake", outcome="failed"): 1,
            },
        )

    async def test_requestsByRouteTemplate(self) -> None:
        """Requests are counted by method, route template and status, never by raw path."""
        call(self.stub, "POST", "/api/kernels", {})
        kernelId = self.kernels.kernels()[0].id
        call(self.stub, "GET", f"/api/kernels/{kernelId}")
        call(self.stub, "GET", "/api/kernels/nope")
        call(self.stub, "PUT", f"/api/kernels/{kernelId}")
        call(self.stub, "GET", "/kernelspecs/fake/logo-64x64.png")
        call(self.stub, "GET", "/no/such/route")
        call(self.stub, "BREW", "/api")
        _, _, text = await fetch(self.stub, "/metrics")
        counts = samples(text, "kgw_http_request_duration_seconds_count")
        expected = {
            labels(method="POST", route="/api/kernels", status="201"): 1,
            labels(method="GET", route="/api/kernels/{kernel_id}", status="200"): 1,
            labels(method="GET", route="/api/kernels/{kernel_id}", status="404"): 1,
            labels(method="PUT", route="/api/kernels/{kernel_id}", status="405"): 1,
            labels(method="GET", route="/kernelspecs/{kernel_name}/{resource}", status="200"): 1,
            labels(method="GET", route=UNMATCHED, status="404"): 1,
            labels(method="other", route="/api", status="405"): 1,
        }
        self.assertEqual({k: v for k, v in counts.items() if k in expected}, expected)
        self.assertNotIn(kernelId, text)
        self.assertNotIn("nope", text)
        sums = samples(text, "kgw_http_request_duration_seconds_sum")
        self.assertTrue(all(value >= 0 for value in sums.values()))

    async def test_scrapeCountsItself(self) -> None:
        """A scrape is a request like any other, under the route /metrics."""
        await fetch(self.stub, "/metrics")
        _, _, text = await fetch(self.stub, "/metrics")
        counts = samples(text, "kgw_http_request_duration_seconds_count")
        self.assertEqual(counts[labels(method="GET", route="/metrics", status="200")], 1)

    def test_getOnly(self) -> None:
        """Another method than GET or HEAD on /metrics is answered 405, and counted so."""
        self.assertEqual(call(self.stub, "POST", "/metrics"), 405)
        counted = self.metrics.registry.get_sample_value(
            "kgw_http_request_duration_seconds_count",
            {"method": "POST", "route": "/metrics", "status": "405"},
        )
        self.assertEqual(counted, 1)

    async def test_ownRegistry(self) -> None:
        """Two gateways' metrics are apart: what one counts, the other's page does not show."""
        otherStub, _ = makeAPI(self, metrics=GatewayMetrics())
        call(self.stub, "POST", "/api/kernels", {})
        _, _, text = await fetch(otherStub, "/metrics")
        self.assertEqual(samples(text, "kgw_kernels"), {})
        self.assertEqual(samples(text, "kgw_kernel_start_duration_seconds_count"), {})


class MetricsAccessTests(TestCase):
    """The token on C{/metrics}, and C{metrics_open}."""

    async def test_tokenNeeded(self) -> None:
        """With a token set, /metrics without it is 401, and with it 200."""
        stub, _ = makeAPI(self, access=AccessPolicy(TOKEN), metrics=GatewayMetrics())
        self.assertEqual(call(stub, "GET", "/metrics"), 401)
        right = {"Authorization": [f"token {TOKEN}"]}
        code, _, text = await fetch(stub, "/metrics", headers=right)
        self.assertEqual(code, 200)
        self.assertIn("kgw_kernels", text)

    async def test_metricsOpenOpensThatPathOnly(self) -> None:
        """With metrics_open, {base_url}metrics needs no token; nothing else does without one."""
        stub, _ = makeAPI(
            self,
            baseURL="/gw/",
            access=AccessPolicy(TOKEN),
            metrics=GatewayMetrics(),
            metricsOpen=True,
        )
        code, _, text = await fetch(stub, "/gw/metrics")
        self.assertEqual(code, 200)
        self.assertIn("kgw_kernels", text)
        for path in ("/metrics", "/gw/metrics/", "/gw/metrics/x", "/gw/metricsx", "/gw/api"):
            self.assertEqual(call(stub, "GET", path), 401, path)
        self.assertEqual(call(stub, "POST", "/gw/api/kernels", {}), 401)

    def test_noPageWithoutMetrics(self) -> None:
        """An edge without metrics serves no /metrics: it is an unknown route."""
        stub, _ = makeAPI(self)
        self.assertEqual(call(stub, "GET", "/metrics"), 404)


class RequestLogTests(SynchronousTestCase):
    """The log event of each request."""

    def test_jsonLinePerRequest(self) -> None:
        """Each request logs one event whose JSON line has method, route, status and duration."""
        stub, kernels = makeAPI(self, metrics=GatewayMetrics())
        with capturedLogs() as events:
            call(stub, "POST", "/api/kernels", {})
            call(stub, "GET", f"/api/kernels/{kernels.kernels()[0].id}?token={TOKEN}")
            call(stub, "GET", "/nowhere")
        lines = [
            json.loads(eventAsLine(e)) for e in events if e["log_namespace"] == "kgw.http.observe"
        ]
        self.assertEqual(
            [(line["method"], line["route"], line["status"]) for line in lines],
            [
                ("POST", "/api/kernels", 201),
                ("GET", "/api/kernels/{kernel_id}", 200),
                ("GET", UNMATCHED, 404),
            ],
        )
        for line in lines:
            self.assertIsInstance(line["duration"], float)
            self.assertGreaterEqual(line["duration"], 0)
            self.assertEqual(line["level"], "info")
            self.assertIn(line["route"], line["message"])
        for event in events:
            self.assertNotIn(TOKEN, eventAsLine(event))
        self.assertIn(
            f"/api/kernels/{kernels.kernels()[0].id}?token=[secret] HTTP/1.1", lines[1]["message"]
        )

    def test_accessLineCannotBeForged(self) -> None:
        """
        Quotes and control characters in a user agent are escaped: its quoted field ends where
        it should, and no terminal escape reaches the log.
        """
        stub, _ = makeAPI(self, metrics=GatewayMetrics())
        evil = 'x" 200 0 "\x1b[2K'
        with capturedLogs() as events:
            call(stub, "GET", "/api", headers={"User-Agent": evil, "Referer": f"/r?token={TOKEN}"})
        [event] = [e for e in events if e["log_namespace"] == "kgw.http.observe"]
        text = formatEvent(event)
        self.assertNotIn("\x1b", text)
        self.assertTrue(text.endswith('"/r?token=[secret]" "x\\" 200 0 \\"\\u001b[2K"'), text)


class RouteTemplateTests(SynchronousTestCase):
    """Route templates of the jupyter-websocket app and of a notebook's endpoints."""

    def test_apiTemplates(self) -> None:
        """A path is named by the rule Klein routes it with; an unknown one is unmatched."""
        routes = RouteTemplates(GatewayAPI.app.url_map)
        for method, path, expected in (
            ("GET", "/api", "/api"),
            ("GET", "/api/", "/api"),
            ("DELETE", "/api/kernels/k-1", "/api/kernels/{kernel_id}"),
            ("POST", "/api/kernels/k-1/interrupt", "/api/kernels/{kernel_id}/interrupt"),
            ("GET", "/api/kernels/k-1/channels", "/api/kernels/{kernel_id}/channels"),
            ("GET", "/kernelspecs/p/a/b.png", "/kernelspecs/{kernel_name}/{resource}"),
            ("POST", "/api/sessions/s-1", "/api/sessions/{session_id}"),
            ("GET", "/api/kernels/k-1/nope", UNMATCHED),
            ("GET", "/api//kernels", UNMATCHED),
        ):
            self.assertEqual(routes(method, path), expected, f"{method} {path}")

    def test_notebookTemplates(self) -> None:
        """In notebook-http mode an endpoint is named by the path its cell declares."""
        notebook = {
            "cells": [
                {"cell_type": "code", "source": "# GET /books/:id\nprint(1)"},
                {"cell_type": "code", "source": "# POST /books\nprint(2)"},
            ],
            "metadata": {},
        }
        resource = NotebookAPIResource(parseNotebook(notebook), None, reactor, "n.ipynb")
        for method, path, expected in (
            ("GET", "/books/7", "/books/:id"),
            ("DELETE", "/books/7", "/books/:id"),
            ("POST", "/books", "/books"),
            ("GET", "/_api/spec/swagger.json", "/_api/spec/swagger.json"),
            ("GET", "/public/a/b.css", "/public/{name}"),
            ("GET", "/magazines/7", UNMATCHED),
            ("GET", "/", UNMATCHED),
        ):
            self.assertEqual(resource.routeTemplate(method, path), expected, f"{method} {path}")


class RelayCountTests(SynchronousTestCase):
    """Messages counted on their way through a channels websocket."""

    def protocol(self, metrics: GatewayMetrics) -> Any:
        kernel: Any = type("K", (), {"id": "k", "channels": None})()
        protocol = ChannelsFactory(1024, metrics=metrics).forKernel(kernel, "").buildProtocol(None)
        protocol.state = protocol.STATE_OPEN
        protocol.v1 = True
        protocol.sendMessage = lambda payload, isBinary=False: None
        sent: list[str] = []
        protocol.channels = type("C", (), {"send": lambda self, c, p: sent.append(c)})()
        return protocol

    def test_bothDirectionsByChannel(self) -> None:
        """Each message relayed counts once, under its channel and direction."""
        metrics = GatewayMetrics()
        protocol = self.protocol(metrics)
        parts = [b'{"msg_id": "m", "msg_type": "status"}', b"{}", b"{}", b"{}"]
        for channel in ("iopub", "iopub", "shell"):
            protocol.relay(channel, json.loads(parts[0]), parts)
        protocol.onMessage(wire.encode_v1("control", parts), True)
        value = metrics.registry.get_sample_value
        name = "kgw_messages_total"
        self.assertEqual(value(name, {"channel": "iopub", "direction": TO_CLIENT}), 2)
        self.assertEqual(value(name, {"channel": "shell", "direction": TO_CLIENT}), 1)
        self.assertEqual(value(name, {"channel": "control", "direction": TO_KERNEL}), 1)
        self.assertEqual(value(name, {"channel": "shell", "direction": TO_KERNEL}), 0)
