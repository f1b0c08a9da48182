"""
HTTPS and WSS with real kernels and client certificates, and C{twistd kgw} listening where its
options say: on the next free port, on C{--listen} endpoints, over TLS, or nowhere.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import tempfile
from typing import Any

from autobahn.twisted.websocket import WebSocketClientFactory
from OpenSSL import SSL
from twisted.internet import reactor
from twisted.internet.endpoints import UNIXClientEndpoint
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.ssl import Certificate, PrivateCertificate, optionsForClientTLS
from twisted.internet.task import deferLater
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed, readBody
from twisted.web.iweb import IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

from kgw.gateway import buildGateway, buildSite
from kgw.http.listen import listeningServices
from tests.certificates import Authority
from tests.http.test_listen import freePortPair
from tests.integration.test_daemon import Twistd, spawnTwistd
from tests.support import TIMEOUT, GatewayClient, RunningGateway, stdout, withTimeout


@implementer(IPolicyForHTTPS)
class TrustingPolicy:
    """Trust servers certified by C{authority} only; present C{client} when given."""

    def __init__(self, authority: Certificate, client: PrivateCertificate | None = None) -> None:
        self.authority = authority
        self.client = client

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return optionsForClientTLS(
            hostname.decode("ascii"), trustRoot=self.authority, clientCertificate=self.client
        )


class Certificates:
    """A CA, a server certificate for 127.0.0.1, a client certificate, and a stranger's."""

    def __init__(self, test: TestCase) -> None:
        directory = os.path.abspath(test.mktemp())
        os.makedirs(directory)
        self.authority = Authority(directory)
        self.server = self.authority.issue("server", server=True)
        self.client = self.authority.issue("client", server=False)
        self.stranger = Authority(directory, "other CA").issue("stranger", server=False)

    def policy(self, client: PrivateCertificate | None = None) -> TrustingPolicy:
        """A client that trusts the CA, presenting C{client} if given."""
        return TrustingPolicy(self.authority.issued.certificate(), client)


