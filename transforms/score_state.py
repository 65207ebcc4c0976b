"""The state of ``ScoreForecasts`` as columns: held predictions, best actuals, settled targets.

A stateful step's state is pickled whole at every bundle's commit. Held as
dicts of dicts of prediction dicts, one scoring shard's state reached 2.3 MB
during a 24 h catch-up on Flink and its pickling took 8.6 s of an 18.5 s drain
(a one-off probe of the pickle coder under ``benchmarks/streaming_pipeline.py``,
noted in docs/benchmarks.md as such). Here every table is a dict of numpy
arrays, one per field: pickling is a copy of a few buffers, and the work per
element is a sort-based join of the element's rows with its targets' rows of
the table (:func:`lookup`), not a Python loop over either.

* :class:`ScoreState` (one per sensor shard): the predictions held
  (``predictions``, with a ``scored`` flag: scored on a final pane, kept for
  its key until the target settles) and per (target, sensor) the best pane of
  the actual seen so far (``actuals``); sensor ids and model versions are
  indices into ``names``;
* :class:`Settled`: the targets settled in the last ``SETTLED_KEEP_MS``, their
  actuals and the keys scored for them, so that a prediction reaching the step
  behind its timers is still scored once.

A :class:`ScoreState` is kept in three state cells (:meth:`ScoreState.parts`): the held predictions with the
names, their ``scored`` flags, and the actuals with the names. An element writes only the cells it changed
(:meth:`ScoreState.changed`): an aggregate pane rewrote the held predictions too when the state was one cell,
145 of the 283 MB a 24 h catch-up pickled (an ad-hoc in-process replay of its elements, not a benchmark script).

A row's target is ``target_time`` (a prediction's) or the start of its window
(an actual's). A prediction's key is ``(sensor_id, event_time, horizon_min,
model_version)``; with its target it is unique in ``predictions``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.batches import Columns, OneText
from transforms import sorted_tables as st
from transforms.panes import TIMING_RANK, timing_ranks
from transforms.sorted_tables import Rows, first_of_each, lookup
from transforms.state_tables import ArrayState

__all__ = [
    "KEY_FIELDS",
    "MISSING",
    "PREDICTION_FIELDS",
    "SCORED",
    "Rows",
    "ScoreState",
    "Settled",
    "first_of_each",
    "lookup",
    "score_rows",
]

SCORED = "SCORED"
MISSING = "MISSING"
FINAL_RANKS = (TIMING_RANK["ON_TIME"], TIMING_RANK["LATE"])  # the two highest ranks
# The parts of a ScoreState kept in a state cell each (ScoreState.parts): what an element may have changed.
PARTS = ("predictions", "scored", "actuals")

PREDICTION_FIELDS = ("sensor_id", "event_time", "target_time", "horizon_min", "model_version",
                     "predicted_speed_mph", "lower_mph", "upper_mph", "coverage")
# A held prediction's identity, its target first (the join of a prediction with its actual).
KEY_FIELDS = ("target_time", "sensor_id", "event_time", "horizon_min", "model_version")
ACTUAL_FIELDS = ("target_time", "sensor_id", "rank", "count", "mean")
SETTLED_FIELDS = ("target_time", "sensor_id", "mean")
_CODED = ("sensor_id", "model_version")  # held as indices into ScoreState.names
_DTYPES = {"sensor_id": str, "model_version": str, "event_time": np.int64, "target_time": np.int64,
           "horizon_min": np.int64, "rank": np.int64, "count": np.int64, "scored": bool}


def _empty(fields: Sequence[str]) -> Rows:
    return {name: np.empty(0, _DTYPES.get(name, np.float64)) for name in fields}


def _coded_empty(fields: Sequence[str]) -> Rows:
    return {name: np.empty(0, np.int32) if name in _CODED else column for name, column in _empty(fields).items()}


def _typed(rows: Mapping[str, Any], fields: Sequence[str]) -> Rows:
    return {name: np.asarray(rows[name], _DTYPES.get(name, np.float64)) for name in fields}


def is_observed_array(mean: np.ndarray) -> np.ndarray:
    """True where a mean speed is a real reading: finite and > 0 (0 is METR-LA's missing value)."""
    with np.errstate(invalid="ignore"):
        return np.isfinite(mean) & (mean > 0)


def score_rows(predictions: Rows, actual: np.ndarray, scored_time_ms: int) -> Columns:
    """A ``score`` batch: each prediction against its actual (NaN or not an observation: MISSING).

    Rows come out ordered by key (target, sensor, event time, horizon, model version).
    """
    order = np.lexsort([predictions[name] for name in KEY_FIELDS[::-1]])
    p = st.take(predictions, order)
    observed = is_observed_array(actual[order])
    actual_mph = np.where(observed, actual[order], np.nan)
    inside = np.full(len(order), None, object)
    inside[observed] = ((p["lower_mph"] <= actual_mph) & (actual_mph <= p["upper_mph"]))[observed].tolist()
    data = {name: p[name] for name in PREDICTION_FIELDS}
    data.update({
        "actual_speed_mph": actual_mph,
        "error_mph": p["predicted_speed_mph"] - actual_mph,
        "inside_interval": inside,
        "status": np.where(observed, SCORED, MISSING),
        "scored_time": np.full(len(order), int(scored_time_ms), np.int64),
    })
    return Columns("score", data, frozenset({"actual_speed_mph", "error_mph"}))


@dataclass
class ScoreState(ArrayState):
    """One shard's predictions and actuals whose target has not settled (see the module doc).

    ``predictions``: every prediction held (``PREDICTION_FIELDS`` and ``scored``: already scored against a final
    actual, kept for its key until the target settles); ``actuals``: per (target, sensor), the best pane so far.
    Both are sorted by target, so an element (a step's predictions, a pane's actuals: a few targets) is joined
    with the rows of its targets only, found by binary search; an update is made in place where it can (a later
    pane, a prediction scored), and a new row costs one copy of the table.
    """

    predictions: Rows = field(default_factory=lambda: _coded_empty((*PREDICTION_FIELDS, "scored")))
    actuals: Rows = field(default_factory=lambda: _coded_empty(ACTUAL_FIELDS))
    # The sensor ids and model versions seen: the tables hold their index here (int32), not the text.
    names: np.ndarray = field(default_factory=lambda: np.empty(0, str))

    def _codes(self, values: np.ndarray) -> np.ndarray:
        index = self.__dict__.get("_index")
        if index is None:
            index = self.__dict__["_index"] = {name: i for i, name in enumerate(self.names.tolist())}
        if OneText.of(values) is not None:  # one value (a model version): coded once
            return np.full(len(values), self._codes(values[:1])[0], np.int32)
        listed = values.tolist()
        new = [v for v in dict.fromkeys(listed) if v not in index]
        if new:
            first = len(index)
            index.update({v: first + i for i, v in enumerate(new)})
            self.names = np.concatenate([self.names, np.asarray(new, str)])
        return np.fromiter(map(index.__getitem__, listed), np.int32, len(listed))

    def _sensor_rows(self, sensors: np.ndarray, first_row: int) -> np.ndarray:
        """Indexed by sensor code: the row of that sensor among ``sensors`` (the codes of one target's actuals,
        each once, from row ``first_row`` on), -1 where it has none."""
        rows = np.full(len(self.names), -1, np.int64)
        rows[sensors] = np.arange(first_row, first_row + len(sensors))
        return rows

    def mark_changed(self, *parts: str) -> None:
        """Notes that these parts (``"predictions"``, ``"scored"``, ``"actuals"``) must be written."""
        self.__dict__.setdefault("_changed", set()).update(parts)

    def changed(self) -> set[str]:
        """The parts (``PARTS``) changed since the state was read: the cells to write."""
        return set(self.__dict__.get("_changed", ()))

    def parts(self) -> tuple[tuple[np.ndarray, Rows], np.ndarray, tuple[np.ndarray, Rows]]:
        """(names and held predictions without their flags, the ``scored`` flags, names and actuals): one state
        cell each. The names ride with both tables: they only grow, so the longer copy is the current one."""
        held = {name: column for name, column in self.predictions.items() if name != "scored"}
        return (self.names, held), self.predictions["scored"], (self.names, self.actuals)

    @classmethod
    def from_parts(cls, held: Any, scored: Any, actuals: Any) -> ScoreState:
        """The state the three cells of :meth:`parts` hold (None for a cell never written). The first cell of an
        older savepoint holds a whole state, or its dict tables: converted (:meth:`of`), every part to be written."""
        if held is not None and not isinstance(held, tuple):
            converted = cls.of(held)
            converted.mark_changed(*PARTS)
            return converted
        state = cls()
        names = [part[0] for part in (held, actuals) if part is not None]
        if names:
            state.names = max(names, key=len)
        if held is not None:
            state.predictions = {**held[1], "scored": np.zeros(len(held[1]["target_time"]), bool)
                                 if scored is None else scored}
        if actuals is not None:
            state.actuals = actuals[1]
        return state

    def _coded(self, rows: Rows) -> Rows:
        return {name: self._codes(column) if name in _CODED else column for name, column in rows.items()}

    def _named(self, rows: Rows) -> Rows:
        return {name: self.names[column] if name in _CODED else column for name, column in rows.items()}

    @classmethod
    def of(cls, stored: Any) -> ScoreState:
        """The state a cell holds: as read, a new one for None, or converted from the dict tables of savepoints
        taken before the state was columnar (``target -> sensor -> [(rank, mean) | None, {key: prediction},
        scored keys]``, key = (event time, horizon, model version))."""
        if isinstance(stored, cls):
            return stored
        state = cls()
        held: list[dict[str, Any]] = []
        actuals: list[tuple] = []
        for target, row in (stored or {}).items():
            for sensor, (actual, waiting, done) in row.items():
                held.extend({**p, "scored": False} for p in waiting.values())
                held.extend({**dict.fromkeys(PREDICTION_FIELDS, np.nan), "target_time": target, "sensor_id": sensor,
                             "event_time": key[0], "horizon_min": key[1], "model_version": key[2], "scored": True}
                            for key in done)
                if actual is not None:
                    (timing, count), mean = actual
                    actuals.append((target, sensor, timing, count, np.nan if mean is None else mean))
        if held:
            fields = (*PREDICTION_FIELDS, "scored")
            rows = _typed({name: [p[name] for p in held] for name in fields}, fields)
            state.predictions = st.by_target(state._coded(rows))
        if actuals:
            rows = _typed(dict(zip(ACTUAL_FIELDS, zip(*actuals, strict=True), strict=True)), ACTUAL_FIELDS)
            state.actuals = st.by_target(state._coded(rows))
        return state

    def targets(self) -> np.ndarray:
        """The targets anything is held for, sorted."""
        return np.union1d(st.distinct(self.predictions["target_time"]), st.distinct(self.actuals["target_time"]))

    def new_targets(self, targets: np.ndarray) -> np.ndarray:
        """The distinct ``targets`` nothing is held for yet, sorted (binary search, not a pass over the tables)."""
        distinct = st.distinct_targets(targets)
        held = st.holds(self.predictions["target_time"], distinct) | st.holds(self.actuals["target_time"], distinct)
        return distinct[~held]

    def hold(self, predictions: Mapping[str, Any]) -> int:
        """Adds predictions; the number left out as duplicates (a key already held, scored or earlier here)."""
        rows = self._coded(_typed(predictions, PREDICTION_FIELDS))
        if not st.size(rows):
            return 0
        span = st.span(self.predictions, rows["target_time"].min(), rows["target_time"].max())
        keys = [rows[name] for name in KEY_FIELDS]
        new = first_of_each(keys)
        new &= lookup(keys, [self.predictions[name][span] for name in KEY_FIELDS]) < 0
        rows["scored"] = np.zeros(len(new), bool)
        if new.any():
            self.predictions = st.insert(self.predictions, st.take(rows, new))
            self.mark_changed("predictions", "scored")  # rows inserted: the flags move with them
        return int(len(new) - new.sum())

    def observe(self, targets: np.ndarray, actuals: Mapping[str, Any]) -> bool:
        """Keeps, per (target, sensor), the best pane: the latest timing (EARLY < ON_TIME < LATE), then count.

        True when a final pane (ON_TIME or LATE) came: only then can held predictions become ready to score."""
        if not len(targets):
            return False
        rank = timing_ranks(actuals["pane_timing"])
        new = self._coded(_typed({"target_time": targets, "sensor_id": actuals["sensor_id"], "rank": rank,
                                  "count": actuals["count"], "mean": actuals["mean_speed_mph"]}, ACTUAL_FIELDS))
        one_target = (targets == targets[0]).all()
        if not (one_target and st.each_once(new["sensor_id"])):
            new = st.take(new, st.last_of_each([new["target_time"], new["sensor_id"]], [new["rank"], new["count"]]))
        span = st.span(self.actuals, targets.min(), targets.max())
        if one_target:  # a pane of one window: its sensors' rows found by index, not by a sort
            at = self._sensor_rows(self.actuals["sensor_id"][span], span.start)[new["sensor_id"]]
        else:
            at = lookup([new["target_time"], new["sensor_id"]],
                        [self.actuals["target_time"][span], self.actuals["sensor_id"][span]])
            at[at >= 0] += span.start
        known = at >= 0
        rows = at[known]
        better = (new["rank"][known] > self.actuals["rank"][rows]) | (
            (new["rank"][known] == self.actuals["rank"][rows]) & (new["count"][known] >= self.actuals["count"][rows]))
        for name in ("rank", "count", "mean"):  # a later pane of a known window: in place
            self.actuals[name][rows[better]] = new[name][known][better]
        self.actuals = st.insert(self.actuals, st.take(new, ~known))
        self.mark_changed("actuals")
        return bool((rank >= FINAL_RANKS[0]).any())

    def take_ready(self, now_ms: int, lo: int, hi: int) -> Columns | None:
        """Scores the predictions for targets in ``[lo, hi]`` not scored yet whose actual is final (ON_TIME or
        LATE) and observed."""
        span, known = st.span(self.predictions, lo, hi), st.span(self.actuals, lo, hi)
        held = st.take(self.predictions, span)
        actuals = st.take(self.actuals, known)
        if lo == hi:  # one target: an actual per sensor, found by index
            at = self._sensor_rows(actuals["sensor_id"], 0)[held["sensor_id"]]
        else:
            at = lookup([held["target_time"], held["sensor_id"]], [actuals["target_time"], actuals["sensor_id"]])
        found = (at >= 0) & ~held["scored"]
        ready = np.zeros(len(at), bool)
        ready[found] = ((actuals["rank"][at[found]] >= FINAL_RANKS[0])  # ON_TIME or LATE: the top ranks
                        & is_observed_array(actuals["mean"][at[found]]))
        if not ready.any():
            return None
        held["scored"][ready] = True  # a view of the table's rows: marked in place
        self.mark_changed("scored")
        return score_rows(self._named(st.take(held, ready)), actuals["mean"][at[ready]], now_ms)

    def settle(self, done: np.ndarray, now_ms: int) -> tuple[Columns | None, Rows, Rows]:
        """Scores every prediction of the ``done`` targets (sorted) not scored yet against the best actual known
        (MISSING where none is an observation) and forgets those targets; (scores, their actuals, the keys held for
        them)."""
        settling = st.holds(done, self.predictions["target_time"])
        waiting = settling & ~self.predictions["scored"]
        at = lookup([self.predictions["target_time"][waiting], self.predictions["sensor_id"][waiting]],
                    [self.actuals["target_time"], self.actuals["sensor_id"]])
        scores = score_rows(self._named(st.take(self.predictions, waiting)), st.gather(self.actuals["mean"], at),
                            now_ms) if waiting.any() else None
        actuals = st.holds(done, self.actuals["target_time"])
        keys = self._named({name: self.predictions[name][settling] for name in KEY_FIELDS})
        settled = self._named({name: self.actuals[name][actuals] for name in SETTLED_FIELDS})
        if settling.any():
            self.predictions = st.take(self.predictions, ~settling)
            self.mark_changed("predictions", "scored")
        if actuals.any():
            self.actuals = st.take(self.actuals, ~actuals)
            self.mark_changed("actuals")
        return scores, settled, keys


@dataclass
class Settled(ArrayState):
    """Targets settled lately, with their actuals (``SETTLED_FIELDS``) and the keys scored for them."""

    targets: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    actuals: Rows = field(default_factory=lambda: _empty(SETTLED_FIELDS))
    keys: Rows = field(default_factory=lambda: _empty(KEY_FIELDS))

    @classmethod
    def of(cls, stored: Any) -> Settled:
        """As read, a new one for None, or converted from the dicts of older savepoints
        (``target -> sensor -> [mean | None, scored keys]``)."""
        if isinstance(stored, cls):
            return stored
        settled = cls(np.asarray(sorted(stored or {}), np.int64))
        actuals = [(t, s, m) for t, row in (stored or {}).items() for s, (m, _) in row.items() if m is not None]
        keys = [(t, s, *k) for t, row in (stored or {}).items() for s, (_, done) in row.items() for k in done]
        if actuals:
            settled.actuals = _typed(dict(zip(SETTLED_FIELDS, zip(*actuals, strict=True), strict=True)),
                                     SETTLED_FIELDS)
        if keys:
            settled.keys = _typed(dict(zip(KEY_FIELDS, zip(*keys, strict=True), strict=True)), KEY_FIELDS)
        return settled

    def keep_from(self, first_ms: int) -> None:
        """Forgets the targets before ``first_ms``."""
        self.targets = self.targets[self.targets >= first_ms]
        self.actuals = st.take(self.actuals, self.actuals["target_time"] >= first_ms)
        self.keys = st.take(self.keys, self.keys["target_time"] >= first_ms)

    def add(self, targets: np.ndarray, actuals: Rows, keys: Rows) -> None:
        self.targets = np.union1d(self.targets, np.asarray(targets, np.int64))
        self.actuals = st.concat(self.actuals, actuals)
        self.keys = st.concat(self.keys, keys)

    def score_late(self, predictions: Mapping[str, Any], now_ms: int) -> tuple[Columns | None, int]:
        """Predictions for settled targets: each scored once against the kept actual (MISSING where the shard had
        none); predictions for targets not kept are dropped. (scores, duplicates left out)."""
        rows = _typed(predictions, PREDICTION_FIELDS)
        rows = st.take(rows, st.holds(self.targets, rows["target_time"]))
        if not st.size(rows):
            return None, 0
        keys = [rows[name] for name in KEY_FIELDS]
        # Joined with the kept rows of these targets only (a step's forecasts: one or two of a key's targets).
        targets = st.distinct_targets(rows["target_time"])
        scored = st.take(self.keys, st.holds(targets, self.keys["target_time"]))
        new = first_of_each(keys) & (lookup(keys, [scored[name] for name in KEY_FIELDS]) < 0)
        duplicates = int(len(new) - new.sum())
        if not new.any():
            return None, duplicates
        rows = st.take(rows, new)
        kept = st.take(self.actuals, st.holds(targets, self.actuals["target_time"]))
        at = lookup([rows["target_time"], rows["sensor_id"]], [kept["target_time"], kept["sensor_id"]])
        actual = st.gather(kept["mean"], at)
        self.keys = st.concat(self.keys, {name: rows[name] for name in KEY_FIELDS})
        return score_rows(rows, actual, now_ms), duplicates
