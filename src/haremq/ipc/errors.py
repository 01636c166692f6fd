"""The haremq.ipc exception hierarchy (ipc stands alone, so it does not share haremq.errors)."""

from __future__ import annotations

__all__ = ["IpcError", "QueueFileError"]


class IpcError(Exception):
    """Root of haremq.ipc errors (ipc stands alone, so it does not share haremq.errors)."""


class QueueFileError(IpcError, ValueError):
    """The file is not a haremq shm queue, is of another version, or is damaged."""
