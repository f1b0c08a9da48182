"""The REST API, served in memory over an offline kernel registry."""

from __future__ import annotations

import json
import os
import re
from typing import Any, NamedTuple

import yaml
from twisted.trial.unittest import SynchronousTestCase
from twisted.web.http_headers import Headers

from kgw.api.app import GatewayAPI
from kgw.api.openapi import buildOpenAPI, routes
from kgw.http.edge import METRICS_ROUTE
from kgw.kernels.specs import specModel
from tests.fakes import LOGO, FakeProcess, makeAPI

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
UPGRADE = {
    "Upgrade": ["websocket"],
    "Connection": ["Upgrade"],
    "Sec-WebSocket-Version": ["13"],
    "Sec-WebSocket-Key": ["dGhlIHNhbXBsZSBub25jZQ=="],
}
NOTEBOOK = {"path": "a.ipynb", "type": "notebook", "name": "a", "kernel": {"name": "other"}}


class Answer(NamedTuple):
    code: int
    headers: Headers
    body: Any

    def header(self, name: str) -> str | None:
        values = self.headers.getRawHeaders(name)
        return values[0] if values else None


class APITestCase(SynchronousTestCase):
    """Each test gets its own gateway API, kernel listing allowed, at C{/}."""

    def setUp(self) -> None:
        self.stub, self.kernels = makeAPI(self)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, list[str]] | None = None,
        stub: Any = None,
    ) -> Answer:
        """
        Make a request and read the whole answer; a JSON body comes back decoded, any other as
        bytes. C{body} is sent as is if it is bytes, as JSON otherwise.
        """
        stub = stub or self.stub
        data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
        pending = stub.request(
            method, "http://gateway" + path, data=data, headers=headers, allow_redirects=False
        )
        stub.flush()
        response = self.successResultOf(pending)
        reading = response.content()
        stub.flush()
        content = self.successResultOf(reading)
        if response.headers.getRawHeaders("Content-Type") == ["application/json"]:
            content = json.loads(content)
        return Answer(response.code, response.headers, content)

    def startKernel(self, body: Any = None, stub: Any = None) -> dict[str, Any]:
        answer = self.call("POST", "/api/kernels", {} if body is None else body, stub=stub)
        self.assertEqual(answer.code, 201, answer.body)
        return answer.body

    def process(self, kernelId: str) -> FakeProcess:
        return self.kernels.get(kernelId).process

    def assertJSONError(self, answer: Answer, code: int) -> None:
        """The answer is an error C{code} with a JSON body of a string reason and message."""
        self.assertEqual(answer.code, code, answer.body)
        self.assertEqual(answer.headers.getRawHeaders("Content-Type"), ["application/json"])
        self.assertIsInstance(answer.body, dict)
        self.assertEqual(set(answer.body), {"reason", "message"})
        self.assertIsInstance(answer.body["reason"], str)
        self.assertIsInstance(answer.body["message"], str)


class MetadataTests(APITestCase):
    def test_version(self) -> None:
        """GET /api answers the gateway's version."""
        answer = self.call("GET", "/api")
        self.assertEqual(answer.code, 200)
        self.assertIsInstance(answer.body["version"], str)


