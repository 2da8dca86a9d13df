"""``hadir bench --only dashboard``: each page's time on the server (its ``Server-Timing``
header) for a regency of 5,000 ASN with a year of check-ins in ClickHouse, and how soon the
alert page's feed carries an alert after it was published.

The year is written straight into ClickHouse (``bench.fill_year``, as the report benchmark
does), with 40 offices; a dashboard process on the bench stack serves it to an admin and an
office head signed in over loopback. Each page is asked ``REPEAT`` times; p50, p95 and the
slowest are reported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import requests

from hadir import kafka_access, topics, users
from hadir.config import Settings
from hadir.infra.process import InfraError, end, tail, wait_until
from hadir.serde import AvroCodec, Registry
from sinks.connection import connect

PORT = 28050
REPEAT = 20
ALERTS = 10
PASSWORD = "bench-kata-sandi"


def _server_ms(response: requests.Response) -> float:
    return float(response.headers["Server-Timing"].split("dur=")[1])


def _offices(settings: Settings) -> None:
    client = connect(settings.infra, "admin")  # empties the offices table
    rows = []
    for k in range(40):
        lon, lat = 106.40 + 0.01 * (k % 8), -2.48 - 0.01 * (k // 8)
        ring = [[lon, lat], [lon + 0.004, lat], [lon + 0.004, lat + 0.004], [lon, lat + 0.004],
                [lon, lat]]
        rows.append((f"OPD{k:02d}", f"Kantor {k}", json.dumps(
            {"type": "Polygon", "coordinates": [ring]}), 0, 1))
    client.execute("TRUNCATE TABLE offices")
    client.execute("INSERT INTO offices (office_id, name, geometry, deleted, version) VALUES",
                   rows)
    client.disconnect()


def _dashboard(settings: Settings) -> subprocess.Popen[bytes]:
    log = settings.infra.home_path / "dashboard-bench.log"
    proc = subprocess.Popen([sys.executable, "-m", "hadir", "dashboard"],
                            env={**os.environ, "HADIR_DASHBOARD_PORT": str(PORT)},
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)

    def up() -> bool:
        try:
            return requests.get(f"http://127.0.0.1:{PORT}/healthz", timeout=1).ok
        except requests.RequestException:
            return proc.poll() is not None

    if not wait_until(up, 120, 0.5) or proc.poll() is not None:
        proc.kill()
        raise InfraError(f"the bench dashboard did not start; see {log}:\n{tail(log)}")
    return proc


def _session(name: str) -> requests.Session:
    s = requests.Session()
    deadline = time.monotonic() + 30
    while True:  # the account reaches the dashboard through its topic
        r = s.post(f"http://127.0.0.1:{PORT}/login", data={"username": name,
                                                           "password": PASSWORD},
                   allow_redirects=False, timeout=30)
        if r.status_code == 303 or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    if r.status_code != 303:
        raise InfraError(f"the bench dashboard refused {name}'s sign-in: {r.status_code}")
    return s


def _alert_latency(settings: Settings, session: requests.Session) -> dict[str, Any]:
    """Publish alerts one at a time and time each until the feed carries it."""
    from confluent_kafka import Producer

    seen: dict[str, float] = {}
    stream = session.get(f"http://127.0.0.1:{PORT}/peringatan/stream", stream=True,
                         timeout=60)

    def read() -> None:
        for line in stream.iter_lines():
            if line.startswith(b"data: "):
                seen.setdefault(json.loads(line[6:])["event_id"], time.monotonic())
            if len(seen) >= ALERTS:
                return

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    codec = AvroCodec(topics.ALERTS, Registry(settings.infra.registry))
    producer = Producer(kafka_access.confluent(settings.infra, "admin"))
    time.sleep(1)  # the stream's consumer has joined
    published: dict[str, float] = {}
    for _ in range(ALERTS):
        event_id = str(uuid.uuid4())
        now = datetime.now(UTC)
        producer.produce(topics.ALERTS.name, key=b"bench", value=codec.encode({
            "alert_id": str(uuid.uuid4()), "event_id": event_id, "nip": "bench",
            "device_id": "d", "office_id": "OPD00", "rule": "SHARED_DEVICE",
            "severity": "REVIEW", "server_time": now, "detected_at": now, "evidence": "{}"}))
        producer.flush(10)
        published[event_id] = time.monotonic()
        time.sleep(0.3)
    reader.join(15)
    stream.close()
    delays = [(seen[e] - t) * 1000 for e, t in published.items() if e in seen]
    return {"alerts": ALERTS, "shown": len(delays),
            "max_ms": round(max(delays), 1) if delays else None,
            "p50_ms": round(float(np.percentile(delays, 50)), 1) if delays else None}


def bench_dashboard(settings: Settings, progress: bool, asn: int = 5000) -> dict[str, Any]:
    from hadir.bench import REPORT_YEAR, fill_year

    fill_year(settings, progress, asn)
    _offices(settings)
    users.add(settings, "bench-admin", "admin", None, PASSWORD)
    users.add(settings, "bench-head", "office_head", "OPD00", PASSWORD)
    proc = _dashboard(settings)
    try:
        admin, head = _session("bench-admin"), _session("bench-head")
        day, month = date(REPORT_YEAR, 3, 5), f"{REPORT_YEAR}-03"
        nip = connect(settings.infra).execute(
            "SELECT nip FROM employees FINAL WHERE office_id = 'OPD00' LIMIT 1")[0][0]
        pages = {
            "hari-ini (all offices)": (admin, f"/hari-ini?tanggal={day}"),
            "hari-ini (one office)": (head, f"/hari-ini?tanggal={day}"),
            "asn": (head, f"/asn/{nip}?tanggal={day}"),
            "peringatan": (admin, "/peringatan"),
            "tinjauan": (admin, "/tinjauan"),
            "permohonan": (admin, "/permohonan"),
            "peta": (admin, f"/peta?tanggal={day}"),
            "tpp (all offices)": (admin, f"/tpp?bulan={month}"),
            "tpp (one office)": (head, f"/tpp?bulan={month}"),
            "tpp (one ASN)": (head, f"/tpp/{nip}?bulan={month}"),
            "disiplin (all offices)": (admin, f"/disiplin?tahun={REPORT_YEAR}"),
            "disiplin (one office)": (head, f"/disiplin?tahun={REPORT_YEAR}"),
        }
        out: dict[str, Any] = {"asn": asn, "offices": 40, "repeat": REPEAT, "pages": {}}
        for name, (session, path) in pages.items():
            if progress:
                print(f"  dashboard {name} ...", flush=True)
            times = []
            for _ in range(REPEAT):
                r = session.get(f"http://127.0.0.1:{PORT}{path}", timeout=120)
                if r.status_code != 200:
                    raise InfraError(f"{path}: HTTP {r.status_code}")
                times.append(_server_ms(r))
            out["pages"][name] = {"p50_ms": round(float(np.percentile(times, 50)), 1),
                                  "p95_ms": round(float(np.percentile(times, 95)), 1),
                                  "max_ms": round(max(times), 1)}
        out["alert_feed"] = _alert_latency(settings, admin)
        return out
    finally:
        end(proc)
