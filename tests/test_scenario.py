"""The scenario folder's loader (hadir/scenario.py) on crafted folders: what DESIGN.md allows
loads, anything else is a problem naming its file and line, never a traceback and never a
silent change of results. And the generator's selfies: developed in parallel, the same
pictures as taken one by one."""

from __future__ import annotations

import json
from pathlib import Path
from unittest.mock import patch

import numpy as np
import pytest

from hadir.generate import Darkroom, FreshShots, SelfieCamera, load_photo
from hadir.scenario import MAX_SELFIE_BYTES, ScenarioError, load
from tests.paths import FACES

NIP = "198001012005011001"
OFFICE = {"type": "FeatureCollection", "features": [{
    "type": "Feature", "properties": {"office_id": "SETDA", "name": "Setda"},
    "geometry": {"type": "Polygon", "coordinates": [[
        [106.4096, -2.4864], [106.4104, -2.4864], [106.4104, -2.4856], [106.4096, -2.4856],
        [106.4096, -2.4864]]]}}]}


def _event(n: int = 1, **changes: object) -> dict[str, object]:
    return {"event_id": f"0b9d4f7e-8f51-4d84-9a43-93c5b3bb1c{n:02d}", "nip": NIP,
            "device_id": "hp-1", "type": "IN", "server_time": "2026-06-01T07:20:00+07:00",
            "client_time": "2026-06-01T07:20:03+07:00", "lat": -2.486, "lon": 106.41,
            "accuracy_m": 8.0, "mock_location": False, **changes}


def _folder(root: Path, events: list[dict[str, object]] | None = None,
            employees: str = f"{NIP},Budi,SETDA,3000000,\n", excuses: str | None = None,
            offices: object = OFFICE) -> Path:
    root.mkdir(exist_ok=True)
    (root / "offices.geojson").write_text(json.dumps(offices))
    (root / "employees.csv").write_text("nip,name,office_id,tpp_base_idr,photo\n" + employees)
    if excuses is not None:
        (root / "excuses.csv").write_text("nip,date_from,date_to,kind\n" + excuses)
    (root / "events.jsonl").write_text(
        "".join(json.dumps(e) + "\n" for e in (events if events is not None else [_event()])))
    return root


def _problems(root: Path) -> str:
    with pytest.raises(ScenarioError) as err:
        load(root)
    return str(err.value)


def test_a_plain_folder_loads(tmp_path: Path) -> None:
    early = _event(2, accuracy_m=None, server_time="2026-05-31T23:30:00z")  # 06:30 WIB
    scenario = load(_folder(tmp_path / "s", [_event(1), early]))
    assert [e.event_id[-2:] for e in scenario.events] == ["02", "01"]  # server time order
    assert scenario.events[0].accuracy_m is None


def test_files_saved_with_a_byte_order_mark_load(tmp_path: Path) -> None:
    """Excel's "CSV UTF-8" and Notepad start files with one; it is invisible in the header."""
    root = _folder(tmp_path / "s", excuses=f"{NIP},2026-06-02,2026-06-03,CUTI\n")
    for name in ("offices.geojson", "employees.csv", "excuses.csv", "events.jsonl"):
        path = root / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    scenario = load(root)
    assert len(scenario.employees) == 1 and len(scenario.excuses) == 1
    assert len(scenario.events) == 1


def test_no_offices_is_refused_not_a_month_of_rejections(tmp_path: Path) -> None:
    root = _folder(tmp_path / "s", offices={"type": "FeatureCollection", "features": []})
    assert "offices.geojson: no offices" in _problems(root)
    root = _folder(tmp_path / "t", employees=f"{NIP},Budi,ANYWHERE,3000000,\n")
    assert "employees.csv:2: office_id 'ANYWHERE' is not in offices.geojson" in _problems(root)


def test_an_event_id_used_twice_is_refused(tmp_path: Path) -> None:
    """The second would be taken for a re-sent copy of the first and never judged."""
    root = _folder(tmp_path / "s", [_event(1), _event(1, type="OUT")])
    assert f"events.jsonl:2: event_id {_event(1)['event_id']} is also on line 1" \
        in _problems(root)


def test_two_excuses_that_would_replace_each_other_are_refused(tmp_path: Path) -> None:
    root = _folder(tmp_path / "s", excuses=f"{NIP},2026-02-02,2026-02-13,CUTI\n"
                                           f"{NIP},2026-02-02,2026-02-03,CUTI\n")
    assert f"excuses.csv:3: CUTI for {NIP} from 2026-02-02 is also on line 2" \
        in _problems(root)