class KernelspecTests(APITestCase):
    def test_listsEveryKernelspec(self) -> None:
        """GET /api/kernelspecs lists every kernelspec, and the default one's name."""
        answer = self.call("GET", "/api/kernelspecs")
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.body["default"], "fake")
        specs = answer.body["kernelspecs"]
        self.assertEqual(set(specs), {"fake", "other"})
        for name, model in specs.items():
            self.assertEqual(set(model), {"name", "spec", "resources"})
            self.assertEqual(model["name"], name)
        self.assertEqual(specs["other"]["spec"]["display_name"], "Other Python")

    def test_resourcesAreURLs(self) -> None:
        """A kernelspec's logo and kernel.js are listed as URLs of the resource route."""
        answer = self.call("GET", "/api/kernelspecs")
        self.assertEqual(
            answer.body["kernelspecs"]["fake"]["resources"],
            {
                "logo-64x64": "/kernelspecs/fake/logo-64x64.png",
                "kernel.js": "/kernelspecs/fake/kernel.js",
            },
        )

    def test_resourcesUnderBaseURL(self) -> None:
        """Kernelspec resource URLs start with the base URL."""
        stub, _ = makeAPI(self, baseURL="/gw/")
        answer = self.call("GET", "/gw/api/kernelspecs", stub=stub)
        resources = answer.body["kernelspecs"]["fake"]["resources"]
        self.assertEqual(len(resources), 2)
        for url in resources.values():
            self.assertTrue(url.startswith("/gw/kernelspecs/fake/"), url)

    def test_kernelspecByName(self) -> None:
        """GET /api/kernelspecs/<name> answers that kernelspec's model."""
        answer = self.call("GET", "/api/kernelspecs/fake")
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.body["name"], "fake")
        self.assertEqual(answer.body["spec"]["display_name"], "Fake Python")
        self.assertEqual(answer.body["spec"]["language"], "python")
        self.assertIn("logo-64x64", answer.body["resources"])

    def test_unknownKernelspecIs404(self) -> None:
        """An unknown kernelspec name gets a 404 JSON error."""
        self.assertJSONError(self.call("GET", "/api/kernelspecs/nope"), 404)


class KernelspecResourceTests(APITestCase):
    def test_resourceServed(self) -> None:
        """A kernelspec resource is served with its bytes and the content type of its name."""
        answer = self.call("GET", "/kernelspecs/fake/logo-64x64.png")
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.header("Content-Type"), "image/png")
        self.assertEqual(answer.body, LOGO)

    def test_missingResourceIs404(self) -> None:
        """A file missing from the kernelspec's directory gets a 404 JSON error."""
        self.assertJSONError(self.call("GET", "/kernelspecs/fake/logo-32x32.png"), 404)

    def test_dotDotRefused(self) -> None:
        """A C{..} segment cannot reach a file outside the kernelspec's directory."""
        self.assertJSONError(self.call("GET", "/kernelspecs/fake/../other/kernel.json"), 404)

    def test_encodedSlashesRefused(self) -> None:
        """Percent-encoded slashes cannot reach a file outside the kernelspec's directory."""
        answer = self.call("GET", "/kernelspecs/fake/..%2fother%2fkernel.json")
        self.assertJSONError(answer, 404)

    def test_encodedDotsRefused(self) -> None:
        """Percent-encoded dots cannot reach a file outside the kernelspec's directory."""
        answer = self.call("GET", "/kernelspecs/fake/%2e%2e/other/kernel.json")
        self.assertJSONError(answer, 404)

    def test_absolutePathRefused(self) -> None:
        """An absolute path as the resource gets a 404 JSON error."""
        outside = os.path.join(specModel(self.kernels.specs, "other")[1], "kernel.json")
        answer = self.call("GET", "/kernelspecs/fake/" + outside.replace("/", "%2F"))
        self.assertJSONError(answer, 404)

    def test_symlinkOutsideRefused(self) -> None:
        """A symlink in the kernelspec's directory to a file outside it is not followed."""
        secret = os.path.abspath(self.mktemp())
        with open(secret, "w") as f:
            f.write("secret")
        os.symlink(secret, os.path.join(specModel(self.kernels.specs, "fake")[1], "leak.txt"))
        self.assertJSONError(self.call("GET", "/kernelspecs/fake/leak.txt"), 404)


