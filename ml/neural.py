"""A small neural network over the feature rows: one model for all three horizons.

``make_mlp`` builds a multi-layer perceptron (scikit-learn ``MLPRegressor``
behind a ``StandardScaler``) that reads a sensor's feature row (its own
history summaries, its upstream and downstream neighbours' diffused 12-step
deviation histories, time of day, ...: ``FEATURE_NAMES``) and predicts the
change from the last reading at every horizon at once. It is fitted with early
stopping on a held-out tenth of its training rows. Alone it is weaker than the
trees in MAE (it fits squared error) but better in RMSE; averaged into the trees
it did not lower the MAE, while as the upstream of a horizon chain (``hgb_mlp``:
gradient-boosted trees that also read its three forecasts, fitted on rows it did
not see) it lowers the trees' validation MAE by 0.02-0.05 at full scale
(docs/model-experiments.md, third round).

The candidate ``mlp`` is a bag: ``MeanOutputs`` of three perceptrons (``MLP_BAG``),
each fitted on its own third of the capped rows with its own seed (``fit_bag``; ``traffic train`` fits
them side by side in two processes, so the bag takes two members' time, not three);
averaging two fits gained 0.005-0.012 MAE for the trees that read them (fourth
round), a third 0.006-0.020 more (sixth round).
Each perceptron also reads the sensor's identity (a one-hot of the sensor beside
the standardised features), so it can learn per-sensor effects that the trees
read from the sensor's constants (fifth round). Perceptrons fitted since the tenth
round take it as the sensor's position (``SensorIndex`` into
``ml.rowwise_mlp.IndexedOneHotMLPRegressor``: the same model, fitted 1.58x
faster); those fitted before read a sparse one-hot (``SensorIdentity``) and still load.

``SharedOutputs`` holds the fitted multi-output model and remembers its latest
prediction (keyed by a digest of the rows), so the three horizons of one network
step run the network once; it is the upstream of the ``hgb_mlp`` chains
(one object for all three after a skops round trip, as ``ml.ensemble.HorizonChain``
shares its upstream). ``HorizonOutput`` is one horizon's column of it: the
perceptron alone as a candidate. ``StackedOutputs`` puts several upstreams side
by side (``hgb_mlp_chain``: the perceptrons' forecasts and ``hgb_mlp``'s
15-minute forecast), with the same memo.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np
from scipy import sparse
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from ml.ensemble import remembered, without_memo
from ml.features import FEATURE_NAMES
from ml.rowwise_mlp import IndexedOneHotMLPRegressor, RowwiseMLPRegressor

__all__ = ["MLP_EPOCHS", "MLP_HIDDEN", "POOL_MIN_ROWS", "SENSOR_KEYS", "HorizonOutput", "MeanOutputs", "SensorIdentity",
           "SensorIndex", "SharedOutputs", "StackedOutputs", "fit_bag", "make_mlp", "outputs_of", "sensor_keys",
           "weight_keyword"]

MLP_HIDDEN: tuple[int, ...] = (128, 64)
# A bag's members are fitted in parallel processes only from this many rows each: a process costs about 2 s to start
# and its rows must be copied to it.
POOL_MIN_ROWS = 100_000
# At most this many passes over the rows. Without the sensor identity early stopping ended the fits after 20-32
# passes; with it they ran 31-34 and the default training took 16.7 min (docs/model-experiments.md, fifth round).
MLP_EPOCHS = 22
# The feature columns that tell a sensor apart: its training-period constants, the same in every row of it.
SENSOR_KEYS: tuple[str, ...] = ("sensor_mean", "sensor_std")


def sensor_keys(x: np.ndarray, columns: tuple[int, int]) -> np.ndarray:
    """One uint64 per row: the float32 bit patterns of two per-sensor constant columns side by side."""
    hi, lo = (np.ascontiguousarray(np.asarray(x)[:, c], dtype=np.float32).view(np.uint32).astype(np.uint64)
              for c in columns)
    return (hi << np.uint64(32)) | lo


class SensorIdentity(TransformerMixin, BaseEstimator):
    """The perceptron's inputs: the standardised feature columns, then a one-hot of the row's sensor (sparse).

    The sensor is recognised by its constants (``key_columns``: ``SENSOR_KEYS``, which the feature function copies
    from the fitted context into every row of that sensor), so the rows need no extra column and the identity does
    not depend on the sensors' order or on which of them a step holds. A sensor not seen in fitting gets no
    identity (a row of zeros): the perceptron then reads its features alone.
    """

    def __init__(self, key_columns: tuple[int, int] = (0, 1)) -> None:
        self.key_columns = key_columns

    def fit(self, x: np.ndarray, y: np.ndarray | None = None) -> SensorIdentity:
        x = np.asarray(x)
        self.scaler_ = StandardScaler().fit(x)
        self.keys_ = np.unique(sensor_keys(x, self.key_columns))
        return self

    def transform(self, x: np.ndarray) -> sparse.csr_matrix:
        """(rows, features + sensors) float32, sparse: the one-hot makes the perceptron's first layer a lookup
        (in a 3-pass timing a dense one-hot doubled the fitting time, a sparse one added 40%)."""
        scaled, at, known = self._parts(x)
        n, f = scaled.shape
        # Row i holds its f scaled features, then 1 at column f + its sensor's (0, stored, for an unseen sensor).
        data = np.empty((n, f + 1), dtype=np.float32)
        data[:, :f] = scaled
        data[:, f] = known
        indices = np.empty((n, f + 1), dtype=np.int32)
        indices[:, :f] = np.arange(f, dtype=np.int32)
        indices[:, f] = f + at
        return sparse.csr_matrix((data.ravel(), indices.ravel(), np.arange(0, n * (f + 1) + 1, f + 1)),
                                 shape=(n, f + len(self.keys_)))

    def _parts(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(the scaled features, each row's sensor position among ``keys_``, whether that sensor was seen)."""
        x = np.asarray(x)
        keys = sensor_keys(x, self.key_columns)
        at = np.minimum(np.searchsorted(self.keys_, keys), len(self.keys_) - 1)
        # A column the context could not compute (NaN: the network ridge's, in a context without one) reads as
        # its training mean; the scaler ignored NaN when it was fitted.
        return np.nan_to_num(self.scaler_.transform(x), nan=0.0), at, self.keys_[at] == keys


