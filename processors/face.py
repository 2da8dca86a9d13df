"""Face checks on check-in selfies: decode, detect, embed, match, liveness and replay.

Pure and synchronous: no Kafka and no files other than the model packs (processors.face_models).
The stream layer builds one :class:`FaceVerifier` per worker, calls :meth:`FaceVerifier.verify`
(or :meth:`FaceVerifier.verify_many` for a batch) with the selfie bytes and the ASN's template,
and feeds :attr:`FaceResult.phash` to a :class:`ReplayIndex`. Undecodable images raise
:class:`processors.events.InvalidCheckin`; everything else is a :class:`Finding`.

Embeddings are biometric data: they are never logged, their reprs are hidden and templates are
stored only sealed by :class:`TemplateCipher`.
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import itertools
import math
import os
import statistics
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import cv2
import imagehash
import numpy as np
import onnxruntime as ort
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from insightface.model_zoo.arcface_onnx import ArcFaceONNX
from insightface.model_zoo.scrfd import SCRFD
from insightface.utils.face_align import arcface_dst
from PIL import Image, ImageOps, UnidentifiedImageError

from processors.events import Finding, InvalidCheckin, Reason
from processors.face_models import (
    SFACE,
    FaceModelError,
    ensure_default_pack,
    liveness_sessions,
    load_insightface_pack,
    providers_for,
    session,
    uint8_input_cached,
)
from processors.face_policy import FacePolicy

__all__ = [
    "DEFAULT_PACK_THRESHOLD",
    "CompareResult",
    "DecodedImage",
    "EnrollmentError",
    "Face",
    "FaceModelError",
    "FacePolicy",
    "FaceResult",
    "FaceVerifier",
    "ReplayIndex",
    "Template",
    "TemplateCipher",
    "TemplateError",
    "align_face",
    "bench_face",
    "calibrate",
    "decode_image",
    "hamming",
    "perceptual_hash",
]

# Cosine-similarity threshold of the default pack (SFace), chosen by calibrate() on the labelled
# pairs of shared/faces/deepface/master.csv: false accept rate held at 0.1 % (normal fit of the
# different-person similarities) and above every different-person pair. Method and numbers
# (accuracy, FAR, FRR, OpenCV's 0.363 for comparison) are in docs/face-calibration.md.
DEFAULT_PACK_THRESHOLD = 0.41
DEFAULT_PACK_VERSION = f"yunet-2023mar+sface-2021dec:{SFACE.sha256[:16]}"

DETECT_SIZE = 640  # the detector sees the image scaled to this longest side (never enlarged)
NMS_IOU = 0.3  # OpenCV's FaceDetectorYN default
EMBED_BATCH = 32
DETECT_BATCH = 32  # images per detector call where detection is batched (on a GPU)
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "MPO")  # MPO: a JPEG with more pictures after it
# (phones' HDR and portrait shots); its first picture is the photo


# --- decoding -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class DecodedImage:
    """An image ready for the models. ``bgr`` is H x W x 3 uint8 (OpenCV order) with the EXIF
    orientation applied; large images are reduced (JPEGs by the JPEG decoder itself, 1/2 ..
    1/8; PNG and WebP by whole factors after decoding, so a batch never holds full-size
    pictures) as long as both sides stay at or above :data:`DETECT_SIZE`."""

    bgr: np.ndarray
    original_size: tuple[int, int]  # (width, height) as stored in the file
    phash: str  # 64-bit perceptual hash of the whole picture, 16 hex digits

    @property
    def scale(self) -> float:
        """Original pixels per pixel of ``bgr``."""
        return max(self.original_size) / max(self.bgr.shape[:2])


def _jpeg_has_end(data: bytes) -> bool:
    """Whether an end-of-image marker follows the first scan. Walks the marker segments up to the
    first SOS so that an EOI inside an EXIF thumbnail does not count; inside entropy-coded data
    0xFF is always stuffed, so a later FF D9 is the real end."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
        elif marker == 0xDA:  # start of scan
            return data.find(b"\xff\xd9", pos + 2) != -1
        elif 0xD0 <= marker <= 0xD8 or marker == 0x01:  # markers without a length
            pos += 2
        else:
            pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return False