class StartKernelTests(APITestCase):
    def assertStartRefused(self, body: Any, code: int) -> None:
        """Starting a kernel with C{body} gets the JSON error C{code} and starts nothing."""
        self.assertJSONError(self.call("POST", "/api/kernels", body), code)
        self.assertEqual(len(self.kernels), 0)

    def test_startDefault(self) -> None:
        """POST /api/kernels with C{{}} starts the default kernel and answers 201 and its model."""
        answer = self.call("POST", "/api/kernels", {})
        self.assertEqual(answer.code, 201)
        model = answer.body
        self.assertEqual(answer.header("Location"), f"/api/kernels/{model['id']}")
        self.assertEqual(
            set(model), {"id", "name", "last_activity", "execution_state", "connections"}
        )
        self.assertEqual(model["name"], "fake")
        self.assertRegex(model["last_activity"], TIMESTAMP)
        self.assertIsInstance(model["execution_state"], str)
        self.assertEqual(model["connections"], 0)
        self.assertEqual(self.process(model["id"]).operations(), ["start"])

    def test_startWithEmptyBody(self) -> None:
        """POST /api/kernels with no body at all starts the default kernel."""
        answer = self.call("POST", "/api/kernels", b"")
        self.assertEqual(answer.code, 201)
        self.assertEqual(answer.body["name"], "fake")

    def test_startNamed(self) -> None:
        """POST /api/kernels with a name starts that kernelspec."""
        model = self.startKernel({"name": "other"})
        self.assertEqual(model["name"], "other")
        self.assertEqual(self.process(model["id"]).name, "other")

    def test_unknownNameIs404(self) -> None:
        """Starting an unknown kernelspec gets a 404 JSON error."""
        self.assertStartRefused({"name": "nope"}, 404)

    def test_malformedBodyIs400(self) -> None:
        """A malformed JSON body gets a 400 JSON error."""
        self.assertStartRefused(b'{"name": ', 400)

    def test_listBodyIs400(self) -> None:
        """A JSON body that is not an object gets a 400 JSON error."""
        self.assertStartRefused(["fake"], 400)

    def test_nonStringNameIs400(self) -> None:
        """A name that is not a string gets a 400 JSON error."""
        self.assertStartRefused({"name": 3}, 400)

    def test_envNonStringValueIs400(self) -> None:
        """An env value that is not a string gets a 400 JSON error."""
        self.assertStartRefused({"env": {"KERNEL_USERNAME": 1}}, 400)

    def test_envInvalidNameIs400(self) -> None:
        """An env variable name that is not a valid name gets a 400 JSON error."""
        self.assertStartRefused({"env": {"KERNEL-USER NAME": "u"}}, 400)

    def test_envListIs400(self) -> None:
        """An env that is not an object gets a 400 JSON error."""
        self.assertStartRefused({"env": ["KERNEL_USERNAME=u"]}, 400)

    def test_environment(self) -> None:
        """A kernel gets the requested KERNEL_ variables, not others, and KERNEL_GATEWAY=1."""
        model = self.startKernel({"env": {"KERNEL_USERNAME": "u", "OTHER": "x"}})
        [(operation, launch)] = self.process(model["id"]).calls
        self.assertEqual(operation, "start")
        self.assertEqual(launch["env"]["KERNEL_USERNAME"], "u")
        self.assertNotIn("OTHER", launch["env"])
        self.assertEqual(launch["env"]["KERNEL_GATEWAY"], "1")

    def test_kernelLimit(self) -> None:
        """With max_kernels 2, a third kernel is refused with a 403 JSON error."""
        stub, kernels = makeAPI(self, maxKernels=2)
        self.startKernel(stub=stub)
        self.startKernel(stub=stub)
        self.assertJSONError(self.call("POST", "/api/kernels", {}, stub=stub), 403)
        self.assertEqual(len(kernels), 2)


