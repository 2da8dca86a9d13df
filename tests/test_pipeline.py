"""The streaming pipeline on the real broker, registry and ClickHouse: one crafted sequence per
rule, asserting the verdict and the alert that come out, plus duplicates and dead letters."""

from __future__ import annotations

import itertools
import json
import math
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from hadir import topics, workers
from hadir.serde import AvroCodec
from tests.pipeline_helpers import FACES_DIR, KOBA, Pipeline, jpeg, no_face_jpeg, selfie

pytestmark = pytest.mark.infra

ME_AGAIN = FACES_DIR / "img2.jpg"  # another photo of the same person
STRANGER = FACES_DIR / "img3.jpg"  # someone else


@pytest.fixture(scope="module")
def pipe(stack) -> Iterator[Pipeline]:  # type: ignore[no-untyped-def]
    p = Pipeline(stack)
    workers.start(stack, intake=1)
    yield p
    p.close()


def _one(pipe: Pipeline, record: dict[str, object]) -> dict[str, object]:
    pipe.submit(record)
    verdicts = pipe.verdicts([str(record["event_id"])])
    assert record["event_id"] in verdicts, "no verdict within the timeout"
    return verdicts[str(record["event_id"])]


def test_honest_checkin_is_accepted(pipe: Pipeline) -> None:
    nip = pipe.employee()
    v = _one(pipe, pipe.checkin(nip, selfie=selfie(ME_AGAIN)))
    assert v["verdict"] == "ACCEPTED" and v["reasons"] == []
    assert v["distance_m"] == 0 and v["h3_cell"]
    assert v["face_similarity"] >= pipe.verifier.threshold
    assert v["office_id"] == pipe.office_id


@pytest.mark.parametrize(("reason", "verdict", "change"), [
    ("MOCK_LOCATION", "REJECTED", {"mock": True}),
    ("OUTSIDE_GEOFENCE", "REJECTED", {"lat": KOBA[0] + 0.02}),  # about 2 km north
    ("LOW_ACCURACY", "REVIEW", {"accuracy": 150.0}),
    ("CLOCK_SKEW", "REVIEW", {"client_offset_s": -3 * 3600}),
    ("NO_SELFIE", "REJECTED", {"selfie": None}),
])
def test_rule(pipe: Pipeline, reason: str, verdict: str, change: dict[str, object]) -> None:
    nip = pipe.employee()
    args: dict[str, object] = {"selfie": selfie(ME_AGAIN), **change}
    record = pipe.checkin(nip, **args)  # type: ignore[arg-type]
    v = _one(pipe, record)
    assert v["verdict"] == verdict
    assert reason in v["reasons"]
    alert = pipe.alerts(str(record["event_id"]), reason)[reason]
    assert alert["severity"] == verdict
    assert alert["evidence"] is not None


def test_outside_geofence_evidence_has_the_distance(pipe: Pipeline) -> None:
    nip = pipe.employee()
    record = pipe.checkin(nip, selfie=selfie(ME_AGAIN), lat=KOBA[0] + 0.01)
    v = _one(pipe, record)
    assert 1000 < v["distance_m"] < 1150  # 0.01 degree of latitude, less half the office
    alert = pipe.alerts(str(record["event_id"]), "OUTSIDE_GEOFENCE")["OUTSIDE_GEOFENCE"]
    assert alert["evidence"]["tolerance_m"] == 30


def test_unknown_employee(pipe: Pipeline) -> None:
    record = pipe.checkin("199901012020011999", selfie=selfie(ME_AGAIN))
    v = _one(pipe, record)
    assert v["verdict"] == "REJECTED"
    assert "UNKNOWN_EMPLOYEE" in v["reasons"]
    alert = pipe.alerts(str(record["event_id"]), "UNKNOWN_EMPLOYEE")["UNKNOWN_EMPLOYEE"]
    assert alert == {"severity": "REJECTED", "evidence": {"nip": "199901012020011999"}}


