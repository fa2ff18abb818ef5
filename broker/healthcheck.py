"""``python -m broker.healthcheck URL``: the health check's stable entry point (see broker/server/healthcheck.py)."""

from amqpd.broker.server.healthcheck import main

if __name__ == "__main__":
    raise SystemExit(main())