class KernelTests(APITestCase):
    def ids(self, answer: Answer) -> set[str]:
        self.assertEqual(answer.code, 200)
        return {model["id"] for model in answer.body}

    def test_list(self) -> None:
        """GET /api/kernels lists the running kernels."""
        started = {self.startKernel()["id"], self.startKernel({"name": "other"})["id"]}
        self.assertEqual(self.ids(self.call("GET", "/api/kernels")), started)

    def test_listWithTrailingSlash(self) -> None:
        """GET /api/kernels/ lists the running kernels too."""
        kernelId = self.startKernel()["id"]
        self.assertEqual(self.ids(self.call("GET", "/api/kernels/")), {kernelId})

    def test_listIgnoresCacheBuster(self) -> None:
        """A bare query string, as clients add to defeat caches, does not change the list."""
        kernelId = self.startKernel()["id"]
        self.assertEqual(self.ids(self.call("GET", "/api/kernels?1712345")), {kernelId})

    def test_listForbidden(self) -> None:
        """With list_kernels off, GET /api/kernels gets a 403 JSON error."""
        stub, _ = makeAPI(self, listKernels=False)
        self.assertJSONError(self.call("GET", "/api/kernels", stub=stub), 403)

    def test_get(self) -> None:
        """GET /api/kernels/<id> answers the kernel's model."""
        model = self.startKernel()
        answer = self.call("GET", f"/api/kernels/{model['id']}")
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.body, model)

    def test_unknownIs404(self) -> None:
        """Every kernel route answers an unknown kernel id with a 404 JSON error."""
        self.startKernel()
        routes = [("GET", ""), ("DELETE", ""), ("POST", "/interrupt"), ("POST", "/restart")]
        for method, suffix in routes:
            self.assertJSONError(self.call(method, "/api/kernels/nope" + suffix), 404)

    def test_unknownChannelsIs404(self) -> None:
        """A websocket upgrade to the channels of an unknown kernel gets a 404 JSON error."""
        answer = self.call("GET", "/api/kernels/nope/channels", headers=UPGRADE)
        self.assertJSONError(answer, 404)

    def test_channelsWithoutUpgradeIs400(self) -> None:
        """A plain GET of a kernel's channels gets a 400 JSON error."""
        kernelId = self.startKernel()["id"]
        self.assertJSONError(self.call("GET", f"/api/kernels/{kernelId}/channels"), 400)

    def test_delete(self) -> None:
        """DELETE shuts the kernel's process down, forgets the kernel and answers 204."""
        kernelId = self.startKernel()["id"]
        process = self.process(kernelId)
        answer = self.call("DELETE", f"/api/kernels/{kernelId}")
        self.assertEqual((answer.code, answer.body), (204, b""))
        self.assertEqual(process.operations(), ["start", "shutdown"])
        self.assertJSONError(self.call("GET", f"/api/kernels/{kernelId}"), 404)

    def test_interrupt(self) -> None:
        """POST .../interrupt interrupts the kernel's process and answers 204."""
        kernelId = self.startKernel()["id"]
        answer = self.call("POST", f"/api/kernels/{kernelId}/interrupt")
        self.assertEqual(answer.code, 204)
        self.assertEqual(self.process(kernelId).operations(), ["start", "interrupt"])

    def test_restart(self) -> None:
        """POST .../restart restarts the kernel's process, not at once, and answers its model."""
        model = self.startKernel()
        answer = self.call("POST", f"/api/kernels/{model['id']}/restart")
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.body["id"], model["id"])
        self.assertEqual(answer.body["name"], "fake")
        self.assertEqual(self.process(model["id"]).calls[1:], [("restart", {"now": False})])


