"""Avro in the Confluent wire format (magic byte 0, 4-byte big-endian schema id, Avro binary),
with schemas registered in a Confluent-compatible registry under ``<topic>-value`` subjects, so
any Confluent client or ``kcat -s value=avro -r URL`` decodes Hadir's topics."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
import requests

from hadir.topics import ALL, Topic

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
_MAGIC = 0
_HEADER = struct.Struct(">bI")


class SerdeError(ValueError):
    """A record cannot be encoded or decoded; the message says why."""


class RegistryError(RuntimeError):
    pass


class RegistryUnreachable(RegistryError):
    """Nothing answers at the registry's address."""


@cache
def schema_text(name: str) -> str:
    return (SCHEMA_DIR / f"{name}.avsc").read_text()


def _parse(schema: Any, logical_types: bool) -> Any:
    """Uuids are text either way: Hadir keeps ids as the text they are on the wire, and
    fastavro would make a ``uuid.UUID`` of each only to have it turned back."""
    if not logical_types:
        return fastavro.parse_schema(without_logical_types(schema))
    return fastavro.parse_schema(_pruned(schema, lambda k, v: k == "logicalType" and v == "uuid"))


def without_logical_types(schema: Any) -> Any:
    """The schema with every ``logicalType`` removed: the same binary encoding, read as plain
    values (timestamp-millis as epoch milliseconds, uuid as text). A third faster to decode,
    for the sink, which needs numbers anyway."""
    return without_keys(schema, {"logicalType"})


def without_keys(schema: Any, keys: set[str]) -> Any:
    """The schema with these attributes removed at every level."""
    return _pruned(schema, lambda k, _v: k in keys)


def _pruned(schema: Any, drop: Callable[[str, Any], bool]) -> Any:
    if isinstance(schema, dict):
        return {k: _pruned(v, drop) for k, v in schema.items() if not drop(k, v)}
    if isinstance(schema, list):
        return [_pruned(v, drop) for v in schema]
    return schema


@cache
def value_schema(topic: Topic) -> str:
    """The schema of a topic's values: its schema file, or for a batched topic a record holding
    an array of them (``{"checkins": [...]}``)."""
    item = schema_text(topic.schema)
    if not topic.batched:
        return item
    parsed = json.loads(item)
    return json.dumps({
        "type": "record", "name": f"{parsed['name']}Batch", "namespace": parsed.get("namespace"),
        "doc": f"The check-ins of one stage batch for one partition of {topic.name}.",
        "fields": [{"name": "checkins", "type": {"type": "array", "items": parsed}}]})


def subject(topic: Topic) -> str:
    return f"{topic.name}-value"


