"""Process-shared robust pthread mutexes in the queue file, called through ctypes (the mpmc claim; layout.py).

Why: an fcntl lock is two syscalls per operation (~1.5-3 us here) and capped mpmc at ~0.1M msg/s. A pthread
mutex locks and unlocks in user space when uncontended (one atomic on the futex word; ~0.2 us each through
ctypes.PyDLL, which keeps the GIL because trylock/unlock never block) and sleeps in the kernel only when
contended. PTHREAD_MUTEX_ROBUST keeps it crash-safe: when the holder dies (even by SIGKILL) the kernel marks
the futex word and the next locker gets EOWNERDEAD, runs the queue's recovery and marks the mutex consistent.
Blocking waits go through ctypes.CDLL (the GIL is released) in 20 ms timed slices so signals are handled.
Needs a POSIX libc with robust process-shared mutexes (glibc, musl: Linux); nothing is compiled.
"""

from __future__ import annotations

import ctypes
import errno
import time
from mmap import mmap
from typing import Any, Final

from .errors import IpcError

__all__ = ["MUTEX_SPACE", "Mutex", "init_mutex"]

MUTEX_SPACE: Final = 64  # bytes reserved per mutex (sizeof(pthread_mutex_t) is 40 on x86-64 glibc)
_PTHREAD_PROCESS_SHARED: Final = 1
_PTHREAD_MUTEX_ROBUST: Final = 1
_PTHREAD_MUTEX_ERRORCHECK: Final = 2  # a same-thread relock is EDEADLK, not a silent self-deadlock
_SLICE_S: Final = 0.02

_libc = ctypes.CDLL(None, use_errno=True)  # releases the GIL: for calls that may block
_plibc = ctypes.PyDLL(None)  # keeps the GIL: ~2x cheaper per call, for calls that never block


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


def _bind(lib: Any, name: str, *argtypes: Any) -> Any:
    fn = getattr(lib, name)
    fn.argtypes = list(argtypes)
    fn.restype = ctypes.c_int
    return fn


def _unsupported(*_: Any) -> int:
    raise IpcError(f"haremq.ipc needs robust process-shared pthread mutexes, which this libc lacks ({_missing})")


_vp = ctypes.c_void_p
_missing = ""
try:
    TRYLOCK: Any = _bind(_plibc, "pthread_mutex_trylock", _vp)
    UNLOCK: Any = _bind(_plibc, "pthread_mutex_unlock", _vp)
    _timedlock = _bind(_libc, "pthread_mutex_timedlock", _vp, ctypes.POINTER(_Timespec))
    _consistent = _bind(_libc, "pthread_mutex_consistent", _vp)
    _init = _bind(_libc, "pthread_mutex_init", _vp, _vp)
    _attr_init = _bind(_libc, "pthread_mutexattr_init", _vp)
    _attr_destroy = _bind(_libc, "pthread_mutexattr_destroy", _vp)
    _attr_pshared = _bind(_libc, "pthread_mutexattr_setpshared", _vp, ctypes.c_int)
    _attr_robust = _bind(_libc, "pthread_mutexattr_setrobust", _vp, ctypes.c_int)
    _attr_type = _bind(_libc, "pthread_mutexattr_settype", _vp, ctypes.c_int)
except AttributeError as e:  # not Linux: importing still works, creating or opening a queue raises IpcError
    _missing = str(e)
    TRYLOCK = UNLOCK = _timedlock = _consistent = _init = _unsupported
    _attr_init = _attr_destroy = _attr_pshared = _attr_robust = _attr_type = _unsupported


def _check(rc: int, what: str) -> None:
    if rc:
        raise OSError(rc, f"{what}: {errno.errorcode.get(rc, rc)}")


def init_mutex(buf: mmap, off: int) -> None:
    """Initialize a robust, process-shared, error-checking mutex at buf[off:off + MUTEX_SPACE] (at create)."""
    attr = ctypes.create_string_buffer(64)  # pthread_mutexattr_t is 4 bytes; room to spare
    anchor = ctypes.c_char.from_buffer(buf, off)
    try:
        _check(_attr_init(attr), "pthread_mutexattr_init")
        try:
            _check(_attr_pshared(attr, _PTHREAD_PROCESS_SHARED), "pthread_mutexattr_setpshared")
            _check(_attr_robust(attr, _PTHREAD_MUTEX_ROBUST), "pthread_mutexattr_setrobust")
            _check(_attr_type(attr, _PTHREAD_MUTEX_ERRORCHECK), "pthread_mutexattr_settype")
            _check(_init(ctypes.addressof(anchor), attr), "pthread_mutex_init")
        finally:
            _attr_destroy(attr)
    finally:
        del anchor  # release the buffer export so the mapping can close


class Mutex:
    """A handle on one mutex in a mapping. `ptr` is what TRYLOCK/UNLOCK take (hot paths call them inline)."""

    __slots__ = ("_anchor", "path", "ptr")

    def __init__(self, buf: mmap, off: int, path: str) -> None:
        if _missing:
            _unsupported()
        self._anchor: Any = ctypes.c_char.from_buffer(buf, off)  # pins the mapping while we hold its address
        self.ptr = ctypes.c_void_p(ctypes.addressof(self._anchor))
        self.path = path

    def release_mapping(self) -> None:
        """Drop the buffer export (before the mapping is closed); the handle is unusable afterwards."""
        self._anchor = None
        self.ptr = ctypes.c_void_p(0)

    def lock(self) -> bool:
        """Take the mutex; True when its previous holder died holding it (the caller must recover)."""
        return self.settle(TRYLOCK(self.ptr))

    def settle(self, rc: int) -> bool:
        """Finish a lock attempt that returned rc (0, EBUSY, EOWNERDEAD); same result as lock()."""
        ts = _Timespec()
        while rc == errno.EBUSY or rc == errno.ETIMEDOUT:
            deadline = time.time() + _SLICE_S
            ts.tv_sec = int(deadline)
            ts.tv_nsec = int((deadline - ts.tv_sec) * 1e9)
            rc = _timedlock(self.ptr, ctypes.byref(ts))  # GIL released; Python handles signals between slices
        if rc == 0:
            return False
        if rc == errno.EOWNERDEAD:
            _check(_consistent(self.ptr), "pthread_mutex_consistent")
            return True
        if rc == errno.ENOTRECOVERABLE:
            raise IpcError(f"{self.path}: queue lock not recoverable (a recovery was interrupted)")
        raise OSError(rc, f"{self.path}: pthread_mutex_lock: {errno.errorcode.get(rc, rc)}")

    def unlock(self) -> None:
        UNLOCK(self.ptr)