class TLSGateway(RunningGateway):
    """
    A gateway serving HTTPS and WSS on 127.0.0.1, listening as C{twistd kgw} does, with
    clients that connect as C{policy} says.
    """

    def __init__(self, test: TestCase, policy: TrustingPolicy, **settings: Any) -> None:
        super().__init__(test, **settings)
        self.policy = policy

    def url(self, path: str) -> str:
        return "https" + super().url(path).removeprefix("http")

    async def request(self, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        agent = Agent(reactor, contextFactory=self.policy, pool=self.pool)
        return await super().request(method, path, body, agent=agent, **kw)

    async def start(self) -> TLSGateway:
        self.gateway = buildGateway(self.config, reactor)
        self.kernels = self.gateway.kernels
        self.gateway.startService()
        [listener] = listeningServices(self.config, buildSite(self.gateway.resource), reactor)
        listener.startService()
        self.port = listener.port
        self.portNumber = self.port.getHost().port
        self.test.addCleanup(self.stop)
        return self

    websocketScheme = "wss"

    def openConnection(self, factory: WebSocketClientFactory) -> None:
        creator = self.policy.creatorForNetloc(b"127.0.0.1", self.portNumber)
        reactor.connectSSL("127.0.0.1", self.portNumber, factory, creator)


def refusedByTLS(error: ResponseFailed) -> bool:
    """Whether a request failed because the TLS handshake did."""
    return any(reason.check(SSL.Error) for reason in error.reasons)


class TLSTests(TestCase):
    """HTTPS and WSS, in this process, with real kernels."""

    timeout = 120

    def setUp(self) -> None:
        self.certificates = Certificates(self)

    def gateway(self, client: PrivateCertificate | None = None, **settings: Any) -> TLSGateway:
        server = self.certificates.server
        return TLSGateway(
            self,
            self.certificates.policy(client),
            certfile=server.certfile,
            keyfile=server.keyfile,
            port=0,
            **settings,
        )

    async def test_httpsServesAPI(self):
        """With certfile and keyfile the API is served over HTTPS, certified for 127.0.0.1."""
        gateway = await self.gateway().start()
        code, body = await gateway.request("GET", "api")
        self.assertEqual(code, 200)
        self.assertIn("version", body)

    async def test_wssRunsCode(self):
        """A kernel started over HTTPS runs code sent over WSS; the socket has TCP_NODELAY."""
        gateway = await self.gateway().start()
        model = await gateway.startKernel()
        client = await gateway.connect(model["id"])
        self.assertEqual(stdout(await client.execute("print(6 * 7)")), "42\n")
        [server] = gateway.kernels.get(model["id"]).channels.clients
        # Under TLS the channel's transport wraps the TCP connection.
        handle = server.transport.transport.getHandle()
        self.assertTrue(handle.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))

    async def test_clientCertificateAccepted(self):
        """With client_ca, a client presenting a certificate signed by that CA is served."""
        client = self.certificates.client.privateCertificate()
        gateway = await self.gateway(
            client, client_ca=self.certificates.authority.issued.certfile
        ).start()
        code, _ = await gateway.request("GET", "api")
        self.assertEqual(code, 200)

    async def test_clientWithoutCertificateRefused(self):
        """With client_ca, a client presenting no certificate fails the TLS handshake."""
        gateway = await self.gateway(client_ca=self.certificates.authority.issued.certfile).start()
        with self.assertRaises(ResponseFailed) as caught:
            await gateway.request("GET", "api")
        self.assertTrue(refusedByTLS(caught.exception), caught.exception.reasons)

    async def test_clientWithForeignCertificateRefused(self):
        """With client_ca, a certificate signed by another CA fails the TLS handshake."""
        stranger = self.certificates.stranger.privateCertificate()
        gateway = await self.gateway(
            stranger, client_ca=self.certificates.authority.issued.certfile
        ).start()
        with self.assertRaises(ResponseFailed) as caught:
            await gateway.request("GET", "api")
        self.assertTrue(refusedByTLS(caught.exception), caught.exception.reasons)


async def waitForOutput(process: Twistd, pattern: bytes, count: int = 1) -> list[re.Match[bytes]]:
    """Wait until C{pattern} has matched C{count} times in the output of C{process}."""
    for _ in range(int(TIMEOUT / 0.05)):
        found = list(re.finditer(pattern, process.output))
        if len(found) >= count:
            return found
        if process.ended.called:
            break
        await deferLater(reactor, 0.05, lambda: None)
    raise AssertionError(f"{pattern!r} not seen {count} times in:\n{process.output.decode()}")


async def stopDaemon(process: Twistd) -> None:
    """Stop a daemon by its pid, and wait for it to end."""
    os.kill(process.pid, signal.SIGTERM)
    await withTimeout(process.ended)


@implementer(IAgentEndpointFactory)
class UNIXSocket:
    """Every URL is requested over one UNIX socket."""

    def __init__(self, path: str) -> None:
        self.path = path

    def endpointForURI(self, uri: Any) -> IStreamClientEndpoint:
        return UNIXClientEndpoint(reactor, self.path)