def _flatten(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited onto white (a transparent PNG is not black)."""
    if image.mode == "I" or image.mode.startswith("I;16"):  # 16-bit grayscale PNG
        pixels = np.asarray(image, dtype=np.float32) / 257.0
        image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image if image.mode == "RGB" else image.convert("RGB")


def decode_image(data: bytes, *, max_pixels: int = FacePolicy.max_pixels) -> DecodedImage:
    """Decode JPEG/PNG/WebP bytes, refusing with :class:`InvalidCheckin` (a readable reason)
    anything that is not a complete image of acceptable size. The pixel count is checked from
    the header before any pixel is decoded, so decompression bombs cost nothing."""
    if not data:
        raise InvalidCheckin("image is empty (0 bytes)")
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as e:
        raise InvalidCheckin(f"image too large: {e}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InvalidCheckin(f"not an image: unrecognised data ({len(data)} bytes, "
                             f"starting {data[:8].hex(' ')})") from e
    with image:
        if image.format not in IMAGE_FORMATS:
            raise InvalidCheckin(f"unsupported image format {image.format}: "
                                 f"send {', '.join(IMAGE_FORMATS)}")
        width, height = image.size
        if width <= 0 or height <= 0:
            raise InvalidCheckin(f"image has no pixels ({width}x{height})")
        if width * height > max_pixels:
            raise InvalidCheckin(f"image too large: {width}x{height} = {width * height:,} pixels, "
                                 f"the limit is {max_pixels:,}")
        if image.format in ("JPEG", "MPO"):
            if not _jpeg_has_end(data):
                raise InvalidCheckin(f"truncated JPEG: the data ({len(data):,} bytes) ends "
                                     "before the end-of-image marker")
            image.draft("RGB", (DETECT_SIZE, DETECT_SIZE))
        try:
            image.load()
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise InvalidCheckin(f"corrupt or truncated {image.format} image: {e}") from None
        with contextlib.suppress(Exception):  # Pillow's EXIF parser raises many types:
            ImageOps.exif_transpose(image, in_place=True)  # a bad EXIF block is not a bad photo
        rgb = _flatten(image)
    factor = min(rgb.size) // DETECT_SIZE
    if factor > 1:  # PNG and WebP are decoded whole: reduce them as the JPEG decoder does
        rgb = rgb.reduce(factor)
    bgr = cv2.cvtColor(np.asarray(rgb), cv2.COLOR_RGB2BGR)
    return DecodedImage(bgr=bgr, original_size=(width, height), phash=perceptual_hash(rgb))


def perceptual_hash(image: Image.Image) -> str:
    """imagehash's 64-bit pHash (DCT of a 32 x 32 grayscale) of the whole picture, after a box
    reduction to about 128 px (6x faster than letting pHash's Lanczos resize do it all, and as
    robust; docs/face-calibration.md has the measurements)."""
    gray = image.convert("L")
    factor = min(gray.size) // 128
    return str(imagehash.phash(gray.reduce(factor) if factor > 1 else gray))


# --- detection and alignment ----------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Face:
    """A detected face in the pixels of the image given to :meth:`FaceVerifier.detect`."""

    box: tuple[float, float, float, float]  # x, y, width, height
    landmarks: np.ndarray  # 5 x 2: eyes, nose tip, mouth corners, each pair left to right
    score: float

    @property
    def size(self) -> float:
        """The shorter side of the box."""
        return min(self.box[2], self.box[3])

    @property
    def area(self) -> float:
        return self.box[2] * self.box[3]


class _Detector(Protocol):
    def detect(self, bgr: np.ndarray) -> list[Face]: ...


Map = Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]


class _YuNet:
    """OpenCV Zoo's YuNet (2023mar) run by onnxruntime, decoded as OpenCV's face_detect.cpp does:
    per stride 8/16/32, score = sqrt(cls * obj), box centre = (grid + delta) * stride, size =
    exp(delta) * stride, landmarks = (grid + delta) * stride; then NMS (IoU 0.3).

    Two ways to feed it. For the CPU, one image per call padded to a multiple of 32 (the least
    arithmetic). For a GPU (``fixed_batch``), every call has one shape: ``fixed_batch`` images,
    each at the top left of a :data:`DETECT_SIZE` square, unused slots zero, as uint8 pixels
    (:func:`processors.face_models.uint8_input`). A GPU session builds its kernels' plans for
    each new input shape (measured on an H200: ~1.3 s for a new shape, against 2 ms for the
    recognizer's known one); one shape means it does so once, at start."""

    STRIDES = (8, 16, 32)

    def __init__(self, sess: ort.InferenceSession, score_threshold: float, *,
                 fixed_batch: int | None = None) -> None:
        self.session = sess
        self.score_threshold = score_threshold
        self.fixed_batch = fixed_batch
        self.input_name = sess.get_inputs()[0].name

    @staticmethod
    def _scaled(bgr: np.ndarray) -> tuple[np.ndarray, float]:
        height, width = bgr.shape[:2]
        scale = min(1.0, DETECT_SIZE / max(height, width))
        if scale < 1.0:
            bgr = cv2.resize(bgr, (max(1, round(width * scale)), max(1, round(height * scale))),
                             interpolation=cv2.INTER_AREA)
        return bgr, scale

    def detect(self, bgr: np.ndarray) -> list[Face]:
        if self.fixed_batch is not None:
            return self.detect_many([bgr], lambda fn, items: [fn(i) for i in items])[0]
        scaled, scale = self._scaled(bgr)
        h, w = scaled.shape[:2]
        blob = np.zeros((1, 3, -(-h // 32) * 32, -(-w // 32) * 32), np.float32)
        blob[0, :, :h, :w] = scaled.transpose(2, 0, 1)  # BGR, 0..255, zero padding
        return self._faces(self.session.run(None, {self.input_name: blob}), 0, blob.shape[3],
                           scale)

    def detect_many(self, images: Sequence[np.ndarray], pool_map: Map) -> list[list[Face]]:
        """:meth:`detect` for several images in calls of ``fixed_batch``; resizing and decoding
        the outputs run through ``pool_map`` (threads)."""
        assert self.fixed_batch is not None, "detect_many needs a fixed_batch session"
        scaled: list[tuple[np.ndarray, float]] = pool_map(self._scaled, images)
        found: list[list[Face]] = []
        for start in range(0, len(scaled), self.fixed_batch):
            chunk = scaled[start:start + self.fixed_batch]
            blob = np.zeros((self.fixed_batch, DETECT_SIZE, DETECT_SIZE, 3), np.uint8)
            for i, (image, _) in enumerate(chunk):
                blob[i, :image.shape[0], :image.shape[1]] = image
            outputs = self.session.run(None, {self.input_name: blob})
            found += pool_map(lambda i, out=outputs, c=chunk: self._faces(out, i, DETECT_SIZE,
                                                                          c[i][1]),
                              range(len(chunk)))
        return found

    def _faces(self, outputs: list[np.ndarray], n: int, pad_w: int, scale: float) -> list[Face]:
        """The faces of image ``n`` of a call's outputs, in original pixels."""
        boxes, scores, points = [], [], []
        for i, stride in enumerate(self.STRIDES):
            cls, obj = outputs[i][n, :, 0], outputs[i + 3][n, :, 0]
            bbox, kps = outputs[i + 6][n], outputs[i + 9][n]
            score = np.sqrt(np.clip(cls, 0, 1) * np.clip(obj, 0, 1))
            idx = np.flatnonzero(score >= self.score_threshold)
            cols = pad_w // stride
            row, col = (idx // cols).astype(np.float32), (idx % cols).astype(np.float32)
            cx, cy = (col + bbox[idx, 0]) * stride, (row + bbox[idx, 1]) * stride
            bw, bh = np.exp(bbox[idx, 2]) * stride, np.exp(bbox[idx, 3]) * stride
            boxes.append(np.stack([cx - bw / 2, cy - bh / 2, bw, bh], axis=1))
            scores.append(score[idx])
            k = kps[idx].reshape(-1, 5, 2)
            points.append(np.stack([(k[:, :, 0] + col[:, None]) * stride,
                                    (k[:, :, 1] + row[:, None]) * stride], axis=2))
        all_boxes, all_scores = np.concatenate(boxes), np.concatenate(scores)
        all_points = np.concatenate(points)
        keep = cv2.dnn.NMSBoxes(all_boxes.tolist(), all_scores.tolist(), self.score_threshold,
                                NMS_IOU)
        return [Face(box=tuple(float(v) / scale for v in all_boxes[j]),
                     landmarks=(all_points[j] / scale).astype(np.float32),
                     score=float(all_scores[j]))
                for j in np.asarray(keep, dtype=int).reshape(-1)]


class _Scrfd:
    """insightface's SCRFD detector (optional insightface pack)."""

    def __init__(self, model: SCRFD, score_threshold: float) -> None:
        model.prepare(0, input_size=(DETECT_SIZE, DETECT_SIZE), det_thresh=score_threshold)
        self.model = model

    def detect(self, bgr: np.ndarray) -> list[Face]:
        det, kps = self.model.detect(bgr)
        return [Face(box=(float(x1), float(y1), float(x2 - x1), float(y2 - y1)),
                     landmarks=np.asarray(kps[i], np.float32), score=float(score))
                for i, (x1, y1, x2, y2, score) in enumerate(det)]


def _in_batches(model: Callable[[list[np.ndarray]], np.ndarray], images: list[np.ndarray],
                fixed: bool) -> np.ndarray:
    """``model``'s output rows for same-sized ``images``, run :data:`EMBED_BATCH` at a time;
    when ``fixed``, every batch is filled up to that size with black images (a GPU session then
    sees one shape; see :class:`_YuNet`) and their rows are dropped."""
    out = []
    for start in range(0, len(images), EMBED_BATCH):
        batch = images[start:start + EMBED_BATCH]
        filler = [np.zeros_like(batch[0])] * (EMBED_BATCH - len(batch)) if fixed else []
        out.append(model(batch + filler)[:len(batch)])
    return np.concatenate(out)


def _similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src to dst
    (Umeyama 1991), as 2 x 3. The same estimate insightface's norm_crop (via scikit-image) and
    OpenCV's FaceRecognizerSF.alignCrop make; computed here because scikit-image deprecates the
    call norm_crop uses."""
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    d = np.array([1.0, -1.0 if np.linalg.det(cov) < 0 else 1.0])
    rotation = u @ np.diag(d) @ vt
    scale = float(s @ d) / float(src_c.var(axis=0).sum())
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


def align_face(bgr: np.ndarray, face: Face, size: int = 112) -> np.ndarray:
    """The ArcFace-standard 5-point aligned crop (size x size, BGR)."""
    matrix = _similarity_transform(face.landmarks.astype(np.float64),
                                   arcface_dst.astype(np.float64) * (size / 112.0))
    return cv2.warpAffine(bgr, matrix, (size, size), borderValue=0.0)


# --- liveness -------------------------------------------------------------------------------


class _Liveness:
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
            logits = _in_batches(functools.partial(self._run, sess), [c[m] for c in crops],
                                 self.fixed_batches).astype(np.float64)
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            summed += exp / exp.sum(axis=1, keepdims=True)
        return [1.0 - float(v) for v in summed[:, 1] / 2.0]


# --- results, templates ---------------------------------------------------------------------


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


@dataclass(frozen=True, slots=True, eq=False)
class Template:
    """An enrolled face: the renormalised mean of the enrollment embeddings, bound to the pack
    that computed it (an embedding means nothing to another recognizer)."""

    embedding: np.ndarray = field(repr=False)
    pack_id: str
    images: int


class EnrollmentError(ValueError):
    """The enrollment photos cannot make a template; the message names the photo (0-based)."""


class TemplateError(ValueError):
    """A sealed template cannot be opened: another pack, another key, or damaged."""


class TemplateCipher:
    """Seals templates with AES-GCM. The blob carries the pack id in clear (to say which pack a
    refused template belongs to) and authenticates it, and the NIP it was enrolled for, as
    associated data: a template sealed for another pack or another ASN (one colleague's face
    copied under another's NIP), or altered, is refused. The key is never logged or shown."""

    MAGIC = b"HFT2"  # HFT1 blobs were not bound to a NIP: they are refused, re-enroll

    def __init__(self, key: bytes, pack_id: str) -> None:
        if len(key) not in (16, 24, 32):
            raise ValueError("the template key must be 16, 24 or 32 bytes")
        self._aead = AESGCM(key)
        self.pack_id = pack_id
        pack = pack_id.encode()
        self._header = self.MAGIC + struct.pack(">H", len(pack)) + pack

    def __repr__(self) -> str:
        return f"TemplateCipher(pack_id={self.pack_id!r}, key=<hidden>)"

    def seal(self, template: Template, nip: str) -> bytes:
        if template.pack_id != self.pack_id:
            raise TemplateError(f"template of pack {template.pack_id!r} cannot be sealed for "
                                f"pack {self.pack_id!r}")
        nonce = os.urandom(12)
        plain = struct.pack(">H", template.images) + template.embedding.astype("<f4").tobytes()
        return self._header + nonce + self._aead.encrypt(nonce, plain,
                                                         self._header + nip.encode())

    def open(self, blob: bytes, nip: str) -> Template:
        """The template enrolled for ``nip``; :class:`TemplateError` if it is anyone else's."""
        if blob.startswith(b"HFT1"):
            raise TemplateError("template sealed before templates were bound to their NIP: "
                                "re-enroll the ASN")
        if not blob.startswith(self.MAGIC) or len(blob) < len(self.MAGIC) + 2:
            raise TemplateError("not a sealed face template")
        (length,) = struct.unpack_from(">H", blob, len(self.MAGIC))
        header_end = len(self.MAGIC) + 2 + length
        pack_id = blob[len(self.MAGIC) + 2:header_end].decode(errors="replace")
        if pack_id != self.pack_id:
            raise TemplateError(f"template was enrolled with model pack {pack_id!r}; this "
                                f"verifier uses {self.pack_id!r}: re-enroll the ASN")
        nonce, sealed = blob[header_end:header_end + 12], blob[header_end + 12:]
        try:
            plain = self._aead.decrypt(nonce, sealed, blob[:header_end] + nip.encode())
        except (InvalidTag, ValueError):
            raise TemplateError(f"cannot open face template as {nip}'s: wrong key, another "
                                "ASN's template, or damaged data") from None
        (images,) = struct.unpack_from(">H", plain)
        embedding = np.frombuffer(plain[2:], "<f4").astype(np.float32)
        if not np.isfinite(embedding).all():
            raise TemplateError("face template holds values that are not numbers")
        return Template(embedding, pack_id, images)


# --- replay ---------------------------------------------------------------------------------


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


# --- the verifier ---------------------------------------------------------------------------


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
    the detector runs batched (:meth:`_YuNet.detect_many`). Thread-safe for concurrent calls.
    """

    def __init__(self, policy: FacePolicy | None = None, *, cache_dir: Path | str,
                 threads: int | None = None) -> None:
        self.policy = policy or FacePolicy()
        providers = providers_for(self.policy.device)
        self.providers = [p if isinstance(p, str) else p[0] for p in providers]
        self.threads = max(1, threads or os.cpu_count() or 1)
        self._detector: _Detector
        self._recognizer: ArcFaceONNX
        # On a GPU every model call has one shape (see _YuNet): batches are padded to full size.
        self._fixed_batches = self.policy.device != "cpu"
        if self.policy.pack == "default":
            files = ensure_default_pack(Path(cache_dir))
            if self.policy.device == "cpu":
                self._detector = _YuNet(session(files.detector, providers, 1),
                                        self.policy.det_score_threshold)
            else:
                self._detector = _YuNet(
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
            self._detector = _Scrfd(pack.detector, self.policy.det_score_threshold)
            self._recognizer = pack.recognizer
            self.pack_id = f"insightface:{pack.version}"
            calibrated = None
        threshold = self.policy.match_threshold
        if threshold is None:
            if calibrated is None:
                raise FaceModelError(f"no calibrated match threshold for {self.pack_id}: run "
                                     "processors.face.calibrate on labelled pairs and set "
                                     "face.match_threshold")
            threshold = calibrated
        self.threshold = float(threshold)
        self._liveness = (_Liveness(liveness_sessions(Path(self.policy.liveness_dir),
                                                      providers, self.threads),
                                    self._fixed_batches)
                          if self.policy.liveness_dir else None)

    @property
    def _batch_detector(self) -> _YuNet | None:
        """The detector when it runs batched (a GPU session with a fixed batch)."""
        detector = self._detector
        return detector if isinstance(detector, _YuNet) and detector.fixed_batch else None

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
        feats = _in_batches(self._recognizer.get_feat, crops, self._fixed_batches
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


# --- calibration and benchmark --------------------------------------------------------------


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
