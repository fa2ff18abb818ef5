"""The ``amqpd`` command: parse settings, pick the event loop, run the server until SIGTERM/SIGINT.

Exit codes: 0 after a clean shutdown (or a healthy ``--check``), 1 when the broker cannot start (or
``--check`` finds it unhealthy), 2 for bad settings.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Sequence

from amqpd.broker.server.config import Config
from amqpd.broker.server.settings import ConfigError, check_url_for, package_version, parse_invocation
from amqpd.broker.server.tls import TLSSettingsError

log = logging.getLogger("amqpd")

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def choose_loop(kind: str) -> tuple[str, LoopFactory | None]:
    """The loop to run on: ("uvloop", factory) or ("asyncio", None). ConfigError if `kind` cannot be had."""
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError as exc:
            if kind == "uvloop":
                raise ConfigError(
                    "--loop uvloop: uvloop is not installed; pip install uvloop or use --loop asyncio"
                ) from exc
            return "asyncio", None
        return "uvloop", uvloop.new_event_loop
    return "asyncio", None


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )


async def serve(config: Config) -> None:
    """Start the server and keep it running until a signal has led to a completed shutdown."""
    from amqpd.broker.server.server import Server  # imported here so --help, --version and --check stay light

    server = Server(config)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.info("%s received again; shutdown already under way", sig.name)
            return
        log.info("%s received, shutting down", sig.name)
        stop.set()

    async def shutdown_on_signal() -> None:
        await stop.wait()
        await server.shutdown()

    # Installed before start(): whoever sees the startup line may signal at once (supervisors, tests).
    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):
            # No loop signal support (Windows, or not the main thread): Ctrl-C raises KeyboardInterrupt.
            pass
    stopper: asyncio.Task[None] | None = None
    try:
        await server.start()
        stopper = loop.create_task(shutdown_on_signal())
        await server.serve_forever()
        if stop.is_set():
            await stopper  # serve_forever returns as shutdown completes; let the task finish too
    finally:
        if stopper is not None and not stopper.done():
            stopper.cancel()
        for sig in installed:
            loop.remove_signal_handler(sig)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        invocation = parse_invocation(argv)
        config = invocation.config
        if invocation.show_version:
            print(f"amqpd {package_version()}")
            return 0
        if invocation.check_url is not None:
            from amqpd.broker.server.healthcheck import check

            ok, message = check(invocation.check_url or check_url_for(config), invocation.check_timeout)
            print(message, file=sys.stdout if ok else sys.stderr)
            return 0 if ok else 1
        loop_kind, loop_factory = choose_loop(config.loop)
    except ConfigError as exc:
        print(f"amqpd: {exc}", file=sys.stderr)
        return 2

    configure_logging(config.log_level)
    if config.loop == "auto" and loop_kind == "asyncio":
        log.info("uvloop is not installed; running on the asyncio event loop")
    else:
        log.debug("running on the %s event loop", loop_kind)
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(config))
    except KeyboardInterrupt:
        # Only reached where loop signal handlers are unavailable; there was no graceful shutdown.
        return 0
    except TLSSettingsError as exc:
        # A certificate, key or CA file that cannot be read or loaded (found when the listener is set up).
        print(f"amqpd: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:
        # A definitions file that cannot be loaded, or an impossible user/vhost setting: say which and stop.
        from amqpd.broker.access.users import AccessConfigError
        from amqpd.broker.server.definitions import DefinitionsError

        if not isinstance(exc, (DefinitionsError, AccessConfigError)):
            log.critical("amqpd stopped by an unexpected error", exc_info=True)
            return 1
        print(f"amqpd: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        # Typically a listen socket (a ListenError says which): port in use, or an address this host lacks.
        where = getattr(exc, "where", None) or f"{config.host or '*'}:{config.port}"
        flag = getattr(exc, "flag", None) or "--port"
        reason = exc.strerror or exc
        print(f"amqpd: cannot start on {where}: {reason}; pick another {flag}/--host", file=sys.stderr)
        return 1
    except Exception:
        log.critical("amqpd stopped by an unexpected error", exc_info=True)
        return 1
    return 0
