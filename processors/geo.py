"""Geography for Hadir: office geofences, H3 indexing, geodesic distances, GPS sanity checks and
impossible travel. Pure and synchronous: no I/O, no Kafka; the stream workers hold a
:class:`Geofences` and call these functions per check-in.

Conventions: latitudes and longitudes are WGS84 degrees, distances are metres unless a name says
otherwise (``_km``, ``_kmh``). GeoJSON positions are ``[lon, lat]``; every function here takes
``lat, lon`` in that order, like h3.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Final

import h3
import h3.api.basic_int as h3i
import numpy as np
import shapely
import shapely.affinity
from shapely.geometry import MultiPolygon, Point, Polygon
from shapely.geometry.base import BaseGeometry

from processors.events import Checkin, Finding, InvalidCheckin, Reason

__all__ = [
    "DEFAULT_POLICY",
    "Fix",
    "Frame",
    "GeoPolicy",
    "GeofenceError",
    "GeofenceResult",
    "Geofences",
    "Office",
    "UnknownOffice",
    "check_fix",
    "geodesic_m",
    "h3_cell",
    "haversine_m",
    "impossible_travel",
    "office_from_feature",
    "parse_offices",
]

# WGS84 ellipsoid.
WGS84_A: Final = 6378137.0
WGS84_F: Final = 1 / 298.257223563
WGS84_B: Final = WGS84_A * (1 - WGS84_F)
WGS84_E2: Final = WGS84_F * (2 - WGS84_F)
# IUGG mean Earth radius R1 = (2a + b) / 3, the usual sphere for haversine.
MEAN_EARTH_RADIUS_M: Final = 6371008.8

# Indonesia's bounding box (generous), used only to recognise [lat, lon] written as [lon, lat].
_INDONESIA_LON: Final = (94.0, 142.0)
_INDONESIA_LAT: Final = (-11.0, 6.0)

# An office geofence is a compound, not a district: beyond this the local projection and the
# cover would both be the wrong tools, and it is almost certainly a data error.
MAX_OFFICE_EXTENT_M: Final = 50_000.0

# Beyond this planar distance the distance to the polygon is re-measured on the ellipsoid
# (geodesic to the nearest boundary point found in the plane).
_GEODESIC_REFINE_M: Final = 1_000.0
# Polygons with more edges than this use shapely (GEOS) for the exact distance instead of the
# pure-Python loop, which is faster only for the small polygons offices usually are.
_PY_EDGE_LIMIT: Final = 64
# Safety margin (metres) when classifying cover cells, far above the sub-millimetre difference
# between an H3 cell's great-circle edges and the straight edges drawn in the local plane.
_COVER_EPS_M: Final = 0.05
# Segments per quarter circle for buffers; the inscribed-polygon error is r*(1-cos(pi/64)),
# 3.6 cm at r = 30 m, covered by _BUFFER_SLACK_M when we need an outer bound.
_QUAD_SEGS: Final = 16
_BUFFER_SLACK_M: Final = 0.25
# Cover cells per office at most; a larger office gets a coarser cover resolution.
_MAX_COVER_CELLS: Final = 20_000
# Spherical (haversine) distance differs from the WGS84 geodesic by under 0.6 % everywhere.
_SPHERE_REL_ERR: Final = 0.01


# --------------------------------------------------------------------------------------------
# Policy


@dataclass(frozen=True, slots=True)
class GeoPolicy:
    """The configurable numbers of the location rules (DESIGN.md, "Default policy").

    ``h3_resolution`` is the cell written into every verdict (``h3_cell``) for heatmaps:
    resolution 10 has ~76 m edges and ~15,000 m² cells, about one office building or compound,
    so a heatmap separates offices and their car parks without pinning a person to a few metres.

    ``cover_resolution`` is the finer grid of the geofence fast path: resolution 12 has ~11 m
    edges (~307 m² cells, ~22 m across), so even a 40 m x 40 m office has whole cells inside it
    and the band of cells straddling an edge, which need the exact test, stays one cell wide.
    At resolution 10 a typical 100 m office would have almost no interior cells. The verdict
    cell is always computed from the position itself: H3 cells do not nest exactly, so the
    parent of the cover cell is not always the cell that contains the point.
    """

    geofence_tolerance_m: float = 30.0
    low_accuracy_m: float = 100.0
    travel_min_km: float = 1.0
    travel_max_kmh: float = 120.0
    h3_resolution: int = 10
    cover_resolution: int = 12

    def __post_init__(self) -> None:
        for name in ("geofence_tolerance_m", "low_accuracy_m", "travel_min_km", "travel_max_kmh"):
            value = getattr(self, name)
            if not _is_number(value) or not math.isfinite(value) or value < 0:
                raise ValueError(f"GeoPolicy.{name} must be a finite number >= 0, got {value!r}")
        if self.travel_max_kmh <= 0:
            raise ValueError("GeoPolicy.travel_max_kmh must be > 0")
        for name in ("h3_resolution", "cover_resolution"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 15:
                raise ValueError(f"GeoPolicy.{name} must be an int in 0..15, got {value!r}")


# --------------------------------------------------------------------------------------------
# Small pure functions


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _valid_latlon(lat: object, lon: object) -> bool:
    return (
        _is_number(lat)
        and _is_number(lon)
        and -90.0 <= lat <= 90.0  # type: ignore[operator]  # False for NaN
        and -180.0 <= lon <= 180.0  # type: ignore[operator]
    )


def _require_latlon(lat: float, lon: float) -> None:
    if not _valid_latlon(lat, lon):
        raise ValueError(f"not a WGS84 position: lat={lat!r}, lon={lon!r}")


DEFAULT_POLICY: Final = GeoPolicy()


def h3_cell(lat: float, lon: float, res: int) -> str:
    """The H3 cell (hex string) containing the point at resolution ``res``."""
    _require_latlon(lat, lon)
    return h3.latlng_to_cell(lat, lon, res)


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance on the mean-radius sphere (within ~0.5 % of the geodesic)."""
    p1 = math.radians(lat1)
    p2 = math.radians(lat2)
    s_dlat = math.sin((p2 - p1) / 2)
    s_dlon = math.sin(math.radians(lon2 - lon1) / 2)
    h = s_dlat * s_dlat + math.cos(p1) * math.cos(p2) * s_dlon * s_dlon
    return 2 * MEAN_EARTH_RADIUS_M * math.asin(math.sqrt(min(1.0, h)))


