"""Choosing a face pack's match threshold from labelled pairs (run from Python; method
and numbers in docs/face-calibration.md)."""

from __future__ import annotations

import csv
import math
import statistics
from pathlib import Path

import numpy as np

from processors.face import FaceVerifier


def _rates(same: np.ndarray, diff: np.ndarray, threshold: float) -> dict[str, float]:
    false_rejects = int((same < threshold).sum())
    false_accepts = int((diff >= threshold).sum())
    total = len(same) + len(diff)
    return {"threshold": round(threshold, 4),
            "accuracy": round(1 - (false_rejects + false_accepts) / total, 4),
            "far": round(false_accepts / len(diff), 4), "frr": round(false_rejects / len(same), 4),
            "false_accepts": false_accepts, "false_rejects": false_rejects}


def calibrate(pairs_csv: Path | str, images_dir: Path | str, *, verifier: FaceVerifier,
              target_far: float = 1e-3) -> dict[str, object]:
    """Similarities of labelled pairs (``file_x,file_y,Decision`` with Yes/No) and a threshold.

    Rule (anti-fraud): hold the false accept rate at ``target_far``, estimated from a normal fit
    of the different-person similarities (mean + z * sd), and never below the highest
    different-person similarity seen + 0.01; rounded up to 0.01. The labelled set is too small
    to measure a 0.1 % FAR directly (262 negatives), hence the fit. Also reported: accuracy, FAR
    and FRR at the chosen threshold, the accuracy-maximising threshold and OpenCV's documented
    SFace threshold 0.363.
    """
    images_dir = Path(images_dir)
    with Path(pairs_csv).open(newline="") as f:
        pairs = [(r["file_x"], r["file_y"], r["Decision"].strip() == "Yes")
                 for r in csv.DictReader(f)]
    names = sorted({n for a, b, _ in pairs for n in (a, b)})
    prepared = {n: verifier._prepare((images_dir / n).read_bytes()) for n in names}
    with_face = [n for n in names if prepared[n].crop is not None]
    vectors = dict(zip(with_face, verifier._embed_crops([prepared[n].crop for n in with_face]),
                       strict=True))
    # A pair with a faceless image scores -1: it can only be rejected.
    sims = [(float(vectors[a] @ vectors[b]) if a in vectors and b in vectors else -1.0, same)
            for a, b, same in pairs]
    same = np.array([s for s, y in sims if y])
    diff = np.array([s for s, y in sims if not y])
    impostors = statistics.NormalDist(float(diff.mean()), float(diff.std(ddof=1)))
    fitted = impostors.mean + statistics.NormalDist().inv_cdf(1 - target_far) * impostors.stdev
    chosen = math.ceil(max(fitted, float(diff.max()) + 0.01) * 100 - 1e-9) / 100
    ordered = np.unique(np.concatenate([same, diff]))
    candidates = (ordered[1:] + ordered[:-1]) / 2  # midpoints: no threshold sits on a pair
    best = max(candidates, key=lambda t: (_rates(same, diff, float(t))["accuracy"], -t))
    return {
        "pack": verifier.pack_id, "pairs": len(pairs), "same": len(same), "different": len(diff),
        "images": len(names), "images_without_face": sorted(set(names) - set(vectors)),
        "same_similarity": {"min": round(float(same.min()), 4),
                            "median": round(float(np.median(same)), 4)},
        "different_similarity": {"max": round(float(diff.max()), 4),
                                 "mean": round(impostors.mean, 4),
                                 "sd": round(impostors.stdev, 4)},
        "target_far": target_far,
        "chosen": {**_rates(same, diff, chosen),
                   "far_normal_fit": float(f"{1 - impostors.cdf(chosen):.2g}")},
        "best_accuracy": _rates(same, diff, float(best)),
        "opencv_0.363": {**_rates(same, diff, 0.363),
                         "far_normal_fit": float(f"{1 - impostors.cdf(0.363):.2g}")},
        "pairs_detail": [{"file_x": a, "file_y": b, "same": y, "similarity": round(s, 4)}
                         for (a, b, y), (s, _) in zip(pairs, sims, strict=True)],
    }
