"""Where the gateway listens: KG's port sequence, retries on taken ports, TLS files."""

from __future__ import annotations

import errno
import os
import socket
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IListeningPort, IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, HTTPConnectionPool, readBody
from twisted.web.server import Site
from twisted.web.static import Data
from zope.interface import implementer

from kgw.config import Config, ConfigError
from kgw.http.listen import (
    Candidate,
    Listener,
    NotListening,
    checkTLS,
    listeningServices,
    portsToTry,
)
from tests.certificates import Authority


class PortsToTryTests(SynchronousTestCase):
    """The ports tried, as KG tries them."""

    def test_onePortWithoutRetries(self):
        """With no retries, only the port itself is tried."""
        self.assertEqual(portsToTry(8888, 0), [8888])

    def test_retriesAreSequentialAtFirst(self):
        """Up to five ports are tried in sequence, the port first."""
        self.assertEqual(portsToTry(8888, 2), [8888, 8889, 8890])
        self.assertEqual(portsToTry(8888, 4), [8888, 8889, 8890, 8891, 8892])

    def test_thenRandomWithinTwiceTheCount(self):
        """After five, the ports are random within twice the number of ports of the port."""
        bounds = []

        def randint(low: int, high: int) -> int:
            bounds.append((low, high))
            return high

        ports = portsToTry(8888, 50, randint)
        self.assertEqual(len(ports), 51)
        self.assertEqual(ports[:5], [8888, 8889, 8890, 8891, 8892])
        self.assertEqual(bounds, [(-102, 102)] * 46)
        self.assertEqual(ports[5:], [8888 + 102] * 46)

    def test_realRandomPortsStayNear(self):
        """The random ports lie within twice the number of ports of the port."""
        ports = portsToTry(20000, 50)
        self.assertTrue(all(20000 - 102 <= port <= 20000 + 102 for port in ports[5:]), ports)

    def test_portsStayInRange(self):
        """No port tried is below 1 or above 65535."""
        self.assertEqual(portsToTry(65534, 3), [65534, 65535, 65535, 65535])
        self.assertEqual(portsToTry(2, 10, lambda low, high: low), [2, 3, 4, 5, 6] + [1] * 6)

    def test_portZeroNeedsNoRetry(self):
        """Port 0 (any free port) is tried alone, whatever the retries."""
        self.assertEqual(portsToTry(0, 50), [0])


@implementer(IListeningPort)
class FakePort:
    """A listening port that records being stopped."""

    def __init__(self) -> None:
        self.stopped = False

    def startListening(self) -> None:
        pass

    def stopListening(self) -> Deferred[None]:
        self.stopped = True
        return succeed(None)

    def getHost(self) -> Any:
        return None


@implementer(IStreamServerEndpoint)
class FakeEndpoint:
    """
    An endpoint whose C{listen} gives a fixed outcome (a port, an exception or a Deferred), and
    counts its calls.
    """

    def __init__(self, outcome: Any) -> None:
        self.outcome = outcome
        self.calls = 0

    def listen(self, factory: Any) -> Deferred[Any]:
        self.calls += 1
        if isinstance(self.outcome, Deferred):
            return self.outcome
        if isinstance(self.outcome, Exception):
            return fail(self.outcome)
        return succeed(self.outcome)


def refusing(port: int, code: int) -> FakeEndpoint:
    """An endpoint that cannot listen, with the OS error C{code}."""
    return FakeEndpoint(CannotListenError("127.0.0.1", port, OSError(code, errno.errorcode[code])))


class FakeReactor:
    """Records being stopped."""

    stopped = False

    def stop(self) -> None:
        self.stopped = True


def messages(events: list[dict[str, Any]], level: LogLevel | None = None) -> list[str]:
    return [formatEvent(e) for e in events if level is None or e.get("log_level") == level]


