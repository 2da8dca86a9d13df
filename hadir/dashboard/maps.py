"""Office polygons, check-in cells and fixes as an SVG picture, drawn on the server: readable on
a laptop, and needing no map tiles (the stack may run without internet)."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import h3

COLOURS = {"ACCEPTED": "#2e7d32", "REVIEW": "#f9a825", "REJECTED": "#c62828"}
WIDTH, HEIGHT, MARGIN = 960, 600, 24


@dataclass(frozen=True)
class Shape:
    rings: list[list[tuple[float, float]]]  # (lat, lon)
    label: str


def office_shape(geometry: dict[str, Any], label: str) -> Shape:
    """A GeoJSON Polygon or MultiPolygon (lon, lat) as rings of (lat, lon)."""
    polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" \
        else geometry["coordinates"]
    return Shape([[(lat, lon) for lon, lat in ring] for polygon in polygons for ring in polygon],
                 label)


def cell_shape(cell: str) -> list[tuple[float, float]]:
    return list(h3.cell_to_boundary(cell))


def render(offices: Iterable[Shape], cells: Iterable[tuple[str, str, int]],
           fixes: Iterable[tuple[float, float, float, str]] = ()) -> str:
    """``cells``: (H3 cell, worst verdict, check-ins); ``fixes``: (lat, lon, accuracy m,
    verdict). Returns the ``<svg>`` element."""
    offices, cells, fixes = list(offices), list(cells), list(fixes)
    hexes = [(cell_shape(c), verdict, n) for c, verdict, n in cells]
    points = [p for s in offices for ring in s.rings for p in ring]
    points += [p for ring, _, _ in hexes for p in ring] + [(lat, lon) for lat, lon, _, _ in fixes]
    if not points:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} 80" '
                'role="img"><text x="20" y="45">Tidak ada data untuk peta ini.</text></svg>')
    lats, lons = [p[0] for p in points], [p[1] for p in points]
    south, north, west, east = min(lats), max(lats), min(lons), max(lons)
    squeeze = math.cos(math.radians((south + north) / 2))  # metres per degree of longitude
    span_x = max((east - west) * squeeze, 1e-4)
    span_y = max(north - south, 1e-4)
    scale = min((WIDTH - 2 * MARGIN) / span_x, (HEIGHT - 2 * MARGIN) / span_y)

    def xy(lat: float, lon: float) -> str:
        return f"{MARGIN + (lon - west) * squeeze * scale:.1f},{MARGIN + (north - lat) * scale:.1f}"

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
           'role="img" class="peta">']
    for shape in offices:
        for ring in shape.rings:
            out.append(f'<polygon points="{" ".join(xy(*p) for p in ring)}" '
                       'fill="#1565c022" stroke="#1565c0" stroke-width="1.5"/>')
        x, y = xy(*shape.rings[0][0]).split(",")
        out.append(f'<text x="{x}" y="{y}" class="label">{html.escape(shape.label)}</text>')
    for ring, verdict, n in hexes:
        out.append(f'<polygon points="{" ".join(xy(*p) for p in ring)}" '
                   f'fill="{COLOURS.get(verdict, "#757575")}" fill-opacity="0.6" stroke="#fff">'
                   f'<title>{html.escape(verdict)}: {n} presensi</title></polygon>')
    for lat, lon, accuracy, verdict in fixes:
        x, y = xy(lat, lon).split(",")
        radius = max(3.0, accuracy / 111_320 * scale)  # the accuracy circle, in metres
        out.append(f'<circle cx="{x}" cy="{y}" r="{radius:.1f}" fill="none" '
                   f'stroke="{COLOURS.get(verdict, "#757575")}" stroke-width="2"/>'
                   f'<circle cx="{x}" cy="{y}" r="3" fill="{COLOURS.get(verdict, "#757575")}"/>')
    out.append("</svg>")
    return "".join(out)
