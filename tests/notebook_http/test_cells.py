"""notebook-http's pure parts: annotations, routing, REQUEST, responses, Swagger."""

from __future__ import annotations

import base64
import json

from twisted.trial.unittest import SynchronousTestCase

from kgw.notebook_http.cells import AnnotationError, endsWithSemicolon, match, parseNotebook
from kgw.notebook_http.request import assignment, buildRequest, parseBody
from kgw.notebook_http.responses import (
    Outputs,
    ResponseInfoError,
    applyResponseInfo,
    response,
)
from kgw.notebook_http.swagger import buildSwagger


def notebook(*cells: tuple[str, str], language: str = "python") -> dict:
    return {
        "metadata": {"language_info": {"name": language}},
        "cells": [{"cell_type": kind, "source": source} for kind, source in cells],
    }


def code(source: str) -> tuple[str, str]:
    return ("code", source)


class AnnotationTests(SynchronousTestCase):
    def test_endpointsAndSeeds(self):
        """Annotated cells are endpoints; the other code cells are the seed."""
        api = parseNotebook(
            notebook(code("import json"), code("# GET /hello\nprint('hi')"), code("x = 1"))
        )
        self.assertEqual([(e.method, e.path) for e in api.endpoints], [("GET", "/hello")])
        self.assertEqual(api.seedCells, ["import json", "x = 1"])

    def test_sameAnnotationConcatenated(self):
        """Cells with the same annotation are joined in notebook order."""
        api = parseNotebook(notebook(code("# GET /a\nprint(1)"), code("# GET /a\nprint(2)")))
        [endpoint] = api.endpoints
        self.assertEqual(endpoint.source, "# GET /a\nprint(1)\n# GET /a\nprint(2)\n")

    def test_commentPrefixFollowsLanguage(self):
        """Scala annotations use //, SQL --, and a configured prefix wins."""
        scala = parseNotebook(notebook(code("// GET /s\nprintln(1)"), language="scala"))
        self.assertEqual(scala.endpoints[0].path, "/s")
        sql = parseNotebook(notebook(code("-- POST /q\nselect 1"), language="sql"))
        self.assertEqual(sql.endpoints[0].method, "POST")
        custom = parseNotebook(
            notebook(code("%% GET /c\nx"), language="weird"), prefixes={"weird": "%%"}
        )
        self.assertEqual(custom.endpoints[0].path, "/c")

    def test_extensionMethods(self):
        """PATCH, HEAD and OPTIONS are accepted as well as KG's four methods."""
        api = parseNotebook(notebook(*(code(f"# {m} /m\n1") for m in ("PATCH", "HEAD", "OPTIONS"))))
        self.assertEqual(sorted(e.method for e in api.endpoints), ["HEAD", "OPTIONS", "PATCH"])

    def test_responseInfoAttached(self):
        """A ResponseInfo cell is attached to its endpoint and is not seed code."""
        api = parseNotebook(
            notebook(code("# GET /r\nprint(1)"), code("# ResponseInfo GET /r\nprint('{}')"))
        )
        self.assertEqual(api.endpoints[0].responseSource, "# ResponseInfo GET /r\nprint('{}')\n")
        self.assertEqual(api.seedCells, [])

    def test_descriptions(self):
        """A markdown cell before an endpoint, or comments after its annotation, describe it."""
        api = parseNotebook(
            notebook(
                ("markdown", "Says hello."),
                code("# GET /a\nprint(1)"),
                code("# GET /b\n# Adds things.\n# Really.\nprint(2)"),
            )
        )
        self.assertEqual(
            [e.description for e in api.endpoints], ["Says hello.", "Adds things.\nReally."]
        )

    def test_unknownMethodNamesCell(self):
        """An unknown method is an error naming the cell."""
        error = self.assertRaises(
            AnnotationError, parseNotebook, notebook(code("x"), code("# FETCH /x\n1"))
        )
        self.assertIn("cell 1", str(error))
        self.assertIn("FETCH", str(error))

    def test_duplicateParameter(self):
        """A parameter named twice in a path is an error naming the cell."""
        error = self.assertRaises(
            AnnotationError, parseNotebook, notebook(code("# GET /a/:id/b/:id\n1"))
        )
        self.assertIn("cell 0", str(error))
        self.assertIn("'id'", str(error))

    def test_noEndpoints(self):
        """A notebook without endpoints is an error."""
        self.assertRaises(AnnotationError, parseNotebook, notebook(code("print(1)")))

    def test_ordinaryCommentsAreSeed(self):
        """Lower-case comments that mention paths are ordinary code, not annotations."""
        api = parseNotebook(notebook(code("# see /etc/hosts\nx = 1"), code("# GET /a\n1")))
        self.assertEqual(api.seedCells, ["# see /etc/hosts\nx = 1"])

    def test_semicolonQuietsPythonOnly(self):
        """IPython's rule: a Python cell whose last token is a semicolon shows no result."""
        api = parseNotebook(
            notebook(code("# GET /q\n1;  # note\n"), code("# GET /r\n'a;'"), code("# GET /s\n1"))
        )
        self.assertEqual(
            {e.path: e.quiet for e in api.endpoints}, {"/q": True, "/r": False, "/s": False}
        )
        other = parseNotebook(notebook(code("# GET /q\n1;"), language="bash"))
        self.assertFalse(other.endpoints[0].quiet)

    def test_semicolonRule(self):
        """As IPython: comments and blank lines are passed over, a block's end is not."""
        self.assertTrue(endsWithSemicolon("x = 1\n1;\n\n# end\n"))
        self.assertFalse(endsWithSemicolon("for i in x:\n    f(i);\n"))
        self.assertFalse(endsWithSemicolon("a; b"))
        self.assertFalse(endsWithSemicolon('"""unterminated;'))
        self.assertFalse(endsWithSemicolon(""))


