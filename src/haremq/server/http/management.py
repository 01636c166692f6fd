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
import importlib
import inspect
import json
import logging
import math
import os
import re
import resource
import secrets
import struct
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

from haremq import __version__
from haremq.core.arguments import QueueArgs
from haremq.core.consumer import NoDeliveries, Session
from haremq.core.exchange import EXCHANGE_TYPES
from haremq.core.policy import Policy, PolicyError, effective_arguments
from haremq.core.queue import PAGED, Queue
from haremq.errors import HareError, InternalError, ResourceError
from haremq.message import Message, Properties
from haremq.protocol.amqp.codec import encode_properties
from haremq.protocol.http import HttpRequest, HttpResponse
from haremq.security.access import may_open_vhost
from haremq.security.refusal import LoginRefused, Peer
from haremq.security.users import Permission, User, hash_password
from haremq.server.definitions import access_key_change, permission_change, policy_change
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
ACKMODES = ("ack_requeue_false", "ack_requeue_true", "reject_requeue_false", "reject_requeue_true", "browse")


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
    """A flag as RabbitMQ reads it: JSON true/false or the strings "true"/"false" (rabbitmqadmin sends
    strings)."""
    v = d.get(key, default)
    if isinstance(v, str) and v in ("true", "false"):
        return v == "true"
    if not isinstance(v, bool):
        raise HttpError(400, f"'{key}' must be a boolean")
    return v


def _args(d: dict[str, Any]) -> dict[str, Any]:
    """``arguments``: an object; an empty list is no arguments (pyrabbit2 sends ``[]``, RabbitMQ accepts it)."""
    v = d.get("arguments", {})
    if v == []:
        return {}
    if not isinstance(v, dict):
        raise HttpError(400, "'arguments' must be an object")
    return v


def _backtracks(pattern: str) -> bool:
    """Whether a name filter could backtrack for long on the event loop (Python's ``re`` has no time
    limit and holds the GIL): a repeat inside a repeat, a repeated alternation, a back-reference, or
    more than two repeats (each multiplies the work by the name's length)."""
    parser: Any = importlib.import_module("re._parser")
    repeat_ops = {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}
    repeats = 0

    def walk(items: Any, in_repeat: bool) -> bool:
        nonlocal repeats
        for op, av in items:
            kind = str(op)
            if kind in ("GROUPREF", "GROUPREF_EXISTS"):
                return True
            if kind in repeat_ops and av[1] > 1:
                repeats += 1
                if in_repeat or repeats > 2 or walk(av[2], True):
                    return True
                continue
            if kind == "BRANCH" and in_repeat:
                return True
            if any(walk(sub, in_repeat) for sub in _subpatterns(av)):
                return True
        return False

    try:
        return walk(parser.parse(pattern), False)
    except (RecursionError, re.error):
        return True


def _subpatterns(av: Any) -> list[Any]:
    """The nested sub-patterns in a parsed regex node's argument."""
    if isinstance(av, tuple | list):
        return [s for x in av for s in _subpatterns(x)]
    if hasattr(av, "data"):  # a SubPattern
        return [av.data]
    return []


