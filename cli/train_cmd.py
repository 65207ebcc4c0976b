"""``traffic train``: train on the batch pipeline's feature tables, building them first when needed.

By default the command keeps its own tables under the feature-tables root
(``$TRAFFIC_FEATURE_TABLES``, default ``<work_dir>/tables``; local or
``hdfs://``): ``<root>/full`` for the whole input, ``<root>/quick`` for
``--quick`` (12 sensors, 5 days). When they are missing or stale for the data
(``pipelines/training_tables.py`` says what "stale" means: the input files'
size and modification time, the time range, the sensors and the feature code),
it runs ``traffic batch features`` into them on ``--runner`` (DirectRunner by
default) with its progress lines, then trains on them (``ml.train``). So one
feature path, the Beam one, serves training, backfill and streaming.

``--features DIR`` trains on tables someone else built and never rebuilds them.
"""

from __future__ import annotations

import argparse
import sys
import time

from config.hdfs import hdfs_options_for
from config.settings import PlatformSettings
from ml.exceptions import DataError
from ml.features import fit_context
from ml.network import Network, network_of
from ml.train import add_arguments, check_arguments, fit_and_register, quick_window
from pipelines.tables import join_path
from pipelines.training_tables import TableRequest, ensure_tables, read_training_tables

__all__ = ["register", "run", "tables_dir"]

RUNNERS = ("direct", "prism", "flink")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def tables_dir(quick: bool, settings: PlatformSettings | None = None, network: Network | None = None) -> str:
    """Where ``traffic train`` keeps its tables: ``<feature_tables_root>/quick`` or ``.../full`` (an imported
    network's under ``<feature_tables_root>/networks/<name>/``)."""
    root = (settings or PlatformSettings()).feature_tables_root  # read now: tests and commands change the env
    root = network.home_under(root) if network is not None else root
    return join_path(root, "quick" if quick else "full")


def _readings(args: argparse.Namespace, network: Network, hdfs: tuple):  # noqa: ANN202 - ml.dataset.MetrLA
    from pipelines.sources import SourceSpec, load_readings

    spec = SourceSpec(path=args.data or str(network.root / "speed.npz"), hdfs_options=hdfs,
                      known_sensor_ids=network.sensor_ids)
    return load_readings(spec).with_split(network.split).with_step(network.step_ms)


def _request(args: argparse.Namespace, network: Network, hdfs: tuple) -> TableRequest:
    if not args.quick:
        return TableRequest(data=args.data, hdfs_options=hdfs, network=str(network.root))
    start_ms, end_ms, chosen = quick_window(tuple(_readings(args, network, hdfs).sensor_ids),
                                            network.split.train_end_ms)
    return TableRequest(data=args.data, start_ms=start_ms, end_ms=end_ms, sensors=chosen, hdfs_options=hdfs,
                        network=str(network.root))


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    check_arguments(args)  # bad flags fail before any table is built
    network = network_of(args)
    if args.features and args.rebuild_tables:
        raise DataError("--rebuild-tables rebuilds the tables `traffic train` keeps itself; --features tables are "
                        "rebuilt with `traffic batch features`")
    if args.features:
        hdfs = tuple(sorted(hdfs_options_for([args.data, args.features]).items()))
        features, ctx = read_training_tables(args.features, hdfs_options=hdfs)
        if ctx is None:  # tables without their context: fit it on the raw data, then read the rows in its order
            data = _readings(args, network, hdfs)
            ctx = fit_context(data, network.adjacency(data.sensor_ids))
            features, _ = read_training_tables(args.features, tuple(ctx.sensor_ids), hdfs)
        return fit_and_register(args, features, ctx, started, {"feature_tables": args.features}, network)
    directory = tables_dir(args.quick, network=network)
    hdfs = tuple(sorted(hdfs_options_for([args.data, directory]).items()))
    manifest, _ = ensure_tables(directory, _request(args, network, hdfs), args.runner, args.rebuild_tables,
                                say=_say)
    features, ctx = read_training_tables(join_path(directory, "features"), hdfs_options=hdfs)
    want = sum(manifest.get("rows", {}).get(split, 0) for split in ("train", "val"))
    if len(features[0]) != want:
        raise DataError(f"the feature tables in {directory} hold {len(features[0]):,} train and val rows, their "
                        f"manifest {want:,}; run `traffic train --rebuild-tables`")
    if ctx is None:
        raise DataError(f"{directory}/features has no context.npz; run `traffic train --rebuild-tables`")
    return fit_and_register(args, features, ctx, started,
                            {"feature_tables": directory, "feature_tables_built_at": manifest.get("built_at")},
                            network)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        description="Train the forecasting models on the batch pipeline's feature tables (built first when missing "
        "or stale for the data), select per horizon, calibrate the intervals and register the bundle.",
    )
    add_arguments(p)
    p.add_argument("--rebuild-tables", action="store_true",
                   help="rebuild the feature tables even when they are up to date")
    p.add_argument("--runner", choices=RUNNERS, default="direct",
                   help="where the batch pipeline builds missing or stale tables (default: direct, in this process)")
    p.set_defaults(func=run)
