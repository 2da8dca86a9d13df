"""The real local stack: Kafka (KRaft), Apicurio Registry and ClickHouse, started by the
project's own code. Nothing here is mocked."""

from __future__ import annotations

import dataclasses
import socket
import uuid
from datetime import UTC, datetime

import pytest

from hadir import kafka_access, topics
from hadir.infra import stack as infra_stack
from hadir.infra.kafka import KafkaBroker, new_cluster_id
from hadir.infra.process import InfraError
from hadir.serde import AvroCodec, Registry, RegistryError, SerdeError

pytestmark = pytest.mark.infra


def _checkin() -> dict[str, object]:
    now = datetime.now(UTC).replace(microsecond=123000)
    return {"event_id": str(uuid.uuid4()), "nip": "198503142010011002",
            "device_id": "android-0a1b2c", "type": "IN", "server_time": now,
            "client_time": now, "lat": -2.4867, "lon": 106.4103, "accuracy_m": 12.5,
            "mock_location": False, "selfie": b"\xff\xd8\xff\xe0 not really a jpeg",
            "app_version": "2.4.1", "offline_age_ms": 90_000}


def test_services_are_healthy(stack) -> None:  # type: ignore[no-untyped-def]
    statuses = infra_stack.status(stack)
    assert [s.name for s in statuses] == ["clickhouse", "kafka", "registry"]
    assert all(s.healthy and s.pid for s in statuses), statuses


def test_up_twice_is_harmless(stack) -> None:  # type: ignore[no-untyped-def]
    before = {s.name: s.pid for s in infra_stack.status(stack)}
    after = {s.name: s.pid for s in infra_stack.up(stack, progress=False)}
    assert before == after


