"""Hadir's one configuration object.

Every setting has a default (those of ../shared/DESIGN.md) and can be changed in two places, the
later winning:

1. a TOML file named by ``HADIR_CONFIG`` (or ``hadir.toml`` in the working directory), with one
   table per section::

       [geo]
       geofence_tolerance_m = 50

2. environment variables ``HADIR_<SECTION>_<FIELD>``, e.g. ``HADIR_GEO_GEOFENCE_TOLERANCE_M=50``
   or ``HADIR_INFRA_KAFKA_PORT=19092``. Tuples are comma-separated in the environment.

Sections and their fields are the dataclasses below (infra, sink, security, gateway, dashboard)
and the policies of the processors (geo, face, fraud, attendance, privacy), each documented
where its rule lives.
``hadir config`` prints the effective values.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from processors.attendance import AttendancePolicy
from processors.face_policy import FacePolicy
from processors.fraud import FraudPolicy
from processors.geo import GeoPolicy
from processors.retention import PrivacyPolicy

REPO_ROOT = Path(__file__).resolve().parent.parent


class ConfigError(ValueError):
    """A setting has a value that cannot be used; the message names it."""


@dataclass(frozen=True)
class InfraSettings:
    """Where the services are. ``hadir infra up`` starts them locally with these values."""

    home: str = str(REPO_ROOT / ".hadir")  # state folder: data, logs, pids, built jars, models
    managed: bool = True  # False: the services run elsewhere (docker/); `infra up` only provisions
    kafka_host: str = "127.0.0.1"
    kafka_port: int = 9092
    kafka_controller_port: int = 9093
    kafka_heap: str = "768m"
    registry_port: int = 8081
    registry_heap: str = "384m"
    clickhouse_host: str = "127.0.0.1"
    clickhouse_port: int = 9000  # native protocol (clickhouse-driver)
    clickhouse_http_port: int = 8123
    clickhouse_database: str = "hadir"
    # ClickHouse users, one per role (hadir/secrets.py: clickhouse_login). A password left empty
    # is generated on a managed stack and kept in <home>/secrets; elsewhere it must be set.
    clickhouse_user: str = "default"  # admin: migrations, retention, erasure, benchmarks
    clickhouse_password: str = ""
    writer_user: str = "hadir_writer"  # the sink, reports, reviews: no DDL, Hadir's database
    writer_password: str = ""
    dashboard_user: str = "hadir_dashboard"  # read-only with query limits: dashboards, gateway
    dashboard_password: str = ""
    # Kafka's SASL login where the stack is not managed here (docker/): the one principal this
    # process runs as (hadir/kafka_access.py). A managed stack generates every principal's.
    kafka_user: str = ""
    kafka_password: str = ""
    raw_partitions: int = 6  # hadir.checkins.raw: the most face workers that can share the load
    partitions: int = 3  # every other topic
    # Addresses of services run elsewhere (with managed = false, as in docker/compose.yaml).
    kafka_bootstrap: str = ""
    registry_url: str = ""
    models_dir: str = ""  # converted face models; empty: <home>/models

    def __post_init__(self) -> None:
        for name in ("kafka_port", "kafka_controller_port", "registry_port", "clickhouse_port",
                     "clickhouse_http_port"):
            _require(1 <= getattr(self, name) <= 65535, name, "a port in 1..65535",
                     getattr(self, name))
        for name in ("raw_partitions", "partitions"):
            _require(getattr(self, name) >= 1, name, "at least 1", getattr(self, name))
        for name in ("kafka_heap", "registry_heap"):
            _require(re.fullmatch(r"\d+[kmgKMG]?", getattr(self, name)) is not None, name,
                     "a Java heap size like 768m", getattr(self, name))

    @property
    def bootstrap(self) -> str:
        return self.kafka_bootstrap or f"{self.kafka_host}:{self.kafka_port}"

    @property
    def registry(self) -> str:
        return self.registry_url or f"http://127.0.0.1:{self.registry_port}/apis/ccompat/v7"

    @property
    def home_path(self) -> Path:
        return Path(self.home)

    @property
    def models_path(self) -> Path:
        return Path(self.models_dir) if self.models_dir else self.home_path / "models"


@dataclass(frozen=True)
class SinkSettings:
    """The ClickHouse sink: a batch is flushed at this many rows or after this long."""

    batch_rows: int = 50000  # fewer, larger inserts: 50,000 measured 22 % faster than 20,000
    batch_seconds: float = 0.5
    retry_max_seconds: float = 30.0

    def __post_init__(self) -> None:
        _require(self.batch_rows >= 1, "batch_rows", "at least 1", self.batch_rows)
        for name in ("batch_seconds", "retry_max_seconds"):
            _require(getattr(self, name) > 0, name, "more than 0", getattr(self, name))


@dataclass(frozen=True)
class SecuritySettings:
    """Face templates are sealed with AES-256-GCM under this key (64 hex characters).
    Empty: a key is generated once and kept in the state folder (mode 0600)."""

    template_key_hex: str = ""
    # Older keys (comma-separated, 64 hex characters each) that still open templates sealed
    # before a rotation, until `hadir face rekey` has sealed them all again with the key above.
    template_old_keys_hex: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.template_key_hex:  # the value itself is never shown: it is a secret
            _require(re.fullmatch(r"[0-9a-fA-F]{64}", self.template_key_hex) is not None,
                     "template_key_hex", "64 hexadecimal characters (a 256-bit key)", "***")
        for old in self.template_old_keys_hex:
            _require(re.fullmatch(r"[0-9a-fA-F]{64}", old) is not None,
                     "template_old_keys_hex", "64 hexadecimal characters each", "***")
        _require(not self.template_old_keys_hex or bool(self.template_key_hex),
                 "template_old_keys_hex", "set with template_key_hex (the current key)", "***")


@dataclass(frozen=True)
class GatewaySettings:
    """The phone edge (``hadir gateway``, DESIGN.md "The phone edge")."""

    host: str = "127.0.0.1"
    port: int = 8088
    tls_cert: str = ""  # PEM files; both set: HTTPS
    tls_key: str = ""
    max_body_bytes: int = 2_000_000  # larger requests are 413
    kafka_timeout_s: float = 5.0  # no acknowledgement by then: 503, the phone keeps it queued
    retry_after_s: int = 30  # what a 503 tells the phone to wait
    rate_per_minute: float = 6.0  # a device's sustained requests, with a burst of
    rate_burst: int = 30  # (an offline phone uploads its queue at once)
    activation_ttl_h: float = 72.0  # how long an activation code stays usable
    # Keeps the body's server_time (historical replay) for a signed request that also carries
    # X-Hadir-Import-Token with this value. Empty: off, except on a locally managed stack,
    # where `hadir run` makes one in <home>/secrets/import-token for `hadir replay`.
    import_token: str = ""

    def __post_init__(self) -> None:
        _require(1 <= self.port <= 65535, "port", "a port in 1..65535", self.port)
        _require(bool(self.tls_cert) == bool(self.tls_key), "tls_cert",
                 "set together with tls_key", self.tls_cert)
        _require(1024 <= self.max_body_bytes <= 16_000_000, "max_body_bytes",
                 "1024..16000000", self.max_body_bytes)
        for name in ("kafka_timeout_s", "rate_per_minute", "activation_ttl_h"):
            _require(0 < getattr(self, name) < math.inf, name, "more than 0",
                     getattr(self, name))
        _require(self.rate_burst >= 1, "rate_burst", "at least 1", self.rate_burst)
        _require(self.retry_after_s >= 1, "retry_after_s", "at least 1", self.retry_after_s)
        _require(not self.import_token or len(self.import_token) >= 32, "import_token",
                 "at least 32 characters", "***")


@dataclass(frozen=True)
class DashboardSettings:
    """The web dashboard (``hadir dashboard``, DESIGN.md "The web dashboard")."""

    host: str = "127.0.0.1"
    port: int = 8050
    tls_cert: str = ""  # PEM files; both set: HTTPS (and cookies marked Secure)
    tls_key: str = ""
    session_minutes: float = 480.0  # a sign-in lasts a working day
    # Signs session cookies and CSRF tokens. Empty: made once in <home>/secrets/dashboard.key
    # on a locally managed stack; a stack run elsewhere (docker/) must set it.
    secret_hex: str = ""

    def __post_init__(self) -> None:
        _require(1 <= self.port <= 65535, "port", "a port in 1..65535", self.port)
        _require(bool(self.tls_cert) == bool(self.tls_key), "tls_cert",
                 "set together with tls_key", self.tls_cert)
        _require(0 < self.session_minutes <= 7 * 24 * 60, "session_minutes",
                 "more than 0 and at most a week", self.session_minutes)
        if self.secret_hex:
            _require(re.fullmatch(r"[0-9a-fA-F]{64,}", self.secret_hex) is not None,
                     "secret_hex", "64 or more hexadecimal characters", "***")


def _require(ok: bool, name: str, what: str, value: Any) -> None:
    if not ok:
        raise ValueError(f"{name} must be {what}, got {value!r}")


@dataclass(frozen=True)
class Settings:
    infra: InfraSettings = field(default_factory=InfraSettings)
    sink: SinkSettings = field(default_factory=SinkSettings)
    security: SecuritySettings = field(default_factory=SecuritySettings)
    gateway: GatewaySettings = field(default_factory=GatewaySettings)
    dashboard: DashboardSettings = field(default_factory=DashboardSettings)
    geo: GeoPolicy = field(default_factory=GeoPolicy)
    face: FacePolicy = field(default_factory=FacePolicy)
    fraud: FraudPolicy = field(default_factory=FraudPolicy)
    attendance: AttendancePolicy = field(default_factory=AttendancePolicy)
    privacy: PrivacyPolicy = field(default_factory=PrivacyPolicy)


def _convert(name: str, raw: Any, hint: Any) -> Any:
    """Turn a TOML or environment value into the field's declared type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if raw is None or (isinstance(raw, str) and raw.strip().lower() in ("", "none", "null")):
            return None
        return _convert(name, raw, next(a for a in args if a is not type(None)))
    if origin is tuple:
        items = raw if isinstance(raw, list | tuple) else [s for s in str(raw).split(",") if s]
        return tuple(_convert(name, item.strip() if isinstance(item, str) else item, args[0])
                     for item in items)
    try:
        if hint is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return text in ("1", "true", "yes", "on")
        if hint is float:
            number = float(raw)
            if not math.isfinite(number):
                raise ValueError(raw)
            return number
        if hint in (int, str):
            return hint(raw)
    except (TypeError, ValueError):
        what = "finite number" if hint is float else hint.__name__
        raise ConfigError(f"{name}: {raw!r} is not a valid {what}") from None
    raise ConfigError(f"{name}: unsupported setting type {hint!r}")


