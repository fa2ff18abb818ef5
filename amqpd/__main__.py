"""`python -m amqpd` runs the amqpd command."""

from amqpd.broker.server.cli import main

raise SystemExit(main())
