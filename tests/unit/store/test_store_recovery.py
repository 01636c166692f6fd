"""Recovery from damage: torn tails, flipped bits, quarantine, the offline checker, and a real crash."""

from __future__ import annotations

import io
import os
import random
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from store_fakes import FakeQueue

from haremq.store import records as R
from haremq.store.check import check_data_dir, check_segment
from haremq.store.crypto import load_key_ring, new_key_line
from haremq.store.file import FileQueueStore, encode_name

KiB = 1024
SEG = 8 * KiB


def make(path: Path) -> FileQueueStore:
    s = FileQueueStore(path, segment_size=SEG, min_segment_size=SEG, fsync="off")
    s.recover()
    return s


def qdir(path: Path) -> Path:
    return path / "queues" / encode_name("/") / encode_name("q")


def build(path: Path, n: int, seed: int) -> dict[int, bytes]:
    """A publish-only log of ``n`` messages with random sizes; returns seq -> body."""
    rnd = random.Random(seed)
    s = make(path)
    q = FakeQueue("q")
    bodies: dict[int, bytes] = {}
    for _ in range(n):
        e = q.entry(rnd.randbytes(rnd.randint(0, 700)))
        s.publish(q, e)
        bodies[e.seq] = e.msg.body
    s.close()
    return bodies


def layout(path: Path) -> list[tuple[str, list[tuple[int, int, int]]]]:
    """Per segment file: (name, [(seq, start, end) of each record])."""
    out = []
    for name in sorted(f for f in os.listdir(qdir(path)) if f.endswith(".seg")):
        buf = (qdir(path) / name).read_bytes()
        recs = []
        pos = R.FILE_HEADER_SIZE
        while pos + 4 <= len(buf) and (n := int.from_bytes(buf[pos:pos + 4], "little")):
            recs.append((R.SEQ.unpack_from(buf, pos + R.REC_HEADER_SIZE)[0], pos, pos + 8 + n))
            pos += 8 + n
        out.append((name, recs))
    return out


def recovered(path: Path) -> dict[int, bytes]:
    s = make(path)
    try:
        got = s.recover().get(("/", "q"), [])
        assert [m.seq for m in got] == sorted(m.seq for m in got)
        return {m.seq: m.body or b"" for m in got}
    finally:
        s.close()


# ---- torn tails -----------------------------------------------------------------------------
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32), frac=st.floats(0, 1), mode=st.sampled_from(["zero", "truncate", "garbage"]))
def test_torn_tail_keeps_every_record_before_it(tmp_path_factory: object, seed: int, frac: float, mode: str) -> None:
    path = Path(tmp_path_factory.mktemp("torn"))  # type: ignore[attr-defined]
    bodies = build(path, 40, seed)
    segs = layout(path)
    name, recs = segs[-1]
    f = qdir(path) / name
    end_used = recs[-1][2] if recs else R.FILE_HEADER_SIZE
    cut = R.FILE_HEADER_SIZE + int(frac * (end_used - R.FILE_HEADER_SIZE))
    size = f.stat().st_size
    with open(f, "r+b") as fh:
        if mode == "zero":
            fh.seek(cut)
            fh.write(bytes(size - cut))
        elif mode == "truncate":
            fh.truncate(cut)
        else:  # a write cut short: some garbage lands at the cut, the rest of the record never did
            fh.seek(cut)
            fh.write(random.Random(seed).randbytes(min(37, size - cut)))
            fh.write(bytes(max(0, end_used - cut - 37)))
    must = {seq for _, rs in segs[:-1] for seq, _, _ in rs} | {seq for seq, _, e in recs if e <= cut}
    got = recovered(path)
    assert must <= set(got) <= set(bodies)
    assert all(got[s] == bodies[s] for s in got)
    if mode != "garbage":
        assert set(got) == must
        assert not [x for x in os.listdir(qdir(path)) if "quarantined" in x]
    # recovery repaired the log: a second restart agrees, and appends continue after the cut
    assert recovered(path) == got
    s = make(path)
    q = FakeQueue("q", next_seq=max(bodies) + 1)
    s.publish(q, q.entry(b"after"))
    s.close()
    again = recovered(path)
    assert again[max(bodies) + 1] == b"after" and set(again) == set(got) | {max(bodies) + 1}


