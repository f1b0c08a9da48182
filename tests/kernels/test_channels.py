"""A kernel's channels over a fake ZeroMQ: fan-out, per-client replies, holds, buffers, close."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import zmq
from twisted.internet.defer import TimeoutError as DeferredTimeout
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.trial.unittest import SynchronousTestCase

from kgw.kernels.buffering import BufferLimits
from kgw.kernels.channels import KernelChannels
from tests.kernels.fakezmq import INFO, FakeKernel, FakeSocket, FakeZmq


class RecordingClient:
    """A client of the channels (a websocket, in the gateway): records what it is given."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, dict[str, Any], Sequence[bytes]]] = []
        self.gone: list[tuple[int, str]] = []

    def relay(self, channel: str, header: dict[str, Any], parts: Sequence[bytes]) -> None:
        self.messages.append((channel, header, parts))

    def kernelGone(self, code: int, reason: str) -> None:
        self.gone.append((code, reason))

    def received(self) -> list[tuple[str, str]]:
        """C{(channel, msg_type)} of every message given, in order."""
        return [(channel, header["msg_type"]) for channel, header, _ in self.messages]

    def ids(self) -> list[str]:
        return [header["msg_id"] for _, header, _ in self.messages]


class RecordingListener:
    """One of the gateway's own listeners: records what it is told."""

    def __init__(self) -> None:
        self.events: list[str] = []

    def iopubReceived(self, header: dict[str, Any], parts: Sequence[bytes]) -> None:
        self.events.append(header["msg_type"])

    def hold(self) -> None:
        self.events.append("hold")

    def release(self) -> None:
        self.events.append("release")

    def close(self, reason: Exception) -> None:
        self.events.append(f"close: {type(reason).__name__}")


class ChannelsTestCase(SynchronousTestCase):
    limits = BufferLimits(maxMessages=100, timeout=60.0)

    def setUp(self) -> None:
        self.zmq = FakeZmq()
        self.kernel = FakeKernel()
        self.clock = Clock()
        self.observed: list[tuple[str, str]] = []
        self.channels = KernelChannels(
            self.zmq,
            INFO,
            self.kernel.session,
            self.clock,
            lambda channel, header, parts: self.observed.append((channel, header["msg_type"])),
            self.limits,
        )
        [self.iopub] = self.zmq.open("iopub")

    def publish(self, msgType: str = "stream", parent: dict[str, Any] | None = None) -> str:
        """The kernel publishes a message on iopub; its id."""
        frames = self.kernel.message(msgType, {"name": "stdout", "text": "x"}, parent)
        self.iopub.receive(frames)
        return str(self.kernel.session.unpack(frames[2])["msg_id"])

    def socketsOf(self, client: RecordingClient) -> dict[str, FakeSocket]:
        """The shell, control and stdin sockets the channels opened for C{client}."""
        return dict(self.channels.clients[client]._sockets)  # type: ignore[arg-type]

    def send(self, client: RecordingClient, msgType: str = "execute_request") -> dict[str, Any]:
        """C{client} sends a request on shell; its header."""
        header, parts = self.channels.signer.message(msgType, {"code": "1"})
        self.channels.clients[client].send("shell", parts)
        return header


class FanOutTests(ChannelsTestCase):
    def test_iopubReachesEveryClient(self) -> None:
        """A message the kernel publishes reaches every attached client, the listeners and the
        kernel's observer, once each."""
        a, b = RecordingClient(), RecordingClient()
        listener = RecordingListener()
        self.channels.attach(a)
        self.channels.attach(b)
        self.channels.listen(listener)
        msgId = self.publish("stream")
        self.assertEqual(a.ids(), [msgId])
        self.assertEqual(b.ids(), [msgId])
        self.assertEqual(a.received(), [("iopub", "stream")])
        self.assertEqual(listener.events, ["stream"])
        self.assertEqual(self.observed, [("iopub", "stream")])

    def test_oneSubscriptionPerKernel(self) -> None:
        """Clients share the kernel's one iopub subscription: attaching opens no SUB socket."""
        for _ in range(3):
            self.channels.attach(RecordingClient())
        self.assertEqual(len(self.zmq.open("iopub")), 1)
        self.assertEqual(self.iopub.socketType, zmq.SUB)

    def test_detachedClientGetsNothing(self) -> None:
        """A client that detached (and said it was done) is given nothing more."""
        a, b = RecordingClient(), RecordingClient()
        self.channels.attach(a)
        self.channels.attach(b)
        self.channels.detach(a, keep=False)
        self.publish()
        self.assertEqual(a.messages, [])
        self.assertEqual(len(b.messages), 1)

    def test_welcomeIsNotRelayed(self) -> None:
        """ipykernel's iopub_welcome, meant for the gateway's subscription, reaches no client."""
        a = RecordingClient()
        self.channels.attach(a)
        self.publish("iopub_welcome")
        self.assertEqual(a.messages, [])

    def test_badlySignedMessageDropped(self) -> None:
        """A message not signed with the kernel's key reaches no client, and is logged."""
        a = RecordingClient()
        self.channels.attach(a)
        with capturedLogs() as events:
            self.iopub.receive(FakeKernel(b"another key").message("stream"))
        self.assertEqual(a.messages, [])
        self.assertIn("invalid signature", str(events[0]["error"]))


