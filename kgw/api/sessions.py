"""Sessions as jupyter_server defines them: a named path (a notebook, a console) bound to a kernel.

A session is only as durable as its kernel: one whose kernel is gone is dropped the next time it
is looked at, as jupyter_server does. A gateway alone keeps its sessions in memory
(L{MemoryBook}). Gateways sharing an etcd kernel store keep them there (L{EtcdBook}), next to the
kernel records: every gateway lists every session, and a session outlives the gateway that
created it, as its kernel does once another gateway adopts it. A change to a session whose
kernel another gateway owns is made by that gateway (the API forwards it), which shuts the
kernel down when the session goes.
"""

from __future__ import annotations

import json
import uuid
from typing import Any, Protocol

from twisted.logger import Logger

from kgw.errors import InvalidRequest, NoSuchKernel, NoSuchSession
from kgw.kernels.registry import KernelRegistry
from kgw.kernels.store.etcd import EtcdStore

log = Logger()


class Session:
    def __init__(self, sessionId: str, path: str, name: str, type: str, kernelId: str) -> None:
        self.id = sessionId
        self.path = path
        self.name = name
        self.type = type
        self.kernelId = kernelId

    def toJSON(self) -> bytes:
        fields = {"path": self.path, "name": self.name, "type": self.type}
        return json.dumps({"id": self.id, "kernel_id": self.kernelId, **fields}).encode()

    @classmethod
    def fromJSON(cls, sessionId: str, value: bytes) -> Session | None:
        """The session a record tells, or C{None} if it is unreadable."""
        try:
            fields = json.loads(value)
        except ValueError:
            return None
        names = ("path", "name", "type", "kernel_id")
        if not isinstance(fields, dict) or not all(isinstance(fields.get(n), str) for n in names):
            return None
        return cls(sessionId, fields["path"], fields["name"], fields["type"], fields["kernel_id"])


class SessionBook(Protocol):
    """Where sessions are kept, with the kernels they may hold."""

    async def all(self) -> list[Session]:
        """Every session kept."""

    async def find(self, sessionId: str) -> Session | None:
        """One session, if kept."""

    async def put(self, session: Session) -> None:
        """Keep a session, replacing its earlier state."""

    async def remove(self, sessionId: str) -> None:
        """Forget a session."""

    async def kernels(self, kernels: KernelRegistry) -> tuple[dict[str, dict[str, Any]], set[str]]:
        """
        The REST models of the kernels a session may hold, by id, and the ids of those alive
        without a model yet (a kernel another gateway is handing out).

        @raise StoreUnavailable: if a shared store cannot be reached.
        """


class MemoryBook:
    """The sessions of one gateway, in memory; its own kernels."""

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}

    async def all(self) -> list[Session]:
        return list(self._sessions.values())

    async def find(self, sessionId: str) -> Session | None:
        return self._sessions.get(sessionId)

    async def put(self, session: Session) -> None:
        self._sessions[session.id] = session

    async def remove(self, sessionId: str) -> None:
        self._sessions.pop(sessionId, None)

    async def kernels(self, kernels: KernelRegistry) -> tuple[dict[str, dict[str, Any]], set[str]]:
        return {kernel.id: kernel.model() for kernel in kernels.kernels()}, set()


class EtcdBook:
    """The sessions of every gateway sharing an etcd kernel store, kept there; every kernel."""

    def __init__(self, store: EtcdStore) -> None:
        self.store = store

    async def all(self) -> list[Session]:
        found = []
        for sessionId, value in await self.store.sessionRecords():
            session = Session.fromJSON(sessionId, value)
            if session is None:
                log.warn("Session record {sessionId} is unreadable; skipped", sessionId=sessionId)
            else:
                found.append(session)
        return found

    async def find(self, sessionId: str) -> Session | None:
        value = await self.store.sessionRecord(sessionId)
        return None if value is None else Session.fromJSON(sessionId, value)

    async def put(self, session: Session) -> None:
        await self.store.putSession(session.id, session.toJSON())

    async def remove(self, sessionId: str) -> None:
        await self.store.removeSession(sessionId)

    async def kernels(self, kernels: KernelRegistry) -> tuple[dict[str, dict[str, Any]], set[str]]:
        models = {model["id"]: model for model in await self.store.kernelModels()}
        models.update((kernel.id, kernel.model()) for kernel in kernels.kernels())
        return models, set(await self.store.owners())


