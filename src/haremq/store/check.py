"""Offline verification of a data directory (``haremq store-check DATA_DIR``).

Read-only: every segment of every queue log is scanned with the same scanner recovery uses
(recovery.py), and the report lists record counts, live messages, torn tails and damage. Nothing
is repaired; a broker start does that. Run it on a stopped node (a running one may be mid-write).

Encrypted records (crypto.py): with the key ring (``--encryption-key-file`` or
``HAREMQ_ENCRYPTION_KEY``) every one is opened and its tag checked; a key id absent from the ring
or a key that fails every record of its id is reported as such ("wrong encryption key for key id
N"), never as damage. Without a key the structure is still checked and the key ids are listed.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import TextIO

from haremq.store import records as R
from haremq.store.crypto import EncryptionKeyError, RecordCipher, key_id_of, missing_key_message, wrong_key_message
from haremq.store.recovery import base_lsn_of, map_readonly, scan


@dataclasses.dataclass(slots=True)
class SegmentCheck:
    name: str
    size: int
    records: dict[str, int]
    end: int
    header_ok: bool
    torn_creation: bool
    torn_bytes: int  # garbage after the last valid record (a torn tail when nothing valid follows)
    damage: list[str]
    keys: dict[int, int] = dataclasses.field(default_factory=dict)  # encrypted records per key id
    key_errors: list[str] = dataclasses.field(default_factory=list)  # missing / wrong keys, failed tags

    @property
    def ok(self) -> bool:
        return self.header_ok and not self.damage and not self.key_errors


@dataclasses.dataclass(slots=True)
class QueueCheck:
    vhost: str
    name: str
    path: str
    segments: list[SegmentCheck] = dataclasses.field(default_factory=list)
    live_messages: int = 0
    quarantined: list[str] = dataclasses.field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(s.ok for s in self.segments)


@dataclasses.dataclass(slots=True)
class CheckReport:
    path: str
    queues: list[QueueCheck] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    keys_verified: bool = False  # a key ring was given: encrypted records were authenticated

    @property
    def ok(self) -> bool:
        return not self.problems and all(q.ok for q in self.queues)

    @property
    def bad_crcs(self) -> int:
        return sum(1 for q in self.queues for s in q.segments for d in s.damage if "crc" in d)

    @property
    def key_errors(self) -> list[str]:
        return [e for q in self.queues for s in q.segments for e in s.key_errors]

    def print(self, out: TextIO) -> None:
        out.write(f"data dir {self.path}: {len(self.queues)} queue logs\n")
        for p in self.problems:
            out.write(f"  PROBLEM {p}\n")
        for q in self.queues:
            total = sum(sum(s.records.values()) for s in q.segments)
            out.write(f"queue {q.vhost!r}/{q.name!r}: {len(q.segments)} segments, {total} records, "
                      f"{q.live_messages} live messages{'' if q.ok else '  DAMAGED'}\n")
            for s in q.segments:
                counts = ", ".join(f"{k} {v}" for k, v in s.records.items())
                out.write(f"  {s.name}: {s.size} bytes, end {s.end}, {counts}\n")
                if s.torn_creation:
                    out.write("    empty segment from a cut creation (recovery deletes it)\n")
                elif s.torn_bytes:
                    out.write(f"    {s.torn_bytes} bytes of torn tail\n")
                for d in s.damage:
                    out.write(f"    DAMAGE {d}\n")
                if s.keys:
                    out.write("    encrypted: " + ", ".join(f"key id {k}: {n} records" for k, n in s.keys.items())
                              + ("" if self.keys_verified else " (not verified: no key given)") + "\n")
                for e in s.key_errors:
                    out.write(f"    KEY ERROR {e}\n")
            for qf in q.quarantined:
                out.write(f"  quarantined file kept: {qf}\n")
        errors = self.key_errors
        if errors:
            out.write(f"ENCRYPTION KEY PROBLEM: {errors[0]}\n")
        out.write("OK\n" if self.ok else f"DAMAGED ({self.bad_crcs} bad CRCs)\n" if not errors else "FAILED\n")


def run(path: str | os.PathLike[str], out: TextIO, cipher: RecordCipher | None = None) -> int:
    """The ``haremq store-check DATA_DIR`` command: print the report; exit status 0 = clean, 1 = damage
    or an encryption key problem."""
    report = check_data_dir(path, cipher)
    report.print(out)
    return 0 if report.ok else 1


def check_segment(path: str, cipher: RecordCipher | None = None) -> tuple[SegmentCheck, list[tuple[int, int]]]:
    """Check one file (and, with ``cipher``, open every encrypted record); also returns (type,
    seq) of every valid record, in order."""
    name = os.path.basename(path)
    base = base_lsn_of(name) or 0
    buf = map_readonly(path)
    counts = {R.TYPE_NAMES[t]: 0 for t in sorted(R.TYPES)}
    recs: list[tuple[int, int]] = []
    keys: dict[int, int] = {}
    failed: dict[int, int] = {}
    try:
        res, it = scan(buf, base)
        for off, total, rtype, _lsn in it:
            counts[R.TYPE_NAMES[rtype]] += 1
            recs.append((rtype, R.SEQ.unpack_from(buf, off + R.REC_HEADER_SIZE)[0]))
            if rtype == R.ENC_PUBLISH:
                rec = bytes(buf[off:off + total])
                kid = key_id_of(rec)
                keys[kid] = keys.get(kid, 0) + 1
                if cipher is not None:
                    try:
                        cipher.open(rec)
                    except EncryptionKeyError:
                        failed[kid] = failed.get(kid, 0) + 1
        size = len(buf)
    finally:
        if not isinstance(buf, bytes):
            buf.close()
    damage = [f"offset {d.offset}: {d.reason}; "
              + ("nothing valid after it" if d.resumed_at is None else f"resumed at {d.resumed_at}")
              for d in res.damage]
    key_errors = []
    for kid, n in failed.items():
        if cipher is not None and kid not in cipher.keys:
            key_errors.append(missing_key_message(kid))
        elif n == keys[kid]:
            key_errors.append(f"{wrong_key_message(kid)}: all {n} records")
        else:
            key_errors.append(f"{n} of {keys[kid]} records under key id {kid} fail authentication (altered data)")
    return SegmentCheck(name, size, counts, res.end, res.header_ok or res.torn_creation, res.torn_creation,
                        res.garbage_bytes, damage, keys, key_errors), recs


def check_data_dir(path: str | os.PathLike[str], cipher: RecordCipher | None = None) -> CheckReport:
    """Verify every queue log under ``path`` (a broker data dir) without changing anything."""
    root = os.fspath(path)
    report = CheckReport(root, keys_verified=cipher is not None)
    qroot = os.path.join(root, "queues")
    if not os.path.isdir(qroot):
        report.problems.append(f"no queues directory in {root}")
        return report
    for vdir in sorted(os.listdir(qroot)):
        vpath = os.path.join(qroot, vdir)
        if vdir.startswith(".") or not os.path.isdir(vpath):
            continue
        for qdir in sorted(os.listdir(vpath)):
            qpath = os.path.join(vpath, qdir)
            if os.path.isdir(qpath):
                report.queues.append(_check_queue(qpath, report, cipher))
    return report


def _check_queue(qpath: str, report: CheckReport, cipher: RecordCipher | None) -> QueueCheck:
    try:
        with open(os.path.join(qpath, "queue.json"), encoding="utf-8") as f:
            meta = json.load(f)
        qc = QueueCheck(str(meta["vhost"]), str(meta["name"]), qpath)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        report.problems.append(f"{qpath}: unreadable queue.json ({exc})")
        qc = QueueCheck("?", os.path.basename(qpath), qpath)
    live: dict[int, bool] = {}
    for fname in sorted(os.listdir(qpath)):
        if ".quarantined" in fname:
            qc.quarantined.append(fname)
        if base_lsn_of(fname) is None:
            continue
        seg, recs = check_segment(os.path.join(qpath, fname), cipher)
        qc.segments.append(seg)
        for rtype, seq in recs:
            if rtype == R.PUBLISH or rtype == R.ENC_PUBLISH:
                live.setdefault(seq, True)
            elif rtype == R.REMOVE and seq in live:
                live[seq] = False
    qc.live_messages = sum(live.values())
    return qc
