"""Batch decoding for the sink (sinks/frames.py), without services: a batch decoded at once
equals the same records decoded one by one by fastavro, and a batch with a record that is not
exactly what its schema says is refused (so the sink decodes it record by record)."""

from __future__ import annotations

import io
import json
from typing import Any

import fastavro
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hadir.serde import schema_text, without_logical_types
from sinks.frames import FrameDecoder

LONGS = st.integers(min_value=-(2**63), max_value=2**63 - 1)
TEXT = st.text(max_size=300)  # lengths across the one- and two-byte length prefixes
FLOATS = st.floats(width=32, allow_nan=False)

VERDICTS = st.fixed_dictionaries({
    "event_id": st.uuids().map(str), "nip": TEXT, "device_id": TEXT, "office_id": TEXT,
    "type": st.sampled_from(["IN", "OUT"]), "server_time": LONGS,
    "client_time": st.none() | LONGS,
    "verdict": st.sampled_from(["ACCEPTED", "REVIEW", "REJECTED"]),
    "reasons": st.lists(st.text(max_size=70), max_size=70),
    "face_similarity": st.none() | FLOATS, "spoof_score": st.none() | FLOATS,
    "h3_cell": TEXT, "distance_m": st.none() | FLOATS, "lat": st.floats(allow_nan=False),
    "lon": st.floats(allow_nan=False), "accuracy_m": st.none() | FLOATS, "decided_at": LONGS})


def _schema(name: str) -> dict[str, Any]:
    return json.loads(schema_text(name))


def _encode(name: str, records: list[dict[str, Any]]) -> list[bytes]:
    plain = fastavro.parse_schema(without_logical_types(_schema(name)))
    out = []
    for record in records:
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, plain, record)
        out.append(buf.getvalue())
    return out


def _one_by_one(name: str, payloads: list[bytes]) -> list[dict[str, Any]]:
    plain = fastavro.parse_schema(without_logical_types(_schema(name)))
    return [fastavro.schemaless_reader(io.BytesIO(p), plain, None) for p in payloads]


@settings(max_examples=60, deadline=None)
@given(st.lists(VERDICTS, min_size=1, max_size=40))
def test_a_batch_decodes_as_records_one_by_one(records: list[dict[str, Any]]) -> None:
    decoder = FrameDecoder(_schema("CheckinVerdict"))
    payloads = _encode("CheckinVerdict", records)
    frame = decoder.decode(payloads)
    assert frame is not None
    assert frame.equals(decoder.frame(_one_by_one("CheckinVerdict", payloads)))


@settings(max_examples=60, deadline=None)
@given(st.lists(VERDICTS, min_size=2, max_size=10), st.data())
def test_a_record_that_is_too_long_or_too_short_sends_the_batch_one_by_one(
        records: list[dict[str, Any]], data: st.DataObject) -> None:
    decoder = FrameDecoder(_schema("CheckinVerdict"))
    payloads = _encode("CheckinVerdict", records)
    k = data.draw(st.integers(0, len(payloads) - 1))
    cut = data.draw(st.integers(1, len(payloads[k])))
    extra = data.draw(st.binary(min_size=1, max_size=20))
    for bad in (payloads[k][:-cut], payloads[k] + extra):
        assert decoder.decode([*payloads[:k], bad, *payloads[k + 1:]]) is None


def test_garbage_and_empty_records_are_refused_not_raised() -> None:
    decoder = FrameDecoder(_schema("FraudAlert"))
    good = _encode("FraudAlert", [{
        "alert_id": "a1", "event_id": "0b9d4f7e-8f51-4d84-9a43-93c5b3bb1c0e", "nip": "n",
        "device_id": "d", "office_id": "o", "rule": "SHARED_DEVICE", "severity": "REVIEW",
        "server_time": 1, "detected_at": 2, "evidence": "{}"}])[0]
    assert decoder.decode([good, good]) is not None
    for bad in (b"", b"\xff" * 40, b"\x01\x02\x03", good[:3]):
        assert decoder.decode([good, bad, good]) is None
    assert decoder.decode([]) is None


def test_schemas_with_types_the_size_check_leaves_out_are_refused() -> None:
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "m", "type": {"type": "map", "values": "string"}}]}
    with pytest.raises(ValueError, match="not supported"):
        FrameDecoder(schema)


def test_the_frame_keeps_logical_types_plain() -> None:
    decoder = FrameDecoder(_schema("CheckinVerdict"))
    assert str(decoder.schema["server_time"]) == "Int64"
    assert str(decoder.schema["type"]) == "String"
