"""Tests for processors/geo.py: geofences, H3, geodesics, GPS sanity, impossible travel.

Office coordinates are approximate (placed by hand around the known town centres of Bangka
Tengah; Koba, the regency seat, is at about -2.49, 106.41), good for testing, not for surveying.
"""

from __future__ import annotations

import copy
import json
import math
from datetime import UTC, datetime, timedelta

import pytest

from hadir.bench_geo import bench_geo
from processors.events import Checkin, CheckinType, InvalidCheckin, Reason
from processors.geo import (
    DEFAULT_POLICY,
    Fix,
    GeofenceError,
    Geofences,
    GeoPolicy,
    UnknownOffice,
    check_fix,
    geodesic_m,
    h3_cell,
    haversine_m,
    impossible_travel,
    office_from_feature,
    parse_offices,
)

# Metres per degree near Bangka (lat ~ -2.5), rounded; only used to *place* test geometry.
# Expected distances are measured with geodesic_m, independently of the module's projection.
M_PER_DEG_LAT = 110_580.0
M_PER_DEG_LON = 111_215.0

KOBA = (-2.4867, 106.4103)  # Kantor Bupati Bangka Tengah, Koba (approximate)
PANGKALPINANG = (-2.1291, 106.1138)  # Alun-alun Taman Merdeka, Pangkalpinang (approximate)


def offset(lat: float, lon: float, north_m: float, east_m: float) -> tuple[float, float]:
    return lat + north_m / M_PER_DEG_LAT, lon + east_m / M_PER_DEG_LON


def rect(lat: float, lon: float, w_m: float, h_m: float) -> list[list[float]]:
    """A closed [lon, lat] ring, w_m east-west by h_m north-south, centred on (lat, lon)."""
    s, w = offset(lat, lon, -h_m / 2, -w_m / 2)
    n, e = offset(lat, lon, h_m / 2, w_m / 2)
    return [[w, s], [e, s], [e, n], [w, n], [w, s]]


def feature(office_id: object, geometry: object, name: str = "Kantor") -> dict:
    props = {"name": name} if office_id is None else {"office_id": office_id, "name": name}
    return {"type": "Feature", "properties": props, "geometry": geometry}


def collection(*features: dict) -> dict:
    return {"type": "FeatureCollection", "features": list(features)}


# Kantor Bupati: a 120 m x 90 m compound. Pendidikan: two buildings 50 m apart (MultiPolygon).
# Camat Pangkalan Baru: a courtyard building (a 40 m x 40 m hole in a 100 m x 100 m block).
BUPATI_RING = rect(*KOBA, 120, 90)
PENDIDIKAN_A = rect(*offset(*KOBA, 300, 0), 60, 40)
PENDIDIKAN_B = rect(*offset(*KOBA, 300, 110), 60, 40)  # west edge 50 m east of A's east edge
PANGKALAN_BARU = (-2.1880, 106.1330)  # Kantor Camat Pangkalan Baru (approximate)
COURT_OUTER = rect(*PANGKALAN_BARU, 100, 100)
COURT_HOLE = rect(*PANGKALAN_BARU, 40, 40)[::-1]

OFFICES_GEOJSON = collection(
    feature("BT-SETDA", {"type": "Polygon", "coordinates": [BUPATI_RING]}, "Kantor Bupati"),
    feature(
        "BT-DISDIK",
        {"type": "MultiPolygon", "coordinates": [[PENDIDIKAN_A], [PENDIDIKAN_B]]},
        "Dinas Pendidikan",
    ),
    feature(
        "BT-CAMAT-PB",
        {"type": "Polygon", "coordinates": [COURT_OUTER, COURT_HOLE]},
        "Kantor Camat Pangkalan Baru",
    ),
)


@pytest.fixture(scope="module")
def fences() -> Geofences:
    return Geofences(parse_offices(OFFICES_GEOJSON))


# ------------------------------------------------------------------------------ parsing


def test_parse_offices_reads_polygons_and_multipolygons() -> None:
    offices = parse_offices(OFFICES_GEOJSON)
    assert [o.office_id for o in offices] == ["BT-SETDA", "BT-DISDIK", "BT-CAMAT-PB"]
    assert offices[0].name == "Kantor Bupati"
    assert offices[0].geometry.geom_type == "Polygon"
    assert offices[1].geometry.geom_type == "MultiPolygon"
    assert len(offices[2].geometry.interiors) == 1
    # third coordinate (altitude) is allowed and ignored; a missing name falls back to the id
    ring3d = [[*p, 12.0] for p in BUPATI_RING]
    f = {
        "type": "Feature",
        "properties": {"office_id": "X"},
        "geometry": {"type": "Polygon", "coordinates": [ring3d]},
    }
    office = office_from_feature(f)
    assert office.name == "X"
    assert not office.geometry.has_z


