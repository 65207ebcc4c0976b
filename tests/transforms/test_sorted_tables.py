"""Column tables sorted by target: the joins and the merge against plain-Python and numpy references."""

from __future__ import annotations

import numpy as np

from transforms.sorted_tables import first_of_each, holds, insert, lookup

STEP = 300_000


def _random_keys(rng: np.random.Generator, n: int) -> list[np.ndarray]:
    return [rng.choice(np.array(["7171", "71", "7", "a-1"]), n), rng.integers(0, 5, n).astype(np.int64) * STEP]


def test_lookup_finds_each_rows_match_as_a_dict_would() -> None:
    rng = np.random.default_rng(3)
    old = _random_keys(rng, 40)
    unique = first_of_each(old)
    old = [column[unique] for column in old]
    new = _random_keys(rng, 60)
    where = {key: i for i, key in enumerate(zip(*(c.tolist() for c in old), strict=True))}
    want = [where.get(key, -1) for key in zip(*(c.tolist() for c in new), strict=True)]
    assert lookup(new, old).tolist() == want
    assert lookup(new, [c[:0] for c in old]).tolist() == [-1] * 60


def test_first_of_each_marks_the_first_occurrence_in_row_order() -> None:
    keys = _random_keys(np.random.default_rng(5), 50)
    seen, want = set(), []
    for key in zip(*(c.tolist() for c in keys), strict=True):
        want.append(key not in seen)
        seen.add(key)
    assert first_of_each(keys).tolist() == want


def test_insert_merges_rows_as_numpy_insert_would_and_keeps_the_targets_sorted() -> None:
    rng = np.random.default_rng(23)
    table = {"target_time": np.sort(rng.integers(0, 6, 30)) * STEP, "value": rng.random(30)}
    rows = {"target_time": rng.integers(-1, 8, 12) * STEP, "value": rng.random(12)}
    merged = insert(table, rows)
    order = np.argsort(rows["target_time"], kind="stable")
    at = np.searchsorted(table["target_time"], rows["target_time"][order], "right")
    for name in table:
        assert merged[name].tolist() == np.insert(table[name], at, rows[name][order]).tolist()
    assert np.all(np.diff(merged["target_time"]) >= 0) and len(merged["value"]) == 42
    assert insert(table, {name: column[:0] for name, column in rows.items()}) is table


def test_holds_answers_as_a_set_would_with_few_and_many_sorted_values() -> None:
    rng = np.random.default_rng(7)
    values = rng.integers(0, 40, 500).astype(np.int64) * STEP
    for n in (0, 1, 3, 8, 9, 30):  # compared one by one up to eight, binary search past that
        kept = np.unique(rng.integers(0, 40, n)).astype(np.int64) * STEP
        want = [v in set(kept.tolist()) for v in values.tolist()]
        assert holds(kept, values).tolist() == want, n
    assert holds(np.array([STEP], np.int64), values[:0]).tolist() == []