class PerClientTests(ChannelsTestCase):
    def test_repliesReachOnlyTheirClient(self) -> None:
        """A request goes out on its client's own shell socket, and the reply to it, coming back
        on that socket, reaches that client alone."""
        a, b = RecordingClient(), RecordingClient()
        self.channels.attach(a)
        self.channels.attach(b)
        request = self.send(a)
        mine = self.socketsOf(a)["shell"]
        self.assertEqual([h["msg_id"] for h in mine.requests()], [request["msg_id"]])
        # b has sent nothing: it has no socket to the kernel at all.
        self.assertEqual(self.socketsOf(b), {})
        mine.receive(self.kernel.message("execute_reply", {"status": "ok"}, request))
        self.assertEqual(a.received(), [("shell", "execute_reply")])
        self.assertEqual(b.messages, [])
        self.assertEqual(self.observed, [("shell", "execute_reply")])

    def test_oneIdentityPerClient(self) -> None:
        """A client's shell, control and stdin sockets share one identity, which no other client
        has: the kernel's replies and input requests find their way back to it."""
        a, b = RecordingClient(), RecordingClient()
        self.channels.attach(a)
        self.channels.attach(b)
        for client in (a, b):
            self.send(client)
            _, parts = self.channels.signer.message("interrupt_request", {})
            self.channels.clients[client].send("control", parts)
        socketsA, socketsB = self.socketsOf(a), self.socketsOf(b)
        self.assertEqual(sorted(socketsA), ["control", "shell", "stdin"])
        self.assertEqual(len({s.identity for s in socketsA.values()}), 1)
        self.assertNotEqual(socketsA["shell"].identity, socketsB["shell"].identity)
        self.assertTrue(all(s.socketType == zmq.DEALER for s in socketsA.values()))

    def test_requestsAreSigned(self) -> None:
        """What a client sends reaches the kernel signed with the kernel's key."""
        a = RecordingClient()
        self.channels.attach(a)
        self.send(a)
        [frames] = self.socketsOf(a)["shell"].sent
        self.assertTrue(self.kernel.signedByGateway(frames))


class HoldTests(ChannelsTestCase):
    def test_holdsAreCounted(self) -> None:
        """Two holds (a start and a restart overlapping) need two releases before the requests
        kept back go to the kernel."""
        a = RecordingClient()
        self.channels.attach(a)
        self.channels.hold()
        self.channels.hold()
        self.send(a)
        shell = self.socketsOf(a)["shell"]
        self.channels.release()
        self.assertTrue(self.channels.held)
        self.assertEqual(shell.sent, [])
        self.channels.release()
        self.assertFalse(self.channels.held)
        self.assertEqual(len(shell.sent), 1)

    def test_clientAttachedDuringHoldWaits(self) -> None:
        """A client that attaches while the kernel restarts is held too, until the release."""
        self.channels.hold()
        a = RecordingClient()
        self.channels.attach(a)
        self.send(a)
        shell = self.socketsOf(a)["shell"]
        self.assertEqual(shell.sent, [])
        self.channels.release()
        self.assertEqual(len(shell.sent), 1)

    def test_releaseWithoutHoldDoesNotGoNegative(self) -> None:
        """A release with no hold in force is ignored: the next hold still holds."""
        self.channels.release()
        self.channels.hold()
        self.assertTrue(self.channels.held)

    def test_listenersToldOfHoldAndLastRelease(self) -> None:
        """Listeners are told of each hold, and of the release only once no hold is left."""
        listener = RecordingListener()
        self.channels.listen(listener)
        self.channels.hold()
        self.channels.hold()
        self.channels.release()
        self.channels.release()
        self.assertEqual(listener.events, ["hold", "hold", "release"])