class Registry:
    """A small client for the Confluent schema-registry REST API."""

    def __init__(self, url: str, timeout: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.session = requests.Session()
        self._by_id: dict[tuple[int, bool], Any] = {}

    def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.session.request(method, self.url + path, timeout=self.timeout, **kw)
        except requests.RequestException as exc:
            raise RegistryUnreachable(f"schema registry at {self.url} does not answer: {exc}"
                                      ) from None
        if r.status_code >= 300:
            raise RegistryError(f"schema registry {method} {path}: HTTP {r.status_code} {r.text}")
        return r.json()

    def register(self, subject_name: str, schema: str) -> int:
        body = {"schema": schema, "schemaType": "AVRO"}
        return int(self._call("POST", f"/subjects/{subject_name}/versions", json=body)["id"])

    def schema_by_id(self, schema_id: int, logical_types: bool = True) -> Any:
        """The parsed schema of ``schema_id``; without logical types if asked (same bytes)."""
        key = (schema_id, logical_types)
        if key not in self._by_id:
            text = self._call("GET", f"/schemas/ids/{schema_id}")["schema"]
            try:
                self._by_id[key] = _parse(json.loads(text), logical_types)
            except Exception as exc:  # a JSON-Schema or Protobuf id: remembered as refused
                self._by_id[key] = SerdeError(f"schema id {schema_id} is not a usable Avro "
                                              f"schema: {type(exc).__name__}: {exc}")
        found = self._by_id[key]
        if isinstance(found, SerdeError):
            raise found
        return found

    def subjects(self) -> list[str]:
        return list(self._call("GET", "/subjects"))

    def compatibility(self, subject_name: str) -> str:
        return str(self._call("GET", f"/config/{subject_name}")["compatibilityLevel"])

    def register_all(self) -> dict[str, int]:
        """Register every topic's value schema (idempotent: the same schema keeps its id) and
        require BACKWARD compatibility of its subject (Confluent's default: a new schema must
        read what the old one wrote). Only Hadir's subjects: a shared registry's global
        setting is its owners'."""
        ids = {}
        for t in ALL:
            ids[t.name] = self.register(subject(t), value_schema(t))
            self._call("PUT", f"/config/{subject(t)}", json={"compatibility": "BACKWARD"})
        return ids


def avro_long(n: int) -> bytes:
    """A non-negative Avro ``long`` (zig-zag, then little-endian base 128)."""
    n <<= 1
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class AvroCodec:
    """Encodes and decodes one topic's values. Decoding uses the writer's schema by id from the
    registry, so records written with an older compatible schema still decode.

    With ``logical_types=False`` decoded timestamps are epoch milliseconds and uuids text (the
    sink's and the core worker's choice: a read takes half the time); encoding takes either."""

    def __init__(self, topic: Topic, registry: Registry, logical_types: bool = True) -> None:
        self.topic = topic
        self.registry = registry
        text = value_schema(topic)
        self.schema = _parse(json.loads(text), True)
        self.schema_id = registry.register(subject(topic), text)
        self.logical_types = logical_types
        self._reader = self.schema if logical_types else _parse(json.loads(text), False)
        registry._by_id.setdefault((self.schema_id, logical_types), self._reader)
        self.header = _HEADER.pack(_MAGIC, self.schema_id)  # what every record we write starts with
        if topic.batched:
            self._item = _parse(json.loads(schema_text(topic.schema)), True)

    def encode(self, record: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        out.write(self.header)
        try:
            fastavro.schemaless_writer(out, self.schema, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SerdeError(f"{self.topic.name}: cannot encode record: {exc}") from None
        return out.getvalue()

    def encode_item(self, record: dict[str, Any]) -> bytes:
        """One check-in of a batched topic, encoded alone (no header): :meth:`join` makes the
        topic's record of several. Encoding each apart keeps a bad one from spoiling the rest."""
        out = io.BytesIO()
        try:
            fastavro.schemaless_writer(out, self._item, record)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SerdeError(f"{self.topic.name}: cannot encode item: {exc}") from None
        return out.getvalue()

    def join(self, items: list[bytes]) -> bytes:
        """The record of a batched topic holding these encoded items: its one field is an array,
        in Avro one block (the count as a zig-zag varint, the items) and an empty block."""
        block = avro_long(len(items)) + b"".join(items) if items else b""
        return self.header + block + b"\x00"

    def decode(self, data: bytes | None) -> dict[str, Any]:
        if data is None:
            raise SerdeError("empty record (null value)")
        if len(data) < _HEADER.size:
            raise SerdeError(f"record of {len(data)} bytes is too short for the wire format")
        magic, schema_id = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise SerdeError(f"not the Confluent wire format (magic byte {magic}, expected 0)")
        # Schema resolution only when the writer used another schema (it is several times
        # slower than a plain read).
        same = schema_id == self.schema_id
        try:
            writer = self._reader if same else self.registry.schema_by_id(schema_id,
                                                                          self.logical_types)
        except RegistryError as exc:
            if "HTTP 404" in str(exc):
                raise SerdeError(f"unknown schema id {schema_id}") from None
            raise  # not the record's fault: the stage stops and reads it again later
        try:
            record = fastavro.schemaless_reader(io.BytesIO(data[_HEADER.size:]), writer,
                                               None if same else self._reader)
        except Exception as exc:  # fastavro raises many types on corrupt input
            raise SerdeError(f"bad Avro payload for schema id {schema_id}: "
                             f"{type(exc).__name__}: {exc}") from None
        if not isinstance(record, dict):
            raise SerdeError("decoded value is not a record")
        return record