class RoutingTests(APITestCase):
    def assertAllows(self, answer: Answer, *methods: str) -> None:
        self.assertJSONError(answer, 405)
        allowed = {m.strip() for m in (answer.header("Allow") or "").split(",")}
        self.assertTrue(set(methods) <= allowed, allowed)

    def test_wrongMethodOnCollectionIs405(self) -> None:
        """PUT /api/kernels gets a 405 JSON error saying which methods are allowed."""
        self.assertAllows(self.call("PUT", "/api/kernels"), "GET", "POST")

    def test_wrongMethodOnKernelIs405(self) -> None:
        """POST /api/kernels/<id> gets a 405 JSON error saying which methods are allowed."""
        kernelId = self.startKernel()["id"]
        self.assertAllows(self.call("POST", f"/api/kernels/{kernelId}"), "GET", "DELETE")

    def test_unknownPathIs404(self) -> None:
        """A path no route serves gets a 404 JSON error."""
        for path in ["/nope", "/api/nope"]:
            self.assertJSONError(self.call("GET", path), 404)

    def test_baseURL(self) -> None:
        """With a base URL, the API is served under it."""
        stub, _ = makeAPI(self, baseURL="/gw/")
        answer = self.call("GET", "/gw/api", stub=stub)
        self.assertEqual(answer.code, 200)
        self.assertIn("version", answer.body)

    def test_outsideBaseURLIs404(self) -> None:
        """With a base URL, a path outside it gets a 404 JSON error."""
        stub, _ = makeAPI(self, baseURL="/gw/")
        self.assertJSONError(self.call("GET", "/api", stub=stub), 404)

    def test_locationUnderBaseURL(self) -> None:
        """With a base URL, a new kernel's Location is under it."""
        stub, _ = makeAPI(self, baseURL="/gw/")
        answer = self.call("POST", "/gw/api/kernels", {}, stub=stub)
        self.assertEqual(answer.header("Location"), f"/gw/api/kernels/{answer.body['id']}")


class SessionTests(APITestCase):
    def createSession(self, body: dict[str, Any] = NOTEBOOK) -> dict[str, Any]:
        answer = self.call("POST", "/api/sessions", body)
        self.assertEqual(answer.code, 201, answer.body)
        return answer.body

    def test_create(self) -> None:
        """POST /api/sessions starts the named kernel and answers 201 and the session's model."""
        answer = self.call("POST", "/api/sessions", NOTEBOOK)
        self.assertEqual(answer.code, 201)
        model = answer.body
        self.assertEqual(answer.header("Location"), f"/api/sessions/{model['id']}")
        self.assertEqual(
            {key: model[key] for key in ("path", "name", "type")},
            {"path": "a.ipynb", "name": "a", "type": "notebook"},
        )
        self.assertEqual(model["notebook"], {"path": "a.ipynb", "name": "a"})
        self.assertEqual(model["kernel"]["name"], "other")
        self.assertIn(model["kernel"]["id"], self.kernels)

    def test_createSamePathReturnsExisting(self) -> None:
        """A second session for the same path is the first one, with no new kernel."""
        first = self.createSession()
        second = self.createSession()
        self.assertEqual(second["id"], first["id"])
        self.assertEqual(len(self.kernels), 1)

    def test_createWithoutPathIs400(self) -> None:
        """A session without a path gets a 400 JSON error."""
        body = {key: value for key, value in NOTEBOOK.items() if key != "path"}
        self.assertJSONError(self.call("POST", "/api/sessions", body), 400)

    def test_createWithoutTypeIs400(self) -> None:
        """A session without a type gets a 400 JSON error."""
        body = {key: value for key, value in NOTEBOOK.items() if key != "type"}
        self.assertJSONError(self.call("POST", "/api/sessions", body), 400)

    def test_list(self) -> None:
        """GET /api/sessions lists the sessions."""
        first = self.createSession()
        second = self.createSession(dict(NOTEBOOK, path="b.ipynb"))
        answer = self.call("GET", "/api/sessions")
        self.assertEqual(answer.code, 200)
        self.assertEqual({s["id"] for s in answer.body}, {first["id"], second["id"]})

    def test_listForbidden(self) -> None:
        """With list_kernels off, GET /api/sessions gets a 403 JSON error."""
        stub, _ = makeAPI(self, listKernels=False)
        self.assertJSONError(self.call("GET", "/api/sessions", stub=stub), 403)

    def test_get(self) -> None:
        """GET /api/sessions/<id> answers the session's model."""
        model = self.createSession()
        answer = self.call("GET", f"/api/sessions/{model['id']}")
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.body, model)

    def test_unknownIs404(self) -> None:
        """Every session route answers an unknown session id with a 404 JSON error."""
        self.createSession()
        for method, body in [("GET", None), ("PATCH", {"name": "b"}), ("DELETE", None)]:
            self.assertJSONError(self.call(method, "/api/sessions/nope", body), 404)

    def test_rename(self) -> None:
        """PATCH with a name and path renames the session, on the same kernel."""
        model = self.createSession()
        answer = self.call(
            "PATCH", f"/api/sessions/{model['id']}", {"name": "b", "path": "b.ipynb"}
        )
        self.assertEqual(answer.code, 200)
        self.assertEqual((answer.body["name"], answer.body["path"]), ("b", "b.ipynb"))
        self.assertEqual(answer.body["notebook"], {"path": "b.ipynb", "name": "b"})
        self.assertEqual(answer.body["kernel"]["id"], model["kernel"]["id"])

    def test_changeKernel(self) -> None:
        """PATCH with a kernel name moves the session to a new kernel and shuts the old down."""
        model = self.createSession()
        old = model["kernel"]["id"]
        process = self.process(old)
        answer = self.call("PATCH", f"/api/sessions/{model['id']}", {"kernel": {"name": "fake"}})
        self.assertEqual(answer.code, 200)
        self.assertNotEqual(answer.body["kernel"]["id"], old)
        self.assertEqual(answer.body["kernel"]["name"], "fake")
        self.assertEqual(process.operations(), ["start", "shutdown"])
        self.assertJSONError(self.call("GET", f"/api/kernels/{old}"), 404)

    def test_changeToUnknownKernelIs400(self) -> None:
        """PATCH with the id of a kernel that does not exist gets a 400 JSON error."""
        model = self.createSession()
        answer = self.call("PATCH", f"/api/sessions/{model['id']}", {"kernel": {"id": "nope"}})
        self.assertJSONError(answer, 400)

    def test_delete(self) -> None:
        """DELETE answers 204 and shuts the session's kernel down."""
        model = self.createSession()
        answer = self.call("DELETE", f"/api/sessions/{model['id']}")
        self.assertEqual(answer.code, 204)
        self.assertJSONError(self.call("GET", f"/api/sessions/{model['id']}"), 404)
        self.assertJSONError(self.call("GET", f"/api/kernels/{model['kernel']['id']}"), 404)

    def test_sessionOfDeletedKernelDisappears(self) -> None:
        """A session whose kernel was deleted is no longer listed."""
        model = self.createSession()
        self.call("DELETE", f"/api/kernels/{model['kernel']['id']}")
        self.assertEqual(self.call("GET", "/api/sessions").body, [])


