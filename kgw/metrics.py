"""The gateway's Prometheus metrics: their families, what records them, and the page serving them.

Each gateway has its own L{CollectorRegistry}, never prometheus_client's global one, so that
several gateways (and tests) in one process keep their counts apart. The families are::

    kgw_kernels{kernel_name, execution_state}                          gauge, read at scrape
    kgw_websocket_connections                                          gauge, read at scrape
    kgw_messages_total{channel, direction}                             counter
    kgw_kernel_start_duration_seconds{kernel_name, outcome}            histogram
    kgw_http_request_duration_seconds{method, route, status}           histogram
    kgw_kernels_adopted_total                                          counter

and, with a kernel store shared by several gateways::

    kgw_gateway_info{gateway_id, address}                              gauge (always 1)
    kgw_cluster_kernels{gateway_id}                                    gauge, read at scrape
    kgw_kernels_fenced_total                                           counter
    kgw_forwarded_requests_total{kind, outcome}                        counter

plus the C{process_*} families of the gateway's own process.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, Metric
from twisted.python import threadable
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource

from kgw.jupyter import CHANNELS, CLIENT_CHANNELS

# The message directions of kgw_messages_total, and the channels messages take in each.
TO_CLIENT = "kernel_to_client"
TO_KERNEL = "client_to_kernel"
DIRECTIONS = {TO_CLIENT: CHANNELS, TO_KERNEL: CLIENT_CHANNELS}

# The methods kgw_http_request_duration_seconds names; any other is counted as "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

# Kernel starts take from a fraction of a second (a warm kernel) to a minute (the timeout).
START_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)


class CountedKernel(Protocol):
    """What the metrics read of a kernel."""

    @property
    def name(self) -> str: ...

    @property
    def executionState(self) -> str: ...

    @property
    def connections(self) -> int: ...


class KernelSource(Protocol):
    """Where the metrics find the kernels to count: the kernel registry."""

    def kernels(self) -> Sequence[CountedKernel]: ...


def clusterOwners(source: KernelSource) -> dict[str, int] | None:
    """
    How many kernels each gateway sharing the kernel store of C{source} owns, by gateway id, as
    the store last read them (its C{lastOwners}); C{None} without a shared store, or before it
    first read them.
    """
    owners: dict[str, str] | None = getattr(getattr(source, "store", None), "lastOwners", None)
    if owners is None:
        return None
    counts: dict[str, int] = {}
    for owner in owners.values():
        counts[owner] = counts.get(owner, 0) + 1
    return counts


class KernelCollector:
    """
    C{kgw_kernels} and C{kgw_websocket_connections}, counted from a kernel registry when scraped.

    The registry belongs to the reactor's thread. A scrape from it reads the registry directly;
    one from a worker thread (the WSGI resource of prometheus_client) reads the counts that
    L{refresh} took in the reactor's thread just before the scrape was handed over.
    """

    def __init__(self, kernels: KernelSource) -> None:
        self._kernels = kernels
        self._counts: dict[tuple[str, str], int] = {}
        self._connections = 0
        self._owners: dict[str, int] | None = None

    def refresh(self) -> None:
        """Count the registry's kernels by kernelspec and state, and their websockets."""
        counts: dict[tuple[str, str], int] = {}
        connections = 0
        for kernel in self._kernels.kernels():
            key = (kernel.name, kernel.executionState)
            counts[key] = counts.get(key, 0) + 1
            connections += kernel.connections
        self._counts, self._connections = counts, connections
        self._owners = clusterOwners(self._kernels)

    def describe(self) -> Iterable[Metric]:
        return self._families({}, 0, None)

    def collect(self) -> Iterable[Metric]:
        if threadable.ioThread is None or threadable.isInIOThread():
            self.refresh()
        return self._families(self._counts, self._connections, self._owners)

    def _families(
        self,
        counts: dict[tuple[str, str], int],
        connections: int,
        owners: dict[str, int] | None,
    ) -> list[Metric]:
        kernels = GaugeMetricFamily(
            "kgw_kernels",
            "Kernels the gateway runs, by kernelspec and execution state.",
            labels=["kernel_name", "execution_state"],
        )
        for (name, state), count in sorted(counts.items()):
            kernels.add_metric([name, state], count)
        websockets = GaugeMetricFamily(
            "kgw_websocket_connections", "Channels websockets open.", value=connections
        )
        families: list[Metric] = [kernels, websockets]
        if owners is not None:
            cluster = GaugeMetricFamily(
                "kgw_cluster_kernels",
                "Kernels of the gateways sharing the kernel store, by owning gateway, as this "
                "gateway last read the store.",
                labels=["gateway_id"],
            )
            for gatewayId, count in sorted(owners.items()):
                cluster.add_metric([gatewayId], count)
            families.append(cluster)
        return families


