"""
Regressions for what fuzzing the API found: requests that got a 500 or a non-JSON error, and
places where the OpenAPI document and the server disagreed.
"""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, SynchronousTestCase

from kgw.api.openapi import buildOpenAPI
from kgw.api.websocket import ChannelsProtocol
from kgw.errors import InvalidRequest
from kgw.kernels.environment import kernelEnvironment
from tests.api.test_api import NOTEBOOK, APITestCase


class ServerErrorTests(APITestCase):
    """Requests that got a 500 now get a 4xx JSON error."""

    def test_deeplyNestedJSONIs400(self) -> None:
        """A body nested deeper than the JSON parser can go is a 400, not a 500."""
        deep = b"[" * 100_000
        for path in ("/api/kernels", "/api/sessions"):
            self.assertJSONError(self.call("POST", path, deep), 400)
        self.assertEqual(len(self.kernels), 0)

    def test_nulInResourceIs404(self) -> None:
        """A NUL character in a kernelspec resource name is a 404, not a 500."""
        for path in ("/kernelspecs/fake/a%00b", "/kernelspecs/fake/%00", "/kernelspecs/fake/%00/x"):
            self.assertJSONError(self.call("GET", path), 404)

    def test_envValueWithNULIs400(self) -> None:
        """An env value with a NUL character, which no process can take, is a 400."""
        answer = self.call("POST", "/api/kernels", {"env": {"KERNEL_X": "a\x00b"}})
        self.assertJSONError(answer, 400)
        self.assertEqual(len(self.kernels), 0)

    def test_envValueWithLoneSurrogateIs400(self) -> None:
        """An env value with a lone surrogate, which cannot be encoded, is a 400."""
        body = b'{"env": {"KERNEL_X": "\\ud800"}}'
        self.assertJSONError(self.call("POST", "/api/kernels", body), 400)
        self.assertEqual(len(self.kernels), 0)

    def test_environmentRefusesUnencodable(self) -> None:
        """The environment policy refuses values with NUL or lone surrogates, whatever the name."""
        for value in ("\x00", "a\x00", "\ud800", "x\udfff"):
            for name in ("KERNEL_X", "IGNORED"):
                self.assertRaises(
                    InvalidRequest, kernelEnvironment, {name: value}, {"PATH": "/bin"}
                )
        # Bytes that are not UTF-8 come from the OS as escaped surrogates, and go back as they came.
        env = kernelEnvironment({"KERNEL_X": "\udcff"}, {"PATH": "/bin"})
        self.assertEqual(env["KERNEL_X"], "\udcff")


class EncodingTests(APITestCase):
    """A URL that is not UTF-8 gets a JSON 400, as every other error, and no traceback."""

    def test_nonUTF8PathIs400(self) -> None:
        """Percent-encoded bytes that are not UTF-8 in the path get a JSON 400."""
        for path in ("/api/kernelspecs/%ff", "/kernelspecs/fake/%ff%fe", "/%c3/api"):
            answer = self.call("GET", path)
            self.assertJSONError(answer, 400)
            self.assertIn("UTF-8", answer.body["message"])

    def test_nonUTF8HostIs400(self) -> None:
        """A Host header that is not UTF-8 gets a JSON 400."""
        answer = self.call("GET", "/api", headers={b"Host": [b"\xff\xfe"]})
        self.assertJSONError(answer, 400)


def _validator(schemaName: str) -> Any:
    """A validator of request bodies against the component C{schemaName} of the document."""
    try:
        from openapi_schema_validator import OAS30Validator
    except ImportError:
        raise SkipTest("openapi_schema_validator is not installed")
    document = buildOpenAPI("0")
    return OAS30Validator(
        {"$ref": f"#/components/schemas/{schemaName}", "components": document["components"]}
    )