def test_photos_and_selfies_must_lie_inside_the_folder(tmp_path: Path) -> None:
    """Their bytes are published (and kept by a dead letter when they are no image)."""
    outside = tmp_path / "secret.txt"
    outside.write_text("not for Kafka")
    root = _folder(tmp_path / "s", [
        _event(1, selfie="../secret.txt"), _event(2, selfie=str(outside)),
        _event(3, selfie="link.jpg")], employees=f"{NIP},Budi,SETDA,3000000,../secret.txt\n")
    (root / "link.jpg").symlink_to(outside)
    problems = _problems(root)
    assert "employees.csv:2: photo ../secret.txt is not inside the scenario folder" in problems
    for line, name in ((1, "../secret.txt"), (2, str(outside)), (3, "link.jpg")):
        assert f"events.jsonl:{line}: selfie {name} is not inside the scenario folder" \
            in problems


def test_a_selfie_too_large_for_a_check_in_is_named(tmp_path: Path) -> None:
    root = _folder(tmp_path / "s", [_event(1, selfie="big.jpg")])
    (root / "big.jpg").write_bytes(b"\xff" * (MAX_SELFIE_BYTES + 1))
    assert "events.jsonl:1: selfie big.jpg is" in _problems(root)


def test_unusable_file_names_are_problems(tmp_path: Path) -> None:
    root = _folder(tmp_path / "s", [_event(1, selfie="a\u0000b.jpg"), _event(2, selfie="loop")])
    (root / "loop").symlink_to(root / "loop")
    problems = _problems(root)
    assert "events.jsonl:1: selfie 'a\\x00b.jpg'" in problems
    assert "events.jsonl:2: selfie 'loop'" in problems


def test_odd_numbers_and_files_are_problems_not_tracebacks(tmp_path: Path) -> None:
    huge = "1" + "0" * 400
    root = _folder(tmp_path / "s", employees=f"{NIP},Budi,SETDA,{2**63},\n")
    with (root / "events.jsonl").open("a") as f:
        f.write(json.dumps(_event(2)).replace('"lat": -2.486', f'"lat": {huge}') + "\n")
        f.write(json.dumps(_event(3)).replace('"lon": 106.41', '"lon": ' + "9" * 5000) + "\n")
        f.write("[" * 100_000 + "\n")
    problems = _problems(root)
    assert "employees.csv:2: tpp_base_idr" in problems
    assert "events.jsonl:2: lat '1000" in problems
    assert "events.jsonl:3: not usable JSON: ValueError" in problems
    assert "events.jsonl:4: not usable JSON: RecursionError" in problems
    (root / "excuses.csv").mkdir()
    assert "excuses.csv: cannot be read" in _problems(root)


def test_decisions_load_with_ids_from_their_content(tmp_path: Path) -> None:
    root = _folder(tmp_path / "s", [_event(1), _event(2)])
    header = "event_id,decision,reviewer,note,decided_at\n"
    good = f"{_event(1)['event_id']},CLEAR,Inspektorat,banding diterima,2026-06-03T09:00:00+07:00\n"
    (root / "decisions.csv").write_text(header + good)
    [decision] = load(root).decisions
    assert (decision.event_id, decision.decision.value, decision.reviewer) == (
        _event(1)["event_id"], "CLEAR", "Inspektorat")
    assert load(root).decisions[0].decision_id == decision.decision_id  # a replay is a no-op
    (root / "decisions.csv").write_text(
        header + good
        + f"{_event(2)['event_id']},MAYBE,Inspektorat,,2026-06-03T09:00:00+07:00\n"
        + "0b9d4f7e-8f51-4d84-9a43-93c5b3bb1c99,CONFIRM,x,,2026-06-03T09:00:00+07:00\n"
        + f"{_event(2)['event_id']},CONFIRM,x,,yesterday\n"
        + f"{_event(2)['event_id']},CONFIRM,x,{'n' * 501},2026-06-03T09:00:00+07:00\n")
    problems = _problems(root)
    assert "decisions.csv:3: 'MAYBE' is not a valid DecisionKind" in problems
    assert "decisions.csv:4: event 0b9d4f7e-8f51-4d84-9a43-93c5b3bb1c99 is not in events.jsonl" \
        in problems
    assert "decisions.csv:5: decided_at: 'yesterday' is not an RFC 3339 time" in problems
    assert "decisions.csv:6: note: at most 500 characters" in problems


def test_the_darkroom_takes_the_selfies_fresh_shots_takes(tmp_path: Path) -> None:
    """Byte for byte, refused shots and retakes included (a demo's figures depend on the
    pixels): small shots and a strict min_bits, so that one shot in five is refused."""
    photos = [load_photo(FACES / f"img{i}.jpg", max_side=160) for i in (1, 2, 3, 4)]

    def shots() -> FreshShots:
        return FreshShots(SelfieCamera(np.random.default_rng(4), size=96), min_bits=22)

    one_by_one = shots()
    camera = one_by_one.camera
    with patch.object(camera, "plan", wraps=camera.plan) as plan:
        want = [one_by_one.shoot(photos[i % 4]) for i in range(60)]
    assert plan.call_count >= 70  # refusals happened
    with Darkroom(shots(), ahead=3) as darkroom:
        for i in range(60):
            darkroom.shoot(photos[i % 4], tmp_path / f"{i}.jpg")
    assert [(tmp_path / f"{i}.jpg").read_bytes() for i in range(60)] == want
