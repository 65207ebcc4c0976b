"""Every schema change stays backward compatible.

Rules this enforces: the current ``schemas/avro/<name>.avsc`` is identical to its
newest ``schemas/avro/history/<name>/vN.avsc``; history versions are v1..vN
without gaps and each has its own id in ``schemas/schema_ids.json``; and the
current schema reads data written with every historic version (through the
codec, i.e. by wire-format id, as a consumer would).
"""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import fastavro
import pytest

from schemas.codec import (
    SCHEMA_DIR,
    SCHEMA_IDS_FILE,
    SCHEMA_NAMES,
    AvroCodec,
    load_schema,
    load_schema_json,
)

HISTORY = SCHEMA_DIR / "history"


def _versions(name: str) -> list[int]:
    return sorted(int(p.stem.lstrip("v")) for p in (HISTORY / name).glob("v*.avsc"))


def _examples(schema: Any, named: dict[str, Any], variant: int) -> Any:
    """A value of ``schema``; ``variant`` walks through union branches and enum symbols."""
    if isinstance(schema, str):
        if schema in named:
            return _examples(named[schema], named, variant)
        return {
            "null": None, "boolean": bool(variant % 2), "int": 7 + variant, "long": 1_330_560_000_000 + variant,
            "float": 1.5, "double": 42.25 + variant, "bytes": b"\x00\xffraw" * (variant + 1),
            "string": f"s{variant}",
        }[schema]
    if isinstance(schema, list):
        return _examples(schema[variant % len(schema)], named, variant)
    kind = schema["type"]
    if kind == "record":
        named[schema["name"]] = schema
        if "namespace" in schema:
            named[f"{schema['namespace']}.{schema['name']}"] = schema
        return {f["name"]: _examples(f["type"], named, variant) for f in schema["fields"]}
    if kind == "enum":
        named[schema["name"]] = schema
        return schema["symbols"][variant % len(schema["symbols"])]
    if kind == "array":
        return [_examples(schema["items"], named, variant + i) for i in range(2)]
    if kind == "map":
        return {"a": _examples(schema["values"], named, variant)}
    if kind == "fixed":
        return b"\x01" * schema["size"]
    return _examples(kind, named, variant)


def _max_branches(schema: Any) -> int:
    if isinstance(schema, list):
        return max(len(schema), *(_max_branches(s) for s in schema))
    if isinstance(schema, dict):
        counts = [_max_branches(f["type"]) for f in schema.get("fields", [])]
        counts += [len(schema.get("symbols", []))]
        counts += [_max_branches(schema[k]) for k in ("items", "values") if k in schema]
        return max([1, *counts])
    return 1


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_current_schema_equals_its_newest_history_version(name: str) -> None:
    versions = _versions(name)
    assert versions, f"schemas/avro/history/{name}/ has no versions"
    assert load_schema_json(name) == load_schema_json(name, versions[-1]), (
        f"{name}.avsc changed: copy it to history/{name}/v{versions[-1] + 1}.avsc and give that version an id"
    )


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_history_versions_are_contiguous_and_have_ids(name: str) -> None:
    versions = _versions(name)
    assert versions == list(range(1, len(versions) + 1))
    table = json.loads(SCHEMA_IDS_FILE.read_text())
    assert sorted(int(v.lstrip("v")) for v in table[name]) == versions


def test_schema_ids_are_unique_across_all_versions() -> None:
    table = json.loads(SCHEMA_IDS_FILE.read_text())
    ids = [i for versions in table.values() for i in versions.values()]
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    ("name", "version"), [(n, v) for n in SCHEMA_NAMES for v in _versions(n)], ids=lambda x: str(x)
)
def test_current_schema_reads_every_historic_version(name: str, version: int) -> None:
    writer_json = load_schema_json(name, version)
    writer = fastavro.parse_schema(writer_json)
    reader = load_schema(name)
    schema_id = json.loads(SCHEMA_IDS_FILE.read_text())[name][f"v{version}"]
    codec = AvroCodec(name)
    for variant in range(_max_branches(writer_json)):
        record = _examples(writer_json, {}, variant)
        body = io.BytesIO()
        fastavro.schemaless_writer(body, writer, record)
        # plain schema resolution, writer = history, reader = current
        resolved = fastavro.schemaless_reader(io.BytesIO(body.getvalue()), writer, reader)
        assert isinstance(resolved, dict)
        # and through the wire format, as a consumer meets it
        decoded = codec.decode(b"\x00" + struct.pack(">I", schema_id) + body.getvalue())
        current_fields = {f["name"] for f in load_schema_json(name)["fields"]}
        assert set(decoded) == current_fields
        for field_name in current_fields & set(record):  # every field, integers and timestamps included
            assert decoded[field_name] == record[field_name], (field_name, decoded[field_name])


def test_an_incompatible_change_would_be_caught() -> None:
    """The check above is not vacuous: a reader with a new required field fails on v1 data."""
    writer_json = load_schema_json("raw_reading", 1)
    reader_json = json.loads(json.dumps(writer_json))
    reader_json["fields"].append({"name": "lane", "type": "int"})
    body = io.BytesIO()
    fastavro.schemaless_writer(body, fastavro.parse_schema(writer_json), _examples(writer_json, {}, 0))
    with pytest.raises(fastavro.read.SchemaResolutionError):
        fastavro.schemaless_reader(
            io.BytesIO(body.getvalue()), fastavro.parse_schema(writer_json), fastavro.parse_schema(reader_json)
        )
