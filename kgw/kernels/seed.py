"""The seed notebook: code run on every new kernel of its language before anyone gets the kernel.

The notebook named by C{seed_uri} is read once, at start-up, and checked there: a notebook that
cannot be read, is not a valid notebook, or names a kernelspec that does not exist stops the
gateway before it serves anything, as KG does.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import nbformat
from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

from kgw.config import Config, ConfigError
from kgw.errors import KernelStartFailed

# A URL, as opposed to a path that happens to hold a colon: C{scheme://...}, or any C{file:}.
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://|file:)", re.IGNORECASE)


class SeedFailed(KernelStartFailed):
    """A cell of the seed notebook failed on a new kernel, which was shut down."""


@dataclass(frozen=True)
class Seed:
    """
    The code cells of a seed notebook and the kernels they are for.

    @ivar kernelName: the kernelspec the notebook is for (C{force_kernel_name}, else the
        notebook's own), or C{None}.
    @ivar language: the notebook's language, or C{None}.
    """

    path: str
    cells: tuple[str, ...]
    kernelName: str | None
    language: str | None
    # The whole notebook, for notebook-http mode, which reads its annotations.
    notebook: Any = field(default=None, compare=False, repr=False)
    # Whether the kernel keeps the seed cells in its history (notebook-http kernels keep none).
    storeHistory: bool = True

    def appliesTo(self, kernelName: str, language: str | None) -> bool:
        """Whether a new kernel of this kernelspec and language is to be seeded."""
        if self.kernelName is not None and kernelName == self.kernelName:
            return True
        return (
            self.language is not None
            and language is not None
            and self.language.lower() == language.lower()
        )


def seedPath(uri: str) -> str:
    """
    The local path a C{seed_uri} names: a path, or a C{file:} URL.

    @raise ConfigError: for any other URL; fetching a notebook over HTTP is not supported.
    """
    if not _URL.match(uri):
        return uri
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        raise ConfigError(
            f"seed_uri {uri!r}: fetching the seed notebook over {scheme} is not supported; "
            "give a local path or a file: URL"
        )
    if scheme != "file":
        raise ConfigError(f"seed_uri {uri!r}: unsupported URL scheme {parts.scheme!r}")
    if parts.netloc not in ("", "localhost"):
        raise ConfigError(f"seed_uri {uri!r}: a file: URL must name a file on this host")
    return unquote(parts.path)


def loadSeed(config: Config, specs: KernelSpecManager | None = None) -> Seed | None:
    """
    Read and check the seed notebook of C{config}, if it names one.

    @param specs: where kernelspecs are found; jupyter_client's usual places by default.
    @raise ConfigError: naming the notebook and what is wrong with it.
    """
    if not config.seed_uri:
        return None
    path = seedPath(config.seed_uri)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read seed notebook {path!r}: {e.strerror}") from None
    notebook = _parse(path, raw)
    metadata = notebook.get("metadata", {})
    kernelspec = metadata.get("kernelspec") or {}
    languageInfo = metadata.get("language_info") or {}
    kernelName = config.force_kernel_name or _text(kernelspec.get("name"))
    language = _text(kernelspec.get("language")) or _text(languageInfo.get("name"))
    if kernelName is None and language is None:
        raise ConfigError(
            f"seed notebook {path!r} names neither a kernelspec nor a language "
            "(metadata.kernelspec, metadata.language_info), so no kernel would be seeded"
        )
    if kernelName is not None:
        specs = specs if specs is not None else KernelSpecManager()
        try:
            specs.get_kernel_spec(kernelName)
        except (NoSuchKernel, KeyError, ValueError):
            raise ConfigError(
                f"seed notebook {path!r}: there is no kernelspec named {kernelName!r}"
            ) from None
    cells = tuple(cell.source for cell in notebook.cells if cell.cell_type == "code")
    return Seed(os.path.abspath(path), cells, kernelName, language, notebook)


def _parse(path: str, raw: bytes) -> Any:
    """A notebook's bytes as a valid version 4 notebook, or a L{ConfigError} saying why not."""
    try:
        notebook = nbformat.convert(nbformat.reader.reads(raw.decode("utf-8")), 4)
        nbformat.validate(notebook)
    except nbformat.reader.NotJSONError:
        raise ConfigError(f"seed notebook {path!r} is not JSON") from None
    except nbformat.ValidationError as e:
        summary = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ConfigError(f"seed notebook {path!r} is not a valid notebook: {summary}") from None
    except Exception as e:
        # nbformat reports a JSON value that is not a notebook with assorted exceptions.
        raise ConfigError(f"seed notebook {path!r} is not a valid notebook: {e}") from None
    return notebook


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None