def bad(geometry: object, office_id: object = "BT-BAD") -> dict:
    return collection(feature(office_id, geometry))


def poly(*rings: list) -> dict:
    return {"type": "Polygon", "coordinates": list(rings)}


@pytest.mark.parametrize(
    ("fc", "needles"),
    [
        (bad(poly(BUPATI_RING[:-1])), ["BT-BAD", "not closed"]),
        (
            # a bow tie: the ring crosses itself
            bad(
                poly(
                    [BUPATI_RING[0], BUPATI_RING[2], BUPATI_RING[1], BUPATI_RING[3], BUPATI_RING[0]]
                )
            ),
            ["BT-BAD", "invalid polygon", "Self-intersection"],
        ),
        (bad(poly([[lat, lon] for lon, lat in BUPATI_RING])), ["BT-BAD", "[lat, lon]", "swap"]),
        (bad({"type": "Polygon", "coordinates": []}), ["BT-BAD", "empty"]),
        (bad({"type": "MultiPolygon", "coordinates": [[]]}), ["BT-BAD", "empty"]),
        (bad(poly([])), ["BT-BAD", "empty"]),
        (bad(None), ["BT-BAD", "empty"]),
        (bad(poly(BUPATI_RING), office_id=None), ["feature #0", "missing office_id"]),
        (bad(poly(BUPATI_RING), office_id="  "), ["missing office_id"]),
        (bad(poly(BUPATI_RING), office_id=17), ["missing office_id", "17"]),
        (bad({"type": "Point", "coordinates": [106.41, -2.48]}), ["BT-BAD", "'Point'"]),
        (bad({"type": "LineString", "coordinates": BUPATI_RING}), ["Polygon or MultiPolygon"]),
        (
            bad(poly([[200.0, -2.48], [200.001, -2.48], [200.001, -2.47], [200.0, -2.48]])),
            ["BT-BAD", "out of range", "200.0"],
        ),
        (
            bad(poly([[106.41, -95.0], [106.42, -95.0], [106.42, -94.0], [106.41, -95.0]])),
            ["out of range"],
        ),
        (bad(poly([BUPATI_RING[0], BUPATI_RING[1], BUPATI_RING[0]])), ["at least 4 positions"]),
        (bad(poly([[106.41, "x"], *BUPATI_RING])), ["not [lon, lat] numbers"]),
        (bad(poly([[106.41, math.nan], *BUPATI_RING])), ["not finite"]),
        (
            bad(poly([[106.41, -2.48], [106.41, -2.48], [106.41, -2.48], [106.41, -2.48]])),
            ["BT-BAD"],
        ),  # zero area
        (bad(poly(rect(*KOBA, 80_000, 80_000))), ["BT-BAD", "km"]),  # a district, not an office
        ({"type": "Feature"}, ["FeatureCollection"]),
        ({"type": "FeatureCollection"}, ["features"]),
        (
            collection(feature("A", poly(BUPATI_RING)), feature("A", poly(BUPATI_RING))),
            ["'A'", "duplicate"],
        ),
        (collection({"type": "Feature", "geometry": poly(BUPATI_RING)}), ["properties"]),
    ],
)
def test_parse_offices_rejects_bad_geofences(fc: dict, needles: list[str]) -> None:
    with pytest.raises(GeofenceError) as err:
        parse_offices(fc)
    for needle in needles:
        assert needle in str(err.value)
    assert isinstance(err.value, ValueError)


def test_holes_must_lie_inside() -> None:
    outside_hole = rect(*offset(*KOBA, 500, 0), 20, 20)
    with pytest.raises(GeofenceError, match="invalid polygon"):
        parse_offices(bad(poly(BUPATI_RING, outside_hole)))


# ------------------------------------------------------------------------------ geofences


def test_inside_is_distance_zero_with_the_verdict_cell(fences: Geofences) -> None:
    r = fences.locate("BT-SETDA", *KOBA)
    assert r.inside
    assert r.distance_m == 0.0
    assert r.h3_cell == h3_cell(*KOBA, DEFAULT_POLICY.h3_resolution)
    assert fences.cover_class("BT-SETDA", *KOBA) == "interior"  # the fast path answered


