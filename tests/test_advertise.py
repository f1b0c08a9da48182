"""--advertise-url: where the other gateways sharing a kernel store reach this one."""

from __future__ import annotations

from twisted.python.usage import UsageError
from twisted.trial.unittest import SynchronousTestCase

from kgw.config import Config
from kgw.gateway import advertisedAddress
from tests.test_tap import parse


class AdvertiseURLTests(SynchronousTestCase):
    def test_flagAndVariable(self):
        """The URL is read from --advertise-url and KG_ADVERTISE_URL, a trailing slash dropped."""
        self.assertEqual(
            parse("--advertise-url=http://kgw-0.kgw:8888/").advertise_url, "http://kgw-0.kgw:8888"
        )
        config = parse(environ={"KG_ADVERTISE_URL": "https://[::1]:8443"})
        self.assertEqual(config.advertise_url, "https://[::1]:8443")

    def test_badURLRefused(self):
        """A URL that is not http(s)://HOST:PORT is a usage error showing the URL."""
        for bad in (
            "kgw-0:8888",
            "ftp://kgw-0:8888",
            "http://kgw-0",
            "http://:8888",
            "http://kgw-0:http",
            "http://kgw-0:70000",
            "http://kgw-0:8888/base",
            "http://kgw-0:8888?x=1",
            "http://user@kgw-0:8888",
        ):
            error = self.assertRaises(UsageError, parse, f"--advertise-url={bad}")
            self.assertIn(repr(bad), str(error), bad)

    def test_overridesTheDefault(self):
        """The advertised URL is the address given to the other gateways, whatever the gateway
        listens on: every address, a port chosen at start, or --listen endpoints."""
        url = "http://10.0.0.7:8888"
        for settings in ({"ip": "0.0.0.0"}, {"port": 0}, {"listen": ("unix:/run/kgw.sock",)}):
            self.assertEqual(advertisedAddress(Config(advertise_url=url, **settings)), url)

    def test_defaultAddress(self):
        """Without it, the address is the gateway's ip and port; none for --listen endpoints."""
        self.assertEqual(advertisedAddress(Config(ip="127.0.0.2", port=9)), "http://127.0.0.2:9")
        self.assertIsNone(advertisedAddress(Config(listen=("tcp:8888",))))