def test_no_template_goes_to_review(pipe: Pipeline) -> None:
    """An ASN not enrolled yet: the selfie cannot be matched, so a person looks at it."""
    nip = pipe.employee(photo=None)
    record = pipe.checkin(nip, selfie=selfie(ME_AGAIN))
    v = _one(pipe, record)
    assert v["verdict"] == "REVIEW" and v["reasons"] == ["NO_TEMPLATE"]
    alert = pipe.alerts(str(record["event_id"]), "NO_TEMPLATE")["NO_TEMPLATE"]
    assert alert == {"severity": "REVIEW", "evidence": {"nip": nip}}


def test_face_rules(pipe: Pipeline) -> None:
    nip = pipe.employee()
    t0 = datetime.now(UTC).replace(microsecond=0)
    mismatch = pipe.checkin(nip, selfie=selfie(STRANGER), at=t0)
    no_face = pipe.checkin(nip, selfie=no_face_jpeg(), at=t0 + timedelta(minutes=1))
    many = pipe.checkin(nip, selfie=jpeg(FACES_DIR / "couple.jpg", 1200),
                        at=t0 + timedelta(minutes=2))
    pipe.submit(mismatch, no_face, many)
    v = pipe.verdicts([str(r["event_id"]) for r in (mismatch, no_face, many)])
    assert "FACE_MISMATCH" in v[str(mismatch["event_id"])]["reasons"]
    assert v[str(mismatch["event_id"])]["verdict"] == "REJECTED"
    assert v[str(no_face["event_id"])]["reasons"] == ["NO_FACE"]
    assert "MULTIPLE_FACES" in v[str(many["event_id"])]["reasons"]
    evidence = pipe.alerts(str(mismatch["event_id"]), "FACE_MISMATCH")["FACE_MISMATCH"][
        "evidence"]
    assert evidence["similarity"] < evidence["threshold"]
    assert pipe.alerts(str(no_face["event_id"]), "NO_FACE")["NO_FACE"]["severity"] == "REJECTED"
    multiple = pipe.alerts(str(many["event_id"]), "MULTIPLE_FACES")["MULTIPLE_FACES"]
    assert multiple["severity"] == "REVIEW" and multiple["evidence"]


def test_selfie_replay_across_employees(pipe: Pipeline) -> None:
    a, b = pipe.employee(), pipe.employee()
    t0 = datetime.now(UTC).replace(microsecond=0)
    first = pipe.checkin(a, selfie=jpeg(ME_AGAIN), at=t0)
    _one(pipe, first)
    again = pipe.checkin(b, selfie=jpeg(ME_AGAIN, 400), at=t0 + timedelta(minutes=5))
    v = _one(pipe, again)  # re-encoded and resized, sent for another NIP
    assert v["verdict"] == "REJECTED" and "SELFIE_REPLAY" in v["reasons"]
    evidence = pipe.alerts(str(again["event_id"]), "SELFIE_REPLAY")["SELFIE_REPLAY"][
        "evidence"]
    assert evidence["original_event_id"] == first["event_id"]
    assert evidence["original_nip"] == a


def test_impossible_travel(pipe: Pipeline) -> None:
    nip = pipe.employee()
    t0 = datetime.now(UTC).replace(microsecond=0)
    here = pipe.checkin(nip, selfie=selfie(ME_AGAIN), at=t0)
    # Pangkalpinang, about 45 km away, ten minutes later.
    there = pipe.checkin(nip, selfie=selfie(FACES_DIR / "img4.jpg"), at=t0 + timedelta(minutes=10),
                         lat=-2.1291, lon=106.1094, kind="OUT")
    pipe.submit(here, there)
    v = pipe.verdicts([str(here["event_id"]), str(there["event_id"])])
    assert v[str(here["event_id"])]["verdict"] == "ACCEPTED"
    assert "IMPOSSIBLE_TRAVEL" in v[str(there["event_id"])]["reasons"]
    evidence = pipe.alerts(str(there["event_id"]), "IMPOSSIBLE_TRAVEL")["IMPOSSIBLE_TRAVEL"][
        "evidence"]
    assert evidence["speed_kmh"] > 120 and evidence["previous_event_id"] == here["event_id"]


