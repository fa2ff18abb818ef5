"""A queue: its ready store, its consumer ring and the one dispatch loop between them."""
