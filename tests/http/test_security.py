"""
Security checks in memory: wrong tokens on every documented route, path traversal on kernelspec
resources, and the bounds on a kernel's requested environment.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kgw.api.app import GatewayAPI
from kgw.api.factory import ChannelsFactory
from kgw.api.openapi import routes
from kgw.api.sessions import SessionRegistry
from kgw.gateway import buildSite
from kgw.http.access import AccessPolicy
from kgw.http.edge import Edge
from kgw.kernels.specs import specModel
from tests.api.test_api import NOTEBOOK, UPGRADE, APITestCase
from tests.fakes import makeAPI, makeRegistry

TOKEN = "9c1e4b7a2f6d"
RIGHT = {"Authorization": [f"token {TOKEN}"]}
WRONG_HEADERS = [
    "",
    "token",
    "token ",
    f"token {TOKEN}x",
    f"token {TOKEN[:-1]}",
    f"token {TOKEN.upper()}",
    f"token {TOKEN} {TOKEN}",
    f"Bearer {TOKEN}",
    f"Basic {TOKEN}",
    TOKEN,
]
WRONG_QUERIES = ["", "x", f"{TOKEN}x", TOKEN[:-1], TOKEN.upper(), f"{TOKEN}%00", f"%20{TOKEN}"]


class WrongTokenTests(APITestCase):
    """With a token set, a wrong token gets 401 on every route of the OpenAPI document."""

    def setUp(self) -> None:
        self.stub, self.kernels = makeAPI(self, access=AccessPolicy(TOKEN))
        self.kernelId = self.call("POST", "/api/kernels", {}, headers=RIGHT).body["id"]
        self.sessionId = self.call("POST", "/api/sessions", NOTEBOOK, headers=RIGHT).body["id"]
        self.started = {kernel.id for kernel in self.kernels.kernels()}

    def routes(self) -> Iterator[tuple[str, str, dict[str, list[str]]]]:
        """Every documented route, its path parameters filled with things that exist."""
        values = {
            "kernel_id": self.kernelId,
            "session_id": self.sessionId,
            "kernel_name": "fake",
            "resource": "logo-64x64.png",
        }
        for method, template in routes():
            path = template.format(**values)
            yield method, path, UPGRADE if path.endswith("/channels") else {}

    def assertUntouched(self) -> None:
        """No kernel was started, stopped, interrupted or restarted, and the session is there."""
        self.assertEqual({kernel.id for kernel in self.kernels.kernels()}, self.started)
        for kernel in self.kernels.kernels():
            self.assertEqual(kernel.process.operations(), ["start"])
        answer = self.call("GET", f"/api/sessions/{self.sessionId}", headers=RIGHT)
        self.assertEqual(answer.code, 200)

    def test_everyRouteDocumentedIsCovered(self) -> None:
        """The routes checked here are those of the document, the websocket handshake included."""
        checked = {(method, path) for method, path, _ in self.routes()}
        self.assertEqual(len(checked), len(routes()))
        self.assertIn(("GET", f"/api/kernels/{self.kernelId}/channels"), checked)

    def test_wrongHeaderTokenIs401(self) -> None:
        """Every documented route answers a wrong or malformed Authorization header with 401."""
        for method, path, extra in self.routes():
            for value in WRONG_HEADERS:
                answer = self.call(method, path, headers={**extra, "Authorization": [value]})
                self.assertJSONError(answer, 401)
        self.assertUntouched()

    def test_wrongQueryTokenIs401(self) -> None:
        """Every documented route answers a wrong C{?token=} with 401."""
        for method, path, extra in self.routes():
            for value in WRONG_QUERIES:
                answer = self.call(method, f"{path}?token={value}", headers=extra)
                self.assertJSONError(answer, 401)
        self.assertUntouched()

    def test_wrongTokensTogetherAre401(self) -> None:
        """Several wrong tokens, in the header and the query, do not add up to a right one."""
        headers = {"Authorization": [f"token {TOKEN[:6]}", f"token {TOKEN[6:]}"]}
        for method, path, extra in self.routes():
            answer = self.call(method, f"{path}?token=x&token=y", headers={**extra, **headers})
            self.assertJSONError(answer, 401)
        self.assertUntouched()

    def test_rightTokenPasses(self) -> None:
        """With the right token no documented route answers 401: the 401s are the token's."""
        for method, path, extra in self.routes():
            answer = self.call(method, path, headers={**extra, **RIGHT})
            self.assertNotEqual(answer.code, 401, f"{method} {path}")


def rawGet(edge: Edge, target: bytes) -> tuple[bytes, bytes]:
    """
    Send C{GET target} byte for byte to C{edge} through Twisted's HTTP server (no client
    normalises the path on the way); return the status line and the body.
    """
    site = buildSite(edge)
    site.reactor = Clock()
    protocol = site.buildProtocol(IPv4Address("TCP", "127.0.0.1", 50000))
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"GET " + target + b" HTTP/1.1\r\nHost: gateway\r\n\r\n")
    protocol.connectionLost(Failure(ConnectionDone()))
    head, _, body = transport.value().partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0], body