def geodesic_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Geodesic distance on the WGS84 ellipsoid (Vincenty's inverse formula, 1975).

    Agrees with Karney's algorithm (GeographicLib) to well under a millimetre for any pair of
    points that are not nearly antipodal. For nearly antipodal points, where Vincenty's iteration
    does not converge, it falls back to :func:`haversine_m` (error up to ~0.5 %); no two places
    in Indonesia are anywhere near antipodal.
    """
    if lat1 == lat2 and lon1 == lon2:
        return 0.0
    f = WGS84_F
    dlon = (lon2 - lon1 + 180.0) % 360.0 - 180.0
    big_l = math.radians(dlon)
    u1 = math.atan((1 - f) * math.tan(math.radians(lat1)))
    u2 = math.atan((1 - f) * math.tan(math.radians(lat2)))
    sin_u1, cos_u1 = math.sin(u1), math.cos(u1)
    sin_u2, cos_u2 = math.sin(u2), math.cos(u2)
    lam = big_l
    for _ in range(200):
        sin_lam, cos_lam = math.sin(lam), math.cos(lam)
        t1 = cos_u2 * sin_lam
        t2 = cos_u1 * sin_u2 - sin_u1 * cos_u2 * cos_lam
        sin_sigma = math.sqrt(t1 * t1 + t2 * t2)
        if sin_sigma == 0.0:
            return 0.0
        cos_sigma = sin_u1 * sin_u2 + cos_u1 * cos_u2 * cos_lam
        sigma = math.atan2(sin_sigma, cos_sigma)
        sin_alpha = cos_u1 * cos_u2 * sin_lam / sin_sigma
        cos2_alpha = 1.0 - sin_alpha * sin_alpha
        # On the equator cos2_alpha is 0 and the term is irrelevant.
        cos_2sm = cos_sigma - 2.0 * sin_u1 * sin_u2 / cos2_alpha if cos2_alpha != 0.0 else 0.0
        c = f / 16.0 * cos2_alpha * (4.0 + f * (4.0 - 3.0 * cos2_alpha))
        lam_prev = lam
        lam = big_l + (1.0 - c) * f * sin_alpha * (
            sigma + c * sin_sigma * (cos_2sm + c * cos_sigma * (-1.0 + 2.0 * cos_2sm * cos_2sm))
        )
        if abs(lam) > math.pi:  # diverging: nearly antipodal
            break
        if abs(lam - lam_prev) <= 1e-15 * (1.0 + abs(lam)):  # relative: lam may be tiny
            u_sq = cos2_alpha * (WGS84_A * WGS84_A - WGS84_B * WGS84_B) / (WGS84_B * WGS84_B)
            a = 1 + u_sq / 16384 * (4096 + u_sq * (-768 + u_sq * (320 - 175 * u_sq)))
            b = u_sq / 1024 * (256 + u_sq * (-128 + u_sq * (74 - 47 * u_sq)))
            c2 = cos_2sm * cos_2sm
            inner = cos_sigma * (-1 + 2 * c2) - b / 6 * cos_2sm * (
                -3 + 4 * sin_sigma * sin_sigma
            ) * (-3 + 4 * c2)
            d_sigma = b * sin_sigma * (cos_2sm + b / 4 * inner)
            return WGS84_B * a * (sigma - d_sigma)
    return haversine_m(lat1, lon1, lat2, lon2)


# --------------------------------------------------------------------------------------------
# Offices from GeoJSON


class GeofenceError(ValueError):
    """An office geometry cannot be used as a geofence; the message names the office and says
    what is wrong and how to fix it."""


class UnknownOffice(KeyError):
    """No geofence is loaded for this office_id."""


@dataclass(frozen=True, slots=True)
class Office:
    """An office (OPD) and its geofence, in WGS84 lon/lat, valid and non-empty."""

    office_id: str
    name: str
    geometry: Polygon | MultiPolygon


def parse_offices(feature_collection: Mapping[str, object]) -> list[Office]:
    """Offices from a GeoJSON FeatureCollection (the scenario's ``offices.geojson``).

    Raises :class:`GeofenceError` for the first problem found: not a FeatureCollection, a
    missing or duplicate ``properties.office_id``, a geometry that is missing, empty, not a
    Polygon/MultiPolygon, has unclosed rings, coordinates out of range or in [lat, lon] order,
    or crosses itself.
    """
    if not isinstance(feature_collection, Mapping):
        raise GeofenceError(
            f"offices: expected a GeoJSON FeatureCollection object, "
            f"got {type(feature_collection).__name__}"
        )
    if feature_collection.get("type") != "FeatureCollection":
        raise GeofenceError(
            f"offices: expected type 'FeatureCollection', got {feature_collection.get('type')!r}"
        )
    features = feature_collection.get("features")
    if not isinstance(features, list):
        raise GeofenceError("offices: FeatureCollection has no 'features' list")
    offices: list[Office] = []
    seen: set[str] = set()
    for i, feature in enumerate(features):
        office = office_from_feature(feature, index=i)
        if office.office_id in seen:
            raise GeofenceError(f"office {office.office_id!r} (feature #{i}): duplicate office_id")
        seen.add(office.office_id)
        offices.append(office)
    return offices


def office_from_feature(feature: Mapping[str, object], index: int | None = None) -> Office:
    """One office from one GeoJSON Feature (a reference-data update carries one)."""
    where = f"feature #{index}" if index is not None else "feature"
    if not isinstance(feature, Mapping):
        raise GeofenceError(f"{where}: expected a GeoJSON Feature object")
    if feature.get("type", "Feature") != "Feature":
        raise GeofenceError(f"{where}: expected type 'Feature', got {feature.get('type')!r}")
    props = feature.get("properties")
    if not isinstance(props, Mapping):
        raise GeofenceError(f"{where}: missing 'properties' (office_id and name go there)")
    office_id = props.get("office_id")
    if not isinstance(office_id, str) or not office_id.strip():
        raise GeofenceError(
            f"{where}: missing office_id (properties.office_id must be a non-empty string, "
            f"got {office_id!r})"
        )
    name = props.get("name", office_id)
    if not isinstance(name, str):
        raise GeofenceError(f"office {office_id!r}: properties.name must be a string")
    label = f"office {office_id!r} ({where})"
    geometry = _parse_geometry(feature.get("geometry"), label)
    return Office(office_id=office_id, name=name or office_id, geometry=geometry)


_Ring = list[tuple[float, float]]


def _parse_geometry(geom: object, label: str) -> Polygon | MultiPolygon:
    if geom is None:
        raise GeofenceError(f"{label}: geometry is empty (null)")
    if not isinstance(geom, Mapping):
        raise GeofenceError(f"{label}: geometry must be a GeoJSON object")
    gtype = geom.get("type")
    if gtype not in ("Polygon", "MultiPolygon"):
        raise GeofenceError(
            f"{label}: geometry type must be Polygon or MultiPolygon, got {gtype!r}"
        )
    coords = geom.get("coordinates")
    if not isinstance(coords, list) or not coords:
        raise GeofenceError(f"{label}: {gtype} geometry is empty (no coordinates)")
    raw_polys = [coords] if gtype == "Polygon" else coords
    polys: list[list[_Ring]] = []
    for p, raw_poly in enumerate(raw_polys):
        plabel = label if gtype == "Polygon" else f"{label} polygon #{p}"
        if not isinstance(raw_poly, list) or not raw_poly:
            raise GeofenceError(f"{plabel}: polygon is empty (no rings)")
        rings: list[_Ring] = []
        for r, raw_ring in enumerate(raw_poly):
            rings.append(_parse_positions(raw_ring, f"{plabel} ring #{r}"))
        polys.append(rings)

    everything = [pt for rings in polys for ring in rings for pt in ring]
    _check_swapped(everything, label)
    for rings in polys:
        for ring in rings:
            for lon, lat in ring:
                if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
                    raise GeofenceError(
                        f"{label}: coordinate [{lon}, {lat}] out of range "
                        f"(GeoJSON positions are [lon, lat] with lon in -180..180, "
                        f"lat in -90..90)"
                    )
    for p, rings in enumerate(polys):
        for r, ring in enumerate(rings):
            rlabel = f"{label} ring #{r}" if len(polys) == 1 else f"{label} polygon #{p} ring #{r}"
            if ring[0] != ring[-1]:
                raise GeofenceError(
                    f"{rlabel}: ring is not closed: first position {list(ring[0])} differs from "
                    f"last {list(ring[-1])} (repeat the first position at the end)"
                )
            if len(ring) < 4:
                raise GeofenceError(
                    f"{rlabel}: a ring needs at least 4 positions (3 corners and the closing "
                    f"repeat), got {len(ring)}"
                )

    shapes = [Polygon(rings[0], rings[1:]) for rings in polys]
    result: Polygon | MultiPolygon = shapes[0] if gtype == "Polygon" else MultiPolygon(shapes)
    if not result.is_valid:
        reason = shapely.is_valid_reason(result)
        raise GeofenceError(
            f"{label}: invalid polygon: {reason} (rings must not cross or touch themselves, "
            f"holes must lie inside, and MultiPolygon parts must not overlap)"
        )
    if result.is_empty or result.area == 0.0:
        raise GeofenceError(f"{label}: geometry is empty (zero area)")
    minx, miny, maxx, maxy = result.bounds
    extent = geodesic_m(miny, minx, maxy, maxx)
    if extent > MAX_OFFICE_EXTENT_M:
        raise GeofenceError(
            f"{label}: geofence spans {extent / 1000:.1f} km, more than the "
            f"{MAX_OFFICE_EXTENT_M / 1000:.0f} km an office can plausibly cover"
        )
    return result


def _parse_positions(raw: object, label: str) -> _Ring:
    if not isinstance(raw, list) or not raw:
        raise GeofenceError(f"{label}: ring is empty (no positions)")
    ring: _Ring = []
    for pos in raw:
        if (
            not isinstance(pos, (list, tuple))
            or len(pos) < 2
            or not all(_is_number(v) for v in pos[:2])
        ):
            raise GeofenceError(f"{label}: position {pos!r} is not [lon, lat] numbers")
        lon, lat = float(pos[0]), float(pos[1])
        if not (math.isfinite(lon) and math.isfinite(lat)):
            raise GeofenceError(f"{label}: position {pos!r} is not finite")
        ring.append((lon, lat))
    return ring


def _in_indonesia(lon: float, lat: float) -> bool:
    return (
        _INDONESIA_LON[0] <= lon <= _INDONESIA_LON[1]
        and _INDONESIA_LAT[0] <= lat <= _INDONESIA_LAT[1]
    )


def _check_swapped(points: Sequence[tuple[float, float]], label: str) -> None:
    """[lat, lon] written where GeoJSON wants [lon, lat]: the positions are not in Indonesia (for
    Bangka the 'latitude' 106 is even out of range) but swapped they all are."""
    if all(_in_indonesia(lat, lon) for lon, lat in points) and not all(
        _in_indonesia(lon, lat) for lon, lat in points
    ):
        lon, lat = points[0]
        raise GeofenceError(
            f"{label}: coordinates look like [lat, lon] (first position [{lon}, {lat}] is not in "
            f"Indonesia, but [{lat}, {lon}] is); GeoJSON positions are [lon, lat]: swap them"
        )


# --------------------------------------------------------------------------------------------
# Geofences


@dataclass(frozen=True, slots=True)
class GeofenceResult:
    """Where a fix is relative to an office: ``distance_m`` is 0 inside the polygon, else the
    distance to its nearest boundary point; ``inside`` means within the policy's tolerance;
    ``h3_cell`` is the fix's cell at ``GeoPolicy.h3_resolution`` (for the verdict)."""

    inside: bool
    distance_m: float
    h3_cell: str


@dataclass(frozen=True, slots=True)
class Frame:
    """A local plane in metres around (lat0, lon0): x east, y north.

    It is an affine map of lon/lat (x = kx * dlon, y = ky * dlat, with kx, ky the WGS84 metres
    per degree at lat0), so straight GeoJSON edges stay straight, as RFC 7946 reads them. The
    scale error grows as tan(lat0) times the north-south offset in radians: at Bangka
    (lat ~ -2.5) under a centimetre per kilometre, and under 0.3 m/km even at 60 degrees.
    """

    lat0: float
    lon0: float
    kx: float
    ky: float

    @classmethod
    def at(cls, lat0: float, lon0: float) -> Frame:
        phi = math.radians(lat0)
        w = 1.0 - WGS84_E2 * math.sin(phi) ** 2
        n = WGS84_A / math.sqrt(w)  # prime-vertical radius of curvature
        m = WGS84_A * (1.0 - WGS84_E2) / (w * math.sqrt(w))  # meridional radius of curvature
        rad = math.pi / 180.0
        return cls(lat0, lon0, rad * n * math.cos(phi), rad * m)

    def to_xy(self, lat: float, lon: float) -> tuple[float, float]:
        dlon = lon - self.lon0
        if dlon > 180.0:
            dlon -= 360.0
        elif dlon < -180.0:
            dlon += 360.0
        return dlon * self.kx, (lat - self.lat0) * self.ky

    def to_latlon(self, x: float, y: float) -> tuple[float, float]:
        lon = self.lon0 + x / self.kx
        if lon > 180.0:
            lon -= 360.0
        elif lon < -180.0:
            lon += 360.0
        return self.lat0 + y / self.ky, lon

    def project(self, geom: BaseGeometry) -> BaseGeometry:
        """A lon/lat geometry in this plane."""
        return shapely.transform(
            geom,
            lambda c: _stack(
                ((c[:, 0] - self.lon0 + 180.0) % 360.0 - 180.0) * self.kx,
                (c[:, 1] - self.lat0) * self.ky,
            ),
        )

    def unproject(self, geom: BaseGeometry) -> BaseGeometry:
        """A geometry in this plane back in lon/lat."""
        return shapely.transform(
            geom, lambda c: _stack(self.lon0 + c[:, 0] / self.kx, self.lat0 + c[:, 1] / self.ky)
        )


def _stack(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.column_stack((x, y))


# Cover classes: the whole cell is inside the polygon / within the tolerance / touches the band.
_INTERIOR: Final = 0
_WITHIN_TOLERANCE: Final = 1
_EDGE: Final = 2


@dataclass(frozen=True, slots=True)
class _CompiledOffice:
    """Everything precomputed for one office: its local plane, the polygon in metres, the edges
    for the pure-Python exact test, and the H3 cover (cell -> class) at ``cover_res``."""

    office: Office
    frame: Frame
    local: BaseGeometry
    edges: tuple[tuple[float, float, float, float, float], ...]  # (ax, ay, dx, dy, 1/len²)
    cover: dict[int, int]  # cover cell -> _INTERIOR / _WITHIN_TOLERANCE / _EDGE
    cover_res: int
    interior: frozenset[int]  # the cover cells wholly inside the polygon: the fast path

    def planar_nearest(self, x: float, y: float) -> tuple[float, float, float]:
        """(distance, nearest x, nearest y) in the plane; (0, x, y) inside or on the boundary."""
        if len(self.edges) > _PY_EDGE_LIMIT:
            pt = Point(x, y)
            d = self.local.distance(pt)
            if d == 0.0:
                return 0.0, x, y
            nx, ny = shapely.shortest_line(self.local, pt).coords[0]
            return d, nx, ny
        inside = False
        best = math.inf
        bx = by = 0.0
        for ax, ay, dx, dy, inv in self.edges:
            if (ay > y) != (ay + dy > y) and x < ax + (y - ay) * dx / dy:
                inside = not inside  # even-odd ray casting over all rings
            t = ((x - ax) * dx + (y - ay) * dy) * inv
            if t < 0.0:
                t = 0.0
            elif t > 1.0:
                t = 1.0
            ex = ax + t * dx - x
            ey = ay + t * dy - y
            d2 = ex * ex + ey * ey
            if d2 < best:
                best, bx, by = d2, ax + t * dx, ay + t * dy
        if inside:
            return 0.0, x, y
        return math.sqrt(best), bx, by

    def distance_m(self, lat: float, lon: float) -> float:
        """Exact distance from the point to the polygon (0 inside)."""
        x, y = self.frame.to_xy(lat, lon)
        d, nx, ny = self.planar_nearest(x, y)
        if d > _GEODESIC_REFINE_M:
            nlat, nlon = self.frame.to_latlon(nx, ny)
            return geodesic_m(lat, lon, nlat, nlon)
        return d


def _edges(local: BaseGeometry) -> tuple[tuple[float, float, float, float, float], ...]:
    out: list[tuple[float, float, float, float, float]] = []
    polys = local.geoms if isinstance(local, MultiPolygon) else [local]
    for poly in polys:
        for ring in (poly.exterior, *poly.interiors):
            pts = list(ring.coords)
            for (ax, ay), (bx, by) in itertools.pairwise(pts):
                dx, dy = bx - ax, by - ay
                len2 = dx * dx + dy * dy
                if len2 > 0.0:
                    out.append((ax, ay, dx, dy, 1.0 / len2))
    return tuple(out)


def _compile(office: Office, policy: GeoPolicy) -> _CompiledOffice:
    minx, miny, maxx, maxy = office.geometry.bounds
    frame = Frame.at((miny + maxy) / 2, (minx + maxx) / 2)
    local = frame.project(office.geometry)
    tol = policy.geofence_tolerance_m
    inner = local.buffer(-_COVER_EPS_M, quad_segs=_QUAD_SEGS)
    within_tol = local.buffer(tol - _COVER_EPS_M, quad_segs=_QUAD_SEGS)
    band = local.buffer(tol + _BUFFER_SLACK_M, quad_segs=_QUAD_SEGS)

    res = policy.cover_resolution
    while res > 0 and band.area / h3.average_hexagon_area(res, "m^2") > _MAX_COVER_CELLS:
        res -= 1
    # A cell touching the band has its centre within one circumradius (= edge length, which
    # varies by under 2x around the globe) of the band: collect centres in a wider polygon.
    margin = 2.0 * h3.average_hexagon_edge_length(res, "m") + 1.0
    search = frame.unproject(band.buffer(margin, quad_segs=4))
    cells = h3i.geo_to_cells(search, res)

    cover: dict[int, int] = {}
    if cells:
        ids = list(cells)
        shapes = []
        for c in ids:
            ring = [frame.to_xy(la, lo) for la, lo in h3i.cell_to_boundary(c)]
            shapes.append(Polygon(ring))
        for g in (inner, within_tol, band):
            shapely.prepare(g)
        in_poly = shapely.within(shapes, inner)
        in_tol = shapely.within(shapes, within_tol)
        touches = shapely.intersects(shapes, band)
        for c, a, b, t in zip(ids, in_poly, in_tol, touches, strict=True):
            if a:
                cover[c] = _INTERIOR
            elif b:
                cover[c] = _WITHIN_TOLERANCE
            elif t:
                cover[c] = _EDGE
    interior = frozenset(c for c, cls in cover.items() if cls == _INTERIOR)
    return _CompiledOffice(office, frame, local, _edges(local), cover, res, interior)


class Geofences:
    """The geofences of all offices, precomputed for fast per-check-in lookups.

    For each office an H3 cover at ``policy.cover_resolution`` classifies every cell that
    touches the polygon buffered by the tolerance: wholly inside the polygon, wholly within the
    tolerance, or straddling an edge. :meth:`locate` answers from the cover when the fix's cell
    is wholly inside (distance 0) and measures exactly otherwise.

    Not thread-safe for concurrent :meth:`update` calls; a single replacement is atomic for
    readers (the dict entry is swapped once the new index is built).
    """

    def __init__(self, offices: Iterable[Office] = (), policy: GeoPolicy = DEFAULT_POLICY):
        self._policy = policy
        self._index: dict[str, _CompiledOffice] = {}
        self._hits: dict[int, GeofenceResult] = {}  # verdict cell -> inside, distance 0
        for office in offices:
            self.update(office)

    @property
    def policy(self) -> GeoPolicy:
        return self._policy

    def update(self, office: Office) -> None:
        """Add an office or replace its geofence (reference data changed)."""
        self._index[office.office_id] = _compile(office, self._policy)
        self._hits.clear()  # only ever grows with the covers; keep it bounded by them

    def remove(self, office_id: str) -> None:
        """Forget an office (a tombstone on the reference topic). Unknown ids are ignored."""
        self._index.pop(office_id, None)

    def __contains__(self, office_id: object) -> bool:
        return office_id in self._index

    def __len__(self) -> int:
        return len(self._index)

    def office(self, office_id: str) -> Office:
        return self._get(office_id).office

    def _get(self, office_id: str) -> _CompiledOffice:
        try:
            return self._index[office_id]
        except KeyError:
            raise UnknownOffice(f"no geofence for office {office_id!r}") from None

    def _cells(self, comp: _CompiledOffice, lat: float, lon: float) -> tuple[int, str]:
        """(cover cell, verdict cell) of a position."""
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):  # also rejects NaN
            raise ValueError(f"not a WGS84 position: lat={lat!r}, lon={lon!r}")
        cell = h3i.latlng_to_cell(lat, lon, comp.cover_res)
        return cell, format(h3i.latlng_to_cell(lat, lon, self._policy.h3_resolution), "x")

    def locate(self, office_id: str, lat: float, lon: float) -> GeofenceResult:
        """Where the fix is relative to the office's geofence: from the cover when the fix's
        cell lies wholly inside the polygon, else measured exactly."""
        comp = self._index.get(office_id)
        if comp is None:
            raise UnknownOffice(f"no geofence for office {office_id!r}")
        if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):  # also rejects NaN
            raise ValueError(f"not a WGS84 position: lat={lat!r}, lon={lon!r}")
        vcell = h3i.latlng_to_cell(lat, lon, self._policy.h3_resolution)
        if h3i.latlng_to_cell(lat, lon, comp.cover_res) in comp.interior:
            # The answer depends only on the verdict cell: share one immutable result per cell.
            hit = self._hits.get(vcell)
            if hit is None:
                hit = self._hits[vcell] = GeofenceResult(True, 0.0, format(vcell, "x"))
            return hit
        d = comp.distance_m(lat, lon)
        return GeofenceResult(d <= self._policy.geofence_tolerance_m, d, format(vcell, "x"))

    def locate_exact(self, office_id: str, lat: float, lon: float) -> GeofenceResult:
        """Like :meth:`locate` without the H3 fast path (audits and tests)."""
        comp = self._get(office_id)
        _, verdict_cell = self._cells(comp, lat, lon)
        d = comp.distance_m(lat, lon)
        return GeofenceResult(d <= self._policy.geofence_tolerance_m, d, verdict_cell)

    def cover_class(self, office_id: str, lat: float, lon: float) -> str:
        """Which path :meth:`locate` takes: 'interior', 'within_tolerance', 'edge' or
        'outside' (diagnostics and benchmarks)."""
        comp = self._get(office_id)
        cell, _ = self._cells(comp, lat, lon)
        cls = comp.cover.get(cell)
        return ("interior", "within_tolerance", "edge")[cls] if cls is not None else "outside"


# --------------------------------------------------------------------------------------------
# GPS sanity


def check_fix(checkin: Checkin, policy: GeoPolicy = DEFAULT_POLICY) -> list[Finding]:
    """Sanity of the phone's fix. Raises :class:`InvalidCheckin` when it cannot be judged at all
    (coordinates not finite or out of range, exactly 0,0 "null island", accuracy negative or
    not finite); returns MOCK_LOCATION and LOW_ACCURACY findings otherwise. A fix without an
    accuracy (the schema allows it) is LOW_ACCURACY: judged, and reviewed by a person, rather
    than a dead letter the ASN never hears of."""
    lat, lon, acc = checkin.lat, checkin.lon, checkin.accuracy_m
    if not _valid_latlon(lat, lon):
        raise InvalidCheckin(
            f"event {checkin.event_id}: position lat={lat!r}, lon={lon!r} is not a finite "
            f"WGS84 coordinate (lat -90..90, lon -180..180)"
        )
    if abs(lat) < 1e-7 and abs(lon) < 1e-7:
        raise InvalidCheckin(
            f"event {checkin.event_id}: position 0,0 ('null island'): the phone sent no fix"
        )
    if acc is not None and (not _is_number(acc) or not math.isfinite(acc) or acc < 0):
        raise InvalidCheckin(
            f"event {checkin.event_id}: accuracy_m={acc!r} is not a finite number >= 0"
        )
    findings: list[Finding] = []
    if checkin.mock_location:
        findings.append(Finding(Reason.MOCK_LOCATION, {"mock_location": True}))
    if acc is None or acc > policy.low_accuracy_m:
        findings.append(
            Finding(
                Reason.LOW_ACCURACY,
                {"accuracy_m": None if acc is None else float(acc),
                 "low_accuracy_m": float(policy.low_accuracy_m)},
            )
        )
    return findings


# --------------------------------------------------------------------------------------------
# Impossible travel


@dataclass(frozen=True, slots=True)
class Fix:
    """One position of one NIP, as remembered between check-ins. ``at`` is the server time
    (timezone-aware); ``accuracy_m`` the phone's reported radius."""

    lat: float
    lon: float
    accuracy_m: float
    at: datetime
    event_id: str

    def __post_init__(self) -> None:
        # Comparisons are False for NaN, so this also rejects NaN; a bad Fix would otherwise
        # turn into NaN evidence.
        if not (
            -90.0 <= self.lat <= 90.0
            and -180.0 <= self.lon <= 180.0
            and 0.0 <= self.accuracy_m < math.inf
        ):
            raise ValueError(
                f"event {self.event_id}: not a usable fix: lat={self.lat!r}, lon={self.lon!r}, "
                f"accuracy_m={self.accuracy_m!r}"
            )

    @classmethod
    def from_checkin(cls, checkin: Checkin, policy: GeoPolicy = DEFAULT_POLICY) -> Fix:
        """The fix of a check-in that passed :func:`check_fix`; one without an accuracy is
        taken as accurate to ``policy.low_accuracy_m`` (the least a usable fix promises)."""
        accuracy = policy.low_accuracy_m if checkin.accuracy_m is None else checkin.accuracy_m
        return cls(checkin.lat, checkin.lon, accuracy, checkin.captured_at, checkin.event_id)


def impossible_travel(
    prev: Fix | None, cur: Fix, policy: GeoPolicy = DEFAULT_POLICY
) -> Finding | None:
    """IMPOSSIBLE_TRAVEL when the distance between two consecutive fixes of one NIP, less both
    accuracy radii, exceeds ``travel_min_km`` and that distance over the server time between
    them exceeds ``travel_max_kmh``. The order does not matter (a check-in that arrives after
    a later one is the same journey, travelled the other way); the same server time counts as
    infinite speed, and its evidence then has ``speed_kmh`` None (JSON null)."""
    if prev is None:
        return None
    min_m = policy.travel_min_km * 1000.0
    slack = prev.accuracy_m + cur.accuracy_m
    # The sphere is within 0.6 % of the ellipsoid: most pairs (same office) end here cheaply.
    if haversine_m(prev.lat, prev.lon, cur.lat, cur.lon) * (1 + _SPHERE_REL_ERR) - slack <= min_m:
        return None
    distance = geodesic_m(prev.lat, prev.lon, cur.lat, cur.lon)
    effective = distance - slack
    if effective <= min_m:
        return None
    elapsed = abs((cur.at - prev.at).total_seconds())
    speed: float | None
    if elapsed > 0:
        speed = effective / elapsed * 3.6
        if speed <= policy.travel_max_kmh:
            return None
        speed = round(speed, 2)
    else:
        speed = None
    return Finding(
        Reason.IMPOSSIBLE_TRAVEL,
        {
            "distance_m": round(distance, 3),
            "effective_distance_m": round(effective, 3),
            "elapsed_s": float(elapsed),
            "speed_kmh": speed,
            "previous_event_id": prev.event_id,
        },
    )


def impossible_travel_between(
    before: Fix | None, cur: Fix, after: Fix | None, policy: GeoPolicy = DEFAULT_POLICY
) -> Finding | None:
    """:func:`impossible_travel` of ``cur`` against the same NIP's fixes just before and just
    after it in server time. A check-in that arrives late lies between two known fixes, and a
    jump to either is impossible travel (against only the newest fix, a late check-in far
    from an earlier one escaped). The evidence names the other check-in as
    ``previous_event_id``, or ``next_event_id`` when it is the later one."""
    jump = impossible_travel(before, cur, policy)
    if jump is not None or after is None:
        return jump
    jump = impossible_travel(after, cur, policy)
    if jump is None:
        return None
    evidence = dict(jump.evidence)
    evidence["next_event_id"] = evidence.pop("previous_event_id")
    return Finding(jump.reason, evidence)
