"""Front-door policies: users, passwords, permissions (and later TLS, rate limits, dedup)."""
