"""The option table: every setting of the gateway, in one place.

Each field of L{Config} is one option. Its metadata gives the KG class that owns it (for the
class-qualified spelling C{--KernelGatewayApp.port=8888}), the C{KG_*} environment variable and
the help text; the C{twistd kgw} flag is the field name with dashes (C{--port}). Command-line
parsing, C{--help}, the README's option list and the tests all read this table.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit

API_NAMES = {
    "jupyter-websocket": "jupyter-websocket",
    "notebook-http": "notebook-http",
    # KG's module names for its two personalities.
    "kernel_gateway.jupyter_websocket": "jupyter-websocket",
    "kernel_gateway.notebook_http": "notebook-http",
}
LOG_LEVELS = {
    "DEBUG": "debug",
    "INFO": "info",
    "WARN": "warn",
    "WARNING": "warn",
    "ERROR": "error",
    "CRITICAL": "critical",
    "10": "debug",
    "20": "info",
    "30": "warn",
    "40": "error",
    "50": "critical",
}

LOG_FORMATS = ("text", "json")


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


def _names(text: str) -> tuple[str, ...]:
    """
    A list of names: comma-separated as KG reads its C{KG_*} variables, or a Python list literal
    as traitlets takes it on the command line (C{['A', 'B']}).
    """
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            value = ast.literal_eval(stripped)
        except (ValueError, SyntaxError):
            raise ConfigError(f"expected a list, got {text!r}") from None
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"expected a list of strings, got {text!r}")
        return tuple(value)
    return tuple(name.strip() for name in stripped.split(",") if name.strip())


def _baseURL(text: str) -> str:
    """Normalise a base URL to start and end with a slash, as KG does."""
    return "/" + text.strip("/") + "/" if text.strip("/") else "/"


def _api(text: str) -> str:
    try:
        return API_NAMES[text.strip()]
    except KeyError:
        raise ConfigError(f"unknown API {text!r}: use jupyter-websocket or notebook-http") from None


def _logLevel(text: str) -> str:
    try:
        return LOG_LEVELS[text.strip().upper()]
    except KeyError:
        raise ConfigError(
            f"unknown log level {text!r}: use DEBUG, INFO, WARN, ERROR or CRITICAL"
        ) from None


def _logFormat(text: str) -> str:
    lowered = text.strip().lower()
    if lowered not in LOG_FORMATS:
        raise ConfigError(f"unknown log format {text!r}: use text or json")
    return lowered


def _prefixes(text: str) -> tuple[tuple[str, str], ...]:
    try:
        value = json.loads(text)
    except ValueError:
        raise ConfigError(f"expected a JSON object of language to prefix, got {text!r}") from None
    if not isinstance(value, dict) or not all(
        isinstance(k, str) and isinstance(v, str) and v for k, v in value.items()
    ):
        raise ConfigError(f"expected a JSON object of language to prefix, got {text!r}")
    return tuple((k.lower(), v) for k, v in value.items())


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"expected a number of seconds, got {text!r}") from None
    if not value >= 0:
        raise ConfigError(f"must be at least 0, got {text!r}")
    return value


def _positive(text: str) -> float:
    value = _seconds(text)
    if value <= 0:
        raise ConfigError(f"must be more than 0, got {text!r}")
    return value


def _portOf(parts: SplitResult) -> int | None:
    """The port a URL names, if any and valid."""
    try:
        return parts.port
    except ValueError:
        return None


def _kernelStore(text: str) -> str:
    """C{etcd://HOST:PORT[/prefix]}, or empty for none."""
    if not text:
        return text
    parts = urlsplit(text)
    if parts.scheme != "etcd" or not parts.hostname or _portOf(parts) is None or parts.query:
        raise ConfigError(f"expected etcd://HOST:PORT[/prefix], got {text!r}")
    return text


def _advertiseURL(text: str) -> str:
    """C{http(s)://HOST:PORT}, a trailing slash dropped; or empty for the default."""
    if not text:
        return text
    parts = urlsplit(text)
    if (
        parts.scheme not in ("http", "https")
        or not parts.hostname
        or _portOf(parts) is None
        or parts.username is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
    ):
        raise ConfigError(f"expected http://HOST:PORT or https://HOST:PORT, got {text!r}")
    return text.rstrip("/")


def _readableFile(text: str) -> str:
    """A path to a file the gateway can read: a certificate, a key, a CA bundle."""
    if text and not os.access(text, os.R_OK):
        raise ConfigError(f"cannot read {text!r}")
    return text


def option(
    default: Any,
    help: str,
    parse: Callable[[str], Any] = _text,
    owner: str = "KernelGatewayApp",
    kgwOnly: bool = False,
) -> Any:
    """
    Declare one option; its environment variable is C{KG_} and the upper-cased field name.

    @param kgwOnly: the option is kgw's own; KG has no such setting.
    """
    return field(
        default=default,
        metadata={"help": help, "parse": parse, "owner": owner, "kgw": kgwOnly},
    )


@dataclass(frozen=True)
class Config:
    """The gateway's settings, each resolved from the command line, the environment or a default."""

    # Where the gateway listens.
    ip: str = option("127.0.0.1", "IP address the gateway listens on.")
    port: int = option(8888, "Port the gateway listens on.", _integer(0, 65535))
    port_retries: int = option(
        50,
        "How many other ports to try when the port is taken (the first ones in sequence).",
        _integer(0),
    )
    listen: tuple[str, ...] = option(
        (),
        "Twisted endpoint descriptions to listen on instead of ip and port, e.g. tcp:8888, "
        "ssl:8443:privateKey=key.pem, unix:/run/kgw.sock, systemd:domain=INET:index=0; "
        "repeatable on the command line, space-separated in the variable.",
        lambda text: tuple(text.split()),
        kgwOnly=True,
    )
    certfile: str = option("", "TLS certificate file: serve HTTPS and WSS.", _readableFile)
    keyfile: str = option(
        "", "TLS private key file (default: the certificate file).", _readableFile
    )
    client_ca: str = option(
        "", "CA certificates file: require client certificates signed by them.", _readableFile
    )
    base_url: str = option(
        "/", "URL prefix under which every route is served, e.g. /gateway/.", _baseURL
    )
    api: str = option(
        "jupyter-websocket",
        "The API to serve: jupyter-websocket, or notebook-http (KG's module names are accepted).",
        _api,
    )
    # Access control.
    auth_token: str = option(
        "", "Token every request must carry (Authorization: token T, or ?token=T)."
    )
    allow_credentials: str = option("", "Access-Control-Allow-Credentials header value.")
    allow_headers: str = option("", "Access-Control-Allow-Headers header value.")
    allow_methods: str = option("", "Access-Control-Allow-Methods header value.")
    allow_origin: str = option(
        "",
        "Access-Control-Allow-Origin header value; requests from other origins than the "
        "gateway's own and this one are refused (* allows any).",
    )
    expose_headers: str = option("", "Access-Control-Expose-Headers header value.")
    max_age: str = option("", "Access-Control-Max-Age header value.")
    allow_remote_access: bool = option(
        False,
        "Serve requests whose Host is not a local name when listening on a loopback address "
        "without a token (by default they get 403: DNS rebinding), as jupyter_server's option.",
        _boolean,
        kgwOnly=True,
    )
    local_hostnames: tuple[str, ...] = option(
        ("localhost",),
        "Host names taken as local, besides loopback addresses, when allow_remote_access is "
        "False (comma-separated), as jupyter_server's option.",
        _names,
        kgwOnly=True,
    )
    # Kernels.
    max_kernels: int = option(
        0, "Most kernels running at once, starting ones included (0: no limit).", _integer(0)
    )
    prespawn_count: int = option(0, "Kernels to start when the gateway starts.", _integer(0))
    default_kernel_name: str = option(
        "",
        "Kernelspec started when a request names none (empty: the kernelspec manager's default).",
    )
    force_kernel_name: str = option(
        "", "Kernelspec every kernel is started with, whatever the request names."
    )
    seed_uri: str = option(
        "",
        "Notebook (path or file: URL) whose code cells run on every new kernel of its language.",
    )
    list_kernels: bool = option(
        False,
        "Allow GET /api/kernels and GET /api/sessions to list every kernel and session.",
        _boolean,
        owner="JupyterWebsocketPersonality",
    )
    env_whitelist: tuple[str, ...] = option(
        (),
        "Variables a client may set in a kernel's env, besides KERNEL_* (comma-separated).",
        _names,
        owner="JupyterWebsocketPersonality",
    )
    env_process_whitelist: tuple[str, ...] = option(
        (),
        "Gateway variables a kernel started with an env request inherits, besides PATH.",
        _names,
    )
    # notebook-http mode.
    allow_notebook_download: bool = option(
        False,
        "notebook-http: serve the notebook at GET /_api/source.",
        _boolean,
        owner="NotebookHTTPPersonality",
    )
    static_path: str = option(
        "",
        "notebook-http: serve the files of this directory under /public/.",
        owner="NotebookHTTPPersonality",
    )
    comment_prefix: tuple[tuple[str, str], ...] = option(
        (),
        "notebook-http: annotation comment prefix by language, as JSON, added to the built-in "
        'map (# by default, // for scala, java, javascript, go, -- for sql...), e.g. {"r": "#"}.',
        _prefixes,
        owner="NotebookHTTPPersonality",
    )
    request_timeout: float = option(
        0.0,
        "notebook-http: seconds a request may run before it gets 504 and its kernel is "
        "interrupted (0: no limit, as in KG).",
        _seconds,
        owner="NotebookHTTPPersonality",
        kgwOnly=True,
    )
    warm_kernels: int = option(
        0,
        "Started, seeded kernels kept ready for each warm kernelspec, so that a start request "
        "is answered at once (0: none).",
        _integer(0),
        kgwOnly=True,
    )
    warm_kernel_names: tuple[str, ...] = option(
        (),
        "Kernelspecs the warm pool holds kernels of (comma-separated; default: the default "
        "kernelspec).",
        _names,
        kgwOnly=True,
    )
    buffer_offline_messages: bool = option(
        True,
        "Keep what a kernel sends for a session whose last websocket closed, and replay it when "
        "a websocket with the same session_id reconnects.",
        _boolean,
        owner="MappingKernelManager",
    )
    buffer_max_messages: int = option(
        10_000,
        "Most messages kept for a disconnected session; past it the oldest are dropped, iopub "
        "messages before replies.",
        _integer(1),
        kgwOnly=True,
    )
    buffer_max_bytes: int = option(
        16 * 1024 * 1024,
        "Most bytes kept for a disconnected session; past it the oldest messages are dropped, "
        "iopub messages before replies.",
        _integer(1),
        kgwOnly=True,
    )
    buffer_max_sessions: int = option(
        32,
        "Most disconnected sessions buffered per kernel; past it the oldest one's buffer goes.",
        _integer(1),
        kgwOnly=True,
    )
    buffer_timeout: float = option(
        600.0,
        "Seconds a disconnected session's buffer and sockets are kept for it to reconnect.",
        _seconds,
        kgwOnly=True,
    )
    client_buffer_max_bytes: int = option(
        8 * 1024 * 1024,
        "Most bytes of messages kept waiting for one websocket client that reads slower than its "
        "kernel writes; past it iopub output is dropped (the client is told how much) and "
        "replies are kept.",
        _integer(1),
        kgwOnly=True,
    )
    client_buffer_max_messages: int = option(
        10_000,
        "Most messages kept waiting for one websocket client that reads slower than its kernel "
        "writes; past it iopub output is dropped (the client is told how much).",
        _integer(1),
        kgwOnly=True,
    )
    iopub_msg_rate_limit: float = option(
        0.0,
        "Most output messages per second sent to one client; past it output is dropped and the "
        "client told (0: no limit; jupyter_server's default is 1000).",
        _seconds,
        owner="ServerApp",
    )
    iopub_data_rate_limit: float = option(
        0.0,
        "Most bytes of stream output per second sent to one client (0: no limit; "
        "jupyter_server's default is 1000000).",
        _seconds,
        owner="ServerApp",
    )
    rate_limit_window: float = option(
        3.0, "Seconds over which iopub rates are measured.", _positive, owner="ServerApp"
    )
    cull_idle_timeout: float = option(
        0.0,
        "Shut down kernels idle for this many seconds; their clients get a dead status (0: never).",
        _seconds,
        owner="MappingKernelManager",
    )
    cull_interval: float = option(
        300.0,
        "Seconds between looks for idle kernels to cull.",
        _positive,
        owner="MappingKernelManager",
    )
    cull_connected: bool = option(
        False,
        "Cull idle kernels that have websockets open too.",
        _boolean,
        owner="MappingKernelManager",
    )
    cull_busy: bool = option(
        False,
        "Cull kernels that are busy, if idle by their last activity.",
        _boolean,
        owner="MappingKernelManager",
    )
    state_dir: str = option(
        "",
        "Directory where kernels are recorded, so that a gateway restarted after a crash adopts "
        "the ones still running, under the same ids (empty: none).",
        kgwOnly=True,
    )
    kernel_store: str = option(
        "",
        "Kernel store shared by several gateways: etcd://HOST:PORT[/prefix] (prefix /kgw by "
        "default). Each kernel is recorded there and owned by one gateway at a time, under that "
        "gateway's lease; GET /api/kernels lists the kernels of every gateway (empty: none; "
        "the state directory, if set).",
        _kernelStore,
        kgwOnly=True,
    )
    gateway_id: str = option(
        "",
        "This gateway's name in the kernel store, unique among the gateways sharing it "
        "(default: host name and port).",
        kgwOnly=True,
    )
    advertise_url: str = option(
        "",
        "URL the other gateways sharing the kernel store use to reach this one, to forward "
        "requests for its kernels: http(s)://HOST:PORT (default: its ip, or host name when it "
        "listens on every address, and port; none with --listen endpoints or port 0).",
        _advertiseURL,
        kgwOnly=True,
    )
    lease_ttl: float = option(
        10.0,
        "Seconds after which the kernels of a gateway that stopped renewing its lease in the "
        "kernel store may be taken over by another gateway.",
        _positive,
        kgwOnly=True,
    )
    max_message_size: int = option(
        64 * 1024 * 1024,
        "Largest websocket message accepted from a client, in bytes; a larger one closes the "
        "connection with code 1009.",
        _integer(1),
        kgwOnly=True,
    )
    max_body_size: int = option(
        16 * 1024 * 1024,
        "Largest request body accepted, in bytes; a larger one is answered 413 and is never "
        "held in full (0: no limit).",
        _integer(0),
        kgwOnly=True,
    )
    restart_limit: int = option(
        5,
        "Failed automatic restarts in a row after which a dead kernel is given up.",
        _integer(0),
        kgwOnly=True,
    )
    log_level: str = option(
        "info",
        "Least severe log events shown: DEBUG, INFO, WARN, ERROR or CRITICAL.",
        _logLevel,
        owner="Application",
    )
    log_format: str = option(
        "text",
        "How log events are written: text (twistd's lines), or json (one JSON object per line).",
        _logFormat,
        kgwOnly=True,
    )
    metrics_open: bool = option(
        False,
        "Serve GET /metrics (Prometheus) without the token; every other route still needs it.",
        _boolean,
        kgwOnly=True,
    )

    @classmethod
    def options(cls) -> list[dataclasses.Field[Any]]:
        """The option table, in declaration order."""
        return list(dataclasses.fields(cls))

    @classmethod
    def resolve(
        cls,
        given: Mapping[str, Any],
        environ: Mapping[str, str],
        fromFile: Mapping[str, Any] | None = None,
    ) -> Config:
        """
        Build the settings from command-line values C{given} (by field name), then environment
        variables, then a configuration file's values, then defaults.

        @raise ConfigError: naming the option and the source of a value that does not parse.
        """
        fromFile = fromFile or {}
        values: dict[str, Any] = {}
        for f in cls.options():
            envName = envVar(f)
            if given.get(f.name) is not None:
                text, source = given[f.name], "--" + flag(f)
            elif envName in environ:
                text, source = environ[envName], envName
            elif f.name in fromFile:
                text, source = _fileValue(fromFile[f.name]), f"{f.name} in the config file"
            else:
                continue
            try:
                values[f.name] = (
                    tuple(text) if isinstance(text, list) else f.metadata["parse"](text)
                )
            except ConfigError as e:
                raise ConfigError(f"{source}: {e}") from None
        return cls(**values)


def _fileValue(value: Any) -> Any:
    """A configuration file's value as the text an option parses (lists stay lists)."""
    if isinstance(value, list):
        if not all(isinstance(v, str) for v in value):
            raise ConfigError(f"expected a list of strings, got {value!r}")
        return value
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (int, float, str)):
        return str(value)
    raise ConfigError(f"unsupported value {value!r}")


