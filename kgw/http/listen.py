"""
Where the gateway listens: on C{ip} and C{port} (over TLS with C{certfile}, trying other ports
as KG does when the port is taken), or on the Twisted endpoint descriptions of C{listen}.
"""

from __future__ import annotations

import errno
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from OpenSSL import crypto
from twisted.application.service import IService, Service
from twisted.internet.abstract import isIPv6Address
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.endpoints import (
    SSL4ServerEndpoint,
    TCP4ServerEndpoint,
    TCP6ServerEndpoint,
    serverFromString,
)
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import (
    IAddress,
    IListeningPort,
    IProtocolFactory,
    IReactorCore,
    IStreamServerEndpoint,
)
from twisted.internet.ssl import (
    Certificate,
    CertificateOptions,
    KeyPair,
    trustRootFromCertificates,
)
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from kgw.config import Config, ConfigError

log = Logger()

# KG tries this many ports in sequence before it picks random ones.
SEQUENTIAL_PORTS = 5

_PEM_CERTIFICATE = re.compile(
    rb"-----BEGIN CERTIFICATE-----\r?\n.+?-----END CERTIFICATE-----", re.DOTALL
)


def portsToTry(
    port: int, retries: int, randint: Callable[[int, int], int] = random.randint
) -> list[int]:
    """
    The C{retries + 1} ports to try, in order, as KG does: C{port} and the ones after it, then
    random ports within C{2 * (retries + 1)} of it. Port 0 (any free port) needs no retry.
    """
    if port == 0:
        return [0]
    count = retries + 1
    ports = [port + i for i in range(min(SEQUENTIAL_PORTS, count))]
    ports += [port + randint(-2 * count, 2 * count) for _ in range(count - SEQUENTIAL_PORTS)]
    return [min(max(p, 1), 65535) for p in ports]