class SensorIndex(SensorIdentity):
    """``SensorIdentity``'s inputs with the one-hot given as its position: (rows, features + 1) float32, the
    sensor's position among the fitted sensors in the last column (-1 for a sensor not seen in fitting), for
    ``ml.rowwise_mlp.IndexedOneHotMLPRegressor``. The perceptron fitted on it is the one on the sparse one-hot
    (the same weights, the same initialisation), fitted 1.58x faster (``benchmarks/perceptron_fit.py``)."""

    def transform(self, x: np.ndarray) -> np.ndarray:
        scaled, at, known = self._parts(x)
        out = np.empty((scaled.shape[0], scaled.shape[1] + 1), dtype=np.float32)
        out[:, :-1] = scaled
        out[:, -1] = np.where(known, at, -1)
        return out


def make_mlp(quick: bool = False, seed: int = 0, features: tuple[str, ...] = FEATURE_NAMES,
             identity: bool = True) -> Pipeline:
    """Standardised inputs (and, with ``identity``, the sensor's one-hot: ``SensorIdentity``) into a ReLU
    perceptron (Adam, early stopping on 10% of the training rows; a row's forecast the same in any call:
    ``ml.rowwise_mlp``). ``features``: the columns it reads."""
    inputs = SensorIndex(tuple(features.index(k) for k in SENSOR_KEYS)) if identity else StandardScaler()
    mlp = IndexedOneHotMLPRegressor if identity else RowwiseMLPRegressor
    return Pipeline([
        ("scale", inputs),
        ("mlp", mlp(
            hidden_layer_sizes=(16,) if quick else MLP_HIDDEN, alpha=1e-4, batch_size=512, learning_rate_init=1e-3,
            max_iter=10 if quick else MLP_EPOCHS, early_stopping=True, validation_fraction=0.1, n_iter_no_change=4,
            random_state=seed,
        )),
    ])


def outputs_of(model: Any, x: np.ndarray) -> np.ndarray:
    """``model.predict(x)`` as (rows, outputs) float64, one column for a single-output model."""
    return np.asarray(model.predict(x), dtype=np.float64).reshape(len(x), -1)


class MeanOutputs:
    """The mean of fitted multi-output models' predictions: a bag of perceptrons, each fitted on its own rows."""

    def __init__(self, models: list[Any]) -> None:
        if not models:
            raise ValueError("a bag needs at least one model")
        self.models = list(models)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.mean([outputs_of(m, x) for m in self.models], axis=0)


