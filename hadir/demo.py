"""``hadir demo``: generate a Bangka Tengah month with injected fraud, replay it through the real
stack, then show what was caught, who cheated most, and the TPP report by office. Everything
printed is read back from ClickHouse; the scenario and the reports are left in ``--out``."""

from __future__ import annotations

import csv
import json
import secrets
import uuid
from collections import Counter, defaultdict
from dataclasses import asdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
from tqdm import tqdm

from hadir import faces, replay, reports, review, topics, users
from hadir.config import REPO_ROOT, Settings
from hadir.generate import EXPECTED_REASON, FRAUD_KINDS, generate
from hadir.infra import stack
from hadir.output import emit, emit_object, to_json
from hadir.phones import register, send
from hadir.queries import event_ids
from hadir.serde import AvroCodec, Registry
from processors.review import Decision, DecisionKind
from sinks.connection import connect

_DEMO_IDS = uuid.UUID("7d2e4c1a-5b3f-4e8d-9c2a-68616469720c")  # the demo's appeals, decisions

FACES_DIR = REPO_ROOT.parent / "shared" / "faces" / "deepface"


def last_full_month(today: date | None = None) -> date:
    first = (today or datetime.now(UTC).date()).replace(day=1)
    return (first - timedelta(days=1)).replace(day=1)


def verdicts_of(settings: Settings, ids: list[str]) -> dict[str, tuple[str, list[str]]]:
    client = connect(settings.infra)
    rows = client.execute(
        "SELECT event_id, verdict, reasons FROM checkins FINAL "
        "WHERE event_id IN (SELECT event_id FROM ids)",
        external_tables=event_ids(ids))
    client.disconnect()
    return {e: (v, list(r)) for e, v, r in rows}


