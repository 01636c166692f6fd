"""Persistence: the queue store (message log) and the metadata store (definitions)."""
