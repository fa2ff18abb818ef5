"""Test utilities, one module per purpose (see README.md, "Testing")."""
