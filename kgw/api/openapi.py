"""
The OpenAPI document of the jupyter-websocket mode's REST API.

The document is data: C{openapi.yaml} beside this module. This module adds what depends on the
gateway that serves it (its version, its base URL) and writes it out as YAML. The file is read,
and PyYAML imported, only when the document is first asked for: a gateway that is never asked
for it does not carry it (about 2 MB of its memory).
"""

import copy
from functools import cache
from importlib.resources import files
from typing import Any

__all__ = ["buildOpenAPI", "routes", "toYAML"]

_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


@cache
def _document() -> dict[str, Any]:
    """The document as C{openapi.yaml} holds it; callers must not change it."""
    import yaml

    loaded: dict[str, Any] = yaml.load(
        files("kgw.api").joinpath("openapi.yaml").read_text(encoding="utf-8"),
        Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader),
    )
    return loaded


def routes() -> tuple[tuple[str, str], ...]:
    """
    Every (method, path template) pair the document describes, for tests to compare with the
    routes the gateway serves.
    """
    return tuple(
        (method.upper(), path)
        for path, item in _document()["paths"].items()
        for method in _METHODS
        if method in item
    )


def buildOpenAPI(version: str, baseURL: str = "/") -> dict[str, Any]:
    """
    A new copy of the document, which the caller may change: paths are relative to the server
    root, and C{baseURL}, where the gateway mounts them, is its server.
    """
    document = copy.deepcopy(_document())
    document["info"]["version"] = version
    document["servers"] = [{"url": baseURL or "/"}]
    return document


def toYAML(document: dict[str, Any]) -> str:
    """C{document} as block-style YAML, its keys in their order, with no anchors and aliases."""
    import yaml

    class Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    return yaml.dump(document, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=100)