class CloseTests(ChannelsTestCase):
    def test_closeTellsClients(self) -> None:
        """Closing tells every client the kernel is gone, with the code and reason given, and
        closes every socket; closing again tells nobody anything."""
        a, b = RecordingClient(), RecordingClient()
        listener = RecordingListener()
        self.channels.attach(a)
        self.channels.attach(b)
        self.channels.listen(listener)
        self.channels.close(1011, "Kernel died")
        self.assertEqual(a.gone, [(1011, "Kernel died")])
        self.assertEqual(b.gone, [(1011, "Kernel died")])
        self.assertEqual(listener.events, ["close: ConnectionDone"])
        self.assertEqual([s for s in self.zmq.sockets if not s.closed], [])
        self.assertEqual(self.channels.clients, {})
        self.channels.close(1001, "again")
        self.assertEqual(a.gone, [(1011, "Kernel died")])

    def test_closeFailsWaitUntilReady(self) -> None:
        """A wait for the kernel to answer fails once the channels close, its socket closed."""
        d = self.channels.waitUntilReady(10)
        self.channels.close(1001, "shutdown")
        self.failureResultOf(d, ConnectionDone)
        self.assertEqual(self.zmq.open("shell"), [])

    def test_closedChannelsAreNotWaitedFor(self) -> None:
        """Waiting on channels already closed fails at once."""
        self.channels.close(1001, "shutdown")
        self.failureResultOf(self.channels.waitUntilReady(10), ConnectionDone)


class ReadyTests(ChannelsTestCase):
    def answer(self, shell: FakeSocket) -> None:
        """The kernel replies to the latest kernel_info_request on C{shell}."""
        request = shell.requests()[-1]
        shell.receive(self.kernel.message("kernel_info_reply", {"status": "ok"}, request))

    def test_readyNeedsReplyAndIOPub(self) -> None:
        """The kernel is ready once it replied on shell and an iopub message arrived (the
        subscription is live), in either order; the nudging socket is then closed."""
        d = self.channels.waitUntilReady(10)
        [shell] = self.zmq.open("shell")
        self.assertEqual([h["msg_type"] for h in shell.requests()], ["kernel_info_request"])
        self.answer(shell)
        self.assertNoResult(d)
        self.publish("status")
        self.assertIsNone(self.successResultOf(d))
        self.assertTrue(shell.closed)

    def test_nudgedUntilAnswered(self) -> None:
        """kernel_info_request is sent again, at growing pauses, while the kernel is silent."""
        self.channels.waitUntilReady(10)
        [shell] = self.zmq.open("shell")
        for total in (1, 2, 3):
            self.assertEqual(len(shell.sent), total)
            self.clock.advance(0.1 * 2 ** (total - 1))
        self.assertEqual(len(shell.sent), 4)

    def test_timeout(self) -> None:
        """A kernel that never answers fails the wait after the timeout."""
        d = self.channels.waitUntilReady(2)
        self.clock.pump([0.5] * 5)
        self.failureResultOf(d, DeferredTimeout)
        self.assertEqual(self.zmq.open("shell"), [])


