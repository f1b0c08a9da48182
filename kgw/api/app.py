"""The REST API and the channels websocket route of jupyter-websocket mode, as a Klein app."""

from __future__ import annotations

import base64
import binascii
import json
import os
from typing import Any

from klein import Klein
from twisted.web.iweb import IRequest

from kgw import __version__
from kgw.api.factory import ChannelsFactory, ChannelsResource
from kgw.api.openapi import buildOpenAPI, toYAML
from kgw.api.sessions import SessionRegistry
from kgw.errors import Forbidden, InvalidRequest
from kgw.http.errors import handleFailure, writeError
from kgw.http.files import fileUnder, serveFile
from kgw.http.forward import Forwarder, wasForwarded
from kgw.kernels.cluster import clusterModels, peerOf
from kgw.kernels.registry import KernelRegistry
from kgw.kernels.specs import specModel

JSON = b"application/json"


def jsonBody(request: IRequest, empty: Any = None) -> Any:
    """
    The request's JSON body, or C{empty} when it is empty (a JSON C{null} is C{None}).

    @raise InvalidRequest: if the body is not valid JSON.
    """
    raw = request.content.read() if request.content is not None else b""
    if not raw.strip():
        return empty
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidRequest(f"Invalid JSON in body of request: {e}") from None
    except RecursionError:
        raise InvalidRequest("Invalid JSON in body of request: nested too deeply") from None


def respond(request: IRequest, body: Any, code: int = 200) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"Content-Type", JSON)
    return json.dumps(body).encode("utf-8")


def queryArg(request: IRequest, name: str) -> str:
    values = request.args.get(name.encode("ascii"), [])
    return values[0].decode("utf-8", "replace") if values else ""


# The websocket versions Autobahn speaks; 13 is RFC 6455's.
WEBSOCKET_VERSIONS = (b"13", b"8")


def handshakeRefusal(request: IRequest) -> bytes | None:
    """
    The JSON answer to a websocket handshake that Autobahn would refuse with a bare HTTP error,
    or C{None} for one it accepts: no C{Upgrade: websocket} or C{Connection: upgrade} (400),
    a C{Sec-WebSocket-Key} that is not 16 bytes in base64 (400), a version other than 13 or 8
    (426, with the version to use, as RFC 6455 asks).
    """
    if (request.getHeader(b"upgrade") or b"").strip().lower() != b"websocket":
        return writeError(request, 400, "A websocket upgrade request is required")
    tokens = (request.getHeader(b"connection") or b"").lower().split(b",")
    if b"upgrade" not in (token.strip() for token in tokens):
        return writeError(request, 400, "A websocket handshake needs 'Connection: Upgrade'")
    key = (request.getHeader(b"sec-websocket-key") or b"").strip()
    try:
        valid = len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        valid = False
    if not valid:
        return writeError(
            request, 400, "A websocket handshake needs a Sec-WebSocket-Key of 16 bytes in base64"
        )
    version = (request.getHeader(b"sec-websocket-version") or b"").strip()
    if version not in WEBSOCKET_VERSIONS:
        request.setHeader(b"Sec-WebSocket-Version", b", ".join(WEBSOCKET_VERSIONS))
        shown = version.decode("latin-1")
        return writeError(request, 426, f"Websocket version {shown!r} is not supported; use 13")
    return None


