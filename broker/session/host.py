"""What the session layer needs from the process that runs it, so that it never imports the server.

The server implements :class:`SessionHost`; a test can implement it with a few attributes.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from amqpd.broker.access.control import AccessControl
    from amqpd.broker.access.users import User
    from amqpd.broker.model.vhost import VHost
    from amqpd.broker.session.connection import BrokerConnection


class SessionSettings(Protocol):
    """The settings connections and channels read (the server's Config has them all)."""

    @property
    def channel_max(self) -> int: ...
    @property
    def frame_max(self) -> int: ...
    @property
    def heartbeat(self) -> int: ...
    @property
    def max_message_size(self) -> int: ...
    @property
    def handshake_timeout(self) -> float: ...
    @property
    def consumer_timeout(self) -> int: ...
    @property
    def flow_high(self) -> int:
        """Ready messages in a consumed queue above which its publishers are paused."""
        ...

    @property
    def flow_low(self) -> int:
        """...and the count it must drain to before they are read again."""
        ...

    @property
    def tls_cert_login_from(self) -> str:
        """Which part of a client certificate names the SASL EXTERNAL user (broker/session/peer_cert.py)."""
        ...


class SessionHost(Protocol):
    @property
    def config(self) -> SessionSettings: ...
    @property
    def version(self) -> str: ...
    @property
    def loop(self) -> asyncio.AbstractEventLoop: ...
    @property
    def vhosts(self) -> dict[str, VHost]: ...
    @property
    def connections(self) -> set[BrokerConnection]: ...
    @property
    def access(self) -> AccessControl: ...
    @property
    def connection_limit(self) -> int:
        """Most connections at once; one more is refused on accept."""
        ...

    def login(self, mechanism: str, username: str, password: str | None, from_loopback: bool) -> User | None:
        """The user when the credentials are right (``password`` None: a verified certificate named it)."""
        ...
