"""The API's view of the incidents topic: the latest state of every open and recently closed incident.

:class:`IncidentBook` takes decoded ``incident`` records (docs/incidents.md)
and keeps, per incident id, the newest state (by the step it is for, then
OPENED < UPDATED < CLOSED) and its recent history of states. A record that is
not newer than what the book holds (a replay, or the consumer re-reading the
topic at start-up) changes nothing and is not published again, so replaying
the same hours twice shows each incident once. Closed incidents are kept up
to ``closed_kept`` (the oldest closed go first); open ones are always kept.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

__all__ = ["EVENT_RANK", "SEVERITY_RANK", "STATE_ORDER", "IncidentBook", "incident_item"]

EVENT_RANK = {"OPENED": 0, "UPDATED": 1, "CLOSED": 2}
SEVERITY_RANK = {"MODERATE": 1, "HEAVY": 2, "SEVERE": 3}
STATE_ORDER = {"OPEN": 0, "CLEARING": 1, "CLOSED": 2}
HISTORY_KEPT = 288  # states kept per incident: a day of 5-minute steps


def incident_item(data: dict[str, Any]) -> tuple[str, str, None, int, dict[str, Any]]:
    """The hub item of an incident state: kind ``incident``, the seed sensor, its severity rank."""
    return "incident", data["seed_sensor_id"], None, SEVERITY_RANK.get(data["severity"], 0), data


class IncidentBook:
    """Latest state and recent history per incident id, bounded in the number of closed incidents."""

    def __init__(self, closed_kept: int = 500) -> None:
        self.closed_kept = closed_kept
        self.latest: dict[str, dict[str, Any]] = {}
        self.history: dict[str, OrderedDict[tuple[int, int], dict[str, Any]]] = {}
        self.closed_order: OrderedDict[str, None] = OrderedDict()
        self.counts = {"incident": 0, "stale_incident": 0}

    @staticmethod
    def _version(record: dict[str, Any]) -> tuple[int, int]:
        return int(record["updated_at"]), EVENT_RANK.get(record["event"], 1)

    def ingest(self, records: list[tuple[str, dict[str, Any], float]], positions: list | None = None) -> list[tuple]:
        """Apply ``(kind, record, received_ms)`` incident records; returns hub items for the new states.

        With ``positions`` (each record's Kafka ``(topic, partition, offset)``), each item ends with its position,
        so the event journal can give it back its id after an API restart.
        """
        items = []
        for n, (_kind, record, received_ms) in enumerate(records):
            incident = record["incident_id"]
            current = self.latest.get(incident)
            if current is not None and self._version(record) <= self._version(current):
                self.counts["stale_incident"] += 1
                history = self.history.setdefault(incident, OrderedDict())
                history.setdefault(self._version(record), {**record, "received_ms": received_ms})
                continue
            data = {**record, "received_ms": received_ms}
            self.latest[incident] = data
            history = self.history.setdefault(incident, OrderedDict())
            history[self._version(record)] = data
            while len(history) > HISTORY_KEPT:
                history.popitem(last=False)
            self.counts["incident"] += 1
            if data["state"] == "CLOSED":
                self.closed_order[incident] = None
                self.closed_order.move_to_end(incident)
                while len(self.closed_order) > self.closed_kept:
                    gone, _ = self.closed_order.popitem(last=False)
                    self.latest.pop(gone, None)
                    self.history.pop(gone, None)
            else:
                self.closed_order.pop(incident, None)
            item = incident_item(data)
            items.append((*item, positions[n]) if positions is not None else item)
        return items

    def query(self, states: frozenset[str] | None = None, min_severity: int = 0, sensor: str | None = None,
              since_ms: int | None = None, until_ms: int | None = None) -> list[dict[str, Any]]:
        """Matching incidents: open first (OPEN, CLEARING, CLOSED), then the most recently updated.

        The time range keeps incidents whose lifetime ``[opened_at, closed_at or updated_at]`` overlaps it.
        """
        rows = []
        for data in self.latest.values():
            if states is not None and data["state"] not in states:
                continue
            if SEVERITY_RANK.get(data["severity"], 0) < min_severity:
                continue
            if sensor is not None and sensor not in data["sensor_ids"]:
                continue
            end = data["closed_at"] if data["closed_at"] is not None else data["updated_at"]
            if since_ms is not None and end < since_ms:
                continue
            if until_ms is not None and data["opened_at"] > until_ms:
                continue
            rows.append(data)
        rows.sort(key=lambda d: (STATE_ORDER.get(d["state"], 3), -d["updated_at"], d["incident_id"]))
        return rows

    def states_of(self, incident_id: str) -> list[dict[str, Any]] | None:
        """The incident's recorded states, oldest first; None when unknown."""
        history = self.history.get(incident_id)
        return None if history is None else [history[key] for key in sorted(history)]
