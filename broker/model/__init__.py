"""The messaging model: vhosts, exchanges, queues, bindings and messages. Knows nothing of sockets or sessions."""
