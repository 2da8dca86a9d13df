"""hadir/dashboard/maps.py with plain data: the SVG a page shows."""

from __future__ import annotations

import h3

from hadir.dashboard.maps import office_shape, render

POLYGON = {"type": "Polygon", "coordinates": [[
    [106.4096, -2.4864], [106.4104, -2.4864], [106.4104, -2.4856], [106.4096, -2.4856],
    [106.4096, -2.4864]]]}


def test_offices_cells_and_fixes_are_drawn_with_their_verdicts() -> None:
    cell = h3.latlng_to_cell(-2.486, 106.41, 10)
    svg = render([office_shape(POLYGON, "Kantor <Bupati>")], [(cell, "REJECTED", 3)],
                 [(-2.486, 106.41, 12.0, "REVIEW")])
    assert svg.startswith("<svg") and svg.endswith("</svg>")
    assert "Kantor &lt;Bupati&gt;" in svg  # names are escaped
    assert svg.count("<polygon") == 2 and "#c62828" in svg and "#f9a825" in svg
    assert "REJECTED: 3 presensi" in svg


def test_a_multipolygon_office_and_an_empty_map() -> None:
    multi = {"type": "MultiPolygon", "coordinates": [POLYGON["coordinates"],
                                                     POLYGON["coordinates"]]}
    assert len(office_shape(multi, "x").rings) == 2
    assert "Tidak ada data" in render([], [])
