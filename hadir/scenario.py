"""The scenario folder (DESIGN.md), read and checked completely before anything is published:
a bad row is reported with its file and line, and nothing is half-loaded.

    offices.geojson   FeatureCollection, properties.office_id and .name, (Multi)Polygon
    employees.csv     nip,name,office_id,tpp_base_idr,photo
    excuses.csv       nip,date_from,date_to,kind           (optional)
    events.jsonl      one check-in per line; selfie is a path relative to the folder
"""

from __future__ import annotations

import csv
import json
import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from processors.attendance import Excuse
from processors.geo import GeofenceError, Office, parse_offices

NIP = re.compile(r"^\d{18}$")
EMPLOYEE_COLUMNS = ["nip", "name", "office_id", "tpp_base_idr", "photo"]
EXCUSE_COLUMNS = ["nip", "date_from", "date_to", "kind"]
EVENT_FIELDS = ("event_id", "nip", "device_id", "type", "server_time", "client_time", "lat",
                "lon", "accuracy_m", "mock_location")


class ScenarioError(ValueError):
    """Every problem found in a scenario folder, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Employee:
    nip: str
    name: str
    office_id: str
    tpp_base_idr: int
    photo: Path | None


@dataclass(frozen=True)
class Event:
    """One line of events.jsonl, checked; ``selfie`` is the image file, if any."""

    line: int
    event_id: str
    nip: str
    device_id: str
    type: str
    server_time: datetime
    client_time: datetime | None
    lat: float
    lon: float
    accuracy_m: float | None
    mock_location: bool
    selfie: Path | None
    app_version: str = ""


@dataclass
class Scenario:
    root: Path
    offices: list[Office]
    office_features: dict[str, dict[str, Any]]
    employees: list[Employee]
    excuses: list[Excuse]
    events: list[Event] = field(default_factory=list)


def _time(value: Any, where: str, problems: list[str], required: bool = True) -> datetime | None:
    if value is None and not required:
        return None
    try:
        t = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        problems.append(f"{where}: {value!r} is not an RFC 3339 time")
        return None
    if t.tzinfo is None:
        problems.append(f"{where}: {value!r} has no UTC offset")
        return None
    return t


def _offices(root: Path, problems: list[str]) -> tuple[list[Office], dict[str, dict[str, Any]]]:
    path = root / "offices.geojson"
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"{path}: missing")
        return [], {}
    except UnicodeDecodeError as exc:
        problems.append(_not_utf8(path, exc))
        return [], {}
    except json.JSONDecodeError as exc:
        problems.append(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}")
        return [], {}
    try:
        offices = parse_offices(data)
    except GeofenceError as exc:
        problems.append(f"{path}: {exc}")
        return [], {}
    features = {f["properties"]["office_id"]: f for f in data.get("features", [])}
    return offices, features


def _employees(root: Path, office_ids: set[str], problems: list[str]) -> list[Employee]:
    path = root / "employees.csv"
    out: list[Employee] = []
    seen: set[str] = set()
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != EMPLOYEE_COLUMNS:
                problems.append(f"{path}:1: header must be {','.join(EMPLOYEE_COLUMNS)}, "
                                f"found {','.join(reader.fieldnames or [])}")
                return []
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if not _whole_row(row, where, problems):
                    continue
                nip = (row["nip"] or "").strip()
                if not NIP.match(nip):
                    problems.append(f"{where}: NIP {nip!r} is not 18 digits")
                    continue
                if nip in seen:
                    problems.append(f"{where}: NIP {nip} appears twice")
                seen.add(nip)
                if office_ids and row["office_id"] not in office_ids:
                    problems.append(f"{where}: office_id {row['office_id']!r} is not in "
                                    "offices.geojson")
                try:
                    base = int(row["tpp_base_idr"])
                    if base < 0:
                        raise ValueError
                except (TypeError, ValueError):
                    problems.append(f"{where}: tpp_base_idr {row['tpp_base_idr']!r} is not a "
                                    "whole number of rupiah >= 0")
                    continue
                photo = None
                if row["photo"]:
                    photo = root / row["photo"]
                    if not photo.is_file():
                        problems.append(f"{where}: photo {row['photo']} does not exist")
                out.append(Employee(nip, row["name"], row["office_id"], base, photo))
    except FileNotFoundError:
        problems.append(f"{path}: missing")
    except UnicodeDecodeError as exc:
        problems.append(_not_utf8(path, exc))
    return out


def _not_utf8(path: Path, exc: UnicodeDecodeError) -> str:
    return f"{path}: not UTF-8 text (byte {exc.start} cannot be decoded)"


def _whole_row(row: dict[str | None, Any], where: str, problems: list[str]) -> bool:
    """A CSV row with every column and no more (csv.DictReader fills the missing with None
    and puts the extra under the key None)."""
    if None in row or None in row.values():
        problems.append(f"{where}: a row must have {len(row) - (None in row)} fields")
        return False
    return True


def _excuses(root: Path, nips: set[str], problems: list[str]) -> list[Excuse]:
    path = root / "excuses.csv"
    if not path.exists():
        return []
    out: list[Excuse] = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != EXCUSE_COLUMNS:
                problems.append(f"{path}:1: header must be {','.join(EXCUSE_COLUMNS)}")
                return []
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if not _whole_row(row, where, problems):
                    continue
                try:
                    excuse = Excuse.parse(row["nip"], row["date_from"], row["date_to"],
                                          row["kind"])
                except ValueError as exc:
                    problems.append(f"{where}: {exc}")
                    continue
                if excuse.nip not in nips:
                    problems.append(f"{where}: NIP {excuse.nip} is not in employees.csv")
                out.append(excuse)
    except UnicodeDecodeError as exc:
        problems.append(_not_utf8(path, exc))
    return out


def _event(root: Path, line: int, where: str, raw: Any, problems: list[str]) -> Event | None:
    if not isinstance(raw, dict):
        problems.append(f"{where}: not a JSON object")
        return None
    missing = [k for k in EVENT_FIELDS if k not in raw]
    if missing:
        problems.append(f"{where}: missing {', '.join(missing)}")
        return None
    before = len(problems)
    try:
        event_id = str(uuid.UUID(str(raw["event_id"])))
    except ValueError:
        problems.append(f"{where}: event_id {raw['event_id']!r} is not a UUID")
        event_id = ""
    for k in ("nip", "device_id"):
        if not isinstance(raw[k], str) or not raw[k].strip():
            problems.append(f"{where}: {k} {raw[k]!r} is not a non-empty string")
    if raw["type"] not in ("IN", "OUT"):
        problems.append(f"{where}: type {raw['type']!r} is not IN or OUT")
    server = _time(raw["server_time"], f"{where}: server_time", problems)
    client = _time(raw["client_time"], f"{where}: client_time", problems, required=False)
    numbers = {}
    for k in ("lat", "lon", "accuracy_m"):
        v = raw[k]
        if v is None and k == "accuracy_m":
            numbers[k] = None
            continue
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            problems.append(f"{where}: {k} {v!r} is not a number")
        numbers[k] = v
    if not isinstance(raw["mock_location"], bool):
        problems.append(f"{where}: mock_location must be true or false")
    selfie = None
    if raw.get("selfie"):
        selfie = root / str(raw["selfie"])
        if not selfie.is_file():
            problems.append(f"{where}: selfie {raw['selfie']} does not exist")
    if len(problems) > before or server is None:
        return None
    return Event(line, event_id, str(raw["nip"]),
                 str(raw["device_id"]), raw["type"], server, client, numbers["lat"],
                 numbers["lon"], numbers["accuracy_m"], raw["mock_location"], selfie,
                 str(raw.get("app_version", "")))


def _events(root: Path, problems: list[str]) -> list[Event]:
    path = root / "events.jsonl"
    out: list[Event] = []
    try:
        with path.open("rb") as f:
            for n, data in enumerate(f, 1):
                if not data.strip():
                    continue
                where = f"{path}:{n}"
                try:
                    raw = json.loads(data.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    problems.append(f"{where}: not UTF-8 text (byte {exc.start} of the line)")
                    continue
                except json.JSONDecodeError as exc:
                    problems.append(f"{where}: not valid JSON: {exc.msg}")
                    continue
                event = _event(root, n, where, raw, problems)
                if event:
                    out.append(event)
    except FileNotFoundError:
        problems.append(f"{path}: missing")
    out.sort(key=lambda e: (e.server_time, e.line))
    return out


def load(root: Path) -> Scenario:
    """Read and check the whole folder; raises ScenarioError listing every problem."""
    if not root.is_dir():
        raise ScenarioError([f"{root}: not a folder"])
    problems: list[str] = []
    offices, features = _offices(root, problems)
    employees = _employees(root, {o.office_id for o in offices}, problems)
    excuses = _excuses(root, {e.nip for e in employees}, problems)
    events = _events(root, problems)
    if problems:
        raise ScenarioError(problems)
    return Scenario(root, offices, features, employees, excuses, events)
