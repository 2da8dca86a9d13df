"""Fraud rules that are not about location or faces, and the verdict that combines every finding.

- Shared device (buddy punching): one device_id used by two or more NIPs within a window.
- Clock skew: the phone's clock disagrees with the server's (the server is authoritative).
- Offline delay: a check-in captured without signal and sent hours later is looked at by a
  person (its time is the capture time, which only the phone vouches for).
- Unknown employee: the NIP is not in the reference data.
- The verdict: REJECTED if any finding is a rejecting reason, REVIEW if any is a review reason,
  ACCEPTED otherwise (DESIGN.md, "Default policy").
"""

from __future__ import annotations

import math
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
    offline_review_after_s: float = 2 * 3600.0  # OFFLINE_DELAYED past this age
    offline_max_s: float = 72 * 3600.0  # older: the edge refuses it, the intake dead-letters it
    rejected_reasons: tuple[str, ...] = (
        "UNKNOWN_EMPLOYEE", "MOCK_LOCATION", "OUTSIDE_GEOFENCE", "IMPOSSIBLE_TRAVEL",
        "NO_SELFIE", "NO_FACE", "FACE_MISMATCH", "SELFIE_REPLAY", "INVALID_INPUT",
    )
    review_reasons: tuple[str, ...] = (
        "SHARED_DEVICE", "MULTIPLE_FACES", "CLOCK_SKEW", "LOW_ACCURACY", "SPOOF", "NO_TEMPLATE",
        "OFFLINE_DELAYED",
    )

    def __post_init__(self) -> None:
        if not 0 < self.shared_device_window_h < math.inf:
            raise ValueError(f"shared_device_window_h must be more than 0 hours, "
                             f"got {self.shared_device_window_h!r}")
        if not 0 <= self.clock_skew_max_s < math.inf:
            raise ValueError(f"clock_skew_max_s must be 0 seconds or more, "
                             f"got {self.clock_skew_max_s!r}")
        if not 0 <= self.offline_review_after_s <= self.offline_max_s < math.inf:
            raise ValueError("offline ages must satisfy 0 <= offline_review_after_s <= "
                             f"offline_max_s, got {self.offline_review_after_s!r} and "
                             f"{self.offline_max_s!r}")
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
    """CLOCK_SKEW when the phone's clock is off by more than the allowed skew, compared at
    the capture time (an offline check-in's client time is when it was captured)."""
    if checkin.client_time is None:
        return None
    skew = (checkin.client_time - checkin.captured_at).total_seconds()
    if abs(skew) <= policy.clock_skew_max_s:
        return None
    evidence: dict[str, object] = {
        "skew_s": round(skew, 3),
        "client_time": checkin.client_time.isoformat(),
        "server_time": checkin.server_time.isoformat(),
        "max_skew_s": policy.clock_skew_max_s,
    }
    if checkin.offline_age_ms:
        evidence["offline_age_ms"] = checkin.offline_age_ms
    return Finding(Reason.CLOCK_SKEW, evidence)


def offline_delayed(checkin: Checkin, policy: FraudPolicy) -> Finding | None:
    """OFFLINE_DELAYED when the phone kept the check-in longer than the review threshold
    before sending it: its time is then the phone's word, so a person looks."""
    if checkin.offline_age_ms <= policy.offline_review_after_s * 1000:
        return None
    return Finding(Reason.OFFLINE_DELAYED, {
        "offline_age_s": round(checkin.offline_age_ms / 1000, 3),
        "captured_at": checkin.captured_at.isoformat(),
        "server_time": checkin.server_time.isoformat(),
        "review_after_s": policy.offline_review_after_s,
    })


def unknown_employee(nip: str) -> Finding:
    return Finding(Reason.UNKNOWN_EMPLOYEE, {"nip": nip})


@dataclass(frozen=True)
class DeviceUse:
    nip: str
    at: datetime
    event_id: str
    flagged: bool = False  # already raised SHARED_DEVICE


@dataclass(frozen=True)
class DeviceHistory:
    """Who used one device recently (the per-device table's value)."""

    uses: tuple[DeviceUse, ...] = field(default_factory=tuple)


MAX_USES = 200  # per device and window: far above any honest use, bounds the state


def _shared(device_id: str, others: list[DeviceUse], policy: FraudPolicy) -> Finding:
    return Finding(Reason.SHARED_DEVICE, {
        "device_id": device_id,
        "other_nips": sorted({u.nip for u in others}),
        "window_h": policy.shared_device_window_h,
        "other_event_ids": [u.event_id for u in others][-10:],
    })


def shared_device(history: DeviceHistory, checkin: Checkin, policy: FraudPolicy
                  ) -> tuple[Finding | None, list[tuple[DeviceUse, Finding]], DeviceHistory]:
    """SHARED_DEVICE for every check-in made on a device that another NIP used within the
    window before it (by capture time). The first person on a device is not flagged; the later
    ones are, with the other NIPs as evidence.

    Check-ins may be processed out of server-time order (they reach the device stage through
    different partitions). So besides the finding for this check-in, this returns the uses
    already seen that are *later* than it, within the window, by another NIP, and not flagged
    yet: they should have been flagged, so each comes back with its finding and the caller
    revises its verdict. The returned history keeps the uses within two windows of the newest
    one seen, so a check-in that arrives up to a window late (a lagging partition, a worker
    that was down) is still judged against every use within a window either side of it.
    """
    window = timedelta(hours=policy.shared_device_window_h)
    t = checkin.captured_at
    newest = max([t, *(u.at for u in history.uses)])
    kept = [u for u in history.uses
            if u.at >= newest - 2 * window and u.event_id != checkin.event_id]
    earlier = [u for u in kept if u.nip != checkin.nip and t - window <= u.at <= t]
    later = [u for u in kept if u.nip != checkin.nip and t < u.at <= t + window
             and not u.flagged]
    finding = _shared(checkin.device_id, earlier, policy) if earlier else None
    me = DeviceUse(checkin.nip, t, checkin.event_id)
    revised = [(u, _shared(checkin.device_id, [me], policy)) for u in later]
    flagged = {u.event_id for u in later}
    uses = [DeviceUse(u.nip, u.at, u.event_id, u.flagged or u.event_id in flagged)
            for u in kept]
    uses.append(DeviceUse(checkin.nip, t, checkin.event_id, finding is not None))
    uses.sort(key=lambda u: u.at)
    return finding, revised, DeviceHistory(tuple(uses[-MAX_USES:]))
