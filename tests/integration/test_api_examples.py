"""The notebooks of etc/api_examples, served in notebook-http mode, answer as they document."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import nbformat
from twisted.trial.unittest import SynchronousTestCase, TestCase

from kgw.notebook_http.cells import parseNotebook
from tests.integration.test_notebook_http import fetch, serve

EXAMPLES = Path(__file__).resolve().parents[2] / "etc" / "api_examples"
JSON_BODY = {"Content-Type": "application/json"}


def example(name: str) -> str:
    return str(EXAMPLES / name)


class NotebookTests(SynchronousTestCase):
    """The examples are valid notebooks that declare endpoints and explain each of them."""

    def test_described(self):
        """Every example is a valid notebook whose endpoints each have a markdown description."""
        names = sorted(path.name for path in EXAMPLES.glob("*.ipynb"))
        self.assertEqual(
            names, ["intro.ipynb", "ordering.ipynb", "response_info.ipynb", "rich.ipynb"]
        )
        for name in names:
            notebook = nbformat.read(example(name), as_version=4)
            nbformat.validate(notebook)
            api = parseNotebook(notebook)
            self.assertEqual(api.language, "python")
            for endpoint in api.endpoints:
                self.assertTrue(endpoint.description, f"{name}: {endpoint.path}")


class ExampleTests(TestCase):
    """Each example answers its documented requests."""

    timeout = 120

    async def test_intro(self):
        """intro.ipynb adds, lists, filters, reads, changes and removes books."""
        gateway = await serve(self, example("intro.ipynb"))
        for title, author in (
            ("The Dispossessed", "Ursula K. Le Guin"),
            ("Invisible Cities", "Italo Calvino"),
            ("Dune", "Frank Herbert"),
        ):
            body = json.dumps({"title": title, "author": author}).encode()
            answer = await fetch(gateway, "POST", "books", body, JSON_BODY)
            self.assertEqual(answer.code, 200, answer.body)
        self.assertEqual(answer.json(), {"id": 3, "title": "Dune", "author": "Frank Herbert"})

        answer = await fetch(
            gateway, "GET", "books?author=Ursula%20K.%20Le%20Guin&author=Italo%20Calvino"
        )
        self.assertEqual([book["id"] for book in answer.json()], [1, 2])

        answer = await fetch(
            gateway, "PUT", "books/1", b'{"title": "The Lathe of Heaven"}', JSON_BODY
        )
        self.assertEqual(answer.json()["title"], "The Lathe of Heaven")
        answer = await fetch(gateway, "GET", "books/1")
        self.assertEqual(
            answer.json(), {"id": 1, "title": "The Lathe of Heaven", "author": "Ursula K. Le Guin"}
        )

        answer = await fetch(gateway, "DELETE", "books/1")
        self.assertEqual(answer.json()["id"], 1)
        self.assertIsNone((await fetch(gateway, "GET", "books/1")).json())
        answer = await fetch(gateway, "GET", "books")
        self.assertEqual([book["id"] for book in answer.json()], [2, 3])

        answer = await fetch(gateway, "GET", "books/one")
        self.assertEqual(answer.code, 500)
        self.assertIn("Error ValueError: invalid literal for int()", answer.text)
        answer = await fetch(gateway, "PATCH", "books/2")
        self.assertEqual((answer.code, answer.header("Allow")), (405, "DELETE, GET, PUT"))

        answer = await fetch(gateway, "GET", "_api/spec/swagger.json")
        self.assertEqual(sorted(answer.json()["paths"]["/books/{id}"]), ["delete", "get", "put"])

    async def test_responseInfo(self):
        """response_info.ipynb answers 201 with Location, ETags, 304, 404, 415 and 204."""
        gateway = await serve(self, example("response_info.ipynb"))
        text = {"Content-Type": "text/plain"}

        answer = await fetch(gateway, "PUT", "notes/todo", b"water the plants", text)
        self.assertEqual(answer.code, 201)
        self.assertEqual(answer.header("Location"), "/notes/todo")
        etag = answer.header("ETag")
        self.assertRegex(etag, r'^"[0-9a-f]{16}"$')

        answer = await fetch(gateway, "GET", "notes/todo")
        self.assertEqual((answer.code, answer.text), (200, "water the plants"))
        self.assertEqual(answer.header("ETag"), etag)
        answer = await fetch(gateway, "GET", "notes/todo", headers={"If-None-Match": etag})
        self.assertEqual((answer.code, answer.body), (304, b""))

        answer = await fetch(gateway, "PUT", "notes/todo", b"water the roses", text)
        self.assertEqual(answer.code, 200)
        self.assertIsNone(answer.header("Location"))
        changed = answer.header("ETag")
        self.assertNotEqual(changed, etag)
        answer = await fetch(gateway, "GET", "notes/todo", headers={"If-None-Match": etag})
        self.assertEqual((answer.code, answer.text), (200, "water the roses"))

        answer = await fetch(
            gateway,
            "PUT",
            "notes/todo",
            b"text=hello",
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        self.assertEqual(answer.code, 415)

        self.assertEqual((await fetch(gateway, "DELETE", "notes/todo")).code, 204)
        self.assertEqual((await fetch(gateway, "DELETE", "notes/todo")).code, 404)
        answer = await fetch(gateway, "GET", "notes/todo")
        self.assertEqual((answer.code, answer.text), (404, "no such note\n"))

    async def test_ordering(self):
        """ordering.ipynb: literal segments win, the leftmost difference first."""
        gateway = await serve(self, example("ordering.ipynb"))
        answer = await fetch(gateway, "GET", "users/ada")
        self.assertEqual(answer.json()["name"], "ada")
        answer = await fetch(gateway, "GET", "users/me", headers={"X-User": "grace"})
        self.assertEqual(answer.json(), {"name": "grace", "language": "COBOL"})
        self.assertEqual((await fetch(gateway, "GET", "reports/latest")).text, "report latest\n")
        answer = await fetch(gateway, "GET", "news/latest")
        self.assertEqual(answer.text, "the latest of news\n")

    async def test_rich(self):
        """rich.ipynb answers JSON statistics and a valid PNG bar chart of the given size."""
        gateway = await serve(self, example("rich.ipynb"))
        answer = await fetch(gateway, "GET", "stats?value=3&value=1&value=4")
        self.assertEqual(answer.header("Content-Type"), "application/json")
        self.assertEqual(answer.json(), {"count": 3, "min": 1.0, "max": 4.0, "mean": 8 / 3})

        for query, width in (("?value=3&value=1&value=4", 72), ("", 1)):
            answer = await fetch(gateway, "GET", "chart.png" + query)
            self.assertEqual(answer.header("Content-Type"), "image/png", query)
            self.assertEqual(pngSize(answer.body), (width, 120))


def pngSize(data: bytes) -> tuple[int, int]:
    """The width and height of a PNG, after checking its signature and every chunk's CRC."""
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG")
    position, kinds, size = 8, [], (0, 0)
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        chunk = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        if zlib.crc32(kind + chunk) & 0xFFFFFFFF != crc:
            raise ValueError(f"bad CRC in {kind!r}")
        if kind == b"IHDR":
            size = struct.unpack(">II", chunk[:8])
        kinds.append(kind)
        position += 12 + length
    if kinds[0] != b"IHDR" or kinds[-1] != b"IEND" or b"IDAT" not in kinds:
        raise ValueError(f"unexpected chunks {kinds}")
    return size
