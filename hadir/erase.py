"""``hadir erase NIP``: offboarding an ASN (UU 27/2022 art. 42-44), each step reported, safe to
run again. What goes and what stays is processors/erasure.py's plan; this module does it:

1. the phone keys are revoked (hadir/devices.py), so nothing new arrives for the person;
2. on Kafka: the face template is tombstoned (the intake forgets it: a selfie under this NIP
   is NO_TEMPLATE from then on), so are the selfie index entries naming the NIP (the intake
   forgets those too), the employee record, the excuses, and the person's state in the core
   stage's changelog (the last day's GPS fixes);
3. once the sink has stored the employee and excuse tombstones (it writes the NIP into them),
   the person's rows are deleted from ClickHouse and the NIP is blanked where it appears in
   other rows, except the closed months' TPP lines (tpp_closed), which are kept as paid.

Refused while a month with the person's attendance is still open: its TPP is not frozen yet,
and erasing the attendance first would change what they are paid (close the month first).
"""

from __future__ import annotations

import time
from typing import Any

from hadir import devices, topics
from hadir.config import Settings
from hadir.kafka_records import placements, write
from hadir.mutations import Mutations
from hadir.serde import AvroCodec, Registry
from processors.erasure import (
    ERASED,
    PLAN,
    Action,
    check_nip,
    names_nip,
    unpaid_months,
)
from sinks.connection import rows

COLUMNS = ["step", "where", "count", "detail"]


class ErasureRefused(ValueError):
    """Erasing now would lose something that must be kept; the message says what to do."""


def _step(step: str, where: str, count: int, detail: str = "") -> dict[str, Any]:
    return {"step": step, "where": where, "count": count, "detail": detail}


def _tombstone(settings: Settings, topic: topics.Topic | topics.Changelog,
               wanted: Any) -> list[tuple[int, int]]:
    """Tombstones for every key ``wanted(key, newest_value)`` picks, on each partition where
    the key's newest record is not one already; returns (partition, offset) of each."""
    records = [(partition, key, None)
               for key, where in placements(settings, topic).items()
               for partition, found in where.items()
               if found.value is not None and wanted(key, found.value)]
    offsets = write(settings, topic.name, records)
    return [(p, o) for (p, _, _), o in zip(records, offsets, strict=True)]