# ---- bit flips ------------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32), nflips=st.integers(1, 3), data=st.data())
def test_bit_flips_never_crash_or_lose_earlier_records(tmp_path_factory: object, seed: int, nflips: int,
                                                       data: st.DataObject) -> None:
    path = Path(tmp_path_factory.mktemp("flip"))  # type: ignore[attr-defined]
    bodies = build(path, 40, seed)
    segs = layout(path)
    idx = data.draw(st.integers(0, len(segs) - 1))
    name, recs = segs[idx]
    f = qdir(path) / name
    raw = bytearray(f.read_bytes())
    used = recs[-1][2] if recs else R.FILE_HEADER_SIZE
    limit = data.draw(st.sampled_from([used, len(raw)]))  # mostly inside the records, sometimes the zero tail
    offsets = [data.draw(st.integers(0, limit - 1)) for _ in range(nflips)]
    for off in offsets:
        raw[off] ^= 1 << data.draw(st.integers(0, 7))
    f.write_bytes(bytes(raw))
    first = min(offsets)
    must = {seq for i, (_, rs) in enumerate(segs) if i != idx for seq, _, _ in rs}
    must |= {seq for seq, _, e in recs if e <= first}
    got = recovered(path)
    assert must <= set(got) <= set(bodies)
    assert all(got[s] == bodies[s] for s in got)  # CRCs: never a corrupted body
    assert recovered(path) == got


def test_bad_crc_in_middle_quarantines_and_salvages(tmp_path: Path) -> None:
    bodies = build(tmp_path, 60, 1)
    segs = layout(tmp_path)
    name, recs = segs[0]
    assert len(segs) > 2 and len(recs) > 4
    victim_seq, _start, end = recs[2]
    f = qdir(tmp_path) / name
    raw = bytearray(f.read_bytes())
    raw[end - 1] ^= 0xFF  # last byte of the body: the CRC fails, the frame still parses
    f.write_bytes(bytes(raw))
    report = check_data_dir(tmp_path)
    assert not report.ok and report.bad_crcs == 1
    out = io.StringIO()
    report.print(out)
    assert "DAMAGE offset" in out.getvalue() and "bad crc" in out.getvalue()

    got = recovered(tmp_path)
    assert set(got) == set(bodies) - {victim_seq}
    files = os.listdir(qdir(tmp_path))
    assert f"{name}.quarantined" in files and name in files
    assert check_data_dir(tmp_path).ok  # the salvaged file is clean; the quarantined one is kept aside
    assert recovered(tmp_path) == got


def test_zeroed_length_word_in_sealed_segment_is_not_silent(tmp_path: Path) -> None:
    bodies = build(tmp_path, 60, 2)
    name, recs = layout(tmp_path)[0]
    f = qdir(tmp_path) / name
    raw = bytearray(f.read_bytes())
    seq, start, _ = recs[1]
    raw[start:start + 4] = bytes(4)  # looks like "end of log" but data follows
    f.write_bytes(bytes(raw))
    got = recovered(tmp_path)
    assert set(got) == set(bodies) - {seq}


def test_torn_segment_creation_is_removed(tmp_path: Path) -> None:
    bodies = build(tmp_path, 5, 3)
    (qdir(tmp_path) / f"{10**6:020d}.seg").write_bytes(bytes(SEG))
    assert recovered(tmp_path) == bodies
    assert f"{10**6:020d}.seg" not in os.listdir(qdir(tmp_path))


def test_check_data_dir_healthy(tmp_path: Path) -> None:
    build(tmp_path, 30, 4)
    report = check_data_dir(tmp_path)
    assert report.ok and len(report.queues) == 1
    qc = report.queues[0]
    assert (qc.vhost, qc.name, qc.live_messages) == ("/", "q", 30)
    assert sum(s.records["publish"] for s in qc.segments) == 30
    seg, recs = check_segment(str(qdir(tmp_path) / qc.segments[0].name))
    assert seg.ok and recs[0] == (R.PUBLISH, 1)
    assert not check_data_dir(tmp_path / "nope").ok


