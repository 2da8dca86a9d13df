"""Finding faces and aligning them: OpenCV Zoo's YuNet (the default pack) or insightface's SCRFD,
and the ArcFace five-point alignment the recognizers expect."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cv2
import numpy as np
import onnxruntime as ort
from insightface.model_zoo.scrfd import SCRFD
from insightface.utils.face_align import arcface_dst

from processors.images import DETECT_SIZE

NMS_IOU = 0.3  # OpenCV's FaceDetectorYN default
DETECT_BATCH = 32  # images per detector call where detection is batched (on a GPU)


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


class Detector(Protocol):
    def detect(self, bgr: np.ndarray) -> list[Face]: ...


Map = Callable[[Callable[[Any], Any], Sequence[Any]], list[Any]]


class YuNet:
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


class Scrfd:
    """insightface's SCRFD detector (optional insightface pack)."""

    def __init__(self, model: SCRFD, score_threshold: float) -> None:
        model.prepare(0, input_size=(DETECT_SIZE, DETECT_SIZE), det_thresh=score_threshold)
        self.model = model

    def detect(self, bgr: np.ndarray) -> list[Face]:
        det, kps = self.model.detect(bgr)
        return [Face(box=(float(x1), float(y1), float(x2 - x1), float(y2 - y1)),
                     landmarks=np.asarray(kps[i], np.float32), score=float(score))
                for i, (x1, y1, x2, y2, score) in enumerate(det)]


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
