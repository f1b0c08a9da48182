"""
The OpenAPI document of the jupyter-websocket mode's REST API.

The document is data: C{openapi.yaml} beside this module. This module adds what depends on the
gateway that serves it (its version, its base URL) and writes it out as YAML; it does no I/O
beyond reading that file once, at import.
"""

import copy
from importlib.resources import files
from typing import Any

import yaml

__all__ = ["ROUTES", "buildOpenAPI", "toYAML"]

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")

_DOCUMENT: dict[str, Any] = yaml.load(
    files("kgw.api").joinpath("openapi.yaml").read_text(encoding="utf-8"),
    Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader),
)

# Every (method, path template) pair the document describes, for tests to compare with the
# routes the gateway serves.
ROUTES: tuple[tuple[str, str], ...] = tuple(
    (method.upper(), path)
    for path, item in _DOCUMENT["paths"].items()
    for method in _METHODS
    if method in item
)


def buildOpenAPI(version: str, baseURL: str = "/") -> dict[str, Any]:
    """
    A new copy of the document, which the caller may change: paths are relative to the server
    root, and C{baseURL}, where the gateway mounts them, is its server.
    """
    document = copy.deepcopy(_DOCUMENT)
    document["info"]["version"] = version
    document["servers"] = [{"url": baseURL or "/"}]
    return document


class _Dumper(yaml.SafeDumper):
    """Writes every value where it stands: no anchors and aliases for the shared fragments."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def toYAML(document: dict[str, Any]) -> str:
    """C{document} as block-style YAML, its keys in their order."""
    return yaml.dump(document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100)