class RoutingTests(SynchronousTestCase):
    def setUp(self):
        self.api = parseNotebook(
            notebook(
                code("# GET /people/:name\n1"),
                code("# GET /people/me\n1"),
                code("# POST /people/:name\n1"),
                code("# GET /:a/:b\n1"),
                code("# GET /x/:b\n1"),
            )
        )

    def test_literalBeatsParameter(self):
        """A literal segment wins over a parameter at the same depth."""
        endpoints, params = match(self.api.endpoints, "/people/me")
        self.assertEqual([(e.method, e.path) for e in endpoints], [("GET", "/people/me")])
        self.assertEqual(params, {})

    def test_parametersAndMethods(self):
        """A parameterised path gives its parameters and every method declared for it."""
        endpoints, params = match(self.api.endpoints, "/people/ann")
        self.assertEqual(sorted(e.method for e in endpoints), ["GET", "POST"])
        self.assertEqual(params, {"name": "ann"})

    def test_earlierLiteralWins(self):
        """/x/:b beats /:a/:b: the first differing segment decides."""
        endpoints, params = match(self.api.endpoints, "/x/1")
        self.assertEqual(endpoints[0].path, "/x/:b")
        self.assertEqual(params, {"b": "1"})

    def test_noMatch(self):
        """A path of another depth matches nothing."""
        self.assertEqual(match(self.api.endpoints, "/a/b/c"), ([], {}))


class RequestTests(SynchronousTestCase):
    def test_bodyByContentType(self):
        """JSON is parsed, forms become lists of values, anything else stays text."""
        self.assertEqual(parseBody(b'{"a": [1]}', "application/json; charset=utf-8"), {"a": [1]})
        self.assertEqual(parseBody(b"{nope", "application/json"), "{nope")
        self.assertEqual(
            parseBody(b"a=1&a=2&b=", "application/x-www-form-urlencoded"),
            {"a": ["1", "2"], "b": [""]},
        )
        self.assertEqual(parseBody("héllo".encode(), "text/plain"), "héllo")
        self.assertEqual(parseBody(b"raw", None), "raw")

    def test_multipartBody(self):
        """multipart/form-data fields become name to list of values."""
        body = (
            b'--XX\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n'
            b'--XX\r\nContent-Disposition: form-data; name="a"\r\n\r\n2\r\n'
            b'--XX\r\nContent-Disposition: form-data; name="f"; filename="t.txt"\r\n'
            b"Content-Type: text/plain\r\n\r\nfile text\r\n--XX--\r\n"
        )
        self.assertEqual(
            parseBody(body, "multipart/form-data; boundary=XX"),
            {"a": ["1", "2"], "f": ["file text"]},
        )

    def test_requestShape(self):
        """REQUEST holds body, args as lists, path parameters and headers (repeats as lists)."""
        request = buildRequest(
            b"", None, {"x": ["1", "2"]}, {"id": "7"}, [("Host", "h"), ("X", "1"), ("X", "2")]
        )
        self.assertEqual(
            request,
            {
                "body": "",
                "args": {"x": ["1", "2"]},
                "path": {"id": "7"},
                "headers": {"Host": "h", "X": ["1", "2"]},
            },
        )

    def test_pythonAssignment(self):
        """The Python assignment evaluates to the JSON text of the request."""
        request = {"body": 'it\'s "quoted" \\ é $x `y`', "args": {}, "path": {}, "headers": {}}
        namespace: dict = {}
        exec(assignment("python", request), namespace)
        self.assertEqual(json.loads(namespace["REQUEST"]), request)

    def test_bashAndPerlCannotInterpolate(self):
        """bash and Perl get single-quoted literals, so $(...) in a body is never run."""
        request = {"body": "$(rm -rf /) 'q' \\", "args": {}, "path": {}, "headers": {}}
        self.assertTrue(assignment("bash", request).startswith("REQUEST='"))
        self.assertTrue(assignment("perl", request).startswith("my $REQUEST = '"))
        self.assertIn("\\$", assignment("julia", request))


