"""Avro encoding of a whole :class:`~schemas.batches.Columns` batch at once, byte for byte as fastavro.

The sinks used to encode a batch a record at a time with fastavro (about
4.5 µs a record, the largest single cost of the streaming job's output). The
flat record types the pipelines emit (``traffic_event``, ``window_aggregate``,
``prediction``, ``score``) have only strings, ints, longs, doubles, booleans,
enums and ``["null", X]`` unions; each field of a batch is encoded here with
numpy into a byte matrix and lengths, and the rows are laid end to end in one
buffer, then cut into one Confluent wire-format value per row.

:meth:`ColumnarEncoder.encode` returns None when it cannot vouch for a batch
(a field missing, an unexpected dtype, an int out of range, an unknown enum
symbol, an empty or NaN-free check failing): the caller then encodes that batch
record by record with :class:`~schemas.codec.AvroCodec`, which raises the usual
one-line :class:`~schemas.exceptions.SchemaError` for a bad record. A schema
with any other type gets no columnar encoder (:func:`columnar_encoder` returns None).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from schemas.batches import Columns
from schemas.codec import AvroCodec, wire_header

__all__ = ["ColumnarEncoder", "columnar_encoder", "encode_keys"]

Piece = tuple[np.ndarray, np.ndarray]  # (bytes: n x width uint8, lengths: n)
_INT32 = (-(2**31), 2**31 - 1)


class _Unsupported(Exception):
    """This batch (or schema) is left to the record-by-record codec."""


_SHIFTS = np.arange(10, dtype=np.uint64) * np.uint64(7)


def _varints(values: np.ndarray) -> Piece:
    """Unsigned LEB128 of each value (uint64): 7 bits a byte, low first, the high bit set on all but the last."""
    shifted = values.astype(np.uint64)[:, None] >> _SHIFTS
    lengths = np.maximum(np.count_nonzero(shifted, axis=1), 1).astype(np.int64)
    width = int(lengths.max()) if len(lengths) else 1
    out = (shifted[:, :width] & np.uint64(0x7F)).astype(np.uint8)
    out |= (np.arange(width) < lengths[:, None] - 1).astype(np.uint8) << 7
    return out, lengths


def _zigzag(values: np.ndarray) -> np.ndarray:
    signed = values.astype(np.int64, copy=False)
    return ((signed << 1) ^ (signed >> 63)).view(np.uint64)


def _long(column: np.ndarray, int32: bool) -> Piece:
    if column.dtype.kind not in "iu" or column.dtype == np.uint64:
        raise _Unsupported
    if int32 and len(column) and (column.min() < _INT32[0] or column.max() > _INT32[1]):
        raise _Unsupported
    return _varints(_zigzag(column))


def _double(column: np.ndarray) -> Piece:
    if column.dtype.kind not in "fiu":
        raise _Unsupported
    return column.astype("<f8").view(np.uint8).reshape(len(column), 8), np.full(len(column), 8, np.int64)


def _string(column: np.ndarray) -> list[Piece]:
    if column.dtype.kind == "O":
        if not all(isinstance(v, str) for v in column.tolist()):
            raise _Unsupported
        column = column.astype(str)
    if column.dtype.kind != "U":
        raise _Unsupported
    n, width = len(column), max(column.dtype.itemsize // 4, 1)
    codes = np.frombuffer(column.tobytes(), np.uint32).reshape(n, width) if n and column.dtype.itemsize else \
        np.zeros((n, width), np.uint32)
    if n and codes.max() >= 0x80:  # beyond ASCII: UTF-8 by the book
        encoded = np.char.encode(column, "utf-8")
        lengths = np.char.str_len(encoded).astype(np.int64)
        width = max(encoded.dtype.itemsize, 1)
        raw = np.frombuffer(encoded.tobytes(), np.uint8).reshape(n, width)
    else:  # ASCII: the code points are the bytes; a string ends after its last non-NUL (numpy's own rule)
        filled = codes != 0
        lengths = np.where(filled.any(axis=1), width - np.argmax(filled[:, ::-1], axis=1), 0).astype(np.int64)
        raw = codes.astype(np.uint8)
    return [_varints(_zigzag(lengths)), (raw, lengths)]


def _enum(column: np.ndarray, symbols: Sequence[str]) -> Piece:
    if column.dtype.kind == "O":  # compared as text in C, not object by object
        if not all(isinstance(v, str) for v in column.tolist()):
            raise _Unsupported
        column = column.astype(str)
    index = np.full(len(column), -1, np.int64)
    for i, symbol in enumerate(symbols):
        index[column == symbol] = i
    if (index < 0).any():
        raise _Unsupported
    return _varints(_zigzag(index))


def _boolean(column: np.ndarray) -> Piece:
    if column.dtype != np.bool_:
        raise _Unsupported
    return column.astype(np.uint8).reshape(len(column), 1), np.ones(len(column), np.int64)


def _null_mask(column: np.ndarray, nullable: bool) -> np.ndarray:
    if column.dtype.kind == "O":
        return np.fromiter((v is None for v in column.tolist()), bool, len(column))
    if column.dtype.kind == "f" and nullable:
        return np.isnan(column)
    return np.zeros(len(column), bool)


def _plain(avro_type: Any) -> Callable[[np.ndarray], list[Piece]] | None:
    """The encoder of a non-union field type, or None for a type this module does not handle."""
    name = avro_type.get("type") if isinstance(avro_type, dict) else avro_type
    if name == "long":
        return lambda c: [_long(c, int32=False)]
    if name == "int":
        return lambda c: [_long(c, int32=True)]
    if name == "double":
        return lambda c: [_double(c)]
    if name == "string":
        return _string
    if name == "boolean":
        return lambda c: [_boolean(c)]
    if name == "enum":
        symbols = tuple(avro_type["symbols"])
        return lambda c: [_enum(c, symbols)]
    return None


class ColumnarEncoder:
    """Encodes :class:`Columns` batches of one flat record type (see the module doc)."""

    def __init__(self, name: str, schema_id: int, fields: Sequence[tuple[str, Callable, bool]],
                 record_dtypes: dict[str, Any]) -> None:
        self.name = name
        self.header = np.frombuffer(wire_header(schema_id), np.uint8)
        self.fields = tuple(fields)  # (field name, plain encoder, in a ["null", X] union)
        self.record_dtypes = record_dtypes

    def _pieces(self, batch: Columns) -> list[Piece]:
        n = len(batch)
        pieces: list[Piece] = [(np.tile(self.header, (n, 1)), np.full(n, len(self.header), np.int64))]
        for name, plain, union in self.fields:
            if name not in batch.data:
                raise _Unsupported
            column = np.asarray(batch[name])
            if not union:
                pieces.extend(plain(column))
                continue
            null = _null_mask(column, name in batch.nullable)
            pieces.append((np.where(null, 0, 2).astype(np.uint8).reshape(n, 1), np.ones(n, np.int64)))
            present = ~null
            if not present.any():  # every row null: the union index alone (no values to tell the type by)
                continue
            values = column[present]
            if values.dtype.kind == "O":
                values = np.array(values.tolist())
            for raw, lengths in plain(values):
                full = np.zeros((n, raw.shape[1]), np.uint8)
                full[present] = raw
                full_lengths = np.zeros(n, np.int64)
                full_lengths[present] = lengths
                pieces.append((full, full_lengths))
        return pieces

    def encode(self, batch: Columns) -> list[bytes] | None:
        """One wire-format value per row, or None when the batch is left to the record-by-record codec."""
        n = len(batch)
        if n == 0:
            return []
        try:
            pieces = self._pieces(batch)
        except (_Unsupported, ValueError, TypeError):
            return None
        # Side by side, each piece's bytes padded to its width; the mask keeps each row's real bytes, and
        # boolean indexing reads them row by row: every value, end to end, in one buffer.
        raw = np.concatenate([piece for piece, _ in pieces], axis=1)
        keep = np.concatenate([np.arange(piece.shape[1]) < lengths[:, None] for piece, lengths in pieces], axis=1)
        data = raw[keep].tobytes()
        row_lengths = np.sum([lengths for _, lengths in pieces], axis=0)
        ends = np.cumsum(row_lengths)
        starts = ends - row_lengths
        return [data[s:e] for s, e in zip(starts.tolist(), ends.tolist(), strict=True)]

    def encode_records(self, records: Sequence[dict[str, Any]]) -> list[bytes] | None:
        """Records (dicts) of this type as one batch: :meth:`encode` of their columns (None as there)."""
        names = [name for name, _, _ in self.fields]
        nullable = [name for name, _, union in self.fields if union and self.record_dtypes[name] is np.float64]
        try:
            batch = Columns.from_records(self.name, records, names, self.record_dtypes, nullable)
        except (TypeError, ValueError):
            return None
        return self.encode(batch)


_RECORD_DTYPES = {"string": str, "long": np.int64, "int": np.int64}


def columnar_encoder(codec: AvroCodec) -> ColumnarEncoder | None:
    """The columnar encoder of ``codec``'s record type, or None if its schema has a type not handled here."""
    fields = []
    dtypes: dict[str, Any] = {}
    for spec in codec.schema.get("fields", ()):
        avro_type = spec["type"]
        union = isinstance(avro_type, list)
        if union:
            if len(avro_type) != 2 or avro_type[0] != "null":
                return None
            avro_type = avro_type[1]
        plain = _plain(avro_type)
        if plain is None:
            return None
        fields.append((spec["name"], plain, union))
        kind = avro_type.get("type") if isinstance(avro_type, dict) else avro_type
        # How records of this field become a column (encode_records): NaN for a null double, objects where None
        # or symbols may stand.
        dtypes[spec["name"]] = np.float64 if kind == "double" else \
            (_RECORD_DTYPES.get(kind, object) if not union else object)
    return ColumnarEncoder(codec.name, codec.schema_id, fields, dtypes)


def encode_keys(column: np.ndarray) -> list[bytes | None]:
    """Kafka keys of a key column: each value as UTF-8 text (None stays None)."""
    if column.dtype.kind == "U":
        return [value.encode() for value in column.tolist()]
    return [None if v is None else v if isinstance(v, bytes) else str(v).encode() for v in column.tolist()]
