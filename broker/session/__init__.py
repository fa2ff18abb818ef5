"""The AMQP session: connections (the asyncio protocol), channels, consumers, confirms, flow control, timers."""
