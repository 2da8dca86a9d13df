"""The scenario folder (DESIGN.md), read and checked completely before anything is published:
a bad row is reported with its file and line, and nothing is half-loaded.

    offices.geojson   FeatureCollection, properties.office_id and .name, (Multi)Polygon
    employees.csv     nip,name,office_id,tpp_base_idr,photo
    excuses.csv       nip,date_from,date_to,kind           (optional)
    events.jsonl      one check-in per line; selfie is a path relative to the folder
    decisions.csv     event_id,decision,reviewer,note,decided_at   (optional; reviewers' work,
                      applied after every event has its verdict)
"""

from __future__ import annotations

import csv
import json
import math
import re
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from processors.attendance import Excuse
from processors.geo import GeofenceError, Office, parse_offices
from processors.review import Decision, DecisionKind, check_name, check_note

NIP = re.compile(r"^[0-9]{18}$")
MAX_SELFIE_BYTES = 3_900_000  # with the rest of its record, under replay's 4 MB messages
MAX_TPP_IDR = 2**63 - 1  # an Avro long
EMPLOYEE_COLUMNS = ["nip", "name", "office_id", "tpp_base_idr", "photo"]
EXCUSE_COLUMNS = ["nip", "date_from", "date_to", "kind"]
DECISION_COLUMNS = ["event_id", "decision", "reviewer", "note", "decided_at"]
_DECISION_IDS = uuid.UUID("3f1c2a9e-8d4b-4c67-9a0e-68616469720b")
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
    decisions: list[Decision] = field(default_factory=list)


def _time(value: Any, where: str, problems: list[str], required: bool = True) -> datetime | None:
    if value is None and not required:
        return None
    try:
        t = datetime.fromisoformat(re.sub(r"[zZ]$", "+00:00", str(value)))
    except ValueError:
        problems.append(f"{where}: {value!r} is not an RFC 3339 time")
        return None
    if t.tzinfo is None:
        problems.append(f"{where}: {value!r} has no UTC offset")
        return None
    return t


def _inside(root: Path, relative: str, what: str, where: str, problems: list[str],
            max_bytes: int = MAX_SELFIE_BYTES) -> Path | None:
    """A file named relative to the folder, which must lie inside it (no absolute paths, no
    ``..`` or symbolic links out of it: its bytes are published)."""
    try:
        path = (root / relative).resolve()
        if Path(relative).is_absolute() or not path.is_relative_to(root.resolve()):
            problems.append(f"{where}: {what} {relative} is not inside the scenario folder")
            return None
        if not path.is_file():
            problems.append(f"{where}: {what} {relative} does not exist")
            return None
        size = path.stat().st_size
        if size > max_bytes:
            problems.append(f"{where}: {what} {relative} is {size:,} bytes; "
                            f"the most a check-in carries is {max_bytes:,}")
            return None
        return path
    except OSError as exc:
        problems.append(f"{where}: {what} {relative[:80]!r}: {exc.strerror}")
    except (ValueError, RuntimeError) as exc:  # a NUL in the name, a symbolic link loop
        problems.append(f"{where}: {what} {relative[:80]!r}: {exc}")
    return None


def _read_json(path: Path, problems: list[str]) -> Any:
    """The file's JSON (a byte-order mark allowed), or None with the problem noted."""
    try:
        return json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        problems.append(f"{path}: missing")
    except UnicodeDecodeError as exc:
        problems.append(_not_utf8(path, exc))
    except json.JSONDecodeError as exc:
        problems.append(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}")
    except (ValueError, RecursionError) as exc:  # a 5,000-digit number, nesting too deep
        problems.append(f"{path}: not usable JSON: {type(exc).__name__}")
    except OSError as exc:
        problems.append(f"{path}: cannot be read: {exc.strerror}")
    return None


