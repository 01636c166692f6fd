"""Encryption at rest (store/crypto.py): sealed PUBLISH records, a missing or wrong key stops
recovery without touching data, torn tails and damage still repair, rotation and rewrap, the
offline checker names a wrong key."""

from __future__ import annotations

import io
import os
import random
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from store_fakes import FakeProps, FakeQueue

from haremq import cli
from haremq.config import load
from haremq.errors import ConfigError
from haremq.store import records as R
from haremq.store.check import check_data_dir, run
from haremq.store.crypto import (
    OVERHEAD,
    EncryptionKeyError,
    RecordCipher,
    key_id_of,
    load_key_ring,
    new_key_line,
    parse_key_ring,
)
from haremq.store.file import FileQueueStore, encode_name
from haremq.store.recovery import scan
from haremq.store.rewrap import rewrap_data_dir

KiB = 1024
SEG = 8 * KiB
SECRET = b"TOP-SECRET-BODY-7f3a9c"
KEYS = {kid: new_key_line(kid) for kid in (5, 6)}


def ring(*kids: int, wrong: bool = False) -> RecordCipher:
    text = ", ".join(new_key_line(k) if wrong else KEYS[k] for k in kids)
    cipher = load_key_ring(key_text=text)
    assert cipher is not None
    return cipher


def make(path: Path, cipher: RecordCipher | None) -> FileQueueStore:
    s = FileQueueStore(path, segment_size=SEG, min_segment_size=SEG, fsync="off", cipher=cipher)
    s.recover()
    return s


def qdir(path: Path) -> Path:
    return path / "queues" / encode_name("/") / encode_name("q")


def files(path: Path) -> dict[str, bytes]:
    """Every file under the data dir, by relative path (to prove nothing was changed)."""
    out = {}
    for root, _dirs, names in os.walk(path):
        for n in names:
            p = os.path.join(root, n)
            out[os.path.relpath(p, path)] = Path(p).read_bytes()
    return out


def build(path: Path, n: int, seed: int, cipher: RecordCipher | None) -> dict[int, bytes]:
    rnd = random.Random(seed)
    s = make(path, cipher)
    q = FakeQueue("q")
    bodies: dict[int, bytes] = {}
    for _ in range(n):
        e = q.entry(SECRET + rnd.randbytes(rnd.randint(0, 700)))
        s.publish(q, e)
        bodies[e.seq] = e.msg.body
    s.close()
    return bodies


def recovered(path: Path, cipher: RecordCipher | None) -> dict[int, bytes]:
    s = make(path, cipher)
    try:
        return {m.seq: m.body or b"" for m in s.recover().get(("/", "q"), [])}
    finally:
        s.close()


def key_ids(path: Path) -> list[int | None]:
    """The key id of every PUBLISH record on disk, in log order (None = plain)."""
    out: list[int | None] = []
    for name in sorted(f for f in os.listdir(qdir(path)) if f.endswith(".seg")):
        buf = (qdir(path) / name).read_bytes()
        _res, recs = scan(buf, int(name[:20]))
        for off, total, rtype, _lsn in recs:
            if rtype == R.ENC_PUBLISH:
                out.append(key_id_of(buf[off:off + total]))
            elif rtype == R.PUBLISH:
                out.append(None)
    return out


# ---- confidentiality --------------------------------------------------------------------------
def test_known_body_exchange_and_headers_never_appear_in_clear_in_segment_files(tmp_path: Path) -> None:
    def write(path: Path, cipher: RecordCipher | None) -> bytes:
        s = make(path, cipher)
        q = FakeQueue("q")
        s.publish(q, q.entry(SECRET, exchange="secret-exchange", routing_key="secret.route",
                             props=FakeProps(headers={"x-secret": "header-value-42"})))
        s.close()
        return b"".join(files(path / "queues").values())

    plain = write(tmp_path / "plain", None)  # the detector works: a plain log has them in clear
    assert SECRET in plain and b"secret-exchange" in plain and b"header-value-42" in plain
    enc = write(tmp_path / "enc", ring(5))
    for needle in (SECRET, b"secret-exchange", b"secret.route", b"header-value-42"):
        assert needle not in enc
    s = make(tmp_path / "enc", ring(5))
    try:
        [m] = s.recover(load_bodies=False)[("/", "q")]
        assert m.body is None and m.exchange == "secret-exchange" and m.routing_key == "secret.route"
        assert m.props["headers"] == {"x-secret": "header-value-42"}
        q = FakeQueue("q")
        assert s.read_body(q, m.seq) == SECRET  # paged-out body read back from the mmap
        assert s.read_message(q, m.seq).body == SECRET
    finally:
        s.close()