def _wait_sunk(settings: Settings, sql: str, params: dict[str, Any],
               timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not rows(settings.infra, sql, params):
        if time.monotonic() > deadline:
            raise TimeoutError("the erasure's tombstones are on Kafka but not yet in ClickHouse "
                               f"after {timeout_s:.0f} s: is the sink running (`hadir run "
                               "--status`)? Run `hadir erase` again once it is")
        time.sleep(0.2)


def erase(settings: Settings, nip: str, force: bool = False) -> list[dict[str, Any]]:
    """Erase one ASN; returns the steps taken, each with what it changed (0: nothing left)."""
    from hadir.review import closed_months

    check_nip(nip)
    data_months = {f"{r['m'] // 100:04d}-{r['m'] % 100:02d}" for r in rows(settings.infra, (
        "SELECT DISTINCT toYYYYMM(local_date) AS m FROM checkins WHERE nip = %(n)s "
        "UNION ALL SELECT DISTINCT toYYYYMM(date) AS m FROM attendance_daily "
        "WHERE nip = %(n)s"), {"n": nip})}
    open_months = unpaid_months(data_months, closed_months(settings))
    if open_months and not force:
        raise ErasureRefused(
            f"{nip} has attendance in months not closed yet ({', '.join(open_months)}): their "
            "TPP is not frozen as paid. Close them first (`hadir month close YYYY-MM`), or "
            "give --force to erase anyway (that attendance is then lost for the report)")

    steps = []
    keys = devices.keys(settings, nip)
    revoked = devices.revoke(settings, nip=nip) if any(
        k.revoked_at is None for k in keys) else []
    steps.append(_step("device keys revoked", topics.DEVICES.name, len(revoked),
                       f"{len(keys)} key(s) registered, every one now revoked" if keys
                       else "no key registered"))

    key = nip.encode()
    faces = _tombstone(settings, topics.FACES, lambda k, _v: k == key)
    steps.append(_step("face template tombstoned", topics.FACES.name, len(faces),
                       "the intake forgets it: their selfies get NO_TEMPLATE"))

    codec = AvroCodec(topics.SELFIES, Registry(settings.infra.registry))
    selfies = _tombstone(settings, topics.SELFIES,
                         lambda _k, v: names_nip(codec.decode(v)["value"], nip))
    steps.append(_step("selfie fingerprints tombstoned", topics.SELFIES.name, len(selfies),
                       "the intake's replay index forgets them"))

    employee = _tombstone(settings, topics.EMPLOYEES, lambda k, _v: k == key)
    steps.append(_step("employee record tombstoned", topics.EMPLOYEES.name, len(employee)))
    prefix = key + b"|"
    excuses = _tombstone(settings, topics.EXCUSES, lambda k, _v: k.startswith(prefix))
    steps.append(_step("excuses tombstoned", topics.EXCUSES.name, len(excuses)))
    state = _tombstone(settings, topics.PERSON_STATE, lambda k, _v: k == key)
    steps.append(_step("location state tombstoned", topics.PERSON_STATE.name, len(state),
                       "the core stage's last-day fixes, forgotten at its next restart"))

    # The sink writes a tombstone as a row naming the NIP (deleted = 1): delete after it.
    for _partition, offset in employee:
        _wait_sunk(settings, "SELECT 1 FROM employees WHERE nip = %(n)s AND deleted = 1 "
                             "AND version >= %(o)s", {"n": nip, "o": offset})
    if excuses:
        _wait_sunk(settings, "SELECT 1 FROM excuses WHERE nip = %(n)s AND deleted = 1 "
                             "AND version >= %(o)s", {"n": nip, "o": max(o for _, o in excuses)})

    steps.extend(erase_clickhouse(settings, nip))
    return steps


def erase_clickhouse(settings: Settings, nip: str) -> list[dict[str, Any]]:
    """processors/erasure.py's plan on ClickHouse: the person's rows deleted, the NIP blanked
    in other rows' text, the kept tables left as they are."""
    steps = []
    db = Mutations(settings)
    try:
        for plan in PLAN:
            keys = db.key_columns(plan.table)
            unsafe = keys & set(plan.scrub)
            if unsafe:  # a plan that could not be carried out: refuse before changing anything
                raise ErasureRefused(f"{plan.table}: cannot blank key columns {sorted(unsafe)}")
            params = {"n": nip, "erased": ERASED}
            if plan.action is Action.DELETE:
                found = db.count(f"SELECT count() FROM {plan.table} WHERE nip = %(n)s", params)
                if found:
                    db.run(plan.table, "DELETE WHERE nip = %(n)s", params)
                steps.append(_step("rows deleted", plan.table, found, plan.why))
            others = " AND nip != %(n)s" if plan.action is Action.DELETE else ""
            for column in plan.scrub:
                found = db.count(f"SELECT count() FROM {plan.table} "
                                 f"WHERE position({column}, %(n)s) > 0{others}", params)
                if found:
                    db.run(plan.table, f"UPDATE {column} = replaceAll({column}, %(n)s, "
                           f"%(erased)s) WHERE position({column}, %(n)s) > 0{others}", params)
                    steps.append(_step(f"NIP blanked in {column}", plan.table, found,
                                       plan.why if plan.action is Action.KEEP else
                                       "other people's rows that named them"))
            if plan.action is Action.KEEP and not plan.scrub:
                found = db.count(f"SELECT count() FROM {plan.table} WHERE nip = %(n)s", params)
                steps.append(_step("kept", plan.table, found, plan.why))
        db.wait()
    finally:
        db.close()
    return steps
