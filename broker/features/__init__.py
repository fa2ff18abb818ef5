"""Features built on the model's routing: dead-lettering, direct reply-to, CC/BCC and per-message expiry."""
