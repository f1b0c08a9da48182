"""Everything the options decide, resolved once, before anything starts.

C{twistd kgw}'s options resolve into one L{Startup}: the settings, checked together, and the
seed notebook read, checked and (in notebook-http mode) parsed into its API. The gateway's
assembly consumes it; nothing reads the notebook a second time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from jupyter_client.kernelspec import KernelSpecManager

from kgw.config import Config, ConfigError
from kgw.http.listen import checkTLS
from kgw.kernels.seed import Seed, loadSeed
from kgw.notebook_http.cells import NotebookAPI, notebookAPI


@dataclass(frozen=True)
class Startup:
    """
    The resolved start-up settings.

    @ivar config: every option's value.
    @ivar seed: the code each new kernel it applies to runs first (in notebook-http mode the
        notebook's cells without annotation, run without history).
    @ivar notebook: in notebook-http mode, the endpoints the seed notebook declares.
    """

    config: Config
    seed: Seed | None = None
    notebook: NotebookAPI | None = None

    @classmethod
    def resolve(cls, config: Config, specs: KernelSpecManager | None = None) -> Startup:
        """
        Check C{config} and read its seed notebook, once.

        @param specs: where the seed notebook's kernelspec is looked up (jupyter_client's usual
            places by default).
        @raise ConfigError: naming what is wrong.
        """
        check(config)
        seed = loadSeed(config, specs)
        if config.api != "notebook-http":
            return cls(config, seed)
        if seed is None:
            raise ConfigError("notebook-http mode needs a notebook: set seed_uri")
        api = notebookAPI(seed.notebook, seed.path, config.comment_prefix)
        # Without history: requests run without it too, and IPython decides whether to show a
        # result by the last cell in it (see L{kgw.notebook_http.cells.endsWithSemicolon}).
        seed = replace(seed, cells=tuple(api.seedCells), storeHistory=False)
        return cls(config, seed, api)


def check(config: Config) -> Config:
    """
    Refuse settings that parse one by one but not together.

    @raise ConfigError: naming the conflict.
    """
    if config.max_kernels and config.prespawn_count > config.max_kernels:
        raise ConfigError(
            f"cannot prespawn {config.prespawn_count} kernels: more than max_kernels "
            f"({config.max_kernels})"
        )
    if config.keyfile and not config.certfile:
        raise ConfigError("keyfile needs certfile")
    if config.client_ca and not config.certfile:
        raise ConfigError("client_ca needs certfile: client certificates need TLS")
    checkTLS(config)
    return config
