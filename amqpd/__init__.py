"""amqpd: an AMQP 0-9-1 message broker that behaves like RabbitMQ on the wire.

Everything installs under this one import name: ``amqpd.broker`` (the broker), ``amqpd.protocol`` (sans-IO AMQP),
``amqpd.storage`` (durable state) and ``amqpd.benchmarks`` (the load generator). In the repository they are the
top-level folders ``broker/``, ``protocol/``, ``storage/`` and ``benchmarks/``; the entries in this folder are
symbolic links to them, so the source tree and the installed package have the same module names.
"""
