"""``traffic evaluate``: the standard masked metrics of the registered model, per split and horizon.

For the validation split (and the test split when the file covers it, i.e. the
full 34,272-step METR-LA), every protocol window is featurised with
``build_features`` and scored at 15 / 30 / 60 minutes (single steps t+3, t+6,
t+12): masked MAE, RMSE, MAPE, and the coverage and mean width of the
calibrated intervals. The last-value and historical-average baselines are
scored on the same rows. A markdown report with the published anchors and PNG
plots goes to ``--out`` (default ``.work/evaluation/<version>``). ``--compare
VERSION`` scores another registered model (e.g. one trained with
``traffic train --candidates hist_gradient_boosting``, the earlier model type)
on the same windows and shows it beside this one.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from config.hdfs import hdfs_options_for
from config.settings import PlatformSettings, default_registry_root
from ml.dataset import MetrLA
from ml.exceptions import DataError
from ml.features import FEATURE_NAMES
from ml.metrics import scores
from ml.network import add_network_argument, check_network, network_of
from ml.registry import ModelBundle, ModelRegistry
from ml.report import SplitPredictions, write_report
from ml.training_set import examples

__all__ = ["SplitPredictions", "predict_split", "evaluate", "register", "run", "SPLITS"]

SPLITS = ("val", "test")


def predict_split(bundle: ModelBundle, data: MetrLA, split: str) -> SplitPredictions | None:
    """Forecasts for every window of ``split`` in ``data`` (None when the data has none)."""
    x, y, meta = examples(data, bundle.context, split, horizons_min=bundle.horizons_min)
    if len(x) == 0:
        return None
    predictions = bundle.predict(x)
    last = x[:, FEATURE_NAMES.index("speed_last")].astype(np.float64)
    baselines = {
        "last_value": {h: last for h in bundle.horizons_min},
        "historical_average": {
            h: x[:, FEATURE_NAMES.index(f"profile_h{h}")].astype(np.float64) for h in bundle.horizons_min
        },
    }
    return SplitPredictions(y, meta, predictions, baselines)


def _compared(other: ModelBundle, data: MetrLA, split: str) -> dict[str, dict]:
    """{horizon: metrics} of another bundle on the same split (its own features, same windows)."""
    preds = predict_split(other, data, split)
    out: dict[str, dict] = {}
    if preds is None:
        return out
    for j, h in enumerate(other.horizons_min):
        yhat, lower, upper = preds.predictions[h]
        out[str(h)] = {**scores(preds.y[:, j], yhat, lower, upper), "model": other.model_names.get(h, "")}
    return out


def evaluate(
    bundle: ModelBundle, data: MetrLA, compare: ModelBundle | None = None
) -> tuple[dict, dict[str, SplitPredictions]]:
    """({split: {horizon: metrics}}, the per-split predictions) for the splits the data covers.

    With ``compare``, each horizon's entry also holds ``compared``: that bundle's metrics on the same split.
    """
    missing = [s for s in bundle.context.sensor_ids if s not in set(data.sensor_ids)]
    if missing:
        raise DataError(f"the data lacks {len(missing)} of the model's sensors (e.g. {missing[0]})")
    if tuple(data.sensor_ids) != tuple(bundle.context.sensor_ids):
        data = data.only(list(bundle.context.sensor_ids))
    result: dict = {}
    per_split: dict[str, SplitPredictions] = {}
    for split in SPLITS:
        preds = predict_split(bundle, data, split)
        if preds is None:
            continue
        per_split[split] = preds
        result[split] = {}
        other = _compared(compare, data, split) if compare is not None else {}
        for j, h in enumerate(bundle.horizons_min):
            yhat, lower, upper = preds.predictions[h]
            entry = scores(preds.y[:, j], yhat, lower, upper)
            entry["model"] = bundle.model_names.get(h, "")
            entry["baselines"] = {
                name: scores(preds.y[:, j], forecast[h]) for name, forecast in preds.baselines.items()
            }
            if str(h) in other:
                entry["compared"] = {"version": compare.version, **other[str(h)]}
            result[split][str(h)] = entry
    if not result:
        raise DataError("the data has no validation or test windows (it must cover 2012-05-20 or later)")
    return result, per_split


def register(parser: argparse._SubParsersAction) -> None:
    p = parser.add_parser("evaluate")
    add_network_argument(p)
    p.add_argument("--data", help="the network's readings as .npz or .h5 (local or hdfs://), e.g. the full "
                   "metr-la.h5 with its test period; default: the network's own readings")
    p.add_argument("--registry",
                   help="registry root, local or hdfs:// (default: $TRAFFIC_MODEL_REGISTRY or <work>/models)")
    p.add_argument("--version", help="model version (default: LATEST)")
    p.add_argument("--json", action="store_true", help="print one JSON object keyed by split and horizon")
    p.add_argument("--out", help="report directory (default .work/evaluation/<version>)")
    p.add_argument("--compare", metavar="VERSION", help="another registered model version to show beside this one")
    p.set_defaults(func=run)


def _print_text(result: dict, version: str) -> None:
    print(f"model {version}")
    print("split | horizon | model                  |   MAE |  RMSE | MAPE % | coverage | width")
    for split, horizons in result.items():
        for h, m in horizons.items():
            for row in (m, m.get("compared")):
                if row is None:
                    continue
                name = row["model"] if row is m else f"{row['model']} ({row['version']})"
                print(
                    f"{split:>5} | {h:>4} min | {name:<22} | {row['mae']:5.2f} | {row['rmse']:5.2f} | "
                    f"{row['mape']:6.2f} | {row['coverage']:8.1%} | {row['width']:5.1f}"
                )


def run(args: argparse.Namespace) -> int:
    network = network_of(args)
    data = network.readings(args.data, hdfs_options_for([args.data]) or None)
    registry = ModelRegistry(args.registry or network.home_under(default_registry_root()))
    bundle = registry.load(args.version)
    check_network(bundle, network)
    compare = registry.load(args.compare) if args.compare else None
    result, per_split = evaluate(bundle, data, compare)
    out = Path(args.out) if args.out else PlatformSettings().work_dir / "evaluation" / bundle.version
    report = write_report(out, result, per_split, bundle)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        _print_text(result, bundle.version)
        print(f"report: {report}")
    return 0