def detection(folder: Path, verdicts: dict[str, tuple[str, list[str]]],
              all_ids: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Per fraud kind: injected, caught (the expected reason is on the verdict), missed; and the
    honest check-ins that were rejected (false alarms) or sent to review."""
    injected: dict[str, str] = {}
    with (folder / "injected.csv").open() as f:
        for row in csv.DictReader(f):
            injected[row["event_id"]] = row["fraud"]
    table = []
    for kind in FRAUD_KINDS:
        ids = [e for e, k in injected.items() if k == kind]
        caught = sum(EXPECTED_REASON[kind] in verdicts.get(e, ("", []))[1] for e in ids)
        table.append({"fraud": kind, "rule": EXPECTED_REASON[kind], "injected": len(ids),
                      "caught": caught, "missed": len(ids) - caught})
    honest = [e for e in all_ids if e not in injected]
    rejected = [e for e in honest if verdicts.get(e, ("", []))[0] == "REJECTED"]
    review = Counter(r for e in honest if verdicts.get(e, ("", []))[0] == "REVIEW"
                     for r in verdicts[e][1])
    false_reasons = Counter(r for e in rejected for r in verdicts[e][1])
    return table, {"honest_checkins": len(honest), "false_alarms_rejected": len(rejected),
                   "false_alarm_reasons": dict(false_reasons),
                   "honest_sent_to_review": dict(review)}


def worst_offenders(settings: Settings, month: date, limit: int = 5) -> list[dict[str, Any]]:
    client = connect(settings.infra)
    rows = client.execute(
        "SELECT nip, count() AS alerts, sum(severity = 'REJECTED') AS rejecting, "
        "groupUniqArray(rule) FROM alerts FINAL WHERE toStartOfMonth(local_date) = %(month)s "
        "GROUP BY nip ORDER BY rejecting DESC, alerts DESC, nip LIMIT %(limit)s",
        {"month": month, "limit": limit})
    names = {n: (name, office) for n, name, office in client.execute(
        "SELECT nip, name, office_id FROM employees FINAL WHERE nip IN %(nips)s",
        {"nips": tuple(r[0] for r in rows) or ("",)})}
    client.disconnect()
    out = []
    for nip, alerts, rejecting, rules in rows:
        name, office = names.get(nip, ("?", "?"))
        out.append({"nip": nip, "name": name, "office_id": office, "alerts": alerts,
                    "rejecting_alerts": rejecting, "rules": sorted(rules)})
    return out


def tpp_by_office(settings: Settings, month: date) -> list[dict[str, Any]]:
    """The dashboard view over tpp_monthly, as stored by the report."""
    client = connect(settings.infra)
    rows, cols = client.execute(
        "SELECT office_id, asn, base_idr, cut_idr, paid_idr, avg_cut_pct "
        "FROM v_tpp_by_office_month WHERE month = %(month)s ORDER BY office_id",
        {"month": month}, with_column_types=True)
    client.disconnect()
    return [dict(zip([c for c, _ in cols], r, strict=True)) for r in rows]


def review_round(settings: Settings, folder: Path,
                 verdicts: dict[str, tuple[str, list[str]]]) -> dict[str, Any]:
    """What a regency's people do with the month's findings. Every ASN whose honest check-in
    was rejected appeals from their phone (through the edge); the reviewers work the queue:
    they CLEAR those appeals and CONFIRM the injected frauds, all but one in ten (left in the
    queue, as a busy inspectorate would). The decisions are written to the scenario's
    decisions.csv too, so the folder replays with the reviewers' work."""
    events = {e["event_id"]: e for e in map(json.loads, (folder / "events.jsonl").open())}
    with (folder / "injected.csv").open() as f:
        injected = {row["event_id"] for row in csv.DictReader(f)}
    wronged = sorted(e for e, (v, _) in verdicts.items() if v == "REJECTED" and e not in injected)
    nips = {events[e]["nip"] for e in wronged}
    phones = register(settings, ((nip, f"android-appeal-{nip[-6:]}") for nip in sorted(nips)))
    by_nip = {nip: phone for (nip, _), phone in phones.items()}
    answers = send(settings, [(by_nip[events[e]["nip"]], orjson.dumps({
        "appeal_id": str(uuid.uuid5(_DEMO_IDS, f"appeal/{e}")), "event_id": e,
        "note": "Saya hadir di kantor; mohon diperiksa ulang."})) for e in wronged],
        path="/v1/appeals")
    appealed = [e for e, a in zip(wronged, answers, strict=True) if a.status in (200, 202)]
    if appealed:
        review.wait_stored(settings, "SELECT 1 FROM appeals FINAL WHERE event_id IN %(ids)s "
                                     "HAVING count() >= %(n)s",
                           {"ids": tuple(appealed), "n": len(appealed)})
    queue = {r["event_id"] for r in review.queue(settings, limit=1_000_000)}
    now = datetime.now(UTC)
    caught = sorted(e for e in injected if verdicts.get(e, ("ACCEPTED", []))[0] != "ACCEPTED")
    plan = [(e, DecisionKind.CLEAR, "Inspektorat (banding)", "Banding diterima: wajah cocok "
             "setelah diperiksa petugas.") for e in appealed if e in queue]
    plan += [(e, DecisionKind.CONFIRM, "Inspektorat", "Kecurangan terbukti.")
             for k, e in enumerate(caught) if k % 10 != 9]
    decisions = [Decision(str(uuid.uuid5(_DEMO_IDS, f"decision/{e}")), e, "", kind, by, note,
                          now) for e, kind, by, note in plan]
    published, refused = review.publish_decisions(settings, decisions)
    with (folder / "decisions.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["event_id", "decision", "reviewer", "note", "decided_at"])
        writer.writerows((d.event_id, d.decision.value, d.reviewer, d.note,
                          d.decided_at.isoformat()) for d in decisions)
    return {"appeals": len(appealed), "cleared": sum(d.decision is DecisionKind.CLEAR
                                                     for d in decisions),
            "confirmed": sum(d.decision is DecisionKind.CONFIRM for d in decisions),
            "frauds_left_in_queue": len(caught) - sum(d.decision is DecisionKind.CONFIRM
                                                      for d in decisions),
            "published": published, "refused": refused}


def seen_selfies(settings: Settings) -> list[str]:
    """The perceptual hashes of every selfie the stack has judged (the intake's replay index,
    the entries of its compacted topic)."""
    codec = AvroCodec(topics.SELFIES, Registry(settings.infra.registry))
    hashes = set()
    for msg in topics.read_to_end(settings.infra, topics.SELFIES, "hadir-demo-selfies", "admin"):
        if msg.value() is not None:
            hashes.add(codec.decode(msg.value())["entry"])
    return sorted(hashes)


def run(settings: Settings, out: Path, asn: int = 300, seed: int = 7,
        month: date | None = None, fmt: str = "table") -> int:
    people = fmt == "table"
    month = month or last_full_month()
    folder = out / "scenario"
    if people:
        print(f"Hadir demo: {asn} ASN of Kabupaten Bangka Tengah, {month:%B %Y}, seed {seed}")
    verifier = faces.verifier(settings)
    stack.up(settings, progress=people)
    earlier = seen_selfies(settings)
    bar = tqdm(desc="generating the month", unit="day", disable=not people)

    def step(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    generated = generate(folder, FACES_DIR, month, verifier, asn_count=asn, seed=seed,
                         policy=settings.attendance, progress=step, earlier_selfies=earlier)
    bar.close()
    summary = replay.replay(settings, folder, progress=people)
    if people:
        replay.print_summary(summary, "table")

    ids = [json.loads(line)["event_id"] for line in (folder / "events.jsonl").open()]
    table, honest = detection(folder, verdicts_of(settings, ids), list(dict.fromkeys(ids)))
    offenders = worst_offenders(settings, month)
    before = reports.tpp(settings, month, store=False)
    reviewed = review_round(settings, folder, verdicts_of(settings, ids))
    lines = reports.tpp(settings, month)
    offices = tpp_by_office(settings, month)

    report_dir = out / "reports"
    report_dir.mkdir(parents=True, exist_ok=True)
    with (report_dir / f"tpp-{month:%Y-%m}.csv").open("w") as f:
        emit([r.as_row() for r in lines], "csv", columns=reports.TPP_COLUMNS, out=f)
    (report_dir / f"tpp-{month:%Y-%m}.json").write_text(
        to_json([r.as_row() for r in lines]))
    days: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in lines:
        days[r.line.nip].extend(r.day_rows())
    (report_dir / f"attendance-{month:%Y-%m}.json").write_text(to_json(days))
    result = {"month": f"{month:%Y-%m}", "scenario": str(folder), "reports": str(report_dir),
              "events": generated.events, "replay": asdict(summary), "detection": table,
              "honest": honest, "review": reviewed,
              "tpp_cut_before_review_idr": sum(r.line.tpp_cut_idr for r in before),
              "tpp_cut_after_review_idr": sum(r.line.tpp_cut_idr for r in lines),
              "worst_offenders": offenders, "tpp_by_office": offices}
    (report_dir / "demo-summary.json").write_text(to_json(result))
    password = secrets.token_urlsafe(12)  # the demo's sign-in: an admin, new every run
    users.add(settings, "demo", "admin", None, password)
    result["dashboard"] = {
        "address": f"http://{settings.dashboard.host}:{settings.dashboard.port}"
                   f"/tpp?bulan={month:%Y-%m}", "username": "demo", "password": password}

    if not people:
        emit_object(result, "json")
        return 0
    emit(table, "table", title="Injected fraud: caught and missed")
    print(f"Honest check-ins: {honest['honest_checkins']}, wrongly rejected: "
          f"{honest['false_alarms_rejected']} {honest['false_alarm_reasons'] or ''}; "
          f"sent to review: {honest['honest_sent_to_review'] or 'none'}")
    emit(offenders, "table", title="Five worst offenders")
    emit(offices, "table", title=f"TPP {month:%Y-%m} by office (from ClickHouse)")
    print(f"Review: {reviewed['appeals']} appeals from wrongly rejected ASN, "
          f"{reviewed['cleared']} cleared; {reviewed['confirmed']} injected frauds confirmed, "
          f"{reviewed['frauds_left_in_queue']} left for later")
    def rupiah(n: int) -> str:
        return f"Rp {n:,}".replace(",", ".")

    print(f"TPP cut in total: {rupiah(result['tpp_cut_before_review_idr'])} before review, "
          f"{rupiah(result['tpp_cut_after_review_idr'])} after, of "
          f"{rupiah(sum(r.line.tpp_base_idr for r in lines))}")
    print(f"\nScenario: {folder}\nReports:  {report_dir} (tpp CSV/JSON, daily attendance, "
          "summary)\nMore:     hadir report tpp --month "
          f"{month:%Y-%m} | hadir alerts | hadir checkins | hadir review queue"
          f"\nDashboard: {result['dashboard']['address']} (sign in as demo, password "
          f"{result['dashboard']['password']}; a new one each run)")
    return 0