class ListeningDaemonTests(TestCase):
    """Where C{twistd kgw} listens, as its options say."""

    timeout = 120

    def daemon(self, *args: str) -> Twistd:
        return spawnTwistd(self, "-n", "--pidfile=", "kgw", *args)

    async def test_takenPortMeansNextPort(self):
        """When the port is taken, the daemon says so and serves on the next one."""
        taken, following = freePortPair()
        self.addCleanup(taken.close)
        process = self.daemon(f"--port={following - 1}", "--port-retries=2")
        await waitForOutput(process, rb"kgw is available at http://127\.0\.0\.1:\d+/")
        self.assertIn(
            f"The port {following - 1} is already in use, trying another port.".encode(),
            process.output,
        )
        self.assertIn(f"Site starting on {following}".encode(), process.output)
        code, _ = await GatewayClient(self, following).request("GET", "api")
        self.assertEqual(code, 200)
        await stopDaemon(process)

    async def test_takenPortWithoutRetriesFails(self):
        """With port_retries 0 and the port taken, the daemon exits with 1 and one clear line."""
        taken = socket.socket()
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        self.addCleanup(taken.close)
        port = taken.getsockname()[1]
        process = self.daemon(f"--port={port}", "--port-retries=0")
        code = await withTimeout(process.ended)
        self.assertEqual(code, 1, process.output)
        self.assertIn(b"no available port could be found", process.output)
        self.assertNotIn(b"Traceback", process.output)

    async def test_twoListenEndpoints(self):
        """Two --listen options make two listeners, each serving the API."""
        endpoint = "--listen=tcp:0:interface=127.0.0.1"
        process = self.daemon(endpoint, endpoint)
        found = await waitForOutput(process, rb"Site starting on (\d+)", 2)
        ports = {int(match.group(1)) for match in found}
        self.assertEqual(len(ports), 2)
        for port in ports:
            code, body = await GatewayClient(self, port).request("GET", "api")
            self.assertEqual(code, 200)
            self.assertIn("version", body)
        await stopDaemon(process)

    async def test_unixSocket(self):
        """--listen=unix:PATH serves the API on that UNIX socket."""
        directory = tempfile.mkdtemp()  # short: socket paths are limited to about 100 bytes
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "kgw.sock")
        process = self.daemon(f"--listen=unix:{path}")
        await waitForOutput(process, rb"kgw is listening on unix:")
        pool = HTTPConnectionPool(reactor, persistent=False)
        agent = Agent.usingEndpointFactory(reactor, UNIXSocket(path), pool=pool)
        response = await withTimeout(agent.request(b"GET", b"http://kgw/api"))
        self.assertEqual(response.code, 200)
        self.assertIn(b"version", await readBody(response))
        await stopDaemon(process)

    async def test_httpsWithClientCertificates(self):
        """With certfile, keyfile and client_ca the daemon serves HTTPS to certified clients."""
        certificates = Certificates(self)
        process = self.daemon(
            "--port=0",
            f"--certfile={certificates.server.certfile}",
            f"--keyfile={certificates.server.keyfile}",
            f"--client-ca={certificates.authority.issued.certfile}",
        )
        [found] = await waitForOutput(process, rb"kgw is available at https://127\.0\.0\.1:(\d+)/")
        url = f"https://127.0.0.1:{int(found.group(1))}/api".encode()
        pool = HTTPConnectionPool(reactor, persistent=False)
        certified = certificates.policy(certificates.client.privateCertificate())
        response = await Agent(reactor, contextFactory=certified, pool=pool).request(b"GET", url)
        self.assertEqual(response.code, 200)
        await readBody(response)
        anonymous = Agent(reactor, contextFactory=certificates.policy(), pool=pool)
        with self.assertRaises(ResponseFailed) as caught:
            await anonymous.request(b"GET", url)
        self.assertTrue(refusedByTLS(caught.exception), caught.exception.reasons)
        await stopDaemon(process)

    async def test_invalidCertificateIsUsageError(self):
        """A certificate file that does not load is a usage error naming it, not a traceback."""
        path = os.path.abspath(self.mktemp())
        with open(path, "wb") as f:
            f.write(b"not a certificate")
        process = self.daemon(f"--certfile={path}")
        code = await withTimeout(process.ended)
        self.assertNotEqual(code, 0)
        self.assertIn(f"certfile {path!r} holds no PEM certificate".encode(), process.output)
        self.assertNotIn(b"Traceback", process.output)

    async def test_unreadableCertificateIsUsageError(self):
        """A certificate file that cannot be read is a usage error naming it."""
        path = os.path.abspath(self.mktemp())
        process = self.daemon(f"--certfile={path}")
        code = await withTimeout(process.ended)
        self.assertNotEqual(code, 0)
        self.assertIn(f"cannot read {path!r}".encode(), process.output)
        self.assertNotIn(b"Traceback", process.output)
