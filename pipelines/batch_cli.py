"""``traffic batch``: the command of the batch pipeline (``pipelines/batch.py``): flags, run, summary.

``make_config`` resolves the flags into a :class:`~pipelines.batch.BatchConfig` (it loads the input once, and the
model in backfill mode); ``execute`` builds and runs the pipeline to completion; the run logs progress and ends with
the per-stage counts from Beam metrics (in = valid + dead letters), and fails when they do not add up.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import apache_beam as beam
import numpy as np

from ml.features import HISTORY_STEPS
from ml.network import add_network_argument
from pipelines.batch import COUNTERS, MODES, NAMESPACE, BatchConfig, BatchError, build_pipeline
from pipelines.beam_flags import accepts_beam_flags, beam_flags, parse_args
from pipelines.sources import SourceSpec
from pipelines.tables import clear_feature_tables

__all__ = ["BATCH_DIRECT_ARGS", "BatchRun", "build_parser", "configure_logging", "execute", "make_config", "register",
           "run", "summarise"]

_LOG = logging.getLogger("traffic.batch")
# For DirectRunner (other runners ignore or tolerate them). --allow_unsafe_triggers keeps Beam 2.77's DirectRunner
# from handing the job to Prism, which double-fires WindowedAggregate's AfterCount late trigger (apache/beam#33623:
# every aggregate twice) and measured 3x slower here. One worker in this process: the elements are few and large
# (a chunk, a window, a network step, a day of feature rows), so two worker processes (multi_processing) only added
# the gRPC data plane through the launcher: 7 days took 10.1 s there against 6.0 s in process (docs/benchmarks.md).
BATCH_DIRECT_ARGS: tuple[str, ...] = (
    "--allow_unsafe_triggers",
    "--direct_running_mode=in_memory",
    "--direct_num_workers=1",
)


def _parse_time_ms(value: str | None, flag: str) -> int | None:
    if value is None:
        return None
    try:
        return int(np.datetime64(value.rstrip("Z"), "ms").astype(np.int64))
    except ValueError:
        raise BatchError(f"{flag} {value!r} is not a date/time such as 2012-03-01 or 2012-03-01T06:00") from None


def make_config(args: argparse.Namespace) -> BatchConfig:
    """Resolve flags into a :class:`BatchConfig`: loads the input once (and the model in backfill mode)."""
    from config.hdfs import hdfs_options_for
    from config.settings import default_registry_root, get_settings
    from ml.features import window_target_steps
    from ml.network import check_network, network_of
    from ml.registry import ModelRegistry
    from ml.training_set import window_ends
    from pipelines.sources import load_readings

    network = network_of(args)
    output = args.output or str(get_settings().work_dir / "batch" / args.mode)
    registry = args.registry or network.home_under(default_registry_root())
    hdfs = hdfs_options_for([args.data, output, registry if args.mode == "backfill" else None])
    spec = SourceSpec(
        path=args.data or str(network.root / "speed.npz"),
        known_sensor_ids=network.sensor_ids,
        start_ms=_parse_time_ms(args.start, "--start"),
        end_ms=_parse_time_ms(args.end, "--end"),
        sensor_ids=tuple(s for s in (args.sensors or "").split(",") if s) or None,
        hdfs_options=tuple(sorted(hdfs.items())),
    )
    cfg = BatchConfig(mode=args.mode, source=spec, output=output, sensor_ids=(), hdfs_options=hdfs,
                      progress_every=args.progress_every, split=network.split,
                      window_s=network.step_ms // 1000, network=network.name)
    if args.mode == "backfill":
        bundle = ModelRegistry(registry, hdfs_options=hdfs or None).load(args.model_version)
        check_network(bundle, network)
        if spec.sensor_ids:
            raise BatchError("--sensors is for features mode; a backfill runs on the model's sensors")
        spec = replace(spec, sensor_ids=tuple(bundle.context.sensor_ids))
        data = load_readings(spec)
        from schemas.topics import get_topic_settings

        topics = get_topic_settings()
        if args.to_store:
            from store.db import ensure_ready

            ensure_ready(get_settings().postgres_dsn)
        return replace(
            cfg, source=spec, sensor_ids=spec.sensor_ids, registry=registry, model_version=str(bundle.version),
            road_links=network.road_links(spec.sensor_ids),
            first_step_ms=int(data.times_ms[0]), to_kafka=args.to_kafka,
            bootstrap_servers=args.bootstrap_servers or get_settings().bootstrap_servers,
            predictions_topic=args.predictions_topic or topics.predictions,
            alerts_topic=args.alerts_topic or topics.alerts,
            incidents_topic=args.incidents_topic or topics.incidents, scores_topic=topics.scores,
            store_dsn=get_settings().postgres_dsn if args.to_store else None,
        )
    from ml.features import fit_context

    data = load_readings(spec).with_split(network.split).with_step(network.step_ms)
    _LOG.info("batch: fitting the feature context on the training period of %d steps x %d sensors",
              data.n_steps, len(data.sensor_ids))
    context = fit_context(data, network.adjacency(data.sensor_ids))
    ends = frozenset(int(t) for t in data.times_ms[window_ends(data)])
    if not ends:
        need = HISTORY_STEPS + window_target_steps(data.step_ms)
        raise BatchError(f"the input has {data.n_steps} steps; a window needs {need} consecutive steps")
    return replace(cfg, sensor_ids=tuple(data.sensor_ids), context=context, window_ends_ms=ends,
                   first_step_ms=int(data.times_ms[0]))


def _counters(result: Any) -> dict[str, int]:
    from apache_beam.metrics.metric import MetricsFilter

    try:
        found = result.metrics().query(MetricsFilter().with_namespace(NAMESPACE))["counters"]
    except Exception:  # noqa: BLE001 - some runners cannot report metrics
        return {}
    counts: dict[str, int] = {}
    for item in found:
        value = item.committed if item.committed is not None else item.attempted
        counts[item.key.metric.name] = counts.get(item.key.metric.name, 0) + int(value or 0)
    return counts


def summarise(cfg: BatchConfig, counts: dict[str, int], wall_s: float) -> tuple[str, bool]:
    """The end-of-run summary and whether the counts add up (in = valid + dead letters)."""
    c = {name: counts.get(name, 0) for name in COUNTERS}
    balanced = c["in"] == c["valid"] + c["dead_letters"]
    rate = c["in"] / wall_s if wall_s > 0 else 0.0
    lines = [
        f"batch {cfg.mode}: in {c['in']} = valid {c['valid']} + dead letters {c['dead_letters']}"
        + (" (counts add up)" if balanced else " (COUNTS DO NOT ADD UP)")
        + (f"; {c['late']} valid events came too late for their window" if c["late"] else ""),
        f"  aggregates {c['aggregates']}, network steps {c['snapshots']}, "
        + (f"feature rows {c['feature_rows']}" if cfg.mode == "features"
           else f"predictions {c['predictions']}, alerts {c['alerts']}, incident records {c['incidents']}, "
           f"rejected predictions {c['prediction_dead_letters']}, scores {c['scores']} (model {cfg.model_version})"),
        f"  output {cfg.output}" + (" and Kafka" if cfg.to_kafka else ""),
        f"  wall {wall_s:.1f} s, {rate:,.0f} readings/s",
    ]
    if not counts:
        lines.insert(0, "batch: this runner reported no metrics; counts below are zero")
    return "\n".join(lines), balanced or not counts


class _WorkerProgress(logging.Filter):
    """Lets through the progress lines relayed from DirectRunner worker processes (and errors), unwrapped."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        marker = text.find('message: "batch: ')
        if marker >= 0:
            record.msg, record.args = text[marker + 10 : text.find('"', marker + 10)], ()
            return True
        return record.levelno >= logging.ERROR