@pytest.mark.parametrize(
    ("east_m", "inside"),
    [(5, True), (20, True), (29, True), (31, False), (45, False), (250, False)],
)
def test_edge_and_outside_within_tolerance(fences: Geofences, east_m: float, inside: bool) -> None:
    # due east of the middle of the east edge: the nearest boundary point is at the same latitude
    edge_lon = BUPATI_RING[1][0]
    lat = KOBA[0]
    lon = edge_lon + east_m / M_PER_DEG_LON
    expected = geodesic_m(lat, edge_lon, lat, lon)
    r = fences.locate("BT-SETDA", lat, lon)
    assert r.inside is inside
    assert r.distance_m == pytest.approx(expected, abs=0.02)
    assert r == fences.locate_exact("BT-SETDA", lat, lon)


def test_corner_distance_is_to_the_corner(fences: Geofences) -> None:
    ne_lon, ne_lat = BUPATI_RING[2]
    lat, lon = ne_lat + 15 / M_PER_DEG_LAT, ne_lon + 20 / M_PER_DEG_LON
    r = fences.locate("BT-SETDA", lat, lon)
    assert r.distance_m == pytest.approx(geodesic_m(ne_lat, ne_lon, lat, lon), abs=0.02)
    assert r.distance_m == pytest.approx(25.0, abs=0.1)
    assert r.inside


def test_far_away_distance_is_geodesic(fences: Geofences) -> None:
    # Pangkalpinang is ~51 km NW of Koba; the nearest point of the compound is its NW corner
    nw_lon, nw_lat = BUPATI_RING[3]
    r = fences.locate("BT-SETDA", *PANGKALPINANG)
    assert not r.inside
    assert r.distance_m == pytest.approx(geodesic_m(*PANGKALPINANG, nw_lat, nw_lon), abs=1.0)
    assert 45_000 < r.distance_m < 55_000
    assert fences.cover_class("BT-SETDA", *PANGKALPINANG) == "outside"


def test_multipolygon_parts_and_the_gap_between(fences: Geofences) -> None:
    in_b = offset(*KOBA, 300, 110)
    assert fences.locate("BT-DISDIK", *in_b).distance_m == 0.0
    gap_middle = offset(*KOBA, 300, 55)  # 25 m from each building
    r = fences.locate("BT-DISDIK", *gap_middle)
    assert r.inside
    assert r.distance_m == pytest.approx(25.0, abs=0.1)
    assert not fences.locate("BT-DISDIK", *KOBA).inside  # the Bupati compound, 300 m south


def test_courtyard_hole_counts_as_outside_the_polygon(fences: Geofences) -> None:
    centre = fences.locate("BT-CAMAT-PB", *PANGKALAN_BARU)  # 20 m from the hole's walls
    assert centre.distance_m == pytest.approx(20.0, abs=0.1)
    assert centre.inside  # within the 30 m tolerance
    strict = Geofences(parse_offices(OFFICES_GEOJSON), GeoPolicy(geofence_tolerance_m=10.0))
    assert not strict.locate("BT-CAMAT-PB", *PANGKALAN_BARU).inside
    in_block = offset(*PANGKALAN_BARU, 0, 35)
    assert fences.locate("BT-CAMAT-PB", *in_block).distance_m == 0.0


def test_update_replaces_the_geofence_and_remove_forgets_it() -> None:
    fences = Geofences(parse_offices(OFFICES_GEOJSON))
    moved_to = offset(*KOBA, 1000, 1000)
    assert not fences.locate("BT-SETDA", *moved_to).inside
    fc = copy.deepcopy(OFFICES_GEOJSON)
    fc["features"][0]["geometry"]["coordinates"] = [rect(*moved_to, 100, 100)]
    fences.update(parse_offices(fc)[0])
    assert fences.locate("BT-SETDA", *moved_to).distance_m == 0.0
    assert not fences.locate("BT-SETDA", *KOBA).inside
    assert fences.office("BT-SETDA").geometry.contains(
        parse_offices(fc)[0].geometry.representative_point()
    )
    assert len(fences) == 3 and "BT-SETDA" in fences
    fences.remove("BT-SETDA")
    assert "BT-SETDA" not in fences
    assert len(fences) == 2 and "BT-CAMAT-PB" in fences and "BT-DISDIK" in fences
    with pytest.raises(UnknownOffice, match="BT-SETDA"):
        fences.locate("BT-SETDA", *KOBA)
    with pytest.raises(KeyError):
        fences.locate("NOPE", *KOBA)


