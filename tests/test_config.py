"""The one configuration object: defaults, the TOML file, HADIR_* variables, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from hadir.config import ConfigError, as_dict, load


def test_defaults_match_design() -> None:
    s = load(env={})
    assert s.geo.geofence_tolerance_m == 30
    assert s.geo.low_accuracy_m == 100
    assert s.geo.travel_min_km == 1 and s.geo.travel_max_kmh == 120
    assert s.fraud.shared_device_window_h == 12
    assert s.fraud.clock_skew_max_s == 300
    assert s.attendance.timezone == "Asia/Jakarta"
    assert s.infra.bootstrap == "127.0.0.1:9092"


def test_file_then_environment(tmp_path: Path) -> None:
    f = tmp_path / "hadir.toml"
    f.write_text('[geo]\ngeofence_tolerance_m = 50\n[infra]\nkafka_port = 29092\n'
                 '[fraud]\nreview_reasons = ["SHARED_DEVICE"]\n')
    s = load(f, env={"HADIR_GEO_GEOFENCE_TOLERANCE_M": "75"})
    assert s.geo.geofence_tolerance_m == 75  # the environment wins
    assert s.infra.kafka_port == 29092
    assert s.fraud.review_reasons == ("SHARED_DEVICE",)
    s = load(f, env={"HADIR_FRAUD_REVIEW_REASONS": "SPOOF,CLOCK_SKEW"})
    assert s.fraud.review_reasons == ("SPOOF", "CLOCK_SKEW")


@pytest.mark.parametrize(("env", "message"), [
    ({"HADIR_INFRA_KAFKA_PORT": "ninety"}, "HADIR_INFRA_KAFKA_PORT: 'ninety' is not a valid int"),
    ({"HADIR_GEO_GEOFENCE_TOLERANCE_M": "-1"}, "geofence_tolerance_m"),
    ({"HADIR_FRAUD_REVIEW_REASONS": "NOPE"}, "unknown reason 'NOPE'"),
    ({"HADIR_FACE_DEVICE": "gpu"}, "face.device is 'cpu', 'cuda' or 'cuda:N'"),
    ({"HADIR_FACE_THREADS": "-2"}, "face.threads"),
])
def test_bad_values_name_the_setting(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(env=env)


def test_unknown_keys_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "hadir.toml"
    f.write_text("[geo]\ntolerance = 5\n")
    with pytest.raises(ConfigError, match=r"\[geo\] has unknown settings: tolerance"):
        load(f, env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "nope.toml", env={})


def test_secrets_are_masked() -> None:
    s = load(env={"HADIR_SECURITY_TEMPLATE_KEY_HEX": "ab" * 32})
    assert as_dict(s)["security"]["template_key_hex"] == "***"


def test_intake_workers_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from hadir.workers import worker_env

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    s = load(env={})
    assert worker_env(s, "intake", 4) == {"HADIR_FACE_THREADS": "4"}
    assert worker_env(s, "intake", 32) == {"HADIR_FACE_THREADS": "1"}
    assert worker_env(s, "core", 4) == {}
    assert worker_env(load(env={"HADIR_FACE_THREADS": "2"}), "intake", 4) == {}  # set: kept
