"""hadir replay end to end: a small generated scenario through the real stack. Every injected
fraud is caught, no honest check-in is rejected, and a second run changes nothing."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from hadir import faces, replay, reports
from hadir.demo import detection, verdicts_of
from hadir.generate import generate
from hadir.scenario import ScenarioError
from sinks.connection import connect
from tests.paths import FACES

pytestmark = pytest.mark.infra

MONTH = date(2026, 2, 1)  # Ramadan starts on the 19th: both schedules are exercised


@pytest.fixture(scope="module")
def scenario(stack, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    folder = tmp_path_factory.mktemp("scenario")
    generate(folder, FACES, MONTH, faces.verifier(stack), asn_count=8, seed=3,
             policy=stack.attendance)
    return folder


def test_replay_catches_every_injected_fraud(stack, scenario: Path) -> None:  # type: ignore[no-untyped-def]
    summary = replay.replay(stack, scenario, timeout=600, progress=False)
    ids = list(dict.fromkeys(json.loads(line)["event_id"]
                             for line in (scenario / "events.jsonl").open()))
    assert summary.events == len(ids)
    assert sum(summary.verdicts.values()) == len(ids)
    assert summary.dead_letters == 0
    table, honest = detection(scenario, verdicts_of(stack, ids), ids)
    for row in table:
        assert row["missed"] == 0, row
    assert sum(row["injected"] for row in table) > 0
    assert {row["fraud"] for row in table if row["injected"]} == {
        "FAKE_GPS_HOME", "MOCK_LOCATION", "IMPOSSIBLE_TRAVEL", "SHARED_DEVICE",
        "FACE_MISMATCH", "SELFIE_REPLAY", "CLOCK_SKEW"}
    assert honest["false_alarms_rejected"] == 0, honest


def test_replay_twice_gives_the_same_reports(stack, scenario: Path) -> None:  # type: ignore[no-untyped-def]
    lines = (scenario / "employees.csv").read_text().splitlines()[1:]
    nips = [line.split(",")[0] for line in lines]
    before = {r.line.nip: r.line for r in reports.tpp(stack, MONTH) if r.line.nip in nips}
    summary = replay.replay(stack, scenario, timeout=600, progress=False)
    assert summary.published == 0  # every event already has its verdict
    after = {r.line.nip: r.line for r in reports.tpp(stack, MONTH) if r.line.nip in nips}
    assert before == after and len(before) == len(nips)


def test_another_month_on_the_same_stack_takes_fresh_selfies(stack, scenario: Path,  # type: ignore[no-untyped-def]
                                                             tmp_path: Path) -> None:
    """The demo of a later month on a stack that judged an earlier one: its honest selfies are
    new pictures, not the earlier month's shots again (which the replay check would reject)."""
    from hadir.demo import seen_selfies
    from processors.images import decode_image

    replay.replay(stack, scenario, timeout=600, progress=False)  # a no-op if already judged
    seen = seen_selfies(stack)
    first_month = {decode_image(p.read_bytes()).phash for p in scenario.glob("selfies/*")}
    assert first_month and first_month <= set(seen)
    folder = tmp_path / "march"
    generate(folder, FACES, date(2026, 3, 1), faces.verifier(stack), asn_count=8, seed=3,
             policy=stack.attendance, earlier_selfies=seen)
    replay.replay(stack, folder, timeout=600, progress=False)
    ids = list(dict.fromkeys(json.loads(line)["event_id"]
                             for line in (folder / "events.jsonl").open()))
    table, honest = detection(folder, verdicts_of(stack, ids), ids)
    for row in table:
        assert row["missed"] == 0, row
    assert honest["false_alarms_rejected"] == 0, honest


def test_a_bad_scenario_loads_nothing(stack, scenario: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("offices.geojson", "excuses.csv", "events.jsonl"):
        (bad / name).write_bytes((scenario / name).read_bytes())
    rows = (scenario / "employees.csv").read_text().splitlines()
    rows.append("199901012020012999,Tanpa Kantor,NO-SUCH-OFFICE,1000000,")
    (bad / "employees.csv").write_text("\n".join(rows) + "\n")
    with pytest.raises(ScenarioError, match=r"employees.csv:\d+: office_id 'NO-SUCH-OFFICE'"):
        replay.replay(stack, bad, progress=False)
    client = connect(stack.infra)
    assert client.execute("SELECT count() FROM employees WHERE nip = '199901012020012999'") \
        == [(0,)]
    client.disconnect()


def test_check_ins_the_edge_refuses_are_listed_not_judged(stack, scenario: Path,  # type: ignore[no-untyped-def]
                                                          tmp_path: Path) -> None:
    """A NIP without an employee record gets no activation code, so its phone has no key:
    the gateway answers 401 and the replay lists the check-in instead of judging it."""
    import shutil

    folder = tmp_path / "stranger"
    shutil.copytree(scenario, folder)
    line = json.loads((folder / "events.jsonl").read_text().splitlines()[0])
    stranger = {**line, "event_id": "6f1d0c2e-3b7a-4e55-9d1c-2f4a8b9e0a11",
                "nip": "199912312025011999", "device_id": "stranger-phone"}
    with (folder / "events.jsonl").open("a") as f:
        f.write(json.dumps(stranger) + "\n")
    summary = replay.replay(stack, folder, timeout=600, progress=False)
    assert summary.published == 0
    assert [(r["event_id"], r["nip"], r["status"]) for r in summary.refused] == [
        (stranger["event_id"], stranger["nip"], 401)]
    client = connect(stack.infra)
    assert client.execute("SELECT count() FROM checkins WHERE event_id = %(e)s",
                          {"e": stranger["event_id"]}) == [(0,)]
    client.disconnect()
