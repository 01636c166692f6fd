"""Hypothesis model test: the ring against a deque plus a byte-exact model of the space arithmetic."""

from __future__ import annotations

import itertools
import os
import queue
from collections import deque

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from haremq.ipc import ShmQueue

_names = itertools.count()


def _rec(n: int) -> int:
    return (n + 16 + 15) & ~15


class RingModel(RuleBasedStateMachine):
    """Every put must succeed exactly when the model says the record (plus any end pad) fits."""

    q: ShmQueue | None = None

    @initialize(
        mode=st.sampled_from(["mpmc", "spsc"]),
        max_msg=st.integers(0, 200),
        extra=st.integers(0, 600),
    )
    def setup(self, mode: str, max_msg: int, extra: int) -> None:
        cap = 2 * _rec(max_msg) + extra
        cap = max(64, (cap + 15) & ~15)
        self.q = ShmQueue.create(f"hq-prop-{os.getpid()}-{next(_names)}", cap, max_msg, mode=mode)  # type: ignore[arg-type]
        self.cap = cap
        self.max_msg = max_msg
        self.model: deque[tuple[bytes, int]] = deque()  # (message, end position)
        self.head = self.tail = 0
        self.seq = 0

    def teardown(self) -> None:
        if self.q is not None:
            self.q.close()
            self.q.unlink()

    def _fits(self, n: int) -> tuple[bool, int]:
        size = _rec(n)
        off = self.head % self.cap
        pad = 0 if off + size <= self.cap else self.cap - off
        return self.head + pad + size - self.tail <= self.cap, pad

    def _msg(self, n: int) -> bytes:
        self.seq += 1
        return (self.seq.to_bytes(4, "little") * (n // 4 + 1))[:n]

    def _model_put(self, m: bytes) -> bool:
        ok, pad = self._fits(len(m))
        if ok:
            self.head += pad + _rec(len(m))
            self.model.append((m, self.head))
        return ok

    @precondition(lambda self: self.q is not None)
    @rule(data=st.data())
    def put(self, data: st.DataObject) -> None:
        assert self.q is not None
        m = self._msg(data.draw(st.integers(0, self.max_msg)))
        expected = self._model_put(m)
        try:
            self.q.put_nowait(m)
            assert expected, "queue accepted a record the model says does not fit"
        except queue.Full:
            assert not expected, "queue refused a record the model says fits"

    @precondition(lambda self: self.q is not None)
    @rule(data=st.data())
    def put_many(self, data: st.DataObject) -> None:
        assert self.q is not None
        sizes = data.draw(st.lists(st.integers(0, self.max_msg), max_size=8))
        msgs = [self._msg(n) for n in sizes]
        expected = 0
        for m in msgs:
            if not self._model_put(m):
                break
            expected += 1
        assert self.q.put_many(msgs, block=False) == expected

    @precondition(lambda self: self.q is not None)
    @rule()
    def get(self) -> None:
        assert self.q is not None
        if not self.model:
            try:
                self.q.get_nowait()
                raise AssertionError("got a message from an empty queue")
            except queue.Empty:
                return
        m, end = self.model.popleft()
        assert self.q.get_nowait() == m
        self.tail = end

    @precondition(lambda self: self.q is not None)
    @rule(k=st.integers(1, 10))
    def get_many(self, k: int) -> None:
        assert self.q is not None
        if not self.model:
            try:
                self.q.get_many(k, block=False)
                raise AssertionError("got messages from an empty queue")
            except queue.Empty:
                return
        want = [self.model.popleft() for _ in range(min(k, len(self.model)))]
        assert self.q.get_many(k, block=False) == [m for m, _ in want]
        self.tail = want[-1][1]

    @invariant()
    def sizes_agree(self) -> None:
        if self.q is not None:
            assert self.q.qsize() == len(self.model)
            assert self.q.empty() == (not self.model)
            assert self.q.stats()["used_bytes"] == self.head - self.tail


TestRingModel = RingModel.TestCase
TestRingModel.settings = settings(
    max_examples=150, stateful_step_count=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
