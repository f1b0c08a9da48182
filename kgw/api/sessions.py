"""Sessions as jupyter_server defines them: a named path (a notebook, a console) bound to a kernel.

Kept in memory: a session is only as durable as its kernel, and a session whose kernel is gone
is dropped the next time it is looked at, as jupyter_server does.
"""

from __future__ import annotations

import uuid
from typing import Any

from twisted.internet.defer import Deferred, succeed

from kgw.errors import InvalidRequest, NoSuchKernel, NoSuchSession
from kgw.kernels.registry import KernelRegistry


class Session:
    def __init__(self, sessionId: str, path: str, name: str, type: str, kernelId: str) -> None:
        self.id = sessionId
        self.path = path
        self.name = name
        self.type = type
        self.kernelId = kernelId


class SessionRegistry:
    """The sessions of a gateway, each holding the id of a kernel in C{kernels}."""

    def __init__(self, kernels: KernelRegistry) -> None:
        self.kernels = kernels
        self._sessions: dict[str, Session] = {}

    def model(self, session: Session) -> dict[str, Any]:
        model: dict[str, Any] = {
            "id": session.id,
            "path": session.path,
            "name": session.name,
            "type": session.type,
            "kernel": self.kernels.get(session.kernelId).model(),
        }
        if session.type == "notebook":
            model["notebook"] = {"path": session.path, "name": session.name}
        return model

    def _live(self) -> list[Session]:
        for session in list(self._sessions.values()):
            if session.kernelId not in self.kernels:
                del self._sessions[session.id]
        return list(self._sessions.values())

    def list(self) -> list[dict[str, Any]]:
        return [self.model(s) for s in self._live()]

    def get(self, sessionId: str) -> Session:
        """@raise NoSuchSession: if there is no session with this id, or its kernel is gone."""
        self._live()
        try:
            return self._sessions[sessionId]
        except KeyError:
            raise NoSuchSession(sessionId) from None

    def create(self, body: Any) -> Deferred[Session]:
        """
        Create a session from a POST body, or return the existing session of the same path.

        @raise InvalidRequest: if the body lacks C{path} or C{type}, or a field has a wrong type.
        """
        fields = _fields(body, required=True)
        path = fields["path"]
        for session in self._live():
            if session.path == path:
                return succeed(session)
        kernelId, kernelName = fields["kernel_id"], fields["kernel_name"]
        if kernelId is not None:
            self.kernels.get(kernelId)
            return succeed(self._add(fields, kernelId))
        d = self.kernels.startKernel(kernelName)
        return d.addCallback(lambda kernel: self._add(fields, kernel.id))

    def _add(self, fields: dict[str, Any], kernelId: str) -> Session:
        session = Session(
            str(uuid.uuid4()),
            fields["path"],
            fields["name"] or "",
            fields["type"],
            kernelId,
        )
        self._sessions[session.id] = session
        return session

    def update(self, sessionId: str, body: Any) -> Deferred[Session]:
        """
        Rename a session or move it to another kernel: an existing one by id, or a new one by
        name. The kernel it leaves is shut down, as jupyter_server does.
        """
        session = self.get(sessionId)
        fields = _fields(body, required=False)
        for attribute in ("path", "name", "type"):
            if fields[attribute] is not None:
                setattr(session, attribute, fields[attribute])
        before = session.kernelId
        if fields["kernel_id"] is not None:
            if fields["kernel_id"] not in self.kernels:
                raise InvalidRequest(f"No such kernel: {fields['kernel_id']}")
            d: Deferred[Any] = succeed(fields["kernel_id"])
        elif fields["kernel_name"] is not None:
            d = self.kernels.startKernel(fields["kernel_name"]).addCallback(lambda k: k.id)
        else:
            return succeed(session)

        def switch(kernelId: str) -> Deferred[Session] | Session:
            session.kernelId = kernelId
            if kernelId != before and before in self.kernels:
                return self.kernels.shutdownKernel(before).addCallback(lambda _: session)
            return session

        return d.addCallback(switch)

    def delete(self, sessionId: str) -> Deferred[None]:
        """Forget a session and shut its kernel down."""
        session = self.get(sessionId)
        del self._sessions[sessionId]
        try:
            return self.kernels.shutdownKernel(session.kernelId)
        except NoSuchKernel:
            return succeed(None)


def _fields(body: Any, required: bool) -> dict[str, Any]:
    """The fields of a session request body, checked for type; C{path} and C{type} if required."""
    if not isinstance(body, dict):
        raise InvalidRequest("The body must be a JSON object")
    path = body.get("path")
    notebook = body.get("notebook")
    if path is None and isinstance(notebook, dict):
        path = notebook.get("path")
    kernel = body.get("kernel")
    if kernel is None:
        kernel = {}
    if not isinstance(kernel, dict):
        raise InvalidRequest("kernel must be an object")
    fields = {
        "path": path,
        "name": body.get("name"),
        "type": body.get("type"),
        "kernel_id": kernel.get("id"),
        "kernel_name": kernel.get("name"),
    }
    for key, value in fields.items():
        if value is not None and not isinstance(value, str):
            raise InvalidRequest(f"{key} must be a string")
    if required:
        for key in ("path", "type"):
            if fields[key] is None:
                raise InvalidRequest(f"Missing field in JSON data: {key}")
    return fields
