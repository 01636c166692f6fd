"""fcntl open-file-description byte-range locks on the queue file: the spsc role locks (layout.py; mpmc uses
the mutexes in mutex.py).

The kernel drops an OFD lock when the last descriptor of its open file description closes, so a killed holder
never wedges the queue; a forked child must reopen the file to own its locks (ShmQueue does, after fork).
"""

from __future__ import annotations

import fcntl
import os
import struct

from .errors import IpcError

__all__ = ["LockMixin"]

_FLOCK = "hhqqi4x"  # struct flock on Linux x86-64 / aarch64


class LockMixin:
    """Lock helpers for ShmQueue: one-byte locks at the layout's lock offsets, on the handle's file."""

    __slots__ = ()

    _fd: int
    path: str

    def _flock(self, byte: int, cmd: int, kind: int) -> None:
        fcntl.fcntl(self._fd, cmd, struct.pack(_FLOCK, kind, os.SEEK_SET, byte, 1, 0))

    def _take_role(self, byte: int, role: str) -> None:
        try:
            self._flock(byte, fcntl.F_OFD_SETLK, fcntl.F_WRLCK)
        except OSError:
            raise IpcError(f"{self.path}: spsc queue already has a live {role} (use mode='mpmc')") from None
