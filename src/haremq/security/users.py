"""Users with salted SHA-256 password hashes and per-vhost permissions, as RabbitMQ models them.

The hash format is RabbitMQ's ``rabbit_password_hashing_sha256``: base64(salt(4) + sha256(salt +
password)), so definitions exported from RabbitMQ import here unchanged. Permissions are three
regular expressions per (user, vhost): configure, write, read, matched against resource names.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import os
import re
from typing import Literal

Access = Literal["configure", "write", "read"]


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = os.urandom(4) if salt is None else salt
    digest = hashlib.sha256(salt + password.encode("utf-8")).digest()
    return base64.b64encode(salt + digest).decode("ascii")


def check_password(password: str, password_hash: str) -> bool:
    try:
        raw = base64.b64decode(password_hash.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        return False
    if len(raw) != 36:
        return False
    salt = raw[:4]
    return hmac.compare_digest(raw, salt + hashlib.sha256(salt + password.encode("utf-8")).digest())


@dataclasses.dataclass(slots=True)
class Permission:
    configure: str = ".*"
    write: str = ".*"
    read: str = ".*"
    _compiled: dict[str, re.Pattern[str]] = dataclasses.field(default_factory=dict, repr=False)

    def allows(self, access: Access, resource: str) -> bool:
        pattern = self._compiled.get(access)
        if pattern is None:
            pattern = self._compiled[access] = re.compile(getattr(self, access))
        # RabbitMQ: an empty pattern denies everything; otherwise an unanchored match at the start
        return bool(getattr(self, access)) and pattern.match(resource) is not None


@dataclasses.dataclass(slots=True)
class User:
    name: str
    password_hash: str
    tags: tuple[str, ...] = ()
    loopback_only: bool = False
    permissions: dict[str, Permission] = dataclasses.field(default_factory=dict)
    # SigV4 access keys (SQS API): key id -> secret. SigV4 needs the secret itself, not a hash.
    access_keys: dict[str, str] = dataclasses.field(default_factory=dict)

    def can(self, vhost: str, access: Access, resource: str) -> bool:
        perm = self.permissions.get(vhost)
        return perm is not None and perm.allows(access, resource)


class UserStore:
    """In-memory user table; the metadata store persists it once the durable store exists."""

    def __init__(self) -> None:
        self.users: dict[str, User] = {}

    def add(self, name: str, password: str, *, tags: tuple[str, ...] = (), loopback_only: bool = False,
            vhosts: tuple[str, ...] = ("/",)) -> User:
        user = User(name, hash_password(password), tags, loopback_only)
        for vh in vhosts:
            user.permissions[vh] = Permission()
        self.users[name] = user
        return user

    def add_access_key(self, name: str, key_id: str, secret: str) -> None:
        """Give a user a SigV4 access key (key ids are unique across users)."""
        for u in self.users.values():
            u.access_keys.pop(key_id, None)
        self.users[name].access_keys[key_id] = secret

    def by_access_key(self, key_id: str) -> tuple[User, str] | None:
        """(user, secret) owning a SigV4 access key id."""
        for u in self.users.values():
            secret = u.access_keys.get(key_id)
            if secret is not None:
                return u, secret
        return None
