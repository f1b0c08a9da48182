"""Assemble a gateway: the kernel service, one API mode's edge, and the site serving it."""

from __future__ import annotations

import os
import socket
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.interfaces import IReactorTime
from twisted.web.http import Request
from twisted.web.resource import IResource
from twisted.web.server import Site

from kgw.api.mode import buildMode as buildWebsocketAPI
from kgw.config import Config
from kgw.http.access import accessLogFormatter
from kgw.http.channel import strictChannelFactory
from kgw.http.edge import Edge
from kgw.kernels.buffering import BufferLimits
from kgw.kernels.culling import Culling
from kgw.kernels.environment import kernelEnvironment
from kgw.kernels.policy import KernelPolicy
from kgw.kernels.registry import KernelRegistry
from kgw.kernels.store import KernelStore
from kgw.kernels.store.directory import StateDirectory
from kgw.kernels.store.etcd import EtcdStore
from kgw.metrics import GatewayMetrics
from kgw.notebook_http.mode import buildMode as buildNotebookHTTP
from kgw.startup import Startup


class Gateway(MultiService):
    """
    The services of one gateway (the kernel registry first, so that it stops last) and the
    resource that serves its API.
    """

    def __init__(self, kernels: KernelRegistry, resource: IResource) -> None:
        super().__init__()
        self.kernels = kernels
        self.metrics = kernels.metrics
        self.resource = resource
        kernels.setServiceParent(self)


def buildGateway(
    settings: Startup | Config, clock: IReactorTime, **registryArguments: Any
) -> Gateway:
    """
    The gateway the start-up settings describe: the kernel service, and the edge of its API
    mode (jupyter-websocket or notebook-http), which builds itself from the settings.

    @param settings: the resolved start-up settings (plain settings are resolved here, for tests).
    @param registryArguments: settings of L{KernelPolicy} and arguments of L{KernelRegistry},
        for tests.
    @raise kgw.config.ConfigError: if plain settings do not resolve.
    """
    if isinstance(settings, Startup):
        startup = settings
    else:
        startup = Startup.resolve(settings, registryArguments.get("specs"))
    config = startup.config
    environ = dict(os.environ)
    notebookHTTP = config.api == "notebook-http"
    policy = KernelPolicy(
        defaultKernelName=config.default_kernel_name,
        forceKernelName=config.force_kernel_name,
        maxKernels=config.max_kernels,
        # In notebook-http mode the kernels that answer requests are started by the lender.
        prespawnCount=0 if notebookHTTP else config.prespawn_count,
        restartLimit=config.restart_limit,
        # notebook-http kernels are lent by the notebook's lender, never claimed from a pool.
        warmKernels=0 if notebookHTTP else config.warm_kernels,
        warmKernelNames=config.warm_kernel_names,
        culling=Culling(
            config.cull_idle_timeout,
            config.cull_interval,
            config.cull_connected,
            config.cull_busy,
        ),
        bufferLimits=BufferLimits(
            config.buffer_offline_messages,
            config.buffer_max_messages,
            config.buffer_max_bytes,
            config.buffer_timeout,
            config.buffer_max_sessions,
        ),
    )
    policy, registryArguments = policy.apply(registryArguments)
    # The gateway's one metrics object: the registry, the edge and the websockets record in it,
    # and the registry's kernels are counted at each scrape.
    metrics = GatewayMetrics()
    store = kernelStore(config, clock)
    if isinstance(store, EtcdStore):
        metrics.identify(store.gatewayId, store.address)
    kernels = KernelRegistry(
        clock,
        policy,
        seed=startup.seed,
        store=store,
        environment=lambda requested: kernelEnvironment(
            requested, environ, config.env_whitelist, config.env_process_whitelist
        ),
        metrics=metrics,
        **registryArguments,
    )
    metrics.watchKernels(kernels)
    if startup.notebook is not None and startup.seed is not None:
        resource, services = buildNotebookHTTP(
            config, startup.notebook, startup.seed.path, clock, kernels, metrics
        )
    else:
        resource, services = buildWebsocketAPI(config, clock, kernels, metrics)
    gateway = Gateway(kernels, resource)
    for service in services:
        service.setServiceParent(gateway)
    return gateway


def advertisedAddress(config: Config) -> str | None:
    """
    Where the other gateways sharing the kernel store reach this one: the advertised URL if
    set, else its ip (or, listening on every address, its host name) and port. None when the
    port is chosen at start or the listeners are --listen endpoints, unless a URL is
    advertised: requests are then never forwarded to this gateway.
    """
    if config.advertise_url:
        return config.advertise_url
    if config.listen or not config.port:
        return None
    host = config.ip
    if host in ("", "0.0.0.0", "::"):
        host = socket.gethostname()
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if config.certfile else 'http'}://{host}:{config.port}"


def kernelStore(config: Config, reactor: Any) -> KernelStore | None:
    """The kernel store the settings name: etcd, else the state directory, else none."""
    if config.kernel_store:
        gatewayId = config.gateway_id or f"{socket.gethostname()}:{config.port}"
        return EtcdStore(
            reactor,
            config.kernel_store,
            gatewayId,
            config.lease_ttl,
            address=advertisedAddress(config),
        )
    if config.state_dir:
        return StateDirectory(config.state_dir)
    return None


class _QuietSite(Site):
    """A site that leaves the access log to its L{Edge}, whose line says more (route, time)."""

    def log(self, request: Request) -> None:
        pass


def buildSite(resource: IResource) -> Site:
    """
    The HTTP factory serving C{resource} on every listening endpoint: its access log never shows
    a token, its connections answer in JSON what they cannot parse
    (L{kgw.http.channel.StrictChannel}), and when C{resource} is an L{Edge} with a body size
    limit, no request body is held beyond that limit, nor waited for when its declared length
    is over it.
    """
    edge = resource if isinstance(resource, Edge) else None
    if edge is not None and edge.observesRequests:
        site: Site = _QuietSite(resource)
    else:
        site = Site(resource, logFormatter=accessLogFormatter)
    maxBodySize = edge.maxBodySize if edge is not None else 0
    site.protocol = strictChannelFactory(maxBodySize)  # type: ignore[assignment]
    if edge is not None and maxBodySize:
        # An optional hook of Twisted's Request.gotLength, which Site does not declare.
        site.getContentFile = edge.contentFile  # type: ignore[attr-defined]
    return site