def test_encrypted_record_is_the_plain_record_plus_a_fixed_overhead(tmp_path: Path) -> None:
    build(tmp_path / "p", 1, 1, None)
    build(tmp_path / "e", 1, 1, ring(5))
    (name,) = [f for f in os.listdir(qdir(tmp_path / "p")) if f.endswith(".seg")]
    sizes = []
    for sub in ("p", "e"):
        buf = (qdir(tmp_path / sub) / name).read_bytes()
        _res, recs = scan(buf, 1)
        sizes.append([total for _o, total, _t, _l in recs])
    assert [s + OVERHEAD for s in sizes[0]] == sizes[1]


# ---- missing and wrong keys -------------------------------------------------------------------
def test_recovery_without_a_key_refuses_naming_the_key_id_and_changes_nothing(tmp_path: Path) -> None:
    build(tmp_path, 30, 2, ring(5))
    before = files(tmp_path)
    with pytest.raises(EncryptionKeyError, match="encrypted \\(key id 5\\) and no encryption key"):
        make(tmp_path, None)
    assert files(tmp_path) == before


def test_recovery_with_a_key_ring_lacking_the_id_names_the_missing_key_id(tmp_path: Path) -> None:
    build(tmp_path, 5, 3, ring(5))
    with pytest.raises(EncryptionKeyError, match="encryption key id 5, which is not in the key ring"):
        make(tmp_path, ring(6))


def test_wrong_key_stops_recovery_without_truncating_or_quarantining(tmp_path: Path) -> None:
    bodies = build(tmp_path, 40, 4, ring(5))
    segs = sorted(f for f in os.listdir(qdir(tmp_path)) if f.endswith(".seg"))
    assert len(segs) > 1
    # a torn tail in the newest segment too: with the wrong key even that is left alone
    last = qdir(tmp_path) / segs[-1]
    raw = bytearray(last.read_bytes())
    end = raw.rstrip(b"\0").__len__()
    raw[end:end + 20] = b"\x55" * 20
    last.write_bytes(bytes(raw))
    before = files(tmp_path)
    with pytest.raises(EncryptionKeyError, match="wrong encryption key for key id 5"):
        make(tmp_path, ring(5, wrong=True))
    assert files(tmp_path) == before
    assert not [f for f in os.listdir(qdir(tmp_path)) if "quarantined" in f]
    assert recovered(tmp_path, ring(5)) == bodies  # the right key: everything is there


# ---- crashes with encryption on ---------------------------------------------------------------
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32), frac=st.floats(0, 1), mode=st.sampled_from(["zero", "truncate", "garbage"]))
def test_encrypted_torn_tail_keeps_every_record_before_it(tmp_path_factory: pytest.TempPathFactory, seed: int,
                                                          frac: float, mode: str) -> None:
    path = tmp_path_factory.mktemp("torn")
    cipher = ring(5)
    bodies = build(path, 40, seed, cipher)
    name = sorted(f for f in os.listdir(qdir(path)) if f.endswith(".seg"))[-1]
    f = qdir(path) / name
    buf = f.read_bytes()
    _res, it = scan(buf, int(name[:20]))
    recs = [(R.SEQ.unpack_from(buf, off + R.REC_HEADER_SIZE)[0], off + total) for off, total, _t, _l in it]
    end_used = recs[-1][1] if recs else R.FILE_HEADER_SIZE
    cut = R.FILE_HEADER_SIZE + int(frac * (end_used - R.FILE_HEADER_SIZE))
    with open(f, "r+b") as fh:
        if mode == "zero":
            fh.seek(cut)
            fh.write(bytes(len(buf) - cut))
        elif mode == "truncate":
            fh.truncate(cut)
        else:
            fh.seek(cut)
            fh.write(random.Random(seed).randbytes(min(37, len(buf) - cut)))
    earlier = set(bodies) - {s for s, _e in recs}
    must = earlier | {s for s, e in recs if e <= cut}
    got = recovered(path, cipher)
    assert must <= set(got) <= set(bodies)
    assert all(got[s] == bodies[s] for s in got)
    assert recovered(path, cipher) == got


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32), data=st.data())
def test_encrypted_bit_flips_never_yield_a_corrupted_body(tmp_path_factory: pytest.TempPathFactory, seed: int,
                                                          data: st.DataObject) -> None:
    path = tmp_path_factory.mktemp("flip")
    cipher = ring(5)
    bodies = build(path, 30, seed, cipher)
    segs = sorted(f for f in os.listdir(qdir(path)) if f.endswith(".seg"))
    f = qdir(path) / data.draw(st.sampled_from(segs))
    raw = bytearray(f.read_bytes())
    used = len(bytes(raw).rstrip(b"\0"))
    off = data.draw(st.integers(0, used - 1))
    raw[off] ^= 1 << data.draw(st.integers(0, 7))
    f.write_bytes(bytes(raw))
    got = recovered(path, cipher)  # damage (bad CRC) is repaired, never mistaken for a wrong key
    assert set(got) <= set(bodies)
    assert all(got[s] == bodies[s] for s in got)