def _offices(root: Path, problems: list[str]) -> tuple[list[Office], dict[str, dict[str, Any]]]:
    path = root / "offices.geojson"
    data = _read_json(path, problems)
    if data is None:
        return [], {}
    try:
        offices = parse_offices(data)
    except (GeofenceError, OverflowError) as exc:
        problems.append(f"{path}: {exc}")
        return [], {}
    if not offices:
        problems.append(f"{path}: no offices (every employee's office must be in it)")
        return [], {}
    features = {f["properties"]["office_id"]: f for f in data.get("features", [])}
    return offices, features


def _employees(root: Path, office_ids: set[str] | None,
               problems: list[str]) -> list[Employee]:
    """``office_ids`` None: offices.geojson could not be read (its problem is reported)."""
    out: list[Employee] = []
    seen: set[str] = set()
    for where, row in _csv_rows(root / "employees.csv", EMPLOYEE_COLUMNS, problems,
                                required=True):
        nip = (row["nip"] or "").strip()
        if not NIP.match(nip):
            problems.append(f"{where}: NIP {nip!r} is not 18 digits")
            continue
        if nip in seen:
            problems.append(f"{where}: NIP {nip} appears twice")
        seen.add(nip)
        if office_ids is not None and row["office_id"] not in office_ids:
            problems.append(f"{where}: office_id {row['office_id']!r} is not in "
                            "offices.geojson")
        try:
            base = int(row["tpp_base_idr"])
            if not 0 <= base <= MAX_TPP_IDR:
                raise ValueError
        except (TypeError, ValueError):
            problems.append(f"{where}: tpp_base_idr {row['tpp_base_idr'][:40]!r} is not "
                            "a whole number of rupiah >= 0")
            continue
        photo = None
        if row["photo"]:
            # enrolled here, never published: no size limit but the decoder's
            photo = _inside(root, row["photo"], "photo", where, problems, sys.maxsize)
        out.append(Employee(nip, row["name"], row["office_id"], base, photo))
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


def _csv_rows(path: Path, columns: list[str], problems: list[str],
              required: bool = False) -> Iterator[tuple[str, dict[str, Any]]]:
    """Where (file:line) and the row, for each whole row of a CSV file whose header is
    ``columns``; everything wrong with the file is a problem (its absence only if
    ``required``)."""
    if not required and not path.exists():
        return
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != columns:
                problems.append(f"{path}:1: header must be {','.join(columns)}, "
                                f"found {','.join(reader.fieldnames or [])}")
                return
            for row in reader:
                where = f"{path}:{reader.line_num}"
                if _whole_row(row, where, problems):
                    yield where, row
    except FileNotFoundError:
        problems.append(f"{path}: missing")
    except UnicodeDecodeError as exc:
        problems.append(_not_utf8(path, exc))
    except OSError as exc:
        problems.append(f"{path}: cannot be read: {exc.strerror}")


def _excuses(root: Path, nips: set[str], problems: list[str]) -> list[Excuse]:
    out: list[Excuse] = []
    lines: dict[tuple[str, Any, Any], str] = {}  # an excuse's key on the topic -> its line
    for where, row in _csv_rows(root / "excuses.csv", EXCUSE_COLUMNS, problems):
        try:
            excuse = Excuse.parse(row["nip"], row["date_from"], row["date_to"], row["kind"])
        except ValueError as exc:
            problems.append(f"{where}: {exc}")
            continue
        if excuse.nip not in nips:
            problems.append(f"{where}: NIP {excuse.nip} is not in employees.csv")
        key = (excuse.nip, excuse.date_from, excuse.kind)
        if key in lines:  # one would replace the other: merge them into one row
            problems.append(f"{where}: {excuse.kind.value} for {excuse.nip} from "
                            f"{excuse.date_from} is also on line {lines[key]}")
        lines.setdefault(key, where.rsplit(":", 1)[1])
        out.append(excuse)
    return out


