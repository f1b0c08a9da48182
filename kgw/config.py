"""The option table: every setting of the gateway, in one place.

Each field of L{Config} is one option. Its metadata gives the KG class that owns it (for the
class-qualified spelling C{--KernelGatewayApp.port=8888}), the C{KG_*} environment variable and
the help text; the C{twistd kgw} flag is the field name with dashes (C{--port}). Command-line
parsing, C{--help}, the README's option list and the tests all read this table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


class ConfigError(ValueError):
    """An option was given a value it cannot take."""


def _boolean(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise ConfigError(f"expected True or False, got {text!r}")


def _integer(low: int | None = None, high: int | None = None) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"expected an integer, got {text!r}") from None
        if low is not None and value < low:
            raise ConfigError(f"must be at least {low}, got {value}")
        if high is not None and value > high:
            raise ConfigError(f"must be at most {high}, got {value}")
        return value

    return parse


def _text(text: str) -> str:
    return text


def _baseURL(text: str) -> str:
    """Normalise a base URL to start and end with a slash, as KG does."""
    return "/" + text.strip("/") + "/" if text.strip("/") else "/"


def option(
    default: Any,
    help: str,
    parse: Callable[[str], Any] = _text,
    owner: str = "KernelGatewayApp",
    env: str | None = None,
    kgwOnly: bool = False,
) -> Any:
    """
    Declare one option; C{env} defaults to C{KG_} and the upper-cased field name.

    @param kgwOnly: the option is kgw's own; KG has no such setting.
    """
    return field(
        default=default,
        metadata={"help": help, "parse": parse, "owner": owner, "env": env, "kgw": kgwOnly},
    )


@dataclass(frozen=True)
class Config:
    """The gateway's settings, each resolved from the command line, the environment or a default."""

    ip: str = option("127.0.0.1", "IP address the gateway listens on.")
    port: int = option(8888, "Port the gateway listens on.", _integer(0, 65535))
    base_url: str = option(
        "/", "URL prefix under which every route is served, e.g. /gateway/.", _baseURL
    )
    default_kernel_name: str = option(
        "",
        "Kernelspec started when a request names none (empty: the kernelspec manager's default).",
    )
    list_kernels: bool = option(
        False,
        "Allow GET /api/kernels and GET /api/sessions to list every kernel and session.",
        _boolean,
        owner="JupyterWebsocketPersonality",
    )
    max_kernels: int = option(
        0,
        "Most kernels running at once, starting ones included (0: no limit).",
        _integer(0),
    )
    max_message_size: int = option(
        64 * 1024 * 1024,
        "Largest websocket message accepted from a client, in bytes; a larger one closes the "
        "connection with code 1009.",
        _integer(1),
        kgwOnly=True,
    )
    restart_limit: int = option(
        5,
        "Failed automatic restarts in a row after which a dead kernel is given up.",
        _integer(0),
        kgwOnly=True,
    )

    @classmethod
    def options(cls) -> list[dataclasses.Field[Any]]:
        """The option table, in declaration order."""
        return list(dataclasses.fields(cls))

    @classmethod
    def resolve(cls, given: Mapping[str, str], environ: Mapping[str, str]) -> Config:
        """
        Build the settings from command-line values C{given} (by field name), then environment
        variables, then defaults.

        @raise ConfigError: naming the option and the source of a value that does not parse.
        """
        values = {}
        for f in cls.options():
            envName = envVar(f)
            if given.get(f.name) is not None:
                text, source = given[f.name], "--" + flag(f)
            elif envName in environ:
                text, source = environ[envName], envName
            else:
                continue
            try:
                values[f.name] = f.metadata["parse"](text)
            except ConfigError as e:
                raise ConfigError(f"{source}: {e}") from None
        return cls(**values)


def flag(f: dataclasses.Field[Any]) -> str:
    """The C{twistd kgw} flag of an option, without the leading dashes."""
    return f.name.replace("_", "-")


def envVar(f: dataclasses.Field[Any]) -> str:
    """The environment variable of an option."""
    return f.metadata["env"] or "KG_" + f.name.upper()


def qualifiedNames(f: dataclasses.Field[Any]) -> list[str]:
    """KG's class-qualified spellings of an option."""
    return [f"{f.metadata['owner']}.{f.name}"]


def markdownTable() -> str:
    """The option table as Markdown, as the README shows it (a test keeps the two equal)."""
    rows = [
        "| flag | environment | KG spelling | default | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for f in Config.options():
        default = repr(f.default) if f.default != "" else "''"
        rows.append(
            f"| `--{flag(f)}` | `{envVar(f)}` | `--{qualifiedNames(f)[0]}` | `{default}` "
            f"| {'(kgw) ' if f.metadata['kgw'] else ''}{f.metadata['help']} |"
        )
    return "\n".join(rows)
