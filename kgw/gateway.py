"""Assemble a gateway from its settings: the kernel registry and the HTTP resource tree."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

from twisted.application.service import MultiService
from twisted.internet.interfaces import IReactorTime
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource
from twisted.web.server import Site

from kgw.api.app import GatewayAPI
from kgw.api.edge import Edge
from kgw.api.routes import RouteTemplates
from kgw.backlog import BacklogLimits
from kgw.config import Config, ConfigError
from kgw.kernels.buffering import BufferLimits
from kgw.kernels.environment import kernelEnvironment
from kgw.kernels.registry import Culling, KernelRegistry
from kgw.kernels.seed import loadSeed
from kgw.notebook_http.cells import notebookAPI
from kgw.sessions import SessionRegistry
from kgw.websocket import ChannelsFactory


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


def buildGateway(config: Config, clock: IReactorTime, **registryArguments: Any) -> Gateway:
    """
    The gateway C{config} describes, in its API mode: jupyter-websocket or notebook-http.

    @param registryArguments: passed on to L{KernelRegistry}, for tests.
    @raise kgw.config.ConfigError: if the seed notebook cannot be loaded or served.
    """
    environ = dict(os.environ)
    notebookHTTP = config.api == "notebook-http"
    kernels = KernelRegistry(
        clock,
        defaultKernelName=config.default_kernel_name,
        forceKernelName=config.force_kernel_name,
        maxKernels=config.max_kernels,
        # In notebook-http mode the kernels that answer requests are started by the lender.
        prespawnCount=0 if notebookHTTP else config.prespawn_count,
        restartLimit=config.restart_limit,
        # notebook-http kernels are lent by the notebook's lender, never claimed from a pool.
        warmKernels=0 if notebookHTTP else config.warm_kernels,
        warmKernelNames=config.warm_kernel_names,
        stateDir=config.state_dir or None,
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
        environment=lambda requested: kernelEnvironment(
            requested, environ, config.env_whitelist, config.env_process_whitelist
        ),
        **registryArguments,
    )
    # The registry's metrics are the gateway's: its kernels are counted at each scrape.
    metrics = kernels.metrics
    metrics.watchKernels(kernels)
    kernels.seed = loadSeed(config, kernels.specs)
    if notebookHTTP:
        return _notebookHTTP(config, clock, kernels)
    api = GatewayAPI(
        kernels,
        SessionRegistry(kernels),
        ChannelsFactory(
            config.max_message_size,
            (config.iopub_msg_rate_limit, config.iopub_data_rate_limit, config.rate_limit_window),
            clock,
            metrics,
            BacklogLimits(config.client_buffer_max_bytes, config.client_buffer_max_messages),
        ),
        baseURL=config.base_url,
        listKernels=config.list_kernels,
    )
    edge = Edge.fromConfig(
        api.app.resource(), config, routes=RouteTemplates(api.app.url_map), metrics=metrics
    )
    return Gateway(kernels, edge)


def _notebookHTTP(config: Config, clock: IReactorTime, kernels: KernelRegistry) -> Gateway:
    """A gateway serving the seed notebook's annotated cells; its other cells are the seed."""
    from kgw.notebook_http.pool import KernelLender
    from kgw.notebook_http.routes import NotebookAPIResource

    seed = kernels.seed
    if seed is None:
        raise ConfigError("notebook-http mode needs a notebook: set seed_uri")
    api = notebookAPI(seed.notebook, seed.path, config.comment_prefix)
    # Without history: requests run without it too, and IPython decides whether to show a
    # result by the last cell in it (see L{kgw.notebook_http.cells.endsWithSemicolon}).
    kernels.seed = replace(seed, cells=tuple(api.seedCells), storeHistory=False)
    lender = KernelLender(kernels, config.prespawn_count, clock)
    resource = NotebookAPIResource(
        api,
        lender,
        clock,
        seed.path,
        timeout=config.request_timeout,
        allowDownload=config.allow_notebook_download,
        staticPath=config.static_path,
        hideToken=bool(config.auth_token),
    )
    edge = Edge.fromConfig(
        resource.app.resource(),
        config,
        routeOptions=True,
        routes=resource.routeTemplate,
        metrics=kernels.metrics,
    )
    gateway = Gateway(kernels, edge)
    lender.setServiceParent(gateway)
    return gateway


class _QuietSite(Site):
    """A site that leaves the access log to its L{Edge}, whose line says more (route, time)."""

    def log(self, request: IRequest) -> None:
        pass


def buildSite(resource: IResource) -> Site:
    """
    The HTTP factory serving C{resource} on every listening endpoint; its access log never shows
    a token, and when C{resource} is an L{Edge} with a body size limit, no request body is held
    beyond that limit.
    """
    from kgw.api.access import accessLogFormatter

    if isinstance(resource, Edge) and resource.observesRequests:
        site: Site = _QuietSite(resource)
    else:
        site = Site(resource, logFormatter=accessLogFormatter)
    if isinstance(resource, Edge) and resource.maxBodySize:
        site.getContentFile = resource.contentFile
    return site
