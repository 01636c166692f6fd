"""Encryption at rest: AES-256-GCM per PUBLISH record, a key ring with numbered keys.

Encrypted record (see the layout in records.py)::

    header in clear: length | crc32c | type = ENC_PUBLISH (0x81) | epoch | lsn
    payload:         u64 seq | u32 key id | 12-byte nonce | AES-GCM(rest of the PUBLISH payload) + 16-byte tag
    associated data: type | epoch | lsn | seq | key id   (record bytes 8..33)

What stays in clear and why: recovery must find record boundaries, LSNs and message seqs without
a key (to repair a torn tail, to rebuild the index, to report a *wrong* key instead of garbage), so
the header and the seq stay readable; they are authenticated as associated data, so none of them can
be altered or a record moved to another LSN without the tag failing. The CRC32C still covers the
whole record (ciphertext included): damage is told apart from a wrong key, since a wrong key
leaves the CRC valid and only fails the tag. Exchange, routing key, properties and body are
ciphertext. REMOVE and DELIVERED records carry nothing but the seq (already in clear in every
record) and stay plain, so acks cost the same with encryption on.

Nonces: 96 bits, never repeated under one key. Each ``RecordCipher`` draws a random 64-bit prefix
per key when it starts (and again after 2**32 records) and appends a 32-bit counter. Within one
process the counter makes nonces distinct; across processes (restarts, the rewrap tool) two
prefixes collide with probability about n**2 / 2**65 for n prefixes drawn, i.e. below 2**-25
even after a million restarts of a key's life. (A purely random 96-bit nonce would cost an
``os.urandom`` call per record and stay within NIST's 2**32-messages bound; a prefix + counter is
cheaper and has no such bound per process.) Rotate keys well before 2**32 restarts.

Key ring: a key file (``encryption_key_file``) or the ``encryption_key`` setting (env
``HAREMQ_ENCRYPTION_KEY``) holds one or more ``ID: BASE64`` entries (lines; in the setting, commas
also separate entries); ``ID`` is a number 1..4294967295, the key 32 bytes (AES-256); ``#`` starts
a comment. The *last* entry is the active key: new records are sealed with it; older ids stay only
to read what they sealed (``haremq store-rewrap`` moves old records to the active key).
"""

from __future__ import annotations

import base64
import binascii
import os
import struct

from haremq.errors import StartupError
from haremq.store import records as R

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
_U32 = struct.Struct("<I")
_AAD_HEAD = struct.Struct("<BIQ")  # type, epoch, lsn
KID_OFFSET = R.REC_HEADER_SIZE + 8  # 29: key id, after the seq
NONCE_OFFSET = KID_OFFSET + 4  # 33
CT_OFFSET = NONCE_OFFSET + NONCE_BYTES  # 45
OVERHEAD = 4 + NONCE_BYTES + TAG_BYTES  # 32 bytes more than the plain record


class EncryptionKeyError(StartupError):
    """The keys are unusable (a bad key file) or cannot read the data directory (missing or wrong key)."""


