"""A disconnected session's buffer: its bounds, what it drops first, and its replay order."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kgw.kernels.buffering import BufferLimits, SessionBuffer


def kept(buffer: SessionBuffer) -> list[str]:
    """The ids of the messages C{buffer} keeps, in replay order."""
    return [header["msg_id"] for _, header, _, _ in buffer.messages]


class BoundTests(SynchronousTestCase):
    def test_byteBound(self) -> None:
        """Past buffer_max_bytes the oldest messages go, and are counted."""
        buffer = SessionBuffer(BufferLimits(maxMessages=100, maxBytes=300))
        for i in range(5):
            buffer.relay("iopub", {"msg_id": str(i)}, [b"x" * 100])
        self.assertEqual(kept(buffer), ["2", "3", "4"])
        self.assertEqual((buffer.dropped, buffer.size), (2, 300))

    def test_floodKeepsRepliesWithinBounds(self) -> None:
        """
        Under a flood of output the buffer stays within its bounds, and the replies that came
        before the flood are kept (the output goes first), replayed in their place.
        """
        buffer = SessionBuffer(BufferLimits(maxMessages=50, maxBytes=10_000))
        buffer.relay("shell", {"msg_id": "reply"}, [b"r" * 100])
        buffer.relay("stdin", {"msg_id": "input"}, [b"i" * 100])
        for i in range(10_000):
            buffer.relay("iopub", {"msg_id": str(i)}, [b"x" * 1000])
            self.assertLessEqual(buffer.size, 10_000)
            self.assertLessEqual(len(buffer), 50)
        self.assertEqual(kept(buffer), ["reply", "input", *(str(i) for i in range(9_991, 10_000))])
        self.assertEqual(buffer.dropped, 9_991)

    def test_onlyRepliesLeftGoOldestFirst(self) -> None:
        """When nothing but replies is left, the oldest reply goes."""
        buffer = SessionBuffer(BufferLimits(maxMessages=2, maxBytes=10**6))
        for i in range(3):
            buffer.relay("shell", {"msg_id": str(i)}, [b"r"])
        self.assertEqual(kept(buffer), ["1", "2"])

    def test_messageBound(self) -> None:
        """Past buffer_max_messages the oldest messages go, and are counted."""
        buffer = SessionBuffer(BufferLimits(maxMessages=3, maxBytes=10**6))
        for i in range(5):
            buffer.relay("iopub", {"msg_id": str(i)}, [b"x"])
        self.assertEqual(kept(buffer), ["2", "3", "4"])
        self.assertEqual((buffer.dropped, len(buffer), buffer.size), (2, 3, 3))

    def test_withinBoundsNothingDropped(self) -> None:
        """Up to both bounds every message is kept."""
        buffer = SessionBuffer(BufferLimits(maxMessages=3, maxBytes=3))
        for i in range(3):
            buffer.relay("iopub", {"msg_id": str(i)}, [b"x"])
        self.assertEqual((kept(buffer), buffer.dropped), (["0", "1", "2"], 0))


class ReplayTests(SynchronousTestCase):
    def test_replayOrderAcrossChannels(self) -> None:
        """Replies and output interleaved are replayed in the order they came, with their
        channels and parts."""
        buffer = SessionBuffer(BufferLimits())
        arrivals = [("iopub", "0"), ("shell", "1"), ("iopub", "2"), ("stdin", "3"), ("iopub", "4")]
        for channel, msgId in arrivals:
            buffer.relay(channel, {"msg_id": msgId}, [msgId.encode()])
        replayed = [(channel, h["msg_id"], list(parts)) for channel, h, parts, _ in buffer.messages]
        self.assertEqual(replayed, [(channel, i, [i.encode()]) for channel, i in arrivals])

    def test_kernelGoneEmptiesIt(self) -> None:
        """When the kernel goes, the buffer keeps nothing."""
        buffer = SessionBuffer(BufferLimits())
        buffer.relay("iopub", {"msg_id": "0"}, [b"x"])
        buffer.relay("shell", {"msg_id": "1"}, [b"x"])
        buffer.kernelGone(1011, "Kernel died")
        self.assertEqual((kept(buffer), buffer.size), ([], 0))
