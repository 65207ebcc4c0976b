"""Column tables (a dict of equal-length numpy arrays, one per field) kept sorted by ``target_time``: the joins
and merges the scoring state (:mod:`transforms.score_state`) is built from, none a Python loop over rows.

A join is a sort of both sides' keys together (:func:`lookup`); a merge of new rows into a table is one copy
of the table, not a sort of it (:func:`insert`); the rows of a few targets are found by binary search
(:func:`span`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["Rows", "by_target", "concat", "distinct", "distinct_targets", "each_once", "first_of_each", "gather",
           "group_starts", "holds", "insert", "last_of_each", "lookup", "size", "span", "take"]

Rows = dict[str, np.ndarray]


def take(rows: Rows, index: Any) -> Rows:
    return {name: column[index] for name, column in rows.items()}


def concat(first: Rows, second: Rows) -> Rows:
    return {name: np.concatenate([first[name], second[name]]) for name in first}


def size(rows: Rows) -> int:
    return len(next(iter(rows.values())))


def by_target(rows: Rows) -> Rows:
    return take(rows, np.argsort(rows["target_time"], kind="stable"))


def distinct(sorted_values: np.ndarray) -> np.ndarray:
    """The distinct values of a sorted array."""
    if not len(sorted_values):
        return sorted_values
    return sorted_values[np.concatenate([[True], sorted_values[1:] != sorted_values[:-1]])]


def span(table: Rows, lo: int, hi: int) -> slice:
    """The rows of ``table`` (sorted by target) whose target is in ``[lo, hi]``."""
    targets = table["target_time"]
    return slice(int(np.searchsorted(targets, lo, "left")), int(np.searchsorted(targets, hi, "right")))


# Up to this many sorted values, ``holds`` compares with each in turn: a column's rows against the one to three
# targets of a step's forecasts, 3-9 us for 7,452 rows where a binary search per row takes 29-34 us (ad hoc).
_COMPARED_EACH = 8


def holds(sorted_values: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For each of ``values``, whether the sorted array holds it."""
    if len(sorted_values) <= _COMPARED_EACH:
        found = np.zeros(len(values), bool)
        for value in sorted_values.tolist():
            found |= values == value
        return found
    at = np.minimum(np.searchsorted(sorted_values, values), len(sorted_values) - 1)
    return sorted_values[at] == values


def distinct_targets(targets: np.ndarray) -> np.ndarray:
    """The distinct values of a non-empty array, sorted (an element's rows are most often of one target)."""
    return targets[:1] if (targets == targets[0]).all() else np.unique(targets)


def each_once(codes: np.ndarray) -> bool:
    """Whether no code repeats (non-negative ints)."""
    return not len(codes) or int(np.bincount(codes).max()) == 1


def insert(table: Rows, rows: Rows) -> Rows:
    """``rows`` merged into ``table``, both kept sorted by target (a copy of the table, no sort of it)."""
    if not size(rows):
        return table
    order = np.argsort(rows["target_time"], kind="stable")
    at = np.searchsorted(table["target_time"], rows["target_time"][order], "right")
    new_at = at + np.arange(len(at))  # each new row goes before the table row it was found at (np.insert's rule)
    old = np.ones(size(table) + len(at), bool)
    old[new_at] = False
    old_at = np.flatnonzero(old)
    merged = {}
    for name, column in table.items():
        values = rows[name][order]
        merged[name] = out = np.empty(len(old), np.result_type(column, values))
        out[new_at] = values
        out[old_at] = column
    return merged


def group_starts(keys: Sequence[np.ndarray], order: np.ndarray) -> np.ndarray:
    """Over the rows in ``order``: True where a row's key differs from the previous row's."""
    starts = np.zeros(len(order), bool)
    if len(order):
        starts[0] = True
    for column in keys:
        ordered = column[order]
        starts[1:] |= ordered[1:] != ordered[:-1]
    return starts


def lookup(new: Sequence[np.ndarray], old: Sequence[np.ndarray]) -> np.ndarray:
    """For each row of ``new`` (one array per key field), the index of the row of ``old`` with that key, or -1.

    ``old``'s keys are unique. One stable sort of both together: within a key, ``old``'s row comes first.
    """
    n_old, n_new = len(old[0]), len(new[0])
    if n_old == 0 or n_new == 0:
        return np.full(n_new, -1, np.int64)
    keys = [np.concatenate([o, n]) for o, n in zip(old, new, strict=True)]
    origin = np.concatenate([np.zeros(n_old, np.int8), np.ones(n_new, np.int8)])
    order = np.lexsort([origin, *keys[::-1]])
    starts = group_starts(keys, order)
    first = order[np.flatnonzero(starts)][np.cumsum(starts) - 1]  # per sorted row: its key's first row
    found = np.empty(n_old + n_new, np.int64)
    found[order] = np.where(first < n_old, first, -1)
    return found[n_old:]


def first_of_each(keys: Sequence[np.ndarray]) -> np.ndarray:
    """True for each row whose key no earlier row has."""
    n = len(keys[0])
    order = np.lexsort([np.arange(n), *keys[::-1]])
    first = np.zeros(n, bool)
    first[order[group_starts(keys, order)]] = True
    return first


def last_of_each(keys: Sequence[np.ndarray], ranked_by: Sequence[np.ndarray]) -> np.ndarray:
    """Per key, the index of the row with the highest ``ranked_by`` (compared in order), the later of equals."""
    n = len(keys[0])
    order = np.lexsort([np.arange(n), *ranked_by[::-1], *keys[::-1]])
    starts = group_starts(keys, order)
    ends = np.append(np.flatnonzero(starts)[1:], n) - 1
    return order[ends]


def gather(values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """``values[at]`` as floats, NaN where ``at`` is -1 (no row)."""
    out = np.full(len(at), np.nan)
    found = at >= 0
    out[found] = values[at[found]]
    return out
