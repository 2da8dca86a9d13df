"""Personal data against the real stack and workers (UU 27/2022): a person's export, their
erasure, the retention run, and rotating the template key, each checked where the data lives
(ClickHouse, the topics, what the intake matches)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from hadir import (
    devices,
    erase,
    export,
    faces,
    kafka_io,
    rekey,
    retention,
    review,
    topics,
    workers,
)
from hadir.infra.process import wait_until
from hadir.kafka_records import placements
from hadir.output import to_json
from processors.retention import CENTRE_TOLERANCE_DEG, cell_centre, retention_ms
from processors.templates import TemplateCipher
from sinks.connection import connect
from tests.paths import FACES
from tests.pipeline_helpers import KOBA, Pipeline, new_office, selfie, wib, working_days

pytestmark = pytest.mark.infra

ME = FACES / "img1.jpg"
ME_AGAIN = FACES / "img2.jpg"
MONTH = date(2020, 3, 1)  # long past: older than any retention window, closed by the test


@pytest.fixture(scope="module")
def pipe(stack) -> Iterator[Pipeline]:  # type: ignore[no-untyped-def]
    p = Pipeline(stack)
    workers.start(stack, intake=1)
    yield p
    p.close()


def _day(pipe: Pipeline, n: int) -> date:
    return working_days(pipe, MONTH, n + 1)[n]


def _where_nip_is(pipe: Pipeline, nip: str) -> dict[str, int]:
    """Every table of Hadir's database with a String column that holds the NIP: rows."""
    client = connect(pipe.settings.infra, "admin")
    try:
        db = pipe.settings.infra.clickhouse_database
        columns = client.execute(
            "SELECT c.table, c.name FROM system.columns AS c ANY INNER JOIN ("
            "SELECT name AS table FROM system.tables WHERE database = %(db)s "
            "AND engine NOT LIKE '%%View') USING table "
            "WHERE c.database = %(db)s AND c.type IN ('String', 'Nullable(String)')",
            {"db": db})
        found: dict[str, int] = {}
        for table, column in columns:
            [(n,)] = client.execute(f"SELECT count() FROM {db}.{table} "
                                    f"WHERE position({column}, %(n)s) > 0", {"n": nip})
            if n:
                found[table] = found.get(table, 0) + n
        return found
    finally:
        client.disconnect()


def _holdings(pipe: Pipeline, nip: str, office: str, other: str) -> list[str]:
    """A person with a bit of everything: two days of check-ins (with selfies), an excuse, an
    appeal, a decision, a phone key, an access-log entry; ``other`` borrows their phone once,
    and each one's decision note names the other. Returns the person's event ids."""
    first, second = _day(pipe, 0), _day(pipe, 1)
    records = [pipe.checkin(nip, at=wib(first, 7, 20), selfie=selfie(ME_AGAIN)),
               pipe.checkin(nip, at=wib(first, 16, 40), kind="OUT", selfie=selfie(ME_AGAIN)),
               pipe.checkin(nip, at=wib(second, 7, 25), selfie=None)]
    borrowed = pipe.checkin(other, at=wib(first, 7, 30), device=f"dev-{nip}",
                            selfie=selfie(FACES / "img3.jpg"))
    pipe.submit(*records)
    ids = [str(r["event_id"]) for r in records]
    assert len(pipe.verdicts(ids, timeout=120)) == 3
    pipe.submit(borrowed)
    pipe.publish(topics.EXCUSES, f"{nip}|{_day(pipe, 2)}|CUTI", {
        "nip": nip, "date_from": str(_day(pipe, 2)), "date_to": str(_day(pipe, 2)),
        "kind": "CUTI"})
    pipe.publish(topics.APPEALS, nip, {"appeal_id": str(uuid.uuid4()), "event_id": ids[2],
                                       "nip": nip, "note": "lupa selfie",
                                       "submitted_at": datetime.now(UTC)})
    pipe.publish(topics.DECISIONS, ids[2], {
        "decision_id": str(uuid.uuid4()), "event_id": ids[2], "nip": nip,
        "decision": "CONFIRM", "reviewer": "Inspektorat", "note": f"same phone as {other}",
        "decided_at": datetime.now(UTC)})
    pipe.publish(topics.DECISIONS, str(borrowed["event_id"]), {
        "decision_id": str(uuid.uuid4()), "event_id": str(borrowed["event_id"]), "nip": other,
        "decision": "CLEAR", "reviewer": "Inspektorat", "note": f"borrowed {nip}'s phone",
        "decided_at": datetime.now(UTC)})
    pipe.publish(topics.DEVICES, f"key-{nip}", {
        "key_id": f"key-{nip}", "nip": nip, "device_id": f"dev-{nip}",
        "public_key": b"\x30\x59not-a-real-key", "platform": "android", "model": "x",
        "app_version": "1", "registered_at": datetime.now(UTC), "revoked_at": None})
    pipe.publish(topics.ACCESS_LOG, "reviewer1", {
        "entry_id": str(uuid.uuid4()), "at": datetime.now(UTC), "username": "reviewer1",
        "role": "reviewer", "action": "VIEW_SELFIE", "subject": ids[0], "nip": nip,
        "office_id": office})
    verdicts = pipe.verdicts([*ids, str(borrowed["event_id"])], timeout=120)
    assert len(verdicts) == 4
    assert verdicts[ids[0]]["verdict"] == "ACCEPTED", verdicts[ids[0]]["reasons"]
    for sql in ("SELECT 1 FROM excuses WHERE nip = %(n)s", "SELECT 1 FROM appeals "
                "WHERE nip = %(n)s", "SELECT 1 FROM decisions WHERE nip = %(n)s",
                "SELECT 1 FROM access_log WHERE nip = %(n)s"):
        assert wait_until(lambda sql=sql: pipe.rows(sql, {"n": nip}) != [], 30), sql
    assert wait_until(lambda: pipe.rows("SELECT 1 FROM decisions WHERE nip = %(n)s",
                                        {"n": other}) != [], 30)
    return ids