def _section(cls: type, name: str, table: dict[str, Any], env: dict[str, str]) -> Any:
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    if not isinstance(table, dict):
        raise ConfigError(f"[{name}] must be a table of settings, got {table!r}")
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"[{name}] has unknown settings: {', '.join(sorted(unknown))}")
    prefix = f"HADIR_{name}_".upper()
    for env_name in sorted(k for k in env if k.startswith(prefix)):
        if env_name[len(prefix):].lower() not in known:
            close = difflib.get_close_matches(env_name[len(prefix):].lower(), known, 1)
            hint = f" (did you mean {prefix}{close[0].upper()}?)" if close else ""
            raise ConfigError(f"{env_name} is not a setting{hint}; `hadir config` lists them")
    for f in dataclasses.fields(cls):
        env_name = f"HADIR_{name}_{f.name}".upper()
        if env_name in env:
            values[f.name] = _convert(env_name, env[env_name], hints[f.name])
        elif f.name in table:
            values[f.name] = _convert(f"[{name}] {f.name}", table[f.name], hints[f.name])
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[{name}]: {exc}") from None


def load(path: str | Path | None = None, env: dict[str, str] | None = None) -> Settings:
    """Read the settings: defaults, then the TOML file, then ``HADIR_*`` variables."""
    env = dict(os.environ if env is None else env)
    file = Path(path or env.get("HADIR_CONFIG") or "hadir.toml")
    data: dict[str, Any] = {}
    if file.exists():
        try:
            data = tomllib.loads(file.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as exc:
            raise ConfigError(f"config file {file}: {exc}") from None
    elif path is not None or env.get("HADIR_CONFIG"):
        raise ConfigError(f"config file {file} does not exist")
    sections = {f.name: f.type for f in dataclasses.fields(Settings)}
    unknown = set(data) - set(sections)
    if unknown:
        raise ConfigError(f"{file}: unknown sections: {', '.join(sorted(unknown))}")
    hints = typing.get_type_hints(Settings)
    return Settings(**{
        name: _section(hints[name], name, data.get(name, {}), env) for name in sections
    })


def as_dict(settings: Settings) -> dict[str, Any]:
    """The effective settings, secrets masked, for ``hadir config``."""
    out = dataclasses.asdict(settings)
    for section, key in (("security", "template_key_hex"), ("infra", "clickhouse_password"),
                         ("infra", "writer_password"), ("infra", "dashboard_password"),
                         ("infra", "kafka_password"),
                         ("gateway", "import_token"),
                         ("dashboard", "secret_hex")):
        if out[section][key]:
            out[section][key] = "***"
    out["security"]["template_old_keys_hex"] = ["***"] * len(
        out["security"]["template_old_keys_hex"])
    return out
