"""The topic trie against a naive regex matcher, plus its refcounting and pruning."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Hashable

from hypothesis import given
from hypothesis import strategies as st

from amqpd.broker.model.exchange.topic import TopicTrie

# Few distinct words so that random patterns and keys actually meet; "" exercises empty words, and key words
# "*" / "#" check that a key's own wildcard characters are just words.
KEY_WORDS = st.sampled_from(["a", "b", "", "*", "#"])
PATTERN_WORDS = st.sampled_from(["a", "b", "", "*", "#", "#"])
keys = st.lists(KEY_WORDS, max_size=7).map(".".join)
patterns = st.lists(PATTERN_WORDS, max_size=6).map(".".join)
dests = st.integers(min_value=0, max_value=4)


def _words(s: str) -> list[str]:
    return s.split(".") if s else []  # RabbitMQ: "" is zero words, any other string keeps its empty words


def naive_matches(pattern: str, key: str) -> bool:
    """Each word becomes ``word.`` so that zero words, empty words and '#' need no special cases."""
    parts = []
    for w in _words(pattern):
        if w == "*":
            parts.append(r"[^.]*\.")
        elif w == "#":
            parts.append(r"(?:[^.]*\.)*")
        else:
            parts.append(re.escape(w) + r"\.")
    subject = "".join(w + "." for w in _words(key))
    return re.fullmatch("".join(parts), subject) is not None


def naive_route(bindings: Counter[tuple[str, int]], key: str) -> set[Hashable]:
    return {dest for (pattern, dest), n in bindings.items() if n > 0 and naive_matches(pattern, key)}


def trie_route(trie: TopicTrie, key: str) -> set[Hashable]:
    out: set[Hashable] = set()
    trie.match(key, out)
    return out


@given(st.lists(st.tuples(patterns, dests), max_size=25), st.lists(keys, min_size=1, max_size=10))
def test_trie_routes_like_a_regex_matcher(bindings: list[tuple[str, int]], route_keys: list[str]) -> None:
    trie = TopicTrie()
    for pattern, dest in bindings:
        trie.add(pattern, dest)
    model = Counter(bindings)
    for key in route_keys:
        assert trie_route(trie, key) == naive_route(model, key), key


@given(st.lists(st.tuples(patterns, dests), max_size=25), st.randoms(use_true_random=False))
def test_removing_every_binding_leaves_the_trie_empty(bindings: list[tuple[str, int]], rnd: object) -> None:
    trie = TopicTrie()
    for pattern, dest in bindings:
        trie.add(pattern, dest)
    order = list(bindings)
    rnd.shuffle(order)  # type: ignore[attr-defined]
    for pattern, dest in order:
        assert trie.remove(pattern, dest)
    assert trie.is_empty()
    assert trie_route(trie, "a.b") == set()


@given(st.lists(st.tuples(st.booleans(), patterns, dests), max_size=40), st.lists(keys, min_size=1, max_size=5))
def test_adds_and_removes_are_refcounted(ops: list[tuple[bool, str, int]], route_keys: list[str]) -> None:
    trie = TopicTrie()
    model: Counter[tuple[str, int]] = Counter()
    for is_add, pattern, dest in ops:
        if is_add:
            trie.add(pattern, dest)
            model[(pattern, dest)] += 1
        else:
            assert trie.remove(pattern, dest) == (model[(pattern, dest)] > 0)
            if model[(pattern, dest)] > 0:
                model[(pattern, dest)] -= 1
    for key in route_keys:
        assert trie_route(trie, key) == naive_route(model, key)
    assert trie.is_empty() == (sum(model.values()) == 0)


def test_duplicate_add_needs_as_many_removes() -> None:
    trie = TopicTrie()
    trie.add("a.*", "q")
    trie.add("a.*", "q")
    assert trie.remove("a.*", "q")
    assert trie_route(trie, "a.b") == {"q"}
    assert trie.remove("a.*", "q")
    assert trie_route(trie, "a.b") == set()
    assert not trie.remove("a.*", "q")
    assert trie.is_empty()


def test_removing_an_unknown_pattern_or_destination_changes_nothing() -> None:
    trie = TopicTrie()
    trie.add("a.b", "q")
    assert not trie.remove("a.c", "q")
    assert not trie.remove("a.b", "other")
    assert not trie.remove("a.b.c", "q")
    assert not trie.remove("a", "q")
    assert trie_route(trie, "a.b") == {"q"}


def test_empty_key_is_zero_words() -> None:
    trie = TopicTrie()
    for pattern in ("", "#", "*", "#.#", "*.#", "a"):
        trie.add(pattern, pattern)
    assert trie_route(trie, "") == {"", "#", "#.#"}


def test_empty_words_are_words() -> None:
    trie = TopicTrie()
    for pattern in ("a..b", "a.*.b", "*", "*.*", "#.b", "."):
        trie.add(pattern, pattern)
    assert trie_route(trie, "a..b") == {"a..b", "a.*.b", "#.b"}
    assert trie_route(trie, ".") == {"*.*", "."}
    assert trie_route(trie, "a.") == {"*.*"}


def test_rabbitmq_tutorial_patterns() -> None:
    trie = TopicTrie()
    trie.add("*.orange.*", "Q1")
    trie.add("*.*.rabbit", "Q2")
    trie.add("lazy.#", "Q2")
    assert trie_route(trie, "quick.orange.rabbit") == {"Q1", "Q2"}
    assert trie_route(trie, "lazy.orange.elephant") == {"Q1", "Q2"}
    assert trie_route(trie, "quick.orange.fox") == {"Q1"}
    assert trie_route(trie, "lazy.brown.fox") == {"Q2"}
    assert trie_route(trie, "lazy.pink.rabbit") == {"Q2"}
    assert trie_route(trie, "quick.brown.fox") == set()
    assert trie_route(trie, "orange") == set()
    assert trie_route(trie, "quick.orange.male.rabbit") == set()
    assert trie_route(trie, "lazy.orange.male.rabbit") == {"Q2"}
    assert trie_route(trie, "lazy") == {"Q2"}


def test_many_hashes_against_a_long_key_stay_tractable() -> None:
    # Unmemoised backtracking would take ~C(130, 30) steps on these; the per-match memo makes each a few
    # thousand. The test relies on the suite's per-test timeout rather than a timing assertion.
    trie = TopicTrie()
    trie.add(".".join(["#"] * 30), "hashes")
    trie.add(".".join(["#", "a"] * 15), "alternating")
    trie.add(".".join(["#", "a"] * 15) + ".b", "never")
    key = ".".join(["a"] * 100)
    assert trie_route(trie, key) == {"hashes", "alternating"}
    assert naive_matches(".".join(["#", "a"] * 15), key)


def test_pruning_releases_nested_hash_paths() -> None:
    trie = TopicTrie()
    trie.add("#.a.#", "q")
    trie.add("#.a.#.b", "q")
    assert trie.remove("#.a.#", "q")
    assert trie_route(trie, "x.a.y.b") == {"q"}
    assert trie_route(trie, "x.a.y") == set()
    assert trie.remove("#.a.#.b", "q")
    assert trie.is_empty()
