"""The definitions command layer: durable first, then memory; subscribers see every durable change
(commands and core declares) with its revision."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from haremq.core.broker import Broker
from haremq.security.users import Permission, hash_password
from haremq.server.definitions import Definitions
from haremq.store.api import Change
from haremq.store.metadata import SqliteMetadataStore


def test_commands_persist_then_apply_and_tell_subscribers_their_revision(tmp_path: Path) -> None:
    store = SqliteMetadataStore(tmp_path)
    broker = Broker(metadata=store)
    defs = Definitions(broker)
    seen: list[tuple[int, list[str]]] = []

    def watcher(revision: int, changes: Sequence[Change]) -> None:
        assert store.durable_revision >= revision  # called once the change is durable
        seen.append((revision, [f"{c.op} {c.kind}" for c in changes]))

    async def run() -> list[int]:
        defs.subscribe(watcher)
        broker.metadata.save_queue("/", broker.vhosts["/"].exchanges["amq.direct"])  # a core declare
        await defs.settle()
        return [
            await defs.put_user("ann", hash_password("pw"), ["management"], {"AKANN": "secret"}),
            await defs.put_vhost("v1", broker.users.users["ann"]),
            await defs.set_permission("ann", "/", Permission("", "w", "r")),
            await defs.clear_permission("ann", "v1"),
            await defs.delete_vhost("v1"),
        ]

    revs = asyncio.run(run())
    assert revs == sorted(revs) and len(set(revs)) == 5 and revs[-1] == defs.revision
    assert [s[1] for s in seen] == [["put queue"], ["put user", "put access_key"], ["put vhost", "put permission"],
                                    ["put permission"], ["delete permission"], ["delete vhost"]]
    assert [s[0] for s in seen[1:]] == revs
    ann = broker.users.users["ann"]
    assert ann.permissions == {"/": Permission("", "w", "r")} and ann.access_keys == {"AKANN": "secret"}
    assert "v1" not in broker.vhosts
    store.close()
    reopened = SqliteMetadataStore(tmp_path)
    restarted = Broker(metadata=reopened)
    restarted.restore_definitions(reopened.load())
    again = restarted.users.users["ann"]
    assert (again.password_hash, again.tags, again.permissions, again.access_keys) == \
        (ann.password_hash, ann.tags, ann.permissions, ann.access_keys)
    assert reopened.revision == revs[-1]
    reopened.close()
