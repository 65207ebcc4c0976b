"""Avro records in the Confluent wire format.

A message value is ``0x00`` (magic byte), a 4-byte big-endian schema id, then
the record as schemaless Avro binary, so ``kafka-avro-console-consumer`` and
every other Confluent-compatible tool can read the topics. Schema ids come from
a schema registry when one is configured (:class:`RegistrySchemaIds`) and from
the versioned file ``schemas/schema_ids.json`` otherwise (:class:`FileSchemaIds`).

Records are plain dicts; timestamps are ints in epoch milliseconds on both
sides (Avro ``timestamp-millis``), so pipelines never handle ``datetime``.
"""

from __future__ import annotations

import io
import json
import struct
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import fastavro
import httpx

from schemas.exceptions import DecodeError, SchemaError

__all__ = [
    "SCHEMA_DIR",
    "SCHEMA_NAMES",
    "AvroCodec",
    "FileSchemaIds",
    "RegistrySchemaIds",
    "SchemaIds",
    "load_schema",
    "load_schema_json",
    "codec_for",
    "wire_header",
]

SCHEMA_DIR = Path(__file__).resolve().parent / "avro"
SCHEMA_IDS_FILE = Path(__file__).resolve().parent / "schema_ids.json"
SCHEMA_NAMES: tuple[str, ...] = (
    "raw_reading",
    "traffic_event",
    "window_aggregate",
    "prediction",
    "alert",
    "dead_letter",
    "incident",
    "score",
)
MAGIC_BYTE = 0
_HEADER = struct.Struct(">bI")


def wire_header(schema_id: int) -> bytes:
    """The Confluent wire format's 5-byte prefix of every value: magic byte 0, then the schema id (big-endian)."""
    return _HEADER.pack(MAGIC_BYTE, schema_id)


def _schema_path(name: str, version: int | None = None) -> Path:
    if name not in SCHEMA_NAMES:
        raise SchemaError(f"unknown schema {name!r}; known: {', '.join(SCHEMA_NAMES)}")
    if version is None:
        return SCHEMA_DIR / f"{name}.avsc"
    return SCHEMA_DIR / "history" / name / f"v{version}.avsc"


def load_schema_json(name: str, version: int | None = None) -> dict[str, Any]:
    """The schema as JSON (the current one, or a historic ``version``)."""
    path = _schema_path(name, version)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise SchemaError(f"schema file {path} does not exist") from None


@cache
def load_schema(name: str, version: int | None = None) -> dict[str, Any]:
    """The parsed (fastavro) schema, cached."""
    return fastavro.parse_schema(load_schema_json(name, version))


class SchemaIds(Protocol):
    """Maps schema versions to wire-format ids and back."""

    def id_for(self, name: str) -> int: ...

    def schema_for(self, schema_id: int) -> dict[str, Any]: ...


class FileSchemaIds:
    """Schema ids from ``schemas/schema_ids.json`` (``{name: {version: id}}``)."""

    def __init__(self, path: Path = SCHEMA_IDS_FILE) -> None:
        self.path = Path(path)
        table = json.loads(self.path.read_text())
        self._current: dict[str, int] = {}
        self._by_id: dict[int, tuple[str, int]] = {}
        for name, versions in table.items():
            for version, schema_id in versions.items():
                self._by_id[int(schema_id)] = (name, int(version.lstrip("v")))
            latest = max(versions, key=lambda v: int(v.lstrip("v")))
            self._current[name] = int(versions[latest])

    def id_for(self, name: str) -> int:
        try:
            return self._current[name]
        except KeyError:
            raise SchemaError(f"no schema id for {name!r} in {self.path}") from None

    def schema_for(self, schema_id: int) -> dict[str, Any]:
        try:
            name, version = self._by_id[schema_id]
        except KeyError:
            raise DecodeError(f"unknown schema id {schema_id}") from None
        return load_schema(name, version)

    def __reduce__(self):  # picklable for Beam DoFns
        return (FileSchemaIds, (self.path,))


