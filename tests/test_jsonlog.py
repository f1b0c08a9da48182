"""Log events as JSON lines."""

from __future__ import annotations

import io
import json

from twisted.logger import Logger, LogLevel
from twisted.python import log as legacyLog
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from kgw.jsonlog import eventAsDict, jsonLineObserver


class JSONLineTests(SynchronousTestCase):
    def emit(self, *emit: object, **keys: object) -> list[dict[str, object]]:
        """What a L{Logger} writes through the JSON observer for one call, parsed."""
        output = io.StringIO()
        logger = Logger(namespace="kgw.test", observer=jsonLineObserver(output))
        logger.emit(*emit, **keys)
        return [json.loads(line) for line in output.getvalue().splitlines()]

    def test_oneObjectPerLine(self) -> None:
        """An event is one line: time in UTC, level, namespace, message and its JSON keys."""
        [line] = self.emit(
            LogLevel.warn, "Kernel {kernelId}\nsays {what!r}", kernelId="k-1", what=["x"]
        )
        self.assertRegex(line["time"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
        self.assertEqual(line["level"], "warn")
        self.assertEqual(line["namespace"], "kgw.test")
        self.assertEqual(line["message"], "Kernel k-1\nsays ['x']")
        self.assertEqual((line["kernelId"], line["what"]), ("k-1", ["x"]))

    def test_unwritableKeysLeftOut(self) -> None:
        """A key whose value is not JSON is left out; the message still shows it."""
        [line] = self.emit(LogLevel.info, "at {thing}", thing=object(), count=2)
        self.assertNotIn("thing", line)
        self.assertIn("<object object", line["message"])
        self.assertEqual(line["count"], 2)

    def test_failureTraceback(self) -> None:
        """A failure's traceback is its own key, not part of the message."""
        failure = Failure(ZeroDivisionError("division by zero"))
        [line] = self.emit(LogLevel.critical, "It broke", log_failure=failure)
        self.assertEqual(line["message"], "It broke")
        self.assertIn("ZeroDivisionError", line["traceback"])

    def test_legacyEvent(self) -> None:
        """An event of twisted.python.log, as the access log's, has its text as the message."""
        events: list[dict[str, object]] = []
        legacyLog.addObserver(events.append)
        self.addCleanup(legacyLog.removeObserver, events.append)
        legacyLog.msg('"GET /api?token=[secret] HTTP/1.1" 200')
        [event] = [e for e in events if "GET /api" in str(e.get("message"))]
        found = eventAsDict(event)
        self.assertEqual(found["message"], '"GET /api?token=[secret] HTTP/1.1" 200')
        self.assertEqual(found["level"], "info")
        json.dumps(found)
