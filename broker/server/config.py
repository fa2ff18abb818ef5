"""Broker settings: one dataclass, filled from defaults, a TOML file, AMQPD_* environment variables and flags."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Config:
    host: str = ""  # "" = all interfaces, as RabbitMQ listens by default
    port: int = 5672
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
