"""``hadir retention run``: what the retention rules (processors/retention.py) ask of the stores,
done; idempotent, so safe to schedule daily.

- ClickHouse ``checkins``: positions older than ``privacy.coordinates_days`` become the centre
  of their H3 cell, by mutations (``ALTER TABLE ... UPDATE``: lat and lon are not key columns,
  which is checked before anything changes). ClickHouse 18.16 has no H3 functions, so the
  centres are computed here, per cell, and handed to ClickHouse as a ``transform`` table, a
  chunk of cells per mutation (a query is at most 256 KiB).
- Kafka ``hadir.checkins.raw`` and ``hadir.checkins.dlq`` (the only places selfies are kept):
  ``retention.ms`` set to ``privacy.selfies_days``, on topics that exist (``hadir infra up``
  creates them with its own default).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hadir import topics
from hadir.config import Settings
from hadir.kafka_records import placements, retention, set_retention, write
from hadir.mutations import Mutations
from hadir.serde import AvroCodec, Registry
from processors.retention import (
    CENTRE_TOLERANCE_DEG,
    cell_centre,
    coarsened,
    cutoff,
    is_coarse,
    retention_ms,
    sighted_before,
    topic_changes,
)

COLUMNS = ["store", "what", "changed", "detail"]
CELLS_PER_MUTATION = 1000  # about 60 bytes of SQL a cell: well under a query's 256 KiB
SELFIE_TOPICS = (topics.RAW, topics.DLQ)


def run(settings: Settings, now: datetime | None = None) -> list[dict[str, Any]]:
    """Apply the retention rules; one line per store with what changed (0: nothing to do)."""
    now = now or datetime.now(UTC)
    return [coarsen_checkins(settings, now), *selfie_topics(settings),
            forget_selfie_hashes(settings, now)]


def forget_selfie_hashes(settings: Settings, now: datetime) -> dict[str, Any]:
    """Tombstones for the replay index's entries first seen before its window: every intake
    worker forgets them, and compaction removes them from the topic."""
    days = settings.privacy.selfie_hashes_days
    before_ms = int(cutoff(now, days).timestamp() * 1000)
    codec = AvroCodec(topics.SELFIES, Registry(settings.infra.registry))
    old = [(partition, key, None)
           for key, where in placements(settings, topics.SELFIES).items()
           for partition, found in where.items()
           if found.value is not None
           and sighted_before(codec.decode(found.value)["value"], before_ms)]
    write(settings, topics.SELFIES.name, old)
    return {"store": f"Kafka {topics.SELFIES.name}", "what": "selfie fingerprints forgotten",
            "changed": len(old), "detail": f"first seen more than {days} days ago"}


def coarsen_checkins(settings: Settings, now: datetime) -> dict[str, Any]:
    days = settings.privacy.coordinates_days
    # DateTime columns are naive UTC
    before = cutoff(now, days).astimezone(UTC).replace(tzinfo=None)
    db = Mutations(settings)
    try:
        keys = db.key_columns("checkins") & {"lat", "lon"}
        if keys:
            raise RuntimeError(f"checkins: {sorted(keys)} are key columns, which ClickHouse "
                               "cannot update; the retention run needs another way")
        changed = 0
        cells = [c for (c,) in db.client.execute(
            "SELECT DISTINCT h3_cell FROM checkins WHERE server_time < %(t)s", {"t": before})]
        centres = {c: centre for c in cells if (centre := cell_centre(c)) is not None}
        for chunk in _chunks(sorted(centres), CELLS_PER_MUTATION):
            params = {"t": before, "cells": chunk, "set": tuple(chunk),
                      "eps": CENTRE_TOLERANCE_DEG,
                      "lats": [centres[c][0] for c in chunk],
                      "lons": [centres[c][1] for c in chunk]}
            exact = ("server_time < %(t)s AND h3_cell IN %(set)s AND ("
                     "abs(lat - transform(h3_cell, %(cells)s, %(lats)s, lat)) > %(eps)s OR "
                     "abs(lon - transform(h3_cell, %(cells)s, %(lons)s, lon)) > %(eps)s)")
            found = db.count(f"SELECT count() FROM checkins WHERE {exact}", params)
            if found:
                db.run("checkins", "UPDATE lat = transform(h3_cell, %(cells)s, %(lats)s, lat), "
                       f"lon = transform(h3_cell, %(cells)s, %(lons)s, lon) WHERE {exact}",
                       params)
                changed += found
        changed += _coarsen_without_cell(settings, db, before, set(cells) - set(centres))
        db.wait()
    finally:
        db.close()
    return {"store": "ClickHouse checkins", "what": "exact positions coarsened to their H3 "
            "cell's centre", "changed": changed,
            "detail": f"check-ins before {before:%Y-%m-%d %H:%M} UTC ({days} days)"}


def _coarsen_without_cell(settings: Settings, db: Mutations, before: datetime,
                          unusable: set[str]) -> int:
    """Check-ins whose verdict has no usable H3 cell (one that could not be judged): each
    position becomes its own cell's centre, or (0, 0), row by row (there are few)."""
    if not unusable:
        return 0
    resolution = settings.geo.h3_resolution
    found = db.client.execute(
        "SELECT event_id, lat, lon, h3_cell FROM checkins WHERE server_time < %(t)s "
        "AND h3_cell IN %(cells)s", {"t": before, "cells": tuple(unusable)})
    todo = {}
    for event_id, lat, lon, cell in found:
        centre = coarsened(lat, lon, cell, resolution)
        if not is_coarse(lat, lon, centre):
            todo[event_id] = centre
    for chunk in _chunks(sorted(todo), CELLS_PER_MUTATION):
        db.run("checkins", "UPDATE lat = transform(event_id, %(ids)s, %(lats)s, lat), "
               "lon = transform(event_id, %(ids)s, %(lons)s, lon) "
               "WHERE server_time < %(t)s AND event_id IN %(set)s",
               {"t": before, "ids": chunk, "set": tuple(chunk),
                "lats": [todo[e][0] for e in chunk], "lons": [todo[e][1] for e in chunk]})
    return sum(1 for event_id, *_ in found if event_id in todo)


def selfie_topics(settings: Settings) -> list[dict[str, Any]]:
    days = settings.privacy.selfies_days
    wanted = {t.name: retention_ms(days) for t in SELFIE_TOPICS}
    current = retention(settings, list(wanted))
    changes = topic_changes(current, wanted)
    set_retention(settings, changes)
    return [{"store": f"Kafka {name}", "what": "selfies kept (retention.ms)",
             "changed": int(name in changes),
             "detail": ("no such topic (hadir infra up creates it)" if current[name] is None
                        else f"{_days(current[name])} -> {days} days" if name in changes
                        else f"{days} days already")}
            for name in wanted]


def _days(ms: int | None) -> str:
    return "?" if ms is None else f"{ms / 86_400_000:g}"


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i:i + size] for i in range(0, len(items), size)]