class GatewayAPI:
    """
    The jupyter-websocket API over a kernel registry and a session registry.

    Routes are relative: L{kgw.http.edge} mounts the app under C{base_url}, which is also the
    prefix of the URLs the API hands out (C{Location}, kernelspec resources).
    """

    app = Klein()
    # A "//" in a path must not be answered with a redirect: it is simply not a route.
    app.url_map.merge_slashes = False

    def __init__(
        self,
        kernels: KernelRegistry,
        sessions: SessionRegistry,
        channels: ChannelsFactory,
        baseURL: str = "/",
        listKernels: bool = False,
        forwarder: Forwarder | None = None,
    ) -> None:
        self.kernels = kernels
        self.forwarder = forwarder
        self.sessions = sessions
        self.channels = channels
        self.baseURL = baseURL
        self.listKernels = listKernels
        self._swagger: dict[str, bytes] = {}

    def _swaggerDocument(self, form: str) -> bytes:
        """The OpenAPI document as JSON or YAML, made on first demand and kept."""
        if not self._swagger:
            spec = buildOpenAPI(__version__, self.baseURL)
            self._swagger["json"] = json.dumps(spec, indent=1).encode("utf-8")
            self._swagger["yaml"] = toYAML(spec).encode("utf-8")
        return self._swagger[form]

    @app.handle_errors(Exception)
    def _error(self, request: IRequest, failure: Any) -> bytes:
        return handleFailure(request, failure)

    # Metadata

    @app.route("/api", methods=["GET"], strict_slashes=False)
    def version(self, request: IRequest) -> bytes:
        return respond(request, {"version": __version__})

    @app.route("/api/swagger.json", methods=["GET"])
    def swaggerJSON(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", JSON)
        return self._swaggerDocument("json")

    @app.route("/api/swagger.yaml", methods=["GET"])
    def swaggerYAML(self, request: IRequest) -> bytes:
        request.setHeader(b"Content-Type", b"application/yaml")
        return self._swaggerDocument("yaml")

    # Kernelspecs

    def _specModel(self, name: str, spec: dict[str, Any], resourceDir: str) -> dict[str, Any]:
        return {
            "name": name,
            "spec": spec,
            "resources": specResources(name, resourceDir, self.baseURL),
        }

    @app.route("/api/kernelspecs", methods=["GET"], strict_slashes=False)
    def kernelspecs(self, request: IRequest) -> bytes:
        found = self.kernels.specs.get_all_specs()
        specs = {
            name: self._specModel(name, entry["spec"], entry["resource_dir"])
            for name, entry in found.items()
        }
        return respond(request, {"default": self.kernels.defaultKernelName, "kernelspecs": specs})

    @app.route("/api/kernelspecs/<kernel_name>", methods=["GET"], strict_slashes=False)
    def kernelspec(self, request: IRequest, kernel_name: str) -> bytes:
        spec, resourceDir = specModel(self.kernels.specs, kernel_name)
        return respond(request, self._specModel(kernel_name, spec, resourceDir))

    @app.route("/kernelspecs/<kernel_name>/<path:resource>", methods=["GET"])
    def kernelspecResource(self, request: IRequest, kernel_name: str, resource: str) -> bytes:
        _, resourceDir = specModel(self.kernels.specs, kernel_name)
        return serveFile(request, fileUnder(resourceDir, resource))

    # Kernels

    @app.route("/api/kernels", methods=["GET"], strict_slashes=False)
    async def listKernelsRoute(self, request: IRequest) -> bytes:
        if not self.listKernels:
            raise Forbidden("Listing kernels is disabled (list_kernels is False)")
        # With a shared kernel store, every gateway's kernels: one view of the cluster.
        return respond(request, await clusterModels(self.kernels.store, self.kernels.kernels()))

    @app.route("/api/kernels", methods=["POST"], strict_slashes=False)
    async def startKernel(self, request: IRequest) -> bytes:
        body = jsonBody(request, {})
        if not isinstance(body, dict):
            raise InvalidRequest("The body must be a JSON object")
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            raise InvalidRequest("name must be a string")
        kernel = await self.kernels.startKernel(name, body.get("env"))
        request.setHeader(b"Location", f"{self.baseURL}api/kernels/{kernel.id}".encode())
        return respond(request, kernel.model(), 201)

    async def _byOwner(self, request: IRequest, kernelId: str) -> bytes | None:
        """
        With a kernel store shared by several gateways: the answer of the gateway that owns
        kernel C{kernelId}, when another does, to which the request is forwarded; else C{None}.
        """
        if self.forwarder is None or kernelId in self.kernels or wasForwarded(request):
            return None
        peer = await peerOf(self.kernels.store, kernelId)
        if peer is None:
            return None
        owner, address = peer
        return await self.forwarder.forward(request, address, owner)

    @app.route("/api/kernels/<kernel_id>", methods=["GET"], strict_slashes=False)
    async def kernel(self, request: IRequest, kernel_id: str) -> bytes:
        forwarded = await self._byOwner(request, kernel_id)
        if forwarded is not None:
            return forwarded
        return respond(request, self.kernels.get(kernel_id).model())

    @app.route("/api/kernels/<kernel_id>", methods=["DELETE"], strict_slashes=False)
    async def deleteKernel(self, request: IRequest, kernel_id: str) -> bytes:
        forwarded = await self._byOwner(request, kernel_id)
        if forwarded is not None:
            return forwarded
        await self.kernels.shutdownKernel(kernel_id)
        request.setResponseCode(204)
        return b""

    @app.route("/api/kernels/<kernel_id>/interrupt", methods=["POST"], strict_slashes=False)
    async def interrupt(self, request: IRequest, kernel_id: str) -> bytes:
        forwarded = await self._byOwner(request, kernel_id)
        if forwarded is not None:
            return forwarded
        await self.kernels.interrupt(kernel_id)
        request.setResponseCode(204)
        return b""

    @app.route("/api/kernels/<kernel_id>/restart", methods=["POST"], strict_slashes=False)
    async def restart(self, request: IRequest, kernel_id: str) -> bytes:
        forwarded = await self._byOwner(request, kernel_id)
        if forwarded is not None:
            return forwarded
        kernel = await self.kernels.restart(kernel_id)
        return respond(request, kernel.model())

    @app.route("/api/kernels/<kernel_id>/channels", methods=["GET"], strict_slashes=False)
    async def channelsRoute(self, request: IRequest, kernel_id: str) -> Any:
        if self.forwarder is not None and kernel_id not in self.kernels:
            if not wasForwarded(request):
                peer = await peerOf(self.kernels.store, kernel_id)
                if peer is not None:
                    owner, address = peer
                    return await self.forwarder.splice(address, owner)
        kernel = self.kernels.get(kernel_id)
        refusal = handshakeRefusal(request)
        if refusal is not None:
            return refusal
        factory = self.channels.forKernel(kernel, queryArg(request, "session_id"))
        return ChannelsResource(factory)

    # Sessions

    @app.route("/api/sessions", methods=["GET"], strict_slashes=False)
    async def listSessions(self, request: IRequest) -> bytes:
        if not self.listKernels:
            raise Forbidden("Listing sessions is disabled (list_kernels is False)")
        return respond(request, await self.sessions.list())

    @app.route("/api/sessions", methods=["POST"], strict_slashes=False)
    async def createSession(self, request: IRequest) -> bytes:
        session = await self.sessions.create(jsonBody(request))
        request.setHeader(b"Location", f"{self.baseURL}api/sessions/{session.id}".encode())
        return respond(request, await self.sessions.modelOf(session), 201)

    async def _sessionByOwner(self, request: IRequest, sessionId: str) -> bytes | None:
        """
        With a kernel store shared by several gateways: the answer of the gateway that owns
        the kernel of session C{sessionId}, when another does, to which the request is
        forwarded (it shuts the kernel down, if the change does); else C{None}.
        """
        if self.forwarder is None or wasForwarded(request):
            return None
        session = await self.sessions.get(sessionId)
        return await self._byOwner(request, session.kernelId)

    @app.route("/api/sessions/<session_id>", methods=["GET"], strict_slashes=False)
    async def session(self, request: IRequest, session_id: str) -> bytes:
        session = await self.sessions.get(session_id)
        return respond(request, await self.sessions.modelOf(session))

    @app.route("/api/sessions/<session_id>", methods=["PATCH"], strict_slashes=False)
    async def updateSession(self, request: IRequest, session_id: str) -> bytes:
        forwarded = await self._sessionByOwner(request, session_id)
        if forwarded is not None:
            return forwarded
        session = await self.sessions.update(session_id, jsonBody(request))
        return respond(request, await self.sessions.modelOf(session))

    @app.route("/api/sessions/<session_id>", methods=["DELETE"], strict_slashes=False)
    async def deleteSession(self, request: IRequest, session_id: str) -> bytes:
        forwarded = await self._sessionByOwner(request, session_id)
        if forwarded is not None:
            return forwarded
        await self.sessions.delete(session_id)
        request.setResponseCode(204)
        return b""


def specResources(name: str, resourceDir: str, baseURL: str) -> dict[str, str]:
    """URLs of a kernelspec's logos, C{kernel.js} and C{kernel.css}, as jupyter_server does."""
    resources: dict[str, str] = {}
    try:
        files = sorted(os.listdir(resourceDir))
    except OSError:
        return resources
    for fileName in files:
        url = f"{baseURL}kernelspecs/{name}/{fileName}"
        if fileName.startswith("logo-"):
            resources[os.path.splitext(fileName)[0]] = url
        elif fileName in ("kernel.js", "kernel.css"):
            resources[fileName] = url
    return resources