def _reseeded(est: Any, seed: int) -> Any:
    """``est`` with every ``*random_state`` parameter set to ``seed``, so a bag's members start differently."""
    params = est.get_params() if hasattr(est, "get_params") else {}
    return est.set_params(**{k: seed for k in params if k.endswith("random_state")}) if params else est


def fit_bag(make: Callable[[], Any], x: np.ndarray, y: np.ndarray, members: int, rng: np.random.Generator,
            workers: int = 1, pool_min_rows: int = POOL_MIN_ROWS, weights: np.ndarray | None = None) -> Any:
    """``make()`` fitted on (x, y); or, for ``members`` > 1, the ``MeanOutputs`` of that many, member k fitted on
    the k-th of disjoint random parts of the rows with seed k; each row weighted by its entry of ``weights``
    (None: all alike). With ``workers`` > 1 and parts of at least ``pool_min_rows`` rows the members are fitted
    side by side in that many processes (the same models)."""
    if members <= 1:
        est = make()
        return est.fit(x, y, **weight_keyword(est, weights))
    parts = [np.sort(p) for p in np.array_split(rng.permutation(len(x)), members)]
    models = [_reseeded(make(), k) for k in range(members)]
    part_weights = [None if weights is None else weights[p] for p in parts]
    if workers <= 1 or len(parts[-1]) < pool_min_rows:
        jobs = zip(models, parts, part_weights, strict=True)
        return MeanOutputs([m.fit(x[p], y[p], **weight_keyword(m, w)) for m, p, w in jobs])
    # spawn, not fork: the parent may hold BLAS / OpenMP threads; the pool is joined before it returns, so its
    # processes' CPU time counts as the caller's children's.
    with ProcessPoolExecutor(min(workers, members), mp_context=multiprocessing.get_context("spawn")) as pool:
        return MeanOutputs(list(pool.map(_fit_member, models, (x[p] for p in parts), (y[p] for p in parts),
                                         part_weights)))


def weight_keyword(est: Any, weights: np.ndarray | None) -> dict[str, np.ndarray]:
    """``est.fit``'s keyword for row ``weights`` (a pipeline's go to its last step); none without weights (not
    every estimator takes ``sample_weight``)."""
    if weights is None:
        return {}
    key = f"{est.steps[-1][0]}__sample_weight" if isinstance(est, Pipeline) else "sample_weight"
    return {key: weights}


def _fit_member(est: Any, x: np.ndarray, y: np.ndarray, weights: np.ndarray | None = None) -> Any:
    """One member's fit on one BLAS / OpenMP thread (members side by side must not oversubscribe the cores)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        return est.fit(x, y, **weight_keyword(est, weights))


class SharedOutputs:
    """A fitted multi-output estimator whose latest (input digest, prediction) pairs are remembered (never stored)."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def __getstate__(self) -> dict:
        return without_memo(self)

    def predict_all(self, x: np.ndarray) -> np.ndarray:
        """(rows, outputs) float64; equal rows asked again are answered from the memo."""
        return remembered(self, np.asarray(x), self._outputs)

    def _outputs(self, x: np.ndarray) -> np.ndarray:
        return outputs_of(self.model, x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Every output: as a chain's upstream (``ml.ensemble.HorizonChain``) it adds one column per horizon."""
        return self.predict_all(x)


class StackedOutputs:
    """The outputs of several fitted estimators side by side (one column each, or several for a multi-output one);
    the latest prediction is remembered like ``SharedOutputs``' (``hgb_mlp_chain``: the perceptron's forecasts
    and the 15-minute trees' forecast, one upstream shared by the 30- and 60-minute chains)."""

    def __init__(self, members: list[Any]) -> None:
        self.members = list(members)

    def __getstate__(self) -> dict:
        return without_memo(self)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return remembered(self, np.asarray(x), self._stack)

    def _stack(self, x: np.ndarray) -> np.ndarray:
        return np.column_stack([outputs_of(m, x) for m in self.members])


class HorizonOutput:
    """Output ``index`` of a ``SharedOutputs`` model: one horizon's forecast as a single-output estimator."""

    def __init__(self, shared: SharedOutputs, index: int) -> None:
        self.shared = shared
        self.index = int(index)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.shared.predict_all(x)[:, self.index]
