"""The scale-out fixtures fail, never skip, when a component is missing."""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from tests.scaleout.support import program


class ProgramTests(SynchronousTestCase):
    def test_missingProgramFailsNamingPackage(self):
        """A program that is not installed fails the test, naming the Debian package to install."""
        with self.assertRaises(AssertionError) as caught:
            program("kgw-no-such-etcd", "etcd-server")
        self.assertIn("apt-get install -y etcd-server", str(caught.exception))

    def test_installedProgramFound(self):
        """etcd and haproxy, which the scale-out tests need, are found."""
        self.assertTrue(program("etcd", "etcd-server").endswith("/etcd"))
        self.assertTrue(program("haproxy", "haproxy").endswith("/haproxy"))
