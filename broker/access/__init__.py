"""Who may connect and what they may touch: users, password hashes, permissions, topic permissions and limits.

Pure logic over in-memory tables, like RabbitMQ's internal auth backend; the server persists changes and the
session layer asks :class:`~broker.access.control.AccessControl` (through a per-channel cache) before acting.
"""
