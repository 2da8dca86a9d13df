"""The one configuration object: defaults, the TOML file, HADIR_* variables, clear errors."""

from __future__ import annotations

import multiprocessing
from pathlib import Path
from typing import Any

import pytest

from hadir.config import ConfigError, as_dict, load


@pytest.fixture(autouse=True)
def _no_config_file_around(tmp_path_factory: pytest.TempPathFactory,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """``load`` reads ./hadir.toml when there is one: these tests run where there is none."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))


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
    ({"HADIR_SINK_BATCH_SECONDS": "nan"}, "'nan' is not a valid finite number"),
    ({"HADIR_FRAUD_CLOCK_SKEW_MAX_S": "inf"}, "'inf' is not a valid finite number"),
    ({"HADIR_INFRA_KAFKA_PORT": "99999"}, "kafka_port must be a port in 1..65535"),
    ({"HADIR_INFRA_RAW_PARTITIONS": "0"}, "raw_partitions must be at least 1"),
    ({"HADIR_INFRA_KAFKA_HEAP": "lots"}, "kafka_heap must be a Java heap size"),
    ({"HADIR_SINK_BATCH_ROWS": "0"}, "batch_rows must be at least 1"),
    ({"HADIR_SINK_BATCH_SECONDS": "-1"}, "batch_seconds must be more than 0"),
    ({"HADIR_FRAUD_CLOCK_SKEW_MAX_S": "-1"}, "clock_skew_max_s must be 0 seconds or more"),
    ({"HADIR_FRAUD_SHARED_DEVICE_WINDOW_H": "0"}, "shared_device_window_h must be more than 0"),
    ({"HADIR_GEO_TOLERANCE_M": "5"},
     "HADIR_GEO_TOLERANCE_M is not a setting \\(did you mean HADIR_GEO_GEOFENCE_TOLERANCE_M"),
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


def test_config_files_that_cannot_be_used(tmp_path: Path) -> None:
    f = tmp_path / "hadir.toml"
    f.write_text("geo = 5\n")
    with pytest.raises(ConfigError, match=r"\[geo\] must be a table of settings"):
        load(f, env={})
    f.write_bytes(b"\xff\xfe[geo]")
    with pytest.raises(ConfigError, match="codec can't decode"):
        load(f, env={})
    with pytest.raises(ConfigError, match="Is a directory"):
        load(env={"HADIR_CONFIG": str(tmp_path)})
    assert load(env={"HADIR_CONFIG": ""}) == load(env={})  # empty: as if unset


def test_secrets_are_masked() -> None:
    s = load(env={"HADIR_SECURITY_TEMPLATE_KEY_HEX": "ab" * 32})
    assert as_dict(s)["security"]["template_key_hex"] == "***"
    with pytest.raises(ConfigError, match="64 hexadecimal characters") as bad:
        load(env={"HADIR_SECURITY_TEMPLATE_KEY_HEX": "secret" * 8})
    assert "secret" not in str(bad.value)


def test_intake_workers_share_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    from hadir.workers import worker_env

    monkeypatch.setattr("os.cpu_count", lambda: 16)
    s = load(env={})
    assert worker_env(s, "intake", 4) == {"HADIR_FACE_THREADS": "4"}
    assert worker_env(s, "intake", 32) == {"HADIR_FACE_THREADS": "1"}
    assert worker_env(s, "core", 4) == {}
    assert worker_env(load(env={"HADIR_FACE_THREADS": "2"}), "intake", 4) == {}  # set: kept


def _key_of(home: str, results: Any) -> None:
    from hadir.faces import template_key

    results.put(template_key(load(env={"HADIR_INFRA_HOME": home})))


def test_workers_starting_together_share_one_whole_template_key(tmp_path: Path) -> None:
    """The first start generates the key; workers started at once must all read that one
    key, never a half-written file (a worker then sealed nothing it could open)."""
    context = multiprocessing.get_context("fork")
    for trial in range(15):
        home = str(tmp_path / f"home-{trial}")
        results = context.Queue()
        procs = [context.Process(target=_key_of, args=(home, results)) for _ in range(4)]
        for p in procs:
            p.start()
        keys = [results.get(timeout=30) for _ in procs]
        for p in procs:
            p.join(10)
        assert all(len(k) == 32 for k in keys) and len(set(keys)) == 1
        key_file = Path(home) / "secrets" / "template.key"
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert [f.name for f in key_file.parent.iterdir()] == ["template.key"]