class ResponseTests(SynchronousTestCase):
    def test_stdoutIsBody(self):
        """stdout is the body, verbatim, as text/plain; stderr is not part of it."""
        outputs = Outputs()
        outputs.add("stream", {"name": "stdout", "text": "a\n"})
        outputs.add("stream", {"name": "stderr", "text": "warning\n"})
        outputs.add("stream", {"name": "stdout", "text": "b"})
        answer = response(outputs)
        self.assertEqual((answer.status, answer.body), (200, b"a\nb"))
        self.assertEqual(answer.headers["Content-Type"], "text/plain")

    def test_errorIs500(self):
        """An error in the cell gives 500 with KG's error text."""
        outputs = Outputs()
        outputs.add("error", {"ename": "ZeroDivisionError", "evalue": "division by zero"})
        answer = response(outputs)
        self.assertEqual(answer.status, 500)
        self.assertEqual(answer.body, b"Error ZeroDivisionError: division by zero \n")

    def test_quietLeavesResultOut(self):
        """A quiet execution's result is not the body; its stdout and displays still are."""
        outputs = Outputs(quiet=True)
        outputs.add("execute_result", {"data": {"text/plain": "1"}})
        self.assertEqual(response(outputs).body, b"")
        outputs.add("display_data", {"data": {"application/json": {"a": 1}}})
        self.assertEqual(response(outputs).body, b'{"a": 1}')

    def test_plainResultAsKG(self):
        """A text-only result is the bundle as JSON, as in KG."""
        outputs = Outputs()
        outputs.add("execute_result", {"data": {"text/plain": "{'a': 1}"}})
        self.assertEqual(response(outputs).body, b'{"text/plain": "{\'a\': 1}"}')

    def test_richResults(self):
        """PNG, PDF, JSON and HTML bundles are sent decoded, with their own type."""
        png = b"\x89PNG\r\n\x1a\nrest"
        cases = [
            (
                {"image/png": base64.b64encode(png).decode(), "text/plain": "<Figure>"},
                "image/png",
                png,
            ),
            (
                {"application/pdf": base64.b64encode(b"%PDF-1").decode()},
                "application/pdf",
                b"%PDF-1",
            ),
            (
                {"application/json": {"a": [1]}, "text/plain": "x"},
                "application/json",
                b'{"a": [1]}',
            ),
            ({"text/html": "<b>x</b>", "text/plain": "x"}, "text/html; charset=utf-8", b"<b>x</b>"),
        ]
        for bundle, kind, body in cases:
            outputs = Outputs()
            outputs.add("display_data", {"data": bundle})
            answer = response(outputs)
            self.assertEqual((answer.headers["Content-Type"], answer.body), (kind, body))

    def test_emptyIs200(self):
        """A cell that outputs nothing answers 200 with an empty body."""
        self.assertEqual(response(Outputs()).body, b"")

    def test_responseInfo(self):
        """ResponseInfo sets the status and headers; bad output is refused."""
        base = response(Outputs())
        answer = applyResponseInfo(base, '{"status": 201, "headers": {"ETag": "v1"}}')
        self.assertEqual((answer.status, answer.headers["ETag"]), (201, "v1"))
        self.assertEqual(answer.headers["Content-Type"], "text/plain")
        for bad in ("nope", "[]", '{"status": "ok"}', '{"status": 99}', '{"headers": [1]}'):
            self.assertRaises(ResponseInfoError, applyResponseInfo, base, bad)


class SwaggerTests(SynchronousTestCase):
    def test_pathsMethodsParameters(self):
        """The document lists each path template, its methods, parameters and descriptions."""
        api = parseNotebook(
            notebook(
                code("# GET /hello/:name\n# Greets.\n1"),
                code("# POST /hello/:name\n1"),
                code("# GET /list\n1"),
            )
        )
        doc = buildSwagger(api.endpoints, "/srv/api.ipynb")
        self.assertEqual(doc["info"]["title"], "api")
        self.assertEqual(list(doc["paths"]), ["/hello/{name}", "/list"])
        get = doc["paths"]["/hello/{name}"]["get"]
        self.assertEqual(get["parameters"][0]["name"], "name")
        self.assertEqual(get["summary"], "Greets.")
        self.assertIn("post", doc["paths"]["/hello/{name}"])
