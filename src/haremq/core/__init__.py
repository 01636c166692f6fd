"""The broker model: vhosts, exchanges, bindings, queues, consumers, leases. Synchronous, no I/O."""
