"""``hadir replay DIR``: a scenario folder through the real pipeline, end to end.

1. Read and check the whole folder, and enroll every face, before anything is published.
2. Start the stack, the workers and the gateway if they are not running.
3. Publish the reference data (offices, employees, excuses, sealed face templates).
4. Register one phone per (NIP, device_id) pair with an activation code, as the app does.
5. Send the check-ins through the phone edge (``hadir gateway``), signed by their phone's key,
   with the importer token so their historical server_time is kept, in server_time order per
   phone, one day at a time, waiting until each has its verdict in ClickHouse (or a dead
   letter) before the next day. Events that already have a verdict (an earlier run) are not
   sent again: a second run is a no-op. Events the edge refuses are listed, not judged.
6. Apply decisions.csv, if any: the reviewers' decisions, once every event has its verdict.
7. Summarise: verdicts by kind, alerts by rule, dead letters, refusals, decisions.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import requests
from tqdm import tqdm

from hadir import faces, kafka_access, review, topics, workers
from hadir import phones as phone_sim
from hadir.config import ConfigError, Settings
from hadir.gateway.importer import import_token
from hadir.infra import stack
from hadir.infra.process import InfraError, wait_until
from hadir.output import emit, emit_object
from hadir.phone import checkin_body, gateway_url
from hadir.queries import event_ids
from hadir.scenario import Event, Scenario, ScenarioError, load
from hadir.serde import AvroCodec, Registry, SerdeError
from processors.face import EnrollmentError
from processors.templates import Template
from sinks.connection import connect


@dataclass
class Summary:
    folder: str
    events: int
    published: int
    verdicts: dict[str, int] = field(default_factory=dict)
    alerts: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    seconds: float = 0.0
    dead_letter_reasons: list[str] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)  # event_id, nip, status, errors
    decisions: int = 0  # published this run
    decisions_refused: list[str] = field(default_factory=list)


def _producer(settings: Settings) -> Any:
    from confluent_kafka import Producer

    # murmur2 like the Java client and aiokafka, so keys land where faust expects them.
    return Producer({**kafka_access.confluent(settings.infra, "admin"), "linger.ms": 20,
                     "partitioner": "murmur2_random",
                     "message.max.bytes": 4_000_000, "queue.buffering.max.messages": 200_000})


def _flush(producer: Any) -> None:
    if producer.flush(120):
        raise TimeoutError("Kafka did not acknowledge every record within 120 s")


def enroll_all(settings: Settings, scenario: Scenario,
               progress: bool) -> dict[str, Template]:
    """Every employee with a photo, enrolled before anything is published."""
    v = faces.verifier(settings)
    out: dict[str, Template] = {}
    problems = []
    people = [e for e in scenario.employees if e.photo is not None]
    for e in tqdm(people, desc="enrolling faces", unit="ASN", disable=not progress):
        assert e.photo is not None
        try:
            out[e.nip] = v.enroll([e.photo.read_bytes()])
        except EnrollmentError as exc:
            problems.append(f"{scenario.root / 'employees.csv'}: {e.nip}: {e.photo.name}: {exc}")
    if problems:
        raise ScenarioError(problems)
    return out


def publish_reference(settings: Settings, scenario: Scenario,
                      templates: dict[str, Template]) -> None:
    registry = Registry(settings.infra.registry)
    p = _producer(settings)
    codec = AvroCodec(topics.OFFICES, registry)
    for office_id, feature in scenario.office_features.items():
        p.produce(topics.OFFICES.name, key=office_id.encode(), value=codec.encode({
            "office_id": office_id, "name": feature["properties"].get("name", office_id),
            "geometry": json.dumps(feature["geometry"])}))
    codec = AvroCodec(topics.EMPLOYEES, registry)
    for e in scenario.employees:
        p.produce(topics.EMPLOYEES.name, key=e.nip.encode(), value=codec.encode({
            "nip": e.nip, "name": e.name, "office_id": e.office_id,
            "tpp_base_idr": e.tpp_base_idr}))
    codec = AvroCodec(topics.EXCUSES, registry)
    for x in scenario.excuses:
        p.produce(topics.EXCUSES.name,
                  key=f"{x.nip}|{x.date_from.isoformat()}|{x.kind.value}".encode(),
                  value=codec.encode({"nip": x.nip, "date_from": x.date_from.isoformat(),
                                      "date_to": x.date_to.isoformat(), "kind": x.kind.value}))
    codec = AvroCodec(topics.FACES, registry)
    cipher = faces.verifier(settings).cipher(faces.template_key(settings))
    for nip, template in templates.items():
        p.produce(topics.FACES.name, key=nip.encode(),
                  value=codec.encode(faces.template_record(nip, template, cipher)))
    _flush(p)


def _decided(settings: Settings, ids: list[str]) -> set[str]:
    """The event ids among ``ids`` that have a verdict in ClickHouse."""
    if not ids:
        return set()
    client = connect(settings.infra)
    rows = client.execute(
        "SELECT DISTINCT event_id FROM checkins WHERE event_id IN (SELECT event_id FROM ids)",
        external_tables=event_ids(ids))
    client.disconnect()
    return {r[0] for r in rows}


def _body(e: Event) -> bytes:
    return checkin_body(e.event_id, e.nip, e.type, e.client_time, e.lat, e.lon, e.accuracy_m,
                        e.mock_location, e.app_version,
                        e.selfie.read_bytes() if e.selfie else None, server_time=e.server_time)


def wait_for_gateway(settings: Settings, timeout: float = 120.0) -> None:
    def up() -> bool:
        try:
            return requests.get(gateway_url(settings) + "/healthz", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    if not wait_until(up, timeout, 0.5):
        raise InfraError(f"the gateway at {gateway_url(settings)} did not answer within "
                         f"{timeout:.0f} s; see {settings.infra.home_path / 'workers'}")


class DeadLetterWatch:
    """Dead letters of the raw topic's records published from now on, by event id (read from
    the original record the dead letter keeps)."""

    def __init__(self, settings: Settings) -> None:
        registry = Registry(settings.infra.registry)
        self.codec = AvroCodec(topics.DLQ, registry)
        self.raw = AvroCodec(topics.RAW, registry)
        self.consumer = topics.consumer_from_now(settings.infra, topics.DLQ, "hadir-replay",
                                                 "admin")
        self.letters: dict[str, str] = {}

    def poll(self) -> None:
        for msg in self.consumer.consume(1000, timeout=0.2):
            if msg.error():
                continue
            d = self.codec.decode(msg.value())
            if d["source_topic"] != topics.RAW.name or d["value"] is None:
                continue
            try:
                self.letters[self.raw.decode(d["value"])["event_id"]] = d["error"]
            except SerdeError:
                continue  # not a check-in the edge sent

    def close(self) -> None:
        self.consumer.close()


def _counts(settings: Settings, ids: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    client = connect(settings.infra)
    ext = event_ids(ids)
    verdicts = dict(client.execute(
        "SELECT verdict, count() FROM checkins FINAL WHERE event_id IN "
        "(SELECT event_id FROM ids) GROUP BY verdict ORDER BY verdict", external_tables=ext))
    alerts = dict(client.execute(
        "SELECT rule, count() FROM alerts FINAL WHERE event_id IN "
        "(SELECT event_id FROM ids) GROUP BY rule ORDER BY count() DESC, rule",
        external_tables=ext))
    client.disconnect()
    return verdicts, alerts


def replay(settings: Settings, folder: Path, timeout: float = 900,
           progress: bool = True, intake_workers: int = 1) -> Summary:
    started = time.monotonic()
    scenario = load(folder)
    templates = enroll_all(settings, scenario, progress)
    token = import_token(settings)
    if not token:
        raise ConfigError("hadir replay keeps the events' server_time through the gateway's "
                          "importer token: set HADIR_GATEWAY_IMPORT_TOKEN as the gateway has it")
    stack.up(settings, progress=progress)
    if settings.infra.managed:  # otherwise the workers run elsewhere too (docker/compose.yaml)
        workers.start(settings, intake_workers)
    publish_reference(settings, scenario, templates)
    wait_for_gateway(settings)
    ids = list(dict.fromkeys(e.event_id for e in scenario.events))
    done = _decided(settings, ids)
    todo = [e for e in scenario.events if e.event_id not in done]
    phones = phone_sim.register(settings, ((e.nip, e.device_id) for e in todo))
    # One day at a time, as the days happened: a check-in is judged against what came before
    # it (earlier fixes, device history, earlier selfies), never against a later day's events.
    tz = ZoneInfo(settings.attendance.timezone)
    days: dict[date, list[Event]] = {}
    for e in todo:
        days.setdefault(e.server_time.astimezone(tz).date(), []).append(e)
    watch = DeadLetterWatch(settings)
    letters: dict[str, str] = {}
    refused: list[dict[str, Any]] = []
    bar = tqdm(total=len(ids), initial=len(ids) - len({e.event_id for e in todo}),
               desc="replaying check-ins", unit="ev", disable=not progress)
    deadline = time.monotonic() + timeout
    try:
        for day, events in sorted(days.items()):
            bar.set_postfix_str(f"{day}")
            answers = phone_sim.send(settings, [(phones[(e.nip, e.device_id)], _body(e))
                                                for e in events], token)
            pending = set()
            for e, a in zip(events, answers, strict=True):
                if a.status in (200, 202):
                    pending.add(e.event_id)
                else:
                    refused.append({"event_id": e.event_id, "nip": e.nip, "status": a.status,
                                    "errors": a.body.get("errors", [])})
            bar.update(len(events) - len(pending))
            while pending:
                watch.poll()
                letters.update({e: err for e, err in watch.letters.items() if e in pending})
                finished = (_decided(settings, list(pending)) | set(letters)) & pending
                pending -= finished
                bar.update(len(finished))
                if not pending:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"{len(pending)} check-ins of {day} have no verdict after "
                        f"{timeout:.0f} s; see the worker logs in "
                        f"{settings.infra.home_path / 'workers'}")
                time.sleep(0.2)
    finally:
        bar.close()
        watch.close()
    decided, not_decided = review.publish_decisions(settings, scenario.decisions)
    verdicts, alerts = _counts(settings, ids)
    return Summary(str(folder), len(ids), len(todo) - len(refused), verdicts, alerts,
                   len(letters), round(time.monotonic() - started, 1),
                   sorted(set(letters.values()))[:10], refused, decided, not_decided)


def print_summary(s: Summary, fmt: str) -> None:
    if fmt == "json":
        emit_object(asdict(s), "json")
        return
    print(f"\nReplayed {s.folder}: {s.events} check-ins ({s.published} published this run) "
          f"in {s.seconds:.0f} s")
    emit([{"verdict": k, "check-ins": v} for k, v in s.verdicts.items()], "table",
         title="Verdicts")
    emit([{"rule": k, "alerts": v} for k, v in s.alerts.items()], "table", title="Alerts")
    print(f"Dead letters: {s.dead_letters}")
    for reason in s.dead_letter_reasons:
        print(f"  {reason}")
    if s.decisions or s.decisions_refused:
        print(f"Reviewer decisions applied: {s.decisions}")
        for why in s.decisions_refused:
            print(f"  refused: {why}")
    if s.refused:
        emit([{"event_id": r["event_id"], "nip": r["nip"], "status": r["status"],
               "why": "; ".join(e["message"] for e in r["errors"])} for r in s.refused],
             "table", title=f"Refused by the gateway: {len(s.refused)}")