def test_shared_device(pipe: Pipeline) -> None:
    owner, mate = pipe.employee(), pipe.employee(photo=ME_AGAIN)
    t0 = datetime.now(UTC).replace(microsecond=0)
    first = pipe.checkin(owner, selfie=selfie(ME_AGAIN), device="shared-phone", at=t0)
    second = pipe.checkin(mate, selfie=selfie(FACES_DIR / "img4.jpg"), device="shared-phone",
                          at=t0 + timedelta(minutes=1))
    pipe.submit(second, first)  # arrival order differs from server time: still judged right
    ids = [str(first["event_id"]), str(second["event_id"])]
    deadline = datetime.now(UTC) + timedelta(seconds=30)
    while True:
        v = pipe.verdicts(ids)
        if "SHARED_DEVICE" in v[ids[1]]["reasons"] or datetime.now(UTC) > deadline:
            break
        time.sleep(0.2)  # the later revision of the verdict is on its way
    assert v[ids[0]]["verdict"] == "ACCEPTED"
    assert v[ids[1]]["verdict"] == "REVIEW" and "SHARED_DEVICE" in v[ids[1]]["reasons"]
    shared = pipe.alerts(ids[1], "SHARED_DEVICE")["SHARED_DEVICE"]
    assert shared["evidence"]["other_nips"] == [owner]


def _square(lat: float, lon: float, half_deg: float = 0.0004) -> str:
    return json.dumps({"type": "Polygon", "coordinates": [[
        [lon - half_deg, lat - half_deg], [lon + half_deg, lat - half_deg],
        [lon + half_deg, lat + half_deg], [lon - half_deg, lat + half_deg],
        [lon - half_deg, lat - half_deg]]]})


def test_reference_updates_take_effect_without_a_restart(pipe: Pipeline) -> None:
    """An office moved and a face re-enrolled while the workers run: the next check-ins are
    judged against the new polygon and the new template (the workers follow the compacted
    reference topics)."""
    office = f"TEST-MOVED-{uuid.uuid4().hex[:6]}"
    new_site = (KOBA[0] + 0.01, KOBA[1])  # about 1.1 km north
    pipe.publish(topics.OFFICES, office, {"office_id": office, "name": "Kantor lama",
                                          "geometry": _square(*KOBA)})
    nip = pipe.employee(office_id=office)
    t0 = datetime.now(UTC).replace(microsecond=0)
    before = _one(pipe, pipe.checkin(nip, selfie=selfie(ME_AGAIN), at=t0, lat=new_site[0]))
    assert "OUTSIDE_GEOFENCE" in before["reasons"]
    stranger_before = _one(pipe, pipe.checkin(nip, selfie=selfie(STRANGER), lat=new_site[0],
                                              at=t0 + timedelta(minutes=1)))
    assert "FACE_MISMATCH" in stranger_before["reasons"]

    pipe.publish(topics.OFFICES, office, {"office_id": office, "name": "Kantor baru",
                                          "geometry": _square(*new_site)})
    pipe.enroll(nip, STRANGER)
    # The workers read the updates within moments; until they have, a check-in is judged
    # against the old office and face, so try again (a fresh check-in each time).
    deadline = time.monotonic() + 30
    for k in itertools.count():
        after = _one(pipe, pipe.checkin(nip, selfie=selfie(STRANGER), lat=new_site[0],
                                        at=t0 + timedelta(minutes=2, seconds=k)))
        if after["verdict"] == "ACCEPTED" or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert after["verdict"] == "ACCEPTED" and after["reasons"] == []
    assert after["distance_m"] == 0
    old_face = _one(pipe, pipe.checkin(nip, selfie=selfie(ME_AGAIN), lat=new_site[0],
                                       at=t0 + timedelta(minutes=3)))
    assert old_face["reasons"] == ["FACE_MISMATCH"]


def test_duplicate_event_id_gives_one_verdict(pipe: Pipeline) -> None:
    nip = pipe.employee()
    record = pipe.checkin(nip, selfie=selfie(ME_AGAIN))
    pipe.submit(record, record)
    _one(pipe, record)
    later = pipe.checkin(nip, selfie=selfie(FACES_DIR / "img4.jpg"),
                         at=record["server_time"] + timedelta(minutes=1))  # type: ignore[operator]
    _one(pipe, later)  # processed after both copies
    on_topic = [v["event_id"] for v in pipe.on_topic(topics.VERDICTS, nip)]
    assert sorted(on_topic) == sorted([record["event_id"], later["event_id"]])
    # The duplicate was not judged as a replay of itself either: no alert for it on the topic
    # (its alerts would have been sent before the later check-in's verdict).
    assert [a for a in pipe.on_topic(topics.ALERTS, nip)
            if a["event_id"] == record["event_id"]] == []


