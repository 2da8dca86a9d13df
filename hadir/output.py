"""How commands print: a table for people, ``--format json`` or ``--format csv`` for programs."""

from __future__ import annotations

import csv
import json
import re
import shutil
import sys
import textwrap
from collections.abc import Callable, Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TextIO

FORMATS = ("table", "json", "csv")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")


def to_json(value: Any) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=False, indent=2)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    if isinstance(value, list | tuple):
        return ",".join(_cell(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, default=_json_default, ensure_ascii=False)
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def emit(rows: Sequence[dict[str, Any]], fmt: str = "table", title: str | None = None,
         columns: Iterable[str] | None = None, out: TextIO | None = None) -> None:
    out = out or sys.stdout
    cols = list(columns) if columns is not None else (list(rows[0]) if rows else [])
    if fmt == "json":
        out.write(to_json([{c: r.get(c) for c in cols} for r in rows]) + "\n")
    elif fmt == "csv":
        writer = csv.writer(out)
        writer.writerow(cols)
        for r in rows:
            writer.writerow([_cell(r.get(c)) for c in cols])
    else:
        cells = [[_cell(r.get(c)) for c in cols] for r in rows]
        width = max(100, shutil.get_terminal_size((100, 24)).columns)
        out.write(render_table(cols, cells, title, width))


def row_writer(fmt: str, columns: Sequence[str],
               out: TextIO | None = None) -> Callable[[dict[str, Any]], None]:
    """Rows written one at a time as they arrive (``hadir alerts --follow``), for programs:
    JSON lines (each as an element of ``emit``'s JSON) or CSV under one header line."""
    stream = out or sys.stdout
    if fmt == "json":
        def write(row: dict[str, Any]) -> None:
            stream.write(json.dumps({c: row.get(c) for c in columns}, default=_json_default,
                                    ensure_ascii=False) + "\n")
            stream.flush()
        return write
    if fmt != "csv":
        raise ValueError(f"rows are written one at a time as json or csv, not {fmt!r}")
    writer = csv.writer(stream)
    writer.writerow(columns)

    def write_csv(row: dict[str, Any]) -> None:
        writer.writerow([_cell(row.get(c)) for c in columns])
        stream.flush()
    return write_csv


_NUMBER = re.compile(r"-?[0-9][0-9,.]*")


def render_table(cols: list[str], cells: list[list[str]], title: str | None = None,
                 width: int = 100) -> str:
    """A plain text table for people: a header, a rule, one line per row, numbers right-aligned.
    When it is wider than ``width``, the widest column of free text (values with spaces: names,
    descriptions) wraps at its spaces; ids and numbers stay on one line.
    Plain text because a month's TPP report has 5,000 lines: a rich table took 17 s."""
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(cols)]
    right = [bool(cells) and all(_NUMBER.fullmatch(row[i]) for row in cells if row[i])
             for i in range(len(cols))]
    gap = "  "
    excess = sum(widths) + len(gap) * (len(cols) - 1) - width
    text = [i for i in range(len(cols)) if any(" " in row[i] for row in cells)]
    if excess > 0 and text:
        widest = max(text, key=lambda i: widths[i])
        widths[widest] = max(min(20, widths[widest]), widths[widest] - excess)
    lines = [title] if title else []

    align = [str.rjust if r else str.ljust for r in right]

    def add(row: list[str]) -> None:
        folded = [(textwrap.wrap(cell, w) if len(cell) > w else [cell]) or [""]
                  for cell, w in zip(row, widths, strict=True)]
        for j in range(max(len(parts) for parts in folded)):
            lines.append(gap.join(
                pad(parts[j] if j < len(parts) else "", w)
                for parts, w, pad in zip(folded, widths, align, strict=True)).rstrip())

    add(cols)
    lines.append(gap.join("-" * w for w in widths))
    for row in cells:
        add(row)
    return "\n".join(lines) + "\n"


def emit_object(obj: dict[str, Any], fmt: str = "table", title: str | None = None,
                out: TextIO | None = None) -> None:
    """One result (e.g. a face comparison): key/value lines for people, an object for programs."""
    out = out or sys.stdout
    if fmt == "json":
        out.write(to_json(obj) + "\n")
    elif fmt == "csv":
        emit([obj], "csv", out=out)
    else:
        if title:
            out.write(f"{title}\n")
        width = max((len(k) for k in obj), default=0)
        for k, v in obj.items():
            out.write(f"  {k:<{width}}  {_cell(v)}\n")
