"""Loading the seed notebook, and which kernels and cells it is for."""

from __future__ import annotations

import json
import os
from typing import Any

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from twisted.trial.unittest import SynchronousTestCase

from kgw.config import Config, ConfigError
from kgw.kernels.seed import Seed, loadSeed, seedPath
from tests.fakes import writeKernelspecs


def notebook(cells: list[Any], **metadata: Any) -> nbformat.NotebookNode:
    """A version 4 notebook of C{cells} with C{metadata}."""
    return nbformat.v4.new_notebook(cells=cells, metadata=metadata)


PYTHON = {"name": "fake", "language": "python", "display_name": "Fake Python"}


class LoadTestCase(SynchronousTestCase):
    """Each test gets kernelspecs C{fake} and C{other} and a directory for notebooks."""

    def setUp(self) -> None:
        self.root = os.path.abspath(self.mktemp())
        writeKernelspecs(os.path.join(self.root, "kernels"))
        self.specs = KernelSpecManager(
            kernel_dirs=[os.path.join(self.root, "kernels")], ensure_native_kernel=False
        )

    def write(self, content: nbformat.NotebookNode | bytes, name: str = "seed.ipynb") -> str:
        path = os.path.join(self.root, name)
        with open(path, "wb") as f:
            f.write(content if isinstance(content, bytes) else nbformat.writes(content).encode())
        return path

    def load(self, uri: str, **settings: Any) -> Seed | None:
        return loadSeed(Config(seed_uri=uri, **settings), self.specs)

    def refused(self, uri: str, **settings: Any) -> str:
        """The message of the L{ConfigError} that loading C{uri} raises."""
        return str(self.assertRaises(ConfigError, self.load, uri, **settings))


