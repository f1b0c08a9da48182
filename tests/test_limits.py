"""Rules that need no kernel: iopub rate limits, culling, comment prefixes."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from kgw.api.ratelimit import IOPubRateLimiter
from kgw.kernels.culling import Culling

STREAM = [b"{}", b"{}", b"{}", b'{"name": "stdout", "text": "' + b"x" * 100 + b'"}']


class RateLimiterTests(SynchronousTestCase):
    def test_messageRate(self):
        """Past the message rate output is dropped, with one notice, until the rate falls."""
        limiter = IOPubRateLimiter(messageRate=10, dataRate=0, window=1.0)
        results = [limiter.admit(0.0, "display_data", STREAM) for _ in range(15)]
        sent = [ok for ok, _ in results]
        notices = [n for _, n in results if n]
        self.assertEqual(sent, [True] * 10 + [False] * 5)
        self.assertEqual(len(notices), 1)
        self.assertIn("iopub_msg_rate_limit=10", notices[0])
        # A window later the rate is back under 80% of the limit: output flows again.
        self.assertEqual(limiter.admit(1.5, "display_data", STREAM), (True, None))

    def test_dataRate(self):
        """Stream bytes past the data rate are dropped, with a notice naming the data limit."""
        limiter = IOPubRateLimiter(messageRate=0, dataRate=500, window=1.0)
        results = [limiter.admit(0.0, "stream", STREAM) for _ in range(6)]
        # Each message carries 136 bytes: the fourth would pass 500 bytes in the window.
        self.assertEqual([ok for ok, _ in results], [True] * 3 + [False] * 3)
        self.assertIn("data rate", next(n for _, n in results if n))

    def test_statusNeverLimited(self):
        """status, comm_open and execute_input always pass."""
        limiter = IOPubRateLimiter(messageRate=1, dataRate=1, window=1.0)
        for msgType in ("status", "comm_open", "execute_input") * 10:
            self.assertEqual(limiter.admit(0.0, msgType, STREAM), (True, None))

    def test_offByDefault(self):
        """With no limits the limiter is inactive."""
        self.assertFalse(IOPubRateLimiter(0, 0, 3.0).active)


class CullingTests(SynchronousTestCase):
    def test_rules(self):
        """Idle past the timeout is culled; connected and busy kernels only when allowed."""
        culling = Culling(idleTimeout=60)
        self.assertTrue(culling.applies(61, 0, "idle"))
        self.assertFalse(culling.applies(59, 0, "idle"))
        self.assertFalse(culling.applies(61, 1, "idle"))
        self.assertFalse(culling.applies(61, 0, "busy"))
        self.assertTrue(Culling(60, connected=True).applies(61, 1, "idle"))
        self.assertTrue(Culling(60, busy=True).applies(61, 0, "busy"))
        self.assertFalse(Culling(0).applies(10**6, 0, "idle"))


class CommentPrefixTests(SynchronousTestCase):
    def test_configuredPrefixReachesParser(self):
        """comment_prefix from the options decides which cells of a notebook are endpoints."""
        from kgw.notebook_http.cells import notebookAPI
        from tests.test_tap import parse

        config = parse('--comment-prefix={"r": "##"}')
        notebook = {
            "metadata": {"language_info": {"name": "R"}},
            "cells": [{"cell_type": "code", "source": "## GET /r\nprint(1)"}],
        }
        api = notebookAPI(notebook, "r.ipynb", config.comment_prefix)
        self.assertEqual([e.path for e in api.endpoints], ["/r"])
