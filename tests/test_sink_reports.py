"""The ClickHouse sink and the reports, against the real ClickHouse and Kafka."""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from hadir import kafka_access, reports, topics
from hadir.infra.clickhouse import ClickHouseServer
from hadir.output import to_json
from hadir.serde import AvroCodec, Registry
from processors.attendance import Excuse, ExcuseKind, WorkCalendar, tpp_month
from sinks.clickhouse import ClickHouseSink, mappings
from sinks.connection import connect
from tests.pipeline_helpers import members_with_partitions

pytestmark = pytest.mark.infra
WIB = ZoneInfo("Asia/Jakarta")


def _verdict(k: int, now: datetime) -> dict[str, Any]:
    return {"event_id": str(uuid.UUID(int=k + 1)), "nip": "198001012005011001",
            "device_id": "d", "office_id": "X", "type": "IN",
            "server_time": now - timedelta(minutes=k), "client_time": None,
            "verdict": "ACCEPTED", "reasons": [], "face_similarity": 0.7, "spoof_score": None,
            "h3_cell": "", "distance_m": 0.0, "lat": -2.48, "lon": 106.41, "accuracy_m": 5.0,
            "decided_at": now}


def _committed(settings: Any, group: str, topic: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({**kafka_access.confluent(settings.infra, "admin"), "group.id": group})
    parts = c.list_topics(topic, timeout=10).topics[topic].partitions
    offsets = c.committed([TopicPartition(topic, p) for p in parts], timeout=10)
    c.close()
    return sum(max(o.offset, 0) for o in offsets)


def _verdicts_into_test_table(stack: Any, table: str, partitions: int) -> tuple[topics.Topic,
                                                                               AvroCodec]:
    """A verdict topic of the test's own and an empty copy of the checkins table."""
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = topics.Topic(f"hadir.test.{table}.{uuid.uuid4().hex[:6]}", "CheckinVerdict", "NIP")
    admin = AdminClient(kafka_access.confluent(stack.infra, "admin"))
    admin.create_topics([NewTopic(topic.name, partitions, 1)])[topic.name].result()
    client = connect(stack.infra, "admin")
    client.execute(f"DROP TABLE IF EXISTS {table}")
    client.execute(f"CREATE TABLE {table} AS checkins")
    client.disconnect()
    return topic, AvroCodec(topic, Registry(stack.infra.registry))


def _sink(stack: Any, topic: topics.Topic, table: str, group: str) -> ClickHouseSink:
    base = next(m for m in mappings(stack) if m.table == "checkins")
    return ClickHouseSink(stack, [dataclasses.replace(base, topic=topic, table=table)],
                          group_id=group, principal="admin")  # the test's own topic


def _until_fetching(sink: ClickHouseSink) -> None:
    """Until the sink has records: only then does "nothing committed" say it held them."""
    deadline = time.monotonic() + 60
    while sink.first_message_at is None:
        assert time.monotonic() < deadline, "the sink fetched nothing"
        time.sleep(0.2)


def test_sink_waits_for_clickhouse_loses_nothing_and_is_idempotent(stack) -> None:  # type: ignore[no-untyped-def]
    from confluent_kafka import Producer

    topic, codec = _verdicts_into_test_table(stack, "sink_test", partitions=3)
    producer = Producer(kafka_access.confluent(stack.infra, "admin"))
    now = datetime.now(UTC).replace(microsecond=0)
    for k in range(1000):
        producer.produce(topic.name, key=str(k).encode(), value=codec.encode(_verdict(k, now)))
    producer.flush(30)

    clickhouse = ClickHouseServer(stack.infra)
    clickhouse.down()
    group = f"test-{topic.name}"
    sink = _sink(stack, topic, "sink_test", group)
    runner = threading.Thread(target=sink.run, daemon=True)
    other = _sink(stack, topic, "sink_test", group)
    try:
        runner.start()
        _until_fetching(sink)
        time.sleep(2)  # the sink fails to insert and retries with backoff
        assert _committed(stack, group, topic.name) == 0  # nothing committed: lag grows
        # A second sink joins while the first waits: the rebalance takes partitions (and the
        # batch) from the waiting sink, which goes on with what it keeps.
        joined = threading.Thread(target=other.run, daemon=True)
        joined.start()
        deadline = time.monotonic() + 60
        while members_with_partitions(stack, group) < 2:
            assert time.monotonic() < deadline, "the second sink got no partitions"
            time.sleep(0.5)
        _until_fetching(other)
        time.sleep(2)
        assert _committed(stack, group, topic.name) == 0
    finally:
        clickhouse.up()
    deadline = time.monotonic() + 60
    while _committed(stack, group, topic.name) < 1000 and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _committed(stack, group, topic.name) == 1000
    assert runner.is_alive() and joined.is_alive()  # neither sink ended on the rebalance
    other.stopping = True
    joined.join(30)
    # Replayed records (a crash between insert and commit) still read as one row each.
    for k in range(500):
        producer.produce(topic.name, key=str(k).encode(), value=codec.encode(_verdict(k, now)))
    producer.flush(30)
    while _committed(stack, group, topic.name) < 1500 and time.monotonic() < deadline + 60:
        time.sleep(0.5)
    # ... by the one sink left, which has the partitions back that it paused during the
    # outage (librdkafka kept them paused after they left: never fetched again)
    assert _committed(stack, group, topic.name) == 1500
    sink.stopping = True
    runner.join(30)
    client = connect(stack.infra, "admin")
    assert client.execute("SELECT count() FROM sink_test FINAL") == [(1000,)]
    assert client.execute("SELECT uniqExact(event_id) FROM sink_test") == [(1000,)]
    client.execute("DROP TABLE sink_test")
    client.disconnect()


def _dead_letters(settings: Any, source_topic: str, count: int) -> dict[int, dict[str, Any]]:
    """Dead letters from ``source_topic``, by source offset."""
    from confluent_kafka import Consumer

    codec = AvroCodec(topics.DLQ, Registry(settings.infra.registry))
    consumer = Consumer({**kafka_access.confluent(settings.infra, "admin"),
                         "group.id": f"test-dlq-{uuid.uuid4()}", "auto.offset.reset": "earliest"})
    consumer.subscribe([topics.DLQ.name])
    found: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + 60
    while len(found) < count and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and not msg.error():
            letter = codec.decode(msg.value())
            if letter["source_topic"] == source_topic:
                found[letter["source_offset"]] = letter
    consumer.close()
    return found


def test_sink_dead_letters_bad_records_and_stores_the_rest(stack) -> None:  # type: ignore[no-untyped-def]
    """A batch with bad records in it: each bad one goes to the dead-letter topic with its
    bytes and reason, every good one is stored, and the offsets move past all of them."""
    import struct

    from confluent_kafka import Producer

    topic, codec = _verdicts_into_test_table(stack, "sink_dlq_test", partitions=1)
    now = datetime.now(UTC)
    good = [codec.encode(_verdict(k, now)) for k in range(300)]
    # A phone clock set to 1969 is stored (a CLOCK_SKEW) with no client time.
    skewed = {**_verdict(300, now), "client_time": datetime(1969, 7, 20, tzinfo=UTC)}
    good.append(codec.encode(skewed))
    bad = {
        290: codec.encode({**_verdict(301, now), "server_time": datetime(1960, 1, 1, tzinfo=UTC)}),
        50: codec.header + b"\xff" * 30,  # our schema id, garbage payload
        120: b"\x00" + struct.pack(">I", 987654) + good[0][5:],  # unknown schema id
        200: good[1][:-4],  # cut short
        250: None,  # no value
        280: b"not avro at all",
    }
    trailing = 150  # trailing bytes after a good record: read as the record (no loss)
    rest = iter(good)
    values = [bad[i] if i in bad else good[2] + b"\x00\x00" if i == trailing else next(rest)
              for i in range(len(good) + len(bad) + 1)]
    producer = Producer(kafka_access.confluent(stack.infra, "admin"))
    for value in values:
        producer.produce(topic.name, key=b"k", value=value)
    producer.flush(30)

    group = f"test-{topic.name}"
    _sink(stack, topic, "sink_dlq_test", group).run(max_idle_s=3.0)

    client = connect(stack.infra, "admin")
    assert client.execute("SELECT uniqExact(event_id) FROM sink_dlq_test") == [(301,)]
    assert client.execute("SELECT client_time FROM sink_dlq_test WHERE event_id = %(e)s",
                          {"e": skewed["event_id"]}) == [(None,)]
    assert _committed(stack, group, topic.name) == len(values)
    letters = _dead_letters(stack, topic.name, len(bad))
    assert set(letters) == set(bad)
    for offset, letter in letters.items():
        assert letter["value"] == values[offset] and letter["stage"] == "clickhouse-sink"
        assert letter["error"]
    assert "unknown schema id 987654" in letters[120]["error"]
    assert "server_time: outside ClickHouse DateTime's range" in letters[290]["error"]
    client.execute("DROP TABLE sink_dlq_test")
    client.disconnect()


def test_each_clickhouse_user_is_refused_what_its_role_must_not_do(stack) -> None:  # type: ignore[no-untyped-def]
    """Admin, writer and reader (hadir/secrets.py), each with a generated password kept 0600;
    no login without one; the writer cannot change the schema; the reader reads the views and
    nothing more, within its limits."""
    from clickhouse_driver import Client
    from clickhouse_driver.errors import ServerException

    i = stack.infra
    secrets = i.home_path / "secrets"
    for name in ("clickhouse-admin", "clickhouse-writer", "clickhouse-reader"):
        assert (secrets / name).stat().st_mode & 0o777 == 0o600
    assert (i.home_path / "clickhouse" / "users.xml").stat().st_mode & 0o777 == 0o600
    for user in (i.clickhouse_user, i.writer_user, i.dashboard_user):
        for password in ("", "dashboard", "wrong"):
            with pytest.raises(ServerException, match=r"[Pp]assword"):
                Client(i.clickhouse_host, port=i.clickhouse_port, user=user,
                       password=password).execute("SELECT 1")

    admin = connect(i, "admin")
    admin.execute("CREATE TABLE IF NOT EXISTS writer_scratch (x UInt8) ENGINE = MergeTree "
                  "ORDER BY x")
    writer = connect(i, "writer")
    writer.execute("INSERT INTO writer_scratch (x) VALUES", [(1,)])
    assert writer.execute("SELECT count() FROM writer_scratch") == [(1,)]
    for ddl in ("CREATE TABLE writer_made (x UInt8) ENGINE = Memory",
                "DROP TABLE writer_scratch", "ALTER TABLE writer_scratch DELETE WHERE 1"):
        with pytest.raises(ServerException, match=r"DDL|allow_ddl"):
            writer.execute(ddl)
    admin.execute("DROP TABLE writer_scratch")
    admin.disconnect()
    with pytest.raises(ServerException, match="Access denied"):
        writer.execute("SELECT count() FROM default.schema_migrations")
    writer.disconnect()

    reader = connect(i, "reader")
    for view in ("v_checkins", "v_alerts", "v_attendance_by_office_day",
                 "v_alerts_by_rule_day", "v_tpp_by_office_month"):
        reader.execute(f"SELECT count() FROM {view}")
    with pytest.raises(ServerException, match="readonly"):
        reader.execute("INSERT INTO employees (nip) VALUES", [("1",)])
    with pytest.raises(ServerException, match="Limit for result exceeded"):
        reader.execute("SELECT number FROM system.numbers LIMIT 2000000")
    reader.disconnect()


def _local(day: date, hh: int, mm: int, ss: int = 0) -> datetime:
    return datetime(day.year, day.month, day.day, hh, mm, ss, tzinfo=WIB)


def test_tpp_report_from_clickhouse(stack) -> None:  # type: ignore[no-untyped-def]
    """A month in ClickHouse: exact rupiah for hand-checkable cases, REVIEW counting as
    attendance and REJECTED not, and the same lines as the rules computed directly."""
    month = date(2027, 6, 1)
    cal = WorkCalendar(stack.attendance)
    days = cal.working_days(2027, 6)
    office = f"RPT-{uuid.uuid4().hex[:4]}"
    perfect, late_once, absent, reviewed = (f"19850101201001100{i}" for i in range(4))
    rows = []

    def checkin(nip: str, at: datetime, kind: str, verdict: str = "ACCEPTED") -> None:
        utc = at.astimezone(UTC)
        rows.append((str(uuid.uuid4()), nip, "d", office, kind, utc.replace(tzinfo=None),
                     int(utc.timestamp() * 1000), at.date(), verdict, [], "", 0.0, 0.0,
                     utc.replace(tzinfo=None), 1))

    for i, day in enumerate(days):
        start, end = cal.schedule(day)  # type: ignore[misc]
        for nip in (perfect, late_once, reviewed):
            arrive = _local(day, start.hour, start.minute, 59)  # 07:30:59 is on time
            if nip == late_once and i == 0:
                arrive = _local(day, start.hour, start.minute + 1)  # 07:31:00: TL1
            verdict = "REVIEW" if nip == reviewed else "ACCEPTED"
            checkin(nip, arrive, "IN", verdict)
            checkin(nip, _local(day, end.hour, end.minute, 5), "OUT", verdict)
        # A rejected check-in (e.g. outside the geofence) does not count as attendance.
        checkin(absent, _local(day, 7, 0), "IN", "REJECTED")
    # A day's times are its first counted IN and last counted OUT: a rejected earlier IN, a
    # later IN and an earlier OUT leave the late arrival late and the day's end as it was.
    start, end = cal.schedule(days[0])  # type: ignore[misc]
    checkin(late_once, _local(days[0], 7, 0), "IN", "REJECTED")
    checkin(late_once, _local(days[0], 9, 0), "IN")
    checkin(late_once, _local(days[0], end.hour - 2, 0), "OUT")
    client = connect(stack.infra)
    client.execute("INSERT INTO checkins (event_id, nip, device_id, office_id, type, "
                   "server_time, server_time_ms, local_date, verdict, reasons, h3_cell, lat, "
                   "lon, decided_at, version) VALUES", rows)
    client.execute("INSERT INTO employees (nip, name, office_id, tpp_base_idr, deleted, "
                   "version) VALUES",
                   [(n, f"ASN {n[-1]}", office, 3_000_000, 0, 1)
                    for n in (perfect, late_once, absent, reviewed)])
    # On leave on the second day, yet checked in: present and excused, nothing cut.
    leave = Excuse(perfect, days[1], days[1], ExcuseKind.CUTI)
    client.execute("INSERT INTO excuses (nip, date_from, date_to, kind, deleted, version) "
                   "VALUES", [(perfect, days[1], days[1], "CUTI", 0, 1)])
    client.disconnect()

    lines = {r.line.nip: r for r in reports.tpp(stack, month, office=office)}
    assert set(lines) == {perfect, late_once, absent, reviewed}
    assert lines[perfect].line.cut_pct == 0 and lines[perfect].line.tpp_paid_idr == 3_000_000
    assert lines[perfect].line.excused_days == 1 and lines[perfect].line.present_days == len(days)
    assert lines[reviewed].line.tpp_paid_idr == 3_000_000  # REVIEW counts
    assert lines[late_once].line.tl == (1, 0, 0, 0)
    assert lines[late_once].line.tpp_cut_idr == 15_000  # 0.5 % of 3,000,000
    assert lines[absent].line.tk_days == len(days)
    assert lines[absent].line.cut_pct == Decimal(100)  # 5 % x TK days, capped at 100 %
    assert lines[absent].line.tpp_paid_idr == 0
    # The stored rows for dashboards match.
    client = connect(stack.infra)
    stored = dict(client.execute(
        "SELECT nip, tpp_paid_idr FROM tpp_monthly FINAL WHERE office_id = %(o)s",
        {"o": office}))
    client.disconnect()
    assert stored == {n: r.line.tpp_paid_idr for n, r in lines.items()}
    # Every rupiah is explained by a day: stored for dashboards, and exported as plain rows
    # (the demo's attendance file).
    start, _ = cal.schedule(days[0])  # type: ignore[misc]
    late_arrival = _local(days[0], start.hour, start.minute + 1).astimezone(UTC).replace(
        tzinfo=None)
    client = connect(stack.infra)
    (first_in, tl_code), = client.execute(
        "SELECT first_in, tl_code FROM attendance_daily FINAL WHERE nip = %(n)s "
        "AND date = %(d)s", {"n": late_once, "d": days[0]})
    client.disconnect()
    assert (first_in, tl_code) == (late_arrival, 1)
    # Every stored column of every day is its DayRecord's (the days are written as columns).
    client = connect(stack.infra)
    stored_days = client.execute(
        "SELECT nip, date, working, excuse, first_in, last_out, late_min, early_min, tl_code, "
        "psw_code, tk, present, cut_pct FROM attendance_daily FINAL WHERE office_id = %(o)s "
        "ORDER BY nip, date", {"o": office})
    client.disconnect()

    def naive_utc(t: datetime | None) -> datetime | None:
        return t.astimezone(UTC).replace(tzinfo=None) if t else None

    assert stored_days == sorted(
        (d.nip, d.date, int(d.working), d.excuse or "", naive_utc(d.first_in),
         naive_utc(d.last_out), d.late_min or 0, d.early_min or 0, d.tl_code, d.psw_code,
         int(d.tk), int(d.present), float(d.cut_pct)) for r in lines.values() for d in r.days)
    assert ("CUTI", 1, 0.0) in {(row[3], row[11], row[12]) for row in stored_days}
    exported = json.loads(to_json(lines[late_once].day_rows()))
    assert len(exported) == 30 and exported[days[0].day - 1]["tl_code"] == 1
    assert exported[days[0].day - 1]["late_min"] == 1
    # And the same as the rules applied directly to the same times.
    firsts = {d: _local(d, cal.schedule(d)[0].hour, cal.schedule(d)[0].minute, 59)  # type: ignore[index]
              for d in days}
    lasts = {d: _local(d, cal.schedule(d)[1].hour, cal.schedule(d)[1].minute, 5)  # type: ignore[index]
             for d in days}
    direct, _ = tpp_month(reports.EmployeeRow(perfect, "ASN 0", office, 3_000_000), 2027, 6,
                          firsts, lasts, (leave,), cal)
    assert direct == lines[perfect].line

    discipline = {r["nip"]: r for r in reports.discipline(stack, 2027, office=office)}
    assert discipline[absent]["tk_days"] == len(days)
    assert discipline[absent]["code"] == "PEMBERHENTIAN"  # 10+ working days in a row
    assert discipline[perfect]["level"] == 0


def test_the_month_under_way_judges_only_the_days_that_are_over(stack) -> None:  # type: ignore[no-untyped-def]
    month = date(2027, 8, 1)
    office = f"NOW-{uuid.uuid4().hex[:4]}"
    absent = "198501012010011009"
    client = connect(stack.infra)
    client.execute("INSERT INTO employees (nip, name, office_id, tpp_base_idr, deleted, "
                   "version) VALUES", [(absent, "ASN 9", office, 3_000_000, 0, 1)])
    client.disconnect()
    today = date(2027, 8, 10)  # a Tuesday: 2-6 and 9 August are over (the 10th is not)
    over = [d for d in WorkCalendar(stack.attendance).working_days(2027, 8) if d < today]
    assert len(over) == 6
    line = reports.tpp(stack, month, office=office, store=False, today=today)[0].line
    assert (line.working_days, line.tk_days) == (len(over), len(over))
    whole = reports.tpp(stack, month, office=office, store=False, today=date(2027, 9, 1))
    assert whole[0].line.working_days > len(over)
    with pytest.raises(reports.ReportError, match="2027-08 has no finished day yet"):
        reports.tpp(stack, month, office=office, store=False, today=month)