def test_many_vertex_polygon_uses_geos_and_agrees() -> None:
    # a round 200-vertex "alun-alun" of radius 80 m
    lat0, lon0 = offset(*KOBA, -600, 0)
    ring = [
        list(offset(lat0, lon0, 80 * math.sin(t), 80 * math.cos(t))[::-1])
        for t in (2 * math.pi * k / 200 for k in range(200))
    ]
    ring.append(ring[0])
    fences = Geofences(parse_offices(collection(feature("ALUN", poly(ring)))))
    for east_m, expected in ((0, 0.0), (100, 20.0), (120, 40.0)):
        lat, lon = offset(lat0, lon0, 0, east_m)
        r = fences.locate("ALUN", lat, lon)
        assert r.distance_m == pytest.approx(expected, abs=0.1)
        assert r == fences.locate_exact("ALUN", lat, lon)


def test_locate_rejects_impossible_positions(fences: Geofences) -> None:
    for lat, lon in ((math.nan, 106.4), (-2.5, math.inf), (91.0, 106.4), (-2.5, 181.0)):
        with pytest.raises(ValueError):
            fences.locate("BT-SETDA", lat, lon)


# ------------------------------------------------------------------------------ H3, distances


def test_h3_cell() -> None:
    cell = h3_cell(-2.5, 106.4, 10)
    assert cell == "8a8caa4b65affff"  # lat, lon order (as h3); a swap would give another cell
    assert h3_cell(-2.5, 106.4, 9) != cell
    with pytest.raises(ValueError):
        h3_cell(91.0, 106.4, 10)
    with pytest.raises(ValueError):
        h3_cell(math.nan, 106.4, 10)


@pytest.mark.parametrize(
    ("p1", "p2", "metres", "source"),
    [
        # GeographicLib documentation example (JFK -> LHR), s12 = 5551759.400319 m
        ((40.6, -73.8), (51.6, -0.5), 5551759.400318679, "GeographicLib docs"),
        # geographiclib Rust crate README: Berkeley -> Port Moresby
        ((37.87622, -122.23558), (-9.4047, 147.1597), 10700471.955233702, "geographiclib-rs"),
        # geographiclib-js README: Wellington -> Salamanca, nearly antipodal, 19959679.267 m
        ((-41.32, 174.81), (40.96, -5.50), 19959679.267353822, "geographiclib-js"),
        # WGS84 quarter meridian (equator to pole), 10001965.729 m
        ((0.0, 0.0), (90.0, 0.0), 10001965.729, "WGS84 meridian arc"),
        # one degree of longitude on the equator is a * pi / 180
        ((0.0, 0.0), (0.0, 1.0), 6378137.0 * math.pi / 180, "WGS84 equator"),
    ],
)
def test_geodesic_known_values(
    p1: tuple[float, float], p2: tuple[float, float], metres: float, source: str
) -> None:
    assert geodesic_m(*p1, *p2) == pytest.approx(metres, abs=1e-3), source
    assert geodesic_m(*p2, *p1) == pytest.approx(metres, abs=1e-3), source


def test_geodesic_short_and_local() -> None:
    assert geodesic_m(*KOBA, *KOBA) == 0.0
    # 1e-6 degree of longitude at 10 N (GeographicLib): 0.109639364 m
    assert geodesic_m(10.0, 105.0, 10.0, 105.000001) == pytest.approx(0.109639364, abs=1e-6)
    koba_pkp = geodesic_m(*KOBA, *PANGKALPINANG)
    assert 50_000 < koba_pkp < 52_000
    assert haversine_m(*KOBA, *PANGKALPINANG) == pytest.approx(koba_pkp, rel=0.006)


def test_haversine_known_values() -> None:
    # one degree of latitude on the IUGG mean sphere: R * pi / 180
    assert haversine_m(0, 0, 1, 0) == pytest.approx(6371008.8 * math.pi / 180, abs=1e-6)
    assert haversine_m(0, 0, 0, 180) == pytest.approx(6371008.8 * math.pi, abs=1e-6)
    assert haversine_m(*KOBA, *KOBA) == 0.0


# ------------------------------------------------------------------------------ GPS sanity

T0 = datetime(2026, 3, 2, 0, 25, tzinfo=UTC)  # 07:25 WIB