class SessionRegistry:
    """The sessions of a gateway (of a cluster, with a shared book), each holding a kernel id."""

    def __init__(self, kernels: KernelRegistry, book: SessionBook | None = None) -> None:
        self.kernels = kernels
        self.book: SessionBook = book if book is not None else MemoryBook()

    async def _live(self) -> tuple[list[Session], dict[str, dict[str, Any]]]:
        """The sessions whose kernel lives (the others are dropped), and the kernels' models."""
        sessions = await self.book.all()
        models, alive = await self.book.kernels(self.kernels)
        live = []
        for session in sessions:
            if session.kernelId in models:
                live.append(session)
            elif session.kernelId not in alive:
                await self.book.remove(session.id)
        return live, models

    def model(self, session: Session, kernel: dict[str, Any]) -> dict[str, Any]:
        model: dict[str, Any] = {
            "id": session.id,
            "path": session.path,
            "name": session.name,
            "type": session.type,
            "kernel": kernel,
        }
        if session.type == "notebook":
            model["notebook"] = {"path": session.path, "name": session.name}
        return model

    async def modelOf(self, session: Session) -> dict[str, Any]:
        """The REST model of a session, its kernel's model in it."""
        if session.kernelId in self.kernels:
            return self.model(session, self.kernels.get(session.kernelId).model())
        models, _ = await self.book.kernels(self.kernels)
        if session.kernelId not in models:
            raise NoSuchSession(session.id)
        return self.model(session, models[session.kernelId])

    async def list(self) -> list[dict[str, Any]]:
        live, models = await self._live()
        return [self.model(s, models[s.kernelId]) for s in live]

    async def get(self, sessionId: str) -> Session:
        """@raise NoSuchSession: if there is no session with this id, or its kernel is gone."""
        session = await self.book.find(sessionId)
        if session is None:
            raise NoSuchSession(sessionId)
        if session.kernelId in self.kernels:
            return session
        models, alive = await self.book.kernels(self.kernels)
        if session.kernelId not in models and session.kernelId not in alive:
            await self.book.remove(sessionId)
            raise NoSuchSession(sessionId)
        return session

    async def _kernelExists(self, kernelId: str) -> bool:
        if kernelId in self.kernels:
            return True
        models, alive = await self.book.kernels(self.kernels)
        return kernelId in models or kernelId in alive

    async def create(self, body: Any) -> Session:
        """
        Create a session from a POST body, or return the existing session of the same path.

        @raise InvalidRequest: if the body lacks C{path} or C{type}, or a field has a wrong type.
        """
        fields = _fields(body, required=True)
        path = fields["path"]
        live, _ = await self._live()
        for session in live:
            if session.path == path:
                return session
        kernelId, kernelName = fields["kernel_id"], fields["kernel_name"]
        started = None
        if kernelId is not None:
            if not await self._kernelExists(kernelId):
                raise NoSuchKernel(kernelId)
        else:
            started = kernelId = (await self.kernels.startKernel(kernelName)).id
        session = Session(
            str(uuid.uuid4()), fields["path"], fields["name"] or "", fields["type"], kernelId
        )
        await self._keep(session, started)
        return session

    async def _keep(self, session: Session, started: str | None) -> None:
        """
        Keep C{session}; if that fails (a shared store cannot be reached), shut down the kernel
        C{started} for it, which nobody could find.
        """
        try:
            await self.book.put(session)
        except Exception:
            if started is not None and started in self.kernels:
                await self.kernels.shutdownKernel(started)
            raise

    async def update(self, sessionId: str, body: Any) -> Session:
        """
        Rename a session or move it to another kernel: an existing one by id, or a new one by
        name. The kernel it leaves is shut down if it is this gateway's, as jupyter_server does.
        """
        session = await self.get(sessionId)
        fields = _fields(body, required=False)
        for attribute in ("path", "name", "type"):
            if fields[attribute] is not None:
                setattr(session, attribute, fields[attribute])
        before = session.kernelId
        started = None
        if fields["kernel_id"] is not None:
            if not await self._kernelExists(fields["kernel_id"]):
                raise InvalidRequest(f"No such kernel: {fields['kernel_id']}")
            session.kernelId = fields["kernel_id"]
        elif fields["kernel_name"] is not None:
            started = (await self.kernels.startKernel(fields["kernel_name"])).id
            session.kernelId = started
        await self._keep(session, started)
        if session.kernelId != before and before in self.kernels:
            await self.kernels.shutdownKernel(before)
        return session

    async def delete(self, sessionId: str) -> None:
        """Forget a session and shut its kernel down, if it is this gateway's."""
        session = await self.get(sessionId)
        await self.book.remove(sessionId)
        try:
            await self.kernels.shutdownKernel(session.kernelId)
        except NoSuchKernel:
            pass


def bookOf(kernels: KernelRegistry) -> SessionBook:
    """Where the sessions over C{kernels} are kept: with their kernel store if it is shared."""
    if isinstance(kernels.store, EtcdStore):
        return EtcdBook(kernels.store)
    return MemoryBook()


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
