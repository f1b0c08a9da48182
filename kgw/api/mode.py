"""jupyter-websocket mode, built from the start-up settings: the REST API and kernel websockets."""

from __future__ import annotations

from twisted.application.service import IService
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource

from kgw.api.app import GatewayAPI
from kgw.api.backlog import BacklogLimits
from kgw.api.factory import ChannelsFactory
from kgw.api.sessions import SessionRegistry, bookOf
from kgw.config import Config
from kgw.http.edge import Edge
from kgw.http.forward import Forwarder
from kgw.http.routes import RouteTemplates
from kgw.kernels.registry import KernelRegistry
from kgw.metrics import GatewayMetrics


def buildMode(
    config: Config, clock: IReactorTime, kernels: KernelRegistry, metrics: GatewayMetrics
) -> tuple[IResource, list[IService]]:
    """The edge serving jupyter_server's kernel API over C{kernels}; no services of its own."""
    api = GatewayAPI(
        kernels,
        # With a shared kernel store, the sessions of every gateway, kept there.
        SessionRegistry(kernels, bookOf(kernels)),
        ChannelsFactory(
            config.max_message_size,
            (config.iopub_msg_rate_limit, config.iopub_data_rate_limit, config.rate_limit_window),
            clock,
            metrics,
            BacklogLimits(config.client_buffer_max_bytes, config.client_buffer_max_messages),
        ),
        baseURL=config.base_url,
        listKernels=config.list_kernels,
        # With a shared kernel store, requests for another gateway's kernels go to it.
        forwarder=Forwarder(clock, metrics=metrics) if config.kernel_store else None,
    )
    edge = Edge.fromConfig(
        api.app.resource(), config, routes=RouteTemplates(api.app.url_map), metrics=metrics
    )
    return edge, []
