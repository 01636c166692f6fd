"""Topic exchange: a trie over dot-separated words, with a per-routing-key result cache.

Binding patterns use ``*`` (exactly one word) and ``#`` (zero or more words). The trie holds one
node per pattern word; matching walks it with a set of (node, word index) states so a ``#`` never
makes the walk exponential. Publishers tend to reuse a small set of routing keys, so results are
cached per key (bounded, cleared whenever a binding changes).
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from haremq.core.routing.table import BindingKey, binding_key

CACHE_MAX = 4096


class _Node:
    __slots__ = ("children", "dests")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.dests: dict[BindingKey, Hashable] = {}


def topic_matches(pattern: str, key: str) -> bool:
    """Reference matcher for one pattern (used by tests and headers-free checks)."""
    pw = pattern.split(".")
    kw = key.split(".")
    # dynamic programming over (pattern index, key index)
    reach = {(0, 0)}
    seen: set[tuple[int, int]] = set()
    while reach:
        p, k = reach.pop()
        if (p, k) in seen:
            continue
        seen.add((p, k))
        if p == len(pw):
            if k == len(kw):
                return True
            continue
        w = pw[p]
        if w == "#":
            reach.add((p + 1, k))
            if k < len(kw):
                reach.add((p, k + 1))
        elif k < len(kw) and (w == "*" or w == kw[k]):
            reach.add((p + 1, k + 1))
    return False


class TopicTable:
    __slots__ = ("_cache", "_count", "_root")

    def __init__(self) -> None:
        self._root = _Node()
        self._cache: dict[str, list[Hashable]] = {}
        self._count = 0

    def bind(self, dest: Hashable, routing_key: str, arguments: dict[str, Any]) -> bool:
        node = self._root
        for word in routing_key.split("."):
            nxt = node.children.get(word)
            if nxt is None:
                nxt = node.children[word] = _Node()
            node = nxt
        k = binding_key(dest, routing_key, arguments)
        if k in node.dests:
            return False
        node.dests[k] = dest
        self._count += 1
        self._cache.clear()
        return True

    def unbind(self, dest: Hashable, routing_key: str, arguments: dict[str, Any]) -> bool:
        path = [self._root]
        words = routing_key.split(".")
        for word in words:
            nxt = path[-1].children.get(word)
            if nxt is None:
                return False
            path.append(nxt)
        k = binding_key(dest, routing_key, arguments)
        if path[-1].dests.pop(k, None) is None:
            return False
        self._count -= 1
        self._cache.clear()
        # prune empty branches so the trie does not grow without bound under churn
        for i in range(len(words), 0, -1):
            node = path[i]
            if node.dests or node.children:
                break
            del path[i - 1].children[words[i - 1]]
        return True

    def remove_dest(self, dest: Hashable) -> int:
        removed = 0

        def walk(node: _Node) -> None:
            nonlocal removed
            for k in [k for k, d in node.dests.items() if d is dest]:
                del node.dests[k]
                removed += 1
            for word, child in list(node.children.items()):
                walk(child)
                if not child.dests and not child.children:
                    del node.children[word]

        walk(self._root)
        self._count -= removed
        if removed:
            self._cache.clear()
        return removed

    def route(self, routing_key: str, headers: dict[str, Any] | None) -> list[Hashable]:
        hit = self._cache.get(routing_key)
        if hit is not None:
            return hit
        words = routing_key.split(".")
        n = len(words)
        found: dict[Hashable, None] = {}
        stack: list[tuple[_Node, int]] = [(self._root, 0)]
        seen: set[tuple[int, int]] = set()
        while stack:
            node, i = stack.pop()
            sig = (id(node), i)
            if sig in seen:
                continue
            seen.add(sig)
            children = node.children
            if i == n:
                for d in node.dests.values():
                    found[d] = None
            else:
                child = children.get(words[i])
                if child is not None:
                    stack.append((child, i + 1))
                child = children.get("*")
                if child is not None:
                    stack.append((child, i + 1))
            child = children.get("#")
            if child is not None:
                # '#' consumes zero words (stay at i) or one more word while it stays on '#'
                for j in range(i, n + 1):
                    stack.append((child, j))
        result = list(found)
        if len(self._cache) >= CACHE_MAX:
            self._cache.clear()
        self._cache[routing_key] = result
        return result

    def __len__(self) -> int:
        return self._count
