"""A trie of topic binding patterns, matched word by word against routing keys.

Semantics follow RabbitMQ 3.x (``rabbit_exchange_type_topic`` / ``rabbit_db_topic_exchange``):

* keys and patterns are split on ``.``; the empty string is *zero* words (RabbitMQ special-cases ``<<>>`` to
  ``[]``), while every other string keeps its empty words: ``"a..b"`` is ``["a", "", "b"]``, ``"."`` is
  ``["", ""]``. So ``"#"`` and ``""`` match the key ``""``, but ``"*"`` does not;
* ``*`` matches exactly one word (which may be empty), ``#`` zero or more words;
* a key word that is literally ``*`` or ``#`` gets no special treatment: it is matched by the literal
  pattern words ``*``/``#`` only through their wildcard meaning, which already accepts any single word.

Each node keeps its literal children in a dict and its ``*`` and ``#`` children in two slots, so one step
costs a dict lookup plus two attribute reads, and matching costs O(key words x live branches), independent of
how many bindings the trie holds.

``#`` is where naive backtracking explodes: a path holding k ``#`` nodes can be reached in O(n^k) ways for an
n-word key. Two facts keep it polynomial:

* expanding a ``#`` node from word ``i`` covers every expansion of the same node from a later word, so a
  per-match memo records the lowest start already expanded for each ``#`` node and only the new, earlier
  positions are explored (every (``#`` node, word) pair is visited at most once);
* the memo is needed only when some ``#`` node sits below another ``#``; with at most one ``#`` per path each
  ``#`` node is reached once per key anyway, so the common case allocates nothing but the word list.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

from amqpd.broker.model.exchange.base import BindingId, Exchange


class _Node:
    __slots__ = ("children", "dests", "hash", "hashes", "star")

    def __init__(self, hashes: int) -> None:
        self.children: dict[str, _Node] = {}
        self.star: _Node | None = None
        self.hash: _Node | None = None
        # destination -> number of add() calls not yet undone (one per binding argument set, say)
        self.dests: dict[Hashable, int] = {}
        # '#' edges on the path from the root to this node, itself included
        self.hashes = hashes

    def is_empty(self) -> bool:
        return not self.dests and not self.children and self.star is None and self.hash is None


def split_key(key: str) -> list[str]:
    """Words of a routing key or binding pattern, as RabbitMQ splits them ("" is no words at all)."""
    return key.split(".") if key else []


class TopicTrie:
    """Binding patterns -> refcounted destinations; ``match`` adds every destination whose pattern matches."""

    __slots__ = ("_nested_hashes", "_root")

    def __init__(self) -> None:
        self._root = _Node(0)
        # '#' nodes with another '#' above them: only then does matching need its memo
        self._nested_hashes = 0

    def is_empty(self) -> bool:
        return self._root.is_empty()

    def add(self, pattern: str, dest: Hashable) -> None:
        """Add one reference from ``pattern`` to ``dest`` (adding the same pair twice needs two removes)."""
        node = self._root
        for word in split_key(pattern):
            if word == "*":
                nxt = node.star
                if nxt is None:
                    nxt = node.star = _Node(node.hashes)
            elif word == "#":
                nxt = node.hash
                if nxt is None:
                    nxt = node.hash = _Node(node.hashes + 1)
                    if nxt.hashes > 1:
                        self._nested_hashes += 1
            else:
                nxt = node.children.get(word)
                if nxt is None:
                    nxt = node.children[word] = _Node(node.hashes)
            node = nxt
        node.dests[dest] = node.dests.get(dest, 0) + 1

    def remove(self, pattern: str, dest: Hashable) -> bool:
        """Drop one reference from ``pattern`` to ``dest``; False if there was none. Prunes emptied nodes."""
        path: list[tuple[_Node, str]] = []  # (parent, word leading to the next node)
        node: _Node | None = self._root
        for word in split_key(pattern):
            assert node is not None
            path.append((node, word))
            if word == "*":
                node = node.star
            elif word == "#":
                node = node.hash
            else:
                node = node.children.get(word)
            if node is None:
                return False
        assert node is not None
        count = node.dests.get(dest)
        if count is None:
            return False
        if count > 1:
            node.dests[dest] = count - 1
            return True
        del node.dests[dest]
        # Walk back up, unlinking nodes left with neither bindings nor children.
        while path and node.is_empty():
            parent, word = path.pop()
            if word == "*":
                parent.star = None
            elif word == "#":
                parent.hash = None
                if node.hashes > 1:
                    self._nested_hashes -= 1
            else:
                del parent.children[word]
            node = parent
        return True

    def match(self, routing_key: str, out: set[Hashable]) -> None:
        """Add to ``out`` every destination bound with a pattern that matches ``routing_key``."""
        words = split_key(routing_key)
        _walk(self._root, words, 0, len(words), out, {} if self._nested_hashes else None)


def _walk(node: _Node, words: list[str], i: int, n: int, out: set[Hashable], memo: dict[_Node, int] | None) -> None:
    """Match ``words[i:]`` below ``node``: literal steps loop, only ``*`` and ``#`` branches recurse."""
    while i < n:
        h = node.hash
        if h is not None:
            _expand_hash(h, words, i, n, out, memo)
        nxt = node.children.get(words[i])
        i += 1
        s = node.star
        if s is not None:
            if nxt is None:
                node = s  # only the '*' branch goes on: continue the loop rather than recurse
                continue
            _walk(s, words, i, n, out, memo)
        elif nxt is None:
            return
        node = nxt
    if node.dests:
        out.update(node.dests)
    h = node.hash
    if h is not None:
        _expand_hash(h, words, n, n, out, memo)


def _expand_hash(h: _Node, words: list[str], i: int, n: int, out: set[Hashable], memo: dict[_Node, int] | None) -> None:
    """``h`` is reached through a '#' that may swallow ``words[i:j]`` for every j in i..n."""
    stop = n
    if memo is not None:
        done = memo.get(h)
        if done is not None:
            if done <= i:
                return  # an earlier start already tried every j this call would
            # positions done..n were expanded by an earlier call that started later. Depth-first search
            # reaches each '#' node from increasing starts, so this does not happen today; it keeps the memo
            # correct should the walk order ever change.
            stop = done
        memo[h] = i
    if h.dests:
        out.update(h.dests)  # '#' swallowing every remaining word
    hh = h.hash
    if hh is not None:
        # "#.#" matches exactly what "#" does: the inner '#' may start where this one did.
        _expand_hash(hh, words, i, n, out, memo)
    star = h.star
    children = h.children
    if star is None and not children:
        return
    get = children.get
    for j in range(i, stop):
        # the words after the '#' start at j; each branch consumes words[j] itself
        if star is not None:
            _walk(star, words, j + 1, n, out, memo)
        if children:
            c = get(words[j])
            if c is not None:
                _walk(c, words, j + 1, n, out, memo)


class TopicExchange(Exchange):
    """Dot-separated words with ``*`` and ``#`` wildcards, matched through a trie (see broker.model.exchange.topic)."""

    type_name = "topic"
    __slots__ = ("_trie",)

    def _init_routes(self) -> None:
        self._trie = TopicTrie()

    def route(self, routing_key: str, headers: Mapping[str, object] | None, out: set[Hashable]) -> None:
        self._trie.match(routing_key, out)

    def _add(self, bid: BindingId, dest: Hashable, routing_key: str, arguments: dict[str, object]) -> None:
        self._trie.add(routing_key, dest)

    def _remove(self, bid: BindingId, dest: Hashable, routing_key: str, arguments: dict[str, object]) -> None:
        self._trie.remove(routing_key, dest)
