"""C{twistd kgw}: the command-line options and the service they build."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence

from twisted.application.service import IService, MultiService
from twisted.python import usage

from kgw.config import Config, ConfigError, envVar, flag, loadConfigFile, qualifiedNames
from kgw.daemon import installReactor, raiseFileLimit, useTwistdLogging
from kgw.startup import Startup

COMMAND = "twistd kgw"
"""The command a usage error names; C{kgw}'s main sets it to C{kgw}."""


def usageErrorText(error: usage.UsageError, command: str) -> str:
    """What a usage error prints: the error, and where to find the options."""
    return f"{command}: {error}\nRun '{command} --help' for the options."


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
        self.startup: Startup | None = None
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
        try:
            super().parseOptions(self._translate(list(options)))
        except usage.UsageError as e:
            if self.parent is None:
                raise
            # twistd would print all 160 lines of --help before the one line that matters.
            raise SystemExit(usageErrorText(e, COMMAND)) from None

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
            self.startup = Startup.resolve(Config.resolve(given, self.environ, fromFile))
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        self.config = self.startup.config
        # Only under twistd: unit tests parse options without choosing a reactor.
        if self.parent is not None:
            installReactor()
            if self.parent.get("logger") is None:
                # twistd resolves its logger option by name, after this method.
                self.parent["logger"] = useTwistdLogging(
                    self.parent, self.config.log_level, self.config.log_format
                )


def makeService(options: Options) -> IService:
    """Wire the kernel registry first and the listeners after, so the listeners stop first."""
    from twisted.internet import reactor

    from kgw.gateway import buildGateway, buildSite
    from kgw.http.listen import listeningServices
    from kgw.memory import MemoryTrimmer, keepLargeBlocks, mallocTrim

    startup = options.startup
    assert startup is not None
    raiseFileLimit()
    top = MultiService()
    keepLargeBlocks()
    trim = mallocTrim()
    if trim is not None:
        MemoryTrimmer(reactor, trim).setServiceParent(top)
    gateway = buildGateway(startup, reactor)
    gateway.setServiceParent(top)
    for listener in listeningServices(startup.config, buildSite(gateway.resource), reactor):
        listener.setServiceParent(top)
    return top
