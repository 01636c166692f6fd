"""Shared-memory queue between processes on one host; stands alone (imports nothing else from haremq)."""

from .shm_queue import IpcError, QueueFileError, ShmQueue

__all__ = ["IpcError", "QueueFileError", "ShmQueue"]