def _protobuf_record(pipe: Pipeline) -> bytes:
    """A record in the Confluent wire format whose schema id is a Protobuf schema (a producer
    using Confluent's Protobuf serializer by mistake)."""
    import struct

    import requests

    reply = requests.post(
        f"{pipe.settings.infra.registry}/subjects/hadir.test.proto-value/versions",
        json={"schema": 'syntax = "proto3"; message Checkin { string nip = 1; }',
              "schemaType": "PROTOBUF"}, timeout=10)
    reply.raise_for_status()
    return b"\x00" + struct.pack(">I", reply.json()["id"]) + b"\x00\x0a\x03abc"


def test_a_check_in_the_core_stage_cannot_judge_is_a_dead_letter_of_its_own(
        pipe: Pipeline) -> None:
    """A hand-off record holds several check-ins; one that fails in the person stage becomes a
    dead letter holding that check-in alone (the others have their verdicts) and naming where
    it entered Hadir, its raw-topic position; the hand-off record's is in the error."""
    from processors.events import Checkin, CheckinType
    from streams.records import in_progress

    nip = pipe.employee(photo=None)
    at = datetime.now(UTC).replace(microsecond=0)
    good = Checkin(str(uuid.uuid4()), nip, f"dev-{nip}", CheckinType.IN, at, at, *KOBA, 10.0,
                   False)
    broken = Checkin(str(uuid.uuid4()), nip, f"dev-{nip}", CheckinType.OUT,
                     at + timedelta(minutes=1), at, math.nan, KOBA[1], 10.0, False)
    raw_offset = 900_000_000 + int(uuid.uuid4().int % 1_000_000)  # no real record's
    codec = AvroCodec(topics.FACED, pipe.registry, logical_types=False)
    items = [codec.encode_item(in_progress(good, [], source="hadir.checkins.raw[0]@1")),
             codec.encode_item(in_progress(broken, [],
                                           source=f"hadir.checkins.raw[0]@{raw_offset}"))]
    pipe.publish(topics.FACED, nip, None, raw=codec.join(items))
    assert pipe.verdicts([good.event_id])  # the good one went on
    (letter,) = pipe.dead_letters([(0, raw_offset)]).values()
    assert letter["source_topic"] == topics.RAW.name and letter["stage"] == "core"
    assert f"({broken.event_id}): ValueError" in letter["error"]
    assert f"(in {topics.FACED.name}[" in letter["error"]
    (kept,) = codec.decode(letter["value"])["checkins"]
    assert kept["event_id"] == broken.event_id and math.isnan(kept["lat"])
    assert (letter["event_id"], letter["nip"]) == (broken.event_id, nip)
    # the ASN is told why on the phone, and can appeal, instead of a silent TK day
    verdict = pipe.verdicts([broken.event_id])[broken.event_id]
    assert (verdict["verdict"], verdict["reasons"]) == ("REJECTED", ["INVALID_INPUT"])


def test_a_fix_without_an_accuracy_is_reviewed(pipe: Pipeline) -> None:
    """The schema lets accuracy_m be null: judged (LOW_ACCURACY, a person decides), not a dead
    letter the ASN never hears of."""
    nip = pipe.employee()
    record = pipe.checkin(nip, accuracy=None, selfie=selfie(ME_AGAIN))
    v = _one(pipe, record)
    assert v["verdict"] == "REVIEW" and v["reasons"] == ["LOW_ACCURACY"]
    evidence = pipe.alerts(str(record["event_id"]), "LOW_ACCURACY")["LOW_ACCURACY"]["evidence"]
    assert evidence["accuracy_m"] is None


