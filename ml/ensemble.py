"""Estimators built from fitted estimators: column blends and horizon chains.

``ColumnBlend`` lets ``traffic train`` combine candidates fitted on different
feature lists (the first 47 features, the graph-diffusion list) without
refitting them: member k predicts from ``X[:, columns[k]]`` and the blend is the
weighted mean. On validation, averaging the two gradient-boosting models beat
either one (see docs/model-experiments.md).

``HorizonChain`` feeds a shorter horizon's forecast to a longer horizon's model:
``model.predict([X[:, columns], upstream.predict(X)])``. The upstream is the
15-minute estimator of the same bundle (the same object after a skops round
trip), and blends and chains remember their latest predictions, so one network
step runs the 15-minute trees once for all three horizons. The upstream can also be a
multi-output model (``ml.neural.SharedOutputs``: the perceptron's forecasts at
every horizon, one column each), which remembers its prediction the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

__all__ = ["MEMO_ENTRIES", "ColumnBlend", "HorizonChain", "input_key", "remembered", "without_memo"]


def input_key(x: np.ndarray) -> tuple:
    """A digest of the rows' values (not their identity): equal inputs, equal key."""
    x = np.ascontiguousarray(x)
    return x.shape, x.dtype.str, hashlib.blake2b(x.tobytes(), digest_size=16).digest()


# How many (input digest, prediction) pairs an estimator remembers. One serves a network step (its three horizons
# ask for the same rows). Training asks for the validation rows at every horizon, with up to four other row sets
# (the chains' and the scale models' training rows) in between: five entries answer them without rerunning the
# perceptrons and the 15-minute trees (a few tens of MB at most, outputs only).
MEMO_ENTRIES = 5


def remembered(owner: Any, x: np.ndarray, compute: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``compute(x)``, or ``owner``'s answer when ``x`` holds the same values as one of the latest ``MEMO_ENTRIES``
    inputs (a copy either way)."""
    key = input_key(x)
    memo = getattr(owner, "_memo", None) or ()  # one tuple read: threads sharing the model see consistent pairs
    for seen, answer in memo:
        if seen == key:
            return answer.copy()
    out = compute(x)
    owner._memo = ((key, out), *memo[: MEMO_ENTRIES - 1])
    return out.copy()


def without_memo(owner: Any) -> dict:
    """``owner``'s state to store: the memo is never stored with the model."""
    return {k: v for k, v in owner.__dict__.items() if k != "_memo"}


class ColumnBlend:
    """Weighted mean of ``members[k].predict(X[:, columns[k]])``; stored by skops like any estimator.

    The latest (input digest, prediction) pairs are remembered (``remembered``), so chained models that
    ask for the same rows' forecast again get it without running the trees twice;
    the memo is never stored with the model.
    """

    def __init__(self, members: Sequence[Any], columns: Sequence[np.ndarray], weights: Sequence[float]) -> None:
        if not (len(members) == len(columns) == len(weights)) or not members:
            raise ValueError("a blend needs as many column lists and weights as members, and at least one")
        self.members = list(members)
        self.columns = [np.asarray(c, dtype=np.int64) for c in columns]
        total = float(sum(weights))
        self.weights = [float(w) / total for w in weights]

    def __getstate__(self) -> dict:
        return without_memo(self)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return remembered(self, np.asarray(x), self._blend)

    def _blend(self, x: np.ndarray) -> np.ndarray:
        out = np.zeros(len(x), dtype=np.float64)
        for member, cols, weight in zip(self.members, self.columns, self.weights, strict=True):
            out += weight * np.asarray(member.predict(x[:, cols]), dtype=np.float64)
        return out


class HorizonChain:
    """``model`` reads ``X[:, columns]`` plus the ``upstream`` estimator's prediction from the same rows.

    Its prediction is remembered like a blend's: the 15-minute ``hgb_mlp`` is a member of the 15-minute blend and
    an upstream of the 30- and 60-minute chains, so one network step runs its trees once, not twice.
    """

    def __init__(self, upstream: Any, model: Any, columns: np.ndarray) -> None:
        self.upstream = upstream
        self.model = model
        self.columns = np.asarray(columns, dtype=np.int64)

    def __getstate__(self) -> dict:
        return without_memo(self)

    @staticmethod
    def inputs(x: np.ndarray, columns: np.ndarray, upstream_prediction: np.ndarray) -> np.ndarray:
        """The chained model's input rows (shared by fitting and predicting)."""
        return np.column_stack([np.asarray(x)[:, columns], np.asarray(upstream_prediction, dtype=np.float32)])

    def predict(self, x: np.ndarray) -> np.ndarray:
        return remembered(self, np.asarray(x), self._chain)

    def _chain(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(self.inputs(x, self.columns, self.upstream.predict(x))), dtype=np.float64)
