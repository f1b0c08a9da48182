"""
Knowing a kernel answers: C{kernel_info_request}s sent with growing pauses until it does.

A SUB socket misses what is published before its subscription reaches the kernel, so a kernel
counts as answering only once an iopub message has come as well as a reply. The requests of
L{waitForAnswer} on the control channel are the gateway's own: L{Probes} keeps them apart from
what the kernel publishes for its clients.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Protocol

import zmq
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from kgw.kernels.signing import MessageError, Signer
from kgw.kernels.sockets import MessageSocket


class Probes:
    """The gateway's own control requests in flight, by message id, each with its waiter."""

    def __init__(self) -> None:
        self._waiters: dict[str, Callable[[], None]] = {}

    def __bool__(self) -> bool:
        return bool(self._waiters)

    def add(self, msgId: str, ended: Callable[[], None]) -> None:
        """Call C{ended} when the kernel publishes the idle status ending request C{msgId}."""
        self._waiters[msgId] = ended

    def clear(self) -> None:
        self._waiters.clear()

    def claim(self, parts: Sequence[bytes]) -> bool:
        """
        Whether the status message of C{parts} is about one of these requests (and so not for
        clients); its waiter is told once the status is idle.
        """
        try:
            parent = json.loads(parts[1]).get("msg_id")
            state = json.loads(parts[3]).get("execution_state")
        except (ValueError, AttributeError, IndexError):
            return False
        ended = self._waiters.get(parent)
        if ended is None:
            return False
        if state == "idle":
            del self._waiters[parent]
            ended()
        return True


class Channels(Protocol):
    """What L{waitForAnswer} uses of a kernel's channels: L{kgw.kernels.channels.KernelChannels}."""

    signer: Signer
    clock: IReactorTime
    closed: bool
    probes: Probes
    readyWaits: set[Callable[[object], None]]

    def openSocket(
        self, socketType: int, channel: str, onMessage: Callable[[list[bytes]], None]
    ) -> MessageSocket: ...

    def whenIOPub(self, waiter: Callable[[], None]) -> None: ...

    def forgetIOPubWaiter(self, waiter: Callable[[], None]) -> None: ...


def waitForAnswer(channels: Channels, timeout: float, onControl: bool) -> Deferred[bool]:
    """
    Nudge the kernel of C{channels} with C{kernel_info_request}s, with growing pauses: on
    control if C{onControl} (shell is then asked once), else on shell. Fire with whether shell
    replied, once it has and an iopub message came, or (C{onControl}) once the kernel published
    the idle status ending one of the control requests, which proves iopub subscribed too.
    Fails with L{DeferredTimeout} after C{timeout} seconds, and with L{ConnectionDone} if the
    channels close; cancelling stops the nudging. Either way its sockets are closed.
    """
    done: Deferred[bool] = Deferred(lambda _: finish(CancelledError()))
    if channels.closed:
        done.errback(ConnectionDone("the kernel's channels are closed"))
        return done
    signer, clock = channels.signer, channels.clock
    state = {"shell": False, "iopub": False, "control": False}
    pending: list[IDelayedCall] = []

    def check() -> None:
        if not done.called and (state["control"] or (state["shell"] and state["iopub"])):
            finish(state["shell"])

    def gotReply(frames: list[bytes]) -> None:
        try:
            header, _ = signer.unwrap(frames)
        except MessageError:
            return
        if header.get("msg_type") == "kernel_info_reply":
            state["shell"] = True
            check()

    def gotIOPub() -> None:
        state["iopub"] = True
        check()

    def controlEnded() -> None:
        state["control"] = True
        check()

    def finish(result: object) -> None:
        channels.readyWaits.discard(finish)
        for call in pending:
            if call.active():
                call.cancel()
        channels.forgetIOPubWaiter(gotIOPub)
        # The statuses of control requests still on their way stay the gateway's: each is
        # forgotten once its idle status comes (or when the channels close).
        for socket in sockets:
            socket.shutdown()
        if done.called:
            return
        if isinstance(result, Exception):
            done.errback(result)
        else:
            done.callback(bool(result))

    shell = channels.openSocket(zmq.DEALER, "shell", gotReply)
    sockets = [shell]
    nudged = shell
    if onControl:
        nudged = channels.openSocket(zmq.DEALER, "control", lambda frames: None)
        sockets.append(nudged)
        _, parts = signer.message("kernel_info_request", {})
        shell.sendMessage(signer.frames(parts))
    channels.whenIOPub(gotIOPub)
    channels.readyWaits.add(finish)
    deadline = clock.seconds() + timeout

    def nudge(pause: float) -> None:
        if done.called:
            return
        if clock.seconds() >= deadline:
            finish(DeferredTimeout(f"the kernel did not answer within {timeout} s"))
            return
        header, parts = signer.message("kernel_info_request", {})
        if onControl:
            channels.probes.add(header["msg_id"], controlEnded)
        nudged.sendMessage(signer.frames(parts))
        pending[:] = [clock.callLater(pause, nudge, min(pause * 2, 1.0))]

    nudge(0.1)
    return done
