"""Face checks on check-in selfies: the entry point of the face rules.

Pure and synchronous: no Kafka and no files other than the model packs (processors.face_models).
The stream layer builds one :class:`FaceVerifier` per worker, calls :meth:`FaceVerifier.verify`
(or :meth:`FaceVerifier.verify_many` for a batch) with the selfie bytes and the ASN's template,
and feeds :attr:`FaceResult.phash` to a :class:`processors.replay_index.ReplayIndex`.
Undecodable images raise :class:`processors.events.InvalidCheckin`; everything else is a
:class:`Finding`. The steps live in their own modules: decoding (processors.images), detection
and alignment (processors.face_detect), liveness (processors.liveness), sealed templates
(processors.templates).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from insightface.model_zoo.arcface_onnx import ArcFaceONNX
from insightface.utils.face_align import arcface_dst

from processors.events import Finding, InvalidCheckin, Reason
from processors.face_detect import DETECT_BATCH, Detector, Face, Scrfd, YuNet, align_face
from processors.face_models import (
    SFACE,
    FaceModelError,
    ensure_default_pack,
    in_batches,
    liveness_sessions,
    load_insightface_pack,
    providers_for,
    session,
    uint8_input_cached,
)
from processors.face_policy import FacePolicy
from processors.images import DETECT_SIZE, DecodedImage, decode_image
from processors.liveness import Liveness
from processors.templates import Template, TemplateCipher

# Cosine-similarity threshold of the default pack (SFace), chosen by calibrate() on the labelled
# pairs of shared/faces/deepface/master.csv: false accept rate held at 0.1 % (normal fit of the
# different-person similarities) and above every different-person pair. Method and numbers
# (accuracy, FAR, FRR, OpenCV's 0.363 for comparison) are in docs/face-calibration.md.
DEFAULT_PACK_THRESHOLD = 0.41
DEFAULT_PACK_VERSION = f"yunet-2023mar+sface-2021dec:{SFACE.sha256[:16]}"


@dataclass(slots=True)
class FaceResult:
    similarity: float | None  # of the largest face to the template (None: no face, no template)
    findings: list[Finding]
    faces: int  # faces detected (any size)
    phash: str  # perceptual hash of the selfie (16 hex digits), for ReplayIndex
    spoof_score: float | None  # None when liveness is off or there is no face


@dataclass(frozen=True, slots=True)
class CompareResult:
    similarity: float | None  # None when either image has no face
    match: bool
    faces_a: int
    faces_b: int


class EnrollmentError(ValueError):
    """The enrollment photos cannot make a template; the message names the photo (0-based)."""


@dataclass(slots=True, eq=False)
class _Prepared:
    """One decoded image with its faces and what the batched models need from it."""

    decoded: DecodedImage
    faces: list[Face]
    crop: np.ndarray | None = None  # aligned crop of the largest face
    live_crops: list[np.ndarray] | None = None


class FaceVerifier:
    """Loads a model pack once and answers face questions about images.

    ``cache_dir`` holds the default pack's converted models (e.g. ``.hadir/models``); the
    models run where ``policy.device`` says. ``threads`` is the CPU threads one verifier may use
    (default: all cores; give each of N worker processes cores / N): :meth:`verify_many` decodes
    that many images at once (one thread each), and the batched recognizer and liveness models
    use that many threads. On the CPU each thread also runs the detector on its image; on a GPU
    the detector runs batched (:meth:`YuNet.detect_many`). Thread-safe for concurrent calls.
    """

    def __init__(self, policy: FacePolicy | None = None, *, cache_dir: Path | str,
                 threads: int | None = None) -> None:
        self.policy = policy or FacePolicy()
        providers = providers_for(self.policy.device)
        self.providers = [p if isinstance(p, str) else p[0] for p in providers]
        self.threads = max(1, threads or os.cpu_count() or 1)
        self._detector: Detector
        self._recognizer: ArcFaceONNX
        # On a GPU every model call has one shape (see YuNet): batches are padded to full size.
        self._fixed_batches = self.policy.device != "cpu"
        if self.policy.pack == "default":
            files = ensure_default_pack(Path(cache_dir))
            if self.policy.device == "cpu":
                self._detector = YuNet(session(files.detector, providers, 1),
                                        self.policy.det_score_threshold)
            else:
                self._detector = YuNet(
                    session(uint8_input_cached(files.detector), providers, 1),
                    self.policy.det_score_threshold, fixed_batch=DETECT_BATCH)
            self._recognizer = ArcFaceONNX(
                str(files.recognizer),
                session=session(files.recognizer, providers, self.threads))
            # SFace normalises inside the graph: it takes RGB 0..255 as is.
            self._recognizer.input_mean, self._recognizer.input_std = 0.0, 1.0
            self.pack_id = f"default:{DEFAULT_PACK_VERSION}"
            calibrated: float | None = DEFAULT_PACK_THRESHOLD
        else:
            if not self.policy.pack_dir:
                raise FaceModelError("face.pack is 'insightface' but face.pack_dir is empty")
            pack = load_insightface_pack(Path(self.policy.pack_dir), providers)
            self._detector = Scrfd(pack.detector, self.policy.det_score_threshold)
            self._recognizer = pack.recognizer
            self.pack_id = f"insightface:{pack.version}"
            calibrated = None
        threshold = self.policy.match_threshold
        if threshold is None:
            if calibrated is None:
                raise FaceModelError(f"no calibrated match threshold for {self.pack_id}: run "
                                     "hadir.calibration.calibrate on labelled pairs and set "
                                     "face.match_threshold")
            threshold = calibrated
        self.threshold = float(threshold)
        self._liveness = (Liveness(liveness_sessions(Path(self.policy.liveness_dir),
                                                      providers, self.threads),
                                    self._fixed_batches)
                          if self.policy.liveness_dir else None)

    @property
    def _batch_detector(self) -> YuNet | None:
        """The detector when it runs batched (a GPU session with a fixed batch)."""
        detector = self._detector
        return detector if isinstance(detector, YuNet) and detector.fixed_batch else None

    @property
    def liveness_enabled(self) -> bool:
        return self._liveness is not None

    def cipher(self, key: bytes) -> TemplateCipher:
        """A :class:`TemplateCipher` bound to this verifier's pack."""
        return TemplateCipher(key, self.pack_id)

    # single steps

    def detect(self, image: np.ndarray) -> list[Face]:
        """Faces in a BGR uint8 image (as cv2.imread gives), largest first."""
        return sorted(self._detector.detect(image), key=lambda f: f.area, reverse=True)

    def embed(self, image: np.ndarray, face: Face) -> np.ndarray:
        """The L2-normalised float32 embedding of one face of a BGR image."""
        return self._embed_crops([align_face(image, face)])[0]

    def _embed_crops(self, crops: list[np.ndarray]) -> np.ndarray:
        if not crops:
            return np.empty((0, 0), np.float32)
        feats = in_batches(self._recognizer.get_feat, crops, self._fixed_batches
                            ).astype(np.float32)
        return feats / np.linalg.norm(feats, axis=1, keepdims=True)

    def _prepare(self, data: bytes) -> _Prepared:
        decoded = decode_image(data, max_pixels=self.policy.max_pixels)
        return self._cropped(_Prepared(decoded, self.detect(decoded.bgr)))

    def _cropped(self, prepared: _Prepared) -> _Prepared:
        if prepared.faces:
            bgr, face = prepared.decoded.bgr, prepared.faces[0]
            prepared.crop = align_face(bgr, face)
            if self._liveness is not None:
                prepared.live_crops = self._liveness.crops(bgr, face)
        return prepared

    def self_check(self) -> None:
        """Run every model once on a plain grey picture with a made-up face in it: raises when
        the models cannot run at all, which is the machine's fault (GPU, memory), not any
        selfie's."""
        grey = np.full((DETECT_SIZE, DETECT_SIZE, 3), 128, np.uint8)
        self.detect(grey)
        face = Face(box=(256.0, 256.0, 128.0, 128.0), score=1.0,
                    landmarks=(arcface_dst * (128 / 112) + 256).astype(np.float32))
        self._embed_crops([align_face(grey, face)])
        if self._liveness is not None:
            self._liveness.spoof_scores([self._liveness.crops(grey, face)])

    def _try_prepare(self, data: bytes) -> _Prepared | InvalidCheckin:
        try:
            return self._prepare(data)
        except InvalidCheckin as e:
            return e

    def _try_decode(self, data: bytes) -> DecodedImage | InvalidCheckin:
        try:
            return decode_image(data, max_pixels=self.policy.max_pixels)
        except InvalidCheckin as e:
            return e

    def _prepare_many(self, images: list[bytes]) -> list[_Prepared | InvalidCheckin]:
        """:meth:`_try_prepare` for each image: decoding, detecting and cropping in threads, or
        (batched detector) decoding and cropping in threads around one detector call per
        :data:`DETECT_BATCH`."""
        with ThreadPoolExecutor(min(self.threads, len(images))) as pool:
            def pool_map(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
                if self.threads > 1 and len(items) > 1:
                    return list(pool.map(fn, items))
                return [fn(i) for i in items]  # no thread hand-off for one image or one thread

            detector = self._batch_detector
            if detector is None:
                return pool_map(self._try_prepare, images)
            decoded = pool_map(self._try_decode, images)
            ok = [d for d in decoded if isinstance(d, DecodedImage)]
            found = iter(detector.detect_many([d.bgr for d in ok], pool_map))
            prepared = [d if isinstance(d, InvalidCheckin) else _Prepared(
                d, sorted(next(found), key=lambda f: f.area, reverse=True)) for d in decoded]
            return pool_map(lambda p: p if isinstance(p, InvalidCheckin) else self._cropped(p),
                            prepared)

    def _usable(self, prepared: _Prepared) -> int:
        scale = prepared.decoded.scale
        return sum(1 for f in prepared.faces if f.size * scale >= self.policy.min_face_px)

    # whole checks

    def verify(self, selfie_bytes: bytes, template: np.ndarray) -> FaceResult:
        """Check a selfie against an enrolled template (:attr:`Template.embedding`). Raises
        :class:`InvalidCheckin` when the bytes are not a usable image."""
        (result,) = self.verify_many([(selfie_bytes, template)])
        if isinstance(result, InvalidCheckin):
            raise result
        return result

    def verify_many(self, items: Iterable[tuple[bytes, np.ndarray | None]]
                    ) -> list[FaceResult | InvalidCheckin]:
        """:meth:`verify` for a batch, in order; the recognizer and liveness models run batched.
        A bad image yields its :class:`InvalidCheckin` in place instead of raising. Without a
        template (an ASN not enrolled yet) a selfie is still checked for no face, several
        faces and liveness; only the match is left out (``similarity`` None)."""
        batch = list(items)
        templates = [template for _, template in batch]
        prepared = self._prepare_many([data for data, _ in batch]) if batch else []
        with_face = [p if isinstance(p, _Prepared) and p.crop is not None else None
                     for p in prepared]
        embeddings = iter(self._embed_crops([p.crop for p, t in zip(with_face, templates,
                                                                    strict=True)
                                             if p is not None and t is not None]))
        spoof = iter(self._liveness.spoof_scores([p.live_crops or [] for p in with_face if p])
                     if self._liveness is not None else [])
        results: list[FaceResult | InvalidCheckin] = []
        for p, face, template in zip(prepared, with_face, templates, strict=True):
            if isinstance(p, InvalidCheckin):
                results.append(p)
            elif face is None:
                results.append(FaceResult(None, [Finding(Reason.NO_FACE, {
                    "det_score_threshold": self.policy.det_score_threshold})],
                    0, p.decoded.phash, None))
            else:
                results.append(self._judge(face, template,
                                           next(embeddings) if template is not None else None,
                                           next(spoof, None)))
        return results

    def _judge(self, p: _Prepared, template: np.ndarray | None, embedding: np.ndarray | None,
               spoof: float | None) -> FaceResult:
        """The findings of a selfie with a face; ``embedding`` is None without a template."""
        findings: list[Finding] = []
        usable = self._usable(p)
        if usable > 1:
            findings.append(Finding(Reason.MULTIPLE_FACES, {
                "faces": usable, "min_face_px": self.policy.min_face_px}))
        similarity = None
        if template is not None and embedding is not None:
            similarity = self.similarity(embedding, template)
            if not similarity >= self.threshold:  # NaN (a broken template) is no match either
                findings.append(Finding(Reason.FACE_MISMATCH, {
                    "similarity": round(similarity, 4) if math.isfinite(similarity) else None,
                    "threshold": self.threshold}))
        if spoof is not None and spoof >= self.policy.spoof_threshold:
            findings.append(Finding(Reason.SPOOF, {
                "spoof_score": round(spoof, 4), "threshold": self.policy.spoof_threshold}))
        return FaceResult(similarity, findings, len(p.faces), p.decoded.phash, spoof)

    @staticmethod
    def similarity(embedding: np.ndarray, template: np.ndarray) -> float:
        template = np.asarray(template, np.float32).reshape(-1)
        if template.shape != embedding.shape:
            raise ValueError(f"template has {template.size} dimensions, the recognizer "
                             f"{embedding.size}: it belongs to another model pack")
        norm = float(np.linalg.norm(template))
        return float(embedding @ template) / norm if norm else 0.0

    def compare(self, a_bytes: bytes, b_bytes: bytes) -> CompareResult:
        """Similarity of the largest faces of two images (``hadir face compare``)."""
        a, b = self._prepare(a_bytes), self._prepare(b_bytes)
        if a.crop is None or b.crop is None:
            return CompareResult(None, False, len(a.faces), len(b.faces))
        ea, eb = self._embed_crops([a.crop, b.crop])
        similarity = float(ea @ eb)
        return CompareResult(similarity, similarity >= self.threshold, len(a.faces), len(b.faces))

    def enroll(self, images: list[bytes]) -> Template:
        """A template from one or more photos, each with exactly one usable face."""
        if not images:
            raise EnrollmentError("enrollment needs at least one photo")
        crops = []
        for i, data in enumerate(images):
            try:
                p = self._prepare(data)
            except InvalidCheckin as e:
                raise EnrollmentError(f"photo {i}: {e}") from None
            usable = self._usable(p)
            if p.crop is None or usable == 0:
                raise EnrollmentError(f"photo {i}: no face of at least "
                                      f"{self.policy.min_face_px} px found")
            if usable > 1:
                raise EnrollmentError(f"photo {i}: {usable} faces; enrollment photos must show "
                                      "one person only")
            crops.append(p.crop)
        mean = self._embed_crops(crops).mean(axis=0)
        return Template((mean / np.linalg.norm(mean)).astype(np.float32), self.pack_id,
                        len(images))
