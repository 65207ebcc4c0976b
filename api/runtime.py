"""Everything one running API instance holds, built by the app's lifespan."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from api.accuracy import AccuracyMonitor
from api.broker import KafkaFeed
from api.hub import Hub
from api.incidents import IncidentBook
from api.metrics import ApiMetrics
from api.model_info import ModelInfo
from api.settings import ApiSettings
from api.state import LiveState, Record, SensorCatalog
from api.stream_watch import StreamWatch
from ml.network import Network, load_network
from schemas.topics import TopicSettings

__all__ = ["Runtime"]

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    settings: ApiSettings
    topics: TopicSettings
    catalog: SensorCatalog
    state: LiveState
    hub: Hub
    metrics: ApiMetrics
    model: ModelInfo
    feed: KafkaFeed | None = None
    incidents: IncidentBook = field(default_factory=IncidentBook)
    store_dsn: str | None = None  # the PostgreSQL store (None: TRAFFIC_API_USE_STORE=false)
    accuracy: AccuracyMonitor | None = None
    watch: StreamWatch | None = None  # /health's streaming_job check (None: not watched)
    network: Network = field(default_factory=load_network)  # the sensors, road links and title it serves
    shutting_down: asyncio.Event = field(default_factory=asyncio.Event)

    def ingest(self, records: list[Record], positions: list | None = None) -> None:
        """Called on the loop thread with one decoded batch from the Kafka feed (and each record's position)."""
        try:
            incident = [r[0] == "incident" for r in records]
            mine = [i for i, is_incident in enumerate(incident) if not is_incident]
            theirs = [i for i, is_incident in enumerate(incident) if is_incident]
            pick = (lambda idx: [positions[i] for i in idx]) if positions is not None else (lambda idx: None)
            items = self.state.ingest([records[i] for i in mine], pick(mine))
            items += self.incidents.ingest([records[i] for i in theirs], pick(theirs))
            self.hub.publish(items)
        except Exception:
            log.exception("could not ingest a batch of %d records", len(records))
            self.metrics.records.labels("failed").inc(len(records))
            return
        for kind, *_ in items:
            self.metrics.records.labels(kind).inc()
        self.metrics.hub_last_id.set(self.hub.last_id)
