"""Shared fixtures: a real ``haremq serve`` subprocess on an ephemeral port."""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from brokerproc import BrokerProcess, kill_leftovers, start_broker, stop_broker


@pytest.fixture(autouse=True)
def _no_leaked_brokers() -> Iterator[None]:
    """Brokers a test starts and leaves running are killed when it ends. Module-scoped fixtures
    are set up before this function-scoped one, so their brokers are not in the window."""
    from brokerproc import STARTED

    mark = len(STARTED)
    yield
    kill_leftovers(mark)


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    """One real broker process shared by a test module."""
    b = start_broker()
    yield b
    stop_broker(b)
    assert b.proc.returncode == 0, "broker did not shut down cleanly"


@pytest.fixture
def fresh_broker() -> Iterator[BrokerProcess]:
    """A real broker process for a single test."""
    b = start_broker()
    yield b
    stop_broker(b)


@pytest.fixture
def small_fs() -> Iterator[str]:
    """A 4 MiB tmpfs (root only, skipped otherwise): a disk that fills up, for disk-full tests."""
    path = tempfile.mkdtemp(prefix="haremq-full-")
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", path],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root to mount a small tmpfs")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", path], check=False)
