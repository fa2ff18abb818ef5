"""TLS for the amqps listener: checking the settings, building the server's `ssl.SSLContext`, and logging the
handshakes it refuses.

The settings follow RabbitMQ's ``ssl_options``: a certificate and key, CA certificates to verify clients against,
``verify`` (``none`` or ``peer``) and ``fail_if_no_peer_cert``. TLS 1.2 is the oldest version accepted.
"""

from __future__ import annotations

import logging
import ssl

from amqpd.broker.server.config import Config

log = logging.getLogger("amqpd.tls")


class TLSSettingsError(ValueError):
    """TLS settings that cannot work; the message says which setting and what to do."""


def _no_password() -> bytes:
    # Without a password callback OpenSSL would prompt on the terminal for an encrypted key's pass phrase.
    raise TLSSettingsError("--tls-key is encrypted; amqpd needs an unencrypted private key (e.g. openssl pkey -in KEY)")


def _readable(flag: str, path: str) -> None:
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        raise TLSSettingsError(f"{flag}: cannot read {path!r}: {exc.strerror or exc}") from exc


def check_settings(config: Config) -> None:
    """Raise `TLSSettingsError` for TLS settings that cannot work together. Files are checked by
    `server_context`, which loads them."""
    if not config.plain_listener and not config.tls_listener:
        raise TLSSettingsError(
            "--port off leaves no listener: give --tls-cert (and --tls-key) to listen for amqps, or a --port"
        )
    if not config.tls_listener:
        given = [
            flag
            for flag, value in (
                ("--tls-key", config.tls_key),
                ("--tls-ca", config.tls_ca),
                ("--tls-verify peer", config.tls_verify == "peer"),
                ("--tls-fail-if-no-peer-cert", config.tls_fail_if_no_peer_cert),
            )
            if value
        ]
        if given:
            raise TLSSettingsError(
                f"{', '.join(given)} without --tls-cert: give the server certificate with --tls-cert to turn "
                "the amqps listener on"
            )
        return
    if config.tls_verify == "peer" and not config.tls_ca:
        raise TLSSettingsError(
            "--tls-verify peer needs --tls-ca, the CA certificates that client certificates are verified against"
        )
    if config.tls_fail_if_no_peer_cert and config.tls_verify != "peer":
        raise TLSSettingsError("--tls-fail-if-no-peer-cert needs --tls-verify peer (clients are not asked for one)")
    if config.plain_listener and config.port != 0 and config.port == config.tls_port:
        raise TLSSettingsError(
            f"--port and --tls-port are both {config.port}: give the amqps listener another port (or --port off)"
        )


def server_context(config: Config) -> ssl.SSLContext:
    """The context of the amqps listener, with every file loaded now so that a bad one stops the start."""
    check_settings(config)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    _readable("--tls-cert", config.tls_cert)
    if config.tls_key:
        _readable("--tls-key", config.tls_key)
    try:
        context.load_cert_chain(config.tls_cert, config.tls_key or None, password=_no_password)
    except ssl.SSLError as exc:
        files = "--tls-cert and --tls-key" if config.tls_key else "--tls-cert (certificate and key in one file)"
        raise TLSSettingsError(
            f"cannot load the server certificate and key from {files}: {exc.reason or exc}; check both are PEM "
            "and that the key belongs to the certificate"
        ) from exc
    if config.tls_ca:
        _readable("--tls-ca", config.tls_ca)
        try:
            context.load_verify_locations(cafile=config.tls_ca)
        except ssl.SSLError as exc:
            raise TLSSettingsError(
                f"--tls-ca: no PEM CA certificate in {config.tls_ca!r} ({exc.reason or exc})"
            ) from exc
    if config.tls_verify == "peer":
        context.verify_mode = ssl.CERT_REQUIRED if config.tls_fail_if_no_peer_cert else ssl.CERT_OPTIONAL
    else:
        context.verify_mode = ssl.CERT_NONE
    context.sslobject_class = _LoggedHandshake
    return context


# Handshake failures of a TLS client that will read the alert and hang up: worth telling it why (see below).
# Anything else (e.g. a plain AMQP client on the amqps port) is closed at once: it would never read an alert.
_TELL_THE_CLIENT = frozenset(
    {
        "PEER_DID_NOT_RETURN_A_CERTIFICATE",
        "UNSUPPORTED_PROTOCOL",
        "VERSION_TOO_LOW",
        "NO_SHARED_CIPHER",
        "NO_PROTOCOLS_AVAILABLE",
    }
)
# Reasons that mean the peer does not speak TLS at all.
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "HTTP_REQUEST", "HTTPS_PROXY_REQUEST", "UNKNOWN_PROTOCOL"})


class _LoggedHandshake(ssl.SSLObject):
    """Logs why a TLS handshake failed, and makes sure a TLS client is told (an alert) before the socket closes.

    asyncio (before gh-98078) and uvloop close the socket at once when a server-side handshake fails, dropping
    the alert OpenSSL wrote for the peer: a client whose certificate is refused sees the connection closed with
    no reason instead of "unknown ca" or "certificate required". They log nothing either, outside the loop's
    debug mode, and never create the connection. Both drive the handshake through objects made by
    ``SSLContext.wrap_bio`` (this class, see `server_context`), so the failure is caught here: logged, then, for
    a client that speaks TLS, reported as "want read" once, which makes the loop send what OpenSSL queued (the
    alert) and wait for the client; its next bytes or its EOF (it hangs up on reading the alert) bring the real
    error back and the loop closes the connection. The handshake timeout bounds the wait. The peer's address
    is not known at this level."""

    _failure: ssl.SSLError | None = None

    def do_handshake(self) -> None:
        failure = self._failure
        if failure is not None:
            raise failure
        try:
            super().do_handshake()
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            raise
        except ssl.SSLError as exc:
            log.warning("TLS handshake refused: %s", _reason(exc))
            if isinstance(exc, ssl.SSLCertVerificationError) or exc.reason in _TELL_THE_CLIENT:
                self._failure = exc
                raise ssl.SSLWantReadError("the TLS alert goes out first") from exc
            raise


def _reason(exc: ssl.SSLError) -> str:
    verify = getattr(exc, "verify_message", None)
    if verify:
        return f"client certificate not accepted: {verify}"
    text = exc.reason or str(exc)
    text = text.replace("_", " ").lower() if text.isupper() else text
    if exc.reason in _NOT_TLS:
        text += " (the client does not speak TLS: a plain amqp:// client on the amqps port?)"
    return text
