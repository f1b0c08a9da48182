"""The gateway's own executions over a fake ZeroMQ: matching by msg_id, pipelining, restarts."""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from kgw.kernels.channels import KernelChannels
from kgw.kernels.execution import KernelCaller, KernelRestarted
from tests.kernels.fakezmq import INFO, FakeKernel, FakeZmq


class ExecutionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.zmq = FakeZmq()
        self.kernel = FakeKernel()
        self.channels = KernelChannels(
            self.zmq, INFO, self.kernel.session, Clock(), lambda *_: None
        )
        [self.iopub] = self.zmq.open("iopub")
        self.caller = KernelCaller(self.channels)
        [self.shell] = self.zmq.open("shell")
        self.outputs: list[tuple[str, dict[str, Any]]] = []

    def execute(self, code: str = "1 + 1") -> tuple[Any, dict[str, Any]]:
        """Start an execution; its Deferred and the header of the request the kernel got."""
        d = self.caller.execute(code, onOutput=lambda t, c: self.outputs.append((t, c)))
        return d, self.shell.requests()[-1]

    def reply(self, request: dict[str, Any], status: str = "ok", count: int = 1) -> None:
        """The kernel's execute_reply to C{request}, on the caller's shell socket."""
        content = {"status": status, "execution_count": count}
        self.shell.receive(self.kernel.message("execute_reply", content, request))

    def publish(self, request: dict[str, Any], msgType: str, **content: Any) -> None:
        """The kernel publishes a message on iopub, in answer to C{request}."""
        self.iopub.receive(self.kernel.message(msgType, content, request))

    def idle(self, request: dict[str, Any]) -> None:
        self.publish(request, "status", execution_state="idle")

    def test_requestSent(self) -> None:
        """execute sends a signed execute_request with the code on the gateway's shell socket."""
        self.execute("print(1)")
        [frames] = self.shell.sent
        self.assertTrue(self.kernel.signedByGateway(frames))
        content = self.kernel.session.unpack(frames[5])
        self.assertEqual(content["code"], "print(1)")
        self.assertEqual(self.shell.requests()[0]["msg_type"], "execute_request")

    def test_firesWithReplyOnceIdle(self) -> None:
        """The execution fires with its reply's content only once the kernel is also idle."""
        d, request = self.execute()
        self.reply(request, count=7)
        self.assertNoResult(d)
        self.idle(request)
        self.assertEqual(self.successResultOf(d), {"status": "ok", "execution_count": 7})

    def test_idleBeforeReply(self) -> None:
        """Idle may come before the reply: the execution fires when the reply comes."""
        d, request = self.execute()
        self.idle(request)
        self.assertNoResult(d)
        self.reply(request)
        self.assertEqual(self.successResultOf(d)["status"], "ok")

    def test_outputInOrder(self) -> None:
        """The execution's iopub messages reach its onOutput in order; statuses do not."""
        d, request = self.execute()
        self.publish(request, "status", execution_state="busy")
        self.publish(request, "stream", name="stdout", text="a")
        self.publish(request, "execute_result", data={"text/plain": "2"})
        self.publish(request, "stream", name="stdout", text="b")
        self.reply(request)
        self.idle(request)
        self.successResultOf(d)
        self.assertEqual(
            [(t, c.get("text")) for t, c in self.outputs],
            [("stream", "a"), ("execute_result", None), ("stream", "b")],
        )

    def test_pipelined(self) -> None:
        """Executions in flight together are each matched to their own reply and output by
        msg_id, whatever order the kernel answers them in."""
        first, firstRequest = self.execute("a")
        second, secondRequest = self.execute("b")
        self.assertEqual(len(self.shell.sent), 2)
        self.publish(secondRequest, "stream", name="stdout", text="second")
        self.reply(secondRequest, count=2)
        self.idle(secondRequest)
        self.assertEqual(self.successResultOf(second)["execution_count"], 2)
        self.assertNoResult(first)
        self.reply(firstRequest, count=1)
        self.idle(firstRequest)
        self.assertEqual(self.successResultOf(first)["execution_count"], 1)
        self.assertEqual([c["text"] for _, c in self.outputs], ["second"])

    def test_othersMessagesIgnored(self) -> None:
        """iopub messages and replies to a client's requests, not the gateway's, touch no
        execution."""
        d, request = self.execute()
        other = {**request, "msg_id": "a-client's-request"}
        self.publish(other, "stream", name="stdout", text="not mine")
        self.reply(other)
        self.idle(other)
        self.assertNoResult(d)
        self.assertEqual(self.outputs, [])

    def test_restartFailsPending(self) -> None:
        """A restart (the channels held) fails every execution in flight with KernelRestarted;
        code run meanwhile waits for the kernel to answer again."""
        first, _ = self.execute("a")
        second, _ = self.execute("b")
        self.channels.hold()
        self.failureResultOf(first, KernelRestarted)
        self.failureResultOf(second, KernelRestarted)
        third = self.caller.execute("c")
        self.assertEqual(len(self.shell.sent), 2)
        self.channels.release()
        self.assertEqual(len(self.shell.sent), 3)
        request = self.shell.requests()[-1]
        self.reply(request)
        self.idle(request)
        self.successResultOf(third)

    def test_closeFailsPending(self) -> None:
        """Closing the channels fails executions in flight, and any later one, with
        ConnectionDone, and closes the gateway's shell socket."""
        d, _ = self.execute()
        self.channels.close(1001, "shutdown")
        self.failureResultOf(d, ConnectionDone)
        self.assertTrue(self.shell.closed)
        self.failureResultOf(self.caller.execute("x"), ConnectionDone)

    def test_cancelledExecutionForgotten(self) -> None:
        """Cancelling an execution stops the wait: its later reply and output are ignored."""
        d, request = self.execute()
        d.cancel()
        self.failureResultOf(d)
        self.publish(request, "stream", name="stdout", text="late")
        self.reply(request)
        self.idle(request)
        self.assertEqual(self.outputs, [])
