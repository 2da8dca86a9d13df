"""The face stage's throughput benchmark: real models in spawned worker processes."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from hadir import kafka_access
from hadir.bench import JIT_THREADS, CpuMeter, face_throughput, faust_floor, print_results
from hadir.infra.process import threads_cpu_s


def test_face_throughput_counts_selfies_and_cpu(settings) -> None:  # type: ignore[no-untyped-def]
    result = face_throughput(settings, 1, batch=4, seconds=1.0)
    assert result["threads_each"] >= 1 and result["batch"] == 4
    assert result["selfies"] >= 4 and result["selfies_per_s"] > 0
    assert 0 < result["cpu_busy_pct"] <= 100
    assert "gpu_busy_pct" not in result  # face.device is the CPU


def test_face_throughput_verifies_the_selfies_it_is_given(settings) -> None:  # type: ignore[no-untyped-def]
    import numpy as np

    from hadir.bench import FACES_DIR
    from hadir.generate import SelfieCamera, load_photo

    photo = load_photo(sorted(FACES_DIR.glob("*.jpg"))[0])
    shots = [SelfieCamera(np.random.default_rng(1)).shoot(photo) for _ in range(2)]
    result = face_throughput(settings, 1, batch=4, seconds=1.0, selfies=shots)
    assert result["selfies"] >= 4 and result["selfies_per_s"] > 0
    # not the default photos: bytes that are no image stop the worker
    with pytest.raises(RuntimeError, match="face process of the benchmark failed"):
        face_throughput(settings, 1, batch=4, seconds=1.0, selfies=[b"not an image"])


def test_face_throughput_reports_a_failed_worker(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    broken = dataclasses.replace(settings, face=dataclasses.replace(
        settings.face, pack="insightface", pack_dir=str(tmp_path / "missing")))
    with pytest.raises(RuntimeError, match="face process of the benchmark failed"):
        face_throughput(broken, 1, batch=4, seconds=1.0)


BURNER = """
import sys, time
print("ready", flush=True)
sys.stdin.readline()
t = time.process_time()
while time.process_time() - t < 0.3:
    pass
print("done", flush=True)
sys.stdin.readline()
"""


def test_cpu_meter_gives_each_process_cpu_per_item() -> None:
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    burner = subprocess.Popen([sys.executable, "-c", BURNER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert burner.stdout is not None and burner.stdin is not None
        assert burner.stdout.readline() == "ready\n"
        meter = CpuMeter({"burner": burner.pid, "gone": gone.pid})
        burner.stdin.write("go\n")
        burner.stdin.flush()
        assert burner.stdout.readline() == "done\n"
        out = meter.per_item(10)
    finally:
        burner.kill()
        burner.wait()
    assert 25 <= out["burner"] <= 40  # 0.3 s of CPU over 10 items: 30 ms each
    assert "gone" not in out
    assert out["total"] == pytest.approx(out["burner"] + out["bench"], abs=0.002)


NAMED_BURNER = """
import ctypes, sys, threading, time
def burn():
    ctypes.CDLL(None).prctl(15, b"C2 CompilerThre")  # PR_SET_NAME: as HotSpot names its JIT
    t = time.thread_time()
    while time.thread_time() - t < 0.3:
        pass
    print("done", flush=True)
    time.sleep(60)  # a thread's CPU time is in /proc while it lives, as a JIT thread does
print("ready", flush=True)
sys.stdin.readline()
threading.Thread(target=burn, daemon=True).start()
sys.stdin.readline()
"""


def test_cpu_meter_follows_a_jvms_jit_threads_alone() -> None:
    burner = subprocess.Popen([sys.executable, "-c", NAMED_BURNER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert burner.stdout is not None and burner.stdin is not None
        assert burner.stdout.readline() == "ready\n"
        meter = CpuMeter({"jvm": burner.pid}, jvm=burner.pid)
        burner.stdin.write("go\n")
        burner.stdin.flush()
        assert burner.stdout.readline() == "done\n"
        jit_s = threads_cpu_s(burner.pid, JIT_THREADS)
        other_s = threads_cpu_s(burner.pid, "no such thread")
        share = meter.jit_core_share()
    finally:
        burner.kill()
        burner.wait()
    assert 0.25 <= jit_s <= 0.45  # the named thread's 0.3 s, not the main thread's start-up
    assert other_s == 0
    assert share is not None and 0 < share <= 1
    assert CpuMeter({}).jit_core_share() is None


def test_results_print_every_number_for_a_person_and_all_of_them_as_json(capsys) -> None:  # type: ignore[no-untyped-def]
    results = {"machine": {"cpu": "Test CPU", "cores": 2, "python_loop_ms": 90.0},
               "when": "2026-11-30T00:00:00+00:00", "written_to": "out/bench.json",
               "pipeline": {"asn": 5000, "at_1000": {"latency": {"p99_ms": 695.3}},
                            "jit": [0.25, 0.02]}}
    print_results(results, "table")
    table = capsys.readouterr().out
    assert "Test CPU (2 cores, python_loop_ms 90.0)" in table
    lines = {" ".join(line.split()) for line in table.splitlines()}
    assert {"pipeline asn 5000", "pipeline at_1000.latency.p99_ms 695.3",
            "pipeline jit 0.25,0.02"} <= lines
    print_results(results, "json")
    assert json.loads(capsys.readouterr().out) == results


@pytest.mark.infra
def test_faust_floor_takes_every_check_in_then_removes_its_topic(stack) -> None:  # type: ignore[no-untyped-def]
    from confluent_kafka.admin import AdminClient

    result = faust_floor(stack, progress=False, events=3000)

    assert result["events"] == 3000
    assert result["events_per_s"] > 0
    assert result["agent_cpu_ms_per_checkin"] > 0
    assert result["broker_cpu_ms_per_checkin"] is not None
    left = AdminClient(kafka_access.confluent(stack.infra, "admin")).list_topics(timeout=10)
    assert not [t for t in left.topics if t.startswith("hadir.bench.raw.")]
