"""Fitting time of one perceptron of the bag: the sensor's one-hot given as its position, against a sparse one-hot.

    .venv/bin/python benchmarks/perceptron_fit.py [--rows 800000] [--passes 4] [--stride 3]

Builds the features of every ``--stride``-th training window of the bundled METR-LA data with the shipped feature
code, draws ``--rows`` rows with every target observed (one perceptron's share of the default bag:
``ml.models.MLP_ROWS``), and fits the same perceptron (``ml.neural.make_mlp``'s settings, ``--passes`` passes over
the rows, early stopping's held-out tenth as shipped) twice on one thread, in alternation (``--repeats`` times):

* the reference, the way perceptrons were fitted before: ``SensorIdentity``'s sparse one-hot into
  ``RowwiseMLPRegressor``;
* the shipped way: ``SensorIndex``'s position column into ``IndexedOneHotMLPRegressor``.

Prints the CPU and wall seconds of each fit, the ratio, and how far apart the two fits' loss curves and held-out
scores are (the same model up to the order of the sums: their weights start equal).
"""

from __future__ import annotations

import argparse
import platform as host_platform
import sys
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ml.dataset import load_metrla  # noqa: E402
from ml.features import FEATURE_NAMES, fit_context  # noqa: E402
from ml.models import MLP_ROWS  # noqa: E402
from ml.network import BUNDLED_NETWORK, load_network  # noqa: E402
from ml.neural import SensorIdentity, make_mlp  # noqa: E402
from ml.rowwise_mlp import RowwiseMLPRegressor  # noqa: E402
from ml.training_set import examples  # noqa: E402

__all__ = ["main"]


def _rows(n_rows: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    data = load_metrla()
    ctx = fit_context(data, load_network(BUNDLED_NETWORK).adjacency(tuple(data.sensor_ids)))
    x, y, _ = examples(data, ctx, "train", stride=stride)
    observed = np.flatnonzero(np.isfinite(y).all(1))
    rows = np.sort(np.random.default_rng(0).choice(observed, min(n_rows, len(observed)), replace=False))
    base = x[rows, FEATURE_NAMES.index("speed_last")].astype(np.float64)[:, None]
    return x[rows], y[rows] - base  # the change from the last reading, as the bag learns it


def _sparse_reference(passes: int):  # noqa: ANN202 - a Pipeline
    """``make_mlp``'s perceptron with the one-hot as a sparse matrix (the first layer's weights are the same)."""
    model = make_mlp().set_params(mlp__max_iter=passes)
    keys = model.named_steps["scale"].key_columns
    mlp = RowwiseMLPRegressor(**model.named_steps["mlp"].get_params())
    return model.set_params(scale=SensorIdentity(keys), mlp=mlp)


def _fit(make, x: np.ndarray, y: np.ndarray) -> tuple[float, float, object]:  # noqa: ANN001
    model = make()
    wall, cpu = time.perf_counter(), time.process_time()
    with threadpool_limits(1), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the passes end before early stopping would: that is the point
        model.fit(x, y)
    return time.process_time() - cpu, time.perf_counter() - wall, model.named_steps["mlp"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=MLP_ROWS, help="rows of the fit (default: one bag member's)")
    parser.add_argument("--passes", type=int, default=4, help="passes over the rows (default 4)")
    parser.add_argument("--stride", type=int, default=3, help="every n-th training window (default 3)")
    parser.add_argument("--repeats", type=int, default=2, help="fits of each kind, alternating (default 2)")
    args = parser.parse_args(argv)
    if min(args.rows, args.passes, args.stride, args.repeats) < 1:
        parser.error("--rows, --passes, --stride and --repeats must be positive")

    print(f"# {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {host_platform.node()}, {host_platform.processor() or '?'}",
          flush=True)
    started = time.perf_counter()
    x, y = _rows(args.rows, args.stride)
    print(f"rows: {len(x):,} x {x.shape[1]} features in {time.perf_counter() - started:.0f} s", flush=True)
    kinds = {"sparse one-hot (before)": lambda: _sparse_reference(args.passes),
             "one-hot as its position": lambda: make_mlp().set_params(mlp__max_iter=args.passes)}
    times: dict[str, list[tuple[float, float]]] = {k: [] for k in kinds}
    fitted = {}
    for repeat in range(args.repeats):
        for kind, make in kinds.items():
            cpu, wall, mlp = _fit(make, x, y)
            times[kind].append((cpu, wall))
            fitted[kind] = mlp
            print(f"{kind:24s} fit {repeat + 1}: {cpu:6.1f} s CPU, {wall:6.1f} s wall, {mlp.n_iter_} passes, "
                  f"{cpu / mlp.n_iter_:.2f} s CPU a pass", flush=True)
    (before, b_fits), (after, a_fits) = times.items()
    best_before, best_after = min(c for c, _ in b_fits), min(c for c, _ in a_fits)
    print(f"fastest fit, CPU: {best_before:.1f} s before, {best_after:.1f} s now: {best_before / best_after:.2f}x")
    old, new = fitted[before], fitted[after]
    loss_gap = np.max(np.abs(np.subtract(old.loss_curve_, new.loss_curve_)) / np.abs(old.loss_curve_))
    print(f"loss curves (last fits) at most {loss_gap:.1e} apart, relative; held-out R^2 "
          f"{old.validation_scores_[-1]:.6f} and {new.validation_scores_[-1]:.6f}; first-layer weights "
          f"{old.coefs_[0].shape} and {new.coefs_[0].shape}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
