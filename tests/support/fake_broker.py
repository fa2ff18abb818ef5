"""`FakeBroker`: a minimal scripted AMQP peer on 127.0.0.1, for testing clients (amqpd --check)."""

from __future__ import annotations

import contextlib
import socket
import threading

from pamqp import commands

from tests.support.raw_client import FramedSocket

GOOD_USER, GOOD_PASS = "guest", "guest"


class FakeBroker:
    """Serves one connection at a time on 127.0.0.1: Start, Tune, OpenOk, Close-Ok, unless told otherwise.

    `behaviour`: "healthy"; "refuse_login" (Connection.Close 403 after StartOk); "hang_up_on_login" (closes
    the socket after StartOk, as brokers do for clients without authentication_failure_close); "silent"
    (accepts, never answers); "wrong_protocol" (answers with an AMQP 1.0 header). Any behaviour answers
    530 to an Open of a vhost other than "/".
    """

    def __init__(self, behaviour: str = "healthy") -> None:
        self.behaviour = behaviour
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.seen: list[object] = []  # every frame the client sent, in order
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def url(self, user: str = GOOD_USER, password: str = GOOD_PASS, vhost: str = "") -> str:
        return f"amqp://{user}:{password}@127.0.0.1:{self.port}/{vhost}"

    def __enter__(self) -> FakeBroker:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        # Wake accept() so the thread can see the stop flag.
        with socket.create_connection(("127.0.0.1", self.port), timeout=1):
            pass
        self._thread.join(5)
        self.listener.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            conn, _ = self.listener.accept()
            conn.settimeout(5)
            with FramedSocket(conn) as peer:
                # The client may go away mid-handshake; the test asserts on what it saw.
                if not self._stop.is_set():
                    with contextlib.suppress(OSError, AssertionError):
                        self._converse(peer)

    def _next(self, peer: FramedSocket) -> object:
        got = peer.read_frame()
        if got is None:
            raise AssertionError("client hung up")
        self.seen.append(got[1])
        return got[1]

    def _converse(self, peer: FramedSocket) -> None:
        self._next(peer)  # protocol header
        if self.behaviour == "silent":
            self._stop.wait(10)
            return
        if self.behaviour == "wrong_protocol":
            peer.send_frame(b"AMQP\x00\x01\x00\x00")
            return
        peer.send_method(
            0,
            commands.Connection.Start(
                server_properties={"product": "FakeBroker", "version": "9.9"},
                mechanisms="PLAIN AMQPLAIN",
                locales="en_US",
            ),
        )
        start_ok = self._next(peer)
        assert isinstance(start_ok, commands.Connection.StartOk)
        if start_ok.response != f"\0{GOOD_USER}\0{GOOD_PASS}":
            if self.behaviour == "hang_up_on_login":
                return
            text = "ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN."
            peer.send_method(0, commands.Connection.Close(403, text, 0, 0))
            self._next(peer)  # Close-Ok
            return
        peer.send_method(0, commands.Connection.Tune(channel_max=2047, frame_max=131072, heartbeat=60))
        self._next(peer)  # TuneOk
        open_ = self._next(peer)
        assert isinstance(open_, commands.Connection.Open)
        if open_.virtual_host != "/":
            text = f"NOT_ALLOWED - vhost {open_.virtual_host} not found"
            peer.send_method(0, commands.Connection.Close(530, text, 10, 40))
            self._next(peer)
            return
        peer.send_method(0, commands.Connection.OpenOk())
        self._next(peer)  # Close
        peer.send_method(0, commands.Connection.CloseOk())
