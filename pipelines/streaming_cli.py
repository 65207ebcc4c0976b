"""The ``traffic stream`` command: flags and typed options -> :class:`StreamingConfig`, submit, wait, stop.

See :mod:`pipelines.streaming` for the pipeline itself. SIGTERM stops the job as Ctrl-C
does: ``traffic`` (``cli/main.py``) turns it into ``KeyboardInterrupt`` for every command.
"""

from __future__ import annotations

import argparse
import logging
import signal
import time
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineState

from ml.network import add_network_argument
from ml.registry import MODEL_REFRESH_S
from pipelines.beam_flags import accepts_beam_flags, beam_flags
from pipelines.streaming import DEFAULT_GROUP_ID, StreamingConfig, StreamingError, build_pipeline

__all__ = ["make_config", "register", "typed_option_args", "wait_for_job"]

_LOG = logging.getLogger("traffic.stream")

# The command's own flags -> the typed pipeline options they set (runners/options.py).
_TYPED_FLAGS = {
    "bootstrap_servers": "kafka_bootstrap_servers",
    "group_id": "kafka_group_id",
    "start": "kafka_start",
    "registry": "model_registry",
    "model_refresh_s": "model_refresh_s",
}


def typed_option_args(args: argparse.Namespace, beam_args: Sequence[str]) -> list[str]:
    """The typed options (``--kafka_*``, ``--model_*``) for the command's flags that were given.

    One spelling per option: an option the command has a flag for is refused after ``--``
    (``-- --kafka_bootstrap_servers=X`` -> ``--bootstrap-servers X``), as ``traffic batch`` does.
    """
    from runners.presets import flag_given

    typed = []
    for dest, option in _TYPED_FLAGS.items():
        if flag_given(beam_args, option):
            flag = "--" + dest.replace("_", "-")
            raise StreamingError(f"--{option} is a flag of traffic stream: give {flag} before --, not after it")
        value = getattr(args, dest, None)
        if value is not None:
            typed.append(f"--{option}={value}")
    return typed


def make_config(args: argparse.Namespace, options: PipelineOptions) -> StreamingConfig:
    """The job's configuration from the typed options and the command's flags.

    The model's sensors come from the registry (the job refuses to start without a model).
    """
    from config.hdfs import hdfs_options_for
    from config.settings import default_registry_root, get_settings
    from ml.network import check_network, network_of
    from ml.registry import ModelRegistry
    from runners.options import KafkaOptions, RegistryOptions
    from schemas.topics import get_topic_settings

    settings = get_settings()
    kafka, models = options.view_as(KafkaOptions), options.view_as(RegistryOptions)
    network = network_of(args)
    registry = models.model_registry or network.home_under(default_registry_root())
    hdfs: dict[str, Any] = hdfs_options_for([registry, args.output])
    window_s = args.window_s if args.window_s is not None else network.step_ms // 1000
    if window_s <= 0 or args.allowed_lateness_s < 0:
        raise StreamingError("--window-s must be positive and --allowed-lateness-s not negative")
    if args.file_window_s <= 0 or args.file_window_s % window_s:
        raise StreamingError(f"--file-window-s must be a positive multiple of the {window_s} s window, "
                             f"not {args.file_window_s}")
    if models.model_refresh_s <= 0 or kafka.kafka_max_out_of_orderness_s < 0:
        raise StreamingError("--model-refresh-s must be positive and --kafka_max_out_of_orderness_s not negative")
    bundle = ModelRegistry(registry, hdfs_options=hdfs or None).load()
    check_network(bundle, network)
    return StreamingConfig(
        bootstrap_servers=kafka.kafka_bootstrap_servers or settings.bootstrap_servers,
        topics=get_topic_settings(),
        sensor_ids=tuple(bundle.context.sensor_ids),
        known_sensor_ids=network.sensor_ids,
        road_links=network.road_links(tuple(bundle.context.sensor_ids)),
        registry=registry,
        output=args.output if args.output != "none" else None,
        group_id=kafka.kafka_group_id or DEFAULT_GROUP_ID,
        start=kafka.kafka_start,
        max_out_of_orderness_s=kafka.kafka_max_out_of_orderness_s,
        window_s=window_s,
        allowed_lateness_s=args.allowed_lateness_s,
        file_window_s=args.file_window_s,
        model_refresh_s=models.model_refresh_s,
        hdfs_options=tuple(sorted(hdfs.items())),
        store_dsn=settings.postgres_dsn if args.to_store else None,
        store_retention_s=settings.store_retention_days * 86_400,
        scores=args.scores,
        incidents=args.incidents,
    )