class OpenAPITests(APITestCase):
    def test_swaggerJSON(self) -> None:
        """GET /api/swagger.json answers the OpenAPI document."""
        answer = self.call("GET", "/api/swagger.json")
        self.assertEqual(answer.code, 200)
        self.assertIn("openapi", answer.body)
        self.assertIn("paths", answer.body)

    def test_swaggerYAML(self) -> None:
        """GET /api/swagger.yaml answers the same document, as YAML (application/yaml)."""
        answer = self.call("GET", "/api/swagger.yaml")
        self.assertEqual(answer.code, 200)
        self.assertEqual(answer.header("Content-Type"), "application/yaml")
        self.assertEqual(yaml.safe_load(answer.body), self.call("GET", "/api/swagger.json").body)

    def test_everyRouteDocumented(self) -> None:
        """
        Every route the gateway serves (the app's, and the edge's metrics page) is in routes() and
        in the document, and nothing more.
        """
        served = {("GET", METRICS_ROUTE)}
        for rule in GatewayAPI.app.url_map.iter_rules():
            path = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule)
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                served.add((method, path))
        self.assertEqual(served, set(routes()))
        paths = buildOpenAPI("0")["paths"]
        for method, path in served:
            self.assertIn(method.lower(), paths.get(path, {}), f"{method} {path}")