def test_up_provisions_services_run_elsewhere(stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """HADIR_INFRA_MANAGED=false, as in docker/compose.yaml: nothing is started and no pid is
    known, yet the services count as healthy and the registry is made to require BACKWARD."""
    import requests

    from hadir.secrets import clickhouse_login

    # as docker/compose.yaml gives hadir-init the admins' passwords: nothing is generated here
    admin_password = clickhouse_login(stack.infra, "admin")[1]
    elsewhere = dataclasses.replace(stack, infra=dataclasses.replace(
        stack.infra, managed=False, home=str(tmp_path), clickhouse_password=admin_password,
        kafka_user="admin", kafka_password=kafka_access.login(stack.infra, "admin")[1]))
    raw_subject = f"{topics.RAW.name}-value"
    requests.put(f"{stack.infra.registry}/config/{raw_subject}", json={"compatibility": "NONE"},
                 timeout=10).raise_for_status()
    statuses = infra_stack.up(elsewhere, progress=False)
    assert all(s.healthy and s.pid is None for s in statuses), statuses
    assert Registry(stack.infra.registry).compatibility(raw_subject) == "BACKWARD"
    assert not list(tmp_path.iterdir())  # nothing was built or started here


def test_confluent_publish_read_back_with_kafka_python_and_registry(stack) -> None:  # type: ignore[no-untyped-def]
    from confluent_kafka import Producer
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext
    from kafka import KafkaConsumer, TopicPartition

    from hadir.serde import schema_text

    record = _checkin()
    client = SchemaRegistryClient({"url": stack.infra.registry})
    serializer = AvroSerializer(client, schema_text("CheckinSubmitted"),
                                conf={"auto.register.schemas": True})
    ctx = SerializationContext(topics.RAW.name, MessageField.VALUE)
    payload = serializer(record, ctx)
    producer = Producer(kafka_access.confluent(stack.infra, "admin"))
    delivered = []
    producer.produce(topics.RAW.name, key=str(record["nip"]).encode(), value=payload,
                     on_delivery=lambda err, msg: delivered.append((err, msg)))
    producer.flush(10)
    (err, msg), = delivered
    assert err is None

    user, password = kafka_access.login(stack.infra, "admin")
    consumer = KafkaConsumer(bootstrap_servers=stack.infra.bootstrap,
                             security_protocol="SASL_PLAINTEXT",
                             sasl_mechanism=kafka_access.MECHANISM, sasl_plain_username=user,
                             sasl_plain_password=password,
                             enable_auto_commit=False, consumer_timeout_ms=10000)
    tp = TopicPartition(topics.RAW.name, msg.partition())
    consumer.assign([tp])
    consumer.seek(tp, msg.offset())
    got = next(iter(consumer))
    consumer.close()
    assert got.key == str(record["nip"]).encode()
    assert got.value == payload
    assert got.value[0] == 0  # Confluent wire format: magic byte, then the schema id

    # Through the registry, with Confluent's deserializer and with Hadir's own codec.
    decoded = AvroDeserializer(client)(got.value, ctx)
    ours = AvroCodec(topics.RAW, Registry(stack.infra.registry)).decode(got.value)
    for value in (decoded, ours):
        assert {k: v for k, v in value.items() if k != "event_id"} == {
            k: v for k, v in record.items() if k != "event_id"}
        assert str(value["event_id"]) == record["event_id"]


def test_every_topic_exists_with_its_subject(stack) -> None:  # type: ignore[no-untyped-def]
    from confluent_kafka.admin import AdminClient

    md = AdminClient(kafka_access.confluent(stack.infra, "admin")).list_topics(timeout=10)
    for t in topics.ALL:
        assert t.name in md.topics
        assert len(md.topics[t.name].partitions) == topics.partitions(t, stack.infra)
    assert len(md.topics[topics.RAW.name].partitions) == stack.infra.raw_partitions
    subjects = set(Registry(stack.infra.registry).subjects())
    assert {f"{t.name}-value" for t in topics.ALL} <= subjects


def test_codec_refuses_garbage_with_a_reason(stack) -> None:  # type: ignore[no-untyped-def]
    codec = AvroCodec(topics.RAW, Registry(stack.infra.registry))
    with pytest.raises(SerdeError, match="too short"):
        codec.decode(b"\x00")
    with pytest.raises(SerdeError, match="not the Confluent wire format"):
        codec.decode(b"{\"json\": true}")
    with pytest.raises(SerdeError, match="unknown schema id"):
        codec.decode(b"\x00\x7f\xff\xff\xf0abc")
    good = codec.encode(_checkin())
    with pytest.raises(SerdeError, match="bad Avro payload"):
        codec.decode(good[:12])
    alert_codec = AvroCodec(topics.ALERTS, Registry(stack.infra.registry))
    with pytest.raises(SerdeError):
        alert_codec.decode(good)  # a check-in where an alert should be: wrong schema


def test_clickhouse_write_read(stack) -> None:  # type: ignore[no-untyped-def]
    from sinks.connection import connect

    client = connect(stack.infra, "admin")
    client.execute("CREATE TABLE IF NOT EXISTS roundtrip (id String, n Int64) "
                   "ENGINE = MergeTree ORDER BY id")
    key = str(uuid.uuid4())
    client.execute("INSERT INTO roundtrip (id, n) VALUES", [(key, 42)])
    assert client.execute("SELECT n FROM roundtrip WHERE id = %(k)s", {"k": key}) == [(42,)]
    applied = {r[1] for r in client.execute("SELECT version, name FROM schema_migrations")}
    assert {"tables", "views"} <= applied


def test_broker_restart_keeps_data(stack) -> None:  # type: ignore[no-untyped-def]
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    key = str(uuid.uuid4()).encode()
    topic = f"hadir.test.restart.{uuid.uuid4().hex[:6]}"  # keeps Hadir's own topics clean
    client = kafka_access.confluent(stack.infra, "admin")
    admin = AdminClient(client)
    admin.create_topics([NewTopic(topic, 1, 1)])[topic].result()
    p = Producer(client)
    out = []
    p.produce(topic, key=key, value=b"survives a restart",
              on_delivery=lambda e, m: out.append(m))
    p.flush(10)
    broker = KafkaBroker(stack.infra)
    pid = broker.process.pid()
    assert broker.down()
    assert broker.process.pid() is None
    broker.up()
    assert broker.process.pid() != pid
    c = Consumer({**kafka_access.confluent(stack.infra, "admin"), "group.id": "restart-test",
                  "enable.auto.commit": False})
    c.assign([TopicPartition(topic, out[0].partition(), out[0].offset())])
    msg = c.poll(15)
    c.close()
    assert msg is not None and msg.key() == key and msg.value() == b"survives a restart"


def test_port_taken_is_a_clear_error(stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        infra = dataclasses.replace(stack.infra, home=str(tmp_path), kafka_port=port)
        with pytest.raises(InfraError, match=f"kafka: port {port} .* is taken"):
            KafkaBroker(infra).up()


def test_cluster_ids_never_read_as_an_option() -> None:
    ids = [new_cluster_id() for _ in range(3000)]  # about 47 would start with "-" unchecked
    assert all(len(i) == 22 and not i.startswith("-") for i in ids)


def test_storage_formats_with_a_cluster_id_starting_with_a_dash(stack, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A stack formatted before ids were checked may hold such an id; it must still format."""
    broker = KafkaBroker(dataclasses.replace(stack.infra, home=str(tmp_path)))
    broker.libs = KafkaBroker(stack.infra).libs  # the jars the stack already resolved
    broker.dir.mkdir(parents=True)
    broker._write_config()
    (broker.dir / "cluster.id").write_text("-" + new_cluster_id()[1:])
    broker._format()
    assert (broker.data / "meta.properties").exists()


def test_missing_java_is_a_clear_error(stack, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PATH", str(tmp_path))  # no java, no mvn
    infra = dataclasses.replace(stack.infra, home=str(tmp_path), kafka_port=1,
                                kafka_controller_port=2)
    with pytest.raises(InfraError, match="kafka: java is not installed"):
        KafkaBroker(infra).ensure_jars()


def test_registry_not_answering_is_a_clear_error() -> None:
    with pytest.raises(RegistryError, match="does not answer"):
        Registry("http://127.0.0.1:9/apis/ccompat/v7", timeout=2).subjects()


def test_cli_infra_status_json(stack, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    from hadir.cli import main

    assert main(["infra", "status", "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"]: r["healthy"] for r in rows} == {
        "clickhouse": True, "kafka": True, "registry": True}


@pytest.mark.parametrize("fmt", ["json", "csv"])
def test_alerts_follow_shows_alerts_as_they_are_published(stack, fmt: str) -> None:  # type: ignore[no-untyped-def]
    """`hadir alerts --follow` on the real alert topic: each new alert of the chosen rule, as
    the rows `hadir alerts` gives (evidence as an object), one at a time; other rules are
    left out."""
    import csv
    import json
    import queue
    import signal
    import subprocess
    import sys
    import threading
    import time

    from confluent_kafka import Producer

    from hadir.queries import ALERT_COLUMNS

    codec = AvroCodec(topics.ALERTS, Registry(stack.infra.registry))
    producer = Producer(kafka_access.confluent(stack.infra, "admin"))
    follower = subprocess.Popen(
        [sys.executable, "-m", "hadir", "alerts", "--follow", "--rule", "SHARED_DEVICE",
         "--format", fmt], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in follower.stdout or []],
                     daemon=True).start()

    def alert(rule: str) -> dict[str, object]:
        at = datetime.now(UTC).replace(microsecond=0)
        return {"alert_id": f"{uuid.uuid4()}:{rule}", "event_id": str(uuid.uuid4()),
                "nip": "198503142010011002", "device_id": "android-0a1b2c", "office_id": "KOBA",
                "rule": rule, "severity": "REVIEW", "server_time": at, "detected_at": at,
                "evidence": json.dumps({"other_nips": ["199001012015011002"]})}

    try:
        sent: dict[str, dict[str, object]] = {}
        got: list[str] = []
        deadline = time.monotonic() + 60
        # The follower reads from when it is assigned: publish until its first line shows.
        while len(got) < (2 if fmt == "csv" else 1) and time.monotonic() < deadline:
            for a in (alert("CLOCK_SKEW"), alert("SHARED_DEVICE")):
                sent[str(a["alert_id"])] = a
                producer.produce(topics.ALERTS.name, key=b"198503142010011002",
                                 value=codec.encode(a))
            producer.flush(10)
            try:
                got.append(lines.get(timeout=2))
            except queue.Empty:
                continue
    finally:
        follower.send_signal(signal.SIGINT)
        follower.wait(30)
    assert follower.returncode == 0, follower.stderr.read() if follower.stderr else ""
    if fmt == "json":
        row = json.loads(got[0])
    else:
        header, values = csv.reader(got[:2])
        assert header == ALERT_COLUMNS
        row = dict(zip(header, values, strict=True))
        row["evidence"] = json.loads(row["evidence"])
    assert list(row) == ALERT_COLUMNS
    expected = sent[row["alert_id"]]
    assert row["rule"] == "SHARED_DEVICE"
    assert row["evidence"] == {"other_nips": ["199001012015011002"]}
    assert row["event_id"] == expected["event_id"] and row["nip"] == expected["nip"]
    assert datetime.fromisoformat(row["detected_at"]) == expected["detected_at"]


def test_docker_has_the_same_dashboard_user_as_the_local_stack() -> None:
    """docker/ and `hadir infra up` share one definition of the read-only dashboard user."""
    from pathlib import Path

    from hadir.infra.clickhouse import docker_users_xml

    shipped = Path(__file__).resolve().parents[1] / "docker" / "clickhouse" / "hadir-users.xml"
    assert shipped.read_text() == docker_users_xml(), \
        "regenerate it: python -m hadir.infra.clickhouse"
