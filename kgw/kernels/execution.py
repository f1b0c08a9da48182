"""The gateway's own requests to a kernel: running code for seeding and for notebook-http.

A L{KernelCaller} keeps one DEALER socket per kernel for the gateway itself, so running code
costs no new connection, and requests may be pipelined: several executions can be in flight, each
matched to its reply and its iopub output by message id.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import zmq
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone

from kgw.kernels.channels import KernelChannels
from kgw.kernels.signing import MessageError
from kgw.kernels.sockets import address

Output = Callable[[str, dict[str, Any]], None]


class KernelRestarted(Exception):
    """The kernel restarted (it died, or was restarted) while it ran the gateway's code."""


class _Execution:
    def __init__(self, done: Deferred[dict[str, Any]], onOutput: Output | None) -> None:
        self.done = done
        self.onOutput = onOutput
        self.reply: dict[str, Any] | None = None
        self.idle = False


class KernelCaller:
    """
    The gateway's shell connection to one kernel, and the executions waiting on it: an ordinary
    listener of the kernel's channels (L{KernelChannels.listen}), as a websocket client is.
    """

    def __init__(self, channels: KernelChannels) -> None:
        self._channels = channels
        self._signer = channels.signer
        self._pending: dict[str, _Execution] = {}
        self._shell = channels.openSocket(zmq.DEALER, "shell", self._shellReceived, immediate=True)
        if channels.held:
            self._shell.hold()
        channels.listen(self)

    def follow(self, info: dict[str, Any]) -> None:
        """Reconnect to the kernel at C{info} (see L{KernelChannels.follow})."""
        self._shell.moveTo(address(info, "shell"))

    def execute(
        self,
        code: str,
        silent: bool = False,
        storeHistory: bool = True,
        onOutput: Output | None = None,
    ) -> Deferred[dict[str, Any]]:
        """
        Run C{code} and fire with the content of its C{execute_reply}, once the kernel is idle.

        @param onOutput: called with C{(msg_type, content)} for each iopub message the execution
            publishes, in order.
        @return: a Deferred that fails with L{KernelRestarted} if the kernel restarts first;
            cancelling it stops the wait, not the execution; one that fails with
            C{ConnectionDone} if the channels are closed.
        """
        if self._channels.closed:
            return fail(ConnectionDone("the kernel's channels are closed"))
        request, parts = self._signer.message(
            "execute_request",
            {
                "code": code,
                "silent": silent,
                "store_history": storeHistory,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
        )
        msgId = request["msg_id"]

        def forget(_: Deferred[dict[str, Any]]) -> None:
            self._pending.pop(msgId, None)

        done: Deferred[dict[str, Any]] = Deferred(forget)
        self._pending[msgId] = _Execution(done, onOutput)
        self._shell.sendMessage(self._signer.frames(parts))
        return done

    def _shellReceived(self, frames: list[bytes]) -> None:
        try:
            header, parts = self._signer.unwrap(frames)
        except MessageError:
            return
        execution, msgId = self._mine(parts)
        if execution is None or header.get("msg_type") != "execute_reply":
            return
        content = _content(parts)
        execution.reply = content if isinstance(content, dict) else {"status": "error"}
        self._finishIfDone(msgId, execution)

    def iopubReceived(self, header: dict[str, Any], parts: Sequence[bytes]) -> None:
        """Hand an iopub message to the execution it belongs to, if it is the gateway's."""
        if not self._pending:
            return
        execution, msgId = self._mine(parts)
        if execution is None:
            return
        msgType = header.get("msg_type", "")
        content = _content(parts)
        if not isinstance(content, dict):
            return
        if msgType == "status":
            if content.get("execution_state") == "idle":
                execution.idle = True
                self._finishIfDone(msgId, execution)
        elif execution.onOutput is not None:
            execution.onOutput(msgType, content)

    def _mine(self, parts: Sequence[bytes]) -> tuple[_Execution | None, str]:
        try:
            msgId = json.loads(parts[1]).get("msg_id", "")
        except (ValueError, AttributeError):
            return None, ""
        return self._pending.get(msgId), msgId

    def _finishIfDone(self, msgId: str, execution: _Execution) -> None:
        if execution.reply is not None and execution.idle:
            del self._pending[msgId]
            execution.done.callback(execution.reply)

    def hold(self) -> None:
        """The kernel restarts: what it was running is lost, and new code waits for it."""
        self._shell.hold()
        self.abandon(KernelRestarted("the kernel restarted while running the gateway's code"))

    def release(self) -> None:
        self._shell.release()

    def abandon(self, reason: Exception) -> None:
        """Fail every execution still waiting with C{reason}."""
        pending, self._pending = self._pending, {}
        for execution in pending.values():
            execution.done.errback(reason)

    def close(self, reason: Exception) -> None:
        self.abandon(reason)
        self._shell.shutdown()


def _content(parts: Sequence[bytes]) -> Any:
    try:
        return json.loads(parts[3])
    except (ValueError, IndexError):
        return None
