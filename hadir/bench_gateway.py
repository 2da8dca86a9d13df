"""``hadir bench --only gateway``: the phone edge from request to Kafka acknowledgement.

Registered phones (real activation codes and P-256 keys) send signed check-ins over loopback
keep-alive connections to a gateway process on the bench stack: as fast as it answers without
selfies and with 60 KB selfies, then paced at 500 /s for the latency a phone sees. Requests are
signed before the clock starts (a phone signs its own; the bench should not pay that here), and
the count and time of each run are bounded. Reported per run: answers per second, latency
(p50/p95/p99 from when a request was due), every status seen, and the CPU per check-in of the
gateway, the broker and the load generator, from /proc: the gateway's figure is what the
national sizing counts cores with.

The bench stack runs no pipeline workers here: the runs measure the edge, and Kafka's
acknowledgement is where its work ends. Each phone's rate limit is raised for the bench (one
phone sends thousands of requests); the limiter still runs for every request.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import aiohttp
import cv2
import numpy as np

from hadir import kafka_access, topics
from hadir import phones as phone_sim
from hadir.config import Settings
from hadir.generate import SelfieCamera, identities, load_photo, make_nip
from hadir.infra.process import InfraError, end, process_cpu_s, tail, wait_until
from hadir.infra.stack import services
from hadir.measure import own_cpu_s, percentiles
from hadir.phone import Phone, checkin_body, gateway_url
from hadir.serde import AvroCodec, Registry

PHONES = 200
PORT = 28088
CONCURRENCY = 64  # connections in flight in the runs "as fast as it answers"
RUNS = (  # label, requests, rate (0: as fast as answered), selfie bytes
    ("no_selfie_max", 20_000, 0, 0),
    ("selfie_60kb_max", 4_000, 0, 60_000),
    ("no_selfie_500_per_s", 10_000, 500, 0),
)
RUN_TIMEOUT_S = 180.0


def _selfie(faces_dir: Any, size: int) -> bytes:
    """A real JPEG of about ``size`` bytes (a phone's selfie at a good quality)."""
    photo = load_photo(identities(faces_dir)[0][0], 960)
    shot = SelfieCamera(np.random.default_rng(5)).shoot(photo)
    image = cv2.imdecode(np.frombuffer(shot, np.uint8), cv2.IMREAD_COLOR)
    best = shot
    for quality in range(60, 100, 2):
        ok, data = cv2.imencode(".jpg", cv2.resize(image, (720, 720)),
                                [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok and abs(len(data) - size) < abs(len(best) - size):
            best = data.tobytes()
    return best


def _gateway(settings: Settings) -> tuple[Settings, subprocess.Popen[bytes]]:
    g = dataclasses.replace(settings.gateway, port=PORT, rate_burst=10_000_000)
    bench = dataclasses.replace(settings, gateway=g)
    log = settings.infra.home_path / "gateway-bench.log"
    env = {**os.environ, "HADIR_GATEWAY_PORT": str(PORT),
           "HADIR_GATEWAY_RATE_BURST": str(g.rate_burst)}
    proc = subprocess.Popen([sys.executable, "-m", "hadir", "gateway"], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)

    def up() -> bool:
        try:
            import requests
            return requests.get(gateway_url(bench) + "/healthz", timeout=1).status_code == 200
        except Exception:
            return proc.poll() is not None

    if not wait_until(up, 120, 0.5) or proc.poll() is not None:
        proc.kill()
        raise InfraError(f"the bench gateway did not start; see {log}:\n{tail(log)}")
    return bench, proc


def _employees(settings: Settings, nips: list[str]) -> None:
    from confluent_kafka import Producer

    codec = AvroCodec(topics.EMPLOYEES, Registry(settings.infra.registry))
    producer = Producer(kafka_access.confluent(settings.infra, "admin"))
    for i, nip in enumerate(nips):
        producer.produce(topics.EMPLOYEES.name, key=nip.encode(), value=codec.encode(
            {"nip": nip, "name": f"ASN {i}", "office_id": "BENCH", "tpp_base_idr": 4_000_000}))
    producer.flush(60)


def _requests(phones: list[Phone], count: int, selfie: bytes | None) -> list[tuple[bytes,
                                                                              dict[str, str]]]:
    out = []
    now = datetime.now(UTC)
    for k in range(count):
        phone = phones[k % len(phones)]
        body = checkin_body(str(uuid.uuid4()), phone.nip, "IN", now, -2.486, 106.41, 12.0,
                            False, "bench", selfie)
        out.append((body, phone.headers("POST", "/v1/checkins", body)))
    return out


async def _load(url: str, prepared: list[tuple[bytes, dict[str, str]]], rate: float
                ) -> tuple[list[float], dict[int, int], float]:
    """Send every request (at ``rate`` per second, or CONCURRENCY at a time as fast as they
    are answered); latencies from when each was due, statuses, and the wall time."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    connector = aiohttp.TCPConnector(limit=CONCURRENCY if not rate else 0)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=60)) as session:
        async def one(body: bytes, headers: dict[str, str], due: float) -> None:
            async with session.post(url, data=body, headers=headers) as r:
                await r.read()
                statuses[r.status] = statuses.get(r.status, 0) + 1
            latencies.append(time.perf_counter() - due)

        began = time.perf_counter()
        if rate:
            tasks = []
            for k, (body, headers) in enumerate(prepared):
                due = began + k / rate
                if due > time.perf_counter():
                    await asyncio.sleep(due - time.perf_counter())
                tasks.append(asyncio.create_task(one(body, headers, due)))
            await asyncio.wait_for(asyncio.gather(*tasks), RUN_TIMEOUT_S)
        else:
            gate = asyncio.Semaphore(CONCURRENCY)

            async def gated(body: bytes, headers: dict[str, str]) -> None:
                async with gate:
                    await one(body, headers, time.perf_counter())

            await asyncio.wait_for(asyncio.gather(*(gated(b, h) for b, h in prepared)),
                                   RUN_TIMEOUT_S)
        return latencies, statuses, time.perf_counter() - began


def bench_gateway(settings: Settings, progress: bool, faces_dir: Any) -> dict[str, Any]:
    bench, proc = _gateway(settings)
    try:
        rng = random.Random(7)
        nips = [make_nip(rng, i) for i in range(PHONES)]
        _employees(bench, nips)
        phones = list(phone_sim.register(bench, ((n, f"bench-{n}") for n in nips)).values())
        kafka = next(s.process.pid() for s in services(bench) if s.name == "kafka")
        out: dict[str, Any] = {"phones": PHONES, "concurrency": CONCURRENCY}
        for label, count, rate, selfie_bytes in RUNS:
            selfie = _selfie(faces_dir, selfie_bytes) if selfie_bytes else None
            prepared = _requests(phones, count, selfie)
            if progress:
                print(f"  gateway {label}: {count} requests ...", flush=True)
            before = {"gateway": process_cpu_s(proc.pid), "kafka": process_cpu_s(kafka or 0),
                      "load_generator": own_cpu_s()}
            latencies, statuses, wall = asyncio.run(
                _load(gateway_url(bench) + "/v1/checkins", prepared, rate))
            after = {"gateway": process_cpu_s(proc.pid), "kafka": process_cpu_s(kafka or 0),
                     "load_generator": own_cpu_s()}
            out[label] = {
                "requests": count, "target_rate": rate or "max",
                "selfie_bytes": len(selfie) if selfie else 0,
                "answers_per_s": round(count / wall, 1),
                "accepted_per_s": round(statuses.get(202, 0) / wall, 1),
                "statuses": {str(k): v for k, v in sorted(statuses.items())},
                "latency": percentiles(latencies),
                "cpu_ms_per_checkin": {
                    name: round((after[name] - before[name]) * 1000 / count, 3)
                    for name in before
                    if after[name] is not None and before[name] is not None}}
        return out
    finally:
        end(proc)