class ListenerTests(SynchronousTestCase):
    """L{Listener} over endpoints that succeed or fail as told."""

    def listener(self, *endpoints: FakeEndpoint, clock: FakeReactor | None = None) -> Listener:
        candidates = [Candidate(e, f"port {8000 + i}", 8000 + i) for i, e in enumerate(endpoints)]
        return Listener(Factory(), candidates, clock or FakeReactor())

    def test_takenPortMeansNext(self):
        """A port in use is logged at info level as KG does, and the next one is tried."""
        port = FakePort()
        listener = self.listener(refusing(8000, errno.EADDRINUSE), FakeEndpoint(port))
        with capturedLogs() as events:
            listener.privilegedStartService()
        self.assertIs(listener.port, port)
        self.assertIn(
            "The port 8000 is already in use, trying another port.",
            messages(events, LogLevel.info),
        )

    def test_deniedPortMeansNext(self):
        """A port the process may not use is a warning, and the next one is tried."""
        port = FakePort()
        listener = self.listener(refusing(8000, errno.EACCES), FakeEndpoint(port))
        with capturedLogs() as events:
            listener.privilegedStartService()
        self.assertIs(listener.port, port)
        self.assertIn("Permission to listen on port 8000 denied.", messages(events, LogLevel.warn))

    def test_noPortLeftEndsProcess(self):
        """When every port is taken, a critical line says so and the process ends with 1."""
        listener = self.listener(refusing(8000, errno.EADDRINUSE), refusing(8001, errno.EADDRINUSE))
        with capturedLogs() as events:
            error = self.assertRaises(NotListening, listener.privilegedStartService)
        self.assertEqual(error.code, 1)
        self.assertIsInstance(error, Exception)  # so that twistd removes its pid file
        self.assertEqual(
            messages(events, LogLevel.critical),
            ["ERROR: the gateway could not be started because no available port could be found."],
        )

    def test_otherErrorEndsAtOnce(self):
        """An error other than a taken or denied port ends the process without more tries."""
        last = FakeEndpoint(FakePort())
        listener = self.listener(refusing(8000, errno.EADDRNOTAVAIL), last)
        with capturedLogs() as events:
            self.assertRaises(NotListening, listener.privilegedStartService)
        self.assertEqual(last.calls, 0)
        [critical] = messages(events, LogLevel.critical)
        self.assertIn("cannot listen on port 8000", critical)

    def test_laterFailureStopsReactor(self):
        """An endpoint that fails after start-up logs a critical line and stops the reactor."""
        later: Deferred[Any] = Deferred()
        clock = FakeReactor()
        listener = self.listener(FakeEndpoint(later), clock=clock)
        listener.privilegedStartService()
        with capturedLogs() as events:
            later.errback(CannotListenError("127.0.0.1", 8000, OSError(errno.EADDRNOTAVAIL, "x")))
        self.assertTrue(clock.stopped)
        self.assertEqual(len(messages(events, LogLevel.critical)), 1)

    def test_stopWhileWaitingCancels(self):
        """Stopping the service while an endpoint is pending cancels it, quietly."""
        pending: Deferred[Any] = Deferred()
        clock = FakeReactor()
        listener = self.listener(FakeEndpoint(pending), clock=clock)
        listener.startService()
        with capturedLogs() as events:
            listener.stopService()
        self.assertTrue(pending.called)
        self.assertFalse(clock.stopped)
        self.assertEqual(messages(events, LogLevel.critical), [])

    def test_stopServiceStopsListening(self):
        """Stopping the service stops its port."""
        port = FakePort()
        listener = self.listener(FakeEndpoint(port))
        listener.startService()
        self.successResultOf(listener.stopService())
        self.assertTrue(port.stopped)
        self.assertIsNone(listener.port)


def freePortPair() -> tuple[socket.socket, int]:
    """A socket listening on a loopback port whose next port is free, and that next port."""
    for _ in range(20):
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        following = taken.getsockname()[1] + 1
        probe = socket.socket()
        try:
            probe.bind(("127.0.0.1", following))
        except OSError:
            taken.close()
            continue
        finally:
            probe.close()
        return taken, following
    raise RuntimeError("no two free ports in a row")


class ListeningTests(TestCase):
    """Real listening on loopback, in this process."""

    def start(self, config: Config) -> list[Listener]:
        resource = Data(b"ok", "text/plain")
        resource.isLeaf = True
        site = Site(resource)
        services = listeningServices(config, site, reactor)
        for service in services:
            service.startService()
            self.addCleanup(service.stopService)
        return services  # type: ignore[return-value]

    async def get(self, url: str) -> bytes:
        agent = Agent(reactor, pool=HTTPConnectionPool(reactor, persistent=False))
        response = await agent.request(b"GET", url.encode("ascii"))
        return await readBody(response)

    async def test_takenPortMeansNextPort(self):
        """When the port is taken, the gateway listens on the next one and says where."""
        taken, following = freePortPair()
        self.addCleanup(taken.close)
        with capturedLogs() as events:
            [listener] = self.start(Config(port=following - 1, port_retries=3, base_url="/gw/"))
        assert listener.port is not None
        self.assertEqual(listener.port.getHost().port, following)
        self.assertIn(
            f"kgw is available at http://127.0.0.1:{following}/gw/", messages(events, LogLevel.info)
        )
        self.assertEqual(await self.get(f"http://127.0.0.1:{following}/"), b"ok")

    async def test_ipv6Loopback(self):
        """An IPv6 address is listened on as it is, and named in brackets."""
        probe = socket.socket(socket.AF_INET6)
        try:
            probe.bind(("::1", 0))
        except OSError:
            raise self.skipTest("no IPv6 loopback here")
        finally:
            probe.close()
        with capturedLogs() as events:
            [listener] = self.start(Config(ip="::1", port=0))
        assert listener.port is not None
        port = listener.port.getHost().port
        self.assertEqual(listener.port.getHost().host, "::1")
        self.assertIn(f"kgw is available at http://[::1]:{port}/", messages(events, LogLevel.info))
        self.assertEqual(await self.get(f"http://[::1]:{port}/"), b"ok")

    async def test_listenReplacesIPAndPort(self):
        """With endpoint descriptions there is one listener for each, and none on ip and port."""
        taken, following = freePortPair()
        self.addCleanup(taken.close)
        config = Config(
            port=following,
            listen=("tcp:0:interface=127.0.0.1", "tcp:0:interface=127.0.0.1"),
        )
        listeners = self.start(config)
        ports = [listener.port.getHost().port for listener in listeners if listener.port]
        self.assertEqual(len(ports), 2)
        self.assertNotIn(following, ports)
        for port in ports:
            self.assertEqual(await self.get(f"http://127.0.0.1:{port}/"), b"ok")


