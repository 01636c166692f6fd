"""One broker per data directory: an exclusive ``flock`` on ``DATA_DIR/haremq.lock``.

Two brokers writing the same queue logs corrupt each other (the second renames the first's queue
directory on restart). The kernel drops the lock when the holder dies, even by SIGKILL, so a stale
lock file never blocks a restart; the file keeps the holder's pid only to name it in the error.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from haremq.errors import StartupError

LOCK_FILE = "haremq.lock"


def _holder(fd: int) -> str:
    with contextlib.suppress(OSError, ValueError):
        os.lseek(fd, 0, os.SEEK_SET)
        pid = int(os.read(fd, 32).decode().strip() or "0")
        if pid:
            return f"pid {pid}"
    return "another process"


class DataDirLock:
    """Held for the life of a node; ``release`` (or process death) frees the directory."""

    def __init__(self, data_dir: str) -> None:
        self.path = os.path.join(data_dir, LOCK_FILE)
        try:
            self.fd: int | None = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StartupError(f"data dir {data_dir} is not writable: {exc.strerror}") from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(self.fd)
            os.close(self.fd)
            self.fd = None
            raise StartupError(f"data dir {data_dir} is in use by another haremq broker ({holder})") from None
        os.ftruncate(self.fd, 0)
        os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the last descriptor drops the flock
            self.fd = None


@contextlib.contextmanager
def shared_lock(data_dir: str) -> Iterator[str | None]:
    """For ``store-check``: yields who holds ``data_dir`` (None when no broker does). While the
    check runs it keeps a shared lock, so no broker can start and write under it."""
    path = os.path.join(data_dir, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        yield None  # never served by a broker of this version: nothing to lock against
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            yield _holder(fd)
            return
        yield None
    finally:
        os.close(fd)
