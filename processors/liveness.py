"""Liveness: is the face in a selfie a live person or a photo of one (the optional MiniFASNet
pack of shared/models/liveness/)."""

from __future__ import annotations

import functools

import cv2
import numpy as np
import onnxruntime as ort

from processors.face_detect import Face
from processors.face_models import in_batches


class Liveness:
    """The two MiniFASNet models, fed exactly as shared/models/liveness/README.md prescribes: a
    crop of the face box scaled by 2.7 / 4.0 (kept inside the image), resized to 80 x 80, BGR
    0..255 NCHW; softmax per model, summed; real score = summed class-1 probability / 2.

    The decision is not the pack's argmax over the three classes but a threshold on the spoof
    score (1 - real score, ``FacePolicy.spoof_threshold``), so an operator can tune it: at the
    default 0.5 a face is SPOOF unless "real" holds over half the probability, stricter than
    argmax (0.45 real against 0.30 and 0.25 is real by argmax). SPOOF only sends a check-in
    to review."""

    SIZE = 80

    def __init__(self, models: list[tuple[ort.InferenceSession, float]],
                 fixed_batches: bool = False) -> None:
        self.models = models
        self.fixed_batches = fixed_batches

    def crops(self, bgr: np.ndarray, face: Face) -> list[np.ndarray]:
        src_h, src_w = bgr.shape[:2]
        x, y, w, h = face.box
        out = []
        for _, s in self.models:
            scale = min((src_h - 1) / h, (src_w - 1) / w, s)
            new_w, new_h = w * scale, h * scale
            cx, cy = x + w / 2, y + h / 2
            left, right = cx - new_w / 2, cx + new_w / 2
            top, bottom = cy - new_h / 2, cy + new_h / 2
            if left < 0:
                right, left = right - left, 0.0
            if top < 0:
                bottom, top = bottom - top, 0.0
            if right > src_w - 1:
                left, right = left - (right - src_w + 1), src_w - 1.0
            if bottom > src_h - 1:
                top, bottom = top - (bottom - src_h + 1), src_h - 1.0
            region = bgr[int(top):int(bottom) + 1, int(left):int(right) + 1]
            out.append(cv2.resize(region, (self.SIZE, self.SIZE), interpolation=cv2.INTER_LINEAR))
        return out

    @staticmethod
    def _run(sess: ort.InferenceSession, batch: list[np.ndarray]) -> np.ndarray:
        """One model's logits for 80 x 80 BGR crops (fed as N x 3 x 80 x 80 float32)."""
        return sess.run(None, {"input": np.stack(batch).transpose(0, 3, 1, 2)
                               .astype(np.float32)})[0]

    def spoof_scores(self, crops: list[list[np.ndarray]]) -> list[float]:
        """1 - real score for each face (given as the list :meth:`crops` returned)."""
        if not crops:
            return []
        summed = np.zeros((len(crops), 3), np.float64)
        for m, (sess, _) in enumerate(self.models):
            logits = in_batches(functools.partial(self._run, sess), [c[m] for c in crops],
                                 self.fixed_batches).astype(np.float64)
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            summed += exp / exp.sum(axis=1, keepdims=True)
        return [1.0 - float(v) for v in summed[:, 1] / 2.0]
