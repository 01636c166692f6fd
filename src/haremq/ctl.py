"""``haremq ctl``: administer a running node over its management API (urllib; no business logic).

Global options (``--port``, ``--user``, ``--json``...) are accepted before or after the command,
as in ``rabbitmqctl``; the port defaults to ``$HAREMQ_MANAGEMENT_PORT`` (the broker's own setting),
then 15672. Output cut short by a closed pipe (``| head``) ends quietly, without a traceback.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

LISTS = {"queues": ("name", "vhost", "messages_ready", "messages_unacknowledged", "consumers"),
         "exchanges": ("name", "vhost", "type", "durable"),
         "bindings": ("source", "destination", "destination_type", "routing_key", "vhost"),
         "users": ("name", "tags"), "permissions": ("user", "vhost", "configure", "write", "read"),
         "vhosts": ("name", "messages"), "connections": ("name", "protocol", "user", "vhost"),
         "consumers": ("consumer_tag", "queue", "ack_required", "prefetch_count")}


class CtlError(Exception):
    pass


class Client:
    def __init__(self, url: str, user: str, password: str) -> None:
        self.url = url.rstrip("/")
        self.auth = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers={"Authorization": self.auth, "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as res:
                raw = res.read()
        except urllib.error.HTTPError as e:
            detail = e.read().decode("utf-8", "replace")
            try:
                detail = json.loads(detail).get("reason", detail)
            except (ValueError, AttributeError):
                pass
            raise CtlError(f"{method} {path}: {e.code} {detail}") from None
        except urllib.error.URLError as e:
            raise CtlError(f"cannot reach {self.url}: {e.reason}") from None
        return json.loads(raw) if raw else None


def _global_options(defaults: bool) -> argparse.ArgumentParser:
    """The options every command takes; on the commands themselves they default to "not given", so
    ``ctl --port N list`` and ``ctl list --port N`` both work."""
    g = argparse.ArgumentParser(add_help=False)

    def d(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    g.add_argument("--url", default=d(None), help="management API base URL (overrides --host/--port)")
    g.add_argument("--host", default=d("127.0.0.1"), help="management API host (default 127.0.0.1)")
    g.add_argument("--port", type=int, default=d(None),
                   help="management API port (default $HAREMQ_MANAGEMENT_PORT, else 15672)")
    g.add_argument("--user", default=d("guest"))
    g.add_argument("--password", default=d("guest"))
    g.add_argument("--vhost", default=d("/"))
    g.add_argument("--json", action="store_true", default=d(False), help="print JSON instead of a table")
    return g


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("ctl", help="administer a running node over its management API",
                       parents=[_global_options(True)])
    cmds = p.add_subparsers(dest="ctl_command", required=True)
    common = _global_options(False)

    def add(name: str, **kw: Any) -> argparse.ArgumentParser:
        return cmds.add_parser(name, parents=[common], **kw)

    lst = add("list", help="list objects")
    lst.add_argument("what", choices=sorted(LISTS))
    d = add("declare", help="declare a queue or exchange")
    d.add_argument("kind", choices=("queue", "exchange"))
    d.add_argument("name")
    d.add_argument("--type", default="direct", help="exchange type")
    d.add_argument("--transient", action="store_true", help="not durable")
    d.add_argument("--arguments", default="{}", help="JSON object of x-arguments")
    rm = add("delete", help="delete a queue, exchange or user")
    rm.add_argument("kind", choices=("queue", "exchange", "user"))
    rm.add_argument("name")
    pg = add("purge", help="purge a queue")
    pg.add_argument("kind", choices=("queue",))
    pg.add_argument("name")
    b = add("bind", help="bind a queue to an exchange")
    b.add_argument("exchange")
    b.add_argument("queue")
    b.add_argument("--routing-key", default="")
    ub = add("unbind", help="remove a queue binding")
    ub.add_argument("exchange")
    ub.add_argument("queue")
    ub.add_argument("--routing-key", default="")
    u = add("add-user", help="create or update a user")
    u.add_argument("name")
    u.add_argument("new_password", metavar="password")
    u.add_argument("--tags", default="")
    sp = add("set-permissions", help="set a user's permissions on the vhost")
    sp.add_argument("name")
    sp.add_argument("configure")
    sp.add_argument("write")
    sp.add_argument("read")
    ex = add("export", help="export definitions to a file (- for stdout)")
    ex.add_argument("file")
    im = add("import", help="import definitions from a file (- for stdin)")
    im.add_argument("file")
    pb = add("publish", help="publish a message (payload from the argument or stdin)")
    pb.add_argument("routing_key")
    pb.add_argument("payload", nargs="?", help="message body (default: read stdin)")
    pb.add_argument("--exchange", default="amq.default", help="exchange (default: the default exchange)")
    pb.add_argument("--properties", default="{}", help="JSON object of message properties")
    gt = add("get", help="show messages at the head of a queue (they stay in the queue)")
    gt.add_argument("queue")
    gt.add_argument("--count", type=int, default=1)


def _table(rows: list[dict[str, Any]], cols: tuple[str, ...]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, dict):
            return str(v.get("name", v))
        return str(v)

    data = [[cell(r.get(c, "")) for c in cols] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in data]) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in data]
    return "\n".join(lines)


def base_url(args: argparse.Namespace) -> str:
    if args.url:
        return str(args.url)
    port = args.port if args.port is not None else os.environ.get("HAREMQ_MANAGEMENT_PORT") or 15672
    return f"http://{args.host}:{port}"


def run(args: argparse.Namespace) -> int:
    try:
        code = _run(args)
        sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
        return code
    except BrokenPipeError:
        # the reader (``| head``) went away: stop quietly; point stdout at /dev/null so the
        # interpreter's final flush does not complain either
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def _run(args: argparse.Namespace) -> int:
    c = Client(base_url(args), args.user, args.password)
    vh = quote(args.vhost, safe="")
    cmd = args.ctl_command
    try:
        if cmd == "list":
            rows = c.call("GET", f"/api/{args.what}")
            print(json.dumps(rows, indent=2) if args.json else _table(rows, LISTS[args.what]))
        elif cmd == "declare":
            body: dict[str, Any] = {"durable": not args.transient, "arguments": json.loads(args.arguments)}
            if args.kind == "exchange":
                body["type"] = args.type
            c.call("PUT", f"/api/{args.kind}s/{vh}/{quote(args.name, safe='')}", body)
            print(f"declared {args.kind} {args.name}")
        elif cmd == "delete":
            path = f"/api/users/{quote(args.name, safe='')}" if args.kind == "user" else \
                f"/api/{args.kind}s/{vh}/{quote(args.name, safe='')}"
            c.call("DELETE", path)
            print(f"deleted {args.kind} {args.name}")
        elif cmd == "purge":
            c.call("DELETE", f"/api/queues/{vh}/{quote(args.name, safe='')}/contents")
            print(f"purged queue {args.name}")
        elif cmd == "bind":
            c.call("POST", f"/api/bindings/{vh}/e/{quote(args.exchange, safe='')}/q/{quote(args.queue, safe='')}",
                   {"routing_key": args.routing_key})
            print(f"bound {args.queue} to {args.exchange}")
        elif cmd == "unbind":
            props = quote(args.routing_key or "~", safe="")
            c.call("DELETE", f"/api/bindings/{vh}/e/{quote(args.exchange, safe='')}/q/"
                             f"{quote(args.queue, safe='')}/{props}")
            print(f"unbound {args.queue} from {args.exchange}")
        elif cmd == "add-user":
            c.call("PUT", f"/api/users/{quote(args.name, safe='')}", {"password": args.new_password, "tags": args.tags})
            print(f"user {args.name} saved")
        elif cmd == "set-permissions":
            c.call("PUT", f"/api/permissions/{vh}/{quote(args.name, safe='')}",
                   {"configure": args.configure, "write": args.write, "read": args.read})
            print(f"permissions of {args.name} on {args.vhost} set")
        elif cmd == "export":
            text = json.dumps(c.call("GET", "/api/definitions"), indent=2)
            if args.file == "-":
                print(text)
                print("exported definitions to stdout", file=sys.stderr)
            else:
                with open(args.file, "w") as f:
                    f.write(text)
                print(f"exported definitions to {args.file}")
        elif cmd == "import":
            if args.file == "-":
                doc = json.load(sys.stdin)
            else:
                with open(args.file) as f:
                    doc = json.load(f)
            c.call("POST", "/api/definitions", doc)
            print(f"imported definitions from {'stdin' if args.file == '-' else args.file}")
        elif cmd == "publish":
            raw = args.payload.encode() if args.payload is not None else sys.stdin.buffer.read()
            try:
                payload, enc = raw.decode("utf-8"), "string"
            except UnicodeDecodeError:
                payload, enc = base64.b64encode(raw).decode(), "base64"
            res = c.call("POST", f"/api/exchanges/{vh}/{quote(args.exchange, safe='')}/publish",
                         {"routing_key": args.routing_key, "payload": payload, "payload_encoding": enc,
                          "properties": json.loads(args.properties)})
            print("message published" if res and res.get("routed") else "message published but NOT routed")
        elif cmd == "get":
            msgs = c.call("POST", f"/api/queues/{vh}/{quote(args.queue, safe='')}/get",
                          {"count": args.count, "ackmode": "browse", "encoding": "auto"})
            print(json.dumps(msgs, indent=2) if args.json else
                  _table(msgs, ("routing_key", "exchange", "redelivered", "payload_bytes", "payload")))
    except CtlError as e:
        print(f"haremq ctl: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        raise  # not a failure of the command: ``run`` ends quietly
    except (OSError, ValueError) as e:
        print(f"haremq ctl: {e}", file=sys.stderr)
        return 2
    return 0