class GatewayMetrics:
    """
    The metrics of one gateway, in a registry of their own.

    @ivar registry: the L{CollectorRegistry} the families are registered in.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.messages = Counter(
            "kgw_messages",
            "Messages relayed between kernels and websocket clients, by channel and direction.",
            ["channel", "direction"],
            registry=self.registry,
        )
        self.kernelStarts = Histogram(
            "kgw_kernel_start_duration_seconds",
            "Kernel starts and how long they took, by kernelspec and outcome (started, failed).",
            ["kernel_name", "outcome"],
            buckets=START_BUCKETS,
            registry=self.registry,
        )
        self.requests = Histogram(
            "kgw_http_request_duration_seconds",
            "HTTP requests and how long they took, by method, route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.adoptions = Counter(
            "kgw_kernels_adopted",
            "Kernels this gateway took over: left by a gateway that died, or by an earlier run.",
            registry=self.registry,
        )
        self.fencings = Counter(
            "kgw_kernels_fenced",
            "Kernels this gateway stopped serving, another gateway having taken them over "
            "while this one's lease had lapsed.",
            registry=self.registry,
        )
        self.forwards = Counter(
            "kgw_forwarded_requests",
            "Requests for kernels of other gateways passed on to their owner, by kind (http, "
            "websocket) and outcome (forwarded, unreachable).",
            ["kind", "outcome"],
            registry=self.registry,
        )
        ProcessCollector(registry=self.registry)
        self._info: Gauge | None = None
        self._kernelCollector: KernelCollector | None = None
        self._resource: IResource | None = None

    def watchKernels(self, kernels: KernelSource) -> None:
        """Count the kernels of C{kernels}, and their websockets, at each scrape."""
        self._kernelCollector = KernelCollector(kernels)
        self.registry.register(self._kernelCollector)

    def identify(self, gatewayId: str, address: str | None) -> None:
        """Name this gateway in the kernel store it shares with others (C{kgw_gateway_info})."""
        if self._info is None:
            self._info = Gauge(
                "kgw_gateway_info",
                "This gateway in the kernel store shared by several: its id and the address the "
                "others reach it at (empty: none).",
                ["gateway_id", "address"],
                registry=self.registry,
            )
        self._info.labels(gatewayId, address or "").set(1)

    def forwarded(self, kind: str, outcome: str) -> None:
        """Count a request of C{kind} (http, websocket) passed on to its kernel's owner."""
        self.forwards.labels(kind, outcome).inc()

    def relayCounters(self, direction: str) -> dict[str, Counter]:
        """The C{kgw_messages_total} child of each channel in C{direction}, for hot paths."""
        return {
            channel: self.messages.labels(channel, direction) for channel in DIRECTIONS[direction]
        }

    def kernelStarted(self, name: str, outcome: str, seconds: float) -> None:
        """Record a kernel start of kernelspec C{name} that ended with C{outcome}."""
        self.kernelStarts.labels(name, outcome).observe(seconds)

    def requestFinished(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record an HTTP request; C{route} is a route template, never a raw path."""
        if method not in METHODS:
            method = "other"
        self.requests.labels(method, route, str(status)).observe(seconds)

    def resource(self) -> IResource:
        """The page serving this registry in Prometheus's text format (made when first asked)."""
        if self._resource is None:
            # Imported here: it imports the reactor, which must be installed first.
            from prometheus_client.twisted import MetricsResource

            self._resource = MetricsPage(MetricsResource(self.registry), self._kernelCollector)
        return self._resource


class MetricsPage(Resource):
    """
    prometheus_client's resource, which scrapes in a worker thread, behind a snapshot of the
    kernels taken in the reactor's thread when the request arrives.
    """

    isLeaf = True

    def __init__(self, inner: IResource, kernels: KernelCollector | None) -> None:
        super().__init__()
        self._inner = inner
        self._kernels = kernels

    def render(self, request: IRequest) -> bytes | int:
        if self._kernels is not None:
            self._kernels.refresh()
        return self._inner.render(request)
