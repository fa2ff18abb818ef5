"""`python -m broker` runs the amqpd command."""

from broker.cli import main

raise SystemExit(main())
