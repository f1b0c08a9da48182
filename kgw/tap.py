"""C{twistd kgw}: the command-line options and the service they build."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from twisted.application.service import IService, MultiService
from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LegacyLogObserverWrapper,
    LogLevel,
    LogLevelFilterPredicate,
)
from twisted.python import usage

from kgw.config import Config, ConfigError, envVar, flag, loadConfigFile, qualifiedNames
from kgw.jsonlog import jsonLineObserver
from kgw.listen import checkTLS
from kgw.notebook_http.cells import notebookAPI

ALIASES = {
    "kernel_gateway.jupyter_websocket": "jupyter-websocket",
    "kernel_gateway.notebook_http": "notebook-http",
}


def installReactor() -> None:
    """
    Install Twisted's asyncio reactor, which jupyter_client needs, unless one is installed.

    @raise usage.UsageError: if another reactor was chosen (C{twistd --reactor=...}).
    """
    if "twisted.internet.reactor" not in sys.modules:
        import asyncio

        from twisted.internet import asyncioreactor

        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        asyncioreactor.install(loop)
        return
    from twisted.internet import reactor
    from twisted.internet.asyncioreactor import AsyncioSelectorReactor

    if not isinstance(reactor, AsyncioSelectorReactor):
        raise usage.UsageError(
            f"kgw needs the asyncio reactor, not {type(reactor).__name__}: "
            "run twistd without --reactor, or with --reactor=asyncio"
        )


def _qualifiedSpellings() -> dict[str, str]:
    spellings = {}
    for f in Config.options():
        for name in qualifiedNames(f):
            spellings[name.lower()] = flag(f)
    return spellings


class Options(usage.Options):
    """
    Every option of L{Config} as a flag (C{--port=8888}); KG's class-qualified spellings
    (C{--KernelGatewayApp.port=8888}) are accepted too.
    """

    synopsis = "[options]"
    longdesc = (
        "Serve Jupyter kernels over HTTP and websockets. Each option can also be set with its "
        "KG_* environment variable or in a --config file; the command line wins over the "
        "environment, which wins over the file."
    )
    optParameters = [
        [
            flag(f),
            None,
            None,
            f"{f.metadata['help']} [{envVar(f)}; default: {f.default!r}]",
        ]
        for f in Config.options()
        if f.name != "listen"
    ] + [["config", None, None, "A TOML or JSON file of options (KG's JSON config files work)."]]

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        super().__init__()
        self.environ = os.environ if environ is None else environ
        self.config: Config | None = None
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """
        A Twisted endpoint description to listen on (repeatable), instead of ip and port:
        tcp:8888:interface=127.0.0.1, ssl:8443:privateKey=key.pem:certKey=cert.pem,
        unix:/run/kgw.sock, systemd:domain=INET:index=0. [KG_LISTEN, space-separated]
        """
        self["listen"].append(description)

    def opt_help_all(self) -> None:
        """Display every option with its environment variable and default, as --help does."""
        self.opt_help()

    def parseOptions(self, options: Sequence[str] | None = None) -> None:
        if options is None:
            options = sys.argv[1:]
        super().parseOptions(self._translate(list(options)))

    def _translate(self, args: list[str]) -> list[str]:
        """Rewrite C{--Class.option=value} into this command's own C{--option=value}."""
        spellings = _qualifiedSpellings()
        translated = []
        for arg in args:
            if arg.startswith("--") and "." in arg.split("=", 1)[0]:
                name, sep, value = arg[2:].partition("=")
                if name.lower() not in spellings:
                    raise usage.UsageError(f"Unknown option: --{name}")
                arg = f"--{spellings[name.lower()]}{sep}{value}"
            translated.append(arg)
        return translated

    def postOptions(self) -> None:
        given = {f.name: self.get(flag(f)) for f in Config.options()}
        given["listen"] = self["listen"] or None
        try:
            fromFile = loadConfigFile(self["config"]) if self["config"] else {}
            self.config = check(Config.resolve(given, self.environ, fromFile))
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        # Only under twistd: unit tests parse options without choosing a reactor.
        if self.parent is not None:
            installReactor()
            if self.parent.get("logger") is None:
                # twistd resolves its logger option by name, after this method.
                _twistdLogging.update(
                    options=self.parent,
                    level=self.config.log_level,
                    format=self.config.log_format,
                )
                self.parent["logger"] = f"{__name__}.twistdLogObserver"


_twistdLogging: dict[str, Any] = {}


def twistdLogObserver() -> ILogObserver:
    """
    The observer twistd logs to: its own (stdout, C{--logfile} or C{--syslog}, as its command
    line says) behind a filter on C{log_level}. Named by twistd's C{logger} option.

    With C{log_format} json, each event goes to the same stdout or log file as one line of JSON
    (syslog keeps its own lines).
    """
    from twisted.scripts._twistd_unix import UnixAppLogger

    inner = UnixAppLogger(_twistdLogging["options"])._getLogObserver()
    if _twistdLogging.get("format") == "json" and isinstance(inner, FileLogObserver):
        # The file twistd chose, rotated on SIGUSR1 as twistd set up; only the lines change.
        inner = jsonLineObserver(inner._outFile)
    if not ILogObserver.providedBy(inner):
        inner = LegacyLogObserverWrapper(inner)
    level = LogLevel.levelWithName(_twistdLogging["level"])
    return FilteringLogObserver(inner, [LogLevelFilterPredicate(defaultLogLevel=level)])


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
    # A bad seed notebook is a usage error, found before anything starts.
    from kgw.kernels.seed import loadSeed

    seed = loadSeed(config)
    if config.api == "notebook-http":
        if seed is None:
            raise ConfigError("notebook-http mode needs a notebook: set seed_uri")
        notebookAPI(seed.notebook, seed.path, config.comment_prefix)
    return config


def raiseFileLimit() -> None:
    """
    Allow as many open files as the system lets the gateway have: every websocket costs a TCP
    socket and three ZeroMQ sockets, and the usual soft limit of 1024 is soon reached.
    """
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def makeService(options: Options) -> IService:
    """Wire the kernel registry first and the listeners after, so the listeners stop first."""
    from twisted.internet import reactor

    from kgw.gateway import buildGateway, buildSite
    from kgw.listen import listeningServices
    from kgw.memory import MemoryTrimmer, mallocTrim

    config = options.config
    assert config is not None
    raiseFileLimit()
    top = MultiService()
    trim = mallocTrim()
    if trim is not None:
        MemoryTrimmer(reactor, trim).setServiceParent(top)
    gateway = buildGateway(config, reactor)
    gateway.setServiceParent(top)
    for listener in listeningServices(config, buildSite(gateway.resource), reactor):
        listener.setServiceParent(top)
    return top
