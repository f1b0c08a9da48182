"""The Swagger (OpenAPI 2.0) document of a notebook's endpoints. Pure functions."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from kgw.notebook_http.cells import Endpoint


def templatePath(path: str) -> str:
    """C{/hello/:name} as a Swagger path template, C{/hello/{name}}."""
    return "/".join("{" + s[1:] + "}" if s.startswith(":") else s for s in path.split("/"))


def buildSwagger(endpoints: Sequence[Endpoint], notebookPath: str = "") -> dict[str, Any]:
    """
    A Swagger 2.0 document: one path per template, one operation per method, its path
    parameters, and the endpoint's description where the notebook gives one. Paths keep the
    notebook's order; the title is the notebook's file name up to its first dot, as in KG.
    """
    title = os.path.basename(notebookPath).split(".", 1)[0] or "notebook"
    paths: dict[str, dict[str, Any]] = {}
    for endpoint in sorted(endpoints, key=lambda e: e.cells[0] if e.cells else 0):
        operation: dict[str, Any] = {
            "responses": {"200": {"description": "Success"}},
            "parameters": [
                {"name": name, "in": "path", "required": True, "type": "string"}
                for name in endpoint.parameters
            ],
        }
        if endpoint.description:
            operation["summary"] = endpoint.description.splitlines()[0]
            operation["description"] = endpoint.description
        paths.setdefault(templatePath(endpoint.path), {})[endpoint.method.lower()] = operation
    return {"swagger": "2.0", "info": {"title": title, "version": "0.0.0"}, "paths": paths}