def loadConfigFile(path: str) -> dict[str, Any]:
    """
    Read a TOML or JSON configuration file into option values by name.

    Keys are option names, at the top level or under KG's class names
    (C{{"KernelGatewayApp": {"port": 9000}}}), so a KG JSON config file works as it is.

    @raise ConfigError: if the file cannot be read or parsed, or names an unknown option.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path!r}: {e.strerror}") from None
    try:
        if path.endswith(".toml"):
            if sys.version_info >= (3, 11):
                import tomllib
            else:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot parse config file {path!r}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path!r} must hold an object of options")
    known = {f.name: f for f in Config.options()}
    owners = {f.metadata["owner"] for f in known.values()}
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in owners and isinstance(value, dict):
            for name, inner in value.items():
                if name not in known or known[name].metadata["owner"] != key:
                    raise ConfigError(f"unknown option {key}.{name} in config file {path!r}")
                values[name] = inner
        elif key in known:
            values[key] = value
        else:
            raise ConfigError(f"unknown option {key!r} in config file {path!r}")
    return values


def flag(f: dataclasses.Field[Any]) -> str:
    """The C{twistd kgw} flag of an option, without the leading dashes."""
    return f.name.replace("_", "-")


def envVar(f: dataclasses.Field[Any]) -> str:
    """The environment variable of an option."""
    return "KG_" + f.name.upper()


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