def _run(args: argparse.Namespace) -> int:
    from config.settings import get_settings
    from kafka_client import admin_client
    from runners.presets import pipeline_options

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    extra = beam_flags(args)
    extra = typed_option_args(args, extra) + extra
    if args.from_savepoint:
        extra.append(f"--savepoint_path={_savepoint_uri(args.from_savepoint)}")  # FlinkPipelineOptions.savepointPath
    given = [arg.split("=", 1)[1] for arg in extra if arg.startswith("--job_name=")]
    job_name = given[-1] if given else f"traffic-stream-{time.strftime('%Y%m%dT%H%M%S')}"
    if not given:
        extra.append(f"--job_name={job_name}")
    from config.settings import default_registry_root
    from ml.network import network_of

    registry = args.registry or network_of(args).home_under(default_registry_root())
    paths = [args.output, registry]  # an hdfs:// one adds the WebHDFS options
    options = pipeline_options(args.runner, True, extra, get_settings(), paths=paths)
    cfg = make_config(args, options)
    admin_client(cfg.bootstrap_servers)  # a broker that is down: one line, before anything is submitted
    if cfg.store_dsn:
        from store.db import ensure_ready

        ensure_ready(cfg.store_dsn)
    _LOG.info("stream: %s -> predictions on %s (%d sensors, model registry %s)%s",
              cfg.topics.raw, args.runner, len(cfg.sensor_ids), cfg.registry,
              f", restoring {args.from_savepoint}" if args.from_savepoint else "")
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, cfg)
    result = pipeline.run()
    try:
        state = wait_for_job(result)
    except KeyboardInterrupt:
        if args.savepoint_dir:
            _stop_with_savepoint(result, job_name, args.savepoint_dir)
            return 0
        _LOG.info("stream: cancelling the job")
        result.cancel()
        _cancel_on_cluster(job_name)
        return 0
    if state != PipelineState.DONE:
        raise StreamingError(f"the streaming job ended in state {state} (its errors are logged above)")
    return 0


def wait_for_job(result: Any, poll_s: float = 2.0) -> str:
    """The job's final state, polling ``result.state`` (one GetState request each time) until it ends.

    Not ``result.wait_until_finish()``: the portable runner opens the job's state and
    message streams with a deadline of ``--job_server_timeout`` (300 s) when the job
    service takes the preparation id for the job id, as Prism does, and that call then
    failed a healthy streaming job after five minutes, stopping it.
    """
    while True:
        state = result.state
        if PipelineState.is_terminal(state):
            return state
        time.sleep(poll_s)


def _savepoint_uri(path: str) -> str:
    """A URI (``file:/...``, ``hdfs://...``) as given; a local path must exist and becomes a ``file://`` URI."""
    from pathlib import Path
    from urllib.parse import urlparse

    if urlparse(path).scheme:
        return path
    local = Path(path).expanduser().resolve()
    if not (local / "_metadata").is_file():
        raise StreamingError(f"--from-savepoint {path}: no savepoint there (a savepoint holds a _metadata file)")
    return local.as_uri()


def _stop_with_savepoint(result: Any, job_name: str, savepoint_dir: str) -> None:
    """Stop the Flink job with a savepoint (the LOOPBACK workers of this process finish its last bundles).

    If Flink cannot take it, the job is cancelled (its workers end with this process) and the error raised.
    """
    from config.settings import get_settings
    from runners.flink_jobs import FlinkJobError, stop_flink_job_with_savepoint

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut the savepoint short
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _LOG.info("stream: stopping the job with a savepoint in %s", savepoint_dir)
    try:
        path = stop_flink_job_with_savepoint(get_settings().flink_rest_url, job_name, savepoint_dir)
    except FlinkJobError:
        _LOG.info("stream: no savepoint; cancelling the job")
        result.cancel()
        _cancel_on_cluster(job_name)
        raise
    _LOG.info("stream: stopped with savepoint %s", path)
    print(f"savepoint: {path}\nrestart with: traffic stream --runner flink --from-savepoint {path}", flush=True)