# ---- a real crash ---------------------------------------------------------------------------
WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[2])
    from store_fakes import FakeQueue
    from haremq.store.crypto import load_key_ring
    from haremq.store.file import FileQueueStore
    s = FileQueueStore(sys.argv[1], segment_size=64 * 1024, min_segment_size=16 * 1024, fsync="always",
                       cipher=load_key_ring(key_text=sys.argv[3]))
    s.recover()
    q = FakeQueue("q")
    pending = []
    while True:
        for _ in range(7):
            e = q.entry(b"m%d" % q.next_seq * 40)
            s.publish(q, e)
            pending.append(e)
            if e.seq % 5 == 0:
                s.remove(q, e)
                print("removed", e.seq)
        s.sync()
        for e in pending:
            print("synced", e.seq)
        pending.clear()
        sys.stdout.flush()
""")


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_sigkill_mid_stream_loses_nothing_synced(tmp_path: Path, encrypted: bool) -> None:
    keys = new_key_line(1) if encrypted else ""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path), str(Path(__file__).parent), keys],
                            stdout=subprocess.PIPE, text=True)
    synced: set[int] = set()
    removed: set[int] = set()
    assert proc.stdout is not None
    for line in proc.stdout:
        kind, seq = line.split()
        (synced if kind == "synced" else removed).add(int(seq))
        if len(synced) >= 3000:
            break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for line in proc.stdout:  # whatever it printed before dying also counts (but not a cut line)
        if line.endswith("\n"):
            kind, seq = line.split()
            (synced if kind == "synced" else removed).add(int(seq))
    s = FileQueueStore(tmp_path, segment_size=64 * 1024, min_segment_size=16 * 1024,
                       cipher=load_key_ring(key_text=keys))
    msgs = s.recover()[("/", "q")]
    s.close()
    seqs = [m.seq for m in msgs]
    assert len(seqs) == len(set(seqs)), "a message came back twice"
    assert synced - removed <= set(seqs)
    assert not set(seqs) & removed - (removed - synced)  # a synced remove stays removed
    assert all(m.body == b"m%d" % m.seq * 40 for m in msgs)
    disk = b"".join(f.read_bytes() for f in qdir(tmp_path).glob("*.seg"))
    assert (b"m%d" % msgs[0].seq * 40 in disk) is not encrypted  # the encrypted run really was sealed


@pytest.mark.parametrize("damage", ["empty", "missing"])
def test_queue_dir_whose_creation_crashed_before_its_first_commit_is_removed_not_leaked(
        tmp_path: Path, damage: str) -> None:
    """kill -9 before the first group commit may leave ``queue.json`` empty (or not renamed yet):
    nothing in that directory was ever confirmed (the commit fsyncs ``queue.json`` first), so
    recovery removes it instead of skipping it at every start and making the re-created queue a
    ``~2`` directory next to the orphan."""
    s = FileQueueStore(tmp_path, segment_size=64 * 1024, min_segment_size=64 * 1024)
    s.recover()
    q = FakeQueue("q")
    s.publish(q, q.entry(b"never confirmed"))
    s.close()
    qpath = tmp_path / "queues" / encode_name("/") / encode_name("q")
    meta = qpath / "queue.json"
    if damage == "empty":
        meta.write_bytes(b"")
    else:
        meta.unlink()
    s = FileQueueStore(tmp_path, segment_size=64 * 1024, min_segment_size=64 * 1024)
    assert s.recover() == {}
    assert not qpath.exists()
    s.publish(q, q.entry(b"again"))
    assert s.logs[("/", "q")].directory == str(qpath)
    s.close()
    s = FileQueueStore(tmp_path, segment_size=64 * 1024, min_segment_size=64 * 1024)
    assert [m.body for m in s.recover()[("/", "q")]] == [b"again"]
    s.close()
