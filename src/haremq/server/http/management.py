"""Management REST API (RabbitMQ-management-shaped), Prometheus ``/metrics`` and a small dashboard.

Routes are a table of (method, path pattern, handler, summary); the same table generates the
OpenAPI document at ``/api/openapi.json``. Path segments are split before percent-decoding, so
the default vhost is ``%2F`` as in RabbitMQ. Everything under ``/api`` needs HTTP basic auth
against the user store, or the dashboard's session cookie (the user needs the ``administrator``,
``management`` or ``monitoring`` tag; changes need ``administrator``). Input errors are 4xx;
nothing a client sends gives a 5xx.

Cross-site requests: a request whose ``Origin`` is not this host is refused (403), a body on a
state-changing call must be ``application/json`` (415; an HTML form cannot send that), and a
cookie-authenticated state change needs the session's ``X-CSRF-Token`` header. Listings are
filtered as RabbitMQ does: ``management`` users see only vhosts they have permissions on and only
their own connections and channels; ``monitoring`` and ``administrator`` users see everything.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime
import hmac
import inspect
import json
import logging
import math
import re
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, unquote, urlsplit

from haremq import __version__
from haremq.core.consumer import NoDeliveries, Session
from haremq.core.exchange import EXCHANGE_TYPES
from haremq.core.queue import PAGED, Queue
from haremq.errors import HareError, InternalError
from haremq.message import Message, Properties
from haremq.protocol.http import HttpRequest, HttpResponse
from haremq.security.access import may_open_vhost
from haremq.security.refusal import LoginRefused, Peer
from haremq.security.users import Permission, User, hash_password
from haremq.server.definitions import access_key_change, permission_change
from haremq.server.http.metrics import Metrics
from haremq.server.http.ui import DASHBOARD
from haremq.store.api import Change

if TYPE_CHECKING:
    from haremq.core.vhost import VHost
    from haremq.server.http.listeners import HttpListeners
    from haremq.server.node import Node

log = logging.getLogger("haremq.management")
VIEW_TAGS = ("administrator", "management", "monitoring", "policymaker")
SEE_ALL_TAGS = ("administrator", "monitoring")  # everyone else sees only their vhosts and connections
MAX_JSON_DEPTH = 32
SESSION_COOKIE = "haremq_session"
SESSION_TTL = 8 * 3600.0
MAX_SESSIONS = 10000
RATE_WINDOW = 5.0  # message rates: counters sampled at most this far apart (at least 1 s)
STATE_CHANGING = ("PUT", "POST", "DELETE", "PATCH")


class HttpError(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


# what a request handler may raise that becomes an error answer (never a 500)
_REFUSALS = (HttpError, HareError, KeyError, TypeError, ValueError, AttributeError, UnicodeError, OverflowError,
             RecursionError)


def _json(obj: Any, status: int = 200) -> HttpResponse:
    return HttpResponse(status, json.dumps(obj, default=_default).encode())


def _default(v: Any) -> Any:
    if isinstance(v, bytes | bytearray):
        return v.decode("utf-8", "replace")
    if isinstance(v, datetime.datetime):
        return int(v.timestamp())
    return str(v)


def _str(d: dict[str, Any], key: str, default: str | None = None) -> str:
    v = d.get(key, default)
    if not isinstance(v, str):
        raise HttpError(400, f"'{key}' must be a string")
    return v


def _bool(d: dict[str, Any], key: str, default: bool) -> bool:
    v = d.get(key, default)
    if not isinstance(v, bool):
        raise HttpError(400, f"'{key}' must be a boolean")
    return v


def _args(d: dict[str, Any]) -> dict[str, Any]:
    v = d.get("arguments", {})
    if not isinstance(v, dict):
        raise HttpError(400, "'arguments' must be an object")
    return v


def _finite(text: str) -> float:
    f = float(text)
    if not math.isfinite(f):
        raise HttpError(400, f"number out of range: {text[:40]}")
    return f


def _no_constant(text: str) -> Any:
    raise HttpError(400, f"{text} is not a JSON number")


def _too_deep(doc: Any) -> bool:
    stack = [(doc, 1)]
    while stack:
        v, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            return True
        if isinstance(v, dict):
            stack.extend((x, depth + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, depth + 1) for x in v)
    return False


@dataclasses.dataclass(slots=True)
class DashboardSession:
    """A dashboard login: the cookie names it; state changes also need ``csrf``."""

    user: str
    password_hash: str  # the session ends when the password changes
    csrf: str
    expires: float


Answer = HttpResponse | Awaitable[HttpResponse]  # awaitable: a change answered once it is durable
# method, pattern, handler, summary, access: None = public, False = view tag, True = administrator
Route = tuple[str, list[str], Callable[..., Answer], str, bool | None]


class ManagementApp:
    def __init__(self, node: Node, listeners: HttpListeners) -> None:
        self.node = node
        self.listeners = listeners
        self.broker = node.broker
        self.started = time.time()
        self.metrics = Metrics(node, listeners)
        self.sessions: dict[str, DashboardSession] = {}
        self._samples: dict[tuple[str, str], deque[tuple[float, tuple[int, ...]]]] = {}
        self.routes: list[Route] = []
        r = self._route
        r("POST", "/api/login", self.login, "Dashboard login: sets the session cookie", None)
        r("POST", "/api/logout", self.logout, "Dashboard logout: ends the session", None)
        r("GET", "/api/whoami", self.whoami, "The authenticated user")
        r("GET", "/api/healthchecks/node", self.healthcheck, "Node health check")
        r("GET", "/api/aliveness-test/{vhost}", self.aliveness, "Declare, publish and get a test message")
        r("GET", "/api/overview", self.overview, "Cluster-wide totals")
        r("GET", "/api/nodes", self.nodes, "Nodes")
        r("GET", "/api/vhosts", self.vhosts, "Virtual hosts")
        r("GET", "/api/vhosts/{vhost}", self.vhost_get, "One virtual host")
        r("PUT", "/api/vhosts/{vhost}", self.vhost_put, "Create a virtual host", True)
        r("DELETE", "/api/vhosts/{vhost}", self.vhost_delete, "Delete a virtual host", True)
        r("GET", "/api/queues", self.queues, "Queues with message counts and rates")
        r("GET", "/api/queues/{vhost}", self.queues, "Queues of a vhost")
        r("GET", "/api/queues/{vhost}/{name}", self.queue_get, "One queue")
        r("PUT", "/api/queues/{vhost}/{name}", self.queue_put, "Declare a queue", True)
        r("DELETE", "/api/queues/{vhost}/{name}", self.queue_delete, "Delete a queue", True)
        r("DELETE", "/api/queues/{vhost}/{name}/contents", self.queue_purge, "Purge a queue", True)
        r("GET", "/api/queues/{vhost}/{name}/get", self.queue_browse, "Browse messages without consuming")
        r("POST", "/api/queues/{vhost}/{name}/get", self.queue_browse, "Browse messages without consuming")
        r("GET", "/api/queues/{vhost}/{name}/bindings", self.queue_bindings, "Bindings to a queue")
        r("GET", "/api/exchanges", self.exchanges, "Exchanges")
        r("GET", "/api/exchanges/{vhost}", self.exchanges, "Exchanges of a vhost")
        r("GET", "/api/exchanges/{vhost}/{name}", self.exchange_get, "One exchange")
        r("PUT", "/api/exchanges/{vhost}/{name}", self.exchange_put, "Declare an exchange", True)
        r("DELETE", "/api/exchanges/{vhost}/{name}", self.exchange_delete, "Delete an exchange", True)
        r("POST", "/api/exchanges/{vhost}/{name}/publish", self.exchange_publish, "Publish a message", True)
        r("GET", "/api/bindings", self.bindings, "Bindings")
        r("GET", "/api/bindings/{vhost}", self.bindings, "Bindings of a vhost")
        r("POST", "/api/bindings/{vhost}/e/{source}/q/{name}", self.bind_queue, "Bind a queue", True)
        r("GET", "/api/bindings/{vhost}/e/{source}/q/{name}", self.bindings_between, "Bindings exchange->queue")
        r("DELETE", "/api/bindings/{vhost}/e/{source}/q/{name}/{props}", self.unbind_queue, "Unbind a queue", True)
        r("GET", "/api/connections", self.connections, "Client connections")
        r("GET", "/api/channels", self.channels, "AMQP channels")
        r("GET", "/api/consumers", self.consumers, "Consumers")
        r("GET", "/api/consumers/{vhost}", self.consumers, "Consumers of a vhost")
        r("GET", "/api/users", self.users, "Users", True)
        r("GET", "/api/users/{username}", self.user_get, "One user", True)
        r("PUT", "/api/users/{username}", self.user_put, "Create or update a user", True)
        r("DELETE", "/api/users/{username}", self.user_delete, "Delete a user", True)
        r("GET", "/api/permissions", self.permissions, "Permissions", True)
        r("GET", "/api/permissions/{vhost}/{username}", self.permission_get, "One permission", True)
        r("PUT", "/api/permissions/{vhost}/{username}", self.permission_put, "Set a permission", True)
        r("DELETE", "/api/permissions/{vhost}/{username}", self.permission_delete, "Clear a permission", True)
        r("GET", "/api/definitions", self.definitions_get, "Export definitions", True)
        r("POST", "/api/definitions", self.definitions_post, "Import definitions", True)

    def _route(self, method: str, pattern: str, handler: Callable[..., Answer], summary: str,
               admin: bool | None = False) -> None:
        self.routes.append((method, pattern.strip("/").split("/"), handler, summary, admin))

    # ---- dispatch --------------------------------------------------------------------------------
    def __call__(self, req: HttpRequest) -> Answer:
        path = req.path
        try:
            if not self._same_origin(req):
                raise HttpError(403, "cross-origin request refused")
            if path in ("/", "/index.html"):
                return HttpResponse(200, DASHBOARD.encode(), "text/html; charset=utf-8",
                                    [("Cache-Control", "no-store"), ("X-Frame-Options", "DENY")])
            if path in ("/metrics", "/metrics/per-object"):
                if self.node.settings.metrics_auth:
                    self._auth(req, False)
                return self._metrics(path == "/metrics/per-object" or self.node.settings.metrics_per_object)
            if path == "/api/openapi.json":
                return _json(self.openapi())
            out = self._api(req)
            return self._finish(req, out) if inspect.isawaitable(out) else out
        except _REFUSALS as e:
            return self._failure(req, e)

    async def _finish(self, req: HttpRequest, out: Awaitable[HttpResponse]) -> HttpResponse:
        try:
            return await out
        except _REFUSALS as e:
            return self._failure(req, e)

    def _failure(self, req: HttpRequest, e: Exception) -> HttpResponse:
        if isinstance(e, HttpError):
            out = _json({"error": "bad_request" if e.status == 400 else "not_authorized" if e.status == 401
                         else "error", "reason": e.reason}, e.status)
            if e.status == 401 and self._wants_basic(req):
                out.headers.append(("WWW-Authenticate", 'Basic realm="haremq"'))
            return out
        if isinstance(e, HareError):
            # a failed definitions write (InternalError) is ours, not the client's: 503, nothing answered as kept
            status = (404 if e.reply_code == 404 else 403 if e.reply_code in (403, 530)
                      else 503 if isinstance(e, InternalError) else 400)
            return _json({"error": e.reply_name.lower(), "reason": e.text}, status)
        if isinstance(e, RecursionError):
            return _json({"error": "bad_request", "reason": "input nested too deeply"}, 400)
        log.debug("bad management request %s %s: %r", req.method, req.path, e)
        return _json({"error": "bad_request", "reason": f"invalid input: {e!s}"[:300]}, 400)

    def _api(self, req: HttpRequest) -> Answer:
        segs = req.path.strip("/").split("/")
        params: dict[str, str] = {}
        allowed = False
        for method, pattern, handler, _, admin in self.routes:
            if len(pattern) != len(segs):
                continue
            params = {}
            for p, s in zip(pattern, segs, strict=True):
                if p.startswith("{"):
                    params[p[1:-1]] = unquote(s)
                elif p != s:
                    break
            else:
                if method != req.method:
                    allowed = True
                    continue
                ctype = req.headers.get("content-type")
                if req.method in STATE_CHANGING and (req.body or ctype is not None) and \
                        (ctype or "").split(";")[0].strip().lower() != "application/json":
                    # an HTML form (even an empty one) can only send form or text types
                    raise HttpError(415, "request body must be sent as Content-Type: application/json")
                user = self._auth(req, admin) if admin is not None else None
                body: dict[str, Any] = {}
                if req.method in ("PUT", "POST") and req.body:
                    try:
                        doc = json.loads(req.body, parse_float=_finite, parse_constant=_no_constant)
                    except RecursionError:
                        raise HttpError(400, "request body is nested too deeply") from None
                    except (ValueError, UnicodeDecodeError):
                        raise HttpError(400, "request body is not valid JSON") from None
                    if not isinstance(doc, dict):
                        raise HttpError(400, "request body must be a JSON object")
                    if _too_deep(doc):
                        raise HttpError(400, f"request body is nested deeper than {MAX_JSON_DEPTH} levels")
                    body = doc
                query = {k: v[-1] for k, v in parse_qs(req.query).items()}
                return handler(user=user, body=body, query=query, req=req, **params)
        if allowed:
            raise HttpError(405, "method not allowed")
        raise HttpError(404, "Object Not Found")

    def _auth(self, req: HttpRequest, admin: bool) -> User:
        """The caller, by Basic credentials (tools) or the dashboard's session cookie (+ CSRF token)."""
        auth = req.headers.get("authorization", "")
        if auth.lower().startswith("basic "):
            try:
                name, _, password = base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                self.node.auth.refuse(self._peer(req), None, "malformed basic auth")
                raise HttpError(401, "malformed basic auth") from None
            user = self._login(req, name, password)
        else:
            sess = self._cookie_session(req)
            if sess is None:
                raise HttpError(401, "authentication required")
            if req.method in STATE_CHANGING and not hmac.compare_digest(
                    req.headers.get("x-csrf-token", "").encode(), sess[1].csrf.encode()):
                raise HttpError(403, "missing or wrong X-CSRF-Token header")
            user = sess[2]
        if admin and "administrator" not in user.tags:
            raise HttpError(403, "Not administrator user")
        return user

    def _login(self, req: HttpRequest, name: str, password: str) -> User:
        """Check credentials of a management login; every refusal is logged to the audit log."""
        try:
            user = self.node.auth.password(name, password, self._peer(req))
        except LoginRefused:
            raise HttpError(401, "Login failed") from None
        if not any(t in VIEW_TAGS for t in user.tags):
            self.node.auth.refuse(self._peer(req), name, "not a management user")
            raise HttpError(403, "Not management user")
        return user

    @staticmethod
    def _peer(req: HttpRequest) -> Peer:
        return Peer("http", req.peer, req.loopback)

    def _cookie_session(self, req: HttpRequest) -> tuple[str, DashboardSession, User] | None:
        token = ""
        for part in req.headers.get("cookie", "").split(";"):
            k, _, v = part.strip().partition("=")
            if k == SESSION_COOKIE:
                token = v
        sess = self.sessions.get(token) if token else None
        if sess is None:
            return None
        user = self.broker.users.users.get(sess.user)
        if (sess.expires < time.monotonic() or user is None or user.password_hash != sess.password_hash
                or not any(t in VIEW_TAGS for t in user.tags)):
            self.sessions.pop(token, None)
            return None
        return token, sess, user

    @staticmethod
    def _same_origin(req: HttpRequest) -> bool:
        """False for a browser request sent by another site's page (its ``Origin`` is not this host)."""
        origin = req.headers.get("origin")
        if origin is None:
            return True
        try:
            netloc = urlsplit(origin).netloc
        except ValueError:
            return False
        return bool(netloc) and netloc.lower() == req.headers.get("host", "").lower()

    @staticmethod
    def _wants_basic(req: HttpRequest) -> bool:
        """Offer Basic auth to tools (curl, rabbitmqadmin), never to a page's fetch (no login prompt)."""
        h = req.headers
        return not ("x-requested-with" in h or h.get("sec-fetch-mode") in ("cors", "same-origin", "no-cors")
                    or SESSION_COOKIE in h.get("cookie", ""))

    async def _render_metrics(self, per_object: bool) -> HttpResponse:
        return HttpResponse(200, await self.metrics.render(per_object), "text/plain; version=0.0.4; charset=utf-8")

    def _metrics(self, per_object: bool) -> Awaitable[HttpResponse]:
        return self._render_metrics(per_object)

    # ---- dashboard session, identity, health --------------------------------------------------------
    def login(self, body: dict[str, Any], req: HttpRequest, **_: Any) -> HttpResponse:
        user = self._login(req, _str(body, "username", ""), _str(body, "password", ""))
        now = time.monotonic()
        if len(self.sessions) >= MAX_SESSIONS:
            for k in [k for k, v in self.sessions.items() if v.expires < now] or list(self.sessions)[:1]:
                del self.sessions[k]
        token = secrets.token_urlsafe(32)
        sess = self.sessions[token] = DashboardSession(user.name, user.password_hash, secrets.token_urlsafe(32),
                                                       now + SESSION_TTL)
        out = _json({"name": user.name, "tags": list(user.tags), "csrf_token": sess.csrf})
        out.headers.append(("Set-Cookie", f"{SESSION_COOKIE}={token}; Path=/; HttpOnly; SameSite=Strict; "
                                          f"Max-Age={int(SESSION_TTL)}"))
        return out

    def logout(self, req: HttpRequest, **_: Any) -> HttpResponse:
        sess = self._cookie_session(req)
        if sess is not None:
            del self.sessions[sess[0]]
        return HttpResponse(204, headers=[("Set-Cookie", f"{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; "
                                                         "Max-Age=0")])

    def whoami(self, user: User, req: HttpRequest, **_: Any) -> HttpResponse:
        out: dict[str, Any] = {"name": user.name, "tags": list(user.tags)}
        sess = None if req.headers.get("authorization") else self._cookie_session(req)
        if sess is not None:
            out["csrf_token"] = sess[1].csrf  # the page reloads: it gets its token back from the cookie
        return _json(out)

    def healthcheck(self, **_: Any) -> HttpResponse:
        return _json({"status": "ok"})

    def aliveness(self, vhost: str, user: User, **_: Any) -> HttpResponse:
        """RabbitMQ's aliveness test: a message really goes through queue ``aliveness-test``."""
        s = self._session(user, self._vhost(vhost, user).name)
        self.broker.queue_declare(s, "aliveness-test", durable=False)
        from haremq.core.broker import ROUTED

        token = secrets.token_hex(8).encode()
        if self.broker.publish(s, "", Message("", "aliveness-test", Properties(), token)) != ROUTED:
            return _json({"status": "failed", "reason": "message not routed"}, 503)
        self.broker.flush()
        while (got := self.broker.get(s, "aliveness-test", no_ack=True)) is not None:
            if got[1].msg is not PAGED and got[1].msg.body == token:
                return _json({"status": "ok"})
        return _json({"status": "failed", "reason": "test message not received"}, 503)

    # ---- helpers ---------------------------------------------------------------------------------
    def _settled(self, res: HttpResponse) -> Answer:
        """``res`` once the definitions the request changed through the core are durable."""
        if self.broker.pending_definitions() is None:
            return res

        async def later() -> HttpResponse:
            await self.node.definitions.settle()
            return res

        return later()

    def _vhost(self, name: str, user: User | None = None) -> VHost:
        """The vhost; with ``user``, only when that user may see it (403 otherwise)."""
        vh = self.broker.vhosts.get(name)
        if vh is None:
            raise HttpError(404, "Object Not Found")
        if user is not None and not self._sees(user, name):
            raise HttpError(403, f"access to vhost '{name}' refused for user '{user.name}'")
        return vh

    @staticmethod
    def _sees_all(user: User) -> bool:
        return any(t in SEE_ALL_TAGS for t in user.tags)

    def _sees(self, user: User, vhost: str) -> bool:
        return self._sees_all(user) or may_open_vhost(user, vhost)

    def _own(self, user: User, conn_user: User | None) -> bool:
        return self._sees_all(user) or (conn_user is not None and conn_user.name == user.name)

    def _session(self, user: User, vhost: str) -> Session:
        return Session(self._vhost(vhost), user, self, NoDeliveries())

    def _queue(self, vhost: str, name: str, user: User | None = None) -> Queue:
        q = self._vhost(vhost, user).queues.get(name)
        if q is None or q.deleted:
            raise HttpError(404, "Object Not Found")
        return q

    def _vhosts(self, vhost: str | None, user: User) -> list[VHost]:
        if vhost is not None:
            return [self._vhost(vhost, user)]
        return [vh for vh in self.broker.vhosts.values() if self._sees(user, vh.name)]

    def _rates(self, key: tuple[str, str], stats: dict[str, int]) -> dict[str, Any]:
        """``stats`` with ``<name>_details.rate`` (per second), from samples taken when asked, kept
        1 to ``RATE_WINDOW`` seconds apart (the rate covers the time since the oldest kept sample)."""
        now = time.monotonic()
        vals = tuple(stats.values())
        dq = self._samples.get(key)
        if dq is None:
            if len(self._samples) > 4 * sum(len(vh.queues) for vh in self.broker.vhosts.values()) + 64:
                self._samples.clear()  # deleted queues' samples
            dq = self._samples[key] = deque()
        while len(dq) > 1 and now - dq[1][0] >= RATE_WINDOW:
            dq.popleft()
        out: dict[str, Any] = dict(stats)
        base_t, base = dq[0] if dq else (now, vals)
        span = now - base_t
        for i, name in enumerate(stats):
            rate = (vals[i] - base[i]) / span if span > 0.2 else 0.0
            out[f"{name}_details"] = {"rate": round(max(rate, 0.0), 1)}
        if not dq or now - dq[-1][0] >= 1.0:
            dq.append((now, vals))
        return out

    def queue_info(self, q: Queue) -> dict[str, Any]:
        r = q.receiver  # a polled queue: its group backlogs are ready too, and it may delay
        ready = q.message_count + (r.backlog_count if r is not None else 0)
        info: dict[str, Any] = {
            "name": q.name, "vhost": q.vhost.name, "durable": q.durable, "auto_delete": q.auto_delete,
            "exclusive": q.exclusive_owner is not None, "arguments": q.arguments, "type": q.args.queue_type,
            "state": "running", "messages_ready": ready, "messages_unacknowledged": q.unacked,
            "messages": ready + q.unacked, "consumers": q.consumer_count, "message_bytes_ready": q.ready.bytes,
            "message_stats": self._rates((q.vhost.name, q.name), {
                "publish": q.published, "deliver_get": q.delivered, "ack": q.acked, "redeliver": q.redelivered}),
            "node": self.node.cluster_name,
        }
        if r is not None:
            info["messages_delayed"] = len(q.delayed)
        st = q.vhost.broker.storage_stats(q) if q.persist else None
        if st is not None:
            # the durable log: what it costs on disk and which segment pins its tail
            info["disk"] = {"bytes": st.bytes_on_disk, "segments": st.segments, "live_messages": st.live_messages,
                            "oldest_segment": st.oldest_segment, "oldest_segment_live": st.oldest_segment_live,
                            "compactions": st.compactions, "deleted_segments": st.deleted_segments}
        return info

    # ---- overview / nodes / vhosts ----------------------------------------------------------------
    def overview(self, user: User, **_: Any) -> HttpResponse:
        vhs = self._vhosts(None, user)
        queues = [q for vh in vhs for q in vh.queues.values()]
        ready = sum(q.message_count for q in queues)
        unacked = sum(q.unacked for q in queues)
        amqp = [c for c in self.node.connections if self._own(user, c.user)]
        conns = len(amqp) + sum(1 for c in self.node.stomp_connections if self._own(user, c.user))
        http = self.listeners
        listeners = [{"protocol": "amqp", "port": self.node.amqp_port}]
        for proto, port in (("stomp", self.node.stomp_port), ("sqs", http.sqs_port),
                            ("http", http.management_port)):
            if port is not None:
                listeners.append({"protocol": proto, "port": port})
        return _json({
            "management_version": __version__, "product_name": "haremq", "product_version": __version__,
            "rabbitmq_version": "3.10.8", "node": self.node.cluster_name, "cluster_name": self.node.cluster_name,
            "object_totals": {"queues": len(queues), "connections": conns,
                              "channels": sum(len(c.channels) for c in amqp),
                              "consumers": sum(q.consumer_count for q in queues),
                              "exchanges": sum(len(vh.exchanges) for vh in vhs), "vhosts": len(vhs)},
            "queue_totals": {"messages": ready + unacked, "messages_ready": ready,
                             "messages_unacknowledged": unacked},
            "message_stats": self._rates(("", "" if self._sees_all(user) else f"user:{user.name}"), {
                "publish": sum(q.published for q in queues), "deliver_get": sum(q.delivered for q in queues),
                "ack": sum(q.acked for q in queues), "redeliver": sum(q.redelivered for q in queues)}),
            "listeners": listeners,
        })

    def nodes(self, **_: Any) -> HttpResponse:
        return _json([{"name": self.node.cluster_name, "type": "disc", "running": True,
                       "mem_used": self.metrics.rss(), "uptime": int((time.time() - self.started) * 1000)}])

    def vhosts(self, user: User, **_: Any) -> HttpResponse:
        return _json([self._vhost_info(vh) for vh in self._vhosts(None, user)])

    def _vhost_info(self, vh: VHost) -> dict[str, Any]:
        ready = sum(q.message_count for q in vh.queues.values())
        unacked = sum(q.unacked for q in vh.queues.values())
        return {"name": vh.name, "messages": ready + unacked, "messages_ready": ready,
                "messages_unacknowledged": unacked, "tracing": False}

    def vhost_get(self, vhost: str, user: User, **_: Any) -> HttpResponse:
        return _json(self._vhost_info(self._vhost(vhost, user)))

    async def vhost_put(self, vhost: str, user: User, **_: Any) -> HttpResponse:
        if not vhost or len(vhost) > 255:
            raise HttpError(400, "invalid vhost name")
        created = vhost not in self.broker.vhosts
        await self.node.definitions.put_vhost(vhost, user)
        return HttpResponse(201 if created else 204)

    async def vhost_delete(self, vhost: str, **_: Any) -> HttpResponse:
        self._vhost(vhost)
        if vhost == "/":
            raise HttpError(400, "the default vhost cannot be deleted")
        await self.node.definitions.delete_vhost(vhost)
        await self.node.definitions.settle()  # the queues' own deletes
        return HttpResponse(204)

    # ---- queues ----------------------------------------------------------------------------------------
    def queues(self, user: User, vhost: str | None = None, **_: Any) -> HttpResponse:
        return _json([self.queue_info(q) for vh in self._vhosts(vhost, user) for q in vh.queues.values()
                      if not q.deleted])

    def queue_get(self, vhost: str, name: str, user: User, **_: Any) -> HttpResponse:
        return _json(self.queue_info(self._queue(vhost, name, user)))

    def queue_put(self, vhost: str, name: str, user: User, body: dict[str, Any], **_: Any) -> Answer:
        if not name or len(name) > 255:
            raise HttpError(400, "invalid queue name")
        existed = name in self._vhost(vhost).queues
        self.broker.queue_declare(self._session(user, vhost), name, durable=_bool(body, "durable", True),
                                  auto_delete=_bool(body, "auto_delete", False), arguments=_args(body), defer=True)
        return self._settled(HttpResponse(204 if existed else 201))

    def queue_delete(self, vhost: str, name: str, user: User, query: dict[str, str], **_: Any) -> Answer:
        self._queue(vhost, name)
        self.broker.queue_delete(self._session(user, vhost), name, if_unused=query.get("if-unused") == "true",
                                 if_empty=query.get("if-empty") == "true", defer=True)
        return self._settled(HttpResponse(204))

    def queue_purge(self, vhost: str, name: str, user: User, **_: Any) -> HttpResponse:
        self._queue(vhost, name)  # 404 for an unknown queue
        self.broker.queue_purge(self._session(user, vhost), name)  # ready and delayed messages
        return HttpResponse(204)

    def queue_browse(self, vhost: str, name: str, user: User, body: dict[str, Any], query: dict[str, str],
                     **_: Any) -> HttpResponse:
        """Peek at ready messages in delivery order; nothing is taken, counted or reordered."""
        q = self._queue(vhost, name, user)
        self.broker.check(self._session(user, vhost), "read", "queue", name)  # payloads: as a basic.get would
        raw = body.get("count", query.get("count", 1))
        count = int(raw) if not isinstance(raw, bool) else 1
        if not 0 <= count <= 10000:
            raise HttpError(400, "count must be between 0 and 10000")
        out = []
        for i, e in enumerate(q.entries()):
            if i >= count:
                break
            msg = e.msg
            if msg is PAGED:  # only in the store: read it for display, leave the entry paged out
                r = q.vhost.broker.read_message(q, e.seq)
                msg = Message(r.exchange, r.routing_key, Properties(**r.props), r.body or b"")
            out.append(self._message(msg, e.delivery_count, q.message_count - i - 1))
        return _json(out)

    @staticmethod
    def _message(msg: Message, delivery_count: int, left: int) -> dict[str, Any]:
        try:
            payload, enc = msg.body.decode("utf-8"), "string"
        except UnicodeDecodeError:
            payload, enc = base64.b64encode(msg.body).decode(), "base64"
        props = {f.name: getattr(msg.props, f.name) for f in dataclasses.fields(msg.props)
                 if getattr(msg.props, f.name) is not None}
        return {"payload": payload, "payload_encoding": enc, "payload_bytes": len(msg.body),
                "redelivered": delivery_count > 0, "exchange": msg.exchange, "routing_key": msg.routing_key,
                "message_count": left, "properties": props}

    def queue_bindings(self, vhost: str, name: str, user: User, **_: Any) -> HttpResponse:
        q = self._queue(vhost, name, user)
        return _json([b for b in self._bindings(q.vhost) if b["destination"] == name
                      and b["destination_type"] == "queue"])

    # ---- exchanges --------------------------------------------------------------------------------------
    @staticmethod
    def _exchange_info(vh: VHost, name: str) -> dict[str, Any]:
        ex = vh.exchanges[name]
        return {"name": ex.name, "vhost": vh.name, "type": ex.type, "durable": ex.durable,
                "auto_delete": ex.auto_delete, "internal": ex.internal, "arguments": ex.arguments}

    def exchanges(self, user: User, vhost: str | None = None, **_: Any) -> HttpResponse:
        return _json([self._exchange_info(vh, n) for vh in self._vhosts(vhost, user) for n in vh.exchanges])

    def exchange_get(self, vhost: str, name: str, user: User, **_: Any) -> HttpResponse:
        vh = self._vhost(vhost, user)
        name = "" if name == "amq.default" else name
        if name not in vh.exchanges:
            raise HttpError(404, "Object Not Found")
        return _json(self._exchange_info(vh, name))

    def exchange_put(self, vhost: str, name: str, user: User, body: dict[str, Any], **_: Any) -> Answer:
        type_ = _str(body, "type", "direct")
        if type_ not in EXCHANGE_TYPES or not name or len(name) > 255:
            raise HttpError(400, f"invalid exchange type or name '{type_[:40]}'")
        existed = name in self._vhost(vhost).exchanges
        self.broker.exchange_declare(self._session(user, vhost), name, type_, durable=_bool(body, "durable", True),
                                     auto_delete=_bool(body, "auto_delete", False),
                                     internal=_bool(body, "internal", False), arguments=_args(body), defer=True)
        return self._settled(HttpResponse(204 if existed else 201))

    def exchange_delete(self, vhost: str, name: str, user: User, **_: Any) -> Answer:
        if name not in self._vhost(vhost).exchanges:
            raise HttpError(404, "Object Not Found")
        self.broker.exchange_delete(self._session(user, vhost), name, defer=True)
        return self._settled(HttpResponse(204))

    def exchange_publish(self, vhost: str, name: str, user: User, body: dict[str, Any], **_: Any) -> HttpResponse:
        payload = _str(body, "payload", "")
        data = base64.b64decode(payload) if body.get("payload_encoding") == "base64" else payload.encode()
        props = body.get("properties") or {}
        if not isinstance(props, dict):
            raise HttpError(400, "'properties' must be an object")
        headers = props.get("headers")
        p = Properties(headers=headers if isinstance(headers, dict) else None,
                       delivery_mode=props.get("delivery_mode") if isinstance(props.get("delivery_mode"), int)
                       else None,
                       content_type=props.get("content_type") if isinstance(props.get("content_type"), str) else None,
                       message_id=props.get("message_id") if isinstance(props.get("message_id"), str) else None)
        rk = _str(body, "routing_key", "")
        name = "" if name == "amq.default" else name  # the API's name for the default exchange
        from haremq.core.broker import ROUTED

        routed = self.broker.publish(self._session(user, vhost), name, Message(name, rk, p, data)) == ROUTED
        self.broker.flush()
        self.node.flush_output()
        return _json({"routed": routed})

    # ---- bindings ---------------------------------------------------------------------------------------
    @staticmethod
    def _bindings(vh: VHost) -> list[dict[str, Any]]:
        out = []
        for q in vh.queues.values():
            out.append({"source": "", "vhost": vh.name, "destination": q.name, "destination_type": "queue",
                        "routing_key": q.name, "arguments": {}, "properties_key": q.name or "~"})
        for ex in vh.exchanges.values():
            for dest, rk, args in ex.bindings:
                kind = "queue" if isinstance(dest, Queue) else "exchange"
                out.append({"source": ex.name, "vhost": vh.name, "destination": str(getattr(dest, "name", "")),
                            "destination_type": kind,
                            "routing_key": rk, "arguments": args, "properties_key": rk or "~"})
        return out

    def bindings(self, user: User, vhost: str | None = None, **_: Any) -> HttpResponse:
        return _json([b for vh in self._vhosts(vhost, user) for b in self._bindings(vh)])

    def bindings_between(self, vhost: str, source: str, name: str, user: User, **_: Any) -> HttpResponse:
        return _json([b for b in self._bindings(self._vhost(vhost, user)) if b["source"] == source
                      and b["destination"] == name and b["destination_type"] == "queue"])

    def bind_queue(self, vhost: str, source: str, name: str, user: User, body: dict[str, Any],
                   **_: Any) -> Answer:
        self._queue(vhost, name)
        rk = _str(body, "routing_key", "")
        self.broker.queue_bind(self._session(user, vhost), name, source, rk, _args(body), defer=True)
        return self._settled(HttpResponse(201, headers=[("Location", rk or "~")]))

    def unbind_queue(self, vhost: str, source: str, name: str, props: str, user: User, **_: Any) -> Answer:
        self._queue(vhost, name)
        rk = "" if props == "~" else props
        self.broker.queue_bind(self._session(user, vhost), name, source, rk, {}, unbind=True)
        return self._settled(HttpResponse(204))

    # ---- connections, channels, consumers -------------------------------------------------------------
    def connections(self, user: User, **_: Any) -> HttpResponse:
        out = []
        for c in list(self.node.connections):
            if not self._own(user, c.user):
                continue
            out.append({"name": f"{c.peer[0]}:{c.peer[1]}", "protocol": "AMQP 0-9-1", "peer_host": c.peer[0],
                        "peer_port": c.peer[1], "user": c.user.name if c.user else None,
                        "vhost": c.vhost.name if c.vhost else None, "channels": len(c.channels),
                        "recv_oct": c.bytes_in, "send_oct": c.bytes_out, "state": "running",
                        "client_properties": c.client_properties})
        for s in list(self.node.stomp_connections):
            if not self._own(user, s.user):
                continue
            out.append({"name": f"{s.peer[0]}:{s.peer[1]}", "protocol": "STOMP", "peer_host": s.peer[0],
                        "peer_port": s.peer[1], "user": s.user.name if s.user else None,
                        "vhost": s.vhost.name if s.vhost else None, "channels": 0, "recv_oct": s.bytes_in,
                        "send_oct": s.bytes_out, "state": "running"})
        return _json(out)

    def channels(self, user: User, **_: Any) -> HttpResponse:
        out = []
        for c in list(self.node.connections):
            if not self._own(user, c.user):
                continue
            for n, ch in c.channels.items():
                s = ch.session
                out.append({"name": f"{c.peer[0]}:{c.peer[1]} ({n})", "number": n,
                            "user": c.user.name if c.user else None, "vhost": s.vhost.name,
                            "consumer_count": len(s.consumers), "messages_unacknowledged": len(s.leases),
                            "prefetch_count": s.prefetch, "global_prefetch_count": s.global_prefetch,
                            "confirm": ch.confirm, "transactional": ch.tx})
        return _json(out)

    def consumers(self, user: User, vhost: str | None = None, **_: Any) -> HttpResponse:
        out = []
        for vh in self._vhosts(vhost, user):
            for q in vh.queues.values():
                for c in q.consumers:
                    out.append({"consumer_tag": c.tag, "queue": {"name": q.name, "vhost": vh.name},
                                "ack_required": not c.no_ack, "exclusive": c.exclusive,
                                "prefetch_count": c.prefetch, "arguments": c.arguments, "active": True})
        return _json(out)

    # ---- users and permissions --------------------------------------------------------------------------
    @staticmethod
    def _user_info(u: User) -> dict[str, Any]:
        return {"name": u.name, "password_hash": u.password_hash, "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": ",".join(u.tags)}

    def users(self, **_: Any) -> HttpResponse:
        return _json([self._user_info(u) for u in self.broker.users.users.values()])

    def user_get(self, username: str, **_: Any) -> HttpResponse:
        u = self.broker.users.users.get(username)
        if u is None:
            raise HttpError(404, "Object Not Found")
        return _json(self._user_info(u))

    async def user_put(self, username: str, body: dict[str, Any], **_: Any) -> HttpResponse:
        changes, created = self._user_changes(username, body)
        await self.node.definitions.commit(changes)
        return HttpResponse(201 if created else 204)

    def _user_changes(self, name: str, body: dict[str, Any]) -> tuple[list[Change], bool]:
        """Validate a user document: its changes (user, access keys) and whether it is new."""
        if not name or len(name) > 255:
            raise HttpError(400, "invalid user name")
        tags_raw = body.get("tags", "")
        tags = tuple(t for t in (tags_raw.split(",") if isinstance(tags_raw, str) else tags_raw) if t) \
            if isinstance(tags_raw, str | list) else ()
        if not all(isinstance(t, str) for t in tags):
            raise HttpError(400, "'tags' must be a string or a list of strings")
        existing = self.broker.users.users.get(name)
        if "password" in body:
            pw_hash = hash_password(_str(body, "password"))
        elif "password_hash" in body:
            pw_hash = _str(body, "password_hash")
        elif existing is not None:
            pw_hash = existing.password_hash
        else:
            raise HttpError(400, "password or password_hash is required")
        changes = [Change("put", "user", (name,), {"password_hash": pw_hash, "tags": list(tags)})]
        keys = body.get("access_keys")
        if isinstance(keys, dict):
            changes += [access_key_change(name, k, v) for k, v in keys.items()
                        if isinstance(k, str) and isinstance(v, str)]
        return changes, existing is None

    async def user_delete(self, username: str, **_: Any) -> HttpResponse:
        if username not in self.broker.users.users:
            raise HttpError(404, "Object Not Found")
        await self.node.definitions.delete_user(username)
        return HttpResponse(204)

    def permissions(self, **_: Any) -> HttpResponse:
        return _json([{"user": u.name, "vhost": vh, "configure": p.configure, "write": p.write, "read": p.read}
                      for u in self.broker.users.users.values() for vh, p in u.permissions.items()])

    def _perm_user(self, name: str) -> User:
        u = self.broker.users.users.get(name)
        if u is None:
            raise HttpError(404, "Object Not Found")
        return u

    def permission_get(self, vhost: str, username: str, **_: Any) -> HttpResponse:
        u = self._perm_user(username)
        p = u.permissions.get(vhost)
        if p is None:
            raise HttpError(404, "Object Not Found")
        return _json({"user": u.name, "vhost": vhost, "configure": p.configure, "write": p.write, "read": p.read})

    @staticmethod
    def _permission(body: dict[str, Any]) -> Permission:
        """configure, write and read are all required (RabbitMQ): a missing one is a 400, not deny-all."""
        missing = [k for k in ("configure", "write", "read") if k not in body]
        if missing:
            raise HttpError(400, f"permission is missing {', '.join(repr(k) for k in missing)}")
        perm = Permission(_str(body, "configure"), _str(body, "write"), _str(body, "read"))
        for pattern in (perm.configure, perm.write, perm.read):
            try:
                re.compile(pattern)
            except re.error:
                raise HttpError(400, f"invalid regular expression '{pattern[:60]}'") from None
        return perm

    async def permission_put(self, vhost: str, username: str, body: dict[str, Any], **_: Any) -> HttpResponse:
        u = self._perm_user(username)
        self._vhost(vhost)
        perm = self._permission(body)
        existed = vhost in u.permissions
        await self.node.definitions.set_permission(username, vhost, perm)
        return HttpResponse(204 if existed else 201)

    async def permission_delete(self, vhost: str, username: str, **_: Any) -> HttpResponse:
        u = self._perm_user(username)
        if vhost not in u.permissions:
            raise HttpError(404, "Object Not Found")
        await self.node.definitions.clear_permission(username, vhost)
        return HttpResponse(204)

    # ---- definitions --------------------------------------------------------------------------------------
    def definitions_get(self, **_: Any) -> HttpResponse:
        vhs = list(self.broker.vhosts.values())
        return _json({
            "rabbit_version": "3.10.8", "product_name": "haremq", "product_version": __version__,
            "users": [self._user_info(u) for u in self.broker.users.users.values()],
            "vhosts": [{"name": vh.name} for vh in vhs],
            "permissions": [{"user": u.name, "vhost": v, "configure": p.configure, "write": p.write, "read": p.read}
                            for u in self.broker.users.users.values() for v, p in u.permissions.items()],
            "queues": [{"name": q.name, "vhost": vh.name, "durable": q.durable, "auto_delete": q.auto_delete,
                        "arguments": q.arguments} for vh in vhs for q in vh.queues.values()
                       if q.exclusive_owner is None and not q.deleted],
            "exchanges": [self._exchange_info(vh, n) for vh in vhs for n in vh.exchanges
                          if n and not n.startswith("amq.")],
            "bindings": [b for vh in vhs for b in self._bindings(vh) if b["source"]],
        })

    async def definitions_post(self, user: User, body: dict[str, Any], **_: Any) -> HttpResponse:
        """Import: every entry is checked first (a bad one applies nothing); vhosts, users, permissions
        and access keys are committed in one transaction; then exchanges, queues and bindings through
        the core (which can still refuse one, e.g. an inequivalent redeclare)."""
        def items(key: str) -> list[dict[str, Any]]:
            v = body.get(key, [])
            if not isinstance(v, list) or not all(isinstance(x, dict) for x in v):
                raise HttpError(400, f"'{key}' must be a list of objects")
            return v

        changes: list[Change] = []
        vhosts = set(self.broker.vhosts)
        users = set(self.broker.users.users)
        for v in items("vhosts"):
            name = _str(v, "name")
            if not name or len(name) > 255:
                raise HttpError(400, "invalid vhost name")
            changes.append(Change("put", "vhost", (name,), {"description": "", "tags": []}))
            if name not in user.permissions and name not in vhosts:
                changes.append(permission_change(user.name, name, Permission()))
            vhosts.add(name)
        for u in items("users"):
            user_changes, _created = self._user_changes(_str(u, "name"), u)
            changes += user_changes
            users.add(_str(u, "name"))
        for p in items("permissions"):
            vh, who = _str(p, "vhost"), _str(p, "user")
            if vh not in vhosts or who not in users:
                raise HttpError(400, f"permission of unknown user '{who[:60]}' or vhost '{vh[:60]}'")
            changes.append(permission_change(who, vh, self._permission(p)))
        exchanges, queues, bindings = items("exchanges"), items("queues"), items("bindings")
        for doc in (*exchanges, *queues, *bindings):  # their shape, before anything is applied
            if _str(doc, "vhost", "/") not in vhosts:
                raise HttpError(400, f"unknown vhost '{_str(doc, 'vhost')[:60]}'")
            _args(doc)
            for flag in ("durable", "auto_delete", "internal"):
                if flag in doc:
                    _bool(doc, flag, False)
        for e in exchanges:
            if _str(e, "type", "direct") not in EXCHANGE_TYPES or not _str(e, "name"):
                raise HttpError(400, f"invalid exchange type or name in '{_str(e, 'name')[:60]}'")
        for doc, keys in [(q, ("name",)) for q in queues] + [(b, ("source", "destination")) for b in bindings]:
            for key in keys:
                _str(doc, key)
        if changes:
            await self.node.definitions.commit(changes)
        for e in exchanges:
            self._sync(self.exchange_put(_str(e, "vhost", "/"), _str(e, "name"), user, e))
        for q in queues:
            self._sync(self.queue_put(_str(q, "vhost", "/"), _str(q, "name"), user, q))
        await self.node.definitions.settle()  # durable exchanges and queues exist once their put is durable
        for b in bindings:
            vh, src, dest = _str(b, "vhost", "/"), _str(b, "source"), _str(b, "destination")
            s = self._session(user, vh)
            if b.get("destination_type", "queue") == "queue":
                self.broker.queue_bind(s, dest, src, _str(b, "routing_key", ""), _args(b), defer=True)
            else:
                self.broker.exchange_bind(s, dest, src, _str(b, "routing_key", ""), _args(b), defer=True)
        self.broker.flush()
        await self.node.definitions.settle()
        return HttpResponse(204)

    @staticmethod
    def _sync(answer: Answer) -> None:
        """Drop the wait of a core declare's answer (the import settles once, at its end)."""
        if inspect.iscoroutine(answer):
            answer.close()

    # ---- OpenAPI ------------------------------------------------------------------------------------------
    def openapi(self) -> dict[str, Any]:
        paths: dict[str, dict[str, Any]] = {}
        for method, pattern, _, summary, access in self.routes:
            path = "/" + "/".join(pattern)
            params = [{"name": p[1:-1], "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}}
                      for p in pattern if p.startswith("{")]
            op: dict[str, Any] = {"summary": summary, "parameters": params,
                                  "responses": {"200": {"description": "OK"}, "201": {"description": "Created"},
                                                "204": {"description": "Done"}, "400": {"description": "Bad input"},
                                                "401": {"description": "Unauthorized"},
                                                "404": {"description": "Not found"}}}
            if access is None:
                op["security"] = []
            if method in ("PUT", "POST"):
                op["requestBody"] = {"required": False, "content": {"application/json": {"schema": {
                    "type": "object", "additionalProperties": True}}}}
            paths.setdefault(path, {})[method.lower()] = op
        for path, summary in (("/metrics", "Prometheus metrics (queue series aggregated unless "
                                            "metrics_per_object; Basic auth with metrics_auth)"),
                              ("/metrics/per-object", "Prometheus metrics with one series per queue")):
            paths[path] = {"get": {"summary": summary, "parameters": [], "responses": {
                "200": {"description": "OK", "content": {"text/plain": {"schema": {"type": "string"}}}},
                "401": {"description": "Unauthorized (metrics_auth)"}}}}
        return {"openapi": "3.0.3", "info": {"title": "haremq management API", "version": __version__},
                "components": {"securitySchemes": {"basic": {"type": "http", "scheme": "basic"}}},
                "security": [{"basic": []}], "paths": paths}
