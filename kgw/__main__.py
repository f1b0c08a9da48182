"""
C{kgw} and C{python -m kgw}: a shortcut for C{twistd --nodaemon --pidfile= kgw}.

C{kgw --port=9000} runs the gateway in the foreground, logging to standard output and writing no
pid file, exactly as C{twistd --nodaemon --pidfile= kgw --port=9000} does; every argument is an
option of C{twistd kgw}. Use C{twistd} itself for its own options (C{--logfile}, C{--umask},
daemonising).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

TWISTD_OPTIONS = ("--nodaemon", "--pidfile=")


def twistdArguments(arguments: Sequence[str]) -> list[str]:
    """The command line of C{twistd} that runs C{twistd kgw ARGUMENTS} in the foreground."""
    return [*TWISTD_OPTIONS, "kgw", *arguments]


def main(arguments: Sequence[str] | None = None) -> None:
    """
    Run C{twistd kgw} in this process with C{arguments} (by default, this command's own) and
    exit with its status.
    """
    from twisted.scripts.twistd import run

    from kgw import tap

    # A usage error names this command, and its --help.
    tap.COMMAND = "kgw"
    if arguments is None:
        arguments = sys.argv[1:]
    # twistd reads its command line from sys.argv; its usage message names "twistd".
    sys.argv = ["twistd", *twistdArguments(arguments)]
    run()


if __name__ == "__main__":
    main()
