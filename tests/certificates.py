"""Test certificates: a CA, a server certificate for 127.0.0.1 and client certificates."""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from twisted.internet.ssl import Certificate, PrivateCertificate


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as PEM files and as Twisted's objects."""

    certfile: str
    keyfile: str

    def certificate(self) -> Certificate:
        """The certificate alone, e.g. to trust it as a CA."""
        with open(self.certfile, "rb") as f:
            return Certificate.loadPEM(f.read())

    def privateCertificate(self) -> PrivateCertificate:
        """The certificate with its key, e.g. to present it as a client."""
        with open(self.certfile, "rb") as f, open(self.keyfile, "rb") as g:
            return PrivateCertificate.loadPEM(f.read() + g.read())


def _name(commonName: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)])


def _write(path: str, data: bytes) -> str:
    with open(path, "wb") as f:
        f.write(data)
    return path


class Authority:
    """A CA whose certificates are written as PEM files into C{directory}."""

    def __init__(self, directory: str, name: str = "kgw test CA") -> None:
        self.directory = directory
        self.name = name
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._certificate = self._build(
            _name(name),
            self._key.public_key(),
            [
                (x509.BasicConstraints(ca=True, path_length=None), True),
                (
                    x509.KeyUsage(
                        digital_signature=False,
                        content_commitment=False,
                        key_encipherment=False,
                        data_encipherment=False,
                        key_agreement=False,
                        key_cert_sign=True,
                        crl_sign=True,
                        encipher_only=False,
                        decipher_only=False,
                    ),
                    True,
                ),
            ],
        )
        stem = os.path.join(directory, name.replace(" ", "-"))
        self.issued = Issued(
            _write(stem + ".pem", self._certificate.public_bytes(serialization.Encoding.PEM)),
            _write(stem + ".key", _keyBytes(self._key)),
        )

    def _build(
        self,
        subject: x509.Name,
        publicKey: ec.EllipticCurvePublicKey,
        extensions: list[tuple[x509.ExtensionType, bool]],
    ) -> x509.Certificate:
        now = datetime.datetime.now(datetime.timezone.utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(_name(self.name))
            .public_key(publicKey)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(publicKey), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), False
            )
        )
        for extension, critical in extensions:
            builder = builder.add_extension(extension, critical)
        return builder.sign(self._key, hashes.SHA256())

    def issue(self, commonName: str, server: bool) -> Issued:
        """
        A certificate signed by this CA: for a server at 127.0.0.1 and localhost, or for a
        client.
        """
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        extensions: list[tuple[x509.ExtensionType, bool]] = [
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.ExtendedKeyUsage([usage]), False),
        ]
        if server:
            names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            extensions.append((x509.SubjectAlternativeName(names), False))
        certificate = self._build(_name(commonName), key.public_key(), extensions)
        stem = os.path.join(self.directory, commonName.replace(" ", "-"))
        return Issued(
            _write(stem + ".pem", certificate.public_bytes(serialization.Encoding.PEM)),
            _write(stem + ".key", _keyBytes(key)),
        )


def _keyBytes(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
