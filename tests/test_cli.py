"""The command line: bad arguments get a message and exit code, never a traceback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hadir.cli import main
from hadir.output import render_table
from tests.paths import FACES


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hadir", *args], capture_output=True,
                          text=True, timeout=120)


@pytest.mark.parametrize(("args", "message"), [
    (["report", "tpp", "--month", "2026-13"], "month must be 01..12"),
    (["report", "tpp", "--month", "March"], "is not a month like 2026-03"),
    (["report", "discipline", "--year", "26"], "is not a year like 2026"),
    (["report", "discipline", "--year", "0000"], "is not a year like 2026"),
    (["report", "tpp", "--month", "0000-01"], "is not a month like 2026-03"),
    (["run", "--intake", "0"], "must be at least 1"),
    (["face", "compare", "nope.jpg", "also-nope.jpg"], "nope.jpg: no such file"),
    (["demo", "--asn", "many"], "is not a whole number"),
    (["infra", "sideways"], "invalid choice"),
    (["bench", "--only", "pipeline,speed"], "unknown benchmark 'speed'; choose from geo, face"),
    (["bench", "--core", "0"], "must be at least 1"),
    (["bench", "--only", ""], "unknown benchmark ''"),
])
def test_bad_arguments(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_config_is_a_message() -> None:
    result = subprocess.run([sys.executable, "-m", "hadir", "config"], capture_output=True,
                            text=True, timeout=60,
                            env={"HADIR_GEO_LOW_ACCURACY_M": "lots", "PATH": "/usr/bin"})
    assert result.returncode == 1
    assert ("hadir: error: HADIR_GEO_LOW_ACCURACY_M: 'lots' is not a valid finite number"
            in result.stderr)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args", [["checkins"], ["report", "discipline", "--year", "2026"],
                                  ["alerts", "--follow", "--format", "json"]])
def test_a_stack_that_is_not_running_is_a_message(args: list[str], tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = str(s.getsockname()[1])
    env = {"PATH": "/usr/bin", "HADIR_INFRA_HOME": str(tmp_path),
           "HADIR_INFRA_CLICKHOUSE_PORT": closed, "HADIR_INFRA_REGISTRY_PORT": closed,
           "HADIR_INFRA_KAFKA_PORT": closed}
    result = subprocess.run([sys.executable, "-m", "hadir", *args], capture_output=True,
                            text=True, timeout=60, env=env)
    assert result.returncode == 1
    assert "hadir: error:" in result.stderr and "is the stack running?" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("flag", "count", "partitions"), [
    ("--core", "7", "6"), ("--intake", "7", "6"), ("--sinks", "4", "3")])
def test_more_workers_than_partitions_is_a_message(flag: str, count: str,
                                                   partitions: str) -> None:
    """Refused before anything starts (a stack started first would be left running)."""
    result = run("run", flag, count, "--detach")
    assert result.returncode == 1
    assert f"hadir: error: {flag} {count}: its input has {partitions} partitions" \
        in result.stderr
    assert "Traceback" not in result.stderr and "starting" not in result.stdout.lower()


def test_replay_of_a_bad_folder_lists_every_problem(tmp_path: Path) -> None:
    (tmp_path / "offices.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    (tmp_path / "employees.csv").write_text(
        "nip,name,office_id,tpp_base_idr,photo\n12345,Budi,SETDA,abc,\n")
    (tmp_path / "excuses.csv").write_text("nip,date_from,date_to,kind\n12345,2026-06-01\n")
    no_device = json.dumps({"event_id": "0b9d4f7e-8f51-4d84-9a43-93c5b3bb1c0e",
                            "nip": "198001012005011001", "device_id": None, "type": "IN",
                            "server_time": "2026-06-01T07:00:00+07:00", "client_time": None,
                            "lat": -2.4, "lon": 106.4, "accuracy_m": 5.0,
                            "mock_location": False})
    (tmp_path / "events.jsonl").write_bytes(
        b'{"event_id": "x"}\nnot json\n' + no_device.encode() + b"\n\xff\xfe\n")
    result = run("replay", str(tmp_path))
    assert result.returncode == 1
    assert f"{tmp_path}/employees.csv:2: NIP '12345' is not 18 digits" in result.stderr
    assert f"{tmp_path}/offices.geojson: no offices" in result.stderr
    assert f"{tmp_path}/excuses.csv:2: a row must have 4 fields" in result.stderr
    assert f"{tmp_path}/events.jsonl:1: missing nip" in result.stderr
    assert f"{tmp_path}/events.jsonl:2: not valid JSON" in result.stderr
    assert f"{tmp_path}/events.jsonl:3: device_id None is not a non-empty string" \
        in result.stderr
    assert f"{tmp_path}/events.jsonl:4: not UTF-8 text" in result.stderr
    assert "Traceback" not in result.stderr


def test_face_compare_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["face", "compare", str(FACES / "img1.jpg"), str(FACES / "img2.jpg"),
                 "--format", "json"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["match"] is True and same["faces_a"] == 1 and same["faces_b"] == 1
    assert main(["face", "compare", str(FACES / "img1.jpg"), str(FACES / "img3.jpg"),
                 "--format", "json"]) == 0
    other = json.loads(capsys.readouterr().out)
    assert other["match"] is False and other["similarity"] < same["similarity"]


def test_face_compare_of_a_non_image_is_a_message(tmp_path: Path) -> None:
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    result = run("face", "compare", str(bad), str(FACES / "img1.jpg"))
    assert result.returncode == 1
    assert "hadir: error:" in result.stderr and "Traceback" not in result.stderr


def test_enrolling_a_photo_that_cannot_make_a_template_is_a_message() -> None:
    """Refused before anything is started or published."""
    result = run("face", "enroll", "198001012005011001", str(FACES / "couple.jpg"))
    assert result.returncode == 1
    assert "hadir: error: photo 0:" in result.stderr and "faces" in result.stderr
    assert "Traceback" not in result.stderr


def test_tables_for_people_align_numbers_and_wrap_only_free_text() -> None:
    nip = "198501012010011001"
    text = render_table(
        ["nip", "cut_pct", "description"],
        [[nip, "7", "Performance allowance cut by 25% for 12 months"], [nip, "12.5", ""]],
        title="Discipline", width=50)
    title, header, rule, first, wrapped, *_, last = text.splitlines()
    assert title == "Discipline"
    assert header.split() == ["nip", "cut_pct", "description"]
    assert first.startswith(f"{nip}        7  Performance")  # numbers right-aligned
    assert len(rule) <= 50 and all(len(line) <= 50 for line in text.splitlines())
    assert wrapped.strip() and not wrapped.startswith(nip[:4])  # the text wraps, the id not
    assert last == f"{nip}     12.5"  # no trailing spaces
    assert render_table(["a"], [], "Empty") == "Empty\na\n-\n"
    short = render_table(["id", "name"], [["1", "Siti Aminah"]], width=5)
    assert short.splitlines()[-1] == " 1  Siti Aminah"  # narrower than the fold width: unchanged


@pytest.mark.infra
def test_detached_workers_are_supervised_until_stopped(stack) -> None:  # type: ignore[no-untyped-def]
    """`hadir run --detach` is the supervisor in the background: a worker that dies is
    started again, and `hadir run --stop` ends the supervisor and every worker."""
    from hadir import workers

    workers.stop(stack)
    result = run("run", "--detach", "--format", "json")
    assert result.returncode == 0, result.stderr
    started = {w["name"] for w in json.loads(result.stdout)}
    assert started == {"supervisor", "intake-0", "core-0", "sink-0", "gateway-0",
                       "dashboard-0"}
    try:
        again = run("run")  # a second supervisor would start a dead worker twice
        assert again.returncode == 1 and "already supervises the workers" in again.stderr
        other = run("run", "--detach", "--intake", "2")
        assert other.returncode == 1 and "supervises other workers" in other.stderr
        core = next(p for p in workers.running(stack) if p.name == "core-0")
        before = core.pid()
        core.kill()
        deadline = time.monotonic() + 30
        while core.pid() in (None, before):
            assert time.monotonic() < deadline, "the killed worker was not started again"
            time.sleep(0.5)
    finally:
        result = run("run", "--stop", "--format", "json")
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)["stopped"]) == {"intake-0", "core-0", "sink-0",
                                                         "gateway-0", "dashboard-0"}
    assert workers.running(stack) == [] and workers.supervisor(stack).pid() is None
