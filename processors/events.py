"""The plain data every processor works on: a check-in, the reasons a check-in can be flagged for,
and the verdict. No I/O here; streams/ turns Avro records into these and back.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# What a check-in may hold wherever it enters Hadir (the phone edge's bodies, the raw topic):
# one definition, so the edge and the intake refuse the same things.
NIP_PATTERN = r"\d{18}"  # the NIP's 18 digits (DOMAIN.md)
DEVICE_ID_PATTERN = r"[\x21-\x7e]{1,128}"  # printable ASCII, as phones' installation ids are
TEXT_MAX = 64  # app version, platform, model
SELFIE_MAX_BYTES = 1_500_000  # a phone's JPEG selfie is 50-300 KB
PLAUSIBLE_TIMES = (datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC))


class CheckinType(enum.StrEnum):
    """IN is *masuk* (arrival), OUT is *pulang* (departure)."""

    IN = "IN"
    OUT = "OUT"


class Verdict(enum.StrEnum):
    ACCEPTED = "ACCEPTED"
    REVIEW = "REVIEW"  # counts as attendance, a person decides on the alert
    REJECTED = "REJECTED"  # does not count as attendance


class Reason(enum.StrEnum):
    """Why a check-in was flagged. The default severity of each lives in processors/fraud.py."""

    UNKNOWN_EMPLOYEE = "UNKNOWN_EMPLOYEE"
    MOCK_LOCATION = "MOCK_LOCATION"
    OUTSIDE_GEOFENCE = "OUTSIDE_GEOFENCE"
    IMPOSSIBLE_TRAVEL = "IMPOSSIBLE_TRAVEL"
    NO_SELFIE = "NO_SELFIE"
    NO_FACE = "NO_FACE"
    FACE_MISMATCH = "FACE_MISMATCH"
    SELFIE_REPLAY = "SELFIE_REPLAY"
    SHARED_DEVICE = "SHARED_DEVICE"
    MULTIPLE_FACES = "MULTIPLE_FACES"
    CLOCK_SKEW = "CLOCK_SKEW"
    LOW_ACCURACY = "LOW_ACCURACY"
    SPOOF = "SPOOF"
    NO_TEMPLATE = "NO_TEMPLATE"  # the ASN has no enrolled face yet: a person must look
    OFFLINE_DELAYED = "OFFLINE_DELAYED"  # captured without signal, sent hours later
    INVALID_INPUT = "INVALID_INPUT"  # could not be judged (a dead letter); appealable


@dataclass(frozen=True, slots=True)
class Checkin:
    """One check-in as submitted by the phone. ``server_time`` is authoritative (set by the
    ingestion edge); ``client_time`` is the device clock, kept for audit and skew detection.
    ``offline_age_ms`` is how long before sending the phone captured it (no signal at the
    office), by the phone's monotonic clock, which a changed wall clock does not move."""

    event_id: str
    nip: str
    device_id: str
    type: CheckinType
    server_time: datetime
    client_time: datetime | None
    lat: float
    lon: float
    accuracy_m: float | None
    mock_location: bool
    selfie: bytes | None = None
    app_version: str = ""
    offline_age_ms: int = 0

    @property
    def captured_at(self) -> datetime:
        """When the check-in happened: the time for attendance, clock skew, travel and device
        use (DESIGN.md: ``server_time - offline_age_ms``)."""
        return self.server_time - timedelta(milliseconds=self.offline_age_ms)


@dataclass(frozen=True, slots=True)
class Finding:
    """One reason raised against a check-in, with the evidence a reviewer needs."""

    reason: Reason
    evidence: dict[str, object]


class InvalidCheckin(ValueError):
    """The check-in cannot be judged at all (bad coordinates, bad image ...): it goes to the
    dead-letter topic with this message as its reason."""
