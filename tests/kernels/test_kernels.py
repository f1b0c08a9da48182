"""Pieces of the kernel side that need no kernel: environment policy, signing, the bridge."""

from __future__ import annotations

import asyncio
import json

from jupyter_client.session import Session
from twisted.internet.defer import CancelledError
from twisted.trial.unittest import SynchronousTestCase, TestCase

from kgw.bridge import fromCoroutine
from kgw.errors import InvalidRequest
from kgw.jupyter import isoformat
from kgw.kernels.environment import kernelEnvironment
from kgw.kernels.signing import DELIMITER, MessageError, Signer
from kgw.kernels.sockets import address


class EnvironmentTests(SynchronousTestCase):
    environ = {"PATH": "/bin", "HOME": "/root", "SECRET": "s", "KG_AUTH_TOKEN": "t"}

    def test_withoutEnvInheritsGateway(self):
        """A request without env gives the kernel the gateway's environment, as KG does."""
        env = kernelEnvironment(None, self.environ)
        self.assertEqual(env["HOME"], "/root")
        self.assertEqual(env["KERNEL_GATEWAY"], "1")

    def test_tokenNeverPassedOn(self):
        """KG_AUTH_TOKEN never reaches a kernel, with or without env in the request."""
        self.assertNotIn("KG_AUTH_TOKEN", kernelEnvironment(None, self.environ))
        requested = {"KG_AUTH_TOKEN": "x"}
        self.assertNotIn(
            "KG_AUTH_TOKEN",
            kernelEnvironment(requested, self.environ, whitelist=["KG_AUTH_TOKEN"]),
        )

    def test_withEnvOnlyWhitelisted(self):
        """With env, the kernel gets PATH, whitelisted names and KERNEL_* names only."""
        env = kernelEnvironment(
            {"KERNEL_USERNAME": "u", "FOO": "f", "BAR": "b"},
            self.environ,
            whitelist=["FOO"],
            processWhitelist=["HOME"],
        )
        self.assertEqual(
            env,
            {
                "PATH": "/bin",
                "HOME": "/root",
                "KERNEL_USERNAME": "u",
                "FOO": "f",
                "KERNEL_GATEWAY": "1",
            },
        )

    def test_badEnvRefused(self):
        """Non-string values, invalid names and a non-object env are refused."""
        for bad in ([], {"KERNEL_X": 1}, {"1BAD": "x"}, {"A-B": "x"}, {"KERNEL_X": "x" * 70000}):
            self.assertRaises(InvalidRequest, kernelEnvironment, bad, self.environ)


class SignerTests(SynchronousTestCase):
    def setUp(self):
        self.session = Session(key=b"secret")
        self.signer = Signer(self.session)
        _, self.parts = self.signer.message("status", {"execution_state": "idle"})

    def test_signatureMatchesSession(self):
        """Messages are signed exactly as jupyter_client signs them."""
        frames = self.signer.frames(self.parts)
        msg = self.session.deserialize(self.session.feed_identities(frames)[1])
        self.assertEqual(msg["content"], {"execution_state": "idle"})

    def test_unwrapChecksSignature(self):
        """A message with a wrong signature is refused."""
        frames = [b"id", DELIMITER, b"0" * 64, *self.parts]
        self.assertRaises(MessageError, self.signer.unwrap, frames)

    def test_unwrapReturnsHeaderAndParts(self):
        """A good message unwraps to its parsed header and raw parts, identities dropped."""
        header, parts = self.signer.unwrap([b"id", *self.signer.frames(self.parts)])
        self.assertEqual(header["msg_type"], "status")
        self.assertEqual(parts, self.parts)

    def test_unwrapRefusesMalformed(self):
        """No delimiter, too few parts, or a header that is not an object: refused."""
        self.assertRaises(MessageError, self.signer.unwrap, [b"x", b"y"])
        self.assertRaises(MessageError, self.signer.unwrap, [DELIMITER, b"sig", b"{}"])
        parts = [b"[]", b"{}", b"{}", b"{}"]
        self.assertRaises(MessageError, self.signer.unwrap, self.signer.frames(parts))

    def test_emptyKeyMeansNoSignature(self):
        """With an empty key messages are unsigned, as Jupyter defines it."""
        signer = Signer(Session(key=b""))
        self.assertEqual(signer.sign(self.parts), b"")
        header, _ = signer.unwrap([DELIMITER, b"", *self.parts])
        self.assertEqual(json.loads(self.parts[0])["msg_id"], header["msg_id"])


class AddressTests(SynchronousTestCase):
    def test_tcpAndIPC(self):
        """Channel addresses follow the connection info's transport."""
        info = {"transport": "tcp", "ip": "127.0.0.1", "shell_port": 5}
        self.assertEqual(address(info, "shell"), "tcp://127.0.0.1:5")
        info = {"transport": "ipc", "ip": "/tmp/k", "shell_port": 5}
        self.assertEqual(address(info, "shell"), "ipc:///tmp/k-5")


class TimeFormatTests(SynchronousTestCase):
    def test_microsecondsAndZ(self):
        """Times are ISO 8601 UTC with microseconds and a Z, even at a whole second."""
        from datetime import datetime, timezone

        moment = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
        self.assertEqual(isoformat(moment), "2026-01-02T03:04:05.000000Z")


class BridgeTests(TestCase):
    async def test_result(self):
        """A coroutine's result arrives through the Deferred."""

        async def answer():
            await asyncio.sleep(0)
            return 42

        self.assertEqual(await fromCoroutine(answer()), 42)

    async def test_cancelTranslated(self):
        """Cancelling the Deferred cancels the task and fails with Twisted's CancelledError."""
        started = asyncio.Event()
        cancelled = []

        async def forever():
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        d = fromCoroutine(forever())
        await fromCoroutine(started.wait())
        d.cancel()
        with self.assertRaises(CancelledError):
            await d
        self.assertEqual(cancelled, [True])

    async def test_shieldedKeepsRunning(self):
        """A shielded coroutine runs to its end when its Deferred is cancelled."""
        finished = asyncio.Event()

        async def work():
            await asyncio.sleep(0.01)
            finished.set()

        d = fromCoroutine(work(), shield=True)
        d.cancel()
        with self.assertRaises(CancelledError):
            await d
        await fromCoroutine(asyncio.wait_for(finished.wait(), 5))
        self.assertTrue(finished.is_set())
