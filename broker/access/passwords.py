"""Password hashes in RabbitMQ's format, so that users exported from RabbitMQ log in unchanged.

A stored hash is base64(salt + H(salt + utf8(password))) with a 4-byte random salt, H being SHA-256
(``rabbit_password_hashing_sha256``, RabbitMQ's default and ours), SHA-512 or MD5 (accepted on import only).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
from typing import Final

SHA256: Final = "rabbit_password_hashing_sha256"
SHA512: Final = "rabbit_password_hashing_sha512"
MD5: Final = "rabbit_password_hashing_md5"
DEFAULT_ALGORITHM: Final = SHA256
_DIGESTS: Final = {SHA256: "sha256", SHA512: "sha512", MD5: "md5"}
SALT_BYTES: Final = 4


class PasswordHashError(ValueError):
    """A hash or algorithm that cannot be used (bad base64, unknown algorithm)."""


def check_algorithm(algorithm: str) -> str:
    if algorithm not in _DIGESTS:
        known = ", ".join(sorted(_DIGESTS))
        raise PasswordHashError(f"unknown password hashing algorithm '{algorithm}' (known: {known})")
    return algorithm


def hash_password(password: str, algorithm: str = DEFAULT_ALGORITHM, salt: bytes | None = None) -> str:
    digest = _DIGESTS[check_algorithm(algorithm)]
    salt = os.urandom(SALT_BYTES) if salt is None else salt
    hashed = hashlib.new(digest, salt + password.encode("utf-8")).digest()
    return base64.b64encode(salt + hashed).decode("ascii")


def decode_hash(password_hash: str) -> bytes:
    """The raw salt + digest of a stored hash; "" (a user without a password) is b""."""
    try:
        return base64.b64decode(password_hash.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise PasswordHashError("password_hash is not valid base64") from None


def check_password(password_hash: str, algorithm: str, password: str) -> bool:
    """Whether ``password`` matches; always False for a user without a password. Constant time in the digest."""
    digest = _DIGESTS.get(algorithm)
    if digest is None or not password_hash:
        return False
    try:
        raw = decode_hash(password_hash)
    except PasswordHashError:
        return False
    if len(raw) <= SALT_BYTES:
        return False
    salt, expected = raw[:SALT_BYTES], raw[SALT_BYTES:]
    return hmac.compare_digest(hashlib.new(digest, salt + password.encode("utf-8")).digest(), expected)
