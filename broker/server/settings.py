"""Build a `Config` from defaults, a TOML file, ``AMQPD_*`` environment variables and command-line flags.

Precedence is flag > environment > config file > default. Every field of `broker.server.config.Config` is settable
all four ways under the same name (``--data-dir``, ``AMQPD_DATA_DIR``, ``data_dir = ...``), so adding a field
to the dataclass is all it takes to expose a new setting.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import tomllib
import typing
from collections.abc import Callable, Mapping, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, NoReturn
from urllib.parse import quote, urlsplit

from amqpd.broker.server.config import CERT_LOGIN_FROM, PORT_OFF, TLS_VERIFY_MODES, Config
from amqpd.broker.server.tls import TLSSettingsError, check_settings

ENV_PREFIX = "AMQPD_"
LOOP_KINDS = ("auto", "uvloop", "asyncio")
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
# Mirrors storage.open_store; checked here so a typo fails at startup with a flag-level message.
STORE_SCHEMES = ("memory", "file", "postgres", "postgresql")

HELP: dict[str, str] = {
    "host": "interface to listen on (default: all interfaces)",
    "port": "TCP port (default: 5672; 0 picks a free port, which the startup line logs; off: no plain-TCP "
    "listener, TLS only)",
    "data_dir": "directory of the embedded store (default: ./data)",
    "store": "storage URL: memory://, file:///dir or postgresql://... (default: embedded, in --data-dir)",
    "default_user": "administrator created on a fresh store's first start (default: guest, which may only log in "
    "from loopback)",
    "default_pass": "password of the default user (default: guest)",
    "default_vhost": "virtual host created at startup (default: /)",
    "log_level": f"one of {', '.join(LOG_LEVELS)} (default: info)",
    "heartbeat": "heartbeat interval in seconds proposed to clients, 0 disables (default: 60)",
    "frame_max": "largest frame in bytes, at least 4096 (default: 131072)",
    "channel_max": "most channels per connection, 1-65535 (default: 2047)",
    "max_message_size": "largest message body in bytes (default: 134217728)",
    "handshake_timeout": "seconds a client has to finish the AMQP handshake (default: 10)",
    "shutdown_timeout": "seconds to wait for clients to acknowledge shutdown (default: 5)",
    "consumer_timeout": "milliseconds a consumer may keep a delivery unacknowledged before it is cancelled "
    "(or its channel closed); a queue's x-consumer-timeout overrides it; 0 disables (default: 1800000)",
    "loop": "event loop: auto (uvloop when installed), uvloop or asyncio (default: auto)",
    "flow_high": "ready messages in a queue with consumers above which its publishers are paused (default: 20000)",
    "flow_low": "ready messages such a queue must drain to before its publishers resume (default: 10000)",
    "loopback_users": "users who may log in only from this host, separated by commas; '' or none lifts the "
    "rule (default: guest)",
    "definitions": "RabbitMQ definitions file (JSON) to load at start: users, vhosts, permissions, exchanges, "
    "queues, bindings; the default user and vhost are then not created unless the file has them",
    "max_connections": "most client connections at once; more are refused on accept (default: 0, the "
    "open-files limit less a reserve)",
    "tls_port": "TLS (amqps) port, listened on only when --tls-cert is given (default: 5671; 0 picks a free port)",
    "tls_cert": "PEM certificate (chain) of the server; turns the amqps listener on",
    "tls_key": "PEM private key of --tls-cert (default: read from the --tls-cert file)",
    "tls_ca": "PEM CA certificates that client certificates are verified against (needed by --tls-verify peer)",
    "tls_verify": "none: do not ask clients for a certificate; peer: ask, and refuse one --tls-ca does not "
    "vouch for (default: none)",
    "tls_fail_if_no_peer_cert": "with --tls-verify peer, also refuse clients that present no certificate "
    "(default: false)",
    "tls_cert_login_from": "what of a client certificate names the user for SASL EXTERNAL: common_name or "
    "distinguished_name (default: common_name)",
}


METAVARS = {
    "data_dir": "DIR",
    "store": "URL",
    "default_user": "USER",
    "default_pass": "PASS",
    "default_vhost": "VHOST",
    "log_level": "LEVEL",
    "loop": "KIND",
    "frame_max": "BYTES",
    "max_message_size": "BYTES",
    "consumer_timeout": "MS",
    "flow_high": "N",
    "flow_low": "N",
    "loopback_users": "USERS",
    "definitions": "FILE",
    "port": "PORT|off",
    "tls_port": "PORT",
    "tls_cert": "FILE",
    "tls_key": "FILE",
    "tls_ca": "FILE",
    "tls_verify": "none|peer",
    "tls_fail_if_no_peer_cert": "BOOL",
    "tls_cert_login_from": "FIELD",
}


class ConfigError(ValueError):
    """A bad setting. The message is one line that says which setting is wrong and what would be accepted."""


@dataclasses.dataclass(frozen=True, slots=True)
class Invocation:
    """What the command line asks for: run a broker with `config`, print the version, or check health."""

    config: Config
    show_version: bool = False
    check_url: str | None = None  # set in health-check mode; "" means "derive the URL from config"
    check_timeout: float = 5.0


class _Parser(argparse.ArgumentParser):
    # argparse would print usage plus an error and exit; a ConfigError lets the CLI print one line and exit 2.
    def error(self, message: str) -> NoReturn:
        raise ConfigError(f"{message} (see amqpd --help)")


def package_version() -> str:
    try:
        return version("amqpd")
    except PackageNotFoundError:
        return "0.0.0+unknown"


def env_name(field: str) -> str:
    return ENV_PREFIX + field.upper()


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _field_types() -> dict[str, type]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in dataclasses.fields(Config)}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="amqpd",
        description="amqpd: an AMQP 0-9-1 message broker that behaves like RabbitMQ on the wire.",
        epilog=f"Every option can also be set by environment variable {ENV_PREFIX}<OPTION> "
        "(e.g. AMQPD_PORT=5673) or as a key in the --config TOML file (e.g. port = 5673). "
        "Precedence: flag > environment > file > default.",
    )
    # Defaults are None so "not on the command line" is distinguishable from "given as the default value".
    for name, kind in _field_types().items():
        metavar = METAVARS.get(name) or {int: "N", float: "SECONDS"}.get(kind, name.upper())
        if kind is bool:
            # A bare --flag means true; --flag false (or no) also works, as environment and TOML values do.
            parser.add_argument(
                flag_name(name), dest=name, default=None, nargs="?", const="true", metavar=metavar, help=HELP.get(name)
            )
            continue
        parser.add_argument(flag_name(name), dest=name, default=None, metavar=metavar, help=HELP.get(name))
    parser.add_argument(
        "--config", metavar="FILE", default=None, help=f"TOML settings file (env {ENV_PREFIX}CONFIG)"
    )
    parser.add_argument(
        "--check",
        metavar="URL",
        nargs="?",
        const="",
        default=None,
        help="health-check mode: do an AMQP handshake with URL and exit 0 when healthy, 1 otherwise; "
        "without URL, checks the broker these settings describe",
    )
    parser.add_argument(
        "--check-timeout", metavar="SECONDS", default="5", help="health-check deadline (default: 5)"
    )
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    return parser


TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")


def _coerce(raw: object, kind: type, source: str) -> Any:
    """Turn a raw value into the field's type; `source` names where it came from, for the error message."""
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in TRUE_WORDS + FALSE_WORDS:
            return raw.strip().lower() in TRUE_WORDS
        raise ConfigError(f"{source}: expected true or false, got {raw!r}")
    if kind is int:
        if isinstance(raw, bool):
            raise ConfigError(f"{source}: expected an integer, got {raw!r}")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, str):
            try:
                return int(raw.strip())
            except ValueError:
                pass
        raise ConfigError(f"{source}: expected an integer, got {raw!r}")
    if kind is float:
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw)
        if isinstance(raw, str):
            try:
                return float(raw.strip())
            except ValueError:
                pass
        raise ConfigError(f"{source}: expected a number, got {raw!r}")
    if not isinstance(raw, str):
        raise ConfigError(f"{source}: expected a string, got {raw!r}")
    return raw


