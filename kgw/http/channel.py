"""
The gateway's HTTP/1.1 connection: Twisted's parser, with every refusal answered in JSON.

Twisted's L{HTTPChannel} answers a malformed request with a bare C{400} and no body, closes a
connection whose header line is longer than 16 KB without an answer, and waits for a body of
any declared length. L{StrictChannel} answers the same refusals with a JSON body (431 for a
header block that is too large), refuses a malformed chunk size as soon as its first bad byte
arrives, and hands a request whose declared C{Content-Length} is over the body limit on at
once, with no body, so that the edge answers 413 before the body comes; then it closes.
"""

from __future__ import annotations

import string

from twisted.logger import Logger
from twisted.web.http import HTTPChannel, _ChunkedTransferDecoder, _GenericHTTPChannelProtocol

from kgw.http.errors import errorBody, reasonPhrase

log = Logger()

_HEX = frozenset(string.hexdigits.encode("ascii"))


def _peer(channel: HTTPChannel) -> str:
    address = channel.transport.getPeer() if channel.transport is not None else None
    return str(getattr(address, "host", None) or getattr(address, "name", None) or "-")


class StrictChannel(HTTPChannel):
    """
    One HTTP connection to the gateway.

    @ivar maxBodySize: the most bytes a request may declare in its C{Content-Length} (0: any
        number); a larger one is handed on without its body, for the edge to refuse.
    """

    def __init__(self, maxBodySize: int = 0) -> None:
        super().__init__()
        self.maxBodySize = maxBodySize
        self._bodyRefused = False

    def refuse(self, code: int, message: str) -> None:
        """Answer C{code} with a JSON error saying C{message}, log it, and close."""
        # A TCP or TLS transport says whether it is closing; ITransport does not.
        if self.transport is None or getattr(self.transport, "disconnecting", False):
            return
        log.warn(
            "Refused a request from {client} with {code}: {message}",
            client=_peer(self),
            code=code,
            message=message,
        )
        body = errorBody(code, message)
        head = (
            f"HTTP/1.1 {code} {reasonPhrase(code)}\r\n"
            "Content-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        self.transport.write(head.encode("ascii") + body)
        self.loseConnection()

    def _respondToBadRequestAndDisconnect(self) -> None:
        # Twisted's one answer to everything it cannot parse: a request line, a header, a
        # Content-Length or Transfer-Encoding, a chunk.
        self.refuse(400, "The request is not valid HTTP/1.1")

    def _headerBlockTooLarge(self) -> None:
        self.refuse(
            431,
            f"The request line and header fields are larger than {self.totalHeadersSize} "
            f"bytes, or more than {self.maxHeaders} fields",
        )

    def lineLengthExceeded(self, line: bytes) -> None:
        # One line longer than MAX_LENGTH: Twisted's LineReceiver would just close.
        self._headerBlockTooLarge()

    def lineReceived(self, line: bytes) -> None:
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            self._headerBlockTooLarge()
            return
        super().lineReceived(line)
        if self._bodyRefused:
            # The end of the header block: the request goes on now, without its body, and the
            # connection closes once it is answered (what follows of the body is never read).
            self._bodyRefused = False
            self.persistent = False
            self._transferDecoder = None
            self.requests[-1].responseHeaders.setRawHeaders(b"Connection", [b"close"])
            self.allContentReceived()

    def headerReceived(self, line: bytes) -> bool:
        if self._receivedHeaderCount >= self.maxHeaders:
            self._headerBlockTooLarge()
            return False
        return bool(super().headerReceived(line))

    def allHeadersReceived(self) -> None:
        self._bodyRefused = (
            self.maxBodySize > 0 and self.length is not None and self.length > self.maxBodySize
        )
        super().allHeadersReceived()

    def _send100Continue(self) -> None:
        # A body that will be refused is not asked for.
        if not self._bodyRefused:
            super()._send100Continue()

    def rawDataReceived(self, data: bytes) -> None:
        # Twisted's decoder reads a chunk-size line once it is whole (or 1 KB long); its start,
        # before or after the decoder has read what came, can already be wrong.
        if not self._badChunkSize(data):
            super().rawDataReceived(data)
            self._badChunkSize(b"")

    def _badChunkSize(self, data: bytes) -> bool:
        """Refuse the request if the chunk-size line being read, with C{data}, cannot be one."""
        decoder = self._transferDecoder
        if (
            not self._handlingRequest
            and isinstance(decoder, _ChunkedTransferDecoder)
            and decoder.state == "CHUNK_LENGTH"
            and not _validChunkSizeStart(bytes(decoder._buffer) + data)
        ):
            self.refuse(400, "A chunk size of the request body is not a hexadecimal number")
            return True
        return False


def _validChunkSizeStart(line: bytes) -> bool:
    """
    Whether C{line}, the start of a chunk-size line (RFC 9112 section 7.1), can still be one:
    hexadecimal digits up to the extensions (C{;}) or the line's end. Twisted's decoder checks
    the rest once the line is complete.
    """
    for i, byte in enumerate(line):
        if byte in b";\r":
            return i > 0
        if byte not in _HEX:
            return False
    return True


def strictChannelFactory(maxBodySize: int) -> object:
    """
    What a L{twisted.web.server.Site} takes as its C{protocol}: a L{StrictChannel} behind
    Twisted's wrapper, as Twisted builds its own channels.
    """

    def build() -> _GenericHTTPChannelProtocol:
        return _GenericHTTPChannelProtocol(StrictChannel(maxBodySize))

    return build
