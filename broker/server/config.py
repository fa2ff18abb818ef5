"""Broker settings: one dataclass, filled from defaults, a TOML file, AMQPD_* environment variables and flags."""

from __future__ import annotations

from dataclasses import dataclass

# `port` when the plain-TCP listener is off (``--port off``, TLS only). An int, so `port` stays an int
# everywhere; settings.py turns "off" into it and refuses a negative number typed as such.
PORT_OFF = -1

TLS_VERIFY_MODES = ("none", "peer")
# Where SASL EXTERNAL takes the user name from, as RabbitMQ's ssl_cert_login_from.
CERT_LOGIN_FROM = ("common_name", "distinguished_name")


@dataclass(slots=True)
class Config:
    host: str = ""  # "" = all interfaces, as RabbitMQ listens by default
    port: int = 5672  # PORT_OFF: no plain-TCP listener
    data_dir: str = "./data"
    store: str = ""  # storage URL; "" = the embedded store under data_dir
    default_user: str = "guest"
    default_pass: str = "guest"
    default_vhost: str = "/"
    log_level: str = "info"
    heartbeat: int = 60
    frame_max: int = 131072
    channel_max: int = 2047
    max_message_size: int = 128 * 1024 * 1024
    handshake_timeout: float = 10.0
    shutdown_timeout: float = 5.0
    # ms a consumer may hold a delivery unacked before it is cancelled (or its channel closed); 0 = no limit.
    # RabbitMQ's default; a queue's x-consumer-timeout overrides it (broker/consumer_timeout.py).
    consumer_timeout: int = 1800000
    loop: str = "auto"  # auto | uvloop | asyncio
    # Publisher flow control: a queue with consumers and more than flow_high ready messages pauses the
    # connections publishing into it until it is back at flow_low (broker/session/flow.py).
    flow_high: int = 20000
    flow_low: int = 10000
    # Users that may log in only over loopback (RabbitMQ's loopback_users); "" or "none" lifts the rule.
    loopback_users: str = "guest"
    # A RabbitMQ definitions file loaded at every start (users, vhosts, permissions, topology); when set, the
    # default user and vhost are not created unless the file (or the store) has them.
    definitions: str = ""
    # Most client connections at once; 0 = as many as the open-files limit allows, less a reserve.
    max_connections: int = 0
    # TLS (amqps): a second listener on tls_port, only when tls_cert is set (broker/server/tls.py).
    tls_port: int = 5671
    tls_cert: str = ""  # PEM certificate chain of the server; "" = no TLS listener
    tls_key: str = ""  # PEM private key; "" = the key is in the tls_cert file
    tls_ca: str = ""  # PEM CA certificates that client certificates are verified against
    tls_verify: str = "none"  # none | peer: ask for a client certificate and verify it against tls_ca
    tls_fail_if_no_peer_cert: bool = False  # with tls_verify = peer: refuse clients without a certificate
    tls_cert_login_from: str = "common_name"  # common_name | distinguished_name: the SASL EXTERNAL user name

    @property
    def plain_listener(self) -> bool:
        return self.port != PORT_OFF

    @property
    def tls_listener(self) -> bool:
        return bool(self.tls_cert)