def _int_range(lo: int, hi: int | None) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        if value < lo or (hi is not None and value > hi):
            bound = f"{lo}-{hi}" if hi is not None else f"at least {lo}"
            return f"must be {bound}, got {value}"
        return None

    return check


def _positive(value: Any) -> str | None:
    return None if value > 0 else f"must be greater than 0, got {value}"


def _one_of(choices: Sequence[str]) -> Callable[[Any], str | None]:
    def check(value: Any) -> str | None:
        return None if value in choices else f"must be one of {', '.join(choices)}, got {value!r}"

    return check


def _non_empty(value: Any) -> str | None:
    return None if value else "must not be empty"


def _store_url(value: Any) -> str | None:
    if value == "":
        return None
    scheme = urlsplit(value).scheme
    if scheme in STORE_SCHEMES:
        return None
    return f"unsupported store URL {value!r}; use memory://, file:///dir, postgresql://... or leave it empty"


def _port(value: Any) -> str | None:
    if value == PORT_OFF:
        return None  # only reachable from the word "off" (see _coerce_port): a typed -1 is refused there
    return None if 0 <= value <= 65535 else f"must be 0-65535 or off, got {value}"


def _coerce_port(raw: object, source: str) -> int:
    if isinstance(raw, str) and raw.strip().lower() == "off":
        return PORT_OFF
    value: int | None = None
    if isinstance(raw, int) and not isinstance(raw, bool):
        value = raw
    elif isinstance(raw, str):
        with contextlib.suppress(ValueError):
            value = int(raw.strip())
    if value is None:
        raise ConfigError(f"{source}: expected a port number or off, got {raw!r}")
    if value == PORT_OFF:
        raise ConfigError(f"{source} must be 0-65535 or off, got {value}")
    return value


