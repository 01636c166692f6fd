"""asyncio listeners: owns sockets and tasks, adapts protocols to the core."""
