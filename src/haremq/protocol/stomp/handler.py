"""What STOMP frames do, as a sans-IO handler: SEND, SUBSCRIBE, UNSUBSCRIBE, ACK, NACK over a port.

``StompHandler`` turns the accepted frames of a ``StompConnection`` into calls on a ``StompBrokerPort``
and MESSAGE frames on the connection: destinations (``/queue/``, ``/topic/``, ``/exchange/``,
``/amq/queue/``, ``/temp-queue/``, ``/reply-queue/``), the queues they imply, subscriptions with
their ack modes and ack ids, and the refusal of a SEND no queue kept. It opens no socket and knows
no core type: the server implements the port over the core ``Broker`` (server/stomp.py) and owns
what is connection-wide: authentication, RECEIPTs filed with the durability tracker, transactions'
COMMIT order, the ERROR that ends the connection.

Each SUBSCRIBE gets its own broker session: its delivery tags are the subscription's ack ids
(``T_<subscription>@@<n>@@<tag>``), its prefetch is the ``prefetch-count`` header, ``client`` mode
ACKs are cumulative over exactly that tag space, and UNSUBSCRIBE requeues what it still holds by
closing it. SENDs go through one more session per connection (``pub``).
"""

from __future__ import annotations

import base64
import hashlib
import os
from collections.abc import Callable
from typing import Any, Protocol

from haremq.errors import HareError, NotFound, PreconditionFailed, ResourceError, SyntaxError_
from haremq.message import Message
from haremq.protocol.stomp import mapping as M
from haremq.protocol.stomp import session as S
from haremq.protocol.stomp.frames import V12, Frame

REJECTED = 2
"""``StompBrokerPort.publish``: a queue refused the message (the AMQP nack)."""

ACK_MODES = ("auto", "client", "client-individual")
# SUBSCRIBE headers that become queue arguments when we declare the queue
QUEUE_ARGS = {"x-dead-letter-exchange": str, "x-dead-letter-routing-key": str, "x-expires": int,
              "x-max-length": int, "x-max-length-bytes": int, "x-max-priority": int, "x-message-ttl": int,
              "x-overflow": str, "x-queue-type": str, "x-single-active-consumer": bool}
_MAX_GONE = 1024


class StompSession(Protocol):
    """A broker session as a subscription drives it."""

    prefetch: int

    def ack(self, tag: int, multiple: bool) -> None: ...

    def nack(self, tag: int, multiple: bool, requeue: bool) -> None: ...

    def close(self) -> None: ...


class Named(Protocol):
    @property
    def name(self) -> str: ...


class StompBrokerPort(Protocol):
    """The broker operations STOMP frames need (one port per connection, bound to its vhost)."""

    publish: Callable[[StompSession, str, Message], int]
    """Route and enqueue; ``REJECTED`` when a queue refused it (the broker's bound method)."""

    @property
    def vhost_name(self) -> str: ...

    @property
    def store_broken(self) -> bool:
        """An fsync failed: nothing can be made durable any more."""
        ...

    @property
    def store_failed(self) -> bool:
        """The store could not write (disk full?)."""
        ...

    def open_subscription(self, sub: Subscription) -> StompSession:
        """A session whose deliveries go to ``sub`` (setting ``sub.count`` to each entry's delivery count)."""
        ...

    def has_queue(self, name: str) -> bool: ...

    def check_exchange(self, name: str) -> None:
        """Raise NotFound when the exchange does not exist."""
        ...

    def queue_declare(self, s: StompSession, name: str, *, durable: bool = False, exclusive: bool = False,
                      auto_delete: bool = False, arguments: dict[str, Any] | None = None) -> Named: ...

    def queue_bind(self, s: StompSession, queue: str, exchange: str, routing_key: str) -> None: ...

    def queue_delete(self, s: StompSession, name: str) -> int: ...

    def consume(self, s: StompSession, queue: str, tag: str, *, no_ack: bool) -> object: ...


