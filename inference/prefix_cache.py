"""Evaluated prompt prefixes kept in host memory, within a byte budget.

When a slot of the scheduler is about to be given to another prompt, what it held (the cache
of a conversation's tokens, as `llama_state_seq_get_data` writes it) is saved here; a later
prompt that starts with those tokens (the conversation's next turn) is restored from here
instead of being read again. Plain bytes and token lists: no model behind it. One cache serves
every model of a worker within one budget; each model's entries are in a `space` of their own
(a saved cache only makes sense to the model that wrote it).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens `a` and `b` share."""
    count = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        count += 1
    return count


@dataclass
class Saved:
    space: str
    tokens: list[int]
    state: bytes
    last_used: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class CacheStats:
    entries: int
    bytes: int
    budget: int
    saved: int  # prefixes written here since the start
    restored: int  # prompts that started from one of them
    evicted: int  # prefixes dropped to make room


class PrefixCache:
    """Least recently used out first; a prefix covered by a longer saved one is not kept twice."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget = budget_bytes
        self._entries: list[Saved] = []
        self._bytes = 0
        self._lock = threading.Lock()
        self._saved = self._restored = self._evicted = 0

    def covers(self, space: str, tokens: list[int]) -> bool:
        """Whether a saved prefix already holds every one of `tokens`."""
        with self._lock:
            return any(
                e.space == space
                and len(e.tokens) >= len(tokens)
                and e.tokens[: len(tokens)] == tokens
                for e in self._entries
            )

    def add(self, space: str, tokens: list[int], state: bytes) -> bool:
        """Keep `state` (the cache of `tokens`); whether it was kept (it fits the budget)."""
        if not tokens or len(state) > self.budget:
            return False
        with self._lock:
            # Shorter prefixes of these tokens are covered by this one.
            covered = [
                e for e in self._entries if e.space == space and tokens[: len(e.tokens)] == e.tokens
            ]
            for entry in covered:
                self._drop(entry)
            while self._entries and self._bytes + len(state) > self.budget:
                self._drop(min(self._entries, key=lambda e: e.last_used))
                self._evicted += 1
            self._entries.append(Saved(space, list(tokens), state))
            self._bytes += len(state)
            self._saved += 1
        return True

    def best(self, space: str, prompt: list[int]) -> tuple[Saved | None, int]:
        """The saved prefix sharing the most leading tokens with `prompt`, and how many."""
        with self._lock:
            scored = [
                (common_prefix(e.tokens, prompt), e) for e in self._entries if e.space == space
            ]
        if not scored:
            return None, 0
        shared, entry = max(scored, key=lambda pair: pair[0])
        return (entry, shared) if shared else (None, 0)

    def used(self, entry: Saved) -> None:
        """`entry` was restored for a prompt: it is the most recently used."""
        with self._lock:
            entry.last_used = time.monotonic()
            self._restored += 1

    def clear(self, space: str) -> None:
        """Forget one model's entries (it is unloaded)."""
        with self._lock:
            for entry in [e for e in self._entries if e.space == space]:
                self._drop(entry)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(
                entries=len(self._entries),
                bytes=self._bytes,
                budget=self.budget,
                saved=self._saved,
                restored=self._restored,
                evicted=self._evicted,
            )

    def _drop(self, entry: Saved) -> None:
        self._entries.remove(entry)
        self._bytes -= len(entry.state)
