"""Waiting for the other side: adaptive spin, then sleep on a wakeup FIFO (the "Waiting" rule in layout.py).

Each side has a wait area in the header: a flag byte, then NSLOTS deadlines. A waiter registers a deadline
in its slot, sets the flag, re-checks, and sleeps in poll() on the side's FIFO for at most one slice. Whoever
makes progress sees the flag and calls _wake, which writes one byte to the FIFO while any slot is live and
clears the flag once none is. A missed wakeup (no store-load fence) costs at most one slice.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from mmap import mmap
from typing import Any, Final

from . import layout as _layout
from .layout import CWAIT_OFF

__all__ = ["SLICE_NS", "SPIN_MAX_NS", "SPIN_MIN_NS", "WaitMixin"]

# The Struct codecs are bound by assignment, not by `from .layout import`: CPython compiles `name.meth(...)` on
# an imported name as an attribute load plus a call (it assumes a module) instead of a method call, which
# costs a bound-method allocation per call on the wake-up path.
_Q, _SLOTS = _layout._Q, _layout._SLOTS

SLICE_NS: Final = 20_000_000
SPIN_MIN_NS: Final = 5_000
SPIN_MAX_NS: Final = 200_000


class WaitMixin:
    """Waiting and wake-ups for ShmQueue, on the handle's mapping, FIFOs and wait slot."""

    __slots__ = ("_spin_ns",)  # adaptive spin budget: doubles when a spin succeeds, halves when it sleeps

    _spin_ns: int
    _buf: mmap
    _slot: int
    _ne_fd: int
    _nf_fd: int

    def _register(self, area: int, now: int) -> None:
        _Q.pack_into(self._buf, area + 8 + 8 * self._slot, now + SLICE_NS + SLICE_NS // 2)
        self._buf[area] = 1

    def _unregister(self, area: int) -> None:
        with contextlib.suppress(ValueError):
            _Q.pack_into(self._buf, area + 8 + 8 * self._slot, 0)

    @staticmethod
    def _drain(fd: int) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(fd, 4096)

    def _wake(self, area: int, fd: int) -> None:
        """Someone flagged interest: write a wakeup byte if any slot is still live, else clear the flag."""
        now = time.monotonic_ns()
        if any(d > now for d in _SLOTS.unpack_from(self._buf, area + 8)):
            with contextlib.suppress(BlockingIOError):
                os.write(fd, b"\x01")
        else:
            self._buf[area] = 0

    def _wait(self, area: int, attempt: Any, timeout: float | None) -> bool:
        """Retry attempt() until it succeeds or timeout: short adaptive spin, then sleep on the FIFO."""
        if timeout is not None and timeout < 0:
            raise ValueError("'timeout' must be a non-negative number")
        mono = time.monotonic_ns
        start = mono()
        deadline = None if timeout is None else start + int(timeout * 1e9)
        spin_end = start + self._spin_ns
        if deadline is not None:
            spin_end = min(spin_end, deadline)
        yield_ = os.sched_yield
        while True:
            if attempt():
                self._spin_ns = min(SPIN_MAX_NS, self._spin_ns * 2)
                return True
            if mono() >= spin_end:
                break
            yield_()
        self._spin_ns = max(SPIN_MIN_NS, self._spin_ns // 2)
        fd = self._ne_fd if area == CWAIT_OFF else self._nf_fd
        poller = select.poll()  # per call: threads sharing an mpmc handle may sleep at once (poll objects refuse)
        poller.register(fd, select.POLLIN)
        try:
            while True:
                now = mono()
                if deadline is not None and now >= deadline:
                    return bool(attempt())
                self._register(area, now)
                if attempt():
                    return True
                wait_ns = SLICE_NS if deadline is None else min(SLICE_NS, deadline - now)
                poller.poll(max(1, wait_ns // 1_000_000))
                self._drain(fd)
                if attempt():
                    return True
        finally:
            self._unregister(area)