class Owner(Protocol):
    """The connection side (the listener)."""

    published: bool
    """Set once the connection sent a message (alarms then stop reading it)."""

    def fail(self, err: HareError) -> None:
        """Send an ERROR and end the connection."""
        ...

    def want_output(self) -> None:
        """Output was buffered outside the connection's own read (a delivery)."""
        ...


def flag(h: dict[str, str], name: str, default: bool = False) -> bool:
    v = h.get(name)
    return default if v is None else v.lower() == "true"


def queue_args(h: dict[str, str]) -> dict[str, Any]:
    args: dict[str, Any] = {}
    for name, typ in QUEUE_ARGS.items():
        v = h.get(name)
        if v is None:
            continue
        if typ is int:
            if not (v.strip().isdigit() and v.isascii()):
                raise SyntaxError_(f"header '{name}' must be a non-negative integer, got '{v[:40]}'")
            args[name] = int(v)
        elif typ is bool:
            args[name] = v.lower() == "true"
        else:
            args[name] = v
    return args


class Subscription:
    """One SUBSCRIBE: a broker session with one consumer; the broker's delivery sink for it."""

    __slots__ = ("ack", "count", "delete_on_unsubscribe", "destination", "handler", "id", "prefix", "queue",
                 "session", "tag")

    def __init__(self, handler: StompHandler, sub_id: str, destination: str, ack: str) -> None:
        self.handler = handler
        self.id = sub_id
        self.destination = destination
        self.ack = ack
        # ack ids are ``T_<id>@@<n>@@<tag>``: ``n`` is unique on the connection, so an ACK meant for an
        # earlier subscription with the same id (UNSUBSCRIBE, SUBSCRIBE again) cannot settle this one's
        handler.sub_seq += 1
        self.prefix = f"T_{sub_id}@@{handler.sub_seq}@@"
        self.count = 1  # delivery count of the entry being delivered (set by the port's session)
        self.queue = ""
        self.tag = "T_" + sub_id
        self.delete_on_unsubscribe = False
        self.session: StompSession = handler.port.open_subscription(self)

    def deliver(self, consumer_tag: str, delivery_tag: int, redelivered: bool, queue: str, msg: Message) -> None:
        handler = self.handler
        ack_id = self.prefix + str(delivery_tag)
        headers = [("subscription", self.id), ("destination", M.destination_of(msg)), ("message-id", ack_id),
                   ("redelivered", "true" if redelivered else "false"),
                   ("x-delivery-count", str(self.count - 1))]
        if self.ack != "auto" and handler.proto.version == V12:
            headers.append(("ack", ack_id))
        headers.extend(M.property_headers(msg.props))
        handler.proto.send_message(headers, msg.body)
        handler.owner.want_output()

    def consumer_cancelled(self, consumer_tag: str) -> None:
        """The queue was deleted under us: tell the client and end the connection (spec: ERROR closes)."""
        owner = self.handler.owner
        owner.fail(NotFound(f"subscription '{self.id}' cancelled: queue '{self.queue}' was deleted"))
        owner.want_output()