class LoadingTests(LoadTestCase):
    def test_noSeedURI(self) -> None:
        """Without seed_uri there is no seed."""
        self.assertIsNone(loadSeed(Config(), self.specs))

    def test_loadsCodeCellsInOrder(self) -> None:
        """A notebook's code cells are kept, in order; markdown and raw cells are not."""
        path = self.write(
            notebook(
                [
                    nbformat.v4.new_code_cell("a = 1"),
                    nbformat.v4.new_markdown_cell("# not code"),
                    nbformat.v4.new_raw_cell("raw"),
                    nbformat.v4.new_code_cell("b = a + 1"),
                ],
                kernelspec=PYTHON,
            )
        )
        seed = self.load(path)
        self.assertEqual(seed, Seed(path, ("a = 1", "b = a + 1"), "fake", "python"))

    def test_fileURL(self) -> None:
        """A file: URL names a local notebook, percent-escapes decoded."""
        path = self.write(notebook([], kernelspec=PYTHON), name="my seed.ipynb")
        seed = self.load("file://" + path.replace(" ", "%20"))
        assert seed is not None
        self.assertEqual(seed.path, path)
        self.assertEqual(seedPath("file:" + path), path)

    def test_version3Converted(self) -> None:
        """A version 3 notebook is read as version 4."""
        v3 = {
            "nbformat": 3,
            "nbformat_minor": 0,
            "metadata": {"language": "python"},
            "worksheets": [
                {
                    "cells": [
                        {"cell_type": "code", "input": "x = 3", "language": "python", "outputs": []}
                    ]
                }
            ],
        }
        seed = self.load(self.write(json.dumps(v3).encode()), force_kernel_name="other")
        assert seed is not None
        self.assertEqual(seed.cells, ("x = 3",))

    def test_missingFile(self) -> None:
        """A notebook that does not exist is refused, naming the file and the reason."""
        message = self.refused("/missing.ipynb")
        self.assertIn("/missing.ipynb", message)
        self.assertIn("No such file", message)

    def test_unreadable(self) -> None:
        """A path that cannot be read as a file is refused, naming it."""
        message = self.refused(self.root)
        self.assertIn(self.root, message)
        self.assertIn("cannot read", message)

    def test_notJSON(self) -> None:
        """A file that is not JSON is refused, saying so."""
        path = self.write(b"print('hello')\n")
        message = self.refused(path)
        self.assertIn(path, message)
        self.assertIn("not JSON", message)

    def test_notANotebook(self) -> None:
        """JSON that is not a valid notebook is refused, saying so."""
        for content in (
            b"[1, 2]",
            b'{"a": 1}',
            b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": 3}',
            b'{"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{"x": 1}]}',
            b'{"nbformat": 99, "nbformat_minor": 0, "metadata": {}, "cells": []}',
            b"\xff\xfe not utf-8",
        ):
            path = self.write(content)
            message = self.refused(path)
            self.assertIn(path, message)
            self.assertIn("not a valid notebook", message, content)

    def test_httpRefused(self) -> None:
        """An http or https URL is refused with a message saying to use a local file."""
        for uri in ("http://example.com/seed.ipynb", "HTTPS://example.com/seed.ipynb"):
            message = self.refused(uri)
            self.assertIn(uri, message)
            self.assertIn("not supported", message)
            self.assertIn("local path", message)

    def test_otherURLsRefused(self) -> None:
        """Another URL scheme, or a file: URL of another host, is refused."""
        self.assertIn("unsupported URL scheme", self.refused("ftp://example.com/seed.ipynb"))
        self.assertIn("this host", self.refused("file://example.com/seed.ipynb"))

    def test_unknownKernelspec(self) -> None:
        """A notebook whose kernelspec does not exist is refused, naming both."""
        path = self.write(notebook([], kernelspec=dict(PYTHON, name="nope")))
        message = self.refused(path)
        self.assertIn(path, message)
        self.assertIn("'nope'", message)

    def test_unknownForcedKernelspec(self) -> None:
        """With force_kernel_name, that kernelspec must exist, whatever the notebook names."""
        path = self.write(notebook([], kernelspec=PYTHON))
        self.assertIn("'gone'", self.refused(path, force_kernel_name="gone"))

    def test_forcedKernelspecWins(self) -> None:
        """force_kernel_name replaces the notebook's kernelspec, which need not exist then."""
        path = self.write(notebook([], kernelspec=dict(PYTHON, name="nope")))
        seed = self.load(path, force_kernel_name="other")
        assert seed is not None
        self.assertEqual((seed.kernelName, seed.language), ("other", "python"))

    def test_languageFromLanguageInfo(self) -> None:
        """Without a kernelspec, the language comes from metadata.language_info."""
        seed = self.load(self.write(notebook([], language_info={"name": "R"})))
        assert seed is not None
        self.assertEqual((seed.kernelName, seed.language), (None, "R"))

    def test_kernelspecLanguageFirst(self) -> None:
        """metadata.kernelspec.language wins over metadata.language_info.name."""
        path = self.write(notebook([], kernelspec=PYTHON, language_info={"name": "R"}))
        seed = self.load(path)
        assert seed is not None
        self.assertEqual(seed.language, "python")

    def test_forWhomUnknown(self) -> None:
        """A notebook naming neither a kernelspec nor a language is refused."""
        path = self.write(notebook([nbformat.v4.new_code_cell("x = 1")]))
        self.assertIn("neither a kernelspec nor a language", self.refused(path))


class SelectionTests(SynchronousTestCase):
    def test_sameLanguage(self) -> None:
        """A seed applies to kernels of its language, whatever their kernelspec or case."""
        seed = Seed("/s.ipynb", (), None, "python")
        self.assertTrue(seed.appliesTo("any", "python"))
        self.assertTrue(seed.appliesTo("any", "Python"))
        self.assertFalse(seed.appliesTo("any", "R"))
        self.assertFalse(seed.appliesTo("any", None))

    def test_namedKernelspec(self) -> None:
        """A seed applies to kernels of the kernelspec it names, whatever their language."""
        seed = Seed("/s.ipynb", (), "special", "python")
        self.assertTrue(seed.appliesTo("special", "R"))
        self.assertTrue(seed.appliesTo("plain", "python"))
        self.assertFalse(seed.appliesTo("plain", "R"))

    def test_noLanguage(self) -> None:
        """A seed without a language applies only to the kernelspec it names."""
        seed = Seed("/s.ipynb", (), "special", None)
        self.assertTrue(seed.appliesTo("special", "python"))
        self.assertFalse(seed.appliesTo("plain", "python"))