# ---- rotation and rewrap ----------------------------------------------------------------------
def test_rotation_new_writes_use_the_new_key_old_records_stay_readable(tmp_path: Path) -> None:
    old = build(tmp_path, 10, 5, ring(5))
    s = make(tmp_path, ring(5, 6))  # key 6 appended: the active key
    q = FakeQueue("q", next_seq=max(old) + 1)
    new = {}
    for i in range(10):
        e = q.entry(b"new-%d" % i)
        s.publish(q, e)
        new[e.seq] = e.msg.body
    s.close()
    assert key_ids(tmp_path) == [5] * 10 + [6] * 10
    assert recovered(tmp_path, ring(5, 6)) == old | new
    with pytest.raises(EncryptionKeyError, match="key id 5"):  # key 5 still needed until the rewrap
        make(tmp_path, ring(6))

    report = rewrap_data_dir(tmp_path, ring(5, 6))
    assert report.records_resealed == 10 and report.records_encrypted == 0 and not report.skipped
    assert key_ids(tmp_path) == [6] * 20
    assert recovered(tmp_path, ring(6)) == old | new  # key 5 can be dropped now


def test_plain_records_stay_readable_after_encryption_is_turned_on_and_rewrap_seals_them(tmp_path: Path) -> None:
    plain = build(tmp_path, 10, 6, None)
    s = make(tmp_path, ring(5))
    q = FakeQueue("q", next_seq=max(plain) + 1)
    e = q.entry(b"sealed")
    s.publish(q, e)
    assert s.read_body(q, min(plain)) == plain[min(plain)]  # plain record, encrypted store
    assert s.read_body(q, e.seq) == b"sealed"
    s.maintain()
    s.close()
    assert key_ids(tmp_path) == [None] * 10 + [5]
    assert recovered(tmp_path, ring(5)) == plain | {e.seq: b"sealed"}
    report = rewrap_data_dir(tmp_path, ring(5))
    assert report.records_encrypted == 10
    assert key_ids(tmp_path) == [5] * 11
    assert SECRET not in b"".join(files(tmp_path).values())
    assert recovered(tmp_path, ring(5)) == plain | {e.seq: b"sealed"}


def test_store_rewrap_command_refuses_without_a_key_and_rewraps_with_one(tmp_path: Path,
                                                                        capsys: pytest.CaptureFixture[str]) -> None:
    build(tmp_path, 5, 7, ring(5))
    keyfile = tmp_path / "keys"
    keyfile.write_text(f"{KEYS[5]}\n# rotated\n{KEYS[6]}\n")
    env = {k: os.environ.pop(k) for k in ("HAREMQ_ENCRYPTION_KEY", "HAREMQ_ENCRYPTION_KEY_FILE") if k in os.environ}
    try:
        assert cli.main(["store-rewrap", str(tmp_path)]) == 2
        assert "no encryption key" in capsys.readouterr().err
        assert cli.main(["store-rewrap", str(tmp_path), "--encryption-key-file", str(keyfile)]) == 0
        assert "5 records re-encrypted" in capsys.readouterr().out
    finally:
        os.environ.update(env)
    assert key_ids(tmp_path) == [6] * 5


