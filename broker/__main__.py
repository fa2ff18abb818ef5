"""`python -m broker` runs the amqpd command."""

from broker.server.cli import main

raise SystemExit(main())
