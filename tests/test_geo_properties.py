"""Property tests for processors/geo.py (hypothesis). Offices sit around Koba, Bangka Tengah
(approximate coordinates; see tests/test_geo.py)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import shapely
import shapely.affinity
from hypothesis import given, settings
from hypothesis import strategies as st
from shapely.geometry import Point

from processors.geo import (
    Fix,
    Frame,
    GeofenceError,
    Geofences,
    GeoPolicy,
    Office,
    geodesic_m,
    h3_cell,
    haversine_m,
    impossible_travel,
    parse_offices,
)

KOBA = (-2.4867, 106.4103)
M_PER_DEG_LAT = 110_580.0
M_PER_DEG_LON = 111_215.0
FAST = settings(max_examples=150, deadline=None)


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    return lat + north_m / M_PER_DEG_LAT, lon + east_m / M_PER_DEG_LON


def ring_lonlat(points_m: list[tuple[float, float]], lat0: float, lon0: float) -> list[list[float]]:
    """(east, north) metre offsets -> a closed GeoJSON [lon, lat] ring."""
    ring = [[lon0 + e / M_PER_DEG_LON, lat0 + n / M_PER_DEG_LAT] for e, n in points_m]
    return [*ring, ring[0]]


def fc(*features: tuple[str, dict]) -> dict:
    return {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {"office_id": oid, "name": oid}, "geometry": g}
            for oid, g in features
        ],
    }


SQUARE = [(-60.0, -45.0), (60.0, -45.0), (60.0, 45.0), (-60.0, 45.0)]
L_SHAPE = [(0.0, 0.0), (90.0, 0.0), (90.0, 40.0), (40.0, 40.0), (40.0, 110.0), (0.0, 110.0)]
HOLE = [(-15.0, -15.0), (-15.0, 15.0), (15.0, 15.0), (15.0, -15.0)]
CIRCLE = [
    (70 * math.cos(2 * math.pi * k / 120), 70 * math.sin(2 * math.pi * k / 120)) for k in range(120)
]  # more edges than the pure-Python path takes: uses GEOS
OFFICES = parse_offices(
    fc(
        ("SQUARE", {"type": "Polygon", "coordinates": [ring_lonlat(SQUARE, *KOBA)]}),
        ("L", {"type": "Polygon", "coordinates": [ring_lonlat(L_SHAPE, *KOBA)]}),
        (
            "COURT",
            {
                "type": "Polygon",
                "coordinates": [ring_lonlat(SQUARE, *KOBA), ring_lonlat(HOLE, *KOBA)],
            },
        ),
        (
            "TWO",
            {
                "type": "MultiPolygon",
                "coordinates": [
                    [ring_lonlat([(x - 100, y) for x, y in SQUARE], *KOBA)],
                    [ring_lonlat([(x + 100, y) for x, y in SQUARE], *KOBA)],
                ],
            },
        ),
        ("ROUND", {"type": "Polygon", "coordinates": [ring_lonlat(CIRCLE, *KOBA)]}),
    )
)
OFFICE_IDS = [o.office_id for o in OFFICES]
TOLERANCES = (0.0, 10.0, 30.0, 60.0)
FENCES = {t: Geofences(OFFICES, GeoPolicy(geofence_tolerance_m=t)) for t in TOLERANCES}
DEFAULT = FENCES[30.0]

near_m = st.floats(-250, 250, allow_nan=False)
office_ids = st.sampled_from(OFFICE_IDS)


@FAST
@given(office_ids, near_m, near_m)
def test_fast_path_agrees_with_exact_geometry(office_id: str, north: float, east: float) -> None:
    lat, lon = offset(*KOBA, north, east)
    fast = DEFAULT.locate(office_id, lat, lon)
    assert fast == DEFAULT.locate_exact(office_id, lat, lon)
    assert fast.h3_cell == h3_cell(lat, lon, DEFAULT.policy.h3_resolution)


@FAST
@given(office_ids, near_m, near_m)
def test_distance_matches_shapely_and_is_zero_exactly_inside(
    office_id: str, north: float, east: float
) -> None:
    lat, lon = offset(*KOBA, north, east)
    office = DEFAULT.office(office_id)
    d = DEFAULT.locate(office_id, lat, lon).distance_m
    assert d >= 0.0
    frame = Frame.at(*KOBA)
    local = frame.project(office.geometry)
    expected = local.distance(Point(*frame.to_xy(lat, lon)))
    assert math.isclose(d, expected, abs_tol=0.01)  # frames differ by the office's centre only
    if office.geometry.contains(Point(lon, lat)):
        assert d == 0.0
    if d == 0.0:
        assert office.geometry.buffer(1e-9).contains(Point(lon, lat))


@FAST
@given(office_ids, near_m, near_m)
def test_tolerance_is_monotonic(office_id: str, north: float, east: float) -> None:
    lat, lon = offset(*KOBA, north, east)
    results = [FENCES[t].locate(office_id, lat, lon) for t in TOLERANCES]
    assert len({r.distance_m for r in results}) == 1  # tolerance never changes the distance
    flags = [r.inside for r in results]
    assert flags == sorted(flags)  # False... then True...
    for t, r in zip(TOLERANCES, results, strict=True):
        assert r.inside == (r.distance_m <= t)


rect_side = st.floats(12, 250)


@settings(max_examples=25, deadline=None)
@given(
    rect_side,
    rect_side,
    st.floats(0, 90),
    st.lists(st.tuples(near_m, near_m), min_size=20, max_size=20),
)
def test_random_rotated_offices_fast_equals_exact(
    w: float, h: float, angle: float, points: list[tuple[float, float]]
) -> None:
    box = shapely.affinity.rotate(shapely.box(-w / 2, -h / 2, w / 2, h / 2), angle, origin=(0, 0))
    coords = [list(c) for c in ring_lonlat(list(box.exterior.coords)[:-1], *KOBA)]
    (office,) = parse_offices(fc(("R", {"type": "Polygon", "coordinates": [coords]})))
    fences = Geofences([office])
    for north, east in points:
        lat, lon = offset(*KOBA, north, east)
        assert fences.locate("R", lat, lon) == fences.locate_exact("R", lat, lon)


@settings(max_examples=40, deadline=None)
@given(rect_side, rect_side)
def test_swapped_coordinates_are_always_caught(w: float, h: float) -> None:
    ring = ring_lonlat([(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)], *KOBA)
    parse_offices(fc(("OK", {"type": "Polygon", "coordinates": [ring]})))
    swapped = [[lat, lon] for lon, lat in ring]
    try:
        parse_offices(fc(("SW", {"type": "Polygon", "coordinates": [swapped]})))
    except GeofenceError as e:
        assert "swap" in str(e) and "SW" in str(e)
    else:
        raise AssertionError("swapped coordinates accepted")


# ------------------------------------------------------------------------------ distances

# Positions in and around Indonesia (never nearly antipodal to each other).
lats = st.floats(-11, 6, allow_nan=False)
lons = st.floats(94, 142, allow_nan=False)


@FAST
@given(lats, lons, lats, lons)
def test_geodesic_symmetric_non_negative_and_close_to_the_sphere(
    lat1: float, lon1: float, lat2: float, lon2: float
) -> None:
    d = geodesic_m(lat1, lon1, lat2, lon2)
    assert d >= 0.0
    assert math.isclose(d, geodesic_m(lat2, lon2, lat1, lon1), rel_tol=1e-12, abs_tol=1e-9)
    h = haversine_m(lat1, lon1, lat2, lon2)
    assert h == haversine_m(lat2, lon2, lat1, lon1) or math.isclose(
        h, haversine_m(lat2, lon2, lat1, lon1), rel_tol=1e-12
    )
    assert abs(d - h) <= 0.006 * d + 1e-6
    assert geodesic_m(lat1, lon1, lat1, lon1) == 0.0


@FAST
@given(lats, lons, lats, lons, lats, lons)
def test_geodesic_triangle_inequality(
    a1: float, o1: float, a2: float, o2: float, a3: float, o3: float
) -> None:
    ab = geodesic_m(a1, o1, a2, o2)
    bc = geodesic_m(a2, o2, a3, o3)
    ac = geodesic_m(a1, o1, a3, o3)
    assert ac <= ab + bc + 1e-6


km = st.floats(-2000, 2000, allow_nan=False)


@FAST
@given(km, km, km, km)
def test_local_plane_is_sub_metre_at_office_scales(
    n1: float, e1: float, n2: float, e2: float
) -> None:
    # Two points within 2 km of an office (each axis): the plane's distance matches the
    # geodesic to a few centimetres; the worst case, 5.5 cm, is across the square's corners.
    frame = Frame.at(*KOBA)
    p1 = frame.to_latlon(e1, n1)
    p2 = frame.to_latlon(e2, n2)
    planar = math.hypot(e1 - e2, n1 - n2)
    assert abs(planar - geodesic_m(*p1, *p2)) < 0.08
    x, y = frame.to_xy(*p1)
    assert math.isclose(x, e1, abs_tol=1e-6) and math.isclose(y, n1, abs_tol=1e-6)


# ------------------------------------------------------------------------------ travel

T0 = datetime(2026, 3, 2, 0, 25, tzinfo=UTC)


@FAST
@given(
    st.floats(-60_000, 60_000),
    st.floats(-60_000, 60_000),
    st.floats(0, 80),
    st.floats(0, 80),
    st.floats(1, 7200),
    st.floats(0.01, 1.0),
)
def test_impossible_travel_rules(
    north: float, east: float, acc1: float, acc2: float, seconds: float, shrink: float
) -> None:
    prev = Fix(*KOBA, acc1, T0, "a")
    lat, lon = offset(*KOBA, north, east)
    cur = Fix(lat, lon, acc2, T0 + timedelta(seconds=seconds), "b")
    finding = impossible_travel(prev, cur)
    effective = geodesic_m(*KOBA, lat, lon) - acc1 - acc2
    speed = effective / (cur.at - prev.at).total_seconds() * 3.6
    assert (finding is not None) == (effective > 1000.0 and speed > 120.0)
    # quicker is never more plausible
    sooner = Fix(lat, lon, acc2, T0 + timedelta(seconds=seconds * shrink), "b")
    if finding is not None:
        assert impossible_travel(prev, sooner) is not None
    # wider accuracy radii never create a finding
    vaguer = Fix(lat, lon, acc2 + 500, cur.at, "b")
    if finding is None:
        assert impossible_travel(prev, vaguer) is None


def test_offices_fixture_sanity() -> None:
    assert isinstance(OFFICES[0], Office)
    assert DEFAULT.locate("COURT", *KOBA).distance_m > 14.0  # the hole's centre


def test_dense_sweep_fast_paths_never_disagree() -> None:
    # Every 2.3 m over 300 m x 300 m around each office: locate's answers (its interior
    # shortcut included) match the exact geometry everywhere, edges and tolerance band
    # included, and every class of cover cell is met.
    steps = [-150 + 2.3 * k for k in range(131)]
    for office_id in OFFICE_IDS:
        classes = set()
        for north in steps:
            for east in steps:
                lat, lon = offset(*KOBA, north, east)
                exact = DEFAULT.locate_exact(office_id, lat, lon)
                assert DEFAULT.locate(office_id, lat, lon) == exact
                classes.add(DEFAULT.cover_class(office_id, lat, lon))
        assert classes == {"interior", "within_tolerance", "edge", "outside"}, office_id