def _decisions(root: Path, event_ids: set[str], problems: list[str]) -> list[Decision]:
    out: list[Decision] = []
    for where, row in _csv_rows(root / "decisions.csv", DECISION_COLUMNS, problems):
        decided_at = _time(row["decided_at"], f"{where}: decided_at", problems)
        try:
            event_id = str(uuid.UUID(row["event_id"]))
            kind = DecisionKind(row["decision"])
            reviewer, note = check_name(row["reviewer"]), check_note(row["note"])
        except ValueError as exc:  # ReviewError too
            problems.append(f"{where}: {exc}")
            continue
        if event_id not in event_ids:
            problems.append(f"{where}: event {event_id} is not in events.jsonl")
            continue
        if decided_at is not None:  # its id from its content: a second replay is a no-op
            decision_id = str(uuid.uuid5(_DECISION_IDS, f"{event_id}|{kind.value}|"
                                         f"{reviewer}|{decided_at.isoformat()}"))
            out.append(Decision(decision_id, event_id, "", kind, reviewer, note, decided_at))
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
        try:
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ValueError
            v = float(v)
            if not math.isfinite(v):
                raise ValueError
        except (ValueError, OverflowError):
            problems.append(f"{where}: {k} {str(v)[:40]!r} is not a number")
        numbers[k] = v
    if not isinstance(raw["mock_location"], bool):
        problems.append(f"{where}: mock_location must be true or false")
    selfie = None
    if raw.get("selfie"):
        selfie = _inside(root, str(raw["selfie"]), "selfie", where, problems)
    if len(problems) > before or server is None:
        return None
    return Event(line, event_id, str(raw["nip"]),
                 str(raw["device_id"]), raw["type"], server, client, numbers["lat"],
                 numbers["lon"], numbers["accuracy_m"], raw["mock_location"], selfie,
                 str(raw.get("app_version", "")))


def _events(root: Path, problems: list[str]) -> list[Event]:
    path = root / "events.jsonl"
    out: list[Event] = []
    lines: dict[str, int] = {}
    try:
        with path.open("rb") as f:
            for n, data in enumerate(f, 1):
                if not data.strip():
                    continue
                where = f"{path}:{n}"
                try:
                    raw = json.loads(data.decode("utf-8-sig" if n == 1 else "utf-8"))
                except UnicodeDecodeError as exc:
                    problems.append(f"{where}: not UTF-8 text (byte {exc.start} of the line)")
                    continue
                except json.JSONDecodeError as exc:
                    problems.append(f"{where}: not valid JSON: {exc.msg}")
                    continue
                except (ValueError, RecursionError) as exc:  # 5,000 digits, too deep
                    problems.append(f"{where}: not usable JSON: {type(exc).__name__}")
                    continue
                event = _event(root, n, where, raw, problems)
                if event is None:
                    continue
                if event.event_id in lines:  # one would be taken for a re-sent copy
                    problems.append(f"{where}: event_id {event.event_id} is also on line "
                                    f"{lines[event.event_id]}")
                    continue
                lines[event.event_id] = n
                out.append(event)
    except FileNotFoundError:
        problems.append(f"{path}: missing")
    except OSError as exc:
        problems.append(f"{path}: cannot be read: {exc.strerror}")
    out.sort(key=lambda e: (e.server_time, e.line))
    return out


def load(root: Path) -> Scenario:
    """Read and check the whole folder; raises ScenarioError listing every problem."""
    if not root.is_dir():
        raise ScenarioError([f"{root}: not a folder"])
    problems: list[str] = []
    offices, features = _offices(root, problems)
    employees = _employees(root, {o.office_id for o in offices} if offices else None, problems)
    excuses = _excuses(root, {e.nip for e in employees}, problems)
    events = _events(root, problems)
    decisions = _decisions(root, {e.event_id for e in events}, problems)
    if problems:
        raise ScenarioError(problems)
    return Scenario(root, offices, features, employees, excuses, events, decisions)
