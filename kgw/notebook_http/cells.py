"""Reading an annotated notebook: which cells are endpoints, which seed the kernel.

A code cell whose first line is C{<comment> METHOD /path} is an endpoint; one whose first line is
C{<comment> ResponseInfo METHOD /path} sets the status and headers of that endpoint's responses.
Every other code cell is seed code, run once on each kernel. Pure functions, no I/O.
"""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

METHODS = ("GET", "PUT", "POST", "DELETE", "PATCH", "HEAD", "OPTIONS")

# The line comment of each kernel language; "#" for the ones not listed.
COMMENT_PREFIXES: Mapping[str, str] = {
    "scala": "//",
    "java": "//",
    "javascript": "//",
    "typescript": "//",
    "go": "//",
    "c": "//",
    "c++": "//",
    "cpp": "//",
    "csharp": "//",
    "c#": "//",
    "kotlin": "//",
    "rust": "//",
    "swift": "//",
    "groovy": "//",
    "sql": "--",
    "haskell": "--",
    "lua": "--",
    "matlab": "%",
    "octave": "%",
    "prolog": "%",
    "erlang": "%",
    "fortran": "!",
    "lisp": ";",
    "scheme": ";",
    "clojure": ";",
}
PARAMETER = re.compile(r":([^/\s]*)")


class AnnotationError(ValueError):
    """An annotation that cannot be served: the message names the cell."""


@dataclass
class Endpoint:
    """One route of the notebook: its path template, method and the code that answers it."""

    path: str
    method: str
    source: str
    cells: list[int] = field(default_factory=list)
    responseSource: str | None = None
    description: str | None = None
    # The cell's result is not shown: IPython's rule for a cell that ends with a semicolon.
    quiet: bool = False

    @property
    def segments(self) -> tuple[str, ...]:
        return tuple(self.path.strip("/").split("/")) if self.path.strip("/") else ()

    @property
    def parameters(self) -> tuple[str, ...]:
        return tuple(s[1:] for s in self.segments if s.startswith(":"))


@dataclass
class NotebookAPI:
    """What a notebook declares: its endpoints (in routing order), its seed code, its language."""

    endpoints: list[Endpoint]
    seedCells: list[str]
    language: str


def commentPrefix(language: str, overrides: Mapping[str, str] | None = None) -> str:
    """The line comment that starts annotations in C{language}."""
    language = language.lower()
    if overrides and language in overrides:
        return overrides[language]
    return COMMENT_PREFIXES.get(language, "#")


def notebookLanguage(notebook: Mapping[str, Any]) -> str:
    """The notebook's language: its language_info name, else its kernelspec's language."""
    metadata = notebook.get("metadata", {})
    return (
        metadata.get("language_info", {}).get("name")
        or metadata.get("kernelspec", {}).get("language")
        or "python"
    )


