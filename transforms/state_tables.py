"""Dicts kept in Beam user state whose state-cache weight is estimated instead of measured.

The Python SDK keeps decoded state in an LRU cache bounded by bytes
(``--max_cache_memory_usage_mb``). It weighs a value by walking every object it
references (``objsize``) each time the value is stored: at every bundle's commit.
For a de-duplication shard holding 936 (sensor, time) pairs that walk takes
4.6 ms, for the history table 7.3 ms (``benchmarks/state_cache_weight.py``), and
a 24 h catch-up spent 17% of the worker's time in it (py-spy). A
:class:`StateTable` tells the cache its weight from its entry count instead
(``beam``'s ``CacheAware`` hook): the dict's own hash table is still measured,
the entries are counted at ``entry_bytes`` each, a per-class figure measured
with the SDK's own sizing on realistic contents (tests/transforms/test_state_tables.py
keeps the estimate within a factor of two of the measurement). Only the dict
tables of older savepoints are still one (``transforms.scoring.ScoreTable``,
converted on first read): every stateful step now holds numpy arrays (a few
objects each, which the cache weighs quickly and pickles as buffers).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import apache_beam as beam
import numpy as np
import objsize
from apache_beam.runners.worker import statecache
from apache_beam.runners.worker.statecache import CacheAware

from schemas.batches import compact_text, expand_text

__all__ = ["ArrayState", "StateTable", "StatefulFn", "weigh_state_quickly"]


def _deep_size_without_globals(*objs: Any) -> int:
    """The SDK's own measurement (its size, referents and filter functions) without objsize's module walk."""
    return objsize.get_deep_size(*objs, get_size_func=statecache._size_func,
                                 get_referents_func=statecache._get_referents_func,
                                 filter_func=statecache._filter_func, exclude_modules_globals=False)


def weigh_state_quickly() -> None:
    """Make the SDK's state cache weigh stored values without first listing every loaded module's globals.

    Each state write stores the cell's new value in the cache (twice: cleared, then the value), and
    objsize starts every measurement by collecting the ids of all module globals to leave them out: about
    0.6 ms a call in the worker whatever the value, about 1,000 calls and 4% of the worker's time in a
    24 h catch-up (py-spy). Classes, functions and modules are filtered out anyway; what a value shares
    with a module's globals (a column name that is also a module constant) is now counted too, a few
    bytes each: weights are the same or slightly higher (tests/transforms/test_state_tables.py).
    Idempotent; affects only this process's SDK harness.
    """
    statecache.get_deep_size = _deep_size_without_globals


class StatefulFn(beam.DoFn):
    """A DoFn with user state: its set-up makes the state cache weigh values quickly (:func:`weigh_state_quickly`).

    Subclasses that set up more call ``super().setup()``.
    """

    def setup(self) -> None:
        weigh_state_quickly()


class _Bytes:
    """Stands for ``size`` bytes in the cache's measurement."""

    __slots__ = ("size",)

    def __init__(self, size: int) -> None:
        self.size = size

    def __sizeof__(self) -> int:
        return self.size


class StateTable(dict, CacheAware):
    """A dict whose cache weight is its hash table plus ``entries() * entry_bytes``.

    The stand-in for the entries is made with the table: objsize skips any object
    whose id it recorded during the measurement, including objects freed since,
    so a stand-in created while measuring could be skipped for reusing a freed
    object's address (and was, in tests). It is not part of the value: a table
    pickles as its type and its items.
    """

    entry_bytes: ClassVar[int] = 200

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._weight = _Bytes(0)

    @classmethod
    def of(cls, stored: dict | None):
        """The table a state cell holds: as read, or an empty one (a plain dict, as older state holds, is converted)."""
        return stored if isinstance(stored, cls) else cls(stored or {})

    def entries(self) -> int:
        return len(self)

    def get_referents_for_cache(self) -> list[Any]:
        self._weight.size = self.entries() * self.entry_bytes
        return [self._weight]

    def __reduce__(self):
        return type(self), (dict(self),)


class ArrayState(CacheAware):
    """A state value held as numpy arrays (in its attributes, or in dicts there): the cache weighs it as the
    arrays' bytes, without walking the rest. Attributes whose name starts with ``_`` are transient: left out
    of the pickle (the stand-in among them)."""

    def _arrays(self) -> Iterator[np.ndarray]:
        for name, value in self.__dict__.items():
            if name.startswith("_"):
                continue
            for item in value.values() if isinstance(value, dict) else (value,):
                if isinstance(item, np.ndarray):
                    yield item

    def get_referents_for_cache(self) -> list[Any]:
        weight = self.__dict__.get("_weight")
        if weight is None:
            weight = self.__dict__["_weight"] = _Bytes(0)
        weight.size = sum(array.nbytes for array in self._arrays())
        return [weight]

    def __getstate__(self) -> dict[str, Any]:
        # A text column of one value (the model version in every key scoring keeps for the targets settled
        # lately) pickles as that value and the length: numpy text is 4 bytes a character. Those keys were the
        # largest state a 24 h catch-up pickled, and the model version 28% of their bytes (docs/benchmarks.md).
        return {k: compact_text(v) for k, v in self.__dict__.items() if not k.startswith("_")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update({k: expand_text(v) for k, v in state.items()})
