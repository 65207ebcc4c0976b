"""Columnar batches: the elements the pipelines carry instead of single records.

Two kinds, both picklable (numpy arrays inside, so a runner moves a batch of
thousands of records as a few buffers):

- :class:`RawBatch`: raw Kafka values as they arrived (one poll of one
  partition), with their coordinates, so that a bad record still becomes its
  own dead letter with its bytes and offset;
- :class:`Columns`: records of one record type (``traffic_event``,
  ``window_aggregate``, ``prediction``, ...) as one numpy array per field. A
  float column of a nullable field holds NaN for None; :meth:`Columns.records`
  turns a batch back into the dicts the Avro codec and the API know. A chunk
  of a history file is a ``raw_reading`` batch (:func:`reading_columns`):
  readings not yet validated, already in columns.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schemas.records import KafkaMessage

__all__ = ["RAW_READING_KIND", "Columns", "OneText", "RawBatch", "compact_text", "expand_text", "reading_columns",
           "records_of"]

RAW_READING_KIND = "raw_reading"


@dataclass(frozen=True, eq=False)
class RawBatch:
    """Raw values with their Kafka coordinates (-1 where unknown), in arrival order."""

    values: tuple[Any, ...]
    keys: tuple[Any, ...] = ()
    topic: str | None = None
    partitions: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    offsets: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    def __post_init__(self) -> None:
        n = len(self.values)
        if not self.keys:
            object.__setattr__(self, "keys", (None,) * n)
        for name in ("partitions", "offsets"):
            column = np.asarray(getattr(self, name), dtype=np.int64)
            object.__setattr__(self, name, column if len(column) == n else np.full(n, -1, np.int64))

    def __len__(self) -> int:
        return len(self.values)

    @classmethod
    def of(cls, values: Sequence[Any]) -> RawBatch:
        """Values without coordinates (e.g. a chunk of a history file)."""
        return cls(tuple(values))

    @classmethod
    def from_messages(cls, messages: Sequence[KafkaMessage]) -> RawBatch:
        """Consumed records of one topic."""
        topic = messages[0].topic if messages else None
        return cls(
            tuple(m.value for m in messages),
            tuple(m.key for m in messages),
            topic if isinstance(topic, str) else None,
            np.fromiter((m.partition if isinstance(m.partition, int) else -1 for m in messages), np.int64,
                        len(messages)),
            np.fromiter((m.offset if isinstance(m.offset, int) else -1 for m in messages), np.int64, len(messages)),
        )

    def coordinates(self, i: int) -> tuple[str | None, int | None, int | None]:
        """(topic, partition, offset) of record ``i``, None where unknown."""
        partition, offset = int(self.partitions[i]), int(self.offsets[i])
        return self.topic, partition if partition >= 0 else None, offset if offset >= 0 else None


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


@dataclass(frozen=True, eq=False)
class Columns:
    """Records of the record type ``kind`` as equal-length arrays, one per field.

    ``nullable``: the float fields whose NaN means None (the Avro schema's
    ``["null", "double"]`` fields).
    """

    kind: str
    data: Mapping[str, np.ndarray]
    nullable: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        lengths = {len(column) for column in self.data.values()}
        if len(lengths) > 1:
            raise ValueError(f"{self.kind} columns have different lengths: {sorted(lengths)}")

    def __len__(self) -> int:
        return len(next(iter(self.data.values()))) if self.data else 0

    def __getitem__(self, name: str) -> np.ndarray:
        return self.data[name]

    def __reduce__(self):
        # A batch crosses a runner's stage boundary pickled: the fixed-width columns travel as one buffer
        # (numpy pickles each array with its own header: 3x slower for a shard's 52-row pane), object
        # columns as lists, a text column of one value (a model version) as that value and the length: numpy
        # text is 4 bytes a character, and the model version was 43% of a prediction batch's bytes. Read back
        # into writable arrays.
        layout, buffers, objects, ones = [], [], {}, {}
        for name, column in self.data.items():
            if column.dtype.hasobject:
                objects[name] = column.tolist()
            elif (one := OneText.of(column)) is not None:
                ones[name] = (one.dtype, one.length, one.value)  # a plain tuple: the form older pickles hold
            else:
                column = np.ascontiguousarray(column)
                layout.append((name, column.dtype.str, column.shape))
                buffers.append(column.tobytes())
        return _unpickle_columns, (self.kind, layout, b"".join(buffers), objects, tuple(self.data),
                                   tuple(sorted(self.nullable)), ones)

    @classmethod
    def concat(cls, batches: Sequence[Columns]) -> Columns:
        """The batches' rows one after another; they must hold the same kind and fields (else ValueError)."""
        first = batches[0]
        fields = tuple(first.data)
        if any(b.kind != first.kind or tuple(b.data) != fields or b.nullable != first.nullable for b in batches):
            raise ValueError(f"cannot concatenate {first.kind} batches of different kinds or fields")
        if len(batches) == 1:
            return first
        return cls(first.kind, {name: np.concatenate([b.data[name] for b in batches]) for name in fields},
                   first.nullable)

    def take(self, index: Any) -> Columns:
        """The rows selected by a boolean mask or an index array, in that order."""
        return Columns(self.kind, {k: v[index] for k, v in self.data.items()}, self.nullable)

    def records(self) -> list[dict[str, Any]]:
        """The rows as dicts (NaN of a nullable float field becomes None; numpy scalars become Python)."""
        names = list(self.data)
        lists = []
        for name in names:
            values = self.data[name].tolist()
            if name in self.nullable:
                values = [None if _is_nan(v) else v for v in values]
            lists.append(values)
        return [dict(zip(names, row, strict=True)) for row in zip(*lists, strict=True)]

    @classmethod
    def from_records(cls, kind: str, records: Sequence[Mapping[str, Any]], fields: Sequence[str],
                     dtypes: Mapping[str, Any], nullable: Iterable[str] = ()) -> Columns:
        """Records -> columns; ``dtypes`` per field (object where not given), None -> NaN in nullable floats."""
        nullable = frozenset(nullable)
        data = {}
        for name in fields:
            values = [r.get(name) for r in records]
            if name in nullable:
                values = [math.nan if v is None else v for v in values]
            dtype = dtypes.get(name, object)
            data[name] = np.array(values, dtype=dtype) if values else np.empty(0, dtype)
        return cls(kind, data, nullable)


