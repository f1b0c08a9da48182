"""The process C{twistd kgw} runs in: its reactor, its log observer and its file limit.

The only module that touches twistd's own machinery (including its private log set-up), so that
the rest of kgw sees an injected reactor and Twisted's public logging API.
"""

from __future__ import annotations

import sys
from typing import Any

from twisted.logger import (
    FileLogObserver,
    FilteringLogObserver,
    ILogObserver,
    LegacyLogObserverWrapper,
    LogLevel,
    LogLevelFilterPredicate,
)
from twisted.python import usage

from kgw.jsonlog import jsonLineObserver


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


_twistdLogging: dict[str, Any] = {}


def useTwistdLogging(options: usage.Options, level: str, format: str) -> str:
    """
    Make twistd log through L{twistdLogObserver}, at C{level} and in C{format}; return the
    name twistd's C{logger} option takes (it resolves it by name, after the options).
    """
    _twistdLogging.update(options=options, level=level, format=format)
    return f"{__name__}.twistdLogObserver"


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