def _read(path: str, option: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(f"cannot read {option} {path!r}: {e.strerror}") from None


def _openSSLReason(error: Exception) -> str:
    """The reasons of an OpenSSL error, without its library and function names."""
    reasons = [
        entry[-1] for entry in (error.args[0] if error.args else []) if isinstance(entry, tuple)
    ]
    return ", ".join(reasons) or str(error) or type(error).__name__


def _certificates(path: str, option: str) -> list[Certificate]:
    """Every PEM certificate in a file, in order."""
    blocks = _PEM_CERTIFICATE.findall(_read(path, option))
    if not blocks:
        raise ConfigError(f"{option} {path!r} holds no PEM certificate")
    try:
        return [Certificate.loadPEM(block) for block in blocks]
    except crypto.Error as e:
        raise ConfigError(
            f"cannot load a certificate of {option} {path!r}: {_openSSLReason(e)}"
        ) from None


def _refusePassphrase(*args: object) -> bytes:
    raise ConfigError("it is encrypted, and kgw cannot ask for its passphrase")


def _privateKey(path: str, option: str) -> KeyPair:
    """The PEM private key in a file, which must not be encrypted."""
    data = _read(path, option)
    if not re.search(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----", data):
        hint = " (give the key with keyfile)" if option == "certfile" else ""
        raise ConfigError(f"{option} {path!r} holds no PEM private key{hint}")
    try:
        return KeyPair(
            crypto.load_privatekey(crypto.FILETYPE_PEM, data, passphrase=_refusePassphrase)
        )
    except ConfigError as e:
        raise ConfigError(f"cannot load the private key of {option} {path!r}: {e}") from None
    except crypto.Error as e:
        raise ConfigError(
            f"cannot load the private key of {option} {path!r}: {_openSSLReason(e)}"
        ) from None


def tlsOptions(config: Config) -> CertificateOptions:
    """
    The server's TLS settings: C{certfile} (the certificate, then any chain), the key in
    C{keyfile} or else in C{certfile}, and with C{client_ca} the CAs a client's certificate
    must be signed by.

    @raise ConfigError: if a file cannot be read or loaded, or the key is not the certificate's.
    """
    certificates = _certificates(config.certfile, "certfile")
    keyOption, keyPath = (
        ("keyfile", config.keyfile) if config.keyfile else ("certfile", config.certfile)
    )
    key = _privateKey(keyPath, keyOption)
    if not key.matches(certificates[0].getPublicKey()):
        raise ConfigError(
            f"the private key of {keyOption} {keyPath!r} does not belong to the certificate "
            f"of certfile {config.certfile!r}"
        )
    authorities = _certificates(config.client_ca, "client_ca") if config.client_ca else []
    # pyOpenSSL takes cryptography's objects for the context, and warns about its own.
    options = CertificateOptions(
        privateKey=key.original.to_cryptography_key(),
        certificate=certificates[0].original.to_cryptography(),
        extraCertChain=[c.original.to_cryptography() for c in certificates[1:]],
        trustRoot=trustRootFromCertificates(authorities) if authorities else None,
    )
    # Name the CAs in the certificate request, so that clients know which certificate to send.
    context = options.getContext()
    for authority in authorities:
        context.add_client_ca(authority.original.to_cryptography())
    return options


def checkTLS(config: Config) -> None:
    """
    Load the TLS files of C{config} (when it has a C{certfile}), so that a bad one is a usage
    error at start-up.

    @raise ConfigError: naming the file and what is wrong with it.
    """
    if config.certfile:
        tlsOptions(config)


@dataclass(frozen=True)
class Candidate:
    """
    One place to listen: an endpoint, and how log lines name it.

    @ivar port: the port number when the endpoint is one of the ports KG would try in turn; a
        taken port then means "try the next candidate", not failure.
    """

    endpoint: IStreamServerEndpoint
    description: str
    port: int | None = None


class CannotStart(Exception):
    """No candidate could listen; the message says why."""


class NotListening(SystemExit, Exception):
    """
    The gateway could not listen, so its process ends with status 1.

    This is an L{Exception}, so that twistd removes its pid file and tells the parent process of
    a daemon why; and a L{SystemExit}, so that the process then ends without a traceback.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.code = 1


def _formatAddress(address: IAddress) -> str:
    if isinstance(address, (IPv4Address, IPv6Address)):
        host = address.host
        return f"[{host}]:{address.port}" if ":" in host else f"{host}:{address.port}"
    name = getattr(address, "name", None)
    if isinstance(name, bytes):
        name = name.decode(errors="replace")
    return str(name) if name is not None else str(address)


def listeningAddress(transport: object) -> IAddress | None:
    """
    The address of the listening port that accepted the connection of C{transport}, through
    any TLS layer: C{0.0.0.0} for a port listening on every interface, where C{getHost()} would
    give the address the client reached. C{None} for a connection that came through no port
    (an in-memory transport).
    """
    for _ in range(4):
        # Twisted's TCP and UNIX server connections keep their listening port as "server".
        port = getattr(transport, "server", None)
        if port is not None and callable(getattr(port, "getHost", None)):
            address: IAddress = port.getHost()
            return address
        transport = getattr(transport, "transport", None)
        if transport is None:
            return None
    return None


def _announceListening(description: str) -> Callable[[IListeningPort], None]:
    def announce(port: IListeningPort) -> None:
        log.info(
            "kgw is listening on {description} ({address})",
            description=description,
            address=_formatAddress(port.getHost()),
        )

    return announce


class Listener(Service):
    """
    Listen with the first of some candidates that works, in order, and stop listening when
    stopped. When none works, log why at critical level and end the process with status 1.

    Listening happens in L{privilegedStartService}, before twistd gives up root, so that a port
    below 1024 can be used, and before any service has started (no kernel has been launched).
    An endpoint that fails at once ends the process there; one that fails later stops the
    reactor instead.

    @ivar port: the listening port, once listening.
    """

    def __init__(
        self,
        factory: IProtocolFactory,
        candidates: Sequence[Candidate],
        reactor: IReactorCore,
        announce: Callable[[IListeningPort], None] | None = None,
    ) -> None:
        self.factory = factory
        self.candidates = list(candidates)
        self.port: IListeningPort | None = None
        self._reactor = reactor
        self._announce = announce or _announceListening(self.candidates[0].description)
        self._waiting: Deferred[IListeningPort] | None = None
        self._starting = False
        self._failedAtOnce: str | None = None

    async def _listen(self) -> IListeningPort:
        for candidate in self.candidates:
            try:
                return await candidate.endpoint.listen(self.factory)
            except CannotListenError as e:
                code = getattr(e.socketError, "errno", None)
                if candidate.port is not None and code == errno.EADDRINUSE:
                    log.info(
                        "The port {port} is already in use, trying another port.",
                        port=candidate.port,
                    )
                    continue
                if candidate.port is not None and code == errno.EACCES:
                    log.warn("Permission to listen on port {port} denied.", port=candidate.port)
                    continue
                reason = getattr(e.socketError, "strerror", None) or str(e.socketError)
                raise CannotStart(
                    f"it cannot listen on {candidate.description}: {reason}"
                ) from None
        raise CannotStart("no available port could be found")

    def _listening(self, port: IListeningPort) -> None:
        self.port = port
        self._announce(port)

    def _failed(self, failure: Failure) -> None:
        if failure.check(CancelledError):
            return
        if failure.check(CannotStart):
            log.critical(
                "ERROR: the gateway could not be started because {reason}.",
                reason=failure.value,
            )
        else:
            log.failure("ERROR: the gateway could not be started", failure, level=LogLevel.critical)
        if self._starting:
            self._failedAtOnce = str(failure.value)
        else:
            self._reactor.stop()

    def privilegedStartService(self) -> None:
        """
        Start listening.

        @raise NotListening: if no candidate could listen.
        """
        super().privilegedStartService()
        self._starting = True
        self._waiting = Deferred.fromCoroutine(self._listen())
        self._waiting.addCallbacks(self._listening, self._failed)
        self._starting = False
        if self._failedAtOnce is not None:
            raise NotListening(self._failedAtOnce)

    def startService(self) -> None:
        """Start listening, unless L{privilegedStartService} has."""
        if self._waiting is None:
            self.privilegedStartService()
        super().startService()

    def stopService(self) -> Deferred[None] | None:
        """Stop listening, or stop trying to."""
        super().stopService()
        if self._waiting is not None and not self._waiting.called:
            self._waiting.cancel()
        self._waiting = None
        port, self.port = self.port, None
        return None if port is None else port.stopListening()


def _endpoint(reactor: IReactorCore, description: str) -> IStreamServerEndpoint:
    """
    The endpoint a C{--listen} description names.

    @raise SystemExit: with a one-line reason, if it names none that can be made here (a
        malformed description, or C{systemd:} without an inherited socket).
    """
    try:
        return serverFromString(reactor, description)
    except Exception as e:
        raise SystemExit(f"kgw: cannot listen on {description!r}: {e!r}") from None


def listeningServices(
    config: Config, factory: IProtocolFactory, reactor: IReactorCore
) -> list[IService]:
    """
    The services that listen for C{factory}: one for each endpoint description of C{listen},
    or else one on C{ip} and the first free port KG would try from C{port}, over TLS when
    C{certfile} is set.

    @raise ConfigError: if the TLS files cannot be loaded (L{checkTLS} says so earlier).
    """
    if config.listen:
        return [
            Listener(factory, [Candidate(_endpoint(reactor, text), text)], reactor)
            for text in config.listen
        ]
    endpoint: Callable[[int], IStreamServerEndpoint]
    if config.certfile:
        options = tlsOptions(config)

        def endpoint(port: int) -> IStreamServerEndpoint:
            return SSL4ServerEndpoint(reactor, port, options, interface=config.ip)

    else:
        kind = TCP6ServerEndpoint if isIPv6Address(config.ip) else TCP4ServerEndpoint

        def endpoint(port: int) -> IStreamServerEndpoint:
            return kind(reactor, port, interface=config.ip)

    scheme = "https" if config.certfile else "http"

    def announce(port: IListeningPort) -> None:
        log.info(
            "kgw is available at {url}",
            url=f"{scheme}://{_formatAddress(port.getHost())}{config.base_url}",
        )

    host = f"[{config.ip}]" if ":" in config.ip else config.ip
    candidates = [
        Candidate(endpoint(port), f"{host}:{port}", port)
        for port in portsToTry(config.port, config.port_retries)
    ]
    return [Listener(factory, candidates, reactor, announce)]
