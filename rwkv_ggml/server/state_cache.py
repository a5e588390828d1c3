"""The prefix state cache: model states keyed by the exact token sequence that produced them.

An RWKV state summarises everything read so far in a fixed size, so a request whose prompt starts with a
sequence already read (the previous turn of a chat: its prompt, or its prompt plus the reply) can start
from that sequence's state and read only the rest. The scheduler stores the state at the end of each
request's prompt and of its reply; :meth:`StateCache.lookup` finds the longest stored sequence that is a
strict prefix of a new prompt (strict: at least one prompt token is left to read, which gives the logits
of the first generated token, so no logits are stored).

Bounded in bytes, least recently used dropped first. Pure (numpy only): no threads, no HTTP; the one
scheduler thread that owns it calls it.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]


class CacheHit(NamedTuple):
    """The state after the prompt's first ``length`` tokens (a copy the caller may keep)."""

    length: int
    state: FloatArray


class StateCache:
    """Token prefix -> state, at most ``max_bytes`` of states (0 disables the cache)."""

    def __init__(self, max_bytes: int) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(f"max_bytes must be an integer >= 0, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self._entries: collections.OrderedDict[tuple[int, ...], FloatArray] = collections.OrderedDict()
        self._lengths: collections.Counter[int] = collections.Counter()  # key length -> entries
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self.hit_tokens = 0  # prompt tokens not read thanks to the cache

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, tokens: Sequence[int]) -> CacheHit | None:
        """The longest stored strict prefix of ``tokens`` (counted as a hit or a miss)."""
        if self.max_bytes:
            key = tuple(tokens)
            for length in sorted(self._lengths, reverse=True):
                if length >= len(key):
                    continue
                state = self._entries.get(key[:length])
                if state is not None:
                    self._entries.move_to_end(key[:length])
                    self.hits += 1
                    self.hit_tokens += length
                    return CacheHit(length, state.copy())
        self.misses += 1
        return None

    def store(self, tokens: Sequence[int], state: FloatArray) -> None:
        """Keeps a copy of the state after ``tokens``; drops the least recently used to stay in bounds."""
        if not tokens or state.nbytes > self.max_bytes:
            return
        key = tuple(tokens)
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= old.nbytes
            self._lengths[len(key)] -= 1
        self._entries[key] = np.array(state, dtype=np.float32, copy=True)
        self._lengths[len(key)] += 1
        self.bytes += state.nbytes
        while self.bytes > self.max_bytes:
            dropped_key, dropped = self._entries.popitem(last=False)
            self.bytes -= dropped.nbytes
            self._lengths[len(dropped_key)] -= 1
            if not self._lengths[len(dropped_key)]:
                del self._lengths[len(dropped_key)]

    def clear(self) -> None:
        self._entries.clear()
        self._lengths.clear()
        self.bytes = 0