def _cancel_on_cluster(job_name: str) -> None:
    """The Beam 2.62 job server leaves a cancelled job running on Flink: cancel it there too (if Flink is up)."""
    import httpx

    from config.settings import get_settings
    from runners.flink_jobs import cancel_flink_jobs

    try:
        cancel_flink_jobs(get_settings().flink_rest_url, job_name)
    except httpx.HTTPError:
        pass  # no Flink cluster here: nothing more to cancel


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    from config.settings import get_settings

    parser.add_argument("--runner", choices=("prism", "flink", "direct"), default="prism",
                        help="prism (local default) or flink (the local cluster through the job server)")
    parser.add_argument("--bootstrap-servers", "--bootstrap", dest="bootstrap_servers",
                        help="Kafka bootstrap servers (default: the local platform)")
    add_network_argument(parser)
    parser.add_argument("--registry", help="model registry root (default: $TRAFFIC_MODEL_REGISTRY or <work>/models, "
                        "and its networks/<name> for an imported network)")
    parser.add_argument("--output", default=str(get_settings().work_dir / "stream"),
                        help="directory (local or hdfs://) for aggregate and prediction Parquet files; 'none' "
                        "to write only to Kafka")
    parser.add_argument("--group-id", help=f"Kafka consumer group of the raw reader (default {DEFAULT_GROUP_ID})")
    parser.add_argument("--start", choices=("earliest", "latest", "committed"),
                        help="where to start reading the raw topic when the job starts fresh (default: committed, "
                        "falling back to earliest)")
    parser.add_argument("--window-s", type=int, help="aggregation window (default: the network's step, 300 s for "
                        "METR-LA)")
    parser.add_argument("--file-window-s", type=int, default=StreamingConfig.file_window_s,
                        help="the span of event time one Parquet file of --output holds, a multiple of the window "
                        f"(default {StreamingConfig.file_window_s}: a file an hour per output)")
    parser.add_argument("--allowed-lateness-s", type=int, default=300,
                        help="events up to this late (behind their sensor's newest reading) still update their "
                        "window; later ones are dead letters (default 300)")
    parser.add_argument("--model-refresh-s", type=float,
                        help=f"how often the job checks the registry for a newly registered model "
                        f"(default {MODEL_REFRESH_S:g} s)")
    parser.add_argument("--to-store", action="store_true",
                        help="also upsert aggregates, predictions and scores into the PostgreSQL store "
                        "(`traffic platform up postgres`; TRAFFIC_POSTGRES_*)")
    parser.add_argument("--no-scores", dest="scores", action="store_false",
                        help="do not score forecasts against the actuals (no traffic-scores, score files or stored "
                        "scores; scoring is the job's costliest part in a catch-up, docs/benchmarks.md)")
    parser.add_argument("--no-incidents", dest="incidents", action="store_false",
                        help="do not track incidents (no traffic-incidents)")
    parser.add_argument("--savepoint-dir", metavar="DIR",
                        help="on Ctrl-C or SIGTERM stop the Flink job with a savepoint in DIR (local or a URI "
                        "Flink can write) instead of cancelling it, and print the savepoint's path")
    parser.add_argument("--from-savepoint", metavar="PATH",
                        help="start the Flink job from this savepoint (or retained checkpoint): its state, Kafka "
                        "offsets included, is restored and --start no longer applies")
    accepts_beam_flags(parser, "-- --checkpointing_interval=10000 --kafka_max_out_of_orderness_s=5")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "stream",
        description="Run the streaming pipeline on Prism (default) or the local Flink cluster.",
    )
    _add_arguments(parser)
    parser.set_defaults(func=_run)
