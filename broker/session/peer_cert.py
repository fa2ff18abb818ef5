"""The user name SASL EXTERNAL takes from a verified TLS client certificate, as RabbitMQ's
``rabbit_auth_mechanism_ssl`` does (``ssl_cert_login_from``):

- ``common_name``: the subject's CN; several CNs are joined with ``,``.
- ``distinguished_name``: the whole subject in RFC 4514 form, most specific part first
  (``CN=guest,O=acme,C=GB``, as ``openssl x509 -nameopt RFC2253`` prints it), with RabbitMQ's short attribute
  names and escaping. An attribute outside RabbitMQ's table keeps the name Python gives it (RabbitMQ would
  write its dotted OID).

The certificate is the dict ``ssl.SSLSocket.getpeercert()`` returns (and transports give as ``peercert``):
its ``subject`` is a tuple of relative distinguished names, each a tuple of ``(attribute, value)`` pairs, in
the certificate's order (least specific first).
"""

from __future__ import annotations

from collections.abc import Mapping

COMMON_NAME = "common_name"
DISTINGUISHED_NAME = "distinguished_name"

# Python's (OpenSSL's long) attribute names and the RFC 4514 / RabbitMQ short forms. Others keep their name.
_SHORT_NAMES = {
    "commonName": "CN",
    "surname": "SN",
    "givenName": "GIVENNAME",
    "initials": "INITIALS",
    "generationQualifier": "GENERATIONQUALIFIER",
    "localityName": "L",
    "stateOrProvinceName": "ST",
    "organizationName": "O",
    "organizationalUnitName": "OU",
    "title": "TITLE",
    "countryName": "C",
    "serialNumber": "SERIALNUMBER",
    "pseudonym": "PSEUDONYM",
    "domainComponent": "DC",
    "emailAddress": "EMAILADDRESS",
    "streetAddress": "STREET",
    "userId": "UID",
}
_ESCAPED = frozenset('"+,;<>\\')


def _escape(value: str) -> str:
    """RFC 4514 escaping as RabbitMQ's rabbit_cert_info does it: over the UTF-8 bytes, a leading space or ``#``, a
    trailing space and ``"+,;<>\\`` get a backslash; control bytes and bytes from 126 up become ``\\XX``."""
    data = value.encode("utf-8")
    last = len(data) - 1
    out: list[str] = []
    for i, byte in enumerate(data):
        ch = chr(byte)
        if (i == 0 and ch in " #") or (i == last and ch == " ") or ch in _ESCAPED:
            out.append("\\" + ch)
        elif byte < 32 or byte >= 126:
            out.append(f"\\{byte:02X}")
        else:
            out.append(ch)
    return "".join(out)


def _subject(peercert: Mapping[str, object]) -> list[tuple[tuple[str, str], ...]]:
    subject = peercert.get("subject")
    if not isinstance(subject, tuple):
        return []
    return [rdn for rdn in subject if isinstance(rdn, tuple)]


def distinguished_name(peercert: Mapping[str, object]) -> str:
    rdns = _subject(peercert)
    return ",".join(
        "+".join(f"{_SHORT_NAMES.get(name, name)}={_escape(value)}" for name, value in rdn) for rdn in reversed(rdns)
    )


def username_from_cert(peercert: Mapping[str, object] | None, login_from: str = COMMON_NAME) -> str | None:
    """The user name `peercert` gives, or None when it has none (no certificate, or no CN)."""
    if not peercert:
        return None
    if login_from == DISTINGUISHED_NAME:
        return distinguished_name(peercert) or None
    names = [value for rdn in _subject(peercert) for name, value in rdn if name == "commonName"]
    return ",".join(names) or None
