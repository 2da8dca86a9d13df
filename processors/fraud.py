"""Fraud rules that are not about location or faces, and the verdict that combines every finding.

- Shared device (buddy punching): one device_id used by two or more NIPs within a window.
- Clock skew: the phone's clock disagrees with the server's (the server is authoritative).
- Unknown employee: the NIP is not in the reference data.
- The verdict: REJECTED if any finding is a rejecting reason, REVIEW if any is a review reason,
  ACCEPTED otherwise (DESIGN.md, "Default policy").
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from processors.events import Checkin, Finding, Reason, Verdict

_ALERT_NAMESPACE = uuid.UUID("5b0f6c1e-3d2a-4b8e-9c61-68616469720a")


@dataclass(frozen=True)
class FraudPolicy:
    """Thresholds and the severity of each reason. Reasons in neither list only annotate."""

    shared_device_window_h: float = 12.0
    clock_skew_max_s: float = 300.0
    rejected_reasons: tuple[str, ...] = (
        "UNKNOWN_EMPLOYEE", "MOCK_LOCATION", "OUTSIDE_GEOFENCE", "IMPOSSIBLE_TRAVEL",
        "NO_SELFIE", "NO_FACE", "FACE_MISMATCH", "SELFIE_REPLAY",
    )
    review_reasons: tuple[str, ...] = (
        "SHARED_DEVICE", "MULTIPLE_FACES", "CLOCK_SKEW", "LOW_ACCURACY", "SPOOF", "NO_TEMPLATE",
    )

    def __post_init__(self) -> None:
        known = {r.value for r in Reason}
        for name in (*self.rejected_reasons, *self.review_reasons):
            if name not in known:
                raise ValueError(f"unknown reason {name!r}; known: {', '.join(sorted(known))}")
        both = set(self.rejected_reasons) & set(self.review_reasons)
        if both:
            raise ValueError(f"reasons both rejected and review: {', '.join(sorted(both))}")


def severity(reason: Reason, policy: FraudPolicy) -> Verdict:
    """What one reason alone makes of a check-in."""
    if reason.value in policy.rejected_reasons:
        return Verdict.REJECTED
    if reason.value in policy.review_reasons:
        return Verdict.REVIEW
    return Verdict.ACCEPTED


def decide(findings: list[Finding], policy: FraudPolicy) -> Verdict:
    """The verdict of a check-in: the most severe of its findings."""
    levels = {severity(f.reason, policy) for f in findings}
    for level in (Verdict.REJECTED, Verdict.REVIEW):
        if level in levels:
            return level
    return Verdict.ACCEPTED


def alert_id(event_id: str, reason: Reason) -> str:
    """Deterministic, so an alert re-sent after a crash is recognisably the same alert."""
    return str(uuid.uuid5(_ALERT_NAMESPACE, f"{event_id}/{reason.value}"))


def clock_skew(checkin: Checkin, policy: FraudPolicy) -> Finding | None:
    """CLOCK_SKEW when the phone's clock is off by more than the allowed skew."""
    if checkin.client_time is None:
        return None
    skew = (checkin.client_time - checkin.server_time).total_seconds()
    if abs(skew) <= policy.clock_skew_max_s:
        return None
    return Finding(Reason.CLOCK_SKEW, {
        "skew_s": round(skew, 3),
        "client_time": checkin.client_time.isoformat(),
        "server_time": checkin.server_time.isoformat(),
        "max_skew_s": policy.clock_skew_max_s,
    })


def unknown_employee(nip: str) -> Finding:
    return Finding(Reason.UNKNOWN_EMPLOYEE, {"nip": nip})


@dataclass(frozen=True)
class DeviceUse:
    nip: str
    at: datetime
    event_id: str


@dataclass(frozen=True)
class DeviceHistory:
    """Who used one device recently, oldest first (the per-device table's value)."""

    uses: tuple[DeviceUse, ...] = field(default_factory=tuple)


def shared_device(history: DeviceHistory, checkin: Checkin,
                  policy: FraudPolicy) -> tuple[Finding | None, DeviceHistory]:
    """SHARED_DEVICE when another NIP used this device within the window before this check-in.

    The first person on a device is not flagged; every later one is, with the other NIPs as
    evidence. Returns the finding and the history to keep (uses older than the window dropped).
    """
    window = timedelta(hours=policy.shared_device_window_h)
    since = checkin.server_time - window
    recent = tuple(u for u in history.uses if u.at >= since)
    others = sorted({u.nip for u in recent if u.nip != checkin.nip and u.at <= checkin.server_time})
    finding = None
    if others:
        finding = Finding(Reason.SHARED_DEVICE, {
            "device_id": checkin.device_id,
            "other_nips": others,
            "window_h": policy.shared_device_window_h,
            "other_event_ids": [u.event_id for u in recent if u.nip in others][-10:],
        })
    kept = (*recent, DeviceUse(checkin.nip, checkin.server_time, checkin.event_id))
    # One entry per NIP is enough to answer "who else": keep each NIP's latest use.
    latest: dict[str, DeviceUse] = {}
    for use in kept:
        if use.nip not in latest or use.at >= latest[use.nip].at:
            latest[use.nip] = use
    return finding, DeviceHistory(tuple(sorted(latest.values(), key=lambda u: u.at)))