def parse_key_ring(text: str, source: str) -> dict[int, bytes]:
    """``ID: BASE64`` entries in order (the last is active). Raises EncryptionKeyError naming ``source``."""
    keys: dict[int, bytes] = {}
    for lineno, raw in enumerate(text.replace(",", "\n").splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        kid_s, sep, b64 = line.partition(":")
        if not sep:
            raise EncryptionKeyError(f"{source}: entry {lineno} is not 'ID: BASE64-KEY'")
        try:
            kid = int(kid_s.strip())
        except ValueError:
            raise EncryptionKeyError(f"{source}: entry {lineno}: key id {kid_s.strip()!r} is not a number") from None
        if not 1 <= kid <= 0xFFFF_FFFF:
            raise EncryptionKeyError(f"{source}: entry {lineno}: key id {kid} is not between 1 and 4294967295")
        try:
            key = base64.b64decode(b64.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise EncryptionKeyError(f"{source}: key id {kid}: not valid base64") from None
        if len(key) != KEY_BYTES:
            raise EncryptionKeyError(f"{source}: key id {kid}: {len(key)} bytes, AES-256 needs {KEY_BYTES}")
        if kid in keys:
            raise EncryptionKeyError(f"{source}: key id {kid} appears twice")
        keys[kid] = key
    if not keys:
        raise EncryptionKeyError(f"{source}: no key in it")
    return keys


def load_key_ring(key_file: str = "", key_text: str = "") -> RecordCipher | None:
    """The cipher for the configured keys, or None when encryption is off (no key given)."""
    if key_file and key_text:
        raise EncryptionKeyError("encryption_key_file and encryption_key are both set: use one")
    if key_file:
        try:
            with open(key_file, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise EncryptionKeyError(f"encryption_key_file: cannot read {key_file}: {exc.strerror}") from None
        return RecordCipher(parse_key_ring(text, f"encryption_key_file {key_file}"))
    if key_text:
        return RecordCipher(parse_key_ring(key_text, "encryption_key"))
    return None


def new_key_line(kid: int) -> str:
    """A fresh random key as a key-file line (for docs, tests and operators)."""
    return f"{kid}: {base64.b64encode(os.urandom(KEY_BYTES)).decode()}"


class RecordCipher:
    """Seals PUBLISH payloads with the active key and opens records under any key of the ring.

    ``seal`` runs on the event-loop thread only (appends); ``open`` on any thread (the AESGCM
    objects are stateless)."""

    __slots__ = ("_active", "_active_kid", "_aeads", "_counter", "_prefix", "active_id", "keys")

    def __init__(self, keys: dict[int, bytes]) -> None:
        if not keys:
            raise EncryptionKeyError("encryption: empty key ring")
        # imported here: a node without a key ring never loads the cipher library (memory, start time)
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.keys = dict(keys)
        self.active_id = list(keys)[-1]
        self._aeads = {kid: AESGCM(k) for kid, k in keys.items()}
        self._active = self._aeads[self.active_id]
        self._active_kid = _U32.pack(self.active_id)
        self._prefix = os.urandom(8)
        self._counter = 0

    def seal(self, epoch: int, lsn: int, payload: bytes, kid: int | None = None) -> bytes:
        """The ENC_PUBLISH payload for a plain PUBLISH ``payload`` written at (epoch, lsn), sealed
        with the active key (or ``kid``). Loop thread: the nonce counter is not locked."""
        if kid is None:
            aead, kid_b = self._active, self._active_kid
        else:
            aead, kid_b = self._aeads[kid], _U32.pack(kid)
        n = self._counter
        if n > 0xFFFF_FFFF:  # counter exhausted: a fresh random prefix (see the module docstring)
            self._prefix = os.urandom(8)
            n = 0
        self._counter = n + 1
        nonce = self._prefix + _U32.pack(n)
        clear = payload[:8] + kid_b  # seq | key id: in clear, authenticated
        return b"".join((clear, nonce, aead.encrypt(nonce, memoryview(payload)[8:],
                                                    _AAD_HEAD.pack(R.ENC_PUBLISH, epoch, lsn) + clear)))

    def open(self, rec: bytes) -> bytes:
        """A whole ENC_PUBLISH record -> the same record with the plain payload (type PUBLISH; its
        length and crc fields are left as they were: callers only parse past the header).
        Raises EncryptionKeyError for an unknown key id or a failed tag."""
        kid = _U32.unpack_from(rec, KID_OFFSET)[0]
        aead = self._aeads.get(kid)
        if aead is None:
            raise EncryptionKeyError(missing_key_message(kid))
        from cryptography.exceptions import InvalidTag

        try:
            pt = aead.decrypt(rec[NONCE_OFFSET:CT_OFFSET], rec[CT_OFFSET:], rec[8:NONCE_OFFSET])
        except InvalidTag:
            raise EncryptionKeyError(wrong_key_message(kid)) from None
        return b"".join((rec[:8], bytes((R.PUBLISH,)), rec[9:KID_OFFSET], pt))


def key_id_of(rec: bytes | memoryview) -> int:
    """The key id of a whole ENC_PUBLISH record."""
    return int(_U32.unpack_from(rec, KID_OFFSET)[0])


def missing_key_message(kid: int) -> str:
    return (f"the data is encrypted with encryption key id {kid}, which is not in the key ring "
            f"(encryption_key_file / HAREMQ_ENCRYPTION_KEY)")


def wrong_key_message(kid: int) -> str:
    return f"wrong encryption key for key id {kid} (the record's authentication tag does not match)"


def no_key_message(kid: int) -> str:
    return (f"the data is encrypted (key id {kid}) and no encryption key is configured: set "
            f"encryption_key_file (--encryption-key-file) or HAREMQ_ENCRYPTION_KEY")
