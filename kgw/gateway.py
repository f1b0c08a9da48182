"""Assemble a gateway from its settings: the kernel registry and the HTTP resource tree."""

from __future__ import annotations

import os
from typing import Any

from twisted.internet.interfaces import IReactorTime
from twisted.web.resource import IResource
from twisted.web.server import Site

from kgw.api.app import GatewayAPI
from kgw.api.edge import Edge
from kgw.config import Config
from kgw.kernels.environment import kernelEnvironment
from kgw.kernels.registry import KernelRegistry
from kgw.sessions import SessionRegistry
from kgw.websocket import ChannelsFactory


def buildGateway(
    config: Config, clock: IReactorTime, **registryArguments: Any
) -> tuple[KernelRegistry, IResource]:
    """
    The kernel registry (a service to start) and the root resource serving the API.

    @param registryArguments: passed on to L{KernelRegistry}, for tests.
    @raise kgw.config.ConfigError: if the seed notebook cannot be loaded.
    """
    from kgw.kernels.seed import loadSeed

    environ = dict(os.environ)
    kernels = KernelRegistry(
        clock,
        defaultKernelName=config.default_kernel_name,
        forceKernelName=config.force_kernel_name,
        maxKernels=config.max_kernels,
        prespawnCount=config.prespawn_count,
        restartLimit=config.restart_limit,
        environment=lambda requested: kernelEnvironment(
            requested, environ, config.env_whitelist, config.env_process_whitelist
        ),
        **registryArguments,
    )
    kernels.seed = loadSeed(config, kernels.specs)
    api = GatewayAPI(
        kernels,
        SessionRegistry(kernels),
        ChannelsFactory(config.max_message_size),
        baseURL=config.base_url,
        listKernels=config.list_kernels,
    )
    return kernels, Edge.fromConfig(api.app.resource(), config)


def buildSite(resource: IResource) -> Site:
    """
    The HTTP factory serving C{resource} on every listening endpoint; its access log never shows
    a token.
    """
    from kgw.api.access import accessLogFormatter

    return Site(resource, logFormatter=accessLogFormatter)
