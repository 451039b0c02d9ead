"""Bounded caches of the work that the rows of a manifest share (glyph geometry, stroke orders).

A depot's manifest marks the same maker, country and model lines thousands of times; only the
serial changes. Composing and ordering those lines once and reusing the result is what makes a
large pre-check cheap. Every cache here is a pure memo: the value is exactly what computing it
again would give (the key holds every input), so a layout or program made with a warm cache is
identical to one made alone, and turning the caches off changes the time, never the result.

Each cache is a least-recently-used map with a fixed number of entries, so memory stays flat
however long the manifest is, and each thread has its own (the service composes in a thread
pool; a cache shared between threads would need a lock on every hit). Values must be immutable:
numpy arrays in them are made read-only.

``MARKCTL_SHARED_CACHES=0`` in the environment turns them off (``bench/precheck.py --no-caches``
measures the gain that way).
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["LRU", "clear", "enabled", "existing", "lru", "set_enabled"]

V = TypeVar("V")

_local = threading.local()
_enabled = os.environ.get("MARKCTL_SHARED_CACHES", "1") != "0"


def enabled() -> bool:
    """Whether shared caches are on (``MARKCTL_SHARED_CACHES=0`` at start-up turns them off)."""
    return _enabled


def set_enabled(on: bool) -> None:
    """Turn the caches on or off for the whole process (tests compare both ways)."""
    global _enabled
    _enabled = on


class LRU(Generic[V]):
    """A least-recently-used map holding at most ``size`` entries; off when :func:`enabled` is false."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[Hashable, V] = OrderedDict()
        self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: Hashable) -> V | None:
        if not _enabled:
            return None
        value = self._data.get(key)
        if value is None:
            self.misses += 1
            return None
        self._data.move_to_end(key)
        self.hits += 1
        return value

    def put(self, key: Hashable, value: V) -> V:
        if _enabled:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)
        return value

    def clear(self) -> None:
        self._data.clear()
        self.hits = self.misses = 0


def lru(name: str, size: int) -> LRU[object]:
    """This thread's cache called ``name`` (made on first use)."""
    caches: dict[str, LRU[object]] = _local.__dict__.setdefault("caches", {})
    cache = caches.get(name)
    if cache is None:
        cache = caches[name] = LRU(size)
    cache.size = size  # the caller's bound holds from its next entry on
    return cache


def existing(name: str) -> LRU[object] | None:
    """This thread's cache called ``name`` if it was made (to read its size and hit counts)."""
    caches: dict[str, LRU[object]] = _local.__dict__.get("caches", {})
    return caches.get(name)


def clear() -> None:
    """Empty this thread's caches (tests compare a warm cache with none)."""
    for cache in _local.__dict__.get("caches", {}).values():
        cache.clear()
