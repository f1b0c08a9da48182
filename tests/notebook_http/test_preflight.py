"""CORS preflights in notebook-http mode: answered by the edge, as KG answers them."""

from __future__ import annotations

import os
from typing import Any

import nbformat
from jupyter_client.kernelspec import KernelSpecManager
from treq.testing import StubTreq
from twisted.internet.task import Clock

from kgw.config import Config
from kgw.gateway import buildGateway
from tests.api.test_api import APITestCase
from tests.fakes import FakeProcess, writeKernelspecs
from tests.http.test_access import CORS, CORS_HEADERS, TOKEN

CELLS = (
    "# GET /hello/:name\nprint('hello')",
    "# POST /items\nprint('posted')",
    "# OPTIONS /opt\nprint('options cell')",
)
PREFLIGHT = {"Origin": [CORS["allow_origin"]], "Access-Control-Request-Method": ["POST"]}


class NotebookPreflightTests(APITestCase):
    """
    A notebook-http gateway in memory whose kernels never start: a request that needed a
    kernel would wait for ever, so an answer proves that no cell ran.
    """

    def build(self, **settings: Any) -> StubTreq:
        root = os.path.abspath(self.mktemp())
        writeKernelspecs(os.path.join(root, "kernels"))
        path = os.path.join(root, "api.ipynb")
        notebook = nbformat.v4.new_notebook(
            cells=[nbformat.v4.new_code_cell(cell) for cell in CELLS],
            metadata={"kernelspec": {"name": "fake", "language": "python", "display_name": "F"}},
        )
        with open(path, "w") as f:
            nbformat.write(notebook, f)
        specs = KernelSpecManager(
            kernel_dirs=[os.path.join(root, "kernels")], ensure_native_kernel=False
        )
        config = Config(api="notebook-http", seed_uri=path, **settings)
        gateway = buildGateway(config, Clock(), specs=specs, processFactory=FakeProcess)
        return StubTreq(gateway.resource)

    def assertPreflightAnswered(self, stub: StubTreq, path: str, method: str = "POST") -> None:
        headers = {**PREFLIGHT, "Access-Control-Request-Method": [method]}
        answer = self.call("OPTIONS", path, headers=headers, stub=stub)
        self.assertEqual((answer.code, answer.body), (200, b""), path)
        for name, value in CORS_HEADERS.items():
            self.assertEqual(answer.headers.getRawHeaders(name), [value], (path, name))

    def test_declaredPathNeedsNoToken(self) -> None:
        """A preflight to a declared path, with a token set and none sent: 200, CORS headers."""
        stub = self.build(auth_token=TOKEN, **CORS)
        for path in ("/hello/bob", "/items", "/opt"):
            self.assertPreflightAnswered(stub, path)
        self.assertPreflightAnswered(stub, "/_api/spec/swagger.json", "GET")

    def test_declaredPathWithoutToken(self) -> None:
        """With no token set, a preflight to a declared path is answered 200 likewise."""
        stub = self.build(**CORS)
        for path in ("/hello/bob", "/items", "/opt"):
            self.assertPreflightAnswered(stub, path)

    def test_underBaseURL(self) -> None:
        """Under base_url, a preflight to a declared path beneath it is answered 200."""
        stub = self.build(base_url="/gw/", auth_token=TOKEN, **CORS)
        self.assertPreflightAnswered(stub, "/gw/hello/bob")
        self.assertJSONError(self.call("OPTIONS", "/hello/bob", headers=PREFLIGHT, stub=stub), 404)

    def test_undeclaredPathIs404(self) -> None:
        """A preflight to a path no cell declares is 404, with the CORS headers."""
        stub = self.build(auth_token=TOKEN, **CORS)
        for path in ("/nowhere", "/hello", "/hello/bob/more"):
            answer = self.call("OPTIONS", path, headers=PREFLIGHT, stub=stub)
            self.assertJSONError(answer, 404)
            self.assertEqual(
                answer.headers.getRawHeaders("Access-Control-Allow-Origin"),
                [CORS["allow_origin"]],
            )

    def test_plainOptionsNeedsToken(self) -> None:
        """An OPTIONS request that is no preflight is the cell's: without the token, 401."""
        stub = self.build(auth_token=TOKEN, **CORS)
        answer = self.call("OPTIONS", "/opt", headers={"Origin": PREFLIGHT["Origin"]}, stub=stub)
        self.assertJSONError(answer, 401)

    def test_plainOptionsGoesToTheCell(self) -> None:
        """An OPTIONS request that is no preflight waits for a kernel to run the OPTIONS cell."""
        stub = self.build(**CORS)
        pending = stub.request("OPTIONS", "http://gateway/opt")
        stub.flush()
        self.assertNoResult(pending)
