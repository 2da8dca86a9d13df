"""The selfie replay check: has a near-identical picture (perceptual hash within a few bits) been
sent before, by anyone?"""

from __future__ import annotations

import itertools
from collections.abc import Callable

from processors.events import Finding, Reason


def hamming(a: str, b: str) -> int:
    return (int(a, 16) ^ int(b, 16)).bit_count()


class ReplayIndex:
    """Near-duplicate selfie lookup by multi-index hashing. The 64-bit hash is cut into
    ``max_hamming + 1`` bands: two hashes within ``max_hamming`` bits agree exactly on at least
    one band (pigeonhole), so only the hashes sharing a band value are compared.

    What it knows is one entry per hash, ``<event_id> <nip>`` of its first sighting: a new
    hash is handed to ``publish`` (the intake shares it with the other workers through a
    compacted topic) and other workers' hashes arrive through :meth:`learn`. The bands are
    derived from the hash by each worker, so one small record per new selfie is all that is
    written, whatever the index holds.
    """

    def __init__(self, max_hamming: int = 8,
                 publish: Callable[[str, str], None] | None = None) -> None:
        if not 0 <= max_hamming < 64:
            raise ValueError("max_hamming must be in 0..63")
        self.max_hamming = max_hamming
        self.publish = publish
        self.first: dict[str, str] = {}  # hash -> "<event_id> <nip>" of its first sighting
        self._by_band: dict[tuple[int, int], list[str]] = {}
        bands = max_hamming + 1
        edges = [round(i * 64 / bands) for i in range(bands + 1)]
        self._bands = [(lo, hi - lo) for lo, hi in itertools.pairwise(edges)]

    def _keys(self, value: int) -> list[tuple[int, int]]:
        return [(i, (value >> lo) & ((1 << width) - 1))
                for i, (lo, width) in enumerate(self._bands)]

    def learn(self, phash: str, first: str) -> None:
        """A hash seen elsewhere (another worker, or before a restart); the first word wins."""
        if phash in self.first:
            return
        self.first[phash] = first
        for key in self._keys(int(phash, 16)):
            self._by_band.setdefault(key, []).append(phash)

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

    def check_and_add(self, phash: str, event_id: str, nip: str) -> Finding | None:
        """SELFIE_REPLAY when an earlier event had a hash within ``max_hamming`` bits (the
        nearest one is reported); then remembers this hash. Re-processing the same event (a
        redelivery) finds only itself and raises nothing."""
        value = int(phash, 16)
        key = f"{value:016x}"
        best: tuple[int, str, str] | None = None
        for candidate in {c for k in self._keys(value) for c in self._by_band.get(k, ())}:
            distance = (int(candidate, 16) ^ value).bit_count()
            if distance > self.max_hamming or (best is not None and distance >= best[0]):
                continue
            original_event, original_nip = self.first[candidate].split(" ", 1)
            if original_event != event_id:
                best = (distance, original_event, original_nip)
        if key not in self.first:
            self.learn(key, f"{event_id} {nip}")
            if self.publish is not None:
                self.publish(key, self.first[key])
        if best is None:
            return None
        return Finding(Reason.SELFIE_REPLAY, {"original_event_id": best[1],
                                              "original_nip": best[2], "hamming": best[0]})
