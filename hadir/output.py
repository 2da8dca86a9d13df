"""How commands print: a table for people, ``--format json`` or ``--format csv`` for programs."""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence
from datetime import date, datetime
from decimal import Decimal
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table

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
        table = Table(title=title, show_lines=False, header_style="bold")
        cells = [[_cell(r.get(c)) for c in cols] for r in rows]
        widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(cols)]
        widest = widths.index(max(widths)) if widths else -1
        for i, c in enumerate(cols):  # only the widest column wraps; ids stay on one line
            table.add_column(c, overflow="fold", no_wrap=i != widest)
        for row in cells:
            table.add_row(*row)
        Console(file=out, width=max(100, Console().width)).print(table)


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
