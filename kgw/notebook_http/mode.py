"""notebook-http mode, built from the start-up settings: a notebook's annotated cells as an API."""

from __future__ import annotations

from twisted.application.service import IService
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource

from kgw.http.edge import Edge
from kgw.kernels.registry import KernelRegistry
from kgw.metrics import GatewayMetrics
from kgw.notebook_http.lender import KernelLender
from kgw.notebook_http.routes import NotebookAPIResource
from kgw.startup import Startup


def buildMode(
    startup: Startup, clock: IReactorTime, kernels: KernelRegistry, metrics: GatewayMetrics
) -> tuple[IResource, list[IService]]:
    """
    The edge serving the seed notebook's endpoints with kernels of C{kernels}, and the lender
    that keeps them (a service: it starts its kernels with the gateway).
    """
    config = startup.config
    api, seed = startup.notebook, startup.seed
    assert api is not None and seed is not None, "notebook-http mode needs a notebook"
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
        metrics=metrics,
    )
    return edge, [lender]
