"""Kernel records: written whole, read back field by field, bad ones set aside, not deleted."""

from __future__ import annotations

import json
import os
from dataclasses import asdict

from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase

from kgw.kernels.store.directory import KernelRecord, RecordError, StateDirectory, parseRecord

KERNEL_ID = "6f1c2a9e-0b7d-4c4e-9a51-2f0e8d6b3c10"
INFO = {
    "shell_port": 50001,
    "iopub_port": 50002,
    "stdin_port": 50003,
    "control_port": 50004,
    "hb_port": 50005,
    "ip": "127.0.0.1",
    "key": "9b2e1f",
    "transport": "tcp",
    "signature_scheme": "hmac-sha256",
    "kernel_name": "python3",
}


def goodFields() -> dict:
    record = KernelRecord(
        KERNEL_ID, "python3", 4242, f"/run/kernel-{KERNEL_ID}.json", dict(INFO), {"A": "1"}
    )
    return asdict(record)


def encoded(fields: dict) -> bytes:
    return json.dumps(fields).encode()


class ParseRecordTests(SynchronousTestCase):
    """L{parseRecord} on bytes, as read from a record file."""

    fileName = f"{KERNEL_ID}.json"

    def assertRejected(self, data: bytes, *words: str) -> None:
        with self.assertRaises(RecordError) as caught:
            parseRecord(data, self.fileName)
        for word in words:
            self.assertIn(word, str(caught.exception))

    def test_goodRecord(self):
        """A record as the gateway writes it reads back equal, each field of its type."""
        record = parseRecord(encoded(goodFields()), self.fileName)
        self.assertEqual(record, KernelRecord(**goodFields()))

    def test_optionalFields(self):
        """Without C{cwd} and C{handedOut} a record is usable; unknown fields are ignored."""
        fields = goodFields()
        del fields["cwd"], fields["handedOut"]
        fields["addedLater"] = [1]
        record = parseRecord(encoded(fields), self.fileName)
        self.assertEqual((record.cwd, record.handedOut), (None, False))

    def test_wrongFields(self):
        """Each field of a wrong type or value is refused, and the message names the field."""
        wrong = [
            ("pid", "abc"),
            ("pid", True),
            ("pid", 1.5),
            ("pid", 0),
            ("pid", 1),
            ("pid", -1),
            ("pid", os.getpid()),
            ("pid", None),
            ("id", "another"),
            ("id", 7),
            ("name", ""),
            ("name", ["python3"]),
            ("connectionFile", "kernel.json"),
            ("connectionFile", 3),
            ("connectionInfo", "{}"),
            ("env", {"A": 1}),
            ("env", ["A=1"]),
            ("cwd", 3),
            ("handedOut", "yes"),
        ]
        for name, value in wrong:
            fields = goodFields()
            fields[name] = value
            self.assertRejected(encoded(fields), name)

    def test_wrongConnectionInfo(self):
        """Connection info with a missing or wrong port, transport, address, key or scheme."""
        wrong = [
            ("shell_port", "50001"),
            ("iopub_port", 0),
            ("hb_port", 70000),
            ("control_port", None),
            ("transport", "udp"),
            ("ip", 127),
            ("key", 5),
            ("key", ""),
            ("key", "clé"),
            ("signature_scheme", "md5"),
        ]
        for name, value in wrong:
            fields = goodFields()
            fields["connectionInfo"][name] = value
            self.assertRejected(encoded(fields), f"connectionInfo.{name}")
        fields = goodFields()
        del fields["connectionInfo"]["stdin_port"]
        self.assertRejected(encoded(fields), "connectionInfo.stdin_port")

    def test_missingField(self):
        """A record lacking a required field is refused, naming it."""
        for name in ("id", "name", "pid", "connectionFile", "connectionInfo", "env"):
            fields = goodFields()
            del fields[name]
            self.assertRejected(encoded(fields), repr(name))

    def test_notARecord(self):
        """Truncated JSON, garbage bytes and JSON that is not an object are refused."""
        data = encoded(goodFields())
        self.assertRejected(data[: len(data) // 2], "not JSON")
        self.assertRejected(b"\xff\xfe\x00garbage\x9c", "not JSON")
        self.assertRejected(b"", "not JSON")
        self.assertRejected(b"[1, 2]", "not a JSON object")
        self.assertRejected(b"null", "not a JSON object")

    def test_fileName(self):
        """A record is only read from a file named for its kernel id."""
        for name in ("notes.txt", "../x.json", "-x.json", ".json"):
            with self.assertRaises(RecordError):
                parseRecord(encoded(goodFields()), name)


class StateDirectoryTests(SynchronousTestCase):
    """L{StateDirectory} on a real directory."""

    def setUp(self):
        self.state = StateDirectory(self.mktemp())

    def put(self, name: str, data: bytes) -> None:
        with open(os.path.join(self.state.path, name), "wb") as f:
            f.write(data)

    def test_writeReadRemove(self):
        """Records are written whole, read back, and removed."""
        record = KernelRecord(**goodFields())
        self.state.write(record)
        self.assertEqual(self.state.read(), ([record], []))
        self.state.remove(KERNEL_ID)
        self.assertEqual(self.state.read(), ([], []))

    def test_invalidSetAside(self):
        """
        Each bad record is logged with its file name and moved, unchanged, to C{invalid/}; the
        good ones are still read; a half-written temporary file is removed.
        """
        good = KernelRecord(**goodFields())
        self.state.write(good)
        fields = goodFields()
        bad = {
            "a.json": encoded(dict(fields, id="a", pid="abc")),
            "b.json": encoded(dict(fields, id="b"))[:40],
            "c.json": b"\x00\xff\x13garbage",
        }
        for name, data in bad.items():
            self.put(name, data)
        self.put(".half.tmp", b"{")
        with capturedLogs() as events:
            records, invalid = self.state.read()
        self.assertEqual(records, [good])
        self.assertEqual([i.name for i in invalid], ["a.json", "b.json", "c.json"])
        self.assertEqual([i.kernelId for i in invalid], ["a", "b", "c"])
        self.assertEqual(invalid[0].fields["pid"], "abc")
        self.assertEqual(invalid[1].fields, {})
        self.assertIn("pid", invalid[0].problem)
        warnings = [formatEvent(e) for e in events if e["log_level"] == LogLevel.warn]
        for name in bad:
            self.assertEqual(len([w for w in warnings if name in w]), 1)
        self.assertEqual(sorted(os.listdir(self.state.path)), [f"{KERNEL_ID}.json", "invalid"])
        folder = os.path.join(self.state.path, "invalid")
        for name, data in bad.items():
            self.assertEqual(invalid[sorted(bad).index(name)].path, os.path.join(folder, name))
            with open(os.path.join(folder, name), "rb") as f:
                self.assertEqual(f.read(), data)

    def test_invalidNeverOverwritten(self):
        """A bad record set aside under a name already in C{invalid/} keeps the earlier one."""
        self.put("a.json", b"first")
        self.state.read()
        self.put("a.json", b"second")
        [invalid] = self.state.read()[1]
        folder = os.path.join(self.state.path, "invalid")
        self.assertEqual(len(os.listdir(folder)), 2)
        with open(os.path.join(folder, "a.json"), "rb") as f:
            self.assertEqual(f.read(), b"first")
        with open(invalid.path, "rb") as f:
            self.assertEqual(f.read(), b"second")
