"""notebook-http mode with real kernels: a notebook's annotated cells answering HTTP requests."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import nbformat
import treq
from jupyter_client.kernelspec import KernelSpecManager
from twisted.internet import reactor
from twisted.internet.defer import ensureDeferred, gatherResults
from twisted.internet.task import deferLater
from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.http_headers import Headers

from kgw.kernels.seed import SeedFailed
from kgw.tap import Options
from tests.integration.test_daemon import spawnTwistd
from tests.support import TIMEOUT, RunningGateway, withTimeout

PYTHON = {"name": "python3", "language": "python", "display_name": "Python 3"}
LENDER = "notebook-http kernels"
TOKEN = "n0tebook"

# A 1x1 PNG built from its chunks, so that no imaging library is needed. The seed runs it in
# the kernel; the tests run it too, to know the bytes to expect.
PNG_CODE = """\
import struct as _struct, zlib as _zlib

def _chunk(kind, data):
    crc = _zlib.crc32(kind + data) & 0xFFFFFFFF
    return _struct.pack(">I", len(data)) + kind + data + _struct.pack(">I", crc)

PNG = (
    b"\\x89PNG\\r\\n\\x1a\\n"
    + _chunk(b"IHDR", _struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
    + _chunk(b"IDAT", _zlib.compress(b"\\x00\\xff\\x80\\x00"))
    + _chunk(b"IEND", b"")
)
"""


def pngBytes() -> bytes:
    namespace: dict[str, Any] = {}
    exec(PNG_CODE, namespace)
    return namespace["PNG"]


def markdown(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_markdown_cell(text)


def writeNotebook(
    test: TestCase | SynchronousTestCase,
    *cells: str | nbformat.NotebookNode,
    kernelspec: dict[str, str] = PYTHON,
) -> str:
    """A notebook of C{cells} (code, unless already a cell) for C{kernelspec}; its path."""
    path = os.path.abspath(test.mktemp()) + ".ipynb"
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell(cell) if isinstance(cell, str) else cell for cell in cells
        ],
        metadata={"kernelspec": kernelspec},
    )
    with open(path, "w") as f:
        nbformat.write(notebook, f)
    return path


@dataclass
class Answer:
    """A response, read to its end."""

    code: int
    headers: Headers
    body: bytes

    def header(self, name: str) -> str | None:
        value = self.headers.getRawHeaders(name)
        return value[0] if value else None

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")


async def fetch(
    gateway: RunningGateway,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    """Make a request of C{gateway}; C{path} is sent as it is, without normalisation."""
    url = f"http://{gateway.address}/{path.lstrip('/')}".encode("ascii")
    response = await withTimeout(
        treq.request(
            method,
            url,
            data=body,
            headers={k: [v] for k, v in (headers or {}).items()},
            pool=gateway.pool,
        )
    )
    content = await withTimeout(response.content())
    return Answer(response.code, response.headers, content)


async def serve(test: TestCase, notebook: str, kernels: int = 1, **settings: Any) -> RunningGateway:
    """A gateway in notebook-http mode for C{notebook}, once its C{kernels} kernels are idle."""
    registryArguments = settings.pop("registryArguments", None)
    gateway = await RunningGateway(
        test,
        registryArguments,
        api="notebook-http",
        seed_uri=notebook,
        prespawn_count=kernels,
        **settings,
    ).start()
    await idleKernels(gateway, kernels)
    return gateway


async def idleKernels(gateway: RunningGateway, count: int) -> None:
    """Wait, for at most L{TIMEOUT} seconds, until C{count} kernels wait for requests."""
    lender = gateway.gateway.getServiceNamed(LENDER)
    deadline = time.monotonic() + TIMEOUT
    while lender.idle != count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{lender.idle} idle kernels, not {count}, after {TIMEOUT} s")
        await deferLater(reactor, 0.05, lambda: None)


class RequestTests(TestCase):
    """What a cell sees of the request it answers, in C{REQUEST}."""

    timeout = 120

    async def test_request(self):
        """Each method runs its joined cells, which see path, args, headers and the parsed body."""
        notebook = writeNotebook(
            self,
            "import json",
            "# GET /things/:kind/:id\nprint(REQUEST)",
            "# PUT /things/:kind/:id\nprint(json.dumps({'put': json.loads(REQUEST)}))",
            "# POST /things/:kind/:id\nprint(json.dumps({'post': json.loads(REQUEST)}))",
            "# DELETE /things/:kind/:id\nprint('deleted', json.loads(REQUEST)['path']['id'])",
            "# GET /parts\nprint('one', end=' ')",
            "x = 'seed code between the two cells of /parts'",
            "# GET /parts\nprint('two')",
        )
        gateway = await serve(self, notebook)

        answer = await fetch(
            gateway, "GET", "things/book/7?x=1&x=2&empty=", headers={"X-Custom": "yes"}
        )
        self.assertEqual(answer.code, 200, answer.body)
        request = answer.json()
        self.assertEqual(request["path"], {"kind": "book", "id": "7"})
        self.assertEqual(request["args"], {"x": ["1", "2"], "empty": [""]})
        self.assertEqual(request["headers"]["X-Custom"], "yes")
        self.assertEqual(request["headers"]["Host"], gateway.address)
        self.assertEqual(request["body"], "")

        answer = await fetch(
            gateway,
            "PUT",
            "things/book/7",
            json.dumps({"title": "Dune", "tags": ["sf"]}).encode(),
            {"Content-Type": "application/json"},
        )
        self.assertEqual(answer.json()["put"]["body"], {"title": "Dune", "tags": ["sf"]})

        answer = await fetch(
            gateway,
            "POST",
            "things/book/7?x=query",
            b"x=body&y=1&y=2",
            {"Content-Type": "application/x-www-form-urlencoded"},
        )
        request = answer.json()["post"]
        self.assertEqual(request["body"], {"x": ["body"], "y": ["1", "2"]})
        # The query, not the form: the body's fields are in the body only.
        self.assertEqual(request["args"], {"x": ["query"]})

        multipart = (
            b'--BOUNDARY\r\nContent-Disposition: form-data; name="y"\r\n\r\n1\r\n'
            b'--BOUNDARY\r\nContent-Disposition: form-data; name="y"\r\n\r\n2\r\n'
            b'--BOUNDARY\r\nContent-Disposition: form-data; name="f"; filename="a.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\nfile text\r\n--BOUNDARY--\r\n"
        )
        answer = await fetch(
            gateway,
            "POST",
            "things/book/7",
            multipart,
            {"Content-Type": "multipart/form-data; boundary=BOUNDARY"},
        )
        request = answer.json()["post"]
        self.assertEqual(request["body"], {"y": ["1", "2"], "f": ["file text"]})
        self.assertEqual(request["args"], {})

        answer = await fetch(
            gateway,
            "POST",
            "things/book/7",
            'it\'s "quoted" \\ é $HOME'.encode(),
            {"Content-Type": "text/plain; charset=utf-8"},
        )
        self.assertEqual(answer.json()["post"]["body"], 'it\'s "quoted" \\ é $HOME')

        answer = await fetch(gateway, "DELETE", "things/book/7")
        self.assertEqual((answer.code, answer.text), (200, "deleted 7\n"))

        answer = await fetch(gateway, "GET", "parts")
        self.assertEqual(answer.text, "one two\n")


class SeedAndPoolTests(TestCase):
    """The kernels that answer: seeded once each, and lent in turn."""

    timeout = 120

    async def test_seededOnceAndCycled(self):
        """Three kernels run the seed once each, never the endpoints, and answer in turn."""
        notebook = writeNotebook(
            self,
            "import json, os\nCOUNT = 0",
            "COUNT += 1",
            "# POST /mark\nMARKED = True\nCOUNT += 100",
            "# GET /state\n"
            "print(json.dumps({'pid': os.getpid(), 'count': COUNT, "
            "'marked': 'MARKED' in globals()}))",
        )
        gateway = await serve(self, notebook, kernels=3)
        states = [(await fetch(gateway, "GET", "state")).json() for _ in range(6)]
        pids = [state["pid"] for state in states]
        # Each request goes to the kernel idle longest: the three in turn, twice over.
        self.assertEqual(len(set(pids[:3])), 3, pids)
        self.assertEqual(pids[3:], pids[:3])
        self.assertEqual({state["count"] for state in states}, {1})
        self.assertEqual({state["marked"] for state in states}, {False})

    async def test_seedKernelspec(self):
        """The kernels are of the kernelspec the notebook names, not the default one."""
        root = os.path.abspath(self.mktemp())
        os.makedirs(os.path.join(root, "noted"))
        spec = {
            "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Noted Python",
            "language": "python",
            "env": {"KGW_KERNELSPEC": "noted"},
        }
        with open(os.path.join(root, "noted", "kernel.json"), "w") as f:
            json.dump(spec, f)
        notebook = writeNotebook(
            self,
            "import os\nSEEDED = 'yes'",
            "# GET /spec\nprint(os.environ.get('KGW_KERNELSPEC'), SEEDED)",
            kernelspec={"name": "noted", "language": "python", "display_name": "Noted"},
        )
        gateway = await serve(
            self, notebook, registryArguments={"specs": KernelSpecManager(kernel_dirs=[root])}
        )
        answer = await fetch(gateway, "GET", "spec")
        self.assertEqual(answer.text, "noted yes\n")

    async def test_stopWhileStarting(self):
        """Stopping the gateway while its kernels start leaves no error, retry or process."""
        notebook = writeNotebook(self, "# GET /hello\nprint('hello')")
        gateway = await RunningGateway(
            self, api="notebook-http", seed_uri=notebook, prespawn_count=2
        ).start()
        self.assertEqual(gateway.gateway.getServiceNamed(LENDER).idle, 0)
        # The clean-up stops the gateway now, and fails the test on what is left behind.

    async def test_failedSeedRetried(self):
        """A kernel whose seed fails is logged and retried later; stopping cancels the retry."""
        notebook = writeNotebook(self, "raise ValueError('broken seed')", "# GET /x\nprint(1)")
        await RunningGateway(self, api="notebook-http", seed_uri=notebook).start()
        deadline = time.monotonic() + TIMEOUT
        failures: list[Any] = []
        while not failures and time.monotonic() < deadline:
            await deferLater(reactor, 0.05, lambda: None)
            failures = self.flushLoggedErrors(SeedFailed)
        self.assertEqual(len(failures), 1)
        self.assertIn("ValueError: broken seed", str(failures[0].value))
        # The clean-up stops the gateway before the retry is due, which must not stay behind.


class RoutingAndResponseTests(TestCase):
    """Which cell answers a request, and how its outputs become the response."""

    timeout = 120

    async def test_routing(self):
        """Literal paths beat parameters; other methods get 405 with Allow, other paths 404."""
        notebook = writeNotebook(
            self,
            "import json",
            markdown("Greets **one person** by name."),
            "# GET /people/:name\nprint('hello', json.loads(REQUEST)['path']['name'])",
            "# GET /people/me\nprint('it is me')",
            "# POST /people/:name\nprint('created')",
        )
        gateway = await serve(self, notebook)

        answer = await fetch(gateway, "GET", "people/ann")
        self.assertEqual((answer.code, answer.text), (200, "hello ann\n"))
        self.assertEqual(answer.header("Content-Type"), "text/plain")
        answer = await fetch(gateway, "GET", "people/me")
        self.assertEqual(answer.text, "it is me\n")

        answer = await fetch(gateway, "DELETE", "people/ann")
        self.assertEqual(answer.code, 405)
        self.assertEqual(answer.header("Allow"), "GET, POST")
        self.assertEqual(answer.json()["reason"], "Method Not Allowed")

        for path in ("nowhere", "people", "people/ann/more"):
            answer = await fetch(gateway, "GET", path)
            self.assertEqual(answer.code, 404, path)
            self.assertEqual(answer.header("Content-Type"), "application/json")
            self.assertEqual(answer.json()["reason"], "Not Found")

        # Neither the notebook nor static files are served unless asked for.
        for path in ("_api/source", "public/anything.txt"):
            answer = await fetch(gateway, "GET", path)
            self.assertEqual(answer.code, 404, path)

        answer = await fetch(gateway, "GET", "_api/spec/swagger.json")
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.header("Content-Type"), "application/json")
        paths = answer.json()["paths"]
        self.assertEqual(sorted(paths), ["/people/me", "/people/{name}"])
        self.assertEqual(sorted(paths["/people/{name}"]), ["get", "post"])
        get = paths["/people/{name}"]["get"]
        self.assertEqual(
            get["parameters"], [{"name": "name", "in": "path", "required": True, "type": "string"}]
        )
        self.assertEqual(get["description"], "Greets **one person** by name.")

    async def test_baseURL(self):
        """Under base_url the endpoints answer beneath it, the bare prefix being the root."""
        notebook = writeNotebook(
            self,
            "import json",
            "# GET /\nprint('root')",
            "# GET /hello/:name\nprint('hello', json.loads(REQUEST)['path']['name'])",
        )
        gateway = await serve(self, notebook, base_url="/base/")
        for path, text in (
            ("base/", "root\n"),
            ("base", "root\n"),
            ("base/hello/ann", "hello ann\n"),
        ):
            answer = await fetch(gateway, "GET", path)
            self.assertEqual((answer.code, answer.text), (200, text), path)
        self.assertEqual((await fetch(gateway, "GET", "hello/ann")).code, 404)
        answer = await fetch(gateway, "GET", "base/_api/spec/swagger.json")
        self.assertEqual(sorted(answer.json()["paths"]), ["/", "/hello/{name}"])

    async def test_responses(self):
        """stdout is the body; else a result, rich or not; errors give 500; ResponseInfo applies."""
        notebook = writeNotebook(
            self,
            "import json, sys\nfrom IPython.display import HTML, JSON, Image, display",
            PNG_CODE,
            "# GET /printed\nprint('line 1')\nprint('warning', file=sys.stderr)\nprint('line 2')",
            "# GET /plain\n{'a': 1}",
            "# GET /png\nImage(data=PNG, format='png')",
            "# GET /displayed\ndisplay(Image(data=PNG, format='png'))",
            "# GET /json\nJSON({'items': [1, 2], 'ok': True})",
            "# GET /html\nHTML('<p>caf\\u00e9</p>')",
            "# GET /broken\n1 / 0",
            "# GET /silent\nx = 1",
            "# GET /resource\nprint(json.dumps({'id': 1}))",
            "# ResponseInfo GET /resource\n"
            "print(json.dumps({'status': 201, 'headers': {'ETag': '\"v1\"', "
            "'Location': '/resource/1', 'Content-Type': 'application/json'}}))",
            "# GET /failing\nraise ValueError('no such thing')",
            "# ResponseInfo GET /failing\nprint(json.dumps({'status': 201}))",
        )
        gateway = await serve(self, notebook)

        answer = await fetch(gateway, "GET", "printed")
        self.assertEqual((answer.code, answer.text), (200, "line 1\nline 2\n"))
        self.assertEqual(answer.header("Content-Type"), "text/plain")

        answer = await fetch(gateway, "GET", "plain")
        self.assertEqual(answer.json(), {"text/plain": "{'a': 1}"})

        for path in ("png", "displayed"):
            answer = await fetch(gateway, "GET", path)
            self.assertEqual(answer.header("Content-Type"), "image/png", path)
            self.assertEqual(answer.body, pngBytes(), path)

        answer = await fetch(gateway, "GET", "json")
        self.assertEqual(answer.header("Content-Type"), "application/json")
        self.assertEqual(answer.json(), {"items": [1, 2], "ok": True})

        answer = await fetch(gateway, "GET", "html")
        self.assertEqual(answer.header("Content-Type"), "text/html; charset=utf-8")
        self.assertEqual(answer.text, "<p>café</p>")

        answer = await fetch(gateway, "GET", "broken")
        self.assertEqual(answer.code, 500)
        self.assertIn("Error ZeroDivisionError: division by zero", answer.text)
        # As in KG, an error is a 500 whatever the endpoint's ResponseInfo cell says.
        answer = await fetch(gateway, "GET", "failing")
        self.assertEqual(answer.code, 500)
        self.assertIn("Error ValueError: no such thing", answer.text)

        answer = await fetch(gateway, "GET", "silent")
        self.assertEqual((answer.code, answer.body), (200, b""))

        answer = await fetch(gateway, "GET", "resource")
        self.assertEqual(answer.code, 201)
        self.assertEqual(answer.header("ETag"), '"v1"')
        self.assertEqual(answer.header("Location"), "/resource/1")
        self.assertEqual(answer.header("Content-Type"), "application/json")
        self.assertEqual(answer.json(), {"id": 1})

    async def test_historyAndSemicolon(self):
        """
        Requests leave nothing in the kernel's history, so it does not grow with them; a cell
        ending in a semicolon still shows no result, and only such a cell, whatever the seed's
        last cell ends with.
        """
        notebook = writeNotebook(
            self,
            "SEEDED = 1;",
            "# GET /history\nprint(len(In), get_ipython().execution_count)",
            "# GET /quiet\n{'shown': False};  # a comment after it",
            "# GET /loud\n{'shown': True}",
        )
        gateway = await serve(self, notebook)
        first = (await fetch(gateway, "GET", "history")).text
        for _ in range(3):
            await fetch(gateway, "GET", "loud")
        self.assertEqual((await fetch(gateway, "GET", "history")).text, first)
        answer = await fetch(gateway, "GET", "quiet")
        self.assertEqual((answer.code, answer.body), (200, b""))
        answer = await fetch(gateway, "GET", "loud")
        self.assertEqual(answer.json(), {"text/plain": "{'shown': True}"})


class ConcurrencyTests(TestCase):
    """Requests share the kernels: one request per kernel at a time, first come first served."""

    timeout = 120

    async def test_queuedInOrder(self):
        """Four slow requests on two kernels: the third and fourth wait for the first two."""
        notebook = writeNotebook(
            self,
            "import json, time",
            "# GET /slow\nstart = time.time()\ntime.sleep(1)\n"
            "print(json.dumps([start, time.time()]))",
        )
        gateway = await serve(self, notebook, kernels=2)
        answers = await gatherResults(
            [ensureDeferred(fetch(gateway, "GET", "slow")) for _ in range(4)]
        )
        self.assertEqual([a.code for a in answers], [200] * 4)
        runs = sorted(a.json() for a in answers)
        (_, end1), (_, end2), (start3, _), (start4, _) = runs
        self.assertGreaterEqual(start3, min(end1, end2), runs)
        self.assertGreaterEqual(start4, max(end1, end2), runs)

    async def test_slowDoesNotBlockFast(self):
        """While one kernel runs a slow request, another kernel answers a fast one."""
        release = os.path.abspath(self.mktemp())
        notebook = writeNotebook(
            self,
            "import json, os, time",
            "# GET /slow\npath = json.loads(REQUEST)['args']['until'][0]\n"
            "deadline = time.time() + 20\n"
            "while not os.path.exists(path) and time.time() < deadline:\n"
            "    time.sleep(0.02)\n"
            "print('released' if os.path.exists(path) else 'gave up')",
            "# GET /fast\nprint('fast')",
        )
        gateway = await serve(self, notebook, kernels=2)
        slow = ensureDeferred(fetch(gateway, "GET", f"slow?until={release}"))
        await idleKernels(gateway, 1)
        fast = await fetch(gateway, "GET", "fast")
        self.assertEqual(fast.text, "fast\n")
        self.assertFalse(slow.called, "the slow request ended before the fast one")
        with open(release, "w"):
            pass
        self.assertEqual((await slow).text, "released\n")


class FailureTests(TestCase):
    """Kernels that die or run too long are answered for, and the API goes on serving."""

    timeout = 120

    async def test_kernelDies(self):
        """A kernel dying under a request gives 503; a new, seeded kernel answers the next."""
        notebook = writeNotebook(
            self,
            "import json, os\nSEEDED = 'seeded'",
            "# GET /pid\nif 'die' in json.loads(REQUEST)['args']:\n    os._exit(1)\n"
            "print(os.getpid(), SEEDED)",
        )
        gateway = await serve(self, notebook)
        before = (await fetch(gateway, "GET", "pid")).text.split()
        answer = await fetch(gateway, "GET", "pid?die=1")
        self.assertEqual(answer.code, 503)
        self.assertEqual(answer.header("Content-Type"), "application/json")
        self.assertEqual(answer.json()["reason"], "Service Unavailable")
        after = (await fetch(gateway, "GET", "pid")).text.split()
        self.assertEqual(after[1], "seeded")
        self.assertNotEqual(after[0], before[0])

    async def test_timeout(self):
        """Past request_timeout: 504, and the interrupted kernel serves the next request."""
        notebook = writeNotebook(
            self,
            "import json, os, time",
            "# GET /sleep\ntime.sleep(60)\nprint('woke up')",
            "# GET /pid\nprint(os.getpid())",
        )
        gateway = await serve(self, notebook, request_timeout=1.0)
        pid = (await fetch(gateway, "GET", "pid")).text
        started = time.monotonic()
        answer = await fetch(gateway, "GET", "sleep")
        self.assertEqual(answer.code, 504)
        self.assertEqual(answer.json()["reason"], "Gateway Timeout")
        answer = await fetch(gateway, "GET", "pid")
        # The same kernel, long before the cell would have ended on its own.
        self.assertEqual((answer.code, answer.text), (200, pid))
        self.assertLess(time.monotonic() - started, 30)


class FilesAndTokenTests(TestCase):
    """The notebook's source, static files, and the token, in notebook-http mode."""

    timeout = 120

    async def test_tokenArgument(self):
        """The gateway's token never reaches a cell; without one, ?token= is the cell's own."""
        cell = "# GET /args\nimport json\nprint(sorted(json.loads(REQUEST)['args']))"
        guarded = await serve(self, writeNotebook(self, cell), auth_token=TOKEN)
        answer = await fetch(guarded, "GET", f"args?token={TOKEN}&page=2")
        self.assertEqual(answer.text, "['page']\n")
        open_ = await serve(self, writeNotebook(self, cell))
        answer = await fetch(open_, "GET", "args?token=next-page")
        self.assertEqual(answer.text, "['token']\n")

    async def test_sourceStaticAndToken(self):
        """Source and /public/ are served when enabled, never outside the directory, with token."""
        root = os.path.abspath(self.mktemp())
        static = os.path.join(root, "static")
        os.makedirs(os.path.join(static, "sub"))
        with open(os.path.join(static, "sub", "page.html"), "w") as f:
            f.write("<p>public</p>")
        secret = os.path.join(root, "secret.txt")
        with open(secret, "w") as f:
            f.write("top secret")
        os.symlink(secret, os.path.join(static, "link.txt"))
        notebook = writeNotebook(self, "# GET /hello\nprint('hello')")
        gateway = await serve(
            self,
            notebook,
            allow_notebook_download=True,
            static_path=static,
            auth_token=TOKEN,
        )
        auth = {"Authorization": f"token {TOKEN}"}

        answer = await fetch(gateway, "GET", "hello")
        self.assertEqual(answer.code, 401)
        self.assertEqual(answer.json()["reason"], "Unauthorized")
        answer = await fetch(gateway, "GET", "hello", headers=auth)
        self.assertEqual((answer.code, answer.text), (200, "hello\n"))
        answer = await fetch(gateway, "GET", f"hello?token={TOKEN}")
        self.assertEqual((answer.code, answer.text), (200, "hello\n"))

        answer = await fetch(gateway, "GET", "_api/source", headers=auth)
        self.assertEqual(answer.code, 200)
        with open(notebook, "rb") as f:
            self.assertEqual(answer.json(), json.load(f))

        answer = await fetch(gateway, "GET", "public/sub/page.html", headers=auth)
        self.assertEqual((answer.code, answer.text), (200, "<p>public</p>"))
        self.assertEqual(answer.header("Content-Type"), "text/html")
        self.assertEqual((await fetch(gateway, "GET", "public/sub/page.html")).code, 401)

        for path in (
            "public/../secret.txt",
            "public/sub/../../secret.txt",
            "public/%2e%2e/secret.txt",
            "public/%2E%2E%2Fsecret.txt",
            "public/" + secret,
            "public/" + secret.replace("/", "%2F"),
            "public/link.txt",
            "public/missing.txt",
        ):
            answer = await fetch(gateway, "GET", path, headers=auth)
            self.assertEqual(answer.code, 404, path)
            self.assertNotIn(b"top secret", answer.body, path)


class PreflightTests(TestCase):
    """CORS preflights from a web page: answered at once, never by a cell."""

    timeout = 120

    async def assertPreflights(self, token: str) -> None:
        notebook = writeNotebook(
            self,
            "import json\nCOUNT = 0",
            "# OPTIONS /count\nCOUNT += 1\nprint('options', COUNT)",
            "# GET /count\nprint(COUNT)",
            "# POST /hello/:name\nCOUNT += 1\nprint('hello', json.loads(REQUEST)['path']['name'])",
        )
        gateway = await serve(
            self,
            notebook,
            auth_token=token,
            allow_origin="https://page.example",
            allow_methods="GET, POST",
            allow_headers="Content-Type, Authorization",
        )
        auth = {"Authorization": f"token {token}"} if token else {}
        preflight = {
            "Origin": "https://page.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "content-type, authorization",
        }
        for path in ("hello/bob", "count"):
            answer = await fetch(gateway, "OPTIONS", path, headers=preflight)
            self.assertEqual((answer.code, answer.body), (200, b""), path)
            self.assertEqual(answer.header("Access-Control-Allow-Origin"), "https://page.example")
            self.assertEqual(answer.header("Access-Control-Allow-Methods"), "GET, POST")
            self.assertEqual(
                answer.header("Access-Control-Allow-Headers"), "Content-Type, Authorization"
            )
        answer = await fetch(gateway, "OPTIONS", "nowhere", headers=preflight)
        self.assertEqual(answer.code, 404)
        self.assertEqual(answer.json()["reason"], "Not Found")
        # No cell ran: the one kernel's count is still the seed's.
        self.assertEqual((await fetch(gateway, "GET", "count", headers=auth)).text, "0\n")
        # An OPTIONS request that is no preflight is the OPTIONS cell's.
        answer = await fetch(gateway, "OPTIONS", "count", headers=auth)
        self.assertEqual((answer.code, answer.text), (200, "options 1\n"))

    async def test_preflightWithToken(self):
        """With a token set, a preflight without it is 200 with the CORS headers; no cell runs."""
        await self.assertPreflights(TOKEN)

    async def test_preflightWithoutToken(self):
        """With no token set, a preflight is 200 with the CORS headers; no cell runs."""
        await self.assertPreflights("")


class StartUpTests(SynchronousTestCase):
    """Notebooks that cannot be served are refused before anything starts."""

    def parse(self, *arguments: str) -> Options:
        options = Options(environ={})
        options.parseOptions(list(arguments))
        return options

    def assertRefused(self, notebook: str, *expected: str) -> None:
        error = self.assertRaises(
            UsageError, self.parse, "--api=notebook-http", f"--seed-uri={notebook}"
        )
        for text in expected:
            self.assertIn(text, str(error))

    def test_unknownMethod(self):
        """An annotation with an unknown method is a usage error naming the cell and method."""
        notebook = writeNotebook(self, "x = 1", "# FETCH /things\nprint(x)")
        self.assertRefused(notebook, notebook, "cell 1", "FETCH")

    def test_duplicateParameter(self):
        """A path naming a parameter twice is a usage error naming the cell and parameter."""
        notebook = writeNotebook(self, "# GET /a/:id/b/:id\nprint(1)")
        self.assertRefused(notebook, "cell 0", "'id'")

    def test_noEndpoint(self):
        """A notebook without an annotated cell is a usage error."""
        notebook = writeNotebook(self, "print('no endpoint here')")
        self.assertRefused(notebook, notebook, "no endpoint")

    def test_kernelGatewaySpelling(self):
        """KG's class-qualified options and module name select notebook-http mode."""
        notebook = writeNotebook(self, "# GET /hello\nprint('hello')")
        options = self.parse(
            "--KernelGatewayApp.api=kernel_gateway.notebook_http",
            f"--KernelGatewayApp.seed_uri={notebook}",
            "--NotebookHTTPPersonality.allow_notebook_download=True",
        )
        assert options.config is not None
        self.assertEqual(options.config.api, "notebook-http")
        self.assertEqual(options.config.seed_uri, notebook)
        self.assertTrue(options.config.allow_notebook_download)


class DaemonStartUpTests(TestCase):
    """C{twistd kgw} refuses a notebook it cannot serve."""

    timeout = 60

    async def test_badAnnotationExits(self):
        """C{twistd kgw} in notebook-http mode exits non-zero, naming the bad cell."""
        notebook = writeNotebook(self, "x = 1", "# FETCH /things\nprint(x)")
        process = spawnTwistd(
            self, "-n", "--pidfile=", "kgw", "--api=notebook-http", f"--seed-uri={notebook}"
        )
        code = await withTimeout(process.ended)
        self.assertNotEqual(code, 0)
        self.assertIn(b"cell 1", process.output)
        self.assertIn(b"FETCH", process.output)
