"""The face stage's throughput benchmark: real models in spawned worker processes."""

from __future__ import annotations

import dataclasses

import pytest

from hadir.bench import face_throughput


def test_face_throughput_counts_selfies_and_cpu(settings) -> None:  # type: ignore[no-untyped-def]
    result = face_throughput(settings, 1, batch=4, seconds=1.0)
    assert result["threads_each"] >= 1 and result["batch"] == 4
    assert result["selfies"] >= 4 and result["selfies_per_s"] > 0
    assert 0 < result["cpu_busy_pct"] <= 100
    assert "gpu_busy_pct" not in result  # face.device is the CPU


def test_face_throughput_reports_a_failed_worker(settings, tmp_path) -> None:  # type: ignore[no-untyped-def]
    broken = dataclasses.replace(settings, face=dataclasses.replace(
        settings.face, pack="insightface", pack_dir=str(tmp_path / "missing")))
    with pytest.raises(RuntimeError, match="face process of the benchmark failed"):
        face_throughput(broken, 1, batch=4, seconds=1.0)
