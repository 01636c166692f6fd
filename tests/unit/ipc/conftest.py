"""Fixtures for the haremq.ipc tests: unique queue names and a /dev/shm leak check."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

try:
    import haremq.ipc  # noqa: F401
except ImportError:  # not installed yet: run from the source tree
    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "src"))

_counter = itertools.count()


@pytest.fixture
def qname() -> Iterator[str]:
    """A fresh /dev/shm queue name; fails the test if anything with that name is left behind."""
    name = f"hq-test-{os.getpid()}-{next(_counter)}"
    yield name
    from haremq.ipc import ShmQueue

    leftovers = [p for p in os.listdir("/dev/shm") if p.startswith(name)]
    ShmQueue.unlink_name(name)
    assert not leftovers, f"/dev/shm entries leaked: {leftovers}"