def _path(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = obj.get(part) if isinstance(obj, dict) else None
    return obj


def _project(obj: dict[str, Any], columns: list[str]) -> dict[str, Any]:
    """Only ``columns`` of ``obj`` (dotted paths keep their nesting), as RabbitMQ's ``columns=``."""
    out: dict[str, Any] = {}
    for col in columns:
        parts = col.split(".")
        v = _path(obj, col)
        if v is None and not (isinstance(obj, dict) and col in obj):
            continue
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = v
    return out


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
        self._samples: dict[tuple[str, ...], deque[tuple[float, tuple[int, ...]]]] = {}
        self.routes: list[Route] = []
        r = self._route
        r("POST", "/api/login", self.login, "Dashboard login: sets the session cookie", None)
        r("POST", "/api/logout", self.logout, "Dashboard logout: ends the session", None)
        r("GET", "/api/whoami", self.whoami, "The authenticated user")
        r("GET", "/api/healthchecks/node", self.healthcheck, "Node health check")
        r("GET", "/api/aliveness-test/{vhost}", self.aliveness, "Declare, publish and get a test message")
        r("GET", "/api/health/checks/alarms", self.check_alarms, "503 while a resource alarm is in effect")
        r("GET", "/api/health/checks/local-alarms", self.check_alarms, "503 while this node has a resource alarm")
        r("GET", "/api/health/checks/virtual-hosts", self.check_vhosts, "Every virtual host is running")
        r("GET", "/api/health/checks/port-listener/{port}", self.check_port, "503 unless a listener is on the port")
        r("GET", "/api/health/checks/protocol-listener/{protocol}", self.check_protocol,
          "503 unless a listener serves the protocol")
        r("GET", "/api/overview", self.overview, "Cluster-wide totals")
        r("GET", "/api/cluster-name", self.cluster_name, "The cluster name")
        r("GET", "/api/extensions", self.extensions, "Dashboard extensions (none)")
        r("GET", "/api/feature-flags", self.feature_flags, "Feature flags (what haremq behaves as)")
        r("GET", "/api/nodes", self.nodes, "Nodes")
        r("GET", "/api/nodes/{node}", self.node_get, "One node")
        r("GET", "/api/vhosts", self.vhosts, "Virtual hosts")
        r("GET", "/api/vhosts/{vhost}", self.vhost_get, "One virtual host")
        r("PUT", "/api/vhosts/{vhost}", self.vhost_put, "Create a virtual host", True)
        r("DELETE", "/api/vhosts/{vhost}", self.vhost_delete, "Delete a virtual host", True)
        r("GET", "/api/vhosts/{vhost}/permissions", self.vhost_permissions, "Permissions on a virtual host", True)
        r("GET", "/api/vhost-limits", self.vhost_limits, "Virtual host limits (none are set)", True)
        r("GET", "/api/vhost-limits/{vhost}", self.vhost_limits, "Limits of a virtual host (none are set)", True)
        r("GET", "/api/queues", self.queues, "Queues with message counts and rates")
        r("GET", "/api/queues/{vhost}", self.queues, "Queues of a vhost")
        r("GET", "/api/queues/{vhost}/{name}", self.queue_get, "One queue")
        r("PUT", "/api/queues/{vhost}/{name}", self.queue_put, "Declare a queue", True)
        r("DELETE", "/api/queues/{vhost}/{name}", self.queue_delete, "Delete a queue", True)
        r("DELETE", "/api/queues/{vhost}/{name}/contents", self.queue_purge, "Purge a queue", True)
        r("GET", "/api/queues/{vhost}/{name}/get", self.queue_get_messages,
          "Browse messages (no ackmode) without consuming")
        r("POST", "/api/queues/{vhost}/{name}/get", self.queue_get_messages,
          "Get messages: ackmode ack_requeue_false consumes, *_requeue_true requeues, browse (default) peeks")
        r("GET", "/api/queues/{vhost}/{name}/bindings", self.queue_bindings, "Bindings to a queue")
        r("GET", "/api/exchanges", self.exchanges, "Exchanges")
        r("GET", "/api/exchanges/{vhost}", self.exchanges, "Exchanges of a vhost")
        r("GET", "/api/exchanges/{vhost}/{name}", self.exchange_get, "One exchange")
        r("PUT", "/api/exchanges/{vhost}/{name}", self.exchange_put, "Declare an exchange", True)
        r("DELETE", "/api/exchanges/{vhost}/{name}", self.exchange_delete, "Delete an exchange", True)
        r("POST", "/api/exchanges/{vhost}/{name}/publish", self.exchange_publish, "Publish a message", True)
        r("GET", "/api/exchanges/{vhost}/{name}/bindings/source", self.exchange_bindings_source,
          "Bindings from an exchange")
        r("GET", "/api/exchanges/{vhost}/{name}/bindings/destination", self.exchange_bindings_destination,
          "Bindings to an exchange")
        r("GET", "/api/bindings", self.bindings, "Bindings")
        r("GET", "/api/bindings/{vhost}", self.bindings, "Bindings of a vhost")
        r("POST", "/api/bindings/{vhost}/e/{source}/q/{name}", self.bind_queue, "Bind a queue", True)
        r("GET", "/api/bindings/{vhost}/e/{source}/q/{name}", self.bindings_between, "Bindings exchange->queue")
        r("DELETE", "/api/bindings/{vhost}/e/{source}/q/{name}/{props}", self.unbind_queue, "Unbind a queue", True)
        r("POST", "/api/bindings/{vhost}/e/{source}/e/{name}", self.bind_exchange, "Bind an exchange", True)
        r("GET", "/api/bindings/{vhost}/e/{source}/e/{name}", self.bindings_between_exchanges,
          "Bindings exchange->exchange")
        r("DELETE", "/api/bindings/{vhost}/e/{source}/e/{name}/{props}", self.unbind_exchange,
          "Unbind an exchange", True)
        r("GET", "/api/connections", self.connections, "Client connections")
        r("GET", "/api/connections/{name}", self.connection_get, "One client connection")
        r("DELETE", "/api/connections/{name}", self.connection_close,
          "Close a connection (reason in the X-Reason header)")
        r("GET", "/api/connections/{name}/channels", self.connection_channels, "Channels of a connection")
        r("GET", "/api/vhosts/{vhost}/connections", self.vhost_connections, "Connections to a virtual host")
        r("GET", "/api/channels", self.channels, "AMQP channels")
        r("GET", "/api/consumers", self.consumers, "Consumers")
        r("GET", "/api/consumers/{vhost}", self.consumers, "Consumers of a vhost")
        r("GET", "/api/users", self.users, "Users", True)
        r("GET", "/api/users/{username}", self.user_get, "One user", True)
        r("PUT", "/api/users/{username}", self.user_put, "Create or update a user", True)
        r("DELETE", "/api/users/{username}", self.user_delete, "Delete a user", True)
        r("GET", "/api/users/{username}/permissions", self.user_permissions, "Permissions of a user", True)
        r("GET", "/api/permissions", self.permissions, "Permissions", True)
        r("GET", "/api/permissions/{vhost}/{username}", self.permission_get, "One permission", True)
        r("PUT", "/api/permissions/{vhost}/{username}", self.permission_put, "Set a permission", True)
        r("DELETE", "/api/permissions/{vhost}/{username}", self.permission_delete, "Clear a permission", True)
        r("GET", "/api/definitions", self.definitions_get, "Export definitions", True)
        r("POST", "/api/definitions", self.definitions_post, "Import definitions", True)
        r("GET", "/api/definitions/{vhost}", self.definitions_vhost_get, "Export one virtual host's definitions", True)
        r("POST", "/api/definitions/{vhost}", self.definitions_vhost_post, "Import into one virtual host", True)
        r("GET", "/api/parameters", self.parameters, "Runtime parameters (no components are installed)", True)
        r("GET", "/api/parameters/{component}", self.parameters, "Runtime parameters of a component", True)
        r("GET", "/api/parameters/{component}/{vhost}", self.parameters, "Runtime parameters of a component",
          True)
        r("GET", "/api/parameters/{component}/{vhost}/{name}", self.parameter_get, "One runtime parameter", True)
        r("PUT", "/api/parameters/{component}/{vhost}/{name}", self.parameter_put,
          "Refused: no parameter component (shovel, federation) is installed", True)
        r("GET", "/api/global-parameters", self.global_parameters, "Global parameters", True)
        r("GET", "/api/global-parameters/{name}", self.global_parameter_get, "One global parameter", True)
        r("GET", "/api/policies", self.policies, "Policies")
        r("GET", "/api/policies/{vhost}", self.policies, "Policies of a virtual host")
        r("GET", "/api/policies/{vhost}/{name}", self.policy_get, "One policy")
        r("PUT", "/api/policies/{vhost}/{name}", self.policy_put,
          "Set a policy (pattern, definition, priority, apply-to); applied to matching queues at once", True)
        r("DELETE", "/api/policies/{vhost}/{name}", self.policy_delete, "Clear a policy", True)
        r("GET", "/api/operator-policies", self.operator_policies, "Operator policies (none)", True)
        r("GET", "/api/operator-policies/{vhost}", self.operator_policies, "Operator policies of a vhost (none)",
          True)

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
            # a failed definitions write (InternalError) or store (ResourceError: an fsync failed, disk full) is
            # ours, not the client's: 503, nothing answered as kept
            status = (404 if e.reply_code == 404 else 403 if e.reply_code in (403, 530)
                      else 503 if isinstance(e, InternalError | ResourceError) else 400)
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
                        (ctype or "").split(";")[0].strip().lower() != "application/json" and \
                        not (ctype is None and self._from_tool(req)):
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
    def _from_tool(req: HttpRequest) -> bool:
        """A request no browser sent: no ``Origin``, ``Sec-Fetch-*`` or cookie (every browser request
        that can carry a body without a Content-Type has them). Tools such as pyrabbit2 POST JSON
        without a Content-Type, which RabbitMQ reads as JSON; so does haremq for them."""
        h = req.headers
        return not ("origin" in h or "sec-fetch-site" in h or "sec-fetch-mode" in h or "cookie" in h)

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

    def _rates(self, key: tuple[str, ...], stats: dict[str, int], gauge: bool = False) -> dict[str, Any]:
        """``stats`` with ``<name>_details.rate`` (per second), from samples taken when asked, kept
        1 to ``RATE_WINDOW`` seconds apart (the rate covers the time since the oldest kept sample)."""
        now = time.monotonic()
        vals = tuple(stats.values())
        dq = self._samples.get(key)
        if dq is None:
            live = sum(len(vh.queues) + len(vh.exchanges) + 1 for vh in self.broker.vhosts.values()) + \
                sum(len(c.channels) + 1 for c in list(self.node.connections)) + len(self.node.stomp_connections)
            if len(self._samples) > 4 * live + 64:
                self._samples.clear()  # deleted queues' samples
            dq = self._samples[key] = deque()
        while len(dq) > 1 and now - dq[1][0] >= RATE_WINDOW:
            dq.popleft()
        out: dict[str, Any] = dict(stats)
        base_t, base = dq[0] if dq else (now, vals)
        span = now - base_t
        for i, name in enumerate(stats):
            rate = (vals[i] - base[i]) / span if span > 0.2 else 0.0
            out[f"{name}_details"] = {"rate": round(rate if gauge else max(rate, 0.0), 1)}  # a gauge may fall
        if not dq or now - dq[-1][0] >= 1.0:
            dq.append((now, vals))
        return out

    @staticmethod
    def _listing(items: list[dict[str, Any]], query: dict[str, str],
                 default_sort: tuple[str, ...] = ()) -> HttpResponse:
        """A listing with RabbitMQ's query options: ``name`` (substring, or a regex with ``use_regex=true``,
        both case-insensitive), ``sort``/``sort_reverse`` (else ``default_sort``), ``columns`` (dotted
        paths), and with ``page`` one page of ``page_size`` (1-500, default 100) as ``{items, page,
        page_count, ...}``."""
        total = len(items)
        name = query.get("name")
        if name:
            if query.get("use_regex") == "true":
                try:
                    rx = re.compile(name, re.IGNORECASE)
                except re.error:
                    raise HttpError(400, f"invalid regular expression '{name[:60]}'") from None
                if _backtracks(name):
                    raise HttpError(400, f"regular expression too costly to match: '{name[:60]}' (no nested "
                                         "or alternating repeats, no back-references, at most 2 repeats)")
                items = [x for x in items if rx.search(str(x.get("name", "")))]
            else:
                items = [x for x in items if name.lower() in str(x.get("name", "")).lower()]
        sort = query.get("sort")
        if sort:
            def key(x: dict[str, Any]) -> tuple[int, Any]:
                v = _path(x, sort)
                return (0, v) if isinstance(v, int | float) and not isinstance(v, bool) else (1, str(v))
            items = sorted(items, key=key, reverse=query.get("sort_reverse") == "true")
        else:
            if default_sort:  # RabbitMQ's order for the listing (queues, exchanges: vhost then name)
                items = sorted(items, key=lambda x: tuple(str(x.get(k, "")) for k in default_sort))
            if query.get("sort_reverse") == "true":
                items = items[::-1]
        columns = [c for c in query.get("columns", "").split(",") if c]
        if columns:
            items = [_project(x, columns) for x in items]
        if "page" not in query:
            return _json(items)
        try:
            page, size = int(query["page"]), int(query.get("page_size", "100"))
        except ValueError:
            raise HttpError(400, "page and page_size must be integers") from None
        if not 1 <= size <= 500:
            raise HttpError(400, "page_size must be between 1 and 500")
        filtered = len(items)
        page_count = max(1, -(-filtered // size))
        if page < 1 or page > page_count:
            raise HttpError(400, f"page out of range: {page} (page_count {page_count})")
        chunk = items[(page - 1) * size:page * size]
        return _json({"filtered_count": filtered, "item_count": len(chunk), "items": chunk, "page": page,
                      "page_count": page_count, "page_size": size, "total_count": total})

    def queue_info(self, q: Queue) -> dict[str, Any]:
        r = q.receiver  # a polled queue: its group backlogs are ready too, and it may delay
        ready = q.message_count + (r.backlog_count if r is not None else 0)
        counts = self._rates(("q", q.vhost.name, q.name), {
            "messages": ready + q.unacked, "messages_ready": ready, "messages_unacknowledged": q.unacked}, gauge=True)
        unacked_bytes = q.unacked * (q.ready.bytes // q.ready.count if q.ready.count else 0)
        consumers = [self._consumer_info(q, c) for c in q.consumers]
        info: dict[str, Any] = {
            "name": q.name, "vhost": q.vhost.name, "durable": q.durable, "auto_delete": q.auto_delete,
            "exclusive": q.exclusive_owner is not None, "arguments": q.arguments, "type": q.args.queue_type,
            "state": "running", **counts, "consumers": q.consumer_count,
            "message_bytes": q.ready.bytes + unacked_bytes, "message_bytes_ready": q.ready.bytes,
            "message_bytes_unacknowledged": unacked_bytes, "message_bytes_ram": q.ready.bytes - q.ready.paged,
            "message_bytes_paged_out": q.ready.paged, "memory": q.memory_estimate(),
            "message_stats": self._rates((q.vhost.name, q.name), {
                "publish": q.published, "deliver_get": q.delivered, "ack": q.acked, "redeliver": q.redelivered}),
            "node": self.node.cluster_name, "policy": q.policy.name if q.policy is not None else None,
            "effective_policy_definition": q.policy.definition if q.policy is not None else {},
            "exclusive_consumer_tag": next((c.tag for c in q.consumers if c.exclusive), None),
            "consumer_utilisation": self._utilisation(q), "consumer_capacity": self._utilisation(q),
            "consumer_details": consumers, "head_message_timestamp": self._head_timestamp(q),
            "messages_persistent": 0, "message_bytes_persistent": 0,
        }
        if not q.consumers:
            # RabbitMQ: when the queue last saw a consumer, a get or a declare
            idle = time.time() - max(0.0, self.broker.clock.monotonic() - q.last_used)
            info["idle_since"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(idle))
        if q.quorum:
            # RabbitMQ's quorum queue fields; with no cluster the one member is this node (a single replica)
            me = self.node.cluster_name
            info.update(leader=me, members=[me], online=[me])
        if r is not None:
            info["messages_delayed"] = len(q.delayed)
        st = q.vhost.broker.storage_stats(q) if q.persist else None
        if st is not None:
            info["messages_persistent"] = st.live_messages  # what the durable log holds for the queue
            # the durable log: what it costs on disk and which segment pins its tail
            info["disk"] = {"bytes": st.bytes_on_disk, "segments": st.segments, "live_messages": st.live_messages,
                            "oldest_segment": st.oldest_segment, "oldest_segment_live": st.oldest_segment_live,
                            "compactions": st.compactions, "deleted_segments": st.deleted_segments}
        return info

    @staticmethod
    def _utilisation(q: Queue) -> float | None:
        """Share of consumers that can take a message now (RabbitMQ's is a time average; None without
        consumers). 1.0 whenever nothing waits."""
        if not q.consumers:
            return None
        if not q.ready.count:
            return 1.0
        return round(sum(1 for c in q.consumers if c.has_credit()) / len(q.consumers), 2)

    @staticmethod
    def _head_timestamp(q: Queue) -> int | None:
        """The ``timestamp`` property of the message at the head (None if unset or paged out)."""
        head = q.ready.peek()
        msg = head.msg if head is not None else None
        if not isinstance(msg, Message) or msg.props.timestamp is None:
            return None
        return int(msg.props.timestamp)

    def _consumer_info(self, q: Queue, c: Any) -> dict[str, Any]:
        conn = c.session.connection
        chan = None
        if hasattr(conn, "channels") and isinstance(conn.channels, dict):
            chan = next((n for n, ch in conn.channels.items() if getattr(ch, "session", None) is c.session), None)
        details: dict[str, Any] = {}
        if hasattr(conn, "peer") and getattr(conn, "transport", None) is not None:
            cname = self._conn_name(conn)
            details = {"name": f"{cname} ({chan})" if chan is not None else cname, "number": chan,
                       "connection_name": cname, "peer_host": conn.peer[0], "peer_port": conn.peer[1],
                       "user": conn.user.name if getattr(conn, "user", None) else None}
        return {"consumer_tag": c.tag, "queue": {"name": q.name, "vhost": q.vhost.name},
                "channel_details": details, "ack_required": not c.no_ack, "exclusive": c.exclusive,
                "prefetch_count": c.prefetch, "arguments": c.arguments, "active": True,
                "activity_status": "up"}

    # ---- overview / nodes / vhosts ----------------------------------------------------------------
    def overview(self, user: User, **_: Any) -> HttpResponse:
        vhs = self._vhosts(None, user)
        queues = [q for vh in vhs for q in vh.queues.values()]
        ready = sum(q.message_count for q in queues)
        unacked = sum(q.unacked for q in queues)
        amqp = [c for c in self.node.connections if self._own(user, c.user)]
        conns = len(amqp) + sum(1 for c in self.node.stomp_connections if self._own(user, c.user))
        return _json({
            "management_version": __version__, "product_name": "haremq", "product_version": __version__,
            "rabbitmq_version": "3.10.8", "node": self.node.cluster_name, "cluster_name": self.node.cluster_name,
            "object_totals": {"queues": len(queues), "connections": conns,
                              "channels": sum(len(c.channels) for c in amqp),
                              "consumers": sum(q.consumer_count for q in queues),
                              "exchanges": sum(len(vh.exchanges) for vh in vhs), "vhosts": len(vhs)},
            "queue_totals": self._rates(("", "totals" if self._sees_all(user) else f"totals:{user.name}"), {
                "messages": ready + unacked, "messages_ready": ready, "messages_unacknowledged": unacked}, gauge=True),
            "churn_rates": {},
            "message_stats": self._rates(("", "" if self._sees_all(user) else f"user:{user.name}"), {
                "publish": sum(q.published for q in queues), "deliver_get": sum(q.delivered for q in queues),
                "ack": sum(q.acked for q in queues), "redeliver": sum(q.redelivered for q in queues)}),
            "listeners": self._listeners(),
            "contexts": [{"node": self.node.cluster_name, "description": "haremq management",
                          "path": "/", "port": str(self.listeners.management_port)}],
            "exchange_types": [{"name": t, "description": "", "enabled": True} for t in EXCHANGE_TYPES],
            "statistics_db_event_queue": 0,
        })

    def _node_info(self) -> dict[str, Any]:
        """RabbitMQ's node object from what this process really has: file descriptors, RSS against the
        memory watermark, free disk against ``disk_free_limit`` (statvfs), alarms, listeners."""
        node = self.node
        try:
            fd_used = len(os.listdir("/proc/self/fd"))
        except OSError:
            fd_used = 0
        fd_total = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        disk_free = node.disk_free()
        conns = len(node.connections) + len(node.stomp_connections)
        return {
            "name": node.cluster_name, "type": "disc", "running": True, "being_drained": False,
            "os_pid": str(os.getpid()), "uptime": int((time.time() - self.started) * 1000),
            "mem_used": self.metrics.rss(), "mem_limit": node.memory_limit(), "mem_alarm": node.memory_alarm,
            "disk_free": disk_free if disk_free is not None else 0,
            "disk_free_limit": node.settings.disk_free_limit, "disk_free_alarm": node.disk_alarm,
            "fd_used": fd_used, "fd_total": fd_total if fd_total != resource.RLIM_INFINITY else 1 << 20,
            "sockets_used": conns, "sockets_total": fd_total if fd_total != resource.RLIM_INFINITY else 1 << 20,
            "proc_used": threading.active_count(), "proc_total": 1 << 20, "processors": os.cpu_count() or 1,
            "run_queue": 0, "partitions": [], "net_ticktime": 60, "rates_mode": "basic",
            "exchange_types": [{"name": t, "description": "", "enabled": True} for t in EXCHANGE_TYPES],
            "applications": [{"name": "haremq", "description": "haremq message broker", "version": __version__}],
            "enabled_plugins": ["rabbitmq_management", "rabbitmq_prometheus"],
            "listeners": self._listeners(), "config_files": [], "log_files": [],
        }

    def nodes(self, query: dict[str, str], **_: Any) -> HttpResponse:
        return self._listing([self._node_info()], query)

    def node_get(self, node: str, **_: Any) -> HttpResponse:
        if node != self.node.cluster_name:
            raise HttpError(404, "Object Not Found")
        return _json(self._node_info())

    def vhosts(self, user: User, query: dict[str, str], **_: Any) -> HttpResponse:
        return self._listing([self._vhost_info(vh) for vh in self._vhosts(None, user)], query, ("name",))

    def _vhost_info(self, vh: VHost) -> dict[str, Any]:
        qs = list(vh.queues.values())
        ready = sum(q.message_count for q in qs)
        unacked = sum(q.unacked for q in qs)
        conns = [c for c in list(self.node.connections) + list(self.node.stomp_connections)
                 if c.vhost is not None and c.vhost.name == vh.name]
        return {"name": vh.name, "description": "", "tags": [], "tracing": False,
                "cluster_state": {self.node.cluster_name: "running"},
                **self._rates(("vhc", vh.name), {"messages": ready + unacked, "messages_ready": ready,
                                                 "messages_unacknowledged": unacked}, gauge=True),
                **self._rates(("vho", vh.name), {"recv_oct": sum(c.bytes_in for c in conns),
                                                 "send_oct": sum(c.bytes_out for c in conns)}),
                "message_stats": self._rates(("vh", vh.name), {
                    "publish": sum(q.published for q in qs), "deliver_get": sum(q.delivered for q in qs),
                    "ack": sum(q.acked for q in qs), "redeliver": sum(q.redelivered for q in qs)})}

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
    def queues(self, user: User, query: dict[str, str], vhost: str | None = None, **_: Any) -> HttpResponse:
        return self._listing([self.queue_info(q) for vh in self._vhosts(vhost, user) for q in vh.queues.values()
                              if not q.deleted], query, ("vhost", "name"))

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

    def queue_get_messages(self, vhost: str, name: str, user: User, body: dict[str, Any], query: dict[str, str],
                           **_: Any) -> HttpResponse:
        """RabbitMQ's "get messages": ``ackmode`` ``ack_requeue_false`` consumes, ``reject_requeue_false``
        rejects (dead-letters), ``ack_requeue_true``/``reject_requeue_true`` take and requeue (flagged
        redelivered). Without ``ackmode`` (or with haremq's ``"browse"``) it peeks: nothing is taken."""
        q = self._queue(vhost, name, user)
        s = self._session(user, vhost)
        self.broker.check(s, "read", "queue", name)  # payloads: as a basic.get would
        raw = body.get("count", query.get("count", 1))
        count = int(raw) if not isinstance(raw, bool) else 1
        if not 0 <= count <= 10000:
            raise HttpError(400, "count must be between 0 and 10000")
        ackmode = body.get("ackmode", "browse")  # a GET (no body) only ever browses
        if ackmode not in ACKMODES:
            raise HttpError(400, f"ackmode must be one of {', '.join(ACKMODES)}")
        encoding = body.get("encoding", "auto")
        if encoding not in ("auto", "base64"):
            raise HttpError(400, "encoding must be 'auto' or 'base64'")
        trunc_raw = body.get("truncate")
        truncate = None if trunc_raw in (None, "") or isinstance(trunc_raw, bool) else int(trunc_raw)
        if truncate is not None and truncate < 0:
            raise HttpError(400, "truncate must not be negative")
        out = []
        if ackmode == "browse":
            for i, e in enumerate(q.entries()):
                if i >= count:
                    break
                out.append(self._message(self._entry_message(q, e), e.delivery_count, q.message_count - i - 1,
                                         encoding, truncate))
            return _json(out)
        for _i in range(count):
            got = self.broker.get(s, name, no_ack=False)
            if got is None:
                break
            _tag, e, left = got
            out.append(self._message(self._entry_message(q, e), e.delivery_count - 1, left, encoding, truncate))
        if out:
            if ackmode == "ack_requeue_false":
                s.ack(0, multiple=True)
            else:
                s.nack(0, multiple=True, requeue=ackmode.endswith("requeue_true"))
        self.broker.flush()
        self.node.flush_output()
        return _json(out)

    @staticmethod
    def _entry_message(q: Queue, e: Any) -> Message:
        msg: Message | Any = e.msg
        if msg is PAGED:  # only in the store: read it for display, leave the entry paged out
            r = q.vhost.broker.read_message(q, e.seq)
            return Message(r.exchange, r.routing_key, Properties(**r.props), r.body or b"")
        assert isinstance(msg, Message)
        return msg

    @staticmethod
    def _message(msg: Message, delivery_count: int, left: int, encoding: str = "auto",
                 truncate: int | None = None) -> dict[str, Any]:
        body = msg.body if truncate is None else msg.body[:truncate]
        try:
            if encoding == "base64":
                raise UnicodeDecodeError("utf-8", b"", 0, 1, "base64 asked for")
            payload, enc = body.decode("utf-8"), "string"
        except UnicodeDecodeError:
            payload, enc = base64.b64encode(body).decode(), "base64"
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
    def _exchange_def(vh: VHost, name: str) -> dict[str, Any]:
        ex = vh.exchanges[name]
        return {"name": ex.name, "vhost": vh.name, "type": ex.type, "durable": ex.durable,
                "auto_delete": ex.auto_delete, "internal": ex.internal, "arguments": ex.arguments}

    def _exchange_info(self, vh: VHost, name: str) -> dict[str, Any]:
        ex = vh.exchanges[name]
        return {**self._exchange_def(vh, name), "user_who_performed_action": "", "policy": None,
                "message_stats": self._rates(("x", vh.name, name), {"publish_in": ex.publish_in,
                                                                    "publish_out": ex.publish_out})}

    def exchanges(self, user: User, query: dict[str, str], vhost: str | None = None, **_: Any) -> HttpResponse:
        return self._listing([self._exchange_info(vh, n) for vh in self._vhosts(vhost, user) for n in vh.exchanges],
                             query, ("vhost", "name"))

    def exchange_get(self, vhost: str, name: str, user: User, **_: Any) -> HttpResponse:
        vh = self._vhost(vhost, user)
        name = "" if name == "amq.default" else name
        if name not in vh.exchanges:
            raise HttpError(404, "Object Not Found")
        return _json(self._exchange_info(vh, name))

    def exchange_bindings_source(self, vhost: str, name: str, user: User, **_: Any) -> HttpResponse:
        vh = self._vhost(vhost, user)
        name = "" if name == "amq.default" else name
        if name not in vh.exchanges:
            raise HttpError(404, "Object Not Found")
        return _json([b for b in self._bindings(vh) if b["source"] == name])

    def exchange_bindings_destination(self, vhost: str, name: str, user: User, **_: Any) -> HttpResponse:
        vh = self._vhost(vhost, user)
        if name not in vh.exchanges:
            raise HttpError(404, "Object Not Found")
        return _json([b for b in self._bindings(vh) if b["destination"] == name
                      and b["destination_type"] == "exchange"])

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

    def exchange_publish(self, vhost: str, name: str, user: User, body: dict[str, Any], **_: Any) -> Answer:
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
        try:  # what every AMQP consumer will be sent: a value it cannot carry would close their connections
            encode_properties(p)
        except (TypeError, ValueError, OverflowError, struct.error) as exc:
            raise HttpError(400, f"invalid message properties: {exc}"[:300]) from None
        rk = _str(body, "routing_key", "")
        name = "" if name == "amq.default" else name  # the API's name for the default exchange
        from haremq.core.broker import REJECTED, ROUTED

        written = self.broker.written
        written.clear()
        result = self.broker.publish(self._session(user, vhost), name, Message(name, rk, p, data))
        if result == REJECTED and self.broker.store_failed:  # refused by a store that cannot write: our fault
            raise HttpError(503, "message not stored: the store cannot make messages durable")
        routed = result == ROUTED
        positions = dict(written)
        written.clear()
        self.broker.flush()
        self.node.flush_output()
        res = _json({"routed": routed})
        if not positions:
            return res

        async def durable() -> HttpResponse:  # as RabbitMQ's publish, which waits for its confirm
            await self.node.wait_durable(positions)
            return res

        return durable()

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

    def bindings_between_exchanges(self, vhost: str, source: str, name: str, user: User, **_: Any) -> HttpResponse:
        return _json([b for b in self._bindings(self._vhost(vhost, user)) if b["source"] == source
                      and b["destination"] == name and b["destination_type"] == "exchange"])

    def bind_exchange(self, vhost: str, source: str, name: str, user: User, body: dict[str, Any],
                      **_: Any) -> Answer:
        if name not in self._vhost(vhost).exchanges:
            raise HttpError(404, "Object Not Found")
        rk = _str(body, "routing_key", "")
        self.broker.exchange_bind(self._session(user, vhost), name, source, rk, _args(body), defer=True)
        return self._settled(HttpResponse(201, headers=[("Location", rk or "~")]))

    def unbind_exchange(self, vhost: str, source: str, name: str, props: str, user: User, **_: Any) -> Answer:
        if name not in self._vhost(vhost).exchanges:
            raise HttpError(404, "Object Not Found")
        rk = "" if props == "~" else props
        self.broker.exchange_bind(self._session(user, vhost), name, source, rk, {}, unbind=True, defer=True)
        return self._settled(HttpResponse(204))

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
        self.broker.queue_bind(self._session(user, vhost), name, source, rk, {}, unbind=True, defer=True)
        return self._settled(HttpResponse(204))

    # ---- connections, channels, consumers -------------------------------------------------------------
    def _conn_name(self, c: Any) -> str:
        """RabbitMQ's connection name: ``peer -> local`` (what rabbitmqadmin's close takes)."""
        local = self._local(c)
        return f"{c.peer[0]}:{c.peer[1]} -> {local[0]}:{local[1]}"

    @staticmethod
    def _local(c: Any) -> tuple[str, int]:
        t = c.transport
        sock = t.get_extra_info("sockname") if t is not None else None
        return (str(sock[0]), int(sock[1])) if isinstance(sock, tuple) and len(sock) >= 2 else ("?", 0)

    def _conn_info(self, c: Any, protocol: str) -> dict[str, Any]:
        t = c.transport
        host, port = self._local(c)
        amqp = protocol == "AMQP 0-9-1"
        proto = c.proto if amqp else None
        connected = getattr(c, "connected_at", None)
        info: dict[str, Any] = {
            "name": self._conn_name(c), "protocol": protocol, "node": self.node.cluster_name,
            "type": "network", "peer_host": c.peer[0], "peer_port": c.peer[1], "host": host, "port": port,
            "user": c.user.name if c.user else None, "user_who_performed_action": c.user.name if c.user else None,
            "vhost": c.vhost.name if c.vhost else None, "channels": len(c.channels) if amqp else 0,
            "recv_oct": c.bytes_in, "send_oct": c.bytes_out,
            "state": "closing" if c.closing else "blocked" if c.reading_paused else "running",
            "ssl": t is not None and t.get_extra_info("sslcontext") is not None,
            "connected_at": int(connected * 1000) if connected is not None else None,
            "auth_mechanism": c.auth_mechanism if amqp else None,  # STOMP: login/passcode headers
        }
        tls = t.get_extra_info("ssl_object") if info["ssl"] else None
        if tls is not None:  # RabbitMQ's names; the subject of a verified client certificate only
            info.update({"ssl_protocol": tls.version(), "ssl_cipher": (tls.cipher() or ("?",))[0],
                         "peer_cert_subject": f"CN={c.cert_name}" if c.cert_name is not None else None})
        info.update(self._rates(("conn", info["name"]), {"recv_oct": c.bytes_in, "send_oct": c.bytes_out}))
        if proto is not None:
            info.update({"channel_max": proto.channel_max, "frame_max": proto.frame_max, "timeout": proto.heartbeat,
                         "client_properties": c.client_properties})
        else:
            info.update({"channel_max": 0, "frame_max": 0, "timeout": 0, "client_properties": {}})
        return info

    def _all_conns(self, user: User) -> list[tuple[Any, str]]:
        return [(c, "AMQP 0-9-1") for c in list(self.node.connections) if self._own(user, c.user)] + \
            [(s, "STOMP") for s in list(self.node.stomp_connections) if self._own(user, s.user)]

    def connections(self, user: User, query: dict[str, str], **_: Any) -> HttpResponse:
        return self._listing([self._conn_info(c, p) for c, p in self._all_conns(user)], query)

    def vhost_connections(self, vhost: str, user: User, query: dict[str, str], **_: Any) -> HttpResponse:
        self._vhost(vhost, user)
        return self._listing([self._conn_info(c, p) for c, p in self._all_conns(user)
                              if c.vhost is not None and c.vhost.name == vhost], query)

    def _conn(self, name: str, user: User) -> tuple[Any, str]:
        for c, p in self._all_conns(user):
            if self._conn_name(c) == name:
                return c, p
        raise HttpError(404, "Object Not Found")

    def connection_get(self, name: str, user: User, **_: Any) -> HttpResponse:
        return _json(self._conn_info(*self._conn(name, user)))

    def connection_close(self, name: str, user: User, req: HttpRequest, **_: Any) -> HttpResponse:
        """Close a client connection, as RabbitMQ does: AMQP connection.close 320 (CONNECTION_FORCED) with
        the ``X-Reason`` header's text; STOMP an ERROR frame. A user may close its own connections; closing
        another user's needs ``administrator`` (RabbitMQ: the same rule)."""
        c, _p = self._conn(name, user)
        if "administrator" not in user.tags and (c.user is None or c.user.name != user.name):
            raise HttpError(403, "Not administrator user")
        reason = req.headers.get("x-reason", "Closed via management plugin")[:255]
        c.shutdown(reason)
        self.node.flush_output()
        return HttpResponse(204)

    def _channel_infos(self, user: User, only: Any = None) -> list[dict[str, Any]]:
        out = []
        for c in list(self.node.connections):
            if not self._own(user, c.user) or (only is not None and c is not only):
                continue
            cname = self._conn_name(c)
            for n, ch in c.channels.items():
                s = cast(Session, ch.session)  # the core session behind the channel handler
                info = {"name": f"{cname} ({n})", "number": n, "node": self.node.cluster_name,
                        "connection_details": {"name": cname, "peer_host": c.peer[0], "peer_port": c.peer[1]},
                        "user": c.user.name if c.user else None, "vhost": s.vhost.name,
                        "consumer_count": len(s.consumers), "messages_unacknowledged": len(s.leases),
                        "messages_unconfirmed": 0, "messages_uncommitted": len(ch.tx_publishes) if ch.tx else 0,
                        "acks_uncommitted": len(ch.tx_acks) if ch.tx else 0,
                        "prefetch_count": s.prefetch, "global_prefetch_count": s.global_prefetch,
                        "confirm": ch.confirm, "transactional": ch.tx, "state": "running"}
                # delivery tags number every delivery and get on the channel: the count of both
                info["message_stats"] = self._rates(("channel", str(info["name"])), {
                    "publish": s.published, "deliver_get": s.next_tag - 1, "ack": s.acked})
                out.append(info)
        return out

    def channels(self, user: User, query: dict[str, str], **_: Any) -> HttpResponse:
        return self._listing(self._channel_infos(user), query)

    def connection_channels(self, name: str, user: User, query: dict[str, str], **_: Any) -> HttpResponse:
        c, p = self._conn(name, user)
        return self._listing(self._channel_infos(user, c) if p == "AMQP 0-9-1" else [], query)

    def consumers(self, user: User, vhost: str | None = None, **_: Any) -> HttpResponse:
        return _json([self._consumer_info(q, c) for vh in self._vhosts(vhost, user) for q in vh.queues.values()
                      for c in q.consumers])

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
            "exchanges": [self._exchange_def(vh, n) for vh in vhs for n in vh.exchanges
                          if n and not n.startswith("amq.")],
            "bindings": [b for vh in vhs for b in self._bindings(vh) if b["source"]],
            "policies": [p.to_json() for vh in vhs for p in vh.policies.values()],
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
        for pd in items("policies"):
            pvh = _str(pd, "vhost", "/")
            if pvh not in vhosts:
                raise HttpError(400, f"policy in unknown vhost '{pvh[:60]}'")
            changes.append(policy_change(self._policy(pvh, _str(pd, "name"), pd)))
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

    # ---- health checks (RabbitMQ's /api/health/checks/*) ---------------------------------------------------
    def _alarms(self) -> list[dict[str, str]]:
        out = []
        if self.node.memory_alarm:
            out.append({"node": self.node.cluster_name, "resource": "memory"})
        if self.node.disk_alarm:
            out.append({"node": self.node.cluster_name, "resource": "disk"})
        return out

    def check_alarms(self, **_: Any) -> HttpResponse:
        alarms = self._alarms()
        if alarms:
            return _json({"status": "failed", "reason": "There are alarms in effect in the cluster",
                          "alarms": alarms}, 503)
        return _json({"status": "ok"})

    def check_vhosts(self, **_: Any) -> HttpResponse:
        return _json({"status": "ok"})  # a vhost exists only while it runs (no per-vhost supervisor to fail)

    def _listeners(self) -> list[dict[str, Any]]:
        http = self.listeners
        out: list[dict[str, Any]] = []
        for proto, port in (("amqp", self.node.amqp_port), ("stomp", self.node.stomp_port), ("sqs", http.sqs_port),
                            ("http", http.management_port), ("amqp/ssl", self.node.amqps_port),
                            ("stomp/ssl", self.node.stomps_port), ("sqs/ssl", http.sqs_https_port),
                            ("https", http.management_https_port)):
            if port is not None:
                out.append({"node": self.node.cluster_name, "protocol": proto,
                            "ip_address": self.node.settings.bind, "port": port})
        return out

    def check_port(self, port: str, **_: Any) -> HttpResponse:
        try:
            wanted = int(port)
        except ValueError:
            raise HttpError(400, f"invalid port '{port[:20]}'") from None
        ports = [x["port"] for x in self._listeners()]
        if wanted in ports:
            return _json({"status": "ok", "port": wanted})
        return _json({"status": "failed", "reason": f"No active listener on port {wanted}", "missing": wanted,
                      "ports": ports}, 503)

    def check_protocol(self, protocol: str, **_: Any) -> HttpResponse:
        aliases = {"amqp091": "amqp", "amqp0.9.1": "amqp", "amqp0-9-1": "amqp", "stomp": "stomp", "http": "http",
                   "https": "https", "amqp": "amqp", "sqs": "sqs"}
        wanted = aliases.get(protocol.lower(), protocol.lower())
        protocols = [x["protocol"] for x in self._listeners()]
        if wanted in protocols:
            return _json({"status": "ok", "protocol": wanted})
        return _json({"status": "failed", "reason": f"No active listener for protocol {protocol}",
                      "missing": protocol, "protocols": protocols}, 503)

    # ---- cluster, extensions, feature flags, parameters ----------------------------------------------------
    def cluster_name(self, **_: Any) -> HttpResponse:
        return _json({"name": self.node.cluster_name})

    def extensions(self, **_: Any) -> HttpResponse:
        return _json([])

    def feature_flags(self, **_: Any) -> HttpResponse:
        """The RabbitMQ feature flags whose behaviour haremq has (all enabled; nothing to migrate)."""
        flags = (("implicit_default_bindings", "Default bindings are computed, not stored"),
                 ("quorum_queue", "x-queue-type quorum: RabbitMQ's quorum queue rules (durable, delivery limit, "
                                  "x-delivery-count), with a single replica until clustering arrives"),
                 ("virtual_host_metadata", "Virtual host descriptions and tags"),
                 ("empty_basic_get_metric", "Count empty basic.get"))
        return _json([{"name": n, "desc": d, "doc_url": "", "stability": "stable", "provided_by": "rabbit",
                       "state": "enabled"} for n, d in flags])

    def parameters(self, vhost: str | None = None, **_: Any) -> HttpResponse:
        if vhost is not None:
            self._vhost(vhost)
        return _json([])  # no parameter components (shovel, federation) exist

    def parameter_get(self, vhost: str, **_: Any) -> HttpResponse:
        self._vhost(vhost)
        raise HttpError(404, "Object Not Found")

    def parameter_put(self, component: str, **_: Any) -> HttpResponse:
        # RabbitMQ's answer when the plugin providing a component is not enabled
        raise HttpError(400, f"component '{component[:60]}' not found: haremq has no shovel or federation")

    def global_parameters(self, **_: Any) -> HttpResponse:
        return _json([{"name": "cluster_name", "value": self.node.cluster_name}])

    def global_parameter_get(self, name: str, **_: Any) -> HttpResponse:
        if name != "cluster_name":
            raise HttpError(404, "Object Not Found")
        return _json({"name": "cluster_name", "value": self.node.cluster_name})

    def policies(self, user: User, vhost: str | None = None, **_: Any) -> HttpResponse:
        return _json([p.to_json() for vh in self._vhosts(vhost, user)
                      for p in sorted(vh.policies.values(), key=lambda p: (-p.priority, p.name))])

    def policy_get(self, vhost: str, name: str, user: User, **_: Any) -> HttpResponse:
        p = self._vhost(vhost, user).policies.get(name)
        if p is None:
            raise HttpError(404, "Object Not Found")
        return _json(p.to_json())

    @staticmethod
    def _policy(vhost: str, name: str, body: dict[str, Any]) -> Policy:
        if not name or len(name) > 255:
            raise HttpError(400, "invalid policy name")
        try:
            return Policy.parse(vhost, name, body)
        except PolicyError as e:
            raise HttpError(400, str(e)) from None

    async def policy_put(self, vhost: str, name: str, body: dict[str, Any], **_: Any) -> HttpResponse:
        """Validated, stored (metadata store), then applied to the vhost's queues: RabbitMQ's
        policy keys for length limits, TTLs, expiry, overflow and dead-lettering."""
        vh = self._vhost(vhost)
        policy = self._policy(vhost, name, body)
        for q in list(vh.queues.values()):  # the merged arguments must be valid for every queue it would match
            if policy.matches_queue(q.name):
                QueueArgs.parse(q.name, vhost, effective_arguments(q.arguments, policy))
        existed = name in vh.policies
        await self.node.definitions.put_policy(policy)
        self.node.flush_output()  # a lower limit may have dead-lettered to consumers
        return HttpResponse(204 if existed else 201)

    async def policy_delete(self, vhost: str, name: str, **_: Any) -> HttpResponse:
        if name not in self._vhost(vhost).policies:
            raise HttpError(404, "Object Not Found")
        await self.node.definitions.delete_policy(vhost, name)
        return HttpResponse(204)

    def operator_policies(self, vhost: str | None = None, **_: Any) -> HttpResponse:
        if vhost is not None:
            self._vhost(vhost)
        return _json([])

    def vhost_limits(self, vhost: str | None = None, **_: Any) -> HttpResponse:
        if vhost is not None:
            self._vhost(vhost)
        return _json([])  # haremq enforces no per-vhost limits (max-connections, max-queues)

    def vhost_permissions(self, vhost: str, **_: Any) -> HttpResponse:
        self._vhost(vhost)
        return _json([{"user": u.name, "vhost": vhost, "configure": p.configure, "write": p.write, "read": p.read}
                      for u in self.broker.users.users.values() for vh, p in u.permissions.items() if vh == vhost])

    def user_permissions(self, username: str, **_: Any) -> HttpResponse:
        u = self._perm_user(username)
        return _json([{"user": u.name, "vhost": vh, "configure": p.configure, "write": p.write, "read": p.read}
                      for vh, p in u.permissions.items()])

    def definitions_vhost_get(self, vhost: str, req: HttpRequest, **kw: Any) -> HttpResponse:
        """One vhost's exchanges, queues and bindings (RabbitMQ leaves out users, vhosts, permissions)."""
        self._vhost(vhost)
        full = json.loads(self.definitions_get(**kw).body)
        return _json({"rabbit_version": full["rabbit_version"], "product_name": full["product_name"],
                      "product_version": full["product_version"],
                      **{k: [x for x in full[k] if x.get("vhost") == vhost]
                         for k in ("queues", "exchanges", "bindings", "policies")}})

    async def definitions_vhost_post(self, vhost: str, user: User, body: dict[str, Any], **_: Any) -> HttpResponse:
        """Import exchanges, queues and bindings into ``vhost`` (their own ``vhost`` fields are ignored)."""
        self._vhost(vhost)
        for key in ("users", "vhosts", "permissions"):
            if body.get(key):
                raise HttpError(400, f"'{key}' cannot be imported into a single virtual host")
        doc: dict[str, Any] = {}
        for key in ("exchanges", "queues", "bindings", "policies"):
            items = body.get(key, [])
            if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
                raise HttpError(400, f"'{key}' must be a list of objects")
            doc[key] = [{**x, "vhost": vhost} for x in items]
        return await self.definitions_post(user=user, body=doc)

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
                                                "404": {"description": "Not found"},
                                                "503": {"description": "Health check failed, or the "
                                                                       "definitions store is unavailable"}}}
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
