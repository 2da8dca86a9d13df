"""The face stage's cost per selfie, step by step (``hadir bench --only face``)."""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from pathlib import Path

from processors.events import InvalidCheckin
from processors.face import FaceVerifier
from processors.face_models import EMBED_BATCH
from processors.images import DETECT_SIZE, decode_image


def _percentiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_ms": round(statistics.median(ordered) * 1000, 2),
            "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000, 2)}


def bench_face(images_dir: Path | str, n: int = 200, *, verifier: FaceVerifier,
               batch: int = EMBED_BATCH) -> dict[str, object]:
    """CPU/GPU cost of the face stage on the images of a folder, cycled to ``n`` selfies.

    Per selfie (median, p95): decode (incl. pHash), detect, embed (one face, unbatched), liveness
    (when on) and a whole :meth:`FaceVerifier.verify`; then selfies/s of :meth:`verify_many` in
    batches of ``batch``. The detector runs on the image scaled to a longest side of
    :data:`DETECT_SIZE` (padded to a multiple of 32), one image per call.
    """
    files = sorted(p for p in Path(images_dir).iterdir()
                   if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    if not files:
        raise FileNotFoundError(f"no images in {images_dir}")
    selfies = [files[i % len(files)].read_bytes() for i in range(n)]
    first = decode_image(selfies[0]).bgr
    template = verifier.embed(first, verifier.detect(first)[0])
    verifier.verify(selfies[0], template)  # warm-up
    stages: dict[str, list[float]] = {"decode": [], "detect": [], "embed": [], "liveness": [],
                                      "verify": []}
    for data in selfies:
        t0 = time.perf_counter()
        image = decode_image(data, max_pixels=verifier.policy.max_pixels)
        t1 = time.perf_counter()
        faces = verifier.detect(image.bgr)
        t2 = time.perf_counter()
        stages["decode"].append(t1 - t0)
        stages["detect"].append(t2 - t1)
        if faces:
            verifier.embed(image.bgr, faces[0])
            t3 = time.perf_counter()
            stages["embed"].append(t3 - t2)
            if verifier._liveness is not None:
                verifier._liveness.spoof_scores([verifier._liveness.crops(image.bgr, faces[0])])
                stages["liveness"].append(time.perf_counter() - t3)
        t4 = time.perf_counter()
        with contextlib.suppress(InvalidCheckin):
            verifier.verify(data, template)
        stages["verify"].append(time.perf_counter() - t4)
    t5 = time.perf_counter()
    for i in range(0, n, batch):
        verifier.verify_many((data, template) for data in selfies[i:i + batch])
    batched = time.perf_counter() - t5
    return {
        "pack": verifier.pack_id, "providers": verifier.providers, "selfies": n,
        "images": len(files), "detect_input": f"longest side {DETECT_SIZE}, padded to /32",
        "liveness_enabled": verifier.liveness_enabled, "cpu_count": os.cpu_count(),
        **{f"{name}": _percentiles(v) for name, v in stages.items() if v},
        "batched": {"batch": batch, "selfies_per_s": round(n / batched, 1)},
    }