class TraversalTests(SynchronousTestCase):
    """A kernelspec resource URL cannot reach a file outside that kernelspec's directory."""

    def setUp(self) -> None:
        self.kernels = makeRegistry(self)
        api = GatewayAPI(self.kernels, SessionRegistry(self.kernels), ChannelsFactory(1024))
        self.edge = Edge(api.app.resource())
        kernelsDir = os.path.dirname(specModel(self.kernels.specs, "fake")[1])
        self.secret = os.path.join(os.path.dirname(kernelsDir), "secret.txt")
        with open(self.secret, "w") as f:
            f.write("TOPSECRET")

    def assertNotServed(self, target: bytes) -> None:
        status, body = rawGet(self.edge, target)
        self.assertIn(b" 404 ", status, target)
        self.assertNotIn(b"TOPSECRET", body)
        self.assertNotIn(b"Other Python", body)
        self.assertNotIn(b"ipykernel", body)

    def test_controlIsServed(self) -> None:
        """The raw requests of these tests do reach files: a resource of the kernelspec is 200."""
        status, body = rawGet(self.edge, b"/kernelspecs/other/kernel.json")
        self.assertIn(b" 200 ", status)
        self.assertIn(b"Other Python", body)

    def test_dotDotVariants(self) -> None:
        """C{..} plain, percent-encoded in any case, half-encoded or double-encoded is a 404."""
        for dots in [
            b"..",
            b"%2e%2e",
            b"%2E%2E",
            b".%2e",
            b"%2e.",
            b"%252e%252e",
            b"%25252e%25252e",
        ]:
            for slash in [b"/", b"%2f", b"%2F", b"%252f", b"%5c", b"\\"]:
                self.assertNotServed(b"/kernelspecs/fake/" + dots + slash + b"other/kernel.json")
                self.assertNotServed(b"/kernelspecs/fake/" + (dots + slash) * 2 + b"secret.txt")

    def test_throughTheKernelName(self) -> None:
        """A traversal in the kernelspec name is a 404 too."""
        for name in [b"..", b"%2e%2e", b"..%2fkernels%2fother", b"fake%2f..%2fother", b"%00"]:
            self.assertNotServed(b"/kernelspecs/" + name + b"/kernel.json")
            self.assertNotServed(b"/api/kernelspecs/" + name)

    def test_absoluteAndOddPaths(self) -> None:
        """An absolute path, an empty segment, NUL and C{....//} forms are 404s."""
        absolute = self.secret.encode().replace(b"/", b"%2f")
        for resource in [absolute, b"%2f" + absolute, b"....//....//secret.txt", b"%00", b"./"]:
            self.assertNotServed(b"/kernelspecs/fake/" + resource)


class EnvironmentBoundsTests(APITestCase):
    """The env of a start request: names C{[A-Za-z_][A-Za-z0-9_]*}, values short strings."""

    def assertRefused(self, env: Any) -> None:
        answer = self.call("POST", "/api/kernels", {"env": env})
        self.assertJSONError(answer, 400)
        self.assertEqual(len(self.kernels), 0, env)

    def test_badNames(self) -> None:
        """A name that is empty, starts with a digit, or has any other character is a 400."""
        for name in ["", "1KERNEL", "KERNEL-X", "KERNEL X", "KERNEL_A=B", "KÉRNEL", "KERNEL_\x00"]:
            self.assertRefused({name: "x"})
        for name in ["KERNEL_X\n", " KERNEL_X", "KERNEL_X.Y", "KERNEL_Ⅸ"]:
            self.assertRefused({name: "x"})

    def test_valuesAreStrings(self) -> None:
        """A value that is not a string is a 400."""
        for value in [1, 1.5, None, True, [], {}, ["x"]]:
            self.assertRefused({"KERNEL_X": value})

    def test_valueLengthBounded(self) -> None:
        """A value of up to 64 KiB is taken; one character more is a 400."""
        self.assertRefused({"KERNEL_X": "x" * (64 * 1024 + 1)})
        answer = self.call("POST", "/api/kernels", {"env": {"KERNEL_X": "x" * (64 * 1024)}})
        self.assertEqual(answer.code, 201)

    def test_validNamesTaken(self) -> None:
        """Names of letters, digits and underscores, not starting with a digit, are taken."""
        env = {"KERNEL_X": "1", "_KERNEL": "2", "kernel_lower": "3", "KERNEL_9": "4"}
        answer = self.call("POST", "/api/kernels", {"env": env})
        self.assertEqual(answer.code, 201)
