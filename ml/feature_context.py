"""What the feature function needs that is fitted on the training period: :class:`FeatureContext`.

``ml.features.fit_context`` fits it; bundles store it as ``.npz`` (``to_bytes`` / ``from_bytes``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from ml.dataset import DAY_MS
from ml.exceptions import DataError
from ml.network_ridge import NetworkRidge

__all__ = ["FeatureContext"]


@dataclass(frozen=True, eq=False)
class FeatureContext:
    """Everything the features need that is fitted on the training period.

    profile / profile_std: (N, 2, SLOTS_PER_DAY) mean / std of observed speed by
    day type (0 weekday, 1 weekend) and 5-minute slot of the day.
    w_up / w_down: (N, N) row-normalised road-graph weights without the diagonal;
    row i of w_up weighs the sensors upstream of i (adjacency[j, i] > 0), of
    w_down those downstream (adjacency[i, j] > 0). w_hop2 = two hops, both ways.
    ridge: the network-wide ridge of the deviation change (``ml.network_ridge``), fitted on training targets;
    None in a context stored before it, or fitted on less than two training days or more than
    ``MAX_RIDGE_SENSORS`` sensors (its three columns are then NaN).
    """

    sensor_ids: tuple[str, ...]
    profile: np.ndarray
    profile_std: np.ndarray
    sensor_mean: np.ndarray
    sensor_std: np.ndarray
    w_up: np.ndarray
    w_down: np.ndarray
    w_hop2: np.ndarray
    degree_in: np.ndarray
    degree_out: np.ndarray
    train_start_ms: int
    train_end_ms: int
    ridge: NetworkRidge | None = None

    @property
    def n_sensors(self) -> int:
        return len(self.sensor_ids)

    @property
    def step_ms(self) -> int:
        """The step length the context was fitted at: a day over the profile's slots."""
        return DAY_MS // self.profile.shape[2]

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        arrays = {
            name: getattr(self, name)
            for name in (
                "profile", "profile_std", "sensor_mean", "sensor_std", "w_up", "w_down", "w_hop2",
                "degree_in", "degree_out",
            )
        }
        if self.ridge is not None:
            arrays.update(self.ridge.to_arrays())
        # Stored, not deflated: compressed, METR-LA's context was 15% smaller and took 7x as long to read (about
        # 35 ms, paid by every feature-table writer and model load).
        np.savez(
            buffer,
            sensor_ids=np.array(self.sensor_ids, dtype=str),
            train_range_ms=np.array([self.train_start_ms, self.train_end_ms], dtype=np.int64),
            **arrays,
        )
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> FeatureContext:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as npz:
                values = {k: np.asarray(npz[k]) for k in npz.files}
        except (ValueError, KeyError, OSError) as exc:
            raise DataError(f"not a feature context .npz: {exc}") from None
        start, end = (int(v) for v in values.pop("train_range_ms"))
        ids = tuple(str(s) for s in values.pop("sensor_ids"))
        ridge = NetworkRidge.from_arrays(values)
        return cls(sensor_ids=ids, train_start_ms=start, train_end_ms=end, ridge=ridge, **values)