class CheckTLSTests(SynchronousTestCase):
    """L{checkTLS} loads the TLS files, and says which one is wrong and how."""

    def setUp(self) -> None:
        self.directory = self.mktemp()
        os.makedirs(self.directory)
        self.authority = Authority(self.directory)
        self.server = self.authority.issue("server", server=True)

    def write(self, name: str, data: bytes) -> str:
        path = f"{self.directory}/{name}"
        with open(path, "wb") as f:
            f.write(data)
        return path

    def read(self, path: str) -> bytes:
        with open(path, "rb") as f:
            return f.read()

    def assertRefused(self, config: Config, *fragments: str) -> None:
        error = self.assertRaises(ConfigError, checkTLS, config)
        for fragment in fragments:
            self.assertIn(fragment, str(error))

    def test_certificateAndKey(self):
        """A certificate and its key, in two files or in one, are accepted."""
        checkTLS(Config(certfile=self.server.certfile, keyfile=self.server.keyfile))
        both = self.write(
            "both.pem", self.read(self.server.certfile) + self.read(self.server.keyfile)
        )
        checkTLS(Config(certfile=both))

    def test_chainInCertificateFile(self):
        """Certificates after the first in the certificate file are accepted as its chain."""
        chain = self.write(
            "chain.pem",
            self.read(self.server.certfile) + self.read(self.authority.issued.certfile),
        )
        checkTLS(Config(certfile=chain, keyfile=self.server.keyfile))

    def test_clientCA(self):
        """A file of CA certificates is accepted as client_ca."""
        checkTLS(
            Config(
                certfile=self.server.certfile,
                keyfile=self.server.keyfile,
                client_ca=self.authority.issued.certfile,
            )
        )

    def test_noTLS(self):
        """Without a certificate file there is nothing to check."""
        checkTLS(Config())

    def test_notACertificate(self):
        """A certificate file without a PEM certificate is refused, by name."""
        garbage = self.write("garbage.pem", b"not a certificate")
        self.assertRefused(Config(certfile=garbage), "certfile", garbage, "no PEM certificate")

    def test_brokenCertificate(self):
        """A PEM block that is no certificate is refused with OpenSSL's reason."""
        broken = self.write(
            "broken.pem", b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
        )
        self.assertRefused(
            Config(certfile=broken, keyfile=self.server.keyfile), "cannot load", broken
        )

    def test_keyMissing(self):
        """A certificate file without a key, and no key file, is refused with a hint."""
        self.assertRefused(Config(certfile=self.server.certfile), "no PEM private key", "keyfile")

    def test_keyOfAnotherCertificate(self):
        """A key that is not the certificate's is refused."""
        client = self.authority.issue("client", server=False)
        self.assertRefused(
            Config(certfile=self.server.certfile, keyfile=client.keyfile),
            "does not belong",
            client.keyfile,
        )

    def test_encryptedKey(self):
        """An encrypted key is refused at once, rather than prompting for a passphrase."""
        from cryptography.hazmat.primitives import serialization

        key = serialization.load_pem_private_key(self.read(self.server.keyfile), None)
        encrypted = self.write(
            "encrypted.key",
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            ),
        )
        self.assertRefused(
            Config(certfile=self.server.certfile, keyfile=encrypted), "encrypted", encrypted
        )

    def test_clientCAWithoutCertificates(self):
        """A client_ca file without certificates is refused, by name."""
        empty = self.write("empty.pem", b"")
        self.assertRefused(
            Config(certfile=self.server.certfile, keyfile=self.server.keyfile, client_ca=empty),
            "client_ca",
            empty,
        )