class SchemaAgreementTests(APITestCase):
    """A request body the document allows is served; one it forbids gets a 400."""

    def assertAgree(self, schemaName: str, method: str, path: str, body: Any) -> int:
        """The body is valid for C{schemaName} if and only if C{path} accepts it."""
        valid = _validator(schemaName).is_valid(body)
        # Encoded here, so that None is sent as a JSON null, not as no body.
        answer = self.call(method, path, json.dumps(body).encode())
        self.assertEqual(valid, answer.code < 400, f"{body!r}: {answer.code} {answer.body}")
        return answer.code

    def test_newKernel(self) -> None:
        """POST /api/kernels takes exactly what NewKernel allows: a null body is a 400."""
        for body in [
            {},
            None,
            {"name": None, "env": None},
            {"name": "fake", "env": {"KERNEL_X": "x", "OTHER": ""}},
            {"name": 1},
            {"env": []},
            {"env": {"KERNEL_X": None}},
            {"env": {"KERNEL_X": "x" * 65537}},
        ]:
            self.assertAgree("NewKernel", "POST", "/api/kernels", body)

    def test_newSession(self) -> None:
        """POST /api/sessions needs path and type, and takes nulls for the rest."""
        for body in [
            None,
            NOTEBOOK,
            dict(NOTEBOOK, path="b.ipynb", name=None, kernel=None),
            dict(NOTEBOOK, path="c.ipynb", kernel={"id": None, "name": None}),
            {},
            {"path": "d.ipynb"},
            {"type": "notebook"},
            dict(NOTEBOOK, path=None),
            dict(NOTEBOOK, path="e.ipynb", kernel=False),
            dict(NOTEBOOK, path="f.ipynb", kernel=[]),
            dict(NOTEBOOK, path="g.ipynb", name=3),
        ]:
            self.assertAgree("NewSession", "POST", "/api/sessions", body)

    def test_sessionPatch(self) -> None:
        """PATCH /api/sessions/<id> takes nulls for every field, and refuses wrong types."""
        session = self.call("POST", "/api/sessions", NOTEBOOK).body
        path = f"/api/sessions/{session['id']}"
        for body in [
            {},
            None,
            {"path": None, "name": None, "type": None, "kernel": None},
            {"kernel": {"id": None, "name": None}},
            {"name": 3},
            {"kernel": False},
        ]:
            self.assertAgree("SessionPatch", "PATCH", path, body)


class DocumentTests(SynchronousTestCase):
    def test_yamlDocumentIsAnObject(self) -> None:
        """The YAML document is described as what it holds: an object, as the JSON one is."""
        operation = buildOpenAPI("0")["paths"]["/api/swagger.yaml"]["get"]
        schema = operation["responses"]["200"]["content"]["application/yaml"]["schema"]
        self.assertEqual(schema, {"type": "object"})

    def test_kernelLimitOnSessionPatchDocumented(self) -> None:
        """A PATCH that starts a kernel past max_kernels gets 403, and that is documented."""
        operation = buildOpenAPI("0")["paths"]["/api/sessions/{session_id}"]["patch"]
        self.assertIn("403", operation["responses"])


class RecordingChannels:
    """Stands for a client's ZeroMQ channels: records what would go to the kernel."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[bytes]]] = []

    def send(self, channel: str, parts: list[bytes]) -> None:
        self.sent.append((channel, parts))


class LegacyChannelTests(SynchronousTestCase):
    """Which channel a legacy frame goes to."""

    def sent(self, message: dict[str, Any]) -> list[str]:
        protocol = ChannelsProtocol()
        protocol.kernel = SimpleNamespace(id="k")  # type: ignore[assignment]
        protocol.factory = SimpleNamespace(clock=Clock())  # type: ignore[assignment]
        protocol.channels = channels = RecordingChannels()  # type: ignore[assignment]
        protocol.onMessage(json.dumps(message).encode(), False)
        return [channel for channel, _ in channels.sent]

    def test_emptyChannelDropped(self) -> None:
        """A message whose channel is the empty string is dropped, not sent to shell."""
        header = {"msg_id": "m", "msg_type": "execute_request"}
        self.assertEqual(self.sent({"header": header, "channel": ""}), [])

    def test_missingChannelIsShell(self) -> None:
        """A message without a channel goes to shell, as in jupyter_server."""
        header = {"msg_id": "m", "msg_type": "execute_request"}
        self.assertEqual(self.sent({"header": header}), ["shell"])

    def test_nullChannelIsShell(self) -> None:
        """A message whose channel is null goes to shell, as in jupyter_server."""
        header = {"msg_id": "m", "msg_type": "execute_request"}
        self.assertEqual(self.sent({"header": header, "channel": None}), ["shell"])