class ReachableTests(ChannelsTestCase):
    def status(self, state: str, parent: dict[str, Any]) -> None:
        """The kernel publishes its C{state} for the request C{parent}."""
        self.iopub.receive(self.kernel.message("status", {"execution_state": state}, parent))

    def test_busyShellNotWaitedFor(self) -> None:
        """A kernel whose shell runs code is reachable once a control kernel_info_request is
        done (its idle status came): the wait fires False, both its sockets closed."""
        d = self.channels.waitUntilReachable(10)
        [shell] = self.zmq.open("shell")
        [control] = self.zmq.open("control")
        self.assertEqual([h["msg_type"] for h in shell.requests()], ["kernel_info_request"])
        [probe] = control.requests()
        self.assertEqual(probe["msg_type"], "kernel_info_request")
        self.status("busy", probe)
        self.assertNoResult(d)
        control.receive(self.kernel.message("kernel_info_reply", {"status": "ok"}, probe))
        self.status("idle", probe)
        self.assertIs(self.successResultOf(d), False)
        self.assertTrue(shell.closed and control.closed)

    def test_controlStatusesNeitherObservedNorRelayed(self) -> None:
        """The statuses of the gateway's control requests, even those coming after the wait,
        are not the kernel's state and reach no client; the shell's statuses do."""
        client = RecordingClient()
        self.channels.attach(client)
        d = self.channels.waitUntilReachable(10)
        [control] = self.zmq.open("control")
        self.clock.advance(0.1)
        first, second = control.requests()
        self.status("busy", first)
        self.status("idle", first)
        self.successResultOf(d)
        self.status("busy", second)
        self.status("idle", second)
        self.assertEqual(self.observed, [])
        self.assertEqual(client.messages, [])
        self.status("idle", {"msg_id": "a-cell", "msg_type": "execute_request"})
        self.assertEqual(self.observed, [("iopub", "status")])
        self.assertEqual(client.received(), [("iopub", "status")])

    def test_freeShellAnswers(self) -> None:
        """A kernel whose shell replies, and an iopub message came, is reachable and free."""
        d = self.channels.waitUntilReachable(10)
        [shell] = self.zmq.open("shell")
        [request] = shell.requests()
        shell.receive(self.kernel.message("kernel_info_reply", {"status": "ok"}, request))
        self.assertNoResult(d)
        self.status("busy", request)
        self.assertIs(self.successResultOf(d), True)

    def test_controlNudgedShellAskedOnce(self) -> None:
        """While the kernel is silent, control is asked again at growing pauses; shell once, as
        its requests wait behind the code running; past the timeout the wait fails."""
        d = self.channels.waitUntilReachable(2)
        [shell] = self.zmq.open("shell")
        [control] = self.zmq.open("control")
        self.clock.pump([0.1, 0.2, 0.4])
        self.assertEqual((len(shell.sent), len(control.sent)), (1, 4))
        self.clock.pump([0.5] * 4)
        self.failureResultOf(d, DeferredTimeout)
        self.assertEqual(self.zmq.open("shell") + self.zmq.open("control"), [])

    def test_closeFailsTheWait(self) -> None:
        """The wait fails once the channels close."""
        d = self.channels.waitUntilReachable(10)
        self.channels.close(1001, "shutdown")
        self.failureResultOf(d, ConnectionDone)
        self.assertEqual(self.zmq.open("control"), [])


class BufferTests(ChannelsTestCase):
    limits = BufferLimits(maxMessages=3, timeout=60.0)

    def test_departedSessionReplayedInOrder(self) -> None:
        """What the kernel sends while a session's websocket is gone (iopub and replies) is given,
        in order, to the next client of that session, on the same sockets."""
        a = RecordingClient()
        self.channels.attach(a, "session-1")
        request = self.send(a)
        shell = self.socketsOf(a)["shell"]
        opened = len(self.zmq.sockets)
        self.channels.detach(a)
        first = self.publish("status", request)
        shell.receive(self.kernel.message("execute_reply", {"status": "ok"}, request))
        last = self.publish("status", request)
        b = RecordingClient()
        self.channels.attach(b, "session-1")
        self.assertEqual(
            b.received(), [("iopub", "status"), ("shell", "execute_reply"), ("iopub", "status")]
        )
        self.assertEqual([b.ids()[0], b.ids()[2]], [first, last])
        self.assertEqual(a.messages, [])
        self.assertEqual(len(self.zmq.sockets), opened)
        self.assertIs(self.socketsOf(b)["shell"], shell)

    def test_droppedAreCountedFirst(self) -> None:
        """Past the buffer's bound the oldest messages go; the returning client is first told
        how many, then given the newest."""
        a = RecordingClient()
        self.channels.attach(a, "session-1")
        self.channels.detach(a)
        ids = [self.publish() for _ in range(5)]
        b = RecordingClient()
        self.channels.attach(b, "session-1")
        notice = b.messages[0]
        self.assertIn(b"2 messages", bytes(notice[2][3]))
        self.assertEqual(b.ids()[1:], ids[2:])

    def test_unclaimedBufferExpires(self) -> None:
        """A session not claimed within the timeout loses its buffer and its sockets."""
        a = RecordingClient()
        self.channels.attach(a, "session-1")
        self.send(a)
        sockets = self.socketsOf(a)
        self.channels.detach(a)
        self.publish()
        self.clock.advance(59)
        self.assertFalse(sockets["shell"].closed)
        self.clock.advance(1)
        self.assertTrue(all(s.closed for s in sockets.values()))
        b = RecordingClient()
        self.channels.attach(b, "session-1")
        self.assertEqual(b.messages, [])
        self.send(b)
        self.assertIsNot(self.socketsOf(b)["shell"], sockets["shell"])

    def test_doneClientNotBuffered(self) -> None:
        """A client that says it is done (keep=False) has its sockets closed, nothing kept."""
        a = RecordingClient()
        self.channels.attach(a, "session-1")
        sockets = self.socketsOf(a)
        self.channels.detach(a, keep=False)
        self.assertTrue(all(s.closed for s in sockets.values()))
        self.assertEqual(self.channels.buffers, {})
