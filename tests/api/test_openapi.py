"""Tests for kgw.api.openapi: the OpenAPI document, and what its YAML form means."""

import json
from collections.abc import Iterator
from typing import Any

import yaml
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from kgw.api.openapi import buildOpenAPI, routes, toYAML

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _operations(doc: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """Yield (METHOD, path, operation) for every operation in ``doc``."""
    for path, item in doc["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def _resolve(doc: dict[str, Any], node: Any) -> Any:
    """Follow a local $ref (if any) and return the node it points at."""
    while isinstance(node, dict) and "$ref" in node:
        target = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


class BuildOpenAPITests(SynchronousTestCase):
    def setUp(self) -> None:
        self.doc = buildOpenAPI("1.2.3", "/gateway/")

    def test_validatesAgainstOpenapiSchema(self) -> None:
        """The document is a valid OpenAPI 3.0 document."""
        try:
            from openapi_spec_validator import validate
        except ImportError:
            try:
                from openapi_spec_validator import validate_spec as validate
            except ImportError:
                raise SkipTest("openapi_spec_validator is not installed")
        self.assertEqual(self.doc["openapi"], "3.0.3")
        validate(self.doc)

    def test_jsonCompatible(self) -> None:
        """The document survives a JSON round trip unchanged."""
        self.assertEqual(json.loads(json.dumps(self.doc)), self.doc)

    def test_info(self) -> None:
        """The info block carries the title kgw and the given version."""
        self.assertEqual(self.doc["info"]["title"], "kgw")
        self.assertEqual(self.doc["info"]["version"], "1.2.3")
        self.assertTrue(self.doc["info"]["description"])

    def test_baseUrlInServers(self) -> None:
        """The base URL given to buildOpenAPI is the server URL."""
        self.assertEqual(self.doc["servers"], [{"url": "/gateway/"}])
        self.assertEqual(buildOpenAPI("1")["servers"], [{"url": "/"}])

    def test_freshDocumentEachCall(self) -> None:
        """Changing one built document does not affect the next one."""
        self.doc["components"]["schemas"]["Error"]["required"].append("x")
        self.doc["paths"]["/api"]["get"]["responses"].clear()
        fresh = buildOpenAPI("1.2.3", "/gateway/")
        self.assertEqual(
            fresh["components"]["schemas"]["Error"]["required"],
            ["reason", "message"],
        )
        self.assertIn("200", fresh["paths"]["/api"]["get"]["responses"])

    def test_routesMatchDocument(self) -> None:
        """routes() lists exactly the operations the document describes."""
        documented = {(method, path) for method, path, _ in _operations(self.doc)}
        self.assertEqual(len(set(routes())), len(routes()))
        self.assertEqual(set(routes()), documented)

    def test_everyOperationAnswers401(self) -> None:
        """Every operation documents a 401 response."""
        for method, path, operation in _operations(self.doc):
            self.assertIn("401", operation["responses"], f"{method} {path}")

    def test_operationIdsPresentAndUnique(self) -> None:
        """Every operation has an operationId and a summary; ids are unique."""
        ids = []
        for method, path, operation in _operations(self.doc):
            self.assertTrue(operation.get("operationId"), f"{method} {path}")
            self.assertTrue(operation.get("summary"), f"{method} {path}")
            ids.append(operation["operationId"])
        self.assertEqual(len(ids), len(set(ids)))

    def test_errorsUseErrorSchema(self) -> None:
        """Every 4xx and 5xx response is a JSON body of the Error schema."""
        error_ref = {"$ref": "#/components/schemas/Error"}
        for method, path, operation in _operations(self.doc):
            for status, response in operation["responses"].items():
                if status[0] in "45":
                    response = _resolve(self.doc, response)
                    self.assertEqual(
                        response["content"],
                        {"application/json": {"schema": error_ref}},
                        f"{method} {path} {status}",
                    )

    def test_documentedStatuses(self) -> None:
        """Each operation documents the status codes the API can return."""
        expected = {
            ("GET", "/api"): {"200"},
            ("GET", "/api/kernelspecs"): {"200"},
            ("GET", "/api/kernelspecs/{kernel_name}"): {"200", "404"},
            ("GET", "/kernelspecs/{kernel_name}/{resource}"): {"200", "404"},
            ("GET", "/api/kernels"): {"200", "403"},
            ("POST", "/api/kernels"): {"201", "400", "403", "404", "413", "500"},
            ("GET", "/api/kernels/{kernel_id}"): {"200", "404"},
            ("DELETE", "/api/kernels/{kernel_id}"): {"204", "404"},
            ("POST", "/api/kernels/{kernel_id}/interrupt"): {"204", "404"},
            ("POST", "/api/kernels/{kernel_id}/restart"): {"200", "404", "500"},
            ("GET", "/api/kernels/{kernel_id}/channels"): {"101", "400", "404", "426"},
            ("GET", "/api/sessions"): {"200", "403"},
            ("POST", "/api/sessions"): {"201", "400", "403", "404", "413", "500"},
            ("GET", "/api/sessions/{session_id}"): {"200", "404"},
            ("PATCH", "/api/sessions/{session_id}"): {"200", "400", "403", "404", "413", "500"},
            ("DELETE", "/api/sessions/{session_id}"): {"204", "404"},
            ("GET", "/api/swagger.json"): {"200"},
            ("GET", "/api/swagger.yaml"): {"200"},
            ("GET", "/metrics"): {"200"},
        }
        actual = {
            (method, path): set(operation["responses"]) - {"401"}
            for method, path, operation in _operations(self.doc)
        }
        self.assertEqual(actual, expected)

    def test_createdResponsesHaveLocation(self) -> None:
        """201 responses declare a Location header."""
        for method, path, operation in _operations(self.doc):
            if "201" in operation["responses"]:
                headers = operation["responses"]["201"].get("headers", {})
                self.assertIn("Location", headers, f"{method} {path}")

    def test_noClosedResponseSchemas(self) -> None:
        """No schema forbids additional properties, so servers may add fields."""

        def walk(node: Any) -> None:
            if isinstance(node, dict):
                self.assertNotEqual(node.get("additionalProperties"), False)
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(self.doc)

    def test_security(self) -> None:
        """Header and query tokens are alternatives, and a token is optional."""
        schemes = self.doc["components"]["securitySchemes"]
        by_place = {(s["in"], s["name"]) for s in schemes.values()}
        self.assertEqual(by_place, {("header", "Authorization"), ("query", "token")})
        self.assertIn({}, self.doc["security"])
        self.assertEqual(len(self.doc["security"]), 3)

    def test_channelsMentionsSubprotocol(self) -> None:
        """The channels operation names the kernel websocket subprotocol."""
        operation = self.doc["paths"]["/api/kernels/{kernel_id}/channels"]["get"]
        self.assertIn("v1.kernel.websocket.jupyter.org", operation["description"])
        params = {p["name"]: p for p in operation["parameters"]}
        self.assertEqual(params["session_id"]["in"], "query")
        self.assertFalse(params["session_id"]["required"])

    def test_yamlMeansTheDocument(self) -> None:
        """The YAML form of the document loads back equal to it: every key and value as it was."""
        self.assertEqual(yaml.safe_load(toYAML(self.doc)), self.doc)

    def test_yamlWritesEveryValueInFull(self) -> None:
        """The YAML form has no anchors or aliases, though the document shares fragments."""
        events = list(yaml.parse(toYAML(self.doc)))
        self.assertFalse([e for e in events if isinstance(e, yaml.AliasEvent)])
        self.assertFalse([e for e in events if getattr(e, "anchor", None)])

    def test_yamlKeepsTheOrder(self) -> None:
        """The YAML form lists keys in the document's order: openapi, info, ..., components."""
        self.assertEqual(list(yaml.safe_load(toYAML(self.doc))), list(self.doc))


class LazyDocumentTests(SynchronousTestCase):
    def test_notLoadedUntilAskedFor(self) -> None:
        """
        Building the jupyter-websocket API neither reads the document nor imports PyYAML (about
        2 MB of an idle gateway's memory); the first request for it does.
        """
        import os
        import subprocess
        import sys

        program = (
            "import sys\n"
            "from kgw.api.app import GatewayAPI\n"
            "api = GatewayAPI(None, None, None, '/base/')\n"
            "print('yaml' in sys.modules)\n"
            "body = api._swaggerDocument('yaml')\n"
            "print('yaml' in sys.modules, body.count(b'url: /base/'))\n"
        )
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        environ = dict(os.environ, PYTHONPATH=root)
        output = subprocess.run(
            [sys.executable, "-c", program], env=environ, capture_output=True, check=True
        ).stdout
        self.assertEqual(output.decode().split(), ["False", "True", "1"])