def configure_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("traffic").setLevel(logging.INFO)
    relay = logging.getLogger("apache_beam.runners.portability.local_job_service")
    relay.setLevel(logging.INFO)
    if not any(isinstance(f, _WorkerProgress) for f in relay.filters):
        relay.addFilter(_WorkerProgress())


def build_parser() -> argparse.ArgumentParser:
    """The ``traffic batch`` flags as a stand-alone parser (``run`` and the benchmark use it)."""
    parser = argparse.ArgumentParser(prog="traffic batch")
    _add_arguments(parser)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (the ``traffic batch`` flags), build and run the pipeline, print the summary."""
    return _run(parse_args(build_parser(), sys.argv[1:] if argv is None else argv))


@dataclass(frozen=True)
class BatchRun:
    """What a finished run reports: its config, the stage counters and the wall time (flags to finish)."""

    cfg: BatchConfig
    counts: dict[str, int]
    wall_s: float
    pipeline_s: float


def execute(args: argparse.Namespace) -> BatchRun:
    """Resolve the flags, build and run the pipeline to completion, and collect the counters."""
    from config.settings import get_settings
    from runners.presets import pipeline_options

    started = time.monotonic()
    cfg = make_config(args)
    extra = [*BATCH_DIRECT_ARGS, *beam_flags(args)]
    paths = [p for p in (cfg.source.path, cfg.output, cfg.registry) if p]
    options = pipeline_options(args.runner, False, extra, get_settings(), paths)
    _LOG.info("batch %s: network %s, %s -> %s on %s", cfg.mode, cfg.network, cfg.source.path, cfg.output,
              args.runner)
    pipeline = beam.Pipeline(options=options)  # sets the file systems' options (hdfs://)
    if cfg.mode == "features" and (removed := clear_feature_tables(cfg.output)):
        _LOG.info("batch features: removed %d Parquet file(s) of an earlier run under %s/features", removed,
                  cfg.output)
    build_pipeline(pipeline, cfg)
    launched = time.monotonic()
    result = pipeline.run()
    result.wait_until_finish()
    finished = time.monotonic()
    return BatchRun(cfg, _counters(result), finished - started, finished - launched)


def _run(args: argparse.Namespace) -> int:
    configure_logging()
    outcome = execute(args)
    text, balanced = summarise(outcome.cfg, outcome.counts, outcome.wall_s)
    print(text, flush=True)
    return 0 if balanced else 1


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("mode", choices=MODES, help="features: feature+target tables; backfill: predictions")
    add_network_argument(parser)
    parser.add_argument("--data", help="the network's readings as .npz/.h5 or raw-reading Parquet (file, directory "
                        "or glob), local or hdfs://; default: the network's own readings")
    parser.add_argument("--start", help="first step to read (UTC), e.g. 2012-03-01 or 2012-03-01T06:00")
    parser.add_argument("--end", help="read steps before this time (UTC)")
    parser.add_argument("--sensors", help="features mode: comma-separated sensor ids (default: all in the input)")
    parser.add_argument("--output", help="output directory, local or hdfs:// (default: <work_dir>/batch/<mode>)")
    parser.add_argument("--registry", help="model registry root (default: $TRAFFIC_MODEL_REGISTRY or "
                        "<work_dir>/models)")
    parser.add_argument("--model-version", help="backfill with this model version (default: LATEST)")
    parser.add_argument("--runner", choices=("direct", "prism", "flink"), default="direct",
                        help="where the pipeline runs (default: direct, in this process)")
    parser.add_argument("--to-kafka", action="store_true", help="backfill: also produce predictions, alerts and scores "
                        "(Avro) to their topics")
    parser.add_argument("--to-store", action="store_true", help="backfill: also upsert aggregates, predictions "
                        "and scores into the PostgreSQL store (TRAFFIC_POSTGRES_*)")
    parser.add_argument("--bootstrap-servers", "--bootstrap", dest="bootstrap_servers",
                        help="Kafka bootstrap servers for --to-kafka (default: the local platform)")
    parser.add_argument("--predictions-topic",
                        help="--to-kafka: predictions topic (default: TRAFFIC_TOPICS_PREDICTIONS)")
    parser.add_argument("--alerts-topic",
                        help="--to-kafka: alerts topic (default: TRAFFIC_TOPICS_ALERTS)")
    parser.add_argument("--incidents-topic",
                        help="--to-kafka: incidents topic (default: TRAFFIC_TOPICS_INCIDENTS)")
    parser.add_argument("--progress-every", type=int, default=100_000, metavar="N",
                        help="log a progress line every N elements per stage (default 100000)")
    parser.add_argument("--beam-args", dest="beam_args_string", metavar="'FLAGS'", help=argparse.SUPPRESS)
    accepts_beam_flags(parser, "-- --direct_num_workers=1")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "batch",
        description="Run the Beam batch pipeline (ValidateEvents -> DeduplicateEvents -> WindowedAggregate -> "
        "NetworkHistory, as in streaming) over a file of readings.",
    )
    _add_arguments(parser)
    parser.set_defaults(func=_run)
