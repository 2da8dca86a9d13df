"""How long personal data stays as it was collected (UU 27/2022 art. 42-44: deletion, or here
coarsening, once the purpose is met). Pure: the retention run (hadir/retention.py) asks these
functions what is old and what an old position becomes, and does the I/O.

A check-in's exact GPS fix serves verification (geofence, impossible travel) and the appeal
and review that may follow; after ``coordinates_days`` it is replaced by the centre of its H3
cell, the resolution the verdicts already carry (``h3_cell``, GeoPolicy.h3_resolution: about
one office compound), which is all the heatmaps and the audits of attendance need. Selfies
stay on the raw and dead-letter topics for ``selfies_days``, the appeal window.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

import h3

from processors.replay_index import sighting

DAY_MS = 24 * 3600 * 1000
# A position within this many degrees (about 0.1 mm) of its cell's centre counts as coarsened:
# the centre travels through SQL text and back as a float, so equality is not to be trusted.
CENTRE_TOLERANCE_DEG = 1e-9


@dataclass(frozen=True)
class PrivacyPolicy:
    """The ``[privacy]`` section: how long exact positions and selfies are kept."""

    coordinates_days: int = 90  # exact GPS fixes in ClickHouse; then the H3 cell's centre
    selfies_days: int = 30  # hadir.checkins.raw and hadir.checkins.dlq (retention.ms)
    # selfie fingerprints (the replay index): a re-used selfie is caught within this window
    selfie_hashes_days: int = 400

    def __post_init__(self) -> None:
        for name in ("coordinates_days", "selfies_days", "selfie_hashes_days"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 36500:
                raise ValueError(f"privacy.{name} must be a whole number of days in 1..36500, "
                                 f"got {value!r}")


def cutoff(now: datetime, days: int) -> datetime:
    """The moment before which a record is older than ``days`` (``now`` carries its zone)."""
    if now.tzinfo is None:
        raise ValueError("now must carry a time zone")
    return now - timedelta(days=days)


def is_old(at: datetime, now: datetime, days: int) -> bool:
    return at < cutoff(now, days)


def retention_ms(days: int) -> int:
    """Kafka's ``retention.ms`` for ``days``."""
    return days * DAY_MS


def cell_centre(cell: str) -> tuple[float, float] | None:
    """The (lat, lon) centre of an H3 cell given as its hex string; None if it is not one."""
    try:
        if not cell or not h3.is_valid_cell(cell):
            return None
        return h3.cell_to_latlng(cell)
    except (ValueError, TypeError):  # h3 raises its own ValueError subclasses on bad input
        return None


def coarsened(lat: float, lon: float, cell: str, resolution: int) -> tuple[float, float]:
    """What an old position becomes: the centre of its verdict's H3 cell; without a usable
    cell (a check-in that could not be judged), the centre of the cell at ``resolution`` that
    holds the position; without a usable position either, (0, 0): nothing is kept."""
    centre = cell_centre(cell)
    if centre is not None:
        return centre
    if (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180
            and (lat, lon) != (0.0, 0.0)):
        return h3.cell_to_latlng(h3.latlng_to_cell(lat, lon, resolution))
    return 0.0, 0.0


def is_coarse(lat: float, lon: float, centre: tuple[float, float]) -> bool:
    """Whether a stored position already is ``centre`` (so a second run changes nothing)."""
    return (abs(lat - centre[0]) <= CENTRE_TOLERANCE_DEG
            and abs(lon - centre[1]) <= CENTRE_TOLERANCE_DEG)


def topic_changes(current: dict[str, int | None], wanted: dict[str, int]) -> dict[str, int]:
    """The topics whose ``retention.ms`` must change: ``current`` as Kafka reports it (None:
    the topic does not exist, and is left to ``hadir infra up``), ``wanted`` as configured."""
    return {name: ms for name, ms in wanted.items()
            if name in current and current[name] is not None and current[name] != ms}


def sighted_before(selfie_entry_value: str, before_ms: int) -> bool:
    """Whether a replay-index entry's first sighting is older than ``before_ms``; an entry
    that cannot be read is too (nothing can use it)."""
    try:
        return sighting(selfie_entry_value).at_ms < before_ms
    except ValueError:
        return True