# ---- the offline checker ----------------------------------------------------------------------
def test_store_check_names_a_wrong_key_and_passes_with_the_right_one(tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    build(tmp_path, 10, 8, ring(5))
    out = io.StringIO()
    assert run(tmp_path, out, ring(5, wrong=True)) == 1
    assert "wrong encryption key for key id 5" in out.getvalue()
    assert "bad crc" not in out.getvalue().lower()
    assert check_data_dir(tmp_path, ring(5)).ok
    out = io.StringIO()
    assert run(tmp_path, out, ring(6)) == 1
    assert "key id 5, which is not in the key ring" in out.getvalue()
    out = io.StringIO()
    assert run(tmp_path, out) == 0  # without a key: structure only, and it says so
    assert "not verified: no key given" in out.getvalue()
    keyfile = tmp_path / "wrong.keys"
    keyfile.write_text(new_key_line(5) + "\n")
    assert cli.main(["store-check", str(tmp_path), "--encryption-key-file", str(keyfile)]) == 1
    assert "wrong encryption key for key id 5" in capsys.readouterr().out


def test_store_check_tells_an_altered_record_from_a_wrong_key(tmp_path: Path) -> None:
    build(tmp_path, 10, 9, ring(5))
    name = sorted(f for f in os.listdir(qdir(tmp_path)) if f.endswith(".seg"))[0]
    f = qdir(tmp_path) / name
    buf = bytearray(f.read_bytes())
    _res, it = scan(bytes(buf), int(name[:20]))
    off, total, _t, _l = list(it)[1]
    buf[off + total - 1] ^= 1  # flip a tag bit, then fix the CRC: only authentication can notice
    R.REC_PREFIX.pack_into(buf, off, total - 8, R.crc(buf[off + 8:off + total]))
    f.write_bytes(bytes(buf))
    errors = check_data_dir(tmp_path, ring(5)).key_errors
    assert len(errors) == 1 and re.fullmatch(r"1 of \d+ records under key id 5 fail authentication \(altered data\)",
                                             errors[0]), errors
    # recovery opens every live record (properties and routing are sealed too): the altered one
    # stops it, named as altered (not as a wrong key, not as damage), and nothing is changed
    before = files(tmp_path)
    seq = R.SEQ.unpack_from(buf, off + R.REC_HEADER_SIZE)[0]
    with pytest.raises(EncryptionKeyError, match=f"message {seq} fails authentication under key id 5.*altered"):
        make(tmp_path, ring(5))
    assert files(tmp_path) == before


# ---- the key ring ------------------------------------------------------------------------------
def test_key_ring_last_entry_is_active_and_bad_entries_are_named() -> None:
    assert RecordCipher(parse_key_ring(f"# comment\n{KEYS[6]}\n{KEYS[5]}\n", "f")).active_id == 5
    for text, err in [("", "no key"), ("5 abc", "not 'ID: BASE64-KEY'"), ("x: aaaa", "not a number"),
                      ("5: !!!", "not valid base64"), ("5: AAAA", "3 bytes, AES-256 needs 32"),
                      (f"{KEYS[5]}\n{KEYS[5]}", "appears twice"), ("0: AAAA", "not between 1")]:
        with pytest.raises(EncryptionKeyError, match=err):
            parse_key_ring(text, "f")


def test_nonces_never_repeat_within_a_cipher() -> None:
    c = ring(5)
    nonces = {c.seal(0, lsn, R.SEQ.pack(lsn) + b"x")[12:24] for lsn in range(1, 5001)}
    assert len(nonces) == 5000


def test_key_file_and_key_setting_together_are_refused() -> None:
    with pytest.raises(ConfigError, match="both set"):
        load(env={"HAREMQ_ENCRYPTION_KEY": KEYS[5], "HAREMQ_ENCRYPTION_KEY_FILE": "/k"})
    settings_ = load(env={"HAREMQ_ENCRYPTION_KEY": KEYS[5]})
    assert KEYS[5].split(": ")[1] not in repr(settings_)  # a key never lands in a log line via repr
