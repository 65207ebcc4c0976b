"""The batch pipeline over history, on the same composites as streaming (``traffic batch``: ``pipelines/batch_cli.py``).

Two modes share one chain (only the source, the sinks and the windowing
arguments differ from ``pipelines/streaming.py``)::

    file -> ReadRawReadings (raw_reading batches, or Avro RawReading values) -> TrafficSpine: ValidateEvents
         -> DeduplicateEvents -> WindowedAggregate (5-min event-time windows) -> NetworkHistory (12 steps x all sensors)

- ``features``: -> build_features (a FeatureContext fitted on the training
  period of the input before the pipeline is built), a day of steps at a time,
  with the targets (the network's mean at t+3 / t+6 / t+12 steps, NaN when
  missing) -> Parquet tables with ``FEATURE_TABLE_COLUMNS`` under
  ``<output>/features/{train,val,test}/`` (an earlier run's files there are
  removed first). Rows exist for the protocol's windows (12 inputs and 12
  following steps in the input).
- ``backfill``: -> Forecast (RunInference with the registry's model) ->
  PostProcess -> ``<output>/predictions/`` and ``<output>/alerts/`` Parquet,
  and TrackIncidents -> ``<output>/incidents/`` (docs/incidents.md); the
  predictions and each step's actuals (StepActuals) -> ScoreForecasts -> ``<output>/scores/``; with
  ``--to-kafka`` also the predictions, alerts, incidents and scores topics (Avro).

Dead letters of both modes go to ``<output>/dead_letters/`` as JSON lines.
The stages count under ``NAMESPACE`` (``COUNTERS``: in = valid + dead letters). Every element is a batch
(``transforms/spine.py``).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import apache_beam as beam

from ml.dataset import METR_LA_SPLIT, STEP_MS, Split
from ml.features import HISTORY_STEPS, HORIZONS_MIN, FeatureContext
from ml.road_graph import bundled_road_links
from pipelines.sources import ReadRawReadings, SourceSpec
from pipelines.tables import WriteFeatureTables, arrow_table, join_path, parquet_schema
from schemas.exceptions import TrafficError
from transforms.counting import CountRecords
from transforms.forecast import Forecast
from transforms.history import StepActuals
from transforms.incidents import TrackIncidents
from transforms.postprocess import PostProcess
from transforms.publish import PublishToKafka
from transforms.scoring import ScoreForecasts
from transforms.spine import TrafficSpine
from transforms.store_sink import WriteToStore

__all__ = ["COUNTERS", "MODES", "NAMESPACE", "BatchConfig", "BatchError", "build_pipeline"]

NAMESPACE = "traffic.batch"
MODES = ("features", "backfill")
# Stage counters, in pipeline order (namespace traffic.batch).
COUNTERS: tuple[str, ...] = (
    "in", "valid", "dead_letters", "late", "aggregates", "snapshots", "feature_rows", "predictions", "alerts",
    "prediction_dead_letters", "incidents", "scores",
)


class BatchError(TrafficError):
    """A batch run cannot start: bad flags, no model, no data in range."""


@dataclass(frozen=True)
class BatchConfig:
    """Everything ``build_pipeline`` needs; built from the command line by ``pipelines.batch_cli.make_config``.

    ``context`` (features mode) is fitted before the pipeline is built;
    ``window_ends_ms`` are the steps t that get feature rows; ``sensor_ids`` is
    the network in column order (the model's in backfill mode).
    """

    mode: str
    source: SourceSpec
    output: str
    sensor_ids: tuple[str, ...]
    context: FeatureContext | None = None
    window_ends_ms: frozenset[int] = frozenset()
    registry: str | None = None
    model_version: str | None = None
    first_step_ms: int | None = None
    to_kafka: bool = False
    bootstrap_servers: str | None = None
    predictions_topic: str = "traffic-predictions"
    alerts_topic: str = "traffic-alerts"
    incidents_topic: str = "traffic-incidents"
    scores_topic: str = "traffic-scores"
    store_dsn: str | None = None
    hdfs_options: dict[str, Any] = field(default_factory=dict)
    progress_every: int = 100_000
    split: Split = METR_LA_SPLIT  # labels feature-table rows: the network's
    window_s: int = STEP_MS // 1000  # the network's step
    network: str = "metr-la"  # its name, for the log
    road_links: tuple[tuple[str, str], ...] | None = None  # incidents follow these (None: METR-LA's road graph)


def _count(pcoll: beam.PCollection, name: str, cfg: BatchConfig, label: str | None = None) -> beam.PCollection:
    label = label or "Count" + "".join(part.capitalize() for part in name.split("_"))
    return pcoll | label >> beam.ParDo(CountRecords(NAMESPACE, name, cfg.progress_every))


class _CountTableRows(CountRecords):
    """Counts the rows of ``(split, rows)`` elements (a feature table file each) as ``feature_rows``."""

    def __init__(self, progress_every: int) -> None:
        super().__init__(NAMESPACE, "feature_rows", progress_every)

    def process(self, element: Any) -> Iterator[Any]:
        self.counter.inc(int(element[1]))
        yield element


def _dead_letter_json(record: dict[str, Any]) -> str:
    out = dict(record)
    for key in ("payload", "key"):
        if isinstance(out.get(key), (bytes, bytearray)):
            out[key] = base64.b64encode(bytes(out[key])).decode("ascii")
    return json.dumps(out, sort_keys=True)


def _write_backfill(snapshots: beam.PCollection, aggregates: beam.PCollection, cfg: BatchConfig) -> None:
    assert cfg.registry is not None
    full = snapshots
    if cfg.first_step_ms is not None:
        first_full = cfg.first_step_ms + (HISTORY_STEPS - 1) * cfg.window_s * 1000
        full = snapshots | "FullHistoryOnly" >> beam.Filter(lambda s: int(s["step_ms"]) >= first_full)
    forecasts = full | "Forecast" >> Forecast(
        cfg.registry, version=cfg.model_version, max_batch_size=32, hdfs_options=cfg.hdfs_options or None
    )
    post = forecasts | "PostProcess" >> PostProcess()
    incidents = {"snapshots": full, "predictions": post.predictions} | "TrackIncidents" >> TrackIncidents(
        cfg.sensor_ids, bundled_road_links(cfg.sensor_ids) if cfg.road_links is None else cfg.road_links, HORIZONS_MIN,
        step_s=cfg.window_s)
    actuals = snapshots | "StepActuals" >> StepActuals(cfg.sensor_ids)  # as streaming scores them
    scores = {"predictions": post.predictions, "aggregates": actuals} | "ScoreForecasts" >> ScoreForecasts(
        window_s=cfg.window_s
    )
    outputs = {"predictions": post.predictions, "alerts": post.alerts, "incidents": incidents, "scores": scores}
    if cfg.store_dsn:
        for table, records in (("actuals", aggregates), ("predictions", post.predictions), ("scores", scores)):
            _ = records | f"Store{table.capitalize()}" >> WriteToStore(cfg.store_dsn, table)
    _ = (
        _count(post.dead_letter, "prediction_dead_letters", cfg)
        | "PredictionDeadLettersToJson" >> beam.Map(_dead_letter_json)
        | "WritePredictionDeadLetters"
        >> beam.io.WriteToText(join_path(cfg.output, "dead_letters", "predictions"), file_name_suffix=".jsonl")
    )
    for name, avro_name, topic, key in (
        ("predictions", "prediction", cfg.predictions_topic, "sensor_id"),
        ("alerts", "alert", cfg.alerts_topic, "sensor_id"),
        ("incidents", "incident", cfg.incidents_topic, "incident_id"),
        ("scores", "score", cfg.scores_topic, "sensor_id"),
    ):
        label = name.capitalize()
        records = _count(outputs[name], name, cfg)
        schema = parquet_schema(avro_name)
        _ = (
            records
            | f"{label}ToArrow" >> beam.Map(arrow_table, schema)
            | f"Write{label}Parquet" >> beam.io.WriteToParquetBatched(
                join_path(cfg.output, name, "part"), schema, file_name_suffix=".parquet")
        )
        if cfg.to_kafka:
            _ = records | f"Publish{label}" >> PublishToKafka(cfg.bootstrap_servers, topic, avro_name, key_field=key)


def build_pipeline(p: beam.Pipeline, cfg: BatchConfig) -> None:
    """Apply the batch chain of ``cfg.mode`` to ``p`` (see the module doc)."""
    if cfg.mode not in MODES:
        raise BatchError(f"unknown batch mode {cfg.mode!r}; choose {' or '.join(MODES)}")
    spine = p | "ReadRawReadings" >> ReadRawReadings(cfg.source) | "Spine" >> TrafficSpine(
        cfg.sensor_ids, cfg.sensor_ids, namespace=NAMESPACE, window_s=cfg.window_s, history_steps=HISTORY_STEPS,
        allowed_lateness_s=None, progress_every=cfg.progress_every,
    )
    aggregates, snapshots = spine.aggregates, spine.snapshots
    _ = (
        spine.dead_letters
        | "DeadLettersToJson" >> beam.Map(_dead_letter_json)
        | "WriteDeadLetters"
        >> beam.io.WriteToText(join_path(cfg.output, "dead_letters", "readings"), file_name_suffix=".jsonl")
    )
    if cfg.mode == "features":
        tables = snapshots | "WriteFeatureTables" >> WriteFeatureTables(
            cfg.context, cfg.window_ends_ms, cfg.sensor_ids, cfg.output, cfg.split
        )
        _ = tables | "CountFeatureRows" >> beam.ParDo(_CountTableRows(cfg.progress_every))
    else:
        _write_backfill(snapshots, aggregates, cfg)

