"""Replication and coordination (not built yet: see the cluster issue)."""
