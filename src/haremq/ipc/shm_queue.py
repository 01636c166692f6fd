"""A bytes queue in a memory-mapped file shared by processes on one host.

Independent of the broker: this module imports nothing else from haremq. The file layout, the record format
and the synchronization protocol this code implements are described in the block comment in layout.py;
waiting lives in wait.py and the fcntl locks in locks.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import queue
import secrets
import threading
import time
import weakref
from collections.abc import Iterable
from mmap import MAP_SHARED, PROT_READ, PROT_WRITE, mmap
from types import TracebackType
from typing import Any, Literal

from . import layout as _layout
from .errors import IpcError, QueueFileError
from .layout import (
    _C_INTENT,
    _C_LOST,
    _C_RECOV,
    _CINT_W,
    _CNT_W,
    _CWAIT_W,
    _GOT_W,
    _HEAD_W,
    _LOCK_CONS_ROLE,
    _LOCK_PROD_ROLE,
    _M32,
    _P_RECOV,
    _PWAIT_W,
    _SCAN_MAX,
    _TAIL_W,
    CMUTEX_OFF,
    CWAIT_OFF,
    HEAD_OFF,
    HEADER_SIZE,
    MODES,
    NSLOTS,
    PAD,
    PMUTEX_OFF,
    PWAIT_OFF,
    TAIL_OFF,
    _fifo_paths,
    _pack_header,
    _read_header,
    _record_size,
    _resolve,
)
from .locks import LockMixin
from .mutex import TRYLOCK, UNLOCK, Mutex, init_mutex
from .wait import SLICE_NS, WaitMixin

__all__ = ["IpcError", "QueueFileError", "ShmQueue"]

log = logging.getLogger("haremq.ipc")

# The Struct codecs are bound by assignment, not by `from .layout import`: CPython compiles `name.meth(...)` on
# an imported name as an attribute load plus a call (it assumes a module) instead of a method call, which
# costs a bound-method allocation per call on the hot paths.
_Q, _QQ, _II, _QII = _layout._Q, _layout._QQ, _layout._II, _layout._QII

# The memory layout and the synchronization protocol (why this is safe without compare-and-swap, crash
# recovery, spsc lazy head publishing, waiting) are explained in the block comment at the top of layout.py.


_live: weakref.WeakSet[ShmQueue] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # OFD locks belong to the open file description, which a forked child shares with its parent: reopen so
    # the child's locks are its own (and die with it), and forget role locks the parent holds.
    for q in list(_live):
        q._reopen_after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class ShmQueue(LockMixin, WaitMixin):
    """A bounded FIFO of bytes messages in a shared memory-mapped file.

    Open by name from any process; picklable (pickles as its path and reopens). ``mode="mpmc"`` (default) is
    safe for any number of producers and consumers; ``mode="spsc"`` skips the file locks for one producer
    and one consumer process at a time.
    """

    __slots__ = (
        "__weakref__",
        "_buf",
        "_closed",
        "_cmx",
        "_cons_ready",
        "_fast_get",
        "_fast_put",
        "_fd",
        "_get_count",
        "_head",
        "_mpmc",
        "_mvq",
        "_ne_fd",
        "_ne_path",
        "_nf_fd",
        "_nf_path",
        "_pdelta",
        "_pid",
        "_plim",
        "_pmx",
        "_prod_ready",
        "_put_count",
        "_salt",
        "_slot",
        "_tail",
        "_tail_cache",
        "capacity_bytes",
        "max_message_size",
        "mode",
        "path",
    )

    # ------------------------------------------------------------------ lifecycle

    def __init__(self, path: str, *, _internal: bool = False) -> None:
        if not _internal:
            raise TypeError("use ShmQueue.create(...) or ShmQueue.open(...)")
        self.path = path
        self._closed = True
        fd = os.open(path, os.O_RDWR)
        try:
            size, mode, cap, maxmsg, salt = _read_header(fd, path)
            self._buf = mmap(fd, size, MAP_SHARED, PROT_READ | PROT_WRITE)
            self._mvq = memoryview(self._buf).cast("Q")
            self._pmx = Mutex(self._buf, PMUTEX_OFF, path)
            self._cmx = Mutex(self._buf, CMUTEX_OFF, path)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self.mode: Literal["mpmc", "spsc"] = "spsc" if mode == 1 else "mpmc"
        self.capacity_bytes: int = cap
        self.max_message_size: int = maxmsg
        self._salt: int = salt
        self._ne_path, self._nf_path = _fifo_paths(path)
        self._ne_fd = self._open_fifo(self._ne_path)
        self._nf_fd = self._open_fifo(self._nf_path)
        self._closed = False
        self._init_local_state()
        _live.add(self)

    @staticmethod
    def _open_fifo(p: str) -> int:
        # O_RDWR on a FIFO never blocks at open and never sees EOF; O_NONBLOCK keeps writes from stalling a
        # producer when nobody drains (the waker only needs "readable").
        try:
            return os.open(p, os.O_RDWR | os.O_NONBLOCK)
        except FileNotFoundError:
            raise QueueFileError(f"{p}: wakeup FIFO missing (queue half-deleted?)") from None

    def _init_local_state(self) -> None:
        b = self._buf
        self._head: int = _Q.unpack_from(b, HEAD_OFF)[0]
        self._put_count: int = _Q.unpack_from(b, HEAD_OFF + 8)[0]
        self._tail: int = _Q.unpack_from(b, TAIL_OFF)[0]
        self._get_count: int = _Q.unpack_from(b, TAIL_OFF + 8)[0]
        self._tail_cache: int = self._tail
        # spsc put() fast path: a record ending at or before _plim fits without wrapping or rereading tail;
        # its file offset is head - _pdelta. Recomputed by _set_plim after every slow-path producer call.
        self._plim: int = 0
        self._pdelta: int = 0
        self._prod_ready = self.mode == "mpmc"  # spsc: role lock + head recovery happen on first put
        self._cons_ready = self.mode == "mpmc"
        self._fast_put = False  # set once the spsc producer role is taken
        self._fast_get = False
        self._mpmc = self.mode == "mpmc"  # the mpmc fast paths (cleared by close)
        self._spin_ns = 50_000
        self._pid = os.getpid()
        self._slot = (self._pid * 31 + threading.get_ident()) % NSLOTS

    def _reopen_after_fork(self) -> None:
        if self._closed:
            return
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_RDWR)
        self._init_local_state()

    @classmethod
    def create(
        cls,
        name: str | os.PathLike[str],
        capacity_bytes: int,
        max_message_size: int,
        mode: Literal["mpmc", "spsc"] = "mpmc",
    ) -> ShmQueue:
        """Create a new queue file (fails if it exists) and open it.

        The ring must hold two maximal records so that one always fits whatever the wrap position.
        """
        if mode not in MODES:
            raise ValueError(f"mode must be 'mpmc' or 'spsc', not {mode!r}")
        if not isinstance(capacity_bytes, int) or not isinstance(max_message_size, int):
            raise TypeError("capacity_bytes and max_message_size must be int")
        if max_message_size < 0 or max_message_size >= PAD:
            raise ValueError(f"max_message_size out of range: {max_message_size}")
        cap = (capacity_bytes + 15) & ~15
        least = max(64, 2 * _record_size(max_message_size))
        if cap < least:
            raise ValueError(
                f"capacity_bytes={capacity_bytes} too small: need >= {least} "
                f"to hold two records of max_message_size={max_message_size}"
            )
        path = _resolve(name)
        if os.path.exists(path):
            raise FileExistsError(f"haremq shm queue {path} already exists")
        ne, nf = _fifo_paths(path)
        header = _pack_header(MODES[mode], cap, max_message_size)
        tmp = f"{path}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
        made: list[str] = []
        try:
            # Build in a temporary file and link it into place, so an opener never sees half a header and two
            # creators race safely (link fails if the name exists).
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
            made.append(tmp)
            try:
                os.ftruncate(fd, HEADER_SIZE + cap)
                # Reserve pages now: a sparse tmpfs file would SIGBUS a writer later if /dev/shm filled up.
                os.posix_fallocate(fd, 0, HEADER_SIZE + cap)
                os.pwrite(fd, header, 0)
                with mmap(fd, HEADER_SIZE, MAP_SHARED, PROT_READ | PROT_WRITE) as hdr:
                    init_mutex(hdr, PMUTEX_OFF)
                    init_mutex(hdr, CMUTEX_OFF)
            finally:
                os.close(fd)
            for p in (ne, nf):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(p)  # a stale FIFO left by a crashed create or unlink
                os.mkfifo(p, 0o600)
                made.append(p)
            os.link(tmp, path)
        except BaseException:
            for p in made:
                with contextlib.suppress(OSError):
                    os.unlink(p)
            raise
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        return cls(path, _internal=True)

    @classmethod
    def open(cls, name: str | os.PathLike[str]) -> ShmQueue:
        """Open an existing queue by name or path."""
        path = _resolve(name)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no haremq shm queue at {path}")
        return cls(path, _internal=True)

    @staticmethod
    def unlink_name(name: str | os.PathLike[str]) -> None:
        """Remove a queue's file and FIFOs by name; open handles keep working until closed."""
        path = _resolve(name)
        for p in (path, *_fifo_paths(path)):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)

    def unlink(self) -> None:
        """Remove this queue's file and FIFOs (nothing is left in /dev/shm)."""
        self.unlink_name(self.path)

    def close(self) -> None:
        """Publish the indexes, release locks and unmap. Idempotent."""
        if self._closed:
            return
        self._closed = True
        _live.discard(self)
        self._fast_put = self._fast_get = self._mpmc = False
        with contextlib.suppress(ValueError, OSError):
            if self.mode == "spsc" and self._prod_ready:
                _QQ.pack_into(self._buf, HEAD_OFF, self._head, self._put_count)
        self._pmx.release_mapping()
        self._cmx.release_mapping()
        self._mvq.release()
        with contextlib.suppress(BufferError):
            self._buf.close()
        for fd in (self._fd, self._ne_fd, self._nf_fd):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> ShmQueue:
        return self

    def __exit__(
        self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (ShmQueue.open, (self.path,))

    def __repr__(self) -> str:
        return f"<ShmQueue {self.path!r} mode={self.mode} capacity={self.capacity_bytes}>"

    def fileno(self) -> int:
        """A FIFO that turns readable when a producer wakes registered consumer waiters (see get_async)."""
        return self._ne_fd

    # ------------------------------------------------------------------ producer side
    #
    # put/get/put_many/get_many share one shape: enter the side (spsc: nothing after the first call; mpmc:
    # take the lock and reload the shared index), run an inlined loop over local variables (attribute lookups
    # and calls dominate the cost of a pure-Python ring), publish the index once, leave, wake a sleeper.

    def _norm(self, data: object) -> bytes | bytearray:
        """Validate one message on the slow path; memoryviews become bytes."""
        if isinstance(data, memoryview):
            data = data.tobytes()
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError(f"ShmQueue messages are bytes-like, not {type(data).__name__}")
        if len(data) > self.max_message_size:
            raise ValueError(f"message of {len(data)} bytes exceeds max_message_size={self.max_message_size}")
        return data

    def _recover_head(self) -> None:
        """Rebuild head from commit words: records a dead (or lazy spsc) producer committed, never published."""
        b, cap, salt = self._buf, self.capacity_bytes, self._salt
        h, cnt = _QQ.unpack_from(b, HEAD_OFF)
        t, got = _QQ.unpack_from(b, TAIL_OFF)
        if t > h:  # the consumer took records past the published head: scan from tail (see the protocol)
            h, cnt = t, got
        while True:
            off = h % cap
            c, n, ck = _QII.unpack_from(b, HEADER_SIZE + off)
            if c != h ^ salt or ck != (c & _M32) ^ n:
                break
            if n == PAD:
                h += cap - off
            elif n <= self.max_message_size:
                h += _record_size(n)
                cnt += 1
            else:
                break
        self._head, self._put_count = h, cnt
        _QQ.pack_into(b, HEAD_OFF, h, cnt)

    def _set_plim(self) -> None:
        h, cap = self._head, self.capacity_bytes
        lap = h - h % cap
        self._pdelta = lap - HEADER_SIZE
        self._plim = min(lap + cap, self._tail_cache + cap)

    def _write(self, msgs: list[bytes | bytearray], i: int) -> int:
        """Write msgs[i:] at the local head while they fit; return the next index. Head is not published."""
        b, cap, salt = self._buf, self.capacity_bytes, self._salt
        pack_ii, pack_q = _II.pack_into, _Q.pack_into
        h, tail = self._head, self._tail_cache
        start, end = i, len(msgs)
        while i < end:
            data = msgs[i]
            n = len(data)
            off = h % cap
            size = (n + 31) & ~15
            need = size if off + size <= cap else size + cap - off
            if h + need - tail > cap:
                tail = self._tail_cache = _Q.unpack_from(b, TAIL_OFF)[0]
                if h + need - tail > cap:
                    break
            if need != size:  # pad the ring end and wrap
                c = h ^ salt
                pack_ii(b, HEADER_SIZE + off + 8, PAD, (c & _M32) ^ PAD)
                pack_q(b, HEADER_SIZE + off, c)
                h += cap - off
                off = 0
            base = HEADER_SIZE + off
            b[base + 16 : base + 16 + n] = data
            c = h ^ salt
            pack_ii(b, base + 8, n, (c & _M32) ^ n)
            pack_q(b, base, c)  # the commit: this store makes the record visible
            h += size
            i += 1
        self._put_count += i - start
        self._head = h
        return i

    def _prod_enter(self) -> None:
        if self.mode == "spsc":
            if not self._prod_ready:
                self._take_role(_LOCK_PROD_ROLE, "producer")
                self._recover_head()
                self._prod_ready = self._fast_put = True
            return
        self._prod_locked(self._pmx.lock())

    def _prod_locked(self, dead: bool) -> None:
        """The producer mutex was just taken: load head, or rebuild it if the last holder died holding it."""
        b = self._buf
        if dead:
            self._recover_head()
            _Q.pack_into(b, _P_RECOV, _Q.unpack_from(b, _P_RECOV)[0] + 1)
            log.warning("%s: a producer died while writing; recovered head by scan", self.path)
        else:
            self._head, self._put_count = _QQ.unpack_from(b, HEAD_OFF)

    def _prod_exit(self) -> None:
        b = self._buf
        _QQ.pack_into(b, HEAD_OFF, self._head, self._put_count)
        if self.mode == "mpmc":
            self._pmx.unlock()
        else:
            self._set_plim()
        if b[CWAIT_OFF]:
            self._wake(CWAIT_OFF, self._ne_fd)

    def _put_batch(self, msgs: list[bytes | bytearray], i: int) -> int:
        self._prod_enter()
        try:
            i = self._write(msgs, i)
        except BaseException:
            if self.mode == "mpmc":
                self._recover_head()  # an interrupted write may have committed records past the local head
            raise
        finally:
            self._prod_exit()
        return i

    def put(
        self, data: bytes | bytearray | memoryview, block: bool = True, timeout: float | None = None
    ) -> None:
        """Append one message; raises queue.Full when there is no room (after timeout if blocking)."""
        if self._fast_put and type(data) is bytes:
            # spsc hot path, inlined: one limit check, three stores, head published lazily (see the protocol)
            h = self._head
            n = len(data)
            e = h + ((n + 31) & ~15)
            if e <= self._plim and n <= self.max_message_size:
                base = h - self._pdelta
                self._buf[base + 16 : base + 16 + n] = data
                c = h ^ self._salt
                i = base >> 3
                mvq = self._mvq
                mvq[i + 1] = n | ((c ^ n) & 0xFFFFFFFF) << 32  # length, check
                mvq[i] = c  # the commit: this store makes the record visible
                self._head = e
                k = self._put_count = self._put_count + 1
                if k & 63 and not mvq[_CWAIT_W]:  # 63 == _PUBLISH_EVERY - 1
                    return
                mvq[_HEAD_W] = e
                mvq[_CNT_W] = k
                if mvq[_CWAIT_W]:
                    self._wake(CWAIT_OFF, self._ne_fd)
                return
        elif self._mpmc and type(data) is bytes and len(data) <= self.max_message_size:
            # mpmc hot path, inlined: trylock (user space), the record and head under the producer mutex
            mx = self._pmx.ptr
            rc = TRYLOCK(mx)
            if rc:
                self._prod_locked(self._pmx.settle(rc))  # contended (sleeps) or the last holder died
            mvq = self._mvq
            ok = False
            try:
                h = mvq[_HEAD_W]
                n = len(data)
                cap = self.capacity_bytes
                base = h % cap
                size = (n + 31) & ~15
                if base + size <= cap and h + size - mvq[_TAIL_W] <= cap:  # no wrap, room: else the slow path
                    base += HEADER_SIZE
                    self._buf[base + 16 : base + 16 + n] = data
                    c = h ^ self._salt
                    i = base >> 3
                    mvq[i + 1] = n | ((c ^ n) & 0xFFFFFFFF) << 32  # length, check
                    mvq[i] = c  # the commit
                    mvq[_HEAD_W] = h + size
                    mvq[_CNT_W] += 1
                    ok = True
            except BaseException:
                self._recover_head()  # interrupted after the commit: publish what is committed
                raise
            finally:
                UNLOCK(mx)
            if ok:
                if mvq[_CWAIT_W]:
                    self._wake(CWAIT_OFF, self._ne_fd)
                return
        self._put_slow(data, block, timeout)

    def _put_slow(self, data: object, block: bool, timeout: float | None) -> None:
        msgs = [self._norm(data)]
        if self._put_batch(msgs, 0):
            return
        if not block or not self._wait(PWAIT_OFF, lambda: self._put_batch(msgs, 0) == 1, timeout):
            raise queue.Full

    def flush(self) -> None:
        """Publish this spsc producer's head now (put() does it lazily; see qsize). No-op otherwise."""
        if self.mode == "spsc" and self._prod_ready and not self._closed:
            _QQ.pack_into(self._buf, HEAD_OFF, self._head, self._put_count)

    def put_nowait(self, data: bytes | bytearray | memoryview) -> None:
        self.put(data, block=False)

    def put_many(
        self,
        items: Iterable[bytes | bytearray | memoryview],
        block: bool = True,
        timeout: float | None = None,
    ) -> int:
        """Append messages publishing head once per batch; returns how many were put.

        All items are validated first, so a bad one raises before anything is written. Without block (or when
        the timeout expires) returns early with a smaller count rather than raising.
        """
        msgs: list[Any] = list(items)
        if not msgs:
            return 0
        if set(map(type, msgs)) != {bytes} or max(map(len, msgs)) > self.max_message_size:
            msgs = [self._norm(m) for m in msgs]
        done = 0
        deadline = None if timeout is None else time.monotonic() + timeout

        def step() -> bool:
            nonlocal done
            start = done
            done = self._put_batch(msgs, done)
            return done > start

        while done < len(msgs):
            if step():
                continue
            if not block:
                break
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._wait(PWAIT_OFF, step, left):
                break
        return done

    # ------------------------------------------------------------------ consumer side

    def _cons_enter(self) -> None:
        if self.mode == "spsc":
            if not self._cons_ready:
                self._take_role(_LOCK_CONS_ROLE, "consumer")
                self._tail, self._get_count = _QQ.unpack_from(self._buf, TAIL_OFF)
                self._cons_ready = self._fast_get = True
            return
        self._cons_locked(self._cmx.lock())

    def _cons_locked(self, dead: bool) -> None:
        """The consumer mutex was just taken: load tail; account for a holder that died holding it."""
        b = self._buf
        self._tail, self._get_count = _QQ.unpack_from(b, TAIL_OFF)
        if dead:
            itail, icount = _QQ.unpack_from(b, _C_INTENT)
            _Q.pack_into(b, _C_RECOV, _Q.unpack_from(b, _C_RECOV)[0] + 1)
            if itail == self._tail and icount:
                _Q.pack_into(b, _C_LOST, _Q.unpack_from(b, _C_LOST)[0] + icount)
                _Q.pack_into(b, _C_INTENT + 8, 0)
                log.warning("%s: a consumer died after taking %d message(s); they are lost", self.path, icount)
            else:
                log.warning("%s: a consumer died mid-read; nothing was taken", self.path)

    def _cons_exit(self) -> None:
        b = self._buf
        if self.mode == "mpmc":
            _Q.pack_into(b, _C_INTENT + 8, 0)  # the intent is spent: a later death took nothing
            self._cmx.unlock()
        if b[PWAIT_OFF]:
            self._wake(PWAIT_OFF, self._nf_fd)

    def _read(self, out: list[bytes], limit: int) -> None:
        """Copy up to limit committed records from the local tail into out; commit them with one store."""
        b, cap, salt, maxn = self._buf, self.capacity_bytes, self._salt, self.max_message_size
        unpack, append = _QII.unpack_from, out.append
        t = t0 = self._tail
        got = 0
        while got < limit:
            off = t % cap
            base = HEADER_SIZE + off
            c, n, ck = unpack(b, base)
            if c != t ^ salt or ck != (c & _M32) ^ n:
                break  # not committed yet (a length not yet visible counts as not committed)
            if n == PAD:
                t += cap - off
                continue
            if n > maxn:
                raise QueueFileError(f"{self.path}: record at {t} claims {n} bytes (corrupted ring)")
            append(b[base + 16 : base + 16 + n])
            t += (n + 31) & ~15
            got += 1
        if t != t0:
            cnt = self._get_count + got
            if self.mode == "mpmc":
                _QQ.pack_into(b, _C_INTENT, t, got)
            _QQ.pack_into(b, TAIL_OFF, t, cnt)  # the consume commit
            self._tail, self._get_count = t, cnt

    def _ready(self) -> bool:
        """Cheap lock-free peek: is a record (or pad) committed at the shared tail?"""
        b = self._buf
        t = self._tail if self._cons_ready and self.mode == "spsc" else _Q.unpack_from(b, TAIL_OFF)[0]
        return bool(_Q.unpack_from(b, HEADER_SIZE + t % self.capacity_bytes)[0] == t ^ self._salt)

    def _try_get(self, out: list[bytes], limit: int) -> bool:
        if self.mode == "mpmc" and not self._ready():
            return False
        self._cons_enter()
        try:
            self._read(out, limit)
        finally:
            self._cons_exit()
        return bool(out)

    def get(self, block: bool = True, timeout: float | None = None) -> bytes:
        """Remove and return the oldest message; raises queue.Empty (after timeout if blocking)."""
        if self._fast_get:
            # spsc hot path, inlined: two loads, one copy out, the tail commit (eager: the producer's space)
            t = self._tail
            base = t % self.capacity_bytes + HEADER_SIZE
            mvq = self._mvq
            i = base >> 3
            c = mvq[i]
            if c == t ^ self._salt:
                w = mvq[i + 1]
                n = w & 0xFFFFFFFF
                if n <= self.max_message_size and w >> 32 == (c ^ n) & 0xFFFFFFFF:  # a pad fails n <= max
                    base += 16
                    data = self._buf[base : base + n]
                    t += (n + 31) & ~15
                    self._tail = t
                    mvq[_TAIL_W] = t  # the consume commit
                    k = self._get_count = self._get_count + 1
                    mvq[_GOT_W] = k
                    if mvq[_PWAIT_W]:
                        self._wake(PWAIT_OFF, self._nf_fd)
                    return data
        elif self._mpmc:
            # mpmc hot path, inlined: peek without the lock (an empty queue costs no lock), then take one record
            # under the consumer mutex: intent, tail commit, count, intent spent (see the protocol)
            mvq = self._mvq
            t = mvq[_TAIL_W]
            cap = self.capacity_bytes
            salt = self._salt
            if mvq[(t % cap + HEADER_SIZE) >> 3] == t ^ salt:
                mx = self._cmx.ptr
                rc = TRYLOCK(mx)
                if rc:
                    self._cons_locked(self._cmx.settle(rc))
                got = None
                try:
                    t = mvq[_TAIL_W]
                    base = t % cap + HEADER_SIZE
                    i = base >> 3
                    c = mvq[i]
                    if c == t ^ salt:
                        w = mvq[i + 1]
                        n = w & 0xFFFFFFFF
                        if n <= self.max_message_size and w >> 32 == (c ^ n) & 0xFFFFFFFF:  # a pad fails
                            base += 16
                            got = self._buf[base : base + n]
                            t += (n + 31) & ~15
                            mvq[_CINT_W] = t
                            mvq[_CINT_W + 1] = 1
                            mvq[_TAIL_W] = t  # the consume commit
                            mvq[_GOT_W] += 1
                            mvq[_CINT_W + 1] = 0
                finally:
                    UNLOCK(mx)
                if got is not None:
                    if mvq[_PWAIT_W]:
                        self._wake(PWAIT_OFF, self._nf_fd)
                    return got
        return self._get_slow(block, timeout)

    def _get_slow(self, block: bool, timeout: float | None) -> bytes:
        out: list[bytes] = []
        if self._try_get(out, 1):
            return out[0]
        if not block or not self._wait(CWAIT_OFF, lambda: self._try_get(out, 1), timeout):
            raise queue.Empty
        return out[0]

    def get_nowait(self) -> bytes:
        return self.get(block=False)

    def get_many(
        self, max_messages: int = 64, block: bool = True, timeout: float | None = None
    ) -> list[bytes]:
        """Remove up to max_messages with one tail commit; waits for at least one unless block is false."""
        if max_messages < 1:
            raise ValueError("max_messages must be >= 1")
        out: list[bytes] = []
        if self._try_get(out, max_messages):
            return out
        if not block or not self._wait(CWAIT_OFF, lambda: self._try_get(out, max_messages), timeout):
            raise queue.Empty
        return out

    async def get_async(self, timeout: float | None = None) -> bytes:
        """Await one message without polling: the event loop watches the wakeup FIFO."""
        out: list[bytes] = []
        if self._try_get(out, 1):
            return out[0]
        loop = asyncio.get_running_loop()
        ev = asyncio.Event()
        loop.add_reader(self._ne_fd, ev.set)
        deadline = None if timeout is None else time.monotonic_ns() + int(timeout * 1e9)
        try:
            while True:
                now = time.monotonic_ns()
                if deadline is not None and now >= deadline:
                    raise queue.Empty
                self._register(CWAIT_OFF, now)
                if self._try_get(out, 1):
                    return out[0]
                ev.clear()
                wait_ns = SLICE_NS if deadline is None else min(SLICE_NS, deadline - now)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(ev.wait(), wait_ns / 1e9)
                self._drain(self._ne_fd)
                if self._try_get(out, 1):
                    return out[0]
        finally:
            loop.remove_reader(self._ne_fd)
            self._unregister(CWAIT_OFF)

    # ------------------------------------------------------------------ introspection

    def _indexes(self) -> tuple[int, int, int, int]:
        """(head, put_count, tail, get_count) for introspection; exact whenever no put/get is in flight.

        An spsc head is published lazily: a handle that is not the producer adds the records committed past
        the published head (at most _PUBLISH_EVERY - 1 of them unless a put races this scan).
        """
        b = self._buf
        t, got = _QQ.unpack_from(b, TAIL_OFF)
        if self.mode == "mpmc":
            h, cnt = _QQ.unpack_from(b, HEAD_OFF)
            return h, cnt, t, got
        if self._prod_ready:
            return self._head, self._put_count, t, got
        h, cnt = _QQ.unpack_from(b, HEAD_OFF)
        if t > h:
            h, cnt = t, got
        cap, salt, maxn = self.capacity_bytes, self._salt, self.max_message_size
        for _ in range(_SCAN_MAX):
            off = h % cap
            c, n, ck = _QII.unpack_from(b, HEADER_SIZE + off)
            if c != h ^ salt or ck != (c & _M32) ^ n:
                break
            if n == PAD:
                h += cap - off
            elif n <= maxn:
                h += _record_size(n)
                cnt += 1
            else:
                break
        return h, cnt, t, got

    def qsize(self) -> int:
        """Messages committed but not yet consumed (exact unless a put or get runs concurrently)."""
        _, put, _, got = self._indexes()
        return max(0, put - got)

    def empty(self) -> bool:
        return not self._ready()

    def full(self) -> bool:
        h, _, t, _ = self._indexes()
        return h - t + 2 * _record_size(self.max_message_size) > self.capacity_bytes

    def stats(self) -> dict[str, int]:
        """Counters kept in the file: totals, messages lost with dead consumers, crash recoveries."""
        b = self._buf
        h, put, t, got = self._indexes()
        return {
            "put_count": put,
            "get_count": got,
            "lost": _Q.unpack_from(b, _C_LOST)[0],
            "producer_recoveries": _Q.unpack_from(b, _P_RECOV)[0],
            "consumer_recoveries": _Q.unpack_from(b, _C_RECOV)[0],
            "used_bytes": max(0, h - t),
        }