class StompHandler:
    """One connection's subscriptions and what its SEND/SUBSCRIBE/UNSUBSCRIBE/ACK/NACK frames do.
    A peer error is raised (a ``HareError``): the owner answers it with an ERROR frame."""

    def __init__(self, proto: S.StompConnection, port: StompBrokerPort, owner: Owner, pub: StompSession) -> None:
        self.proto = proto
        self.port = port
        self.owner = owner
        self.pub = pub  # the session SENDs go through
        self.subs: dict[str, Subscription] = {}
        self._gone: set[str] = set()  # ack-id prefixes of recent UNSUBSCRIBEs: late ACKs for them are ignored
        self.sub_seq = 0
        self.temp_queues: dict[str, str] = {}  # /temp-queue/<name> -> queue name

    def apply(self, e: S.Received) -> None:
        a = e.action
        if a is S.Action.SEND:
            self.send(e.frame)
        elif a is S.Action.ACK or a is S.Action.NACK:
            self.settle(e.frame, a is S.Action.NACK)
        elif a is S.Action.SUBSCRIBE:
            self.subscribe(e.frame)
        elif a is S.Action.UNSUBSCRIBE:
            self.unsubscribe(e.frame)

    def close(self) -> None:
        """The connection is ending: every session ends (what they hold is requeued)."""
        for sub in self.subs.values():
            sub.session.close()
        self.subs.clear()
        self.pub.close()

    # ---- SEND ---------------------------------------------------------------------------------------
    def send(self, frame: Frame) -> None:
        h = frame.headers
        dest = M.parse_destination(h["destination"])
        props = M.properties_from_headers(h)
        reply_to = props.reply_to
        if reply_to is not None and reply_to.startswith("/temp-queue/"):
            temp = M.parse_destination(reply_to)
            props = props.replace(reply_to="/reply-queue/" + self.temp_queue(temp.name))
        exchange, key = self.target(dest, h)
        msg = Message(exchange, key, props, frame.body)
        port = self.port
        self.owner.published = True
        # unroutable messages are dropped (and receipted), as RabbitMQ: STOMP has no mandatory flag
        if port.publish(self.pub, exchange, msg) == REJECTED:
            # a queue refused it (the AMQP nack): a RECEIPT would claim a message that is not kept
            if props.delivery_mode == 2 and port.store_broken:
                why = "the store can no longer make persistent messages durable"
            elif props.delivery_mode == 2 and port.store_failed:
                why = "a queue refused it (x-overflow reject-publish) or the store could not write it (disk full?)"
            else:
                why = "a queue refused it (x-max-length / x-max-length-bytes with x-overflow reject-publish)"
            raise ResourceError(f"message to '{h['destination'][:200]}' was not stored: {why}")

    def target(self, dest: M.Destination, h: dict[str, str]) -> tuple[str, str]:
        """(exchange, routing key) for a SEND, declaring the queue a /queue/ destination implies."""
        kind = dest.kind
        if kind == M.QUEUE:
            self.ensure_queue(dest.name, h)
            return "", dest.name
        if kind == M.TOPIC or kind == M.EXCHANGE:
            return dest.name, dest.key
        if kind == M.AMQ_QUEUE or kind == M.REPLY_QUEUE:
            if not self.port.has_queue(dest.name):
                raise NotFound(f"no queue '{dest.name}' in vhost '{self.port.vhost_name}'")
            return "", dest.name
        return "", self.temp_queue(dest.name)

    def ensure_queue(self, name: str, h: dict[str, str]) -> None:
        if not self.port.has_queue(name):
            self.port.queue_declare(self.pub, name, durable=flag(h, "durable", True),
                                    auto_delete=flag(h, "auto-delete"), exclusive=flag(h, "exclusive"),
                                    arguments=queue_args(h))

    def temp_queue(self, name: str) -> str:
        """The private queue behind ``/temp-queue/<name>``, created (and subscribed) on first use."""
        qname = self.temp_queues.get(name)
        if qname is not None:
            return qname
        q = self.port.queue_declare(self.pub, "", exclusive=True, auto_delete=True)
        sub_id = "/temp-queue/" + name
        sub = Subscription(self, sub_id, sub_id, "auto")
        sub.queue = q.name
        self.port.consume(sub.session, q.name, sub.tag, no_ack=True)
        self.subs[sub_id] = sub
        self.temp_queues[name] = q.name
        return q.name

    # ---- SUBSCRIBE / UNSUBSCRIBE ----------------------------------------------------------------------
    def subscribe(self, frame: Frame) -> None:
        h = frame.headers
        destination = h["destination"]
        sub_id = h.get("id", destination)
        if sub_id in self.subs:
            raise PreconditionFailed(f"subscription id '{sub_id}' is already in use on this connection")
        ack = h.get("ack", "auto")
        if ack not in ACK_MODES:
            raise SyntaxError_(f"ack mode '{ack[:40]}' is not one of {', '.join(ACK_MODES)}")
        prefetch = h.get("prefetch-count", "0").strip()
        if not (prefetch.isdigit() and prefetch.isascii()):
            raise SyntaxError_(f"prefetch-count must be a non-negative integer, got '{prefetch[:40]}'")
        dest = M.parse_destination(destination)
        sub = Subscription(self, sub_id, destination, ack)
        sub.session.prefetch = int(prefetch)
        try:
            sub.queue = self.subscription_queue(sub, dest, h)
            self.port.consume(sub.session, sub.queue, sub.tag, no_ack=ack == "auto")
        except HareError:
            sub.session.close()
            raise
        self.subs[sub_id] = sub

    def subscription_queue(self, sub: Subscription, dest: M.Destination, h: dict[str, str]) -> str:
        port = self.port
        s = sub.session
        kind = dest.kind
        if kind == M.QUEUE:
            self.ensure_queue(dest.name, h)
            return dest.name
        if kind == M.AMQ_QUEUE:
            return dest.name
        if kind == M.TOPIC or kind == M.EXCHANGE:
            port.check_exchange(dest.name)  # NotFound before we declare anything
            durable = flag(h, "durable") or flag(h, "persistent")
            if durable:
                if "id" not in h:
                    raise SyntaxError_("a durable subscription needs an 'id' header")
                name = h.get("x-queue-name") or "stomp-subscription-" + base64.urlsafe_b64encode(
                    hashlib.md5(h["id"].encode()).digest()).rstrip(b"=").decode()
                q = port.queue_declare(s, name, durable=True, auto_delete=flag(h, "auto-delete"),
                                       arguments=queue_args(h))
                sub.delete_on_unsubscribe = True
            else:
                name = h.get("x-queue-name") or "stomp-subscription-" + base64.urlsafe_b64encode(
                    os.urandom(16)).rstrip(b"=").decode()
                q = port.queue_declare(s, name, exclusive=True, auto_delete=True, arguments=queue_args(h))
            port.queue_bind(s, q.name, dest.name, dest.key)
            return q.name
        raise SyntaxError_(f"cannot SUBSCRIBE to '{h['destination'][:200]}': "
                           f"{kind} destinations are only for SEND and reply-to")

    def unsubscribe(self, frame: Frame) -> None:
        h = frame.headers
        sub_id = h.get("id") or h.get("destination", "")
        sub = self.subs.pop(sub_id, None)
        if sub is None:
            raise NotFound(f"no subscription '{sub_id}' on this connection")
        sub.session.close()
        if len(self._gone) >= _MAX_GONE:
            self._gone.clear()
        self._gone.add(sub.prefix)
        # a durable topic subscription ends for good when UNSUBSCRIBE says durable (RabbitMQ)
        if sub.delete_on_unsubscribe and (flag(h, "durable") or flag(h, "persistent")):
            self.port.queue_delete(sub.session, sub.queue)

    # ---- ACK / NACK -----------------------------------------------------------------------------------
    def settle(self, frame: Frame, nack: bool) -> None:
        h = frame.headers
        ack_id = h.get("id") if self.proto.version == V12 else h.get("message-id")
        assert ack_id is not None  # required headers are checked by the session
        head, sep, tag_s = ack_id.rpartition("@@")
        sub_id, sep2, _ = head.rpartition("@@")
        if not sep or not sep2 or not sub_id.startswith("T_") or not tag_s.isdigit():
            raise PreconditionFailed(f"'{ack_id[:200]}' is not a message id of this broker")
        sub_id = sub_id[2:]
        sub = self.subs.get(sub_id)
        if sub is None or sub.prefix != head + "@@":
            if head + "@@" in self._gone:
                return  # unsubscribed: its deliveries were already requeued
            raise PreconditionFailed(f"no subscription '{sub_id}' on this connection")
        if sub.ack == "auto":
            return  # nothing to settle: auto mode acknowledged on delivery
        tag = int(tag_s)
        multiple = sub.ack == "client"
        if nack:
            sub.session.nack(tag, multiple, requeue=flag(h, "requeue", True))
        else:
            sub.session.ack(tag, multiple)