class RegistrySchemaIds:
    """Schema ids from a Confluent-compatible schema registry (REST).

    Subjects follow the TopicNameStrategy's record form ``traffic.metrla.<Record>-value``
    so one schema keeps one id whatever topic carries it.
    """

    def __init__(self, url: str, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._ids: dict[str, int] = {}
        self._schemas: dict[int, dict[str, Any]] = {}

    def _call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        try:
            response = httpx.request(method, self.url + path, timeout=self.timeout_s, **kwargs)
        except httpx.HTTPError as exc:
            raise SchemaError(f"schema registry at {self.url} is not reachable: {exc}") from None
        if response.status_code >= 400:
            raise SchemaError(f"schema registry {method} {path} failed: {response.status_code} {response.text[:200]}")
        return response.json()

    def id_for(self, name: str) -> int:
        if name not in self._ids:
            schema = load_schema_json(name)
            subject = f"{schema['namespace']}.{schema['name']}-value"
            body = {"schema": json.dumps(schema), "schemaType": "AVRO"}
            self._ids[name] = int(self._call("POST", f"/subjects/{subject}/versions", json=body)["id"])
        return self._ids[name]

    def schema_for(self, schema_id: int) -> dict[str, Any]:
        if schema_id not in self._schemas:
            text = self._call("GET", f"/schemas/ids/{schema_id}")["schema"]
            self._schemas[schema_id] = fastavro.parse_schema(json.loads(text))
        return self._schemas[schema_id]

    def __reduce__(self):
        return (RegistrySchemaIds, (self.url, self.timeout_s))


def _to_millis(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return int(round(value.timestamp() * 1000))
    return value


class AvroCodec:
    """Encodes and decodes one record type; picklable, so DoFns can hold one."""

    def __init__(self, name: str, ids: SchemaIds | None = None) -> None:
        self.name = name
        self.ids = ids if ids is not None else FileSchemaIds()
        self.schema = load_schema(name)
        self.schema_id = self.ids.id_for(name)

    def encode(self, record: dict[str, Any]) -> bytes:
        buffer = io.BytesIO()
        buffer.write(wire_header(self.schema_id))
        try:
            fastavro.schemaless_writer(buffer, self.schema, record)
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as exc:
            raise SchemaError(f"record does not fit schema {self.name}: {exc}") from None
        return buffer.getvalue()

    def decode(self, data: bytes | None) -> dict[str, Any]:
        """Decode one message value; any malformed input raises :class:`DecodeError`."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise DecodeError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
        if len(data) < _HEADER.size:
            raise DecodeError(f"{len(data)} bytes is shorter than the 5-byte wire-format header")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != MAGIC_BYTE:
            raise DecodeError(f"magic byte is {magic}, not {MAGIC_BYTE}")
        writer = self.ids.schema_for(schema_id)
        body = io.BytesIO(data[_HEADER.size :])
        try:
            record = fastavro.schemaless_reader(body, writer, self.schema)
        except Exception as exc:  # noqa: BLE001 - fastavro raises many types on bad bytes
            raise DecodeError(f"not a valid {self.name} record: {type(exc).__name__}: {exc}") from None
        if body.tell() != len(data) - _HEADER.size:
            raise DecodeError(f"{len(data) - _HEADER.size - body.tell()} trailing bytes after the record")
        if not isinstance(record, dict):
            raise DecodeError(f"decoded a {type(record).__name__}, not a record")
        return {key: _to_millis(value) for key, value in record.items()}

    def __reduce__(self):
        return (AvroCodec, (self.name, self.ids))


def codec_for(name: str, registry_url: str | None = None) -> AvroCodec:
    """The codec for ``name``: registry ids when ``registry_url`` is set, file ids otherwise."""
    ids: SchemaIds = RegistrySchemaIds(registry_url) if registry_url else FileSchemaIds()
    return AvroCodec(name, ids)