def _source(cell: Mapping[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def parseNotebook(
    notebook: Mapping[str, Any], prefixes: Mapping[str, str] | None = None
) -> NotebookAPI:
    """
    Find a notebook's endpoints and seed cells.

    Cells with the same annotation are joined in notebook order. A markdown cell just before an
    endpoint's first cell, or comment lines right after its annotation, describe it.

    @raise AnnotationError: for an unknown method, a path with a repeated or empty parameter
        name, a path with spaces, or a notebook with no endpoint at all.
    """
    language = notebookLanguage(notebook)
    prefix = re.escape(commentPrefix(language, prefixes))
    # An upper-case word then a path: "# GET /hello". An unknown word there ("# FETCH /x") is
    # an error rather than a seed cell, so a typo cannot silently drop an endpoint.
    annotation = re.compile(rf"^{prefix}\s+(ResponseInfo\s+)?([A-Z]+)\s+(/.*)$")
    endpoints: dict[tuple[str, str], Endpoint] = {}
    responses: dict[tuple[str, str], list[str]] = {}
    seeds: list[str] = []
    previousMarkdown: str | None = None
    for index, cell in enumerate(notebook.get("cells", [])):
        if cell.get("cell_type") == "markdown":
            previousMarkdown = _source(cell).strip() or None
            continue
        if cell.get("cell_type") != "code":
            continue
        source = _source(cell)
        firstLine, _, rest = source.lstrip("\n").partition("\n")
        found = annotation.match(firstLine.strip())
        if found is None:
            seeds.append(source)
            previousMarkdown = None
            continue
        isResponse, method, path = found.group(1), found.group(2), found.group(3).strip()
        where = f"cell {index} ({firstLine.strip()!r})"
        _checkAnnotation(method, path, where)
        key = (path, method)
        if isResponse:
            responses.setdefault(key, []).append(source + "\n")
        elif key in endpoints:
            endpoints[key].source += source + "\n"
            endpoints[key].cells.append(index)
        else:
            endpoints[key] = Endpoint(
                path,
                method,
                source + "\n",
                [index],
                description=previousMarkdown or _commentDescription(rest, prefix),
            )
        previousMarkdown = None
    if not endpoints:
        raise AnnotationError(
            "The notebook declares no endpoint: annotate a code cell with a first line such as "
            f"'{commentPrefix(language, prefixes)} GET /hello'"
        )
    for (path, method), sources in responses.items():
        if (path, method) in endpoints:
            endpoints[(path, method)].responseSource = "".join(sources)
    if language.lower() == "python":
        for endpoint in endpoints.values():
            endpoint.quiet = endsWithSemicolon(endpoint.source)
    return NotebookAPI(routingOrder(list(endpoints.values())), seeds, language)


def endsWithSemicolon(source: str) -> bool:
    """
    Whether the last token of Python C{source}, comments and blank lines aside, is C{;}.

    IPython shows no result for such a cell. It decides by the cell in its history, which
    notebook-http kernels do not keep (so that serving requests does not grow it without end):
    the gateway applies the rule itself.
    """
    last = None
    try:
        for token in tokenize.generate_tokens(io.StringIO(source).readline):
            if token.type not in _NOT_CODE:
                last = token
    except (tokenize.TokenError, SyntaxError):
        return False
    return last is not None and last.type == tokenize.OP and last.string == ";"


# What IPython passes over, looking back for the semicolon (a dedent is not among them).
_NOT_CODE = frozenset({tokenize.ENDMARKER, tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT})


def _checkAnnotation(method: str, path: str, where: str) -> None:
    if method not in METHODS:
        raise AnnotationError(
            f"{where}: unknown method {method!r}; use one of {', '.join(METHODS)}"
        )
    if re.search(r"\s", path):
        raise AnnotationError(f"{where}: the path {path!r} contains spaces")
    names = PARAMETER.findall(path)
    if any(not name for name in names):
        raise AnnotationError(f"{where}: a path parameter has no name")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise AnnotationError(f"{where}: parameter {repeated[0]!r} appears twice in {path}")


def _commentDescription(rest: str, prefix: str) -> str | None:
    """The comment lines that directly follow an annotation, as a description."""
    lines = []
    for line in rest.splitlines():
        found = re.match(rf"^\s*{prefix}\s?(.*)$", line)
        if found is None:
            break
        lines.append(found.group(1))
    return "\n".join(lines).strip() or None


def _specificity(endpoint: Endpoint) -> tuple[int, ...]:
    """Literal segments before parameters: compared position by position, literal wins."""
    return tuple(0 if s.startswith(":") else 1 for s in endpoint.segments)


def routingOrder(endpoints: Sequence[Endpoint]) -> list[Endpoint]:
    """Endpoints in the order routes are tried: most literal first, then notebook order."""
    return sorted(endpoints, key=_specificity, reverse=True)


def match(endpoints: Sequence[Endpoint], path: str) -> tuple[list[Endpoint], dict[str, str]]:
    """
    The endpoints whose template matches C{path} best (one per method) and its parameters.

    Templates are tried in L{routingOrder}; the first that matches decides the parameters, and
    every endpoint with that same template (other methods) is returned with it.
    """
    segments = tuple(path.strip("/").split("/")) if path.strip("/") else ()
    for endpoint in endpoints:
        template = endpoint.segments
        if len(template) != len(segments):
            continue
        parameters: dict[str, str] = {}
        for wanted, given in zip(template, segments, strict=True):
            if wanted.startswith(":"):
                if not given:
                    break
                parameters[wanted[1:]] = given
            elif wanted != given:
                break
        else:
            return [e for e in endpoints if e.segments == template], parameters
    return [], {}


def notebookAPI(
    notebook: Mapping[str, Any], path: str, prefixes: Sequence[tuple[str, str]] = ()
) -> NotebookAPI:
    """
    The endpoints a seed notebook declares, for start-up.

    @raise ConfigError: naming the notebook and the cell whose annotation is invalid.
    """
    from kgw.config import ConfigError

    try:
        return parseNotebook(notebook, dict(prefixes))
    except AnnotationError as e:
        raise ConfigError(f"seed notebook {path!r}: {e}") from None
