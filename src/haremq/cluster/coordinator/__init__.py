"""The cluster coordinator: membership, definitions KV and per-queue election (see ``api``).

``local`` is the embedded single-node default; ``etcd`` needs the ``cluster`` extra (aetcd)."""
