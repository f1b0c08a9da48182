"""Who may use the gateway: the token, the origins allowed, the CORS headers, and log redaction.

The rules are KG's and jupyter_server's. L{kgw.http.edge.Edge} applies them to every request;
L{accessLogFormatter} keeps the token out of the access log.
"""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote_to_bytes, urlsplit

from twisted.internet.interfaces import IAddress
from twisted.web.http import combinedLogFormatter
from twisted.web.iweb import IAccessLogFormatter, IRequest
from zope.interface import provider

from kgw.config import Config

# What a log line shows instead of a token.
SECRET = b"[secret]"

# jupyter_server's pattern: the scheme is case-insensitive, and only "token" is taken.
_AUTHORIZATION = re.compile(rb"\s*token\s+(.+?)\s*", re.IGNORECASE)
# Twisted splits a query string on both separators.
_SEPARATORS = re.compile(rb"([&;])")
# A Host value's port, which the check of local names ignores.
_PORT = re.compile(r":\d*$")


def hostName(host: str) -> str:
    """
    The name or address of a C{Host} header's value: without its port, an IPv6 address without
    its brackets, in lower case.
    """
    host = host.strip().lower()
    if host.startswith("["):
        inside, bracket, rest = host[1:].partition("]")
        if bracket and (not rest or _PORT.fullmatch(rest)):
            return inside
        return host
    return _PORT.sub("", host)


def isLocalHost(host: str, localHostnames: Sequence[str]) -> bool:
    """
    Whether the C{Host} header value C{host} names this machine as jupyter_server understands
    it: a loopback address (127.0.0.0/8, ::1), or one of C{localHostnames}; a port is ignored.
    """
    name = hostName(host)
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return name in (local.lower() for local in localHostnames)


def isLoopback(address: IAddress | None) -> bool:
    """Whether C{address} is a loopback IP address (a listening port bound to loopback only)."""
    try:
        return ipaddress.ip_address(getattr(address, "host", "")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class AccessPolicy:
    """
    The access settings of one gateway: the token requests must carry (none when empty), the
    allowed origin, the CORS headers every response carries, and whether a connection to a
    loopback address may name the gateway otherwise than as a local host (jupyter_server's
    C{allow_remote_access} and C{local_hostnames}).
    """

    token: str = ""
    allowOrigin: str = ""
    corsHeaders: Sequence[tuple[bytes, bytes]] = ()
    allowRemoteAccess: bool = False
    localHostnames: Sequence[str] = ("localhost",)

    @classmethod
    def fromConfig(cls, config: Config) -> AccessPolicy:
        """The policy of the settings C{config}; only the CORS options that are set make headers."""
        headers = [
            (b"Access-Control-Allow-Credentials", config.allow_credentials),
            (b"Access-Control-Allow-Headers", config.allow_headers),
            (b"Access-Control-Allow-Methods", config.allow_methods),
            (b"Access-Control-Allow-Origin", config.allow_origin),
            (b"Access-Control-Expose-Headers", config.expose_headers),
            (b"Access-Control-Max-Age", config.max_age),
        ]
        return cls(
            token=config.auth_token,
            allowOrigin=config.allow_origin,
            corsHeaders=tuple((name, value.encode("utf-8")) for name, value in headers if value),
            allowRemoteAccess=config.allow_remote_access,
            localHostnames=config.local_hostnames,
        )

    def addCORSHeaders(self, request: IRequest) -> None:
        """Set the configured CORS headers on the response to C{request}."""
        for name, value in self.corsHeaders:
            request.setHeader(name, value)

    def refusedOrigin(self, request: IRequest) -> str | None:
        """
        The C{Origin} of C{request} if it is not allowed, else C{None}.

        A request without one is allowed (it does not come from a browser page), and so is one
        from the origin C{allowOrigin} names (any, for C{*}) or from the gateway's own origin:
        the host and port of its C{Host} header.
        """
        if self.allowOrigin == "*":
            return None
        host = (request.getHeader(b"host") or b"").decode("latin-1").lower()
        for raw in request.requestHeaders.getRawHeaders(b"origin", []):
            origin = raw.decode("latin-1")
            if origin == self.allowOrigin:
                continue
            try:
                netloc = urlsplit(origin.lower()).netloc
            except ValueError:
                return origin
            if not netloc or netloc != host:
                return origin
        return None

    def refusedHost(self, request: IRequest, listening: IAddress | None) -> str | None:
        """
        The C{Host} of C{request} if it must be refused as a DNS rebinding, else C{None}.

        A page on any host name that resolves to 127.0.0.1 can send requests to a gateway on
        loopback, and the browser lets it read the answers: its origin is that name. So when
        the connection came through a port listening on a loopback address (C{listening}) and
        no token is set, the C{Host} must name a local host (L{isLocalHost}), unless
        C{allowRemoteAccess}. A request without a C{Host} (HTTP/1.0) is not from a browser.
        """
        if self.allowRemoteAccess or self.token or not isLoopback(listening):
            return None
        host = request.getHeader(b"host")
        if host is None:
            return None
        text = host.decode("latin-1")
        return None if isLocalHost(text, self.localHostnames) else text

    def authorized(self, request: IRequest) -> bool:
        """
        Whether C{request} carries the token, as C{Authorization: token T} or C{?token=T}; always
        when no token is set. Each candidate is compared in constant time.
        """
        if not self.token:
            return True
        expected = self.token.encode("utf-8")
        candidates = list(request.args.get(b"token", []))
        for header in request.requestHeaders.getRawHeaders(b"authorization", []):
            match = _AUTHORIZATION.fullmatch(header)
            if match:
                candidates.append(match.group(1))
        # No short cut: every candidate is compared.
        found = False
        for candidate in candidates:
            found |= hmac.compare_digest(candidate, expected)
        return found


def redactToken(uri: bytes) -> bytes:
    """C{uri} with the value of every C{token} query argument replaced by L{SECRET}."""
    path, question, query = uri.partition(b"?")
    if not question:
        return uri
    pieces = _SEPARATORS.split(query)
    for i in range(0, len(pieces), 2):
        name, equals, _ = pieces[i].partition(b"=")
        if equals and unquote_to_bytes(name.replace(b"+", b" ")) == b"token":
            pieces[i] = name + b"=" + SECRET
    return path + b"?" + b"".join(pieces)


class _RedactedRequest:
    """A request as the access log sees it: its URI and C{Referer} without a token's value."""

    def __init__(self, request: IRequest) -> None:
        self._request = request
        self.uri = redactToken(request.uri)

    def getHeader(self, name: bytes) -> bytes | None:
        value = self._request.getHeader(name)
        if value is not None and name.lower() == b"referer":
            return redactToken(value)
        return value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._request, name)


@provider(IAccessLogFormatter)
def accessLogFormatter(timestamp: str, request: IRequest) -> str:
    """Twisted's combined log line for C{request}, with every C{token} query value redacted."""
    return combinedLogFormatter(timestamp, _RedactedRequest(request))
