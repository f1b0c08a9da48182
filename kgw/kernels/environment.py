"""What a kernel process finds in its environment: a pure policy, as KG defines it."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from kgw.errors import InvalidRequest

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
MAX_VALUE_LENGTH = 64 * 1024


def _encodable(value: str) -> bool:
    """Whether C{value} can be put in a process's environment, as C{subprocess} encodes it."""
    try:
        os.fsencode(value)
    except UnicodeEncodeError:
        return False
    return True


def kernelEnvironment(
    requested: Any,
    environ: Mapping[str, str],
    whitelist: Iterable[str] = (),
    processWhitelist: Iterable[str] = (),
) -> dict[str, str]:
    """
    The environment of a new kernel.

    As in KG: a request without C{env} gives the kernel the gateway's environment. A request
    with C{env} gives it C{PATH} and the names in C{processWhitelist} from the gateway, and from
    C{requested} the C{KERNEL_*} names and the names in C{whitelist}; other names are ignored.
    Either way C{KG_AUTH_TOKEN} is never passed on and C{KERNEL_GATEWAY=1} is set.

    @raise InvalidRequest: if C{requested} is not a mapping of valid names to strings.
    """
    if requested is None:
        env = {name: value for name, value in environ.items() if name != "KG_AUTH_TOKEN"}
        env["KERNEL_GATEWAY"] = "1"
        return env
    env = {"PATH": environ.get("PATH", "")}
    env.update({name: environ[name] for name in processWhitelist if name in environ})
    if not isinstance(requested, dict):
        raise InvalidRequest("env must be an object of strings")
    allowed = set(whitelist)
    for name, value in requested.items():
        if not isinstance(name, str) or not NAME.match(name):
            raise InvalidRequest(f"env: invalid variable name {name!r}")
        if not isinstance(value, str):
            raise InvalidRequest(f"env: the value of {name} must be a string")
        if len(value) > MAX_VALUE_LENGTH:
            raise InvalidRequest(f"env: the value of {name} is longer than {MAX_VALUE_LENGTH}")
        if "\x00" in value or not _encodable(value):
            raise InvalidRequest(f"env: the value of {name} cannot be passed to a process")
        if name.startswith("KERNEL_") or name in allowed:
            env[name] = value
    env.pop("KG_AUTH_TOKEN", None)
    env["KERNEL_GATEWAY"] = "1"
    return env
