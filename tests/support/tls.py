"""A throwaway PKI for the TLS tests, made with the `cryptography` package: two CAs, a server certificate for
127.0.0.1 and localhost, and client certificates (CN=guest, CN=nobody, and CN=guest signed by the other CA).

Certificates carry the extensions strict verifiers insist on (basic constraints, key usage, key identifiers),
so they pass Python 3.13's ``VERIFY_X509_STRICT`` as well as older defaults. EC P-256 keys keep generation fast.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_VALID_FOR = datetime.timedelta(days=2)


@dataclass(frozen=True, slots=True)
class Issued:
    """One certificate and its key, as PEM files."""

    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Pki:
    ca: Path  # the CA the broker trusts (--tls-ca) and that signed the server certificate
    other_ca: Path  # a CA the broker does not trust
    server: Issued  # CN=localhost, SAN localhost + 127.0.0.1 + ::1, signed by `ca`
    server_combined: Path  # the server certificate and its key in one file (--tls-cert without --tls-key)
    guest: Issued  # CN=guest, O=amqpd tests, signed by `ca`
    nobody: Issued  # CN=nobody (no such user), signed by `ca`
    stranger: Issued  # CN=guest, signed by `other_ca`

    def client_context(
        self, client: Issued | None = None, *, verify_server: bool = True, trust: Path | None = None
    ) -> ssl.SSLContext:
        """What a client uses: trusting `trust` (default: our CA) unless `verify_server` is off, presenting
        `client` when given."""
        context = ssl.create_default_context(cafile=str(trust or self.ca))
        if not verify_server:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if client is not None:
            context.load_cert_chain(str(client.cert), str(client.key))
        return context


def _name(common_name: str, organisation: str = "amqpd tests") -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def _builder(subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + _VALID_FOR)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


class _CA:
    def __init__(self, name: str, directory: Path) -> None:
        self.key = _key()
        self.name = _name(name)
        self.cert = (
            _builder(self.name, self.name, self.key)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.path = directory / f"{name.replace(' ', '_')}.pem"
        self.path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self,
        directory: Path,
        stem: str,
        common_name: str,
        *,
        server: bool = False,
    ) -> Issued:
        key = _key()
        builder = (
            _builder(_name(common_name), self.name, key)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=False,
                    crl_sign=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.DNSName("localhost"),
                        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                        x509.IPAddress(ipaddress.ip_address("::1")),
                    ]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        issued = Issued(directory / f"{stem}.crt", directory / f"{stem}.key")
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, issued.key)
        return issued


def make_pki(directory: Path) -> Pki:
    ca = _CA("amqpd test CA", directory)
    other = _CA("some other CA", directory)
    server = ca.issue(directory, "server", "localhost", server=True)
    combined = directory / "server-combined.pem"
    combined.write_bytes(server.cert.read_bytes() + server.key.read_bytes())
    return Pki(
        ca=ca.path,
        other_ca=other.path,
        server=server,
        server_combined=combined,
        guest=ca.issue(directory, "guest", "guest"),
        nobody=ca.issue(directory, "nobody", "nobody"),
        stranger=other.issue(directory, "stranger", "guest"),
    )
