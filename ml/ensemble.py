"""An average of fitted estimators that each read their own columns of the feature rows.

``ColumnBlend`` lets ``traffic train`` combine candidates fitted on different
feature lists (the first 47 features, the graph-diffusion list) without
refitting them: member k predicts from ``X[:, columns[k]]`` and the blend is the
weighted mean. On validation, averaging the two gradient-boosting models beat
either one (see docs/model-experiments.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["ColumnBlend"]


class ColumnBlend:
    """Weighted mean of ``members[k].predict(X[:, columns[k]])``; stored by skops like any estimator."""

    def __init__(self, members: Sequence[Any], columns: Sequence[np.ndarray], weights: Sequence[float]) -> None:
        if not (len(members) == len(columns) == len(weights)) or not members:
            raise ValueError("a blend needs as many column lists and weights as members, and at least one")
        self.members = list(members)
        self.columns = [np.asarray(c, dtype=np.int64) for c in columns]
        total = float(sum(weights))
        self.weights = [float(w) / total for w in weights]

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        out = np.zeros(len(x), dtype=np.float64)
        for member, cols, weight in zip(self.members, self.columns, self.weights, strict=True):
            out += weight * np.asarray(member.predict(x[:, cols]), dtype=np.float64)
        return out
