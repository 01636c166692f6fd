"""Policies as RabbitMQ applies them to queues: a vhost's policies match queue names by regex
(``pattern``, ``apply-to`` ``queues`` or ``all``); of the matching ones, the highest ``priority``
applies. Its definition is merged with the queue's own ``x-*`` arguments the way RabbitMQ resolves
conflicts (rabbit_amqqueue_process): for ``message-ttl``, ``expires``, ``max-length`` and
``max-length-bytes`` the smaller value wins; for ``overflow``, ``dead-letter-exchange`` and
``dead-letter-routing-key`` the queue's argument wins; ``delivery-limit`` (the smaller wins) applies to
quorum queues only, as in RabbitMQ, whose quorum queues also let the policy win for ``overflow`` and
``expires``. Keys haremq does not implement are refused,
so a policy that is accepted is one that is applied.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable
from typing import Any

from haremq.core.arguments import OVERFLOW_MODES


def _min(policy: Any, arg: Any) -> Any:
    return min(policy, arg)


def _arg(_policy: Any, arg: Any) -> Any:
    return arg


def _policy(policy: Any, _arg: Any) -> Any:
    return policy


# policy key -> (queue argument, conflict resolution (policy value, argument value) -> value)
POLICY_KEYS: dict[str, tuple[str, Callable[[Any, Any], Any]]] = {
    "message-ttl": ("x-message-ttl", _min),
    "expires": ("x-expires", _min),
    "max-length": ("x-max-length", _min),
    "max-length-bytes": ("x-max-length-bytes", _min),
    "overflow": ("x-overflow", _arg),
    "dead-letter-exchange": ("x-dead-letter-exchange", _arg),
    "dead-letter-routing-key": ("x-dead-letter-routing-key", _arg),
    "delivery-limit": ("x-delivery-limit", _min),  # quorum queues only (RabbitMQ's too)
}
APPLY_TO = ("queues", "exchanges", "all")


class PolicyError(ValueError):
    """A policy document RabbitMQ would refuse (or one naming a key haremq does not apply)."""


@dataclasses.dataclass(frozen=True, slots=True)
class Policy:
    vhost: str
    name: str
    pattern: str
    apply_to: str
    priority: int
    definition: dict[str, Any]
    regex: re.Pattern[str] = dataclasses.field(compare=False, repr=False)

    @classmethod
    def parse(cls, vhost: str, name: str, doc: dict[str, Any]) -> Policy:
        """Validate a policy document (``pattern``, ``definition``, ``priority``, ``apply-to``)."""
        pattern = doc.get("pattern")
        if not isinstance(pattern, str):
            raise PolicyError("'pattern' must be a string")
        try:
            regex = re.compile(pattern)
        except re.error:
            raise PolicyError(f"invalid regular expression '{pattern[:60]}'") from None
        apply_to = doc.get("apply-to", "all")
        if apply_to is None:
            apply_to = "all"
        if apply_to not in APPLY_TO:
            raise PolicyError(f"apply-to '{str(apply_to)[:40]}' unrecognised; should be 'queues', 'exchanges' "
                              "or 'all'")
        priority = doc.get("priority", 0)
        if isinstance(priority, str) and priority.lstrip("-").isdigit():
            priority = int(priority)
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise PolicyError(f"{str(priority)[:40]} priority must be a number")
        definition = doc.get("definition")
        if not isinstance(definition, dict) or not definition:
            raise PolicyError("'definition' must be a non-empty object")
        for key, value in definition.items():
            if key not in POLICY_KEYS:
                raise PolicyError(f"policy key '{str(key)[:60]}' is not supported by haremq (it applies "
                                  f"{', '.join(POLICY_KEYS)})")
            if key in ("message-ttl", "max-length", "max-length-bytes", "expires", "delivery-limit"):
                if isinstance(value, bool) or not isinstance(value, int) or value < (1 if key == "expires" else 0):
                    raise PolicyError(f"{key} must be {'a positive' if key == 'expires' else 'a non-negative'} "
                                      f"integer, not {str(value)[:40]}")
            elif key == "overflow":
                if value not in OVERFLOW_MODES:
                    raise PolicyError(f"overflow must be one of {', '.join(OVERFLOW_MODES)}")
            elif not isinstance(value, str):
                raise PolicyError(f"{key} must be a string")
        return cls(vhost, name, pattern, apply_to, priority, dict(definition), regex)

    def matches_queue(self, name: str) -> bool:
        return self.apply_to in ("queues", "all") and self.regex.search(name) is not None

    def to_json(self) -> dict[str, Any]:
        return {"vhost": self.vhost, "name": self.name, "pattern": self.pattern, "apply-to": self.apply_to,
                "definition": self.definition, "priority": self.priority}


def best_policy(policies: list[Policy], queue: str) -> Policy | None:
    """The policy that applies to ``queue``: the matching one of highest priority (ties: by name)."""
    best: Policy | None = None
    for p in policies:
        if p.matches_queue(queue) and (best is None or (p.priority, best.name) > (best.priority, p.name)):
            best = p
    return best


# RabbitMQ 3.10 resolves these differently for quorum queues (rabbit_quorum_queue:ra_machine_config):
# the policy wins
QUORUM_POLICY_WINS = ("overflow", "expires")


def effective_arguments(arguments: dict[str, Any], policy: Policy | None, *, quorum: bool = False) -> dict[str, Any]:
    """The queue's arguments with ``policy`` merged in (RabbitMQ's conflict resolution)."""
    if policy is None:
        return arguments
    out = dict(arguments)
    for key, value in policy.definition.items():
        arg, resolve = POLICY_KEYS[key]
        if quorum and key in QUORUM_POLICY_WINS:
            resolve = _policy
        out[arg] = value if arg not in arguments else resolve(value, arguments[arg])
    return out