def checkin(**kw: object) -> Checkin:
    base: dict[str, object] = dict(
        event_id="ev-1",
        nip="198001012005011001",
        device_id="dev-1",
        type=CheckinType.IN,
        server_time=T0,
        client_time=T0,
        lat=KOBA[0],
        lon=KOBA[1],
        accuracy_m=12.0,
        mock_location=False,
    )
    base.update(kw)
    return Checkin(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"lat": 91.0}, "lat=91.0"),
        ({"lat": -90.5}, "lat=-90.5"),
        ({"lon": 180.5}, "lon=180.5"),
        ({"lat": math.nan}, "nan"),
        ({"lon": math.inf}, "inf"),
        ({"lat": True}, "lat=True"),
        ({"lat": "-2.48"}, "lat='-2.48'"),
        ({"lat": 0.0, "lon": 0.0}, "null island"),
        ({"accuracy_m": -1.0}, "accuracy_m=-1.0"),
        ({"accuracy_m": math.nan}, "accuracy_m=nan"),
        ({"accuracy_m": math.inf}, "accuracy_m=inf"),
    ],
)
def test_check_fix_rejects_unjudgeable_fixes(kw: dict, needle: str) -> None:
    with pytest.raises(InvalidCheckin) as err:
        check_fix(checkin(**kw))
    assert needle in str(err.value)
    assert "ev-1" in str(err.value)


def test_check_fix_findings() -> None:
    assert check_fix(checkin()) == []
    (unknown,) = check_fix(checkin(accuracy_m=None))  # judged and reviewed, not refused
    assert unknown.reason is Reason.LOW_ACCURACY and unknown.evidence["accuracy_m"] is None
    assert check_fix(checkin(accuracy_m=0.0)) == []
    assert check_fix(checkin(accuracy_m=100.0)) == []  # the threshold itself is fine
    assert check_fix(checkin(lat=0.0, lon=106.4)) == []  # on the equator is not null island

    (low,) = check_fix(checkin(accuracy_m=150.0))
    assert low.reason is Reason.LOW_ACCURACY
    assert low.evidence == {"accuracy_m": 150.0, "low_accuracy_m": 100.0}

    (mock,) = check_fix(checkin(mock_location=True))
    assert mock.reason is Reason.MOCK_LOCATION

    both = check_fix(checkin(mock_location=True, accuracy_m=500.0), GeoPolicy(low_accuracy_m=50))
    assert [f.reason for f in both] == [Reason.MOCK_LOCATION, Reason.LOW_ACCURACY]
    for f in both:
        json.dumps(f.evidence, allow_nan=False)


# ------------------------------------------------------------------------------ travel


def fix(lat: float, lon: float, minutes: float, acc: float = 10.0, eid: str = "ev") -> Fix:
    return Fix(lat, lon, acc, T0 + timedelta(minutes=minutes), eid)


def test_koba_to_pangkalpinang_in_ten_minutes_is_impossible() -> None:
    prev = fix(*KOBA, 0, eid="ev-koba")
    cur = fix(*PANGKALPINANG, 10)
    finding = impossible_travel(prev, cur, DEFAULT_POLICY)
    assert finding is not None
    assert finding.reason is Reason.IMPOSSIBLE_TRAVEL
    ev = finding.evidence
    assert ev["previous_event_id"] == "ev-koba"
    assert ev["distance_m"] == pytest.approx(geodesic_m(*KOBA, *PANGKALPINANG), abs=0.01)
    assert ev["effective_distance_m"] == pytest.approx(ev["distance_m"] - 20.0, abs=0.01)
    assert ev["elapsed_s"] == 600.0
    assert ev["speed_kmh"] == pytest.approx(ev["effective_distance_m"] / 600 * 3.6, abs=0.01)
    assert 290 < ev["speed_kmh"] < 320
    json.dumps(ev, allow_nan=False)


def test_plausible_travel_is_fine() -> None:
    assert impossible_travel(None, fix(*KOBA, 0)) is None
    two_km = offset(*KOBA, 2000, 0)
    assert impossible_travel(fix(*KOBA, 0), fix(*two_km, 30)) is None  # 4 km/h
    # Koba -> Pangkalpinang in an hour by car (~50 km/h) is fine
    assert impossible_travel(fix(*KOBA, 0), fix(*PANGKALPINANG, 60)) is None


def test_accuracy_radii_cancel_a_short_jump() -> None:
    jump = offset(*KOBA, 1100, 0)  # 1.1 km in 20 s would be ~200 km/h
    assert impossible_travel(fix(*KOBA, 0), fix(*jump, 1 / 3)) is not None
    # ... but with 60 m radii on both fixes the effective distance is ~980 m, under 1 km
    assert impossible_travel(fix(*KOBA, 0, acc=60), fix(*jump, 1 / 3, acc=60)) is None


