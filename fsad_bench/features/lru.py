"""A least-recently-used store bounded in bytes, for the per-process caches of a run."""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Generic, TypeVar

if TYPE_CHECKING:
    from torch import Tensor

Value = TypeVar("Value")


class ByteLRU(Generic[Value]):
    """Keeps values while their total size stays under ``limit_bytes``; the least recently
    used go first, and a value larger than the whole bound is never kept."""

    def __init__(self, limit_bytes: int, size_of: Callable[[Value], int]) -> None:
        self.limit_bytes = limit_bytes
        self.size_of = size_of
        self.entries: OrderedDict[Hashable, Value] = OrderedDict()
        self.bytes = 0

    def __contains__(self, key: Hashable) -> bool:
        return key in self.entries

    def get(self, key: Hashable) -> Value | None:
        if key not in self.entries:
            return None
        self.entries.move_to_end(key)
        return self.entries[key]

    def put(self, key: Hashable, value: Value) -> None:
        size = self.size_of(value)
        if size > self.limit_bytes:
            return
        old = self.entries.pop(key, None)
        if old is not None:
            self.bytes -= self.size_of(old)
        self.entries[key] = value
        self.bytes += size
        self._evict()

    def resize(self, limit_bytes: int) -> None:
        """A new bound, effective at once: the least recently used values go until it holds
        (0 empties the store and turns it off)."""
        self.limit_bytes = limit_bytes
        self._evict()

    def clear(self) -> None:
        self.entries.clear()
        self.bytes = 0

    def _evict(self) -> None:
        while self.bytes > self.limit_bytes:
            _, evicted = self.entries.popitem(last=False)
            self.bytes -= self.size_of(evicted)


def tensor_bytes(tensor: Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def limit_from_env(variable: str, default_mb: float) -> float:
    """A cache bound in MB from the environment (0 turns the cache off)."""
    from fsad_bench.errors import FsadError

    text = os.environ.get(variable)
    if text is None or not text.strip():
        return default_mb
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise FsadError(f"{variable}={text!r}: set it to a number of MB >= 0 (0 turns it off)")
    return value
