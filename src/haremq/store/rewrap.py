"""``haremq store-rewrap DATA_DIR``: re-encrypt every PUBLISH record with the active key, offline.

After a key rotation (a new last entry in the key file) new records use the new key while old
ones stay readable under their own key id. To retire an old key, stop the node and run this: every
PUBLISH record sealed with another key id, and every plain one (a data dir from before encryption
was turned on), is sealed again with the active key. Offline because it rewrites whole segment
files, which a running node has mapped and indexes by offset; it takes the data directory's
exclusive lock, so it cannot run next to a broker (and a broker cannot start during it).

Per segment that needs it: the same file header, every record in order with the same type flag
semantics, epoch and LSN (REMOVE / DELIVERED copied byte for byte), written to ``<name>.compact``
(a name a broker start removes as the leftover of a cut rewrite), fsynced, renamed over the
original, then the directory fsynced. A crash leaves the old or the new file, both complete. A
damaged segment (torn tail, bad CRC) is left alone and reported: start the broker once (recovery
repairs it), then run the rewrap again. Afterwards the old key may be removed from the key file.
"""

from __future__ import annotations

import dataclasses
import os
from typing import TextIO

from haremq.store import records as R
from haremq.store.crypto import RecordCipher, key_id_of
from haremq.store.recovery import base_lsn_of, map_readonly, scan
from haremq.store.segment import reserve


@dataclasses.dataclass(slots=True)
class RewrapReport:
    segments_rewritten: int = 0
    records_resealed: int = 0  # under an old key id before
    records_encrypted: int = 0  # plain before
    skipped: list[str] = dataclasses.field(default_factory=list)  # damaged segments left alone


def rewrap_data_dir(path: str | os.PathLike[str], cipher: RecordCipher) -> RewrapReport:
    """Re-seal every queue log under ``path`` with ``cipher``'s active key (the caller holds the
    data dir lock). Raises EncryptionKeyError when a record's key is missing or wrong (before that
    file is changed)."""
    report = RewrapReport()
    qroot = os.path.join(os.fspath(path), "queues")
    if not os.path.isdir(qroot):
        return report
    for vdir in sorted(os.listdir(qroot)):
        vpath = os.path.join(qroot, vdir)
        if vdir.startswith(".") or not os.path.isdir(vpath):
            continue
        for qdir in sorted(os.listdir(vpath)):
            qpath = os.path.join(vpath, qdir)
            if not os.path.isdir(qpath):
                continue
            for fname in sorted(os.listdir(qpath)):
                if base_lsn_of(fname) is not None:
                    _rewrap_segment(qpath, fname, cipher, report)
    return report


def _rewrap_segment(qpath: str, fname: str, cipher: RecordCipher, report: RewrapReport) -> None:
    path = os.path.join(qpath, fname)
    base = base_lsn_of(fname)
    assert base is not None
    buf = map_readonly(path)
    try:
        size = len(buf)
        res, it = scan(buf, base)
        recs = list(it)
        if res.torn_creation:
            return
        if res.damage or not res.header_ok:
            report.skipped.append(f"{path}: {res.damage[0].reason if res.damage else 'bad header'}")
            return
        chunks = [bytes(buf[:R.FILE_HEADER_SIZE])]
        resealed = encrypted = 0
        for off, total, rtype, lsn in recs:
            rec = bytes(buf[off:off + total])
            if rtype == R.ENC_PUBLISH and key_id_of(rec) != cipher.active_id:
                plain = cipher.open(rec)
                resealed += 1
            elif rtype == R.PUBLISH:
                plain = rec
                encrypted += 1
            else:
                chunks.append(rec)
                continue
            epoch = R.REC_HEADER.unpack_from(rec, 0)[3]
            payload = plain[R.REC_HEADER_SIZE:]
            chunks.append(R.encode_record(R.ENC_PUBLISH, epoch, lsn, cipher.seal(epoch, lsn, payload)))
    finally:
        if not isinstance(buf, bytes):
            buf.close()
    if not resealed and not encrypted:
        return
    used = sum(len(c) for c in chunks)
    tmp = path + ".compact"
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    fd = reserve(tmp, max(size, used))  # pre-sized like every segment (no sparse tail to SIGBUS on)
    try:
        pos = 0
        for c in chunks:
            view = memoryview(c)
            while view:
                n = os.pwrite(fd, view, pos)
                view = view[n:]
                pos += n
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(tmp, path)
    dfd = os.open(qpath, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    report.segments_rewritten += 1
    report.records_resealed += resealed
    report.records_encrypted += encrypted


def run(path: str | os.PathLike[str], cipher: RecordCipher, out: TextIO) -> int:
    """The command: rewrap, print a summary; exit status 0 = done, 1 = some segment skipped."""
    report = rewrap_data_dir(path, cipher)
    out.write(f"rewrapped {report.segments_rewritten} segments with key id {cipher.active_id}: "
              f"{report.records_resealed} records re-encrypted, {report.records_encrypted} plain records "
              f"encrypted\n")
    for s in report.skipped:
        out.write(f"  SKIPPED (damaged; start the broker once to repair, then run again): {s}\n")
    return 1 if report.skipped else 0
