"""Versioned model registry on a local path or any Beam filesystem (``hdfs://``).

Layout::

    <root>/LATEST                   the newest version's name (replaced atomically on local disks)
    <root>/<version>/model.skops    per-horizon estimators (skops; loaded with an explicit trusted-type list)
    <root>/<version>/metadata.json  version, feature list, horizons, model per horizon, interval parameters,
                                    training data range, library versions, validation metrics
    <root>/<version>/context.npz    the FeatureContext (profiles, graph weights; numpy, no pickle)

A :class:`ModelBundle` predicts ``{horizon_min: (yhat, lower, upper)}`` from a
feature matrix built by ``ml.features.build_features``.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from config.hdfs import hdfs_options_for
from config.settings import default_registry_root
from ml.conformal import Intervals, intervals_from_dict
from ml.exceptions import ModelRegistryError
from ml.features import FEATURE_NAMES, FeatureContext

__all__ = [
    "MODEL_REFRESH_S",
    "TRUSTED_TYPES",
    "ModelBundle",
    "ModelRegistry",
    "library_versions",
]

MAX_SPEED_MPH = 100.0
MODEL_REFRESH_S = 10.0  # how often a running job re-reads LATEST to pick up a newly registered model
# Every type a stored model may contain beyond skops' defaults; anything else refuses to load.
TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.ensemble._hist_gradient_boosting.binning._BinMapper",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingRegressor",
    "sklearn._loss.loss.AbsoluteError",
    "sklearn._loss.loss.HalfSquaredError",
    "sklearn._loss.loss.PinballLoss",
    "sklearn._loss.link.IdentityLink",
    "sklearn._loss.link.Interval",
    "sklearn.ensemble._forest.RandomForestRegressor",
    "sklearn.ensemble._forest.ExtraTreesRegressor",
    "sklearn.tree._classes.DecisionTreeRegressor",
    "sklearn.tree._tree.Tree",
    "sklearn.linear_model._ridge.Ridge",
    "sklearn.linear_model._base.LinearRegression",
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.impute._base.SimpleImputer",
    "ml.ensemble.ColumnBlend",
    "ml.ensemble.HorizonChain",
    "ml.neural.HorizonOutput",
    "ml.neural.MeanOutputs",
    "ml.neural.SensorIdentity",
    "ml.neural.SensorIndex",
    "ml.neural.SharedOutputs",
    "ml.neural.StackedOutputs",
    "ml.rowwise_ridge.RowwiseRidge",
    "ml.compiled_trees.CompiledTreesRegressor",
    "ml.rowwise_mlp.RowwiseMLPRegressor",
    "ml.rowwise_mlp.IndexedOneHotMLPRegressor",
    "sklearn.neural_network._multilayer_perceptron.MLPRegressor",
    "sklearn.neural_network._stochastic_optimizers.AdamOptimizer",
    "numpy.dtype",
    "builtins.slice",
    "collections.OrderedDict",
)


def library_versions() -> dict[str, str]:
    import sklearn
    import skops

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
        "skops": skops.__version__,
    }


@dataclass
class ModelBundle:
    """Per-horizon models and calibrated intervals.

    Inputs are rows of ``ml.features.build_features`` (columns ``FEATURE_NAMES``).
    For horizon h the point forecast is ``base + estimator.predict(X[:, feature_columns[h]])``,
    where ``base`` is the feature ``base_features[h]`` (e.g. ``speed_last``: the model
    learns the change) or 0 when None; an estimator of None means the base alone
    (the last-value and historical-average baselines). ``feature_columns[h]`` names the
    columns horizon h's estimator was fitted on (default: all of ``FEATURE_NAMES``), so
    bundles fitted on an older, shorter feature list keep working.
    """

    estimators: dict[int, Any]
    base_features: dict[int, str | None]
    intervals: dict[int, Intervals]
    context: FeatureContext
    coverage: float = 0.9
    model_names: dict[int, str] = field(default_factory=dict)
    version: str = ""
    metadata: dict = field(default_factory=dict)
    feature_columns: dict[int, tuple[str, ...]] = field(default_factory=dict)
    feature_names: tuple[str, ...] = FEATURE_NAMES

    def __post_init__(self) -> None:
        index = {name: j for j, name in enumerate(FEATURE_NAMES)}
        self._columns: dict[int, np.ndarray] = {}
        for h in self.estimators:
            names = self.feature_columns.setdefault(h, FEATURE_NAMES)
            unknown = [n for n in names if n not in index]
            if unknown:
                missing = ", ".join(unknown[:5])
                raise ModelRegistryError(f"the model needs features this code does not compute: {missing}")
            self._columns[h] = np.array([index[n] for n in names], dtype=np.int64)

    @property
    def horizons_min(self) -> tuple[int, ...]:
        return tuple(sorted(self.estimators))

    def columns(self, x: np.ndarray, horizon_min: int) -> np.ndarray:
        """The columns of ``x`` (rows, FEATURE_NAMES) that horizon ``horizon_min``'s estimator takes."""
        cols = self._columns[horizon_min]
        return x if len(cols) == x.shape[1] and np.array_equal(cols, np.arange(x.shape[1])) else x[:, cols]

    def predict_point(self, x: np.ndarray, horizon_min: int) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != len(FEATURE_NAMES):
            raise ModelRegistryError(f"features have shape {x.shape}, the model expects (rows, {len(FEATURE_NAMES)})")
        base_name = self.base_features.get(horizon_min)
        base = x[:, FEATURE_NAMES.index(base_name)].astype(np.float64) if base_name else np.zeros(len(x))
        est = self.estimators[horizon_min]
        if est is not None and len(x):
            base = base + np.asarray(est.predict(self.columns(x, horizon_min)), dtype=np.float64)
        return np.clip(base, 0.0, MAX_SPEED_MPH)

    def predict(self, x: np.ndarray) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        x = np.asarray(x, dtype=np.float32)
        out = {}
        for h in self.horizons_min:
            yhat = self.predict_point(x, h)
            lower, upper = self.intervals[h].bounds(yhat, self.columns(x, h))
            out[h] = (yhat, lower, np.minimum(upper, MAX_SPEED_MPH))
        return out


