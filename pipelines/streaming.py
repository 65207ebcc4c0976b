"""``traffic stream``: the streaming prediction pipeline (Kafka in, Kafka and Parquet out).

The same composites as ``pipelines/batch.py`` (the spine, :mod:`transforms.spine`);
only the source, the sinks and the trigger arguments differ. Every element is
a batch: a RawBatch per read (all partitions), then batches of events, of
aggregates, a snapshot per step and a batch of predictions per step::

    traffic-raw -> ReadFromKafka -> ValidateEvents -> DeduplicateEvents -> traffic-events
                                        '-> dead letters (invalid, duplicate, too late) -> traffic-dlq
    events -> WindowedAggregate (5-min event-time windows, an early pane per input part)
           -> traffic-aggregates (every pane) + <output>/aggregates/*.parquet (final panes: on-time, late)
           -> NetworkHistory (12 steps x all sensors, emitted once every sensor reported the step)
           -> Forecast (RunInference, the registry's model, hot-swapped on a new LATEST)
           -> PostProcess -> traffic-predictions + <output>/predictions/*.parquet, traffic-alerts
           -> TrackIncidents (with the snapshots) -> traffic-incidents (docs/incidents.md)
    predictions + the snapshots' own steps (StepActuals) -> ScoreForecasts -> traffic-scores + <output>/scores/*.parquet
    aggregates, predictions, scores -> WriteToStore (PostgreSQL, with --to-store)

Counts add up: every raw record ends as a valid event or a dead letter
(``in = valid + dead_letters``, namespace ``traffic.stream``); events later than
the allowed lateness are dead letters with reason ``late`` and step
``WindowedAggregate`` (counted as ``late``), and a model output PostProcess
cannot use is a dead letter of step ``PostProcess``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import apache_beam as beam

from ml.dataset import STEP_MS
from ml.features import HISTORY_STEPS, HORIZONS_MIN
from ml.registry import MODEL_REFRESH_S
from ml.road_graph import bundled_road_links
from pipelines.tables import join_path, parquet_schema
from schemas.exceptions import TrafficError
from schemas.topics import TopicSettings
from transforms.counting import CountRecords
from transforms.forecast import Forecast
from transforms.history import StepActuals
from transforms.incidents import TrackIncidents
from transforms.kafka_io import ReadFromKafka
from transforms.panes import FinalPanes
from transforms.postprocess import PostProcess
from transforms.publish import PublishToKafka, WriteWindowedParquetFiles
from transforms.scoring import ScoreForecasts
from transforms.spine import TrafficSpine
from transforms.store_sink import WriteToStore

__all__ = ["DEFAULT_GROUP_ID", "StreamingConfig", "StreamingError", "build_pipeline"]

NAMESPACE = "traffic.stream"
DEFAULT_GROUP_ID = "traffic-stream"


class StreamingError(TrafficError):
    """The streaming job cannot start: no model, bad flags."""


@dataclass(frozen=True)
class StreamingConfig:
    """Everything ``build_pipeline`` needs; ``run`` builds it from flags and the registry."""

    bootstrap_servers: str
    topics: TopicSettings
    sensor_ids: tuple[str, ...]
    registry: str
    known_sensor_ids: tuple[str, ...] = ()
    output: str | None = None
    group_id: str = DEFAULT_GROUP_ID
    start: str = "earliest"
    max_out_of_orderness_s: float = 0.0
    window_s: int = STEP_MS // 1000
    allowed_lateness_s: int = 300
    # The span of one Parquet file (a multiple of window_s): an hour's steps in a file, 24 a day per output, not
    # 288 small files (a NameNode holds every file; 864 files a day cost the worker 2.3 s of CPU a 24 h catch-up).
    file_window_s: int = 3600
    # How long after its end a file window still takes records (a later pane's file). With the aggregation's
    # lateness (300 s) the files of a 3 h catch-up on Flink held 48 of its 864 predictions: the grouping dropped
    # the rest of the closed windows' as late (tests/pipelines/test_streaming.py checks every closed hour's steps).
    # A window's state after its on-time file is only its pane count, so a day costs little.
    file_lateness_s: int = 86_400
    lateness_grace_s: int = 300
    early_firing_count: int | None = 1
    model_refresh_s: float = MODEL_REFRESH_S
    score_wait_s: int = 0
    store_dsn: str | None = None
    store_retention_s: float | None = None
    hdfs_options: tuple[tuple[str, Any], ...] = ()
    road_links: tuple[tuple[str, str], ...] | None = None  # incidents follow these (None: METR-LA's road graph)
    scores: bool = True  # score forecasts against the actuals (traffic-scores, score files, the store's scores)
    incidents: bool = True  # track incidents (traffic-incidents)


def _count(pcoll: beam.PCollection, name: str, label: str) -> beam.PCollection:
    return pcoll | label >> beam.ParDo(CountRecords(NAMESPACE, name))


def build_pipeline(p: beam.Pipeline, cfg: StreamingConfig) -> None:
    """Apply the streaming chain (see the module doc) to ``p``."""
    topics = cfg.topics
    raw = p | "ReadRaw" >> ReadFromKafka(cfg.bootstrap_servers, topics.raw, group_id=cfg.group_id, start=cfg.start,
                                        max_out_of_orderness_s=cfg.max_out_of_orderness_s, batches=True)
    # A window stays open for allowed_lateness_s + lateness_grace_s; runners hold the output watermark
    # there, so the grace is small in streaming (it delays the first step and any incomplete one).
    spine = raw | "Spine" >> TrafficSpine(
        cfg.known_sensor_ids, cfg.sensor_ids, namespace=NAMESPACE, window_s=cfg.window_s,
        history_steps=HISTORY_STEPS, allowed_lateness_s=cfg.allowed_lateness_s,
        early_firing_count=cfg.early_firing_count, lateness_grace_s=cfg.lateness_grace_s,
    )
    _ = spine.events | "PublishEvents" >> PublishToKafka(cfg.bootstrap_servers, topics.events, "traffic_event")
    aggregates, snapshots = spine.aggregates, spine.snapshots
    _ = aggregates | "PublishAggregates" >> PublishToKafka(cfg.bootstrap_servers, topics.aggregates,
                                                           "window_aggregate")

    forecasts = snapshots | "Forecast" >> Forecast(
        cfg.registry, refresh_s=cfg.model_refresh_s, hdfs_options=dict(cfg.hdfs_options) or None
    )
    post = forecasts | "PostProcess" >> PostProcess()
    unusable = _count(post.dead_letter, "prediction_dead_letters", "CountUnusableDeadLetters")
    _ = (
        (spine.dead_letters, unusable)
        | "AllDeadLetters" >> beam.Flatten()
        | "PublishDeadLetters" >> PublishToKafka(cfg.bootstrap_servers, topics.dead_letters, "dead_letter",
                                                 key_field="key")
    )
    predictions = _count(post.predictions, "predictions", "CountPredictions")
    _ = predictions | "PublishPredictions" >> PublishToKafka(cfg.bootstrap_servers, topics.predictions, "prediction")
    _ = post.alerts | "PublishAlerts" >> PublishToKafka(cfg.bootstrap_servers, topics.alerts, "alert")
    if cfg.incidents:
        incidents = {"snapshots": snapshots, "predictions": post.predictions} | "TrackIncidents" >> TrackIncidents(
            cfg.sensor_ids, bundled_road_links(cfg.sensor_ids) if cfg.road_links is None else cfg.road_links,
            HORIZONS_MIN, step_s=cfg.window_s)
        _ = incidents | "PublishIncidents" >> PublishToKafka(cfg.bootstrap_servers, topics.incidents, "incident",
                                                             key_field="incident_id")
    outputs = {"aggregates": aggregates, "predictions": predictions}
    if cfg.scores:
        # Scored against each step's panes as NetworkHistory emitted the step (the readings the next forecasts
        # take as its truth), not against the aggregation's panes: on hand when the step is, one element per step.
        actuals = snapshots | "StepActuals" >> StepActuals(cfg.sensor_ids)
        outputs["scores"] = {"predictions": predictions, "aggregates": actuals} | "ScoreForecasts" >> \
            ScoreForecasts(window_s=cfg.window_s, wait_s=cfg.score_wait_s)
        _ = outputs["scores"] | "PublishScores" >> PublishToKafka(cfg.bootstrap_servers, topics.scores, "score")
    if cfg.store_dsn:  # the PostgreSQL store behind the API's history (pruned by the actuals' writer)
        tables = {"actuals": aggregates, "predictions": predictions} | (
            {"scores": outputs["scores"]} if cfg.scores else {})
        for table, records in tables.items():
            retention = cfg.store_retention_s if table == "actuals" else None
            _ = records | f"Store{table.capitalize()}" >> WriteToStore(cfg.store_dsn, table, retention_s=retention)

    if cfg.output:
        # Files are written once per window when it closes: the default trigger replaces the early one
        # (Prism 2.77 also panics grouping temp files under a continuation trigger).
        schemas = {"aggregates": "window_aggregate", "predictions": "prediction", "scores": "score"}
        # The files keep each window's final panes (ON_TIME, LATE): an EARLY pane's rows are superseded (early panes
        # were about half the aggregate elements of a 24 h catch-up; transforms/panes.py). The topic keeps them.
        files = {**outputs, "aggregates": aggregates | "FinalAggregatePanes" >> FinalPanes()}
        # A record behind the watermark (those after a stall) goes to a later pane's file instead of being dropped.
        windowed = {name: records | f"Window{name.capitalize()}ForFiles" >> beam.WindowInto(
            beam.window.FixedWindows(cfg.file_window_s), allowed_lateness=cfg.file_lateness_s)
            for name, records in files.items()}
        _ = windowed | "WriteFiles" >> WriteWindowedParquetFiles(
            {name: (join_path(cfg.output, name), parquet_schema(schemas[name])) for name in windowed})
