"""The bound on what waits for one websocket client: what is kept, dropped, and told."""

from __future__ import annotations

import json

from twisted.trial.unittest import SynchronousTestCase

from kgw.api.backlog import DROPPED, OVERFLOW, QUEUED, Backlog, BacklogLimits, droppable


def message(msgType: str, size: int = 100, parent: str = "p") -> tuple[dict, list[bytes]]:
    header = {"msg_id": "m", "msg_type": msgType}
    parts = [json.dumps(header).encode(), json.dumps({"msg_id": parent}).encode(), b"{}"]
    parts.append(b"x" * (size - sum(len(p) for p in parts)))
    return header, parts


def add(backlog: Backlog, channel: str, msgType: str, size: int = 100, parent: str = "p") -> str:
    header, parts = message(msgType, size, parent)
    return backlog.add(channel, header, parts, droppable(channel, msgType))


class DroppableTests(SynchronousTestCase):
    def test_onlyIOPubOutput(self):
        """Output on iopub may be dropped; statuses, inputs, comm openings and replies not."""
        self.assertTrue(droppable("iopub", "stream"))
        self.assertTrue(droppable("iopub", "display_data"))
        for msgType in ("status", "execute_input", "comm_open"):
            self.assertFalse(droppable("iopub", msgType), msgType)
        for channel in ("shell", "control", "stdin"):
            self.assertFalse(droppable(channel, "stream"), channel)


class BacklogTests(SynchronousTestCase):
    def test_outputPastBytesDropped(self):
        """Output that would take the backlog past its bytes is dropped, counted with its size."""
        backlog = Backlog(BacklogLimits(maxBytes=250, maxMessages=100))
        self.assertEqual(add(backlog, "iopub", "stream"), QUEUED)
        self.assertEqual(add(backlog, "iopub", "stream"), QUEUED)
        self.assertEqual(add(backlog, "iopub", "stream", parent="last"), DROPPED)
        self.assertEqual((len(backlog), backlog.size), (2, 200))
        self.assertEqual((backlog.droppedMessages, backlog.droppedBytes), (1, 100))
        self.assertEqual(json.loads(backlog.droppedParent), {"msg_id": "last"})

    def test_outputPastMessagesDropped(self):
        """Output past the message bound is dropped, however small."""
        backlog = Backlog(BacklogLimits(maxBytes=10**6, maxMessages=2))
        self.assertEqual(
            [add(backlog, "iopub", "stream") for _ in range(3)], [QUEUED] * 2 + [DROPPED]
        )

    def test_droppingLastsUntilCaughtUp(self):
        """Once dropping began, output is dropped even where it would fit, until caught up."""
        backlog = Backlog(BacklogLimits(maxBytes=250, maxMessages=100))
        add(backlog, "iopub", "stream", 200)
        self.assertEqual(add(backlog, "iopub", "stream", 100), DROPPED)
        self.assertEqual(add(backlog, "iopub", "stream", 10), DROPPED)
        backlog.pop()
        self.assertEqual(add(backlog, "iopub", "stream", 10), DROPPED)
        backlog.caughtUp()
        self.assertEqual(add(backlog, "iopub", "stream", 10), QUEUED)
        self.assertIn("3 output messages", backlog.notice())

    def test_noticeTellsOnce(self):
        """
        The notice says how much was dropped since the last one, across episodes of dropping;
        with nothing dropped there is none.
        """
        backlog = Backlog(BacklogLimits(maxBytes=150, maxMessages=100))
        self.assertIsNone(backlog.notice())
        add(backlog, "iopub", "stream", 100)
        add(backlog, "iopub", "stream", 1_000_000)
        backlog.caughtUp()
        add(backlog, "iopub", "stream", 1_000_000)
        notice = backlog.notice()
        self.assertIn("2 output messages (2.0 MB) were dropped", notice)
        self.assertIn("--client-buffer-max-bytes", notice)
        self.assertIsNone(backlog.notice())

    def test_largeMessageFitsEmptyBacklog(self):
        """A message larger than the bound is kept when nothing else waits."""
        backlog = Backlog(BacklogLimits(maxBytes=100, maxMessages=100))
        self.assertEqual(add(backlog, "iopub", "display_data", 10_000), QUEUED)

    def test_repliesAndStatusesKept(self):
        """Replies and statuses are kept past the bound, where output is dropped."""
        backlog = Backlog(BacklogLimits(maxBytes=250, maxMessages=100))
        add(backlog, "iopub", "stream", 200)
        self.assertEqual(add(backlog, "iopub", "stream"), DROPPED)
        self.assertEqual(add(backlog, "shell", "execute_reply"), QUEUED)
        self.assertEqual(add(backlog, "iopub", "status"), QUEUED)
        self.assertEqual(
            [backlog.pop()[1]["msg_type"] for _ in range(3)],
            ["stream", "execute_reply", "status"],
        )

    def test_overflowPastTwiceTheBound(self):
        """A reply that finds twice the bound used is an overflow, and is not kept."""
        backlog = Backlog(BacklogLimits(maxBytes=250, maxMessages=100))
        self.assertEqual([add(backlog, "shell", "execute_reply") for _ in range(5)], [QUEUED] * 5)
        self.assertEqual(add(backlog, "shell", "execute_reply"), OVERFLOW)
        self.assertEqual(len(backlog), 5)
        messages = Backlog(BacklogLimits(maxBytes=10**6, maxMessages=2))
        self.assertEqual([add(messages, "stdin", "input_request") for _ in range(5)][-1], OVERFLOW)

    def test_clearFreesAll(self):
        """Clearing forgets every message and their bytes."""
        backlog = Backlog(BacklogLimits())
        add(backlog, "shell", "execute_reply")
        backlog.clear()
        self.assertEqual((len(backlog), backlog.size), (0, 0))