def test_bad_records_go_to_the_dead_letter_topic(pipe: Pipeline) -> None:
    nip = pipe.employee()
    good = pipe.checkin(nip, selfie=selfie(ME_AGAIN))
    alert_codec = pipe.codecs[topics.ALERTS.name]
    wrong_schema = alert_codec.encode({
        "alert_id": "x", "event_id": good["event_id"], "nip": nip, "device_id": "d",
        "office_id": "", "rule": "X", "severity": "REVIEW", "server_time": datetime.now(UTC),
        "detected_at": datetime.now(UTC), "evidence": "{}"})
    positions = {
        "not avro": pipe.publish(topics.RAW, nip, None, raw=b"{\"nip\": \"not avro\"}"),
        "truncated": pipe.publish(topics.RAW, nip, None,
                                  raw=pipe.codecs[topics.RAW.name].encode(good)[:20]),
        "wrong schema": pipe.publish(topics.RAW, nip, None, raw=wrong_schema),
        "garbage selfie": pipe.submit(pipe.checkin(nip, selfie=b"\xff\xd8\xff garbage"))[0],
        "empty selfie": pipe.submit(pipe.checkin(nip, selfie=b""))[0],
        "null island": pipe.submit(pipe.checkin(nip, lat=0.0, lon=0.0,
                                                selfie=selfie(ME_AGAIN)))[0],
        "id not a uuid": pipe.submit({**pipe.checkin(nip, selfie=selfie(ME_AGAIN)),
                                      "event_id": "not-a-uuid"})[0],
        # overflowed the person stage's local date, every time the record was read again
        "year 9999": pipe.submit({**pipe.checkin(nip, selfie=selfie(ME_AGAIN)),
                                  "server_time": datetime(9999, 12, 31, 23, tzinfo=UTC)})[0],
        "blank nip": pipe.submit({**pipe.checkin(nip, selfie=selfie(ME_AGAIN)), "nip": " "})[0],
        # crash-looped the core on its device table's changelog, once past the intake
        "2 MB device id": pipe.submit({**pipe.checkin(nip, selfie=selfie(ME_AGAIN)),
                                       "device_id": "d" * 2_000_000})[0],
        "protobuf": pipe.publish(topics.RAW, nip, None, raw=_protobuf_record(pipe)),
    }
    v = _one(pipe, good)
    assert v["verdict"] == "ACCEPTED"
    later = pipe.checkin(nip, selfie=selfie(ME_AGAIN))
    _one(pipe, later)  # sent after every bad record: the workers kept going
    letters = pipe.dead_letters(list(positions.values()))
    reasons = {name: letters[pos]["error"] for name, pos in positions.items() if pos in letters}
    assert set(reasons) == set(positions), reasons
    assert "not the Confluent wire format" in reasons["not avro"]
    assert "bad Avro payload" in reasons["truncated"]
    assert "selfie" in reasons["garbage selfie"]
    assert "selfie" in reasons["empty selfie"]
    assert "0" in reasons["null island"]
    assert "UUID" in reasons["id not a uuid"]
    assert "server_time 9999-12-31 is outside 2000..2100" in reasons["year 9999"]
    assert "nip '' is not 18 digits" in reasons["blank nip"]
    assert "device_id is not 1..128 printable ASCII characters (2,000,000" in reasons[
        "2 MB device id"]
    assert "is not a usable Avro schema" in reasons["protobuf"]
    for pos, letter in letters.items():
        assert letter["stage"] == "intake"
        assert letter["value"]  # the original bytes are kept
        assert letter["source_partition"] == pos[0]


def test_alerts_and_checkins_commands(pipe: Pipeline, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    from hadir.cli import main

    nip = pipe.employee()
    record = pipe.checkin(nip, selfie=selfie(ME_AGAIN), mock=True)
    _one(pipe, record)
    pipe.alerts(str(record["event_id"]), "MOCK_LOCATION")
    assert main(["alerts", "--nip", nip, "--format", "json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [(a["event_id"], a["rule"], a["severity"]) for a in shown] == [
        (record["event_id"], "MOCK_LOCATION", "REJECTED")]
    assert main(["checkins", "--nip", nip, "--format", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("event_id,nip,type,server_time,verdict,reasons")
    assert record["event_id"] in lines[1] and "REJECTED" in lines[1]
