"""``hadir bench``: every benchmark, one JSON file. docs/benchmarks.md's figures come from here.

- geo: check-ins per second per core through GPS sanity, geofence and impossible travel.
- face: ms per selfie for each step (median, p95), selfies per second batched, and the face
  stage's throughput in 1, 2, 4 ... processes on ``face.device`` (CPU or GPU).
- pipeline: a regency's morning peak (every ASN checking in within 30 minutes, compressed in
  time) published at a chosen rate through Kafka and the workers: events per second and
  publish-to-verdict latency (p50, p95, p99), without selfies and with them, and the CPU
  each process spent per check-in; measured after a warm-up that ends once the broker's JIT
  compiler is quiet (:func:`warm_up`). Then the faust floor: the CPU a faust agent spends per
  check-in taking the raw topic and doing nothing else (:func:`faust_floor`).
- gateway: the phone edge from signed request to Kafka acknowledgement, without selfies and
  with 60 KB ones, and its latency at 500 /s (``hadir/bench_gateway.py``).
- sink: rows per second from Kafka into ClickHouse through the batching sink, with one sink
  process and with two in one consumer group.
- report: the TPP report's time for 5,000 ASN x 1 month and x 12 months.
- dashboard: each page's server-side time over that year, and how soon the alert feed shows a
  published alert (``hadir/bench_dashboard.py``).

The pipeline, sink and report benchmarks run on a stack of their own (state in .hadir-bench,
ports 2xxxx), so they never mix with the demo's data; it starts empty on every run (state
left by an earlier run, such as large table changelogs, would change what is measured) and is
stopped at the end.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import platform
import queue
import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import h3
import numpy as np
from tqdm import tqdm

from hadir import faces, kafka_access, topics, workers
from hadir.bench_dashboard import bench_dashboard
from hadir.bench_gateway import bench_gateway
from hadir.bench_geo import bench_geo
from hadir.config import REPO_ROOT, Settings
from hadir.generate import SelfieCamera, identities, load_photo, make_nip
from hadir.infra import stack
from hadir.infra.process import process_cpu_s, threads_cpu_s
from hadir.measure import own_cpu_s, percentiles
from hadir.output import emit, to_json
from hadir.serde import AvroCodec, Registry

FACES_DIR = REPO_ROOT.parent / "shared" / "faces" / "deepface"
LIVENESS_DIR = REPO_ROOT.parent / "shared" / "models" / "liveness"
ALL = ("geo", "face", "gateway", "pipeline", "sink", "report", "dashboard")
NEEDS_STACK = ("gateway", "pipeline", "sink", "report", "dashboard")
BENCH_DAY = date(2030, 1, 7)  # a Monday far from any real month
WARM_UP = 20_000  # check-ins through the pipeline at full rate before anything is measured
# ... then runs of SETTLE_RUN check-ins at SETTLE_RATE until the broker's JIT compiler took less
# than JIT_QUIET of a core during two in a row, at most SETTLE_RUNS of them (see warm_up).
SETTLE_RUN, SETTLE_RATE, SETTLE_RUNS, JIT_QUIET = 10_000, 1000, 8, 0.1
JIT_THREADS = "CompilerThre"  # HotSpot's "C1 CompilerThread0", "C2 CompilerThre" as Linux cuts them
# A paced run publishes whatever is due, then sleeps at least this long: one sleep per
# check-in was a thousand wake-ups a second of the bench itself on the same two cores.
PACE_S = 0.005
REVIEW_SHARE = 0.05  # of the report benchmark's check-ins: REVIEW, most of them decided
FLOOR_TIMEOUT_S = 300  # the faust floor's agent takes 100,000 check-ins in about 15 s
OFFICE = {"type": "Polygon", "coordinates": [[
    [106.40960, -2.48640], [106.41040, -2.48640], [106.41040, -2.48560],
    [106.40960, -2.48560], [106.40960, -2.48640]]]}


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem, 1),
            "python": platform.python_version(), "os": platform.platform(),
            "python_loop_ms": python_loop_ms()}


def python_loop_ms() -> float:
    """A fixed pure-Python workload (best of three), to compare machines: cloud machines of
    one name differ, and every number here scales with this one."""
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        total = 0
        for i in range(2_000_000):
            total += i % 7
        best = min(best, time.perf_counter() - start)
    return round(best * 1000, 1)


def bench_settings(settings: Settings) -> Settings:
    infra = dataclasses.replace(
        settings.infra, home=str(REPO_ROOT / ".hadir-bench"), kafka_port=29092,
        kafka_controller_port=29093, registry_port=28081, clickhouse_port=29000,
        clickhouse_http_port=28123, clickhouse_database="hadir_bench",
        models_dir=str(settings.infra.models_path))
    return dataclasses.replace(settings, infra=infra)


def _env(settings: Settings) -> dict[str, str]:
    i = settings.infra
    return {"HADIR_INFRA_HOME": i.home, "HADIR_INFRA_KAFKA_PORT": str(i.kafka_port),
            "HADIR_INFRA_KAFKA_CONTROLLER_PORT": str(i.kafka_controller_port),
            "HADIR_INFRA_REGISTRY_PORT": str(i.registry_port),
            "HADIR_INFRA_CLICKHOUSE_PORT": str(i.clickhouse_port),
            "HADIR_INFRA_CLICKHOUSE_HTTP_PORT": str(i.clickhouse_http_port),
            "HADIR_INFRA_CLICKHOUSE_DATABASE": i.clickhouse_database,
            "HADIR_INFRA_MODELS_DIR": i.models_dir}


# --- pipeline ------------------------------------------------------------------------------


def checkin(rng: random.Random, nip: str, at: datetime, selfie: bytes | None) -> dict[str, Any]:
    """A check-in as a phone at the bench office sends it (hadir.checkins.raw's record)."""
    return {"event_id": str(uuid.uuid4()), "nip": nip, "device_id": f"dev-{nip}", "type": "IN",
            "server_time": at, "client_time": at, "lat": -2.4860 + rng.uniform(-2e-4, 2e-4),
            "lon": 106.4100 + rng.uniform(-2e-4, 2e-4), "accuracy_m": 12.0,
            "mock_location": False, "selfie": selfie, "app_version": "bench"}


class Peak:
    """A regency's ASN, set up on the bench stack (office, employees, face templates)."""

    def __init__(self, settings: Settings, asn: int, seed: int = 1) -> None:
        from confluent_kafka import Producer

        rng = random.Random(seed)
        self.settings = settings
        self.rng = rng
        self.registry = Registry(settings.infra.registry)
        # The phones' gateway: it lingers 20 ms as `hadir replay` does (at 1,000 /s, about 210
        # produce requests a second instead of 480; the wait counts in the latency).
        self.producer = Producer({**kafka_access.confluent(settings.infra, "admin"),
                                  "linger.ms": 20, "partitioner": "murmur2_random",
                                  "queue.buffering.max.messages": 500_000})
        people = identities(FACES_DIR)[:8]
        self.photos = [load_photo(group[0]) for group in people]
        v = faces.verifier(settings)
        cipher = v.cipher(faces.template_key(settings))
        enrolled = [v.enroll([g[0].read_bytes()]) for g in people]
        self.nips = [make_nip(rng, i) for i in range(asn)]
        office = AvroCodec(topics.OFFICES, self.registry)
        self.producer.produce(topics.OFFICES.name, key=b"BENCH", value=office.encode(
            {"office_id": "BENCH", "name": "Bench office", "geometry": json.dumps(OFFICE)}))
        emp, tpl = AvroCodec(topics.EMPLOYEES, self.registry), AvroCodec(topics.FACES,
                                                                         self.registry)
        for i, nip in enumerate(self.nips):
            self.producer.produce(topics.EMPLOYEES.name, key=nip.encode(), value=emp.encode(
                {"nip": nip, "name": f"ASN {i}", "office_id": "BENCH",
                 "tpp_base_idr": 4_000_000}))
            self.producer.produce(topics.FACES.name, key=nip.encode(), value=tpl.encode(
                faces.template_record(nip, enrolled[i % len(enrolled)], cipher)))
            self.producer.poll(0)
        self.producer.flush(60)
        self.raw = AvroCodec(topics.RAW, self.registry)
        self.mornings = itertools.count()

    def selfies(self, n: int) -> list[bytes]:
        camera = SelfieCamera(np.random.default_rng(3))
        return [camera.shoot(self.photos[i % len(self.photos)]) for i in range(n)]

    def run(self, events: int, rate: float, selfies: list[bytes] | None, label: str,
            progress: bool, timeout: float = 900) -> dict[str, Any]:
        """Publish ``events`` check-ins at ``rate`` per second (0: as fast as possible) and
        measure publish-to-verdict latency from the verdict topic. Latency counts from the time
        a check-in was due, not the time it was handed to the producer: a publisher that falls
        behind adds its delay to the result instead of hiding it. Each run is a morning of
        its own, a week after the last, as a regency's peaks are: what earlier runs left in
        the tables is as old as yesterday's check-ins would be (outside the 12-hour
        shared-device window), not piled onto this morning's."""
        # only the event id is read: without logical types a decode takes half the time
        verdict_codec = AvroCodec(topics.VERDICTS, self.registry, logical_types=False)
        consumer = topics.consumer_from_now(self.settings.infra, topics.VERDICTS,
                                            f"bench-{uuid.uuid4()}")
        sent: dict[str, float] = {}
        latency: list[float] = []
        done = threading.Event()

        def collect() -> None:
            while not done.is_set():
                for msg in consumer.consume(2000, timeout=0.2):
                    if msg.error():
                        continue
                    v = verdict_codec.decode(msg.value())
                    t = sent.pop(v["event_id"], None)
                    if t is not None:
                        latency.append(time.time() - t)

        collector = threading.Thread(target=collect, daemon=True)
        collector.start()
        meter = CpuMeter.of_stack(self.settings)
        day = BENCH_DAY + timedelta(weeks=next(self.mornings))
        start_of_peak = datetime.combine(day, datetime.min.time(), UTC) + timedelta(
            minutes=self.rng.randrange(0, 500))
        t0 = time.time()
        bar = tqdm(total=events, desc=f"pipeline {label}", unit="ev", disable=not progress)
        for k in range(events):
            due = t0 + k / rate if rate else time.time()
            if due > time.time():
                time.sleep(max(due - time.time(), PACE_S))
            nip = self.nips[k % len(self.nips)]
            at = start_of_peak + timedelta(seconds=1800 * k / events)
            record = checkin(self.rng, nip, at, selfies[k % len(selfies)] if selfies else None)
            data = self.raw.encode(record)
            sent[record["event_id"]] = due
            self.producer.produce(topics.RAW.name, key=nip.encode(), value=data)
            self.producer.poll(0)
            bar.update(1)
        self.producer.flush(60)
        published_s = time.time() - t0
        deadline = time.time() + timeout
        while len(latency) < events and time.time() < deadline:
            bar.set_postfix_str(f"{len(latency)} verdicts")
            time.sleep(0.2)
        total_s = time.time() - t0
        done.set()
        collector.join()
        consumer.close()
        bar.close()
        return {"events": events, "with_selfies": bool(selfies), "target_rate": rate or "max",
                "publish_s": round(published_s, 2), "verdicts": len(latency),
                "events_per_s": round(len(latency) / total_s, 1),
                "latency": percentiles(latency),
                "cpu_ms_per_checkin": meter.per_item(events),
                "broker_jit_core_share": meter.jit_core_share()}


class CpuMeter:
    """CPU time of each process of the pipeline over one run, per check-in: services, workers
    and this process (the bench's publisher and verdict reader), from /proc. The two cores are
    shared by all of them, so this says where a rate's limit comes from. With ``jvm`` (the
    broker's pid) it also follows that JVM's JIT compiler threads (:func:`jit_core_share`)."""

    def __init__(self, pids: dict[str, int], jvm: int | None = None) -> None:
        self.pids = pids
        self.before = {name: process_cpu_s(pid) for name, pid in pids.items()}
        self.own = own_cpu_s()
        self.jvm = jvm
        self.jit_before = threads_cpu_s(jvm, JIT_THREADS) if jvm else 0.0
        self.started = time.monotonic()

    @classmethod
    def of_stack(cls, settings: Settings) -> CpuMeter:
        procs = [s.process for s in stack.services(settings)] + workers.running(settings)
        pids = {p.name: pid for p in procs if (pid := p.pid()) is not None}
        return cls(pids, pids.get("kafka"))

    def jit_core_share(self) -> float | None:
        """The share of one core the JVM's JIT compiler took since the meter was made."""
        if self.jvm is None:
            return None
        spent = threads_cpu_s(self.jvm, JIT_THREADS) - self.jit_before
        return round(spent / max(time.monotonic() - self.started, 1e-3), 3)

    def per_item(self, items: int) -> dict[str, float]:
        """Milliseconds of CPU per item since the meter was made (a process gone is left out)."""
        out = {}
        for name, pid in self.pids.items():
            now, then = process_cpu_s(pid), self.before[name]
            if now is not None and then is not None:
                out[name] = round((now - then) * 1000 / items, 3)
        out["bench"] = round((own_cpu_s() - self.own) * 1000 / items, 3)
        out["total"] = round(sum(out.values()), 3)
        return out


def warm_up(peak: Peak, progress: bool) -> dict[str, Any]:
    """Bring the pipeline to the state a regency's has on a working morning. The workers fill
    their caches and tables; the broker, a JVM, compiles its hot code: its JIT compiler
    threads took a fifth to half a core for the first minutes after a start, and a rate it
    had not served yet (at 1,000 /s fetches wait for data, at full rate they do not) started
    them again, which the 2-core machine's measured runs paid for. A production broker did
    that once, after its last restart. So: WARM_UP check-ins at full rate, then runs at
    SETTLE_RATE until the compiler was quiet in two runs in a row (after one quiet run it
    was seen busy again)."""
    runs = [peak.run(WARM_UP, 0, None, "warm-up", progress)]
    while len(runs) <= SETTLE_RUNS and any((r["broker_jit_core_share"] or 0) >= JIT_QUIET
                                           for r in runs[-2:]):
        runs.append(peak.run(SETTLE_RUN, SETTLE_RATE, None, "warm-up, JIT settling", progress))
    return {"check_ins": sum(r["events"] for r in runs),
            "verdicts": sum(r["verdicts"] for r in runs),
            "broker_jit_core_share": [r["broker_jit_core_share"] for r in runs]}


def _fill_topic(settings: Settings, name: str, records: Iterable[tuple[bytes, bytes]],
                total: int, desc: str, progress: bool) -> None:
    """Create topic ``name`` on the bench broker (as many partitions as Hadir's topics) and
    publish ``records`` (key, value) to it, ``total`` of them, lingering as the phones'
    gateway does."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(kafka_access.confluent(settings.infra, "admin"))
    admin.create_topics([NewTopic(name, num_partitions=settings.infra.partitions,
                                  replication_factor=1)])[name].result()
    producer = Producer({**kafka_access.confluent(settings.infra, "admin"), "linger.ms": 20,
                         "queue.buffering.max.messages": 1_000_000})
    for k, (key, value) in enumerate(tqdm(records, total=total, desc=desc, unit="record",
                                          disable=not progress)):
        producer.produce(name, key=key, value=value)
        if k % 10000 == 0:
            producer.poll(0)
    producer.flush(120)


def _floor_process(settings: Settings, topic: str, events: int, results: Any) -> None:
    """The agent of :func:`faust_floor`: takes the topic's records as the intake takes the raw
    topic (same app settings, batch size and wait, no acknowledgements) and does nothing with
    them. Reports its CPU seconds, wall seconds and records taken after the first batch (the
    clocks start once that batch is in, so it is not counted) up to the last record."""
    import faust

    from streams.intake import BATCH
    from streams.stage import BATCH_WAIT_S, new_app, raw_topic

    app = new_app(f"hadir-bench-floor-{uuid.uuid4().hex[:8]}", settings, "admin")
    app.conf.datadir.parent.mkdir(parents=True, exist_ok=True)
    source = raw_topic(app, topics.Topic(topic, topics.RAW.schema, "NIP"), stage_input=True)

    @app.agent(source)
    async def take(stream: Any) -> None:
        seen, first, started = 0, 0, (0.0, 0.0)
        async for batch in stream.noack_take(BATCH, within=BATCH_WAIT_S):
            if not seen:
                first, started = len(batch), (time.monotonic(), time.process_time())
            seen += len(batch)
            if seen >= events:
                results.put((time.process_time() - started[1], time.monotonic() - started[0],
                             seen - first))
                results.close()
                results.join_thread()
                os._exit(0)  # faust's worker would stop its services one by one, for seconds

    # stdout is the bench's JSON (--format json): faust's start-up spinner goes to stderr
    faust.Worker(app, loglevel="warning", quiet=True,
                 stdout=sys.stderr).execute_from_commandline()


def faust_floor(settings: Settings, progress: bool, events: int = 100_000) -> dict[str, Any]:
    """The least CPU any faust intake spends per check-in on this machine: ``events`` check-ins
    without selfies on a topic partitioned like hadir.checkins.raw, taken by a faust agent
    that does nothing with them (:func:`_floor_process`), and the broker's CPU meanwhile
    (from the agent's start: its group join is included). Every check-in pays this once on
    the raw topic (one record per check-in is the phones' contract), before any decoding,
    rule or output: it bounds what the pipeline could reach on these cores with faust."""
    import multiprocessing

    from confluent_kafka.admin import AdminClient

    from streams.intake import BATCH

    if events <= 2 * BATCH:  # the first batch is not timed: most must come after it
        raise ValueError(f"the faust floor needs more than {2 * BATCH} check-ins")
    name = f"hadir.bench.raw.{uuid.uuid4().hex[:8]}"
    codec = AvroCodec(topics.RAW, Registry(settings.infra.registry))
    rng, at = random.Random(2), datetime.combine(BENCH_DAY, datetime.min.time(), UTC)
    nips = [make_nip(rng, i) for i in range(5000)]
    check_ins = ((nip.encode(), codec.encode(checkin(rng, nip, at, None)))
                 for nip in (nips[k % len(nips)] for k in range(events)))
    _fill_topic(settings, name, check_ins, events, "faust floor: publishing", progress)
    spawn = multiprocessing.get_context("spawn")  # no fork of a process with Kafka threads
    results = spawn.Queue()
    proc = spawn.Process(target=_floor_process, args=(settings, name, events, results))
    meter = CpuMeter.of_stack(settings)
    proc.start()
    try:
        cpu_s, wall_s, taken = _collect(results, [proc], "faust floor",
                                        timeout_s=FLOOR_TIMEOUT_S)
        proc.join(30)
        broker_ms = meter.per_item(events).get("kafka")
    finally:
        admin = AdminClient(kafka_access.confluent(settings.infra, "admin"))
        for deleted in admin.delete_topics([name]).values():
            deleted.result()
    return {"events": events, "events_per_s": round(taken / wall_s),
            "agent_cpu_ms_per_checkin": round(cpu_s * 1000 / taken, 3),
            "broker_cpu_ms_per_checkin": broker_ms}


def bench_pipeline(settings: Settings, progress: bool, asn: int = 5000, intake: int = 1,
                   core: int = 1) -> dict[str, Any]:
    peak = Peak(settings, asn)
    workers.start(settings, intake=intake, core=core)
    warm = warm_up(peak, progress)  # what is measured is a warm pipeline, as in production
    no_faces = peak.run(20_000, 0, None, "no selfies, max rate", progress)
    at_1000 = peak.run(10_000, 1000, None, "no selfies, 1000/s", progress)
    selfies = peak.selfies(400)
    with_faces = peak.run(1500, 0, selfies, "with selfies, max rate", progress)
    # The goal compares with the face stage's own throughput on the same selfies (the 360 px
    # uploads of SelfieCamera decode faster than ../shared/faces' photos), in as many
    # processes as there are intake workers, while the idle pipeline waits.
    with_faces["face_stage_alone"] = face_throughput(settings, intake, progress=progress,
                                                     selfies=selfies)
    with_faces["share_of_face_stage"] = round(
        with_faces["events_per_s"] / with_faces["face_stage_alone"]["selfies_per_s"], 2)
    # A 5,000-ASN regency's morning: 10,000 check-ins with selfies in 30 minutes is 5.6 per
    # second; a 2-minute sample at that rate gives its latency.
    regency = peak.run(660, 10_000 / 1800, selfies, "regency peak, 5.6/s", progress)
    workers.stop(settings)  # the floor's agent has the cores to itself, with the broker
    return {"asn": asn, "intake_workers": intake, "core_workers": core, "warm_up": warm,
            "no_selfies_max_rate": no_faces, "no_selfies_1000_per_s": at_1000,
            "with_selfies_max_rate": with_faces, "regency_peak_with_selfies": regency,
            "faust_floor": faust_floor(settings, progress)}


# --- sink ----------------------------------------------------------------------------------


def _sink_process(settings: Settings, topic: str, group: str, results: Any,
                  stop: Any) -> None:
    """One sink process of the benchmark: the verdict mapping, pointed at the bench topic. It
    ends 3 s after its last record, or once ``stop.value`` is set: a process whose partitions
    were all read by the others before it joined never gets a record to start that clock.
    (A shared byte, polled: a multiprocessing Event's ``set`` hangs when a process that waited
    on it has exited.)"""
    from sinks.clickhouse import ClickHouseSink, mappings

    base = next(m for m in mappings(settings) if m.table == "checkins")
    mapping = dataclasses.replace(base, topic=dataclasses.replace(base.topic, name=topic),
                                  table="bench_checkins")
    sink = ClickHouseSink(settings, [mapping], group_id=group)

    def stop_when_told() -> None:
        while not stop.value:
            time.sleep(0.2)
        sink.stopping = True

    threading.Thread(target=stop_when_told, daemon=True).start()
    sink.run(max_idle_s=3.0)
    results.put((sink.rows_written, sink.first_message_at, sink.last_commit_at))


def bench_sink(settings: Settings, progress: bool, rows: int = 1_000_000,
               processes: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    """Verdict records on a topic of their own, through ClickHouseSink into a copy of the
    checkins table: rows per second including Kafka consumption, Avro decoding, batching,
    inserts and offset commits; with one sink process and with several in one group (``hadir
    run --sinks N``), timed from the first record fetched to the last offset committed."""
    import multiprocessing

    from sinks.connection import connect

    topic = topics.Topic(f"hadir.bench.verdicts.{uuid.uuid4().hex[:8]}", "CheckinVerdict", "NIP")
    codec = AvroCodec(topic, Registry(settings.infra.registry))
    now = datetime.now(UTC)

    def verdict(k: int) -> tuple[bytes, bytes]:
        nip = f"19800101200501100{k % 10}"
        return nip.encode(), codec.encode({
            "event_id": str(uuid.UUID(int=k)), "nip": nip, "device_id": f"d{k % 977}",
            "office_id": "BENCH", "type": "IN", "server_time": now - timedelta(seconds=k),
            "client_time": None, "verdict": "ACCEPTED", "reasons": [],
            "face_similarity": 0.71, "spoof_score": None, "h3_cell": "8a6526a8a6dffff",
            "distance_m": 0.0, "lat": -2.486, "lon": 106.41, "accuracy_m": 10.0,
            "decided_at": now})

    _fill_topic(settings, topic.name, map(verdict, range(rows)), rows,
                "sink: publishing verdicts", progress)
    client = connect(settings.infra, "admin")  # makes and empties its own tables
    spawn = multiprocessing.get_context("spawn")  # no fork of a process with Kafka threads
    out: dict[str, Any] = {"rows": rows, "partitions": settings.infra.partitions,
                           "batch_rows": settings.sink.batch_rows}
    for n in (n for n in processes if n <= settings.infra.partitions):
        client.execute("DROP TABLE IF EXISTS bench_checkins")
        client.execute("CREATE TABLE bench_checkins AS checkins")
        results, stop = spawn.Queue(), spawn.RawValue("b", 0)
        group = f"bench-{topic.name}-{n}"
        procs = [spawn.Process(target=_sink_process,
                               args=(settings, topic.name, group, results, stop))
                 for _ in range(n)]
        for proc in procs:
            proc.start()
        done: list[tuple[int, float | None, float | None]] = []
        for _ in procs:
            done.append(_collect(results, procs, "sink"))
            if sum(d[0] for d in done) >= rows:
                stop.value = 1  # every record is stored: the others have nothing left to read
        for proc in procs:
            proc.join(30)
        (stored,), = client.execute("SELECT count() FROM bench_checkins")
        written = sum(d[0] for d in done)
        elapsed = max(d[2] for d in done if d[2]) - min(d[1] for d in done if d[1])
        out[f"processes_{n}"] = {"stored": stored, "rows_per_s": round(written / elapsed)}
    client.execute("DROP TABLE bench_checkins")
    client.disconnect()
    return out


def _collect(results: Any, procs: list[Any], what: str, timeout_s: float | None = None) -> Any:
    """The next item a benchmark's worker process puts on ``results``; if one of them has
    failed meanwhile (its traceback is in the output above), or nothing came within
    ``timeout_s``, all are stopped and this raises rather than waiting for ever."""
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        try:
            return results.get(timeout=5)
        except queue.Empty:
            failed = any(proc.exitcode not in (None, 0) for proc in procs)
            if failed or (deadline is not None and time.monotonic() > deadline):
                for proc in procs:
                    proc.kill()
                why = "failed; its error is printed above" if failed else (
                    f"gave no result within {timeout_s:.0f} s")
                raise RuntimeError(f"a {what} process of the benchmark {why}") from None


# --- report --------------------------------------------------------------------------------


REPORT_YEAR = 2029


def fill_year(settings: Settings, progress: bool, asn: int = 5000) -> None:
    """A regency's year of check-ins, written straight into ClickHouse (the report and
    dashboard benchmarks measure reading it, not the pipeline): ``asn`` ASN in 40 offices,
    REVIEW_SHARE of their check-ins under review and most of those decided."""
    from processors.attendance import WorkCalendar
    from sinks.connection import connect

    rng = random.Random(5)
    client = connect(settings.infra, "admin")  # makes and empties its own tables
    for table in ("checkins", "employees", "excuses", "decisions"):
        client.execute(f"TRUNCATE TABLE {table}")
    nips = [make_nip(rng, i) for i in range(asn)]
    client.execute("INSERT INTO employees (nip, name, office_id, tpp_base_idr, deleted, version)"
                   " VALUES", [(n, f"ASN {i}", f"OPD{i % 40:02d}", 4_000_000, 0, 1)
                               for i, n in enumerate(nips)])
    office_of = {n: f"OPD{i % 40:02d}" for i, n in enumerate(nips)}
    cell = h3.latlng_to_cell(-2.486, 106.41, settings.geo.h3_resolution)
    cal = WorkCalendar(settings.attendance)
    year = REPORT_YEAR
    tz = cal.tz
    columns = ("event_id, nip, device_id, office_id, type, server_time, server_time_ms, "
               "local_date, verdict, reasons, h3_cell, lat, lon, decided_at, version")
    for month in tqdm(range(1, 13), desc="report: writing a year of check-ins",
                      disable=not progress):
        batch, decisions = [], []
        for day in cal.working_days(year, month):
            for n in nips:
                if rng.random() < 0.03:
                    continue
                for kind, minute in (("IN", rng.gauss(440, 20)), ("OUT", rng.gauss(970, 20))):
                    local = datetime.combine(day, datetime.min.time(), tz) + timedelta(
                        minutes=minute)
                    t = local.astimezone(UTC)
                    event_id, flagged = str(uuid.uuid4()), rng.random() < REVIEW_SHARE
                    batch.append((event_id, n, "d", office_of[n], kind,
                                  t.replace(tzinfo=None), int(t.timestamp() * 1000), day,
                                  "REVIEW" if flagged else "ACCEPTED",
                                  ["SHARED_DEVICE"] if flagged else [], cell, -2.486, 106.41,
                                  t.replace(tzinfo=None), 1))
                    if flagged and rng.random() < 0.8:  # most are decided, the rest queue
                        decided = t + timedelta(days=2)
                        decisions.append((str(uuid.uuid4()), event_id, n,
                                          rng.choice(("CLEAR", "CONFIRM")), "bench", "",
                                          decided.replace(tzinfo=None),
                                          int(decided.timestamp() * 1000), 1))
        client.execute(f"INSERT INTO checkins ({columns}) VALUES", batch)
        client.execute("INSERT INTO decisions (decision_id, event_id, nip, decision, reviewer, "
                       "note, decided_at, decided_at_ms, version) VALUES", decisions)
    client.disconnect()


def bench_report(settings: Settings, progress: bool, asn: int = 5000) -> dict[str, Any]:
    """TPP report time for ``asn`` ASN over 1 and 12 months of check-ins (written straight
    into ClickHouse: this measures the report, not the pipeline), with REVIEW_SHARE of them
    under review and most of those decided (the report joins the decisions), and the time of
    ``hadir review queue``."""
    from hadir import reports, review

    fill_year(settings, progress, asn)
    year = REPORT_YEAR
    t0 = time.perf_counter()
    one = reports.tpp(settings, date(year, 3, 1), store=False)
    month_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    reports.tpp(settings, date(year, 3, 1), store=True)
    month_stored_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    lines = reports.discipline(settings, year)
    year_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    queue = review.queue(settings)
    queue_s = time.perf_counter() - t0
    return {"asn": asn, "lines": len(one), "under_review_share": REVIEW_SHARE,
            "month_s": round(month_s, 2), "month_with_storing_s": round(month_stored_s, 2),
            "year_12_months_s": round(year_s, 2), "year_lines": len(lines),
            "review_queue_s": round(queue_s, 2), "review_queue_rows": len(queue)}


# --- all -----------------------------------------------------------------------------------


def choose(only: str | None) -> list[str]:
    """The benchmarks named in ``only`` (comma-separated); every one when it is None."""
    chosen = [s.strip() for s in only.split(",")] if only is not None else list(ALL)
    unknown = set(chosen) - set(ALL)
    if unknown:
        raise ValueError(f"unknown benchmark {', '.join(map(repr, sorted(unknown)))}; choose from "
                         f"{', '.join(ALL)}")
    return chosen


def run(settings: Settings, only: str | None = None, out: Path = Path("out/bench.json"),
        progress: bool = True, intake: int = 1, core: int = 1) -> dict[str, Any]:
    """Run the chosen benchmarks; the pipeline's with ``intake`` and ``core`` workers (more
    than one of each measures scaling out, on a machine with the cores for it)."""
    chosen = choose(only)
    workers.check_counts(settings, intake, 1, core)
    results: dict[str, Any] = {"machine": machine(), "when": datetime.now(UTC).isoformat()}
    steps: dict[str, Callable[[], Any]] = {
        "geo": lambda: bench_geo(200_000, 50),
        "face": lambda: _bench_face(settings, progress),
    }
    bench = bench_settings(settings)
    steps.update({"gateway": lambda: bench_gateway(bench, progress, FACES_DIR),
                  "pipeline": lambda: bench_pipeline(bench, progress, intake=intake, core=core),
                  "sink": lambda: bench_sink(bench, progress),
                  "report": lambda: bench_report(bench, progress),
                  "dashboard": lambda: bench_dashboard(bench, progress)})
    out.parent.mkdir(parents=True, exist_ok=True)
    # Geo and face first: they must not share the CPUs with the services starting up.
    order = sorted(chosen, key=lambda name: name in NEEDS_STACK)
    started = False
    try:
        for name in order:
            if name in NEEDS_STACK and not started:
                os.environ.update(_env(bench))  # the workers started for the bench inherit these
                stack.wipe(bench)  # every run measures the same: empty topics, tables, state
                stack.up(bench, progress=progress)
                started = True
            if progress:
                print(f"bench {name} ...", flush=True)
            results[name] = steps[name]()
            out.write_text(to_json(results))  # what is measured is kept if a later step fails
    finally:
        if started:
            workers.stop(bench)
            stack.down(bench)
    results["written_to"] = str(out)
    return results


def _bench_face(settings: Settings, progress: bool) -> dict[str, Any]:
    """Per-step costs with liveness off and on, then the face stage's throughput on this
    machine: selfies per second through ``verify_many`` in 1, 2, 4 ... worker processes (as
    ``hadir run --intake N`` runs them), on ``face.device`` (``HADIR_FACE_DEVICE``)."""
    from hadir.bench_face import bench_face

    with_liveness = (dataclasses.replace(settings, face=dataclasses.replace(
        settings.face, liveness_dir=str(LIVENESS_DIR)))
        if LIVENESS_DIR.is_dir() and not settings.face.liveness_dir else None)
    out: dict[str, Any] = {
        "device": settings.face.device,
        "liveness_off": bench_face(FACES_DIR, 200, verifier=faces.verifier(settings))}
    if with_liveness is not None:
        out["liveness_on"] = bench_face(FACES_DIR, 200, verifier=faces.verifier(with_liveness))
    cores = os.cpu_count() or 1
    counts = [n for n in (1, 2, 4, 8, 16) if n <= cores]
    scaling = {f"processes_{n}": face_throughput(settings, n, progress=progress)
               for n in counts}
    out["throughput_liveness_off"] = scaling
    best = max(counts, key=lambda n: scaling[f"processes_{n}"]["selfies_per_s"])
    if with_liveness is not None:
        out["throughput_liveness_on"] = {
            f"processes_{best}": face_throughput(with_liveness, best, progress=progress)}
    return out


def _face_process(settings: Settings, threads: int, batch: int, seconds: float,
                  selfies: list[bytes] | None, go: Any, results: Any) -> None:
    """One face worker of :func:`face_throughput`: verify_many on batches until time is up."""
    from processors.images import decode_image

    verifier = faces.verifier(settings, threads=threads)
    if selfies is None:
        files = sorted(p for p in FACES_DIR.iterdir() if p.suffix.lower() in (".jpg", ".png"))
        selfies = [p.read_bytes() for p in files]
    first = decode_image(selfies[0]).bgr
    template = verifier.embed(first, verifier.detect(first)[0])
    items = [(selfies[i % len(selfies)], template) for i in range(batch)]
    verifier.verify_many(items)  # warm-up: model loading, GPU kernels, memory pools
    results.put(None)  # ready
    go.wait()
    began, done = time.perf_counter(), 0
    while time.perf_counter() - began < seconds:
        verifier.verify_many(items)
        done += batch
    results.put((done, time.perf_counter() - began))


def face_throughput(settings: Settings, processes: int, *, batch: int = 64,
                    seconds: float = 10.0, progress: bool = False,
                    selfies: list[bytes] | None = None) -> dict[str, Any]:
    """Selfies per second of ``processes`` face workers at once, each with cores / processes
    CPU threads, sharing the CPU (and the GPU, when ``face.device`` names one), verifying
    ``selfies`` (by default the images of ../shared/faces, of many sizes)."""
    import multiprocessing

    spawn = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // processes)
    go, results = spawn.Event(), spawn.Queue()
    procs = [spawn.Process(target=_face_process,
                           args=(settings, threads, batch, seconds, selfies, go, results))
             for _ in range(processes)]
    for proc in procs:
        proc.start()
    for _ in procs:
        _collect(results, procs, "face")  # each one ready: models loaded and warmed up
    if progress:
        print(f"  face throughput: {processes} process(es) x {threads} thread(s) ...",
              flush=True)
    cpu_before = _cpu_ticks()
    gpu = _GpuSampler(settings.face.device)
    go.set()
    done = [_collect(results, procs, "face") for _ in procs]
    gpu_busy = gpu.stop()
    busy, total = (after - before for after, before in zip(_cpu_ticks(), cpu_before,
                                                            strict=True))
    for proc in procs:
        proc.join(30)
    selfies = sum(d[0] for d in done)
    return {"threads_each": threads, "batch": batch, "selfies": selfies,
            "selfies_per_s": round(selfies / max(d[1] for d in done), 1),
            "cpu_busy_pct": round(100 * busy / total, 1) if total else None,
            **({"gpu_busy_pct": gpu_busy} if gpu_busy is not None else {})}


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) CPU ticks of the whole machine since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


class _GpuSampler:
    """The GPU's utilisation sampled by nvidia-smi every 0.5 s while a face benchmark runs
    (whether the GPU or the CPU side is the limit); nothing on the CPU or without nvidia-smi."""

    def __init__(self, device: str) -> None:
        import shutil
        import subprocess

        tool = shutil.which("nvidia-smi")
        self.proc = None if device == "cpu" or tool is None else subprocess.Popen(
            [tool, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms",
             "500", "-i", device.partition(":")[2] or "0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)

    def stop(self) -> dict[str, float] | None:
        """Mean and highest utilisation (%) over the samples taken."""
        if self.proc is None:
            return None
        self.proc.terminate()
        out, _ = self.proc.communicate(timeout=10)
        samples = [float(v) for v in out.split() if v.replace(".", "", 1).isdigit()]
        return {"mean": round(sum(samples) / len(samples), 1), "max": max(samples),
                "samples": len(samples)} if samples else None


def _leaves(value: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every value of a nested result with its dotted path (``latency.p99_ms``)."""
    if not isinstance(value, dict):
        return [(path, value)]
    return [leaf for key, v in value.items()
            for leaf in _leaves(v, f"{path}.{key}" if path else key)]


def print_results(results: dict[str, Any], fmt: str) -> None:
    if fmt == "json":
        print(to_json(results))
        return
    rows = [{"benchmark": name, "measure": measure, "value": value}
            for name, result in results.items() if name not in ("machine", "when", "written_to")
            for measure, value in _leaves(result)]
    machine = results["machine"]
    emit(rows, "table", title=f"hadir bench on {machine['cpu']} ({machine['cores']} cores, "
                              f"python_loop_ms {machine.get('python_loop_ms')})")
    print(f"Full results: {results['written_to']}")
