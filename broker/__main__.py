"""`python -m broker` runs the amqpd command."""

from amqpd.broker.server.cli import main

raise SystemExit(main())