@dataclass(frozen=True)
class OneText:
    """A text column whose rows are all one value, as its dtype, length and value: what it pickles as."""

    dtype: str
    length: int
    value: str

    @classmethod
    def of(cls, column: Any) -> OneText | None:
        """``column`` as a OneText when it is a 1-d numpy text column of two or more rows, all the same; else None."""
        if not (isinstance(column, np.ndarray) and column.dtype.kind == "U" and column.ndim == 1 and len(column) > 1
                and column[-1] == column[0] and _same_rows(column)):  # most columns differ at the ends
            return None
        return cls(column.dtype.str, len(column), str(column[0]))

    def array(self) -> np.ndarray:
        """The column back, a writable array."""
        return np.full(self.length, self.value, self.dtype)


def _same_rows(column: np.ndarray) -> bool:
    """Whether every row of a fixed-width text column equals its first, compared as bytes in one memory compare
    (four times faster than numpy's text comparison for a prediction batch's model version; numpy text is padded
    with NULs, so equal bytes are equal values)."""
    return column.tobytes() == column[:1].tobytes() * len(column)  # tobytes copies a strided view in row order


def compact_text(value: Any) -> Any:
    """``value`` with a text column of one value (or each such column of a dict of columns) as a :class:`OneText`;
    anything else as it is."""
    if isinstance(value, dict):
        return {name: compact_text(column) for name, column in value.items()}
    one = OneText.of(value)
    return value if one is None else one


def expand_text(value: Any) -> Any:
    """The inverse of :func:`compact_text` (anything without a :class:`OneText` comes back as it is)."""
    if isinstance(value, dict):
        return {name: expand_text(column) for name, column in value.items()}
    return value.array() if isinstance(value, OneText) else value


def _unpickle_columns(kind: str, layout: list, buffer: bytes, objects: dict[str, list], order: tuple[str, ...],
                      nullable: tuple[str, ...], ones: dict[str, tuple[str, int, str]] | None = None) -> Columns:
    """A pickled batch back (``ones``: the text columns of one value, as dtype, length and value; absent from
    batches pickled before they travelled so)."""
    data: dict[str, np.ndarray] = {name: OneText(*one).array() for name, one in (ones or {}).items()}
    offset = 0
    for name, dtype, shape in layout:
        count = math.prod(shape)
        column = np.frombuffer(buffer, dtype, count, offset)
        data[name] = (column if len(shape) == 1 else column.reshape(shape)).copy()
        offset += column.nbytes
    for name, values in objects.items():
        column = np.empty(len(values), object)
        column[:] = values
        data[name] = column
    return Columns(kind, {name: data[name] for name in order}, frozenset(nullable))


def reading_columns(sensor_id: Any, event_time: Any, speed_mph: Any) -> Columns:
    """A ``raw_reading`` batch: readings of a history file, not validated yet (NaN speed = a NaN reading)."""
    return Columns(RAW_READING_KIND, {
        "sensor_id": np.asarray(sensor_id, dtype=object),
        "event_time": np.asarray(event_time, dtype=np.int64),
        "speed_mph": np.asarray(speed_mph, dtype=np.float64),
    })


def records_of(element: Any) -> Iterator[dict[str, Any]]:
    """The records an element carries: a :class:`Columns` batch's rows, or the element itself (a dict)."""
    if isinstance(element, Columns):
        yield from element.records()
    else:
        yield element