def test_export_then_erase_leaves_only_the_paid_tpp_lines(pipe: Pipeline) -> None:
    office = new_office(pipe, "PDP")
    nip = pipe.employee(photo=ME, office_id=office)
    other = pipe.employee(photo=FACES / "img3.jpg", office_id=office)
    ids = _holdings(pipe, nip, office, other)

    # --- export: the person's records, and nobody else's
    data = export.export(pipe.settings, nip, by="test")
    assert {c["event_id"] for c in data["checkins"]} == set(ids)
    assert data["employee"]["nip"] == nip and data["devices"][0]["key_id"] == f"key-{nip}"
    assert len(data["appeals"]) == 1 and len(data["decisions"]) == 1
    assert len(data["excuses"]) == 1 and len(data["access_log"]) >= 1
    assert data["face_template"]["pack"] and "sealed" not in data["face_template"]
    assert data["selfies"]["fingerprints"]["count"] == 2
    text = to_json(data)
    assert other not in text  # the decision's note names the colleague: redacted
    assert '"public_key"' not in text and b"not-a-real-key".hex() not in text
    assert '"embedding"' not in text and '"sealed"' not in text
    assert all(r.get("nip", nip) == nip for table in ("checkins", "alerts", "appeals")
               for r in data[table])
    assert {line["what"] for line in export.summary(data)} >= {"fraud alerts", "appeals"}

    # --- erase: refused while the month's pay is not frozen, then done, then a no-op
    with pytest.raises(erase.ErasureRefused, match="2020-03"):
        erase.erase(pipe.settings, nip)
    review.set_month(pipe.settings, MONTH, True, "BKPSDM")
    try:
        steps = erase.erase(pipe.settings, nip)
    finally:
        review.set_month(pipe.settings, MONTH, False, "BKPSDM")
    done = {(s["step"], s["where"]): s["count"] for s in steps}
    assert done[("face template tombstoned", topics.FACES.name)] == 1
    assert done[("selfie fingerprints tombstoned", topics.SELFIES.name)] == 2
    assert done[("device keys revoked", topics.DEVICES.name)] == 1
    assert done[("rows deleted", "checkins")] >= 3

    assert set(_where_nip_is(pipe, nip)) == {"tpp_closed"}
    assert _where_nip_is(pipe, other)  # the colleague keeps everything of theirs
    assert pipe.rows("SELECT count() FROM checkins WHERE nip = %(n)s", {"n": other})[0][0] >= 1
    assert [k for k in placements(pipe.settings, topics.FACES).get(nip.encode(), {}).values()
            if k.value is not None] == []
    assert not any(k.revoked_at is None for k in devices.keys(pipe.settings, nip))

    again = erase.erase(pipe.settings, nip)
    assert all(s["count"] == 0 for s in again if s["step"] != "kept"), again

    # their face no longer matches: a new selfie finds no template
    after = pipe.checkin(nip, selfie=selfie(ME_AGAIN))
    pipe.submit(after)
    verdict = pipe.verdicts([str(after["event_id"])])[str(after["event_id"])]
    assert "NO_TEMPLATE" in verdict["reasons"], verdict["reasons"]