def test_same_server_time_is_infinite_speed() -> None:
    far = offset(*KOBA, 5000, 0)
    finding = impossible_travel(fix(*KOBA, 0), fix(*far, 0))
    assert finding is not None
    assert finding.evidence["speed_kmh"] is None
    assert finding.evidence["elapsed_s"] == 0
    json.dumps(finding.evidence, allow_nan=False)
    # the same place at the same time is not travel at all
    assert impossible_travel(fix(*KOBA, 0), fix(*KOBA, 0)) is None


def test_a_fix_arriving_after_a_later_one_is_judged_by_the_time_between() -> None:
    """5 km in 5 minutes is 60 km/h whichever of the two arrives first; 50 km is not."""
    near, far = offset(*KOBA, 5000, 0), offset(*KOBA, 50_000, 0)
    assert impossible_travel(fix(*KOBA, 10), fix(*near, 5)) is None
    finding = impossible_travel(fix(*KOBA, 10), fix(*far, 5))
    assert finding is not None
    assert finding.evidence["elapsed_s"] == 300
    assert finding.evidence["speed_kmh"] == pytest.approx(600, rel=0.01)


def test_travel_thresholds_follow_policy() -> None:
    prev, cur = fix(*KOBA, 0), fix(*offset(*KOBA, 3000, 0), 1)  # 3 km in 1 min ~ 179 km/h
    assert impossible_travel(prev, cur, GeoPolicy()) is not None
    assert impossible_travel(prev, cur, GeoPolicy(travel_max_kmh=200)) is None
    assert impossible_travel(prev, cur, GeoPolicy(travel_min_km=5)) is None


def test_fix_from_checkin() -> None:
    f = Fix.from_checkin(checkin(event_id="ev-9"))
    assert (f.lat, f.lon, f.accuracy_m, f.at, f.event_id) == (*KOBA, 12.0, T0, "ev-9")
    unknown = Fix.from_checkin(checkin(accuracy_m=None), GeoPolicy(low_accuracy_m=80))
    assert unknown.accuracy_m == 80.0
    for bad_fix in (
        (math.nan, 106.4, 5.0),
        (-2.5, 106.4, math.nan),
        (-2.5, 106.4, -1.0),
        (-2.5, 200.0, 5.0),
        (-2.5, 106.4, math.inf),
    ):
        with pytest.raises(ValueError):
            Fix(*bad_fix, T0, "ev-bad")


# ------------------------------------------------------------------------------ policy, bench


def test_policy_defaults_and_validation() -> None:
    p = GeoPolicy()
    assert (p.geofence_tolerance_m, p.low_accuracy_m, p.travel_min_km, p.travel_max_kmh) == (
        30.0,
        100.0,
        1.0,
        120.0,
    )
    assert p.h3_resolution == 10 and p.cover_resolution == 12
    for bad_kw in (
        {"geofence_tolerance_m": -1.0},
        {"low_accuracy_m": math.nan},
        {"travel_max_kmh": 0.0},
        {"h3_resolution": 16},
        {"cover_resolution": -1},
        {"cover_resolution": 12.0},
    ):
        with pytest.raises(ValueError):
            GeoPolicy(**bad_kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(("verdict_res", "cover_res"), [(11, 11), (12, 10), (9, 13)])
def test_verdict_cell_is_the_cell_of_the_position(verdict_res: int, cover_res: int) -> None:
    # H3 cells do not nest exactly: the verdict cell must come from the position, never from
    # the parent of the (finer) cover cell.
    policy = GeoPolicy(h3_resolution=verdict_res, cover_resolution=cover_res)
    fences = Geofences(parse_offices(OFFICES_GEOJSON), policy)
    for north in range(-60, 61, 7):
        for east in range(-90, 91, 7):
            lat, lon = offset(*KOBA, north, east)
            r = fences.locate("BT-SETDA", lat, lon)
            assert r.h3_cell == h3_cell(lat, lon, verdict_res)
            assert r == fences.locate_exact("BT-SETDA", lat, lon)


def test_bench_geo_runs() -> None:
    result = bench_geo(n=3000, offices=6, seed=1)
    assert result["n"] == 3000 and result["offices"] == 6
    assert isinstance(result["checkins_per_s"], int) and result["checkins_per_s"] > 0
    json.dumps(result, allow_nan=False)
