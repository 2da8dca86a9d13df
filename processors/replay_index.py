"""The selfie replay check: has a near-identical picture (perceptual hash within a few bits) been
sent before, by anyone?"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

from processors.events import Finding, Reason


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


class ReplayIndex:
    """Near-duplicate selfie lookup by multi-index hashing. The 64-bit hash is cut into
    ``max_hamming + 1`` bands: two hashes within ``max_hamming`` bits agree exactly on at least
    one band (pigeonhole), so only the hashes sharing a band value are compared.

    What it knows is one entry per hash, ``<event_id> <nip> <server_time_ms>`` of its first
    sighting (:func:`sighting`): a new hash is handed to ``publish`` (the intake shares it
    with the other workers through a compacted topic) and other workers' hashes arrive
    through :meth:`learn`. The bands are
    derived from the hash by each worker, so one small record per new selfie is all that is
    written, whatever the index holds.

    A sighting older than ``window_ms`` before the check-in being judged no longer counts (the
    index keeps a window, default 400 days, not everything ever seen): a hash seen again after
    that starts a new first sighting. The retention run tombstones the entries that left the
    window, and a worker forgets each tombstoned hash (:meth:`forget`).
    """

    def __init__(self, max_hamming: int = 8, window_ms: int = 400 * 24 * 3600 * 1000,
                 publish: Callable[[str, str], None] | None = None) -> None:
        if not 0 <= max_hamming < 64:
            raise ValueError("max_hamming must be in 0..63")
        if window_ms <= 0:
            raise ValueError("window_ms must be positive")
        self.max_hamming = max_hamming
        self.window_ms = window_ms
        self.publish = publish
        self.first: dict[str, Sighting] = {}  # hash -> its first sighting
        self._by_band: dict[tuple[int, int], list[str]] = {}
        bands = max_hamming + 1
        edges = [round(i * 64 / bands) for i in range(bands + 1)]
        self._bands = [(lo, hi - lo) for lo, hi in itertools.pairwise(edges)]

    def _keys(self, value: int) -> list[tuple[int, int]]:
        return [(i, (value >> lo) & ((1 << width) - 1))
                for i, (lo, width) in enumerate(self._bands)]

    def learn(self, phash: str, first: str) -> None:
        """A hash seen elsewhere (another worker, or before a restart), its entry as
        :func:`sighting` reads it; the earliest sighting wins."""
        seen = sighting(first)
        known = self.first.get(phash)
        if known is not None and known.at_ms <= seen.at_ms:
            return
        if known is None:
            for key in self._keys(int(phash, 16)):
                self._by_band.setdefault(key, []).append(phash)
        self.first[phash] = seen

    def forget(self, phash: str) -> None:
        """Drop a hash (its ASN was erased: ``hadir erase`` tombstones their entries)."""
        if self.first.pop(phash, None) is None:
            return
        for key in self._keys(int(phash, 16)):
            hashes = self._by_band.get(key, [])
            if phash in hashes:
                hashes.remove(phash)
            if not hashes:
                self._by_band.pop(key, None)

    def check_and_add(self, phash: str, event_id: str, nip: str,
                      at_ms: int) -> Finding | None:
        """SELFIE_REPLAY when an earlier event within the window before ``at_ms`` (the
        check-in's server time) had a hash within ``max_hamming`` bits (the nearest one is
        reported); then remembers this hash. Re-processing the same event (a redelivery)
        finds only itself and raises nothing."""
        value = int(phash, 16)
        key = f"{value:016x}"
        since = at_ms - self.window_ms
        best: tuple[int, Sighting] | None = None
        for candidate in {c for k in self._keys(value) for c in self._by_band.get(k, ())}:
            distance = (int(candidate, 16) ^ value).bit_count()
            if distance > self.max_hamming or (best is not None and distance >= best[0]):
                continue
            first = self.first[candidate]
            if first.event_id != event_id and first.at_ms >= since:
                best = (distance, first)
        known = self.first.get(key)
        if known is None or known.at_ms < since:  # new, or its sighting left the window
            self.forget(key)
            self.learn(key, entry(event_id, nip, at_ms))
            if self.publish is not None:
                self.publish(key, entry(event_id, nip, at_ms))
        if best is None:
            return None
        return Finding(Reason.SELFIE_REPLAY, {"original_event_id": best[1].event_id,
                                              "original_nip": best[1].nip, "hamming": best[0]})


@dataclass(frozen=True, slots=True)
class Sighting:
    event_id: str
    nip: str
    at_ms: int  # the check-in's server time


def entry(event_id: str, nip: str, at_ms: int) -> str:
    """A first sighting as the index's topic keeps it."""
    return f"{event_id} {nip} {at_ms}"


def sighting(text: str) -> Sighting:
    """The first sighting an entry holds; ValueError when it is not one."""
    parts = text.split(" ")
    if len(parts) != 3 or not parts[2].isdigit():
        raise ValueError(f"not a selfie index entry: {text[:60]!r}")
    return Sighting(parts[0], parts[1], int(parts[2]))