VALIDATORS: dict[str, Callable[[Any], str | None]] = {
    "port": _port,
    "tls_port": _int_range(0, 65535),
    "tls_verify": _one_of(TLS_VERIFY_MODES),
    "tls_cert_login_from": _one_of(CERT_LOGIN_FROM),
    "heartbeat": _int_range(0, 65535),
    "frame_max": _int_range(4096, 2**32 - 1),
    "channel_max": _int_range(1, 65535),
    "max_message_size": _int_range(1, 512 * 1024 * 1024),
    "handshake_timeout": _positive,
    "shutdown_timeout": _positive,
    "consumer_timeout": _int_range(0, None),
    "flow_high": _int_range(1, None),
    "flow_low": _int_range(0, None),
    "max_connections": _int_range(0, None),
    "loop": _one_of(LOOP_KINDS),
    "log_level": _one_of(LOG_LEVELS),
    "store": _store_url,
    "data_dir": _non_empty,
    "default_user": _non_empty,
    "default_vhost": _non_empty,
}

# Names separated by commas; a TOML file may give them as a list of strings instead.
LIST_FIELDS = frozenset({"loopback_users"})

# Case does not matter for these; normalise before validating so "INFO" and "Info" are accepted.
LOWERCASED = frozenset({"loop", "log_level", "tls_verify", "tls_cert_login_from"})


def _read_toml(path: str) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path!r}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path!r} is not valid TOML: {exc}") from exc
    return data


def _resolve(argv: Sequence[str] | None, environ: Mapping[str, str] | None) -> Invocation:
    env = os.environ if environ is None else environ
    args = build_parser().parse_args(list(argv) if argv is not None else None)
    types = _field_types()

    # Lowest first; later layers overwrite earlier ones. Each value remembers its source for error messages.
    chosen: dict[str, tuple[object, str]] = {}
    config_path = args.config if args.config is not None else env.get(env_name("config"))
    if config_path:
        for key, raw in _read_toml(config_path).items():
            if key not in types:
                valid = ", ".join(types)
                raise ConfigError(f"unknown key {key!r} in config file {config_path!r}; valid keys: {valid}")
            chosen[key] = (raw, f"{key} in {config_path}")
    for name in types:
        if env_name(name) in env:
            chosen[name] = (env[env_name(name)], env_name(name))
    for name in types:
        flag_value = getattr(args, name)
        if flag_value is not None:
            chosen[name] = (flag_value, flag_name(name))

    values: dict[str, Any] = {}
    for name, (raw, source) in chosen.items():
        if name in LIST_FIELDS and isinstance(raw, list) and all(isinstance(item, str) for item in raw):
            raw = ",".join(raw)  # a TOML list, e.g. loopback_users = ["guest", "admin"]
        value: Any = _coerce_port(raw, source) if name == "port" else _coerce(raw, types[name], source)
        if name in LOWERCASED:
            value = value.strip().lower()
        check = VALIDATORS.get(name)
        problem = check(value) if check is not None else None
        if problem is not None:
            raise ConfigError(f"{source} {problem}")
        values[name] = value

    defaults = Config()
    flow_high = values.get("flow_high", defaults.flow_high)
    if values.get("flow_low", defaults.flow_low) >= flow_high:
        raise ConfigError(f"flow_low must be below flow_high ({flow_high})")
    check_timeout = _coerce(args.check_timeout, float, "--check-timeout")
    if _positive(check_timeout) is not None:
        raise ConfigError(f"--check-timeout must be greater than 0, got {check_timeout}")
    config = Config(**values)
    try:
        check_settings(config)  # the files themselves are loaded, and so checked, when the listener starts
    except TLSSettingsError as exc:
        raise ConfigError(str(exc)) from None
    return Invocation(
        config=config,
        show_version=bool(args.version),
        check_url=args.check,
        check_timeout=check_timeout,
    )


def parse_invocation(
    argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None
) -> Invocation:
    """Everything the command line asks for. Raises `ConfigError` with a one-line message on any bad value."""
    return _resolve(argv, environ)


def load_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """The broker settings from flags (`argv`, default ``sys.argv[1:]``), `environ` (default ``os.environ``),
    the ``--config``/``AMQPD_CONFIG`` TOML file and the dataclass defaults. Raises `ConfigError`."""
    return _resolve(argv, environ).config


def check_url_for(config: Config) -> str:
    """The URL a local health check should use for a broker running with `config`: its plain listener, or with
    ``--port off`` its TLS one, without verifying the server's certificate (the check is about liveness, and
    the certificate need not name the loopback address)."""
    host = config.host or "127.0.0.1"
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    user, password = quote(config.default_user, safe=""), quote(config.default_pass, safe="")
    vhost = "" if config.default_vhost == "/" else quote(config.default_vhost, safe="")
    if not config.plain_listener:
        return f"amqps://{user}:{password}@{host}:{config.tls_port or 5671}/{vhost}?no_verify_ssl=1"
    port = config.port or 5672
    return f"amqp://{user}:{password}@{host}:{port}/{vhost}"
