"""Route templates: which route of a Klein app a path is, named as C{/api/kernels/{kernel_id}}.

Metrics and request logs name a request by its route template, never by its raw path, so that
their label values stay as few as the routes are.
"""

from __future__ import annotations

import re

from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import Map, Rule

# What a request that matches no route is called.
UNMATCHED = "unmatched"

_VARIABLE = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")


def template(rule: Rule) -> str:
    """A werkzeug rule as a route template: C{<path:resource>} becomes C{{resource}}."""
    return _VARIABLE.sub(r"{\1}", rule.rule)


class RouteTemplates:
    """
    Name the route of C{urlMap} that a request matches, as Klein would route it.

    A path the map knows under other methods only is named by its route all the same (it is
    answered 405); one it does not know at all is L{UNMATCHED}.
    """

    def __init__(self, urlMap: Map) -> None:
        self._adapter = urlMap.bind("localhost")
        # By rule text: werkzeug's rules cannot be dictionary keys.
        self._templates: dict[str, str] = {}

    def __call__(self, method: str, path: str) -> str:
        """The template of the route C{method} and C{path} (relative to the base URL) match."""
        try:
            rule, _ = self._adapter.match(path, method, return_rule=True)
        except MethodNotAllowed as e:
            methods = list(e.valid_methods or ())
            if not methods:
                return UNMATCHED
            try:
                rule, _ = self._adapter.match(path, methods[0], return_rule=True)
            except HTTPException:
                return UNMATCHED
        except HTTPException:
            return UNMATCHED
        try:
            return self._templates[rule.rule]
        except KeyError:
            named = self._templates[rule.rule] = template(rule)
            return named
