"""A broker node: wires settings -> stores -> core -> listeners, and owns their lifetime.

All output goes through ``flush_output``: commands and timers queue frames on connections and
mark them; one pass at the end writes each marked connection once (``writelines``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import gc
import logging
import os
import shutil
import socket
import ssl
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import TYPE_CHECKING, Any, Protocol, cast

from haremq.config import Settings
from haremq.core.broker import Broker
from haremq.errors import HareError, StartupError
from haremq.protocol.amqp import codec
from haremq.security.auth import Authenticator
from haremq.security.users import UserStore
from haremq.server.definitions import Definitions
from haremq.server.durability import Durability, Waiter
from haremq.store.api import Positions, QueueId
from haremq.store.crypto import load_key_ring
from haremq.store.file import FileQueueStore
from haremq.store.lock import DataDirLock
from haremq.store.metadata import SqliteMetadataStore

if TYPE_CHECKING:
    from haremq.server.amqp import AmqpServerProtocol
    from haremq.server.http.listeners import HttpListeners
    from haremq.server.listener import ClientListener
    from haremq.server.stomp import StompServerProtocol

log = logging.getLogger("haremq")


class Writer(Protocol):
    """A connection with buffered output (AMQP, STOMP): ``flush_output`` writes it once per pass."""

    def write_pending(self) -> None: ...


class LatencyHistogram:
    """Cumulative histogram of durations in seconds (for /metrics), fixed buckets, O(1) observe."""

    BOUNDS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, float("inf"))

    def __init__(self) -> None:
        self.counts = [0] * len(self.BOUNDS)
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.total += seconds
        for i, bound in enumerate(self.BOUNDS):
            if seconds <= bound:
                self.counts[i] += 1
                return

    def cumulative(self) -> list[tuple[float, int]]:
        out, running = [], 0
        for bound, n in zip(self.BOUNDS, self.counts, strict=True):
            running += n
            out.append((bound, running))
        return out


# The broker allocates short-lived objects per message; the default generation-0 threshold (700)
# makes the cyclic GC run thousands of times a second and cost ~25% CPU (bench profile).
# Per-message objects form no cycles, so collect far less often.
GC_THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    """Tune the process's cyclic GC for a broker, once per process (``haremq serve`` and an in-process
    node in a test run the same way): collect what start-up left, freeze what survives (long-lived,
    never scanned again) and raise the thresholds."""
    if gc.get_threshold() == GC_THRESHOLDS:
        return  # another node of this process did it
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def listen_error(name: str, bind: str, port: int, exc: OSError) -> StartupError:
    """A listener that cannot bind, as one line naming it: "STOMP port 61613 in use"."""
    if exc.errno == errno.EADDRINUSE:
        return StartupError(f"{name} port {port} in use")
    if exc.errno == errno.EACCES:
        return StartupError(f"{name} port {port}: permission denied (ports below 1024 need privileges)")
    return StartupError(f"{name} cannot listen on {bind}:{port}: {exc.strerror or exc}")


async def compaction_pass(store: FileQueueStore, budget: int) -> int:
    """One compaction pass over about ``budget`` bytes of segments: each job snapshots on the
    loop, does its disk work on the store's worker thread, and commits back on the loop.
    If this task is cancelled mid-job (node stop) the job is simply never committed: the
    rewritten file is valid either way and ``store.close()`` waits for the thread."""
    worker = store.start_worker()
    loop = asyncio.get_running_loop()
    reclaimed = 0
    tried: set[object] = set()
    while budget > 0:
        job = store.next_compaction(tried)
        if job is None:
            break
        tried.add(job.seg)
        budget -= job.seg.write_pos
        await loop.run_in_executor(worker.executor, job.run)
        reclaimed += store.finish_compaction(job)
    return reclaimed


class Node:
    def __init__(self, settings: Settings, *, broker: Broker | None = None) -> None:
        self.settings = settings
        # one TLS context for every TLS listener, reloaded in place (server/tls.py); None: TLS is off.
        # Built first: a bad certificate is a start-up error before the data dir is touched.
        self.ssl_context: ssl.SSLContext | None = None
        if settings.tls_enabled:
            from haremq.server.tls import build_context

            self.ssl_context = build_context(settings)
        self._lock: DataDirLock | None = None
        if broker is None:
            try:
                os.makedirs(settings.data_dir, exist_ok=True)
            except OSError as exc:
                raise StartupError(f"data dir {settings.data_dir} is not writable: {exc.strerror}") from None
            # before anything reads or writes the directory: one broker per data dir
            self._lock = DataDirLock(settings.data_dir)
            try:
                broker = self._open_broker(settings)
            except BaseException:
                self._lock.release()
                raise
        self.broker = broker
        # every listener authenticates through this one service (security/auth.py)
        self.auth = Authenticator(broker.users, broker.clock, default_login=(
            (settings.stomp_default_user, settings.stomp_default_pass) if settings.stomp_default_user else None))
        self.definitions = Definitions(broker)
        # AMQP confirms and tx.commit-ok, STOMP receipts, HTTP answers: held until their log
        # positions are committed (server/durability.py)
        self.durability = Durability(self._released)
        self.disk_alarm = False
        self.memory_alarm = False
        self.sync_latency = LatencyHistogram()
        self._tasks: set[asyncio.Task[None]] = set()
        self.cluster_name = settings.node_name
        # client connections by protocol ("amqp", "stomp"); the listener base registers each one
        self.clients: dict[str, set[ClientListener]] = {"amqp": set(), "stomp": set()}
        # AMQP content headers decoded once for all connections: publishers repeat their properties
        self.amqp_properties = codec.PropertiesCache()
        self._pending: dict[Writer, None] = {}
        self._servers: list[asyncio.AbstractServer] = []
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.amqp_port = 0
        self.stomp_port: int | None = None  # None while STOMP is off
        self.http: HttpListeners | None = None  # SQS + management listeners (server/http)
        self.amqps_port: int | None = None  # None while TLS (or, for STOMPS, STOMP) is off
        self.stomps_port: int | None = None
        self.stopped = asyncio.Event()

    @staticmethod
    def _open_broker(settings: Settings) -> Broker:
        """Open the data directory: definitions from SQLite, messages from the segment logs."""
        cipher = load_key_ring(settings.encryption_key_file, settings.encryption_key)  # (a bad key file: first)
        metadata = SqliteMetadataStore(settings.data_dir)
        store = FileQueueStore(settings.data_dir, fsync=settings.fsync, sync_interval=settings.fsync_interval,
                               segment_size=settings.segment_size, cipher=cipher)
        broker = Broker(store=store, metadata=metadata, users=UserStore())
        broker.page_out_bytes = settings.queue_memory_limit
        defs = metadata.load()
        broker.restore_definitions(defs)
        if not defs["users"]:
            user = broker.users.add(settings.default_user, settings.default_pass, tags=("administrator",),
                                    loopback_only=settings.default_user == "guest")
            metadata.save_user(user.name, user.password_hash, list(user.tags))
            metadata.save_permission(user.name, "/", ".*", ".*", ".*")
        started = time.monotonic()
        recovered = store.recover(load_bodies=False, body_budget=settings.queue_memory_limit)
        for (vhost, name), report in store.recovery_reports().items():
            if report.torn_bytes or report.quarantined:
                log.warning("recovery of queue %r in vhost %r: truncated a torn tail of %d bytes; quarantined %s",
                            name, vhost, report.torn_bytes, report.quarantined or "nothing")
        orphans = broker.restore_messages(recovered)
        for vhost, name in orphans:
            store.delete_queue(QueueId(vhost, name))
        count = sum(len(v) for v in recovered.values())
        if count:
            log.info("recovered %d messages in %d queues in %.2f s", count, len(recovered),
                     time.monotonic() - started)
        return broker

    # ---- client connections -----------------------------------------------------------------------
    @property
    def connections(self) -> set[AmqpServerProtocol]:
        """Open AMQP connections (management, metrics)."""
        return cast("set[AmqpServerProtocol]", self.clients["amqp"])

    @property
    def stomp_connections(self) -> set[StompServerProtocol]:
        """Open STOMP connections (management, metrics)."""
        return cast("set[StompServerProtocol]", self.clients["stomp"])

    def all_clients(self) -> Iterator[ClientListener]:
        """Every open client connection, of every protocol (a snapshot: safe to close them)."""
        for conns in self.clients.values():
            yield from list(conns)

    def register(self, conn: ClientListener) -> None:
        self.clients.setdefault(conn.protocol, set()).add(conn)

    def unregister(self, conn: ClientListener) -> None:
        self.clients.get(conn.protocol, set()).discard(conn)

    def tls_context(self, listener: str) -> ssl.SSLContext | None:
        """The TLS context of a listener: the node's one context for the TLS listeners ("AMQPS",
        "STOMPS", "SQS HTTPS", "management HTTPS"), None (plain TCP) for the others.

        The one place every listener's ``create_server`` takes its context from.
        """
        from haremq.server.tls import TLS_LISTENERS

        return self.ssl_context if listener in TLS_LISTENERS else None

    def on_sighup(self) -> None:
        """The SIGHUP handler: reload TLS certificates in a task (the signal handler must not block)."""
        async def reload() -> None:
            await self.reload_tls()

        self._spawn(reload())

    async def reload_tls(self) -> bool:
        """SIGHUP: load the certificate and key files again into the live context (new handshakes use
        them); a bad file is logged and the current certificate stays. False when nothing was loaded."""
        if self.ssl_context is None:
            log.info("TLS reload requested, but TLS is not configured")
            return False
        from haremq.server.tls import reload_context

        return await reload_context(self.ssl_context, self.settings)

    async def listen(self, name: str, factory: Callable[[], asyncio.BaseProtocol], port: int
                     ) -> asyncio.Server:
        """Start a listener on ``bind:port`` (TLS when ``tls_context(name)`` gives one); a port in use
        or refused becomes one startup error naming the listener."""
        assert self._loop is not None
        s = self.settings
        ctx = self.tls_context(name)
        try:
            server = await self._loop.create_server(
                factory, host=s.bind, port=port, reuse_address=True, family=socket.AF_UNSPEC, backlog=1024,
                ssl=ctx, ssl_handshake_timeout=s.handshake_timeout if ctx is not None else None)
        except OSError as exc:
            raise listen_error(name, s.bind, port, exc) from None
        self._servers.append(server)
        return server

    def loop_time(self) -> float:
        assert self._loop is not None
        return self._loop.time()

    # ---- output -----------------------------------------------------------------------------------
    def want_flush(self, conn: Writer) -> None:
        self._pending[conn] = None

    def flush_output(self) -> None:
        while self._pending:
            pending = self._pending
            self._pending = {}
            for conn in pending:
                conn.write_pending()

    # ---- timers -----------------------------------------------------------------------------------
    def _on_schedule(self, deadline: float) -> None:
        """The core has a new earliest deadline (monotonic seconds): wake up then."""
        if self._loop is None:
            return
        if self._timer_at is not None and self._timer_at <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        delay = max(0.0, deadline - self.broker.clock.monotonic())
        self._timer_at = deadline
        self._timer = self._loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self._timer_at = None
        try:
            self.broker.run_timers()
        except Exception:
            log.exception("timer processing failed")
        self.flush_output()
        nxt = self.broker.next_deadline()
        if nxt is not None:
            self._on_schedule(nxt)

    # ---- lifecycle --------------------------------------------------------------------------------
    async def start(self) -> None:
        from haremq.server.amqp import AmqpServerProtocol

        self._loop = asyncio.get_running_loop()
        self.broker.on_schedule = self._on_schedule
        pending = self.broker.next_deadline()
        if pending is not None:  # timers of recovered queues (TTL heads, x-expires)
            self._on_schedule(pending)
        s = self.settings
        server = await self.listen("AMQP", lambda: AmqpServerProtocol(self), s.amqp_port)
        self.amqp_port = server.sockets[0].getsockname()[1]
        log.info("AMQP listening on %s:%d", s.bind, self.amqp_port)
        if s.stomp_enabled:
            from haremq.server.stomp import StompServerProtocol

            stomp = await self.listen("STOMP", lambda: StompServerProtocol(self), s.stomp_port)
            self.stomp_port = stomp.sockets[0].getsockname()[1]
            log.info("STOMP listening on %s:%d", s.bind, self.stomp_port)
        if self.ssl_context is not None:
            amqps = await self.listen("AMQPS", lambda: AmqpServerProtocol(self), s.amqps_port)
            self.amqps_port = amqps.sockets[0].getsockname()[1]
            log.info("AMQPS listening on %s:%d", s.bind, self.amqps_port)
            if s.stomp_enabled:
                from haremq.server.stomp import StompServerProtocol

                stomps = await self.listen("STOMPS", lambda: StompServerProtocol(self), s.stomps_port)
                self.stomps_port = stomps.sockets[0].getsockname()[1]
                log.info("STOMPS listening on %s:%d", s.bind, self.stomps_port)
        from haremq.server.http.listeners import HttpListeners

        self.http = await HttpListeners.start(self)
        flusher = getattr(self.broker.store, "flusher", None)
        if flusher is not None:
            self._spawn(self._flush_loop(flusher))
            self._spawn(self._maintain_loop())
        tune_gc()

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _flush_loop(self, flusher: Any) -> None:
        """Group commit: fsync dirty segments off the loop, then release the confirms they hold."""
        wake = asyncio.Event()
        flusher.on_dirty = wake.set
        loop = asyncio.get_running_loop()
        store = self.broker.store
        last_sync = 0.0
        while True:
            await wake.wait()
            wake.clear()
            delay = flusher.delay
            if delay is None:
                store.sync()  # type: ignore[attr-defined]  # fsync off: no disk wait, but clears the dirty set
                await asyncio.sleep(0)  # always yield: an Event that is already set does not
            else:
                # interval: at most one fsync per interval, but a lone write after a quiet spell is
                # synced at once instead of waiting out a whole interval
                wait = delay - (loop.time() - last_sync)
                if wait > 0:
                    await asyncio.sleep(wait)
                last_sync = loop.time()
                started = time.perf_counter()
                # definitions written before these messages (a queue's declare) are durable before
                # their confirms: a confirmed message never outlives its queue's definition
                definitions = self.broker.metadata.pending()
                try:
                    await loop.run_in_executor(None, store.sync)  # type: ignore[attr-defined]
                    if definitions is not None:
                        await asyncio.wrap_future(definitions)
                    self.sync_latency.observe(time.perf_counter() - started)
                except HareError as exc:
                    log.error("the store cannot make messages durable; persistent publishes are refused "
                              "from now on: %s", exc)
                    self.broker.store_failed = self.broker.store_broken = True
                    self.fail_confirms(exc)
                    return
            self.release_confirms()
            if flusher.pending:
                wake.set()

    @property
    def waiting(self) -> dict[Waiter, None]:
        """AMQP channels and STOMP connections holding answers for the disk."""
        return self.durability.waiting

    def _released(self, w: Waiter) -> None:
        self.want_flush(w.conn)

    async def wait_durable(self, positions: Positions) -> None:
        """Until the log positions a request wrote are committed (HTTP answers wait on this)."""
        await self.durability.wait(positions)

    def fail_confirms(self, err: HareError) -> None:
        """Everything waiting for the disk is refused: nacks, STOMP ERRORs, HTTP 503s."""
        self.durability.fail(err)
        self.flush_output()

    def release_confirms(self) -> None:
        """A group commit is done (and the definitions written before it): move the logs'
        committed positions and release the answers waiting for them."""
        self.durability.committed(self.broker.store.advance_commits())
        self.flush_output()

    @property
    def publishers_blocked(self) -> bool:
        """Any resource alarm is on: publishing connections of every protocol are held back."""
        return self.disk_alarm or self.memory_alarm

    def disk_free(self) -> int | None:
        """Free bytes on the data dir's filesystem (statvfs: no disk I/O, fine on the loop)."""
        try:
            return shutil.disk_usage(self.settings.data_dir).free
        except OSError:
            return None

    def check_disk(self) -> None:
        """Disk alarm as RabbitMQ's: below ``disk_free_limit`` publishers are held back (AMQP:
        connection.blocked and not read; STOMP: not read after a SEND; SQS: sends get 503) until
        space returns. Not advisory: a confirm while the disk fills would be a promise we cannot keep."""
        free = self.disk_free()
        if free is None:
            return
        low = free < self.settings.disk_free_limit
        if low and not self.disk_alarm:
            log.warning("disk alarm: %d bytes free in %s, below disk_free_limit %d; publishers blocked", free,
                        self.settings.data_dir, self.settings.disk_free_limit)
        elif not low and self.disk_alarm:
            log.info("disk alarm cleared: %d bytes free", free)
            self.broker.store_failed = False
        if low != self.disk_alarm:
            self.disk_alarm = low
            self._alarms_changed()

    def memory_limit(self) -> int:
        w = self.settings.memory_high_watermark
        if w > 1:
            return int(w)
        return int(w * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))

    def memory_used(self) -> int:
        """What the broker holds in RAM for its clients: message bodies and index entries of every
        queue, connection buffers. Unlike the RSS (which never shrinks after a backlog drains),
        this falls when messages leave, so the alarm clears."""
        used = 0
        for vhost in self.broker.vhosts.values():
            for q in vhost.queues.values():
                used += q.memory_estimate()
        for conn in self.all_clients():
            used += conn.buffered_bytes()
        return used

    def check_memory(self) -> None:
        """Memory alarm as RabbitMQ's: above the high watermark, publishing connections are not read
        (and told connection.blocked) until memory falls below it again."""
        used = self.memory_used()
        limit = self.memory_limit()
        high = used > limit
        if high == self.memory_alarm:
            return
        self.memory_alarm = high
        if high:
            log.warning("memory alarm: %d bytes held, above the high watermark %d; publishers blocked",
                        used, limit)
        else:
            log.info("memory alarm cleared: %d bytes held", used)
        self._alarms_changed()

    def _alarms_changed(self) -> None:
        """connection.blocked while any alarm is on, unblocked when all are off; publishing
        connections (AMQP, STOMP) stop being read, and read again."""
        blocked = self.publishers_blocked
        reason = "low on disk space" if self.disk_alarm else "low on memory"
        for conn in self.all_clients():
            conn.apply_alarms(self.memory_alarm, self.disk_alarm)
        for amqp_conn in list(self.connections):
            amqp_conn.send_blocked(blocked, reason)
        self.flush_output()

    async def _maintain_loop(self) -> None:
        """Now and then, compact mostly-acked segments so one slow message cannot pin the disk,
        and watch free disk space."""
        store = self.broker.store
        maintain = getattr(store, "maintain", None)
        if isinstance(store, FileQueueStore):
            store.start_worker()  # compaction, preallocation and directory removal off the loop
        while maintain is not None:
            for _ in range(5):
                self.check_disk()
                self.check_memory()
                await asyncio.sleep(1)
            try:
                if isinstance(store, FileQueueStore):
                    await compaction_pass(store, 64 * 1024 * 1024)
                else:
                    maintain(64 * 1024 * 1024)
            except (HareError, OSError) as exc:
                log.warning("store maintenance failed: %s", exc)

    async def stop(self) -> None:
        for server in self._servers:
            server.close()
        if self.http is not None:
            await self.http.stop()
        # give clients a moment to answer close-ok (STOMP: read the ERROR), then drop what is left
        for conn in self.all_clients():
            conn.shutdown(grace=1.0)
        for _ in range(20):
            if not any(self.clients.values()):
                break
            await asyncio.sleep(0.05)
        for conn in self.all_clients():
            conn.abort()
        for server in self._servers:
            await server.wait_closed()
        if self._timer is not None:
            self._timer.cancel()
        for task in list(self._tasks):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.broker.store.close()
        self.broker.metadata.close()
        if self._lock is not None:
            self._lock.release()
        self.stopped.set()
