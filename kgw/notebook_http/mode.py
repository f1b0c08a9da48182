"""notebook-http mode, built from the start-up settings: a notebook's annotated cells as an API."""

from __future__ import annotations

from twisted.application.service import IService
from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource

from kgw.config import Config
from kgw.http.edge import Edge
from kgw.kernels.registry import KernelRegistry
from kgw.metrics import GatewayMetrics
from kgw.notebook_http.cells import NotebookAPI
from kgw.notebook_http.lender import KernelLender
from kgw.notebook_http.routes import NotebookAPIResource


def buildMode(
    config: Config,
    api: NotebookAPI,
    notebookPath: str,
    clock: IReactorTime,
    kernels: KernelRegistry,
    metrics: GatewayMetrics,
) -> tuple[IResource, list[IService]]:
    """
    The edge serving the endpoints C{api} of the notebook at C{notebookPath} with kernels of
    C{kernels}, and the lender that keeps them (a service: it starts them with the gateway).
    """
    lender = KernelLender(kernels, config.prespawn_count, clock)
    resource = NotebookAPIResource(
        api,
        lender,
        clock,
        notebookPath,
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