def test_retention_run_leaves_no_exact_old_position(pipe: Pipeline) -> None:
    nip = pipe.employee(photo=ME, office_id=new_office(pipe, "PDP"))
    lat, lon = KOBA[0] + 0.00011, KOBA[1] - 0.00013
    old = pipe.checkin(nip, at=wib(_day(pipe, 3), 7, 10), lat=lat, lon=lon,
                       selfie=selfie(ME_AGAIN))
    recent = pipe.checkin(nip, lat=lat, lon=lon, selfie=selfie(ME_AGAIN))
    pipe.submit(old, recent)
    ids = [str(old["event_id"]), str(recent["event_id"])]
    assert len(pipe.verdicts(ids)) == 2

    report = {r["store"]: r for r in retention.run(pipe.settings)}
    assert report["ClickHouse checkins"]["changed"] >= 1
    # the old selfie's fingerprint left the replay index's window: tombstoned
    assert report[f"Kafka {topics.SELFIES.name}"]["changed"] >= 1
    first_seen = {v["value"].split(" ")[0]
                  for v in kafka_io.latest(pipe.settings, topics.SELFIES).values() if v}
    assert ids[0] not in first_seen and ids[1] in first_seen

    cut = datetime.now(UTC) - timedelta(days=pipe.settings.privacy.coordinates_days)
    rows = pipe.rows("SELECT lat, lon, h3_cell, event_id FROM checkins "
                     "WHERE server_time < %(t)s", {"t": cut.replace(tzinfo=None)})
    assert any(r[3] == ids[0] for r in rows)
    for r_lat, r_lon, cell, event_id in rows:
        centre = cell_centre(cell) or (0.0, 0.0)
        assert abs(r_lat - centre[0]) <= CENTRE_TOLERANCE_DEG, event_id
        assert abs(r_lon - centre[1]) <= CENTRE_TOLERANCE_DEG, event_id
    [(r_lat, r_lon)] = pipe.rows("SELECT lat, lon FROM checkins FINAL WHERE event_id = %(e)s",
                                 {"e": ids[1]})
    assert (r_lat, r_lon) == (lat, lon)  # within the window: exact

    from hadir.kafka_records import retention as topic_retention

    wanted = retention_ms(pipe.settings.privacy.selfies_days)
    assert set(topic_retention(pipe.settings, [topics.RAW.name, topics.DLQ.name]).values()) \
        == {wanted}
    second = retention.run(pipe.settings)
    assert all(r["changed"] == 0 for r in second), second


def _checkin_matches(pipe: Pipeline, nip: str) -> dict[str, Any]:
    record = pipe.checkin(nip, selfie=selfie(ME_AGAIN))
    pipe.submit(record)
    return pipe.verdicts([str(record["event_id"])])[str(record["event_id"])]


def test_rekey_keeps_every_template_matching(pipe: Pipeline) -> None:
    nip = pipe.employee(photo=ME, office_id=new_office(pipe, "PDP"))
    before = _checkin_matches(pipe, nip)
    assert "NO_TEMPLATE" not in before["reasons"] and before["face_similarity"] is not None
    old = faces.template_keyring(pipe.settings)

    done = rekey.rekey(pipe.settings)
    ring = faces.template_keyring(pipe.settings)
    assert done["key_id"] == ring.current != old.current and done["resealed"] >= 1
    assert done["not_opened"] == 0, done["problems"]
    from hadir.serde import AvroCodec

    codec = AvroCodec(topics.FACES, pipe.registry)
    named = {TemplateCipher.sealed_with(codec.decode(f.value)["sealed"])[1]
             for where in placements(pipe.settings, topics.FACES).values()
             for f in where.values() if f.value is not None}
    assert named == {ring.current}
    assert rekey.rekey(pipe.settings, new_key=False)["resealed"] == 0

    # the running intake reads the new key when a template names it...
    time.sleep(3)
    live = _checkin_matches(pipe, nip)
    assert "NO_TEMPLATE" not in live["reasons"] and live["face_similarity"] is not None
    # ...and one started afresh opens every template with the keyring
    workers.stop(pipe.settings)
    workers.start(pipe.settings, intake=1)
    fresh = _checkin_matches(pipe, nip)
    assert "NO_TEMPLATE" not in fresh["reasons"] and fresh["face_similarity"] is not None
    assert fresh["verdict"] == "ACCEPTED", fresh["reasons"]
