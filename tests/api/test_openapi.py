"""Tests for kgw.api.openapi: the OpenAPI document and the YAML emitter."""

import json

from twisted.trial.unittest import SkipTest, SynchronousTestCase

from kgw.api.openapi import ROUTES, build_openapi, to_yaml

HTTP_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")


def _operations(doc):
    """Yield (METHOD, path, operation) for every operation in ``doc``."""
    for path, item in doc["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield method.upper(), path, item[method]


def _resolve(doc, node):
    """Follow a local $ref (if any) and return the node it points at."""
    while isinstance(node, dict) and "$ref" in node:
        target = doc
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def _load_yaml(text):
    try:
        import yaml
    except ImportError:
        raise SkipTest("PyYAML is not installed")
    return yaml.safe_load(text)


class BuildOpenAPITests(SynchronousTestCase):
    def setUp(self):
        self.doc = build_openapi("1.2.3", "/gateway/")

    def test_validates_against_openapi_schema(self):
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

    def test_json_compatible(self):
        """The document survives a JSON round trip unchanged."""
        self.assertEqual(json.loads(json.dumps(self.doc)), self.doc)

    def test_info(self):
        """The info block carries the title kgw and the given version."""
        self.assertEqual(self.doc["info"]["title"], "kgw")
        self.assertEqual(self.doc["info"]["version"], "1.2.3")
        self.assertTrue(self.doc["info"]["description"])

    def test_base_url_in_servers(self):
        """The base URL given to build_openapi is the server URL."""
        self.assertEqual(self.doc["servers"], [{"url": "/gateway/"}])
        self.assertEqual(build_openapi("1")["servers"], [{"url": "/"}])

    def test_fresh_document_each_call(self):
        """Changing one built document does not affect the next one."""
        self.doc["components"]["schemas"]["Error"]["required"].append("x")
        self.doc["paths"]["/api"]["get"]["responses"].clear()
        fresh = build_openapi("1.2.3", "/gateway/")
        self.assertEqual(
            fresh["components"]["schemas"]["Error"]["required"],
            ["reason", "message"],
        )
        self.assertIn("200", fresh["paths"]["/api"]["get"]["responses"])

    def test_routes_match_document(self):
        """ROUTES lists exactly the operations the document describes."""
        documented = {(method, path) for method, path, _ in _operations(self.doc)}
        self.assertEqual(len(set(ROUTES)), len(ROUTES))
        self.assertEqual(set(ROUTES), documented)

    def test_every_operation_answers_401(self):
        """Every operation documents a 401 response."""
        for method, path, operation in _operations(self.doc):
            self.assertIn("401", operation["responses"], f"{method} {path}")

    def test_operation_ids_present_and_unique(self):
        """Every operation has an operationId and a summary; ids are unique."""
        ids = []
        for method, path, operation in _operations(self.doc):
            self.assertTrue(operation.get("operationId"), f"{method} {path}")
            self.assertTrue(operation.get("summary"), f"{method} {path}")
            ids.append(operation["operationId"])
        self.assertEqual(len(ids), len(set(ids)))

    def test_errors_use_error_schema(self):
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

    def test_documented_statuses(self):
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

    def test_created_responses_have_location(self):
        """201 responses declare a Location header."""
        for method, path, operation in _operations(self.doc):
            if "201" in operation["responses"]:
                headers = operation["responses"]["201"].get("headers", {})
                self.assertIn("Location", headers, f"{method} {path}")

    def test_no_closed_response_schemas(self):
        """No schema forbids additional properties, so servers may add fields."""

        def walk(node):
            if isinstance(node, dict):
                self.assertNotEqual(node.get("additionalProperties"), False)
                for value in node.values():
                    walk(value)
            elif isinstance(node, list):
                for value in node:
                    walk(value)

        walk(self.doc)

    def test_security(self):
        """Header and query tokens are alternatives, and a token is optional."""
        schemes = self.doc["components"]["securitySchemes"]
        by_place = {(s["in"], s["name"]) for s in schemes.values()}
        self.assertEqual(by_place, {("header", "Authorization"), ("query", "token")})
        self.assertIn({}, self.doc["security"])
        self.assertEqual(len(self.doc["security"]), 3)

    def test_channels_mentions_subprotocol(self):
        """The channels operation names the kernel websocket subprotocol."""
        operation = self.doc["paths"]["/api/kernels/{kernel_id}/channels"]["get"]
        self.assertIn("v1.kernel.websocket.jupyter.org", operation["description"])
        params = {p["name"]: p for p in operation["parameters"]}
        self.assertEqual(params["session_id"]["in"], "query")
        self.assertFalse(params["session_id"]["required"])

    def test_yaml_round_trip(self):
        """to_yaml of the document loads back (PyYAML) equal to it."""
        self.assertEqual(_load_yaml(to_yaml(self.doc)), self.doc)


class ToYAMLTests(SynchronousTestCase):
    TRICKY = (
        "",
        "a: b",
        "key: value # comment",
        "#hash",
        "- leading dash",
        "-",
        "? question",
        "yes",
        "no",
        "on",
        "off",
        "true",
        "null",
        "~",
        "1.0",
        "1e3",
        "0x1F",
        "012",
        ".inf",
        "2024-01-01",
        "line1\nline2",
        "trailing newline\n",
        "\r\n",
        "tab\there",
        "  leading and trailing spaces  ",
        'quote " and \\ backslash',
        "'single'",
        "&anchor *alias !tag %directive @at `tick` |pipe >fold",
        "{flow: [1, 2]}",
        "caf\u00e9 \u65e5\u672c \U0001f600",
        "\x00\x07\x1b\x7f",
        "\x85 \u2028 \u2029 \ufeff",
        "\ud800 lone surrogate",
        "---",
        "...",
    )

    def assertRoundTrips(self, value):
        self.assertEqual(_load_yaml(to_yaml(value)), value)

    def test_tricky_strings_round_trip(self):
        """Strings that look like other YAML types or syntax stay strings."""
        for text in self.TRICKY:
            self.assertRoundTrips(text)
            self.assertRoundTrips({text: text})
            self.assertRoundTrips([text, {"k": [text]}])

    def test_nested_empties_round_trip(self):
        """Empty mappings and sequences at any depth round-trip."""
        value = {
            "empty_dict": {},
            "empty_list": [],
            "list_of_empties": [{}, [], [[]], [{}]],
            "deep": {"a": {"b": {"c": {}}}, "d": [[[[]]]]},
            "": {"": []},
        }
        self.assertRoundTrips(value)
        self.assertRoundTrips({})
        self.assertRoundTrips([])
        self.assertEqual(to_yaml({}), "{}\n")
        self.assertEqual(to_yaml([]), "[]\n")

    def test_scalars_round_trip(self):
        """None, booleans, integers and floats keep their type and value."""
        values = [
            None,
            True,
            False,
            0,
            -7,
            10**30,
            0.0,
            -0.0,
            1.5,
            1e20,
            1e-7,
            -2.5e-300,
            float("inf"),
            float("-inf"),
        ]
        self.assertRoundTrips(values)
        for value in values:
            loaded = _load_yaml(to_yaml(value))
            self.assertEqual(type(loaded), type(value))
            self.assertEqual(loaded, value)

    def test_nested_lists_and_mappings_round_trip(self):
        """Lists of mappings, lists of lists and mixed nesting round-trip."""
        value = [
            {"a": 1, "b": [1, 2, {"c": None}], "d": {"e": [[1, 2], [3]]}},
            [[1, [2, [3]]], {"x": {"y": "z"}}],
            "plain",
        ]
        self.assertRoundTrips(value)
        self.assertRoundTrips({"top": value})

    def test_long_key_round_trips(self):
        """Keys longer than YAML's implicit-key limit round-trip."""
        key = "k" * 2000
        self.assertRoundTrips({key: "v", "short": 1})
        self.assertRoundTrips({key: {"nested": [1]}})
        self.assertRoundTrips([{key: []}])

    def test_block_layout(self):
        """Output is block style with 2-space indents and quoted strings."""
        value = {"a": [{"b": 1, "c": "yes"}, [2, 3]], "d": {"e": {}}}
        expected = '"a":\n  - "b": 1\n    "c": "yes"\n  - - 2\n    - 3\n"d":\n  "e": {}\n'
        self.assertEqual(to_yaml(value), expected)

    def test_tuples_emitted_as_sequences(self):
        """Tuples are written as YAML sequences."""
        self.assertEqual(to_yaml({"t": (1, "x")}), '"t":\n  - 1\n  - "x"\n')

    def test_rejects_non_json_data(self):
        """Non-JSON values and non-string keys raise TypeError."""
        self.assertRaises(TypeError, to_yaml, {"a": object()})
        self.assertRaises(TypeError, to_yaml, {1: "a"})
        self.assertRaises(TypeError, to_yaml, b"bytes")