def _is_remote(path: str) -> bool:
    return "://" in path


def _join(root: str, *parts: str) -> str:
    if _is_remote(root):
        return "/".join([root.rstrip("/"), *parts])
    return str(Path(root, *parts))


class ModelRegistry:
    """Register, list and load :class:`ModelBundle` versions under ``root``."""

    def __init__(self, root: str | Path | None = None, hdfs_options: dict | None = None) -> None:
        self.root = str(root) if root is not None else default_registry_root()
        self._remote = _is_remote(self.root)
        hdfs_options = hdfs_options or hdfs_options_for([self.root]) or None
        if self._remote and hdfs_options:
            from apache_beam.io.filesystems import FileSystems
            from apache_beam.options.pipeline_options import PipelineOptions

            FileSystems.set_options(PipelineOptions.from_dictionary(hdfs_options))

    # -- byte IO over local disks or Beam filesystems --------------------------------------
    def _write(self, path: str, data: bytes) -> None:
        if not self._remote:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_bytes(data)
            return
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.create(path) as handle:
            handle.write(data)

    def _read(self, path: str) -> bytes:
        if not self._remote:
            try:
                return Path(path).read_bytes()
            except FileNotFoundError:
                raise ModelRegistryError(f"{path} does not exist") from None
        from apache_beam.io.filesystems import FileSystems

        try:
            with FileSystems.open(path) as handle:
                return handle.read()
        except Exception as exc:  # noqa: BLE001 - filesystems raise their own types
            raise ModelRegistryError(f"cannot read {path}: {exc}") from None

    def _exists(self, path: str) -> bool:
        if not self._remote:
            return Path(path).exists()
        from apache_beam.io.filesystems import FileSystems

        return FileSystems.exists(path)

    def _set_latest(self, version: str) -> None:
        target = _join(self.root, "LATEST")
        if not self._remote:
            Path(self.root).mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".LATEST.")
            with os.fdopen(fd, "w") as handle:
                handle.write(version + "\n")
            os.replace(tmp, target)
            return
        from apache_beam.io.filesystems import FileSystems

        tmp = _join(self.root, f".LATEST.{uuid.uuid4().hex}")
        self._write(tmp, (version + "\n").encode())
        if FileSystems.exists(target):
            FileSystems.delete([target])
        FileSystems.rename([tmp], [target])

    # -- public API ---------------------------------------------------------------------------
    def register(self, bundle: ModelBundle) -> str:
        """Store ``bundle`` as a new version, point LATEST at it, and return the version."""
        import skops.io as sio

        version = bundle.version or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + uuid.uuid4().hex[:6]
        models = {str(h): est for h, est in bundle.estimators.items()}
        models.update(
            {f"{h}/scale": iv.scale_model for h, iv in bundle.intervals.items() if iv.scale_model is not None}
        )
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "model.skops")
            sio.dump(models, path)
            model_bytes = path.read_bytes()
        metadata = dict(bundle.metadata)
        metadata.update(
            {
                "version": version,
                "created_utc": datetime.now(UTC).isoformat(timespec="seconds"),
                "feature_names": list(bundle.feature_names),
                "feature_columns": {str(h): list(bundle.feature_columns[h]) for h in bundle.horizons_min},
                "horizons_min": list(bundle.horizons_min),
                "coverage": bundle.coverage,
                "model_names": {str(h): bundle.model_names.get(h, "") for h in bundle.horizons_min},
                "base_features": {str(h): bundle.base_features.get(h) for h in bundle.horizons_min},
                "intervals": {str(h): bundle.intervals[h].to_dict() for h in bundle.horizons_min},
                "training_range_ms": [bundle.context.train_start_ms, bundle.context.train_end_ms],
                "sensor_ids": list(bundle.context.sensor_ids),
                "libraries": library_versions(),
            }
        )
        directory = _join(self.root, version)
        self._write(_join(directory, "model.skops"), model_bytes)
        self._write(_join(directory, "context.npz"), bundle.context.to_bytes())
        self._write(_join(directory, "metadata.json"), json.dumps(metadata, indent=2, default=_json_default).encode())
        self._set_latest(version)
        bundle.version = version
        bundle.metadata = metadata
        return version

    def latest_version(self) -> str | None:
        path = _join(self.root, "LATEST")
        if not self._exists(path):
            return None
        return self._read(path).decode().strip() or None

    def versions(self) -> list[str]:
        if not self._remote:
            root = Path(self.root)
            if not root.is_dir():
                return []
            return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "metadata.json").exists())
        from apache_beam.io.filesystems import FileSystems

        try:  # Beam's HDFS match lists one directory level, so list the versions, then check each
            matches = FileSystems.match([_join(self.root, "*")])[0].metadata_list
        except Exception:  # noqa: BLE001 - an absent root matches nothing
            return []
        names = {m.path.rstrip("/").split("/")[-1] for m in matches}
        return sorted(n for n in names if not n.startswith(".") and self._exists(_join(self.root, n, "metadata.json")))

    def load_metadata(self, version: str | None = None) -> dict:
        version = version or self._require_latest()
        return json.loads(self._read(_join(self.root, version, "metadata.json")))

    def load(self, version: str | None = None) -> ModelBundle:
        """Load ``version`` (default: LATEST). Refuses models containing types outside ``TRUSTED_TYPES``."""
        import skops.io as sio
        from skops.io.exceptions import UntrustedTypesFoundException

        version = version or self._require_latest()
        metadata = self.load_metadata(version)
        model_bytes = self._read(_join(self.root, version, "model.skops"))
        try:  # skops refuses any type outside its defaults and TRUSTED_TYPES before it builds one (one parse)
            models = sio.loads(model_bytes, trusted=list(TRUSTED_TYPES))
        except UntrustedTypesFoundException:
            untrusted = ", ".join(sorted(set(sio.get_untrusted_types(data=model_bytes)) - set(TRUSTED_TYPES)))
            raise ModelRegistryError(f"model {version} contains untrusted types: {untrusted}") from None
        context = FeatureContext.from_bytes(self._read(_join(self.root, version, "context.npz")))
        horizons = [int(h) for h in metadata["horizons_min"]]
        # Bundles from before per-horizon columns: every horizon used the whole list they were trained on.
        columns = metadata.get("feature_columns") or {str(h): metadata["feature_names"] for h in horizons}
        return ModelBundle(
            estimators={h: models[str(h)] for h in horizons},
            base_features={h: metadata["base_features"][str(h)] for h in horizons},
            intervals={
                h: intervals_from_dict(metadata["intervals"][str(h)], models.get(f"{h}/scale")) for h in horizons
            },
            context=context,
            coverage=float(metadata["coverage"]),
            model_names={h: metadata["model_names"][str(h)] for h in horizons},
            version=version,
            metadata=metadata,
            feature_columns={h: tuple(columns[str(h)]) for h in horizons},
        )

    def _require_latest(self) -> str:
        version = self.latest_version()
        if version is None:
            raise ModelRegistryError(f"the model registry {self.root} has no model yet (run `traffic train`)")
        return version


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")

