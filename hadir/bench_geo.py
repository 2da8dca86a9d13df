"""The location rules' throughput (``hadir bench --only geo``): geofence, GPS sanity and impossible
travel over synthetic offices around Bangka Tengah."""

from __future__ import annotations

import gc
import math
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

import shapely
import shapely.affinity
from shapely.geometry import MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

from processors.events import Checkin, CheckinType
from processors.geo import (
    DEFAULT_POLICY,
    Fix,
    Frame,
    Geofences,
    GeoPolicy,
    Office,
    check_fix,
    impossible_travel,
)

# Approximate centres of Bangka Tengah's kecamatan (district) seats, for synthetic offices.
_BANGKA_TENGAH_TOWNS: Final = (
    (-2.4867, 106.4103),  # Koba (regency seat)
    (-2.1950, 106.1350),  # Pangkalan Baru
    (-2.3600, 106.2650),  # Sungai Selan
    (-2.3380, 106.1650),  # Simpang Katis
    (-2.2430, 106.2800),  # Namang
    (-2.5600, 106.5500),  # Lubuk Besar
)


def _synthetic_office(rng: random.Random, i: int, lat0: float, lon0: float) -> Office:
    frame = Frame.at(lat0, lon0)
    w, h = rng.uniform(40, 180), rng.uniform(40, 160)
    if i % 10 == 9:  # two buildings
        parts = [
            shapely.box(0, 0, w, h),
            shapely.box(w + rng.uniform(20, 60), 0, 2 * w, h * 0.6),
        ]
        geom: BaseGeometry = MultiPolygon(parts)
    elif i % 5 == 4:  # an L-shaped compound
        geom = Polygon([(0, 0), (w, 0), (w, h / 2), (w / 2, h / 2), (w / 2, h), (0, h)])
    elif i % 7 == 6:  # a courtyard
        geom = Polygon(
            [(0, 0), (w, 0), (w, h), (0, h)],
            [[(w * 0.3, h * 0.3), (w * 0.7, h * 0.3), (w * 0.7, h * 0.7), (w * 0.3, h * 0.7)]],
        )
    else:
        geom = shapely.box(0, 0, w, h)
    geom = shapely.affinity.rotate(geom, rng.uniform(0, 90), origin=(0, 0))
    lonlat = frame.unproject(geom)
    if not isinstance(lonlat, (Polygon, MultiPolygon)):  # pragma: no cover
        raise TypeError(lonlat.geom_type)
    return Office(f"OPD-{i:03d}", f"Kantor sintetis {i}", lonlat)


def bench_geo(
    n: int = 200_000, offices: int = 50, seed: int = 0, policy: GeoPolicy = DEFAULT_POLICY
) -> dict[str, object]:
    """Single-threaded throughput of the per-check-in location work: :func:`check_fix`,
    :meth:`Geofences.locate` and :func:`impossible_travel`, over synthetic offices around
    Bangka Tengah and fixes mostly inside them (some at the edge, some far away).

    The pre-generated check-ins are frozen out of the garbage collector while timing: a worker
    holds a handful of records at a time, not ``n`` of them, and scanning them would otherwise
    dominate the measurement."""
    rng = random.Random(seed)
    office_list = []
    for i in range(offices):
        lat0, lon0 = _BANGKA_TENGAH_TOWNS[i % len(_BANGKA_TENGAH_TOWNS)]
        lat0 += rng.uniform(-0.02, 0.02)
        lon0 += rng.uniform(-0.02, 0.02)
        office_list.append(_synthetic_office(rng, i, lat0, lon0))
    t0 = time.perf_counter()
    fences = Geofences(office_list, policy)
    build_s = time.perf_counter() - t0

    employees = [(f"1980010120050{i:05d}", office_list[i % offices]) for i in range(offices * 20)]
    samplers = {o.office_id: _sampler(o, rng) for o in office_list}
    start = datetime(2026, 3, 2, 0, 30, tzinfo=UTC)
    checkins: list[Checkin] = []
    for k in range(n):
        nip, office = rng.choice(employees)
        lat, lon = samplers[office.office_id](rng.random())
        checkins.append(
            Checkin(
                event_id=f"ev-{k}",
                nip=nip,
                device_id=f"dev-{nip}",
                type=CheckinType.IN,
                server_time=start + timedelta(seconds=k * 0.5),
                client_time=None,
                lat=lat,
                lon=lon,
                accuracy_m=rng.choice((5.0, 8.0, 12.0, 20.0, 35.0, 150.0)),
                mock_location=rng.random() < 0.01,
            )
        )
    office_of = {nip: office.office_id for nip, office in employees}

    last: dict[str, Fix] = {}
    outside = travel = flagged = 0
    gc.collect()
    gc.freeze()
    try:
        t0 = time.perf_counter()
        for c in checkins:
            findings = check_fix(c, policy)
            result = fences.locate(office_of[c.nip], c.lat, c.lon)
            fix = Fix.from_checkin(c, policy)
            jump = impossible_travel(last.get(c.nip), fix, policy)
            last[c.nip] = fix
            outside += not result.inside
            travel += jump is not None
            flagged += bool(findings)
        elapsed = time.perf_counter() - t0
    finally:
        gc.unfreeze()

    sample = checkins[: min(n, 20_000)]
    interior = sum(fences.cover_class(office_of[c.nip], c.lat, c.lon) == "interior" for c in sample)
    return {
        "checkins_per_s": round(n / elapsed),
        "n": n,
        "offices": offices,
        "seconds": round(elapsed, 3),
        "cover_build_s": round(build_s, 3),
        "fast_path_share": round(interior / max(1, len(sample)), 3),
        "outside_geofence": outside,
        "impossible_travel": travel,
        "sanity_findings": flagged,
    }


def _sampler(office: Office, rng: random.Random) -> Callable[[float], tuple[float, float]]:
    """A function u -> (lat, lon): 80 % inside the office, 14 % near its edge, 6 % far."""
    geom = office.geometry
    minx, miny, maxx, maxy = geom.bounds
    frame = Frame.at((miny + maxy) / 2, (minx + maxx) / 2)
    local = frame.project(geom)
    lminx, lminy, lmaxx, lmaxy = local.bounds
    inside: list[tuple[float, float]] = []
    while len(inside) < 400:
        x, y = rng.uniform(lminx, lmaxx), rng.uniform(lminy, lmaxy)
        if local.contains(Point(x, y)):
            inside.append(frame.to_latlon(x, y))
    boundary = local.boundary
    edge: list[tuple[float, float]] = []
    for _ in range(200):
        p = boundary.interpolate(rng.uniform(0, boundary.length))
        r, a = rng.uniform(0, 60), rng.uniform(0, 2 * math.pi)
        edge.append(frame.to_latlon(p.x + r * math.cos(a), p.y + r * math.sin(a)))
    far: list[tuple[float, float]] = []
    for _ in range(50):
        r, a = rng.uniform(1_500, 40_000), rng.uniform(0, 2 * math.pi)
        far.append(frame.to_latlon(r * math.cos(a), r * math.sin(a)))

    def sample(u: float) -> tuple[float, float]:
        if u < 0.80:
            return inside[int(u / 0.80 * len(inside))]
        if u < 0.94:
            return edge[int((u - 0.80) / 0.14 * len(edge))]
        return far[min(len(far) - 1, int((u - 0.94) / 0.06 * len(far)))]

    return sample
