"""Face verification on the real photos of shared/faces/deepface: matching, outcomes, bad input,
templates, replay detection, liveness and calibration."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance, ImageOps

from hadir.bench_face import bench_face
from hadir.calibration import calibrate
from processors.events import InvalidCheckin, Reason
from processors.face import (
    DEFAULT_PACK_THRESHOLD,
    EnrollmentError,
    FacePolicy,
    FaceResult,
    FaceVerifier,
)
from processors.face_detect import YuNet
from processors.face_models import ensure_default_pack, session, uint8_input_cached
from processors.images import DETECT_SIZE, decode_image
from processors.replay_index import ReplayIndex, hamming
from processors.templates import Template, TemplateCipher, TemplateError
from tests.paths import FACES, LIVENESS

NIP = "198001012005011001"
AT_MS = 1_796_000_000_000  # a check-in's server time, 2026-12


def photo(name: str) -> bytes:
    return (FACES / name).read_bytes()


def upright(name: str) -> Image.Image:
    return ImageOps.exif_transpose(Image.open(FACES / name)).convert("RGB")


def encode(image: Image.Image, fmt: str = "JPEG", **options: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The model cache (converted once per module)."""
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="module")
def verifier(models: Path) -> FaceVerifier:
    return FaceVerifier(cache_dir=models)


@pytest.fixture(scope="module")
def template(verifier: FaceVerifier) -> Template:
    """The person of img1/img2/img4/... enrolled from two photos."""
    return verifier.enroll([photo("img1.jpg"), photo("img2.jpg")])


def reasons(result: FaceResult) -> set[Reason]:
    return {f.reason for f in result.findings}


# --- matching -------------------------------------------------------------------------------


@pytest.mark.parametrize("a, b", [("img1.jpg", "img2.jpg"), ("img1.jpg", "img4.jpg"),
                                  ("img13.jpg", "img14.jpg"), ("img8.jpg", "img9.jpg"),
                                  ("img3.jpg", "img12.jpg")])
def test_same_person_matches(verifier: FaceVerifier, a: str, b: str) -> None:
    result = verifier.compare(photo(a), photo(b))
    assert result.match and result.similarity is not None
    assert result.similarity >= verifier.threshold
    assert (result.faces_a, result.faces_b) == (1, 1)


@pytest.mark.parametrize("a, b", [("img1.jpg", "img3.jpg"), ("img13.jpg", "img8.jpg"),
                                  ("img16.jpg", "img18.jpg"), ("img20.jpg", "img22.jpg")])
def test_different_people_do_not_match(verifier: FaceVerifier, a: str, b: str) -> None:
    result = verifier.compare(photo(a), photo(b))
    assert not result.match and result.similarity is not None and result.similarity < 0.3


def test_enrolled_person_passes_and_stranger_is_flagged(verifier: FaceVerifier,
                                                        template: Template) -> None:
    assert template.pack_id == verifier.pack_id and template.images == 2
    assert float(np.linalg.norm(template.embedding)) == pytest.approx(1, abs=1e-5)
    for name in ("img4.jpg", "img5.jpg", "img6.jpg", "img7.jpg", "img10.jpg", "img11.jpg"):
        result = verifier.verify(photo(name), template.embedding)
        assert result.findings == [] and result.faces == 1, name
        assert result.spoof_score is None  # liveness is off by default
    stranger = verifier.verify(photo("img3.jpg"), template.embedding)
    (finding,) = stranger.findings
    assert finding.reason is Reason.FACE_MISMATCH
    assert finding.evidence == {"similarity": round(stranger.similarity or 0, 4),
                                "threshold": DEFAULT_PACK_THRESHOLD}


@pytest.mark.parametrize("change", ["flip", "jpeg40", "resize", "darken", "grayscale",
                                    "gray16png"])
def test_altered_copies_still_match(verifier: FaceVerifier, template: Template,
                                    change: str) -> None:
    image = upright("img5.jpg")
    altered = {
        "flip": lambda: encode(ImageOps.mirror(image)),
        "jpeg40": lambda: encode(image, quality=40),
        "resize": lambda: encode(image.resize((image.width // 2, image.height // 2))),
        "darken": lambda: encode(ImageEnhance.Brightness(image).enhance(0.5)),
        "grayscale": lambda: encode(image.convert("L")),
        "gray16png": lambda: encode(Image.fromarray(
            np.asarray(image.convert("L")).astype(np.uint16) * 257), "PNG"),
    }[change]()
    result = verifier.verify(altered, template.embedding)
    assert result.findings == [], (change, result.similarity)


def test_png_with_alpha_is_composited(verifier: FaceVerifier, template: Template) -> None:
    rgba = upright("img4.jpg").convert("RGBA")
    alpha = Image.new("L", rgba.size, 255)
    alpha.paste(0, (0, 0, rgba.width // 6, rgba.height // 6))  # transparent corner
    rgba.putalpha(alpha)
    data = encode(rgba, "PNG")
    assert tuple(decode_image(data).bgr[2, 2]) == (255, 255, 255)
    assert verifier.verify(data, template.embedding).findings == []


def test_large_png_is_reduced_like_a_large_jpeg(verifier: FaceVerifier,
                                                 template: Template) -> None:
    """A PNG is decoded whole; kept whole, a batch of 64 large ones held gigabytes."""
    image = upright("img4.jpg")
    big = image.resize((image.width * 4000 // image.height, 4000))
    decoded = decode_image(encode(big, "PNG", compress_level=1))
    assert DETECT_SIZE <= min(decoded.bgr.shape[:2]) < 2 * DETECT_SIZE
    assert decoded.scale == pytest.approx(max(big.size) / max(decoded.bgr.shape[:2]))
    assert verifier.verify(encode(big, "PNG", compress_level=1),
                           template.embedding).findings == []


def test_exif_orientation_is_applied(verifier: FaceVerifier, template: Template) -> None:
    """A phone stores the sensor's pixels and an orientation tag; 6 = rotate 90 degrees clockwise
    to display. Stored sideways, the face is only found once the tag is honoured."""
    image = upright("img4.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(image.transpose(Image.Transpose.ROTATE_90), exif=exif.tobytes())
    decoded = decode_image(data)
    assert decoded.bgr.shape[1::-1] == decode_image(encode(image)).bgr.shape[1::-1]
    assert verifier.verify(data, template.embedding).findings == []


def test_verify_many_equals_verify(verifier: FaceVerifier, template: Template) -> None:
    names = ["img4.jpg", "img3.jpg", "couple.jpg", "img6.jpg"]
    batch = verifier.verify_many([(photo(n), template.embedding) for n in names]
                                 + [(b"junk", template.embedding)])
    for name, result in zip(names, batch, strict=False):
        single = verifier.verify(photo(name), template.embedding)
        assert isinstance(result, FaceResult)
        assert result.similarity == pytest.approx(single.similarity, abs=1e-5)
        assert reasons(result) == reasons(single) and result.phash == single.phash
    assert isinstance(batch[-1], InvalidCheckin)


# --- outcomes -------------------------------------------------------------------------------


def test_verify_many_with_the_batched_detector(models: Path, template: Template) -> None:
    """The GPU's way through verify_many (decode in threads, one detector call, crops in
    threads), run on the CPU: same outcomes as the CPU's way, bad input kept in place."""
    policy = FacePolicy(liveness_dir=str(LIVENESS))
    batched = FaceVerifier(policy, cache_dir=models, threads=2)
    batched._detector = YuNet(
        session(uint8_input_cached(ensure_default_pack(models).detector)),
        batched.policy.det_score_threshold, fixed_batch=4)
    assert batched._liveness is not None
    # and the recognizer's and liveness models' batches padded to full size, as on a GPU
    batched._fixed_batches = batched._liveness.fixed_batches = True
    names = ["img1.jpg", "img3.jpg", "couple.jpg", "img5.jpg", "img17.jpg"]
    items = [(photo(n), template.embedding) for n in names]
    items.insert(2, (b"not an image", template.embedding))
    plain = FaceVerifier(policy, cache_dir=models, threads=2).verify_many(items)
    results = batched.verify_many(items)
    assert isinstance(results[2], InvalidCheckin) and isinstance(plain[2], InvalidCheckin)
    assert sum(isinstance(want, FaceResult) for want in plain) == len(names)
    for got, want in zip(results, plain, strict=True):
        if isinstance(want, FaceResult):
            assert isinstance(got, FaceResult)
            assert reasons(got) == reasons(want) and got.faces == want.faces
            assert got.similarity == pytest.approx(want.similarity, abs=0.01)
            assert got.spoof_score == pytest.approx(want.spoof_score, abs=0.02)


def test_couple_is_multiple_faces_and_still_matched(verifier: FaceVerifier,
                                                    template: Template) -> None:
    result = verifier.verify(photo("couple.jpg"), template.embedding)
    assert result.faces == 2
    assert [f.reason for f in result.findings] == [Reason.MULTIPLE_FACES]
    assert result.findings[0].evidence["faces"] == 2
    assert result.similarity is not None and result.similarity >= verifier.threshold
    crowd = verifier.verify(photo("selfie-many-people.jpg"), template.embedding)
    assert reasons(crowd) == {Reason.MULTIPLE_FACES, Reason.FACE_MISMATCH}


def test_faces_below_min_face_px_are_not_usable(verifier: FaceVerifier, models: Path,
                                                 template: Template) -> None:
    decoded = decode_image(photo("couple.jpg"))
    small, large = sorted(f.size * decoded.scale for f in verifier.detect(decoded.bgr))
    strict = FaceVerifier(FacePolicy(min_face_px=round((small + large) / 2)), cache_dir=models)
    result = strict.verify(photo("couple.jpg"), template.embedding)
    assert result.faces == 2 and result.findings == []


def test_no_face(verifier: FaceVerifier, template: Template) -> None:
    image = upright("img1.jpg")
    clothes = image.crop((0, image.height * 6 // 10, image.width, image.height))
    gradient = Image.linear_gradient("L").resize((640, 480)).convert("RGB")
    for data in (encode(clothes), encode(gradient, "PNG")):
        result = verifier.verify(data, template.embedding)
        assert [f.reason for f in result.findings] == [Reason.NO_FACE]
        assert result.similarity is None and result.faces == 0 and len(result.phash) == 16


# --- bad input ------------------------------------------------------------------------------


def _png_bomb(width: int, height: int) -> bytes:
    """A small PNG that claims width x height pixels (a decompression bomb if decoded)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(bytes(100_000), 9)) + chunk(b"IEND", b""))


def _bad_inputs() -> dict[str, tuple[bytes, str]]:
    jpeg = photo("img5.jpg")
    png = encode(upright("img5.jpg"), "PNG")
    return {
        "empty": (b"", "empty"),
        "text": (b"selfie.jpg", "not an image"),
        "random": (bytes(range(256)) * 8, "not an image"),
        "half jpeg": (jpeg[: len(jpeg) // 2], "truncated JPEG"),
        "jpeg minus eoi": (jpeg[:-2], "truncated JPEG"),
        "header only jpeg": (jpeg[:600], "truncated JPEG"),
        "half png": (png[: len(png) // 2], "corrupt or truncated PNG"),
        "huge png": (_png_bomb(6000, 6000), "too large: 6000x6000 = 36,000,000 pixels"),
        "bomb png": (_png_bomb(40000, 40000), "too large"),
        "gif": (encode(upright("img5.jpg").convert("P"), "GIF"), "unsupported image format GIF"),
    }


@pytest.mark.parametrize("case", list(_bad_inputs()))
def test_bad_input_is_an_invalid_checkin(verifier: FaceVerifier, template: Template,
                                         case: str) -> None:
    data, message = _bad_inputs()[case]
    with pytest.raises(InvalidCheckin, match=message):
        verifier.verify(data, template.embedding)


def test_pixel_limit_comes_from_policy(tmp_path: Path) -> None:
    data = encode(upright("img5.jpg"))
    with pytest.raises(InvalidCheckin, match="the limit is 1,000"):
        decode_image(data, max_pixels=1000)


# --- enrollment and templates ---------------------------------------------------------------


def test_enrollment_refuses_unusable_photos(verifier: FaceVerifier) -> None:
    with pytest.raises(EnrollmentError, match="photo 1: 2 faces"):
        verifier.enroll([photo("img1.jpg"), photo("couple.jpg")])
    blank = encode(Image.new("RGB", (400, 400), (200, 180, 160)))
    with pytest.raises(EnrollmentError, match="photo 0: no face"):
        verifier.enroll([blank])
    with pytest.raises(EnrollmentError, match="photo 2: not an image"):
        verifier.enroll([photo("img1.jpg"), photo("img2.jpg"), b"nope"])
    with pytest.raises(EnrollmentError, match="at least one photo"):
        verifier.enroll([])


def test_template_seal_and_open(verifier: FaceVerifier, template: Template) -> None:
    key = bytes(range(32))
    cipher = verifier.cipher(key)
    blob = cipher.seal(template, NIP)
    assert template.embedding.tobytes() not in blob
    opened = cipher.open(blob, NIP)
    assert opened.pack_id == template.pack_id and opened.images == template.images
    np.testing.assert_array_equal(opened.embedding, template.embedding)
    assert "embedding" not in repr(template) and key.hex() not in repr(cipher)

    with pytest.raises(TemplateError, match="not on this keyring"):
        TemplateCipher(bytes(32), verifier.pack_id).open(blob, NIP)
    with pytest.raises(TemplateError, match="damaged"):
        cipher.open(blob[:-1] + bytes([blob[-1] ^ 1]), NIP)
    # Bound to its ASN: a colleague's template copied under another NIP does not open.
    with pytest.raises(TemplateError, match="another ASN's template"):
        cipher.open(blob, "198001012005011002")
    other = TemplateCipher(key, "insightface:0123456789abcdef")
    with pytest.raises(TemplateError, match="re-enroll"):
        other.open(blob, NIP)
    # The pack id is authenticated: relabelling the blob for another pack breaks it.
    relabelled = other._pack_header + blob[len(cipher._pack_header):]
    with pytest.raises(TemplateError, match="wrong key"):
        other.open(relabelled, NIP)
    with pytest.raises(TemplateError, match="cannot be sealed"):
        other.seal(template, NIP)
    with pytest.raises(TemplateError, match="not a sealed"):
        cipher.open(b"garbage", NIP)
    with pytest.raises(ValueError, match="16, 24 or 32 bytes"):
        TemplateCipher(b"short", verifier.pack_id)
    broken = Template(np.full_like(template.embedding, np.nan), template.pack_id, 1)
    with pytest.raises(TemplateError, match="not numbers"):
        cipher.open(cipher.seal(broken, NIP), NIP)


def test_a_template_that_is_not_a_number_matches_nothing(verifier: FaceVerifier,
                                                         template: Template) -> None:
    nan = np.full_like(template.embedding, np.nan)
    result = verifier.verify(photo("img2.jpg"), nan)
    assert [f.reason for f in result.findings] == [Reason.FACE_MISMATCH]
    assert result.findings[0].evidence["similarity"] is None  # JSON has no NaN


# --- replay ---------------------------------------------------------------------------------


def test_replayed_selfie_is_found_and_fresh_ones_are_not(verifier: FaceVerifier) -> None:
    index = ReplayIndex(verifier.policy.replay_max_hamming)
    originals = sorted(FACES.glob("*.jpg"))
    for i, path in enumerate(originals):  # 64 different photos, several of the same people
        data = path.read_bytes()
        assert index.check_and_add(decode_image(data).phash, f"e{i}", f"nip{i}", AT_MS) is None
        assert index.check_and_add(decode_image(data).phash, f"e{i}", f"nip{i}", AT_MS) is None
    image = upright("img7.jpg")
    copies = [encode(image, quality=40),
              encode(image.resize((image.width // 3, image.height // 3))),
              encode(ImageEnhance.Brightness(image).enhance(0.8), "PNG")]
    for n, data in enumerate(copies):
        finding = index.check_and_add(decode_image(data).phash, f"replay{n}", "nipX", AT_MS)
        assert finding is not None and finding.reason is Reason.SELFIE_REPLAY
        original = originals.index(FACES / "img7.jpg")
        assert finding.evidence["original_event_id"] == f"e{original}"
        assert finding.evidence["original_nip"] == f"nip{original}"
        assert 0 <= int(finding.evidence["hamming"]) <= verifier.policy.replay_max_hamming


def test_replay_index_bands_find_every_near_hash() -> None:
    rng = np.random.default_rng(7)
    for max_hamming in (0, 3, 8):
        index = ReplayIndex(max_hamming)
        base = int(rng.integers(0, 2**63)) * 2 + 1
        index.check_and_add(f"{base:016x}", "e0", "n0", AT_MS)
        for trial in range(20):
            bits = rng.choice(64, size=max_hamming, replace=False)
            near = base ^ sum(1 << int(b) for b in bits)
            found = index.check_and_add(f"{near:016x}", f"near{trial}", "n1", AT_MS)
            assert found is not None and found.evidence["hamming"] <= max_hamming
        far = base ^ sum(1 << int(b) for b in rng.choice(64, size=max_hamming + 30,
                                                          replace=False))
        assert index.check_and_add(f"{far:016x}", "far", "n2", AT_MS) is None


def test_phash_separates_distinct_photos(verifier: FaceVerifier) -> None:
    hashes = [decode_image(p.read_bytes()).phash for p in sorted(FACES.glob("*.jpg"))]
    closest = min(hamming(a, b) for i, a in enumerate(hashes) for b in hashes[i + 1:])
    assert closest > 2 * verifier.policy.replay_max_hamming


# --- liveness -------------------------------------------------------------------------------


def test_liveness_on_the_samples(verifier: FaceVerifier, models: Path,
                                template: Template) -> None:
    assert not verifier.liveness_enabled
    live = FaceVerifier(FacePolicy(liveness_dir=str(LIVENESS)), cache_dir=models)
    live.self_check()  # every model runs, liveness included
    assert live.liveness_enabled
    scores = {}
    for name in ("image_F1.jpg", "image_F2.jpg", "image_T1.jpg"):
        result = live.verify((LIVENESS / "samples" / name).read_bytes(), template.embedding)
        assert result.spoof_score is not None
        scores[name] = (result.spoof_score, Reason.SPOOF in reasons(result))
    assert scores["image_F1.jpg"][1] and scores["image_F1.jpg"][0] > 0.7
    assert scores["image_F2.jpg"][1] and scores["image_F2.jpg"][0] > 0.7
    assert not scores["image_T1.jpg"][1] and scores["image_T1.jpg"][0] < 0.1


# --- calibration, benchmark, policy ---------------------------------------------------------


def test_calibration_numbers(verifier: FaceVerifier) -> None:
    report = calibrate(FACES / "master.csv", FACES, verifier=verifier)
    assert report["pairs"] >= 299 and report["same"] == 38
    assert report["images_without_face"] == []
    chosen = report["chosen"]
    assert chosen["threshold"] == DEFAULT_PACK_THRESHOLD
    assert chosen["far"] == 0 and chosen["frr"] <= 0.03 and chosen["accuracy"] >= 0.99
    assert chosen["far_normal_fit"] <= 0.001
    assert report["opencv_0.363"]["accuracy"] >= 0.99
    assert report["same_similarity"]["min"] > 0.5
    assert report["different_similarity"]["max"] < 0.4


def test_bench_face_reports_every_stage(verifier: FaceVerifier) -> None:
    result = bench_face(FACES, n=6, verifier=verifier, batch=3)
    for stage in ("decode", "detect", "embed", "verify"):
        assert result[stage]["median_ms"] > 0
    assert result["batched"]["selfies_per_s"] > 0 and result["providers"] == [
        "CPUExecutionProvider"]


@pytest.mark.parametrize("bad", [{"pack": "dlib"}, {"match_threshold": 1.5},
                                 {"replay_max_hamming": 64}, {"spoof_threshold": 0.0},
                                 {"max_pixels": 0}, {"device": "gpu"}, {"device": "cuda:x"},
                                 {"device": "cuda:"}])
def test_policy_is_validated(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        FacePolicy(**bad)  # type: ignore[arg-type]


def test_a_selfie_that_breaks_the_models_is_judged_alone(verifier: FaceVerifier,
                                                         template: Template,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The intake judges a face batch together; a selfie that makes the models raise (here a
    template of the wrong size) must not fail the whole batch, and on every redelivery. When
    the models cannot run at all, that is raised, even for a batch of one."""
    from streams.intake import judge

    items = [(photo("img1.jpg"), template.embedding),
             (photo("img2.jpg"), np.zeros(7, np.float32)),
             (photo("img3.jpg"), None)]
    good, broken, unenrolled = judge(verifier, items)
    assert isinstance(good, FaceResult) and good.similarity >= verifier.threshold
    assert isinstance(broken, InvalidCheckin)
    assert str(broken).startswith("face verification failed: ValueError")
    assert isinstance(unenrolled, FaceResult) and unenrolled.findings == []
    (alone,) = judge(verifier, [items[1]])
    assert str(alone).startswith("face verification failed: ValueError")

    def out_of_memory(crops: list[np.ndarray]) -> np.ndarray:
        raise RuntimeError("CUDA failure 2: out of memory")

    monkeypatch.setattr(verifier, "_embed_crops", out_of_memory)
    for batch in (items[:1], items[:2]):
        with pytest.raises(RuntimeError, match="out of memory"):
            judge(verifier, batch)


def test_a_selfie_without_a_template_is_still_checked(verifier: FaceVerifier) -> None:
    """An ASN not enrolled yet: no match is possible, but no face, several faces (and, with
    the pack, liveness) are judged as for everyone else."""
    blank = encode(Image.new("RGB", (640, 480), (200, 180, 160)))
    no_face, couple = verifier.verify_many([(blank, None), (photo("couple.jpg"), None)])
    assert isinstance(no_face, FaceResult) and isinstance(couple, FaceResult)
    assert [f.reason for f in no_face.findings] == [Reason.NO_FACE]
    assert [f.reason for f in couple.findings] == [Reason.MULTIPLE_FACES]
    assert couple.similarity is None and couple.faces == 2


def test_replay_index_workers_share_one_record_per_new_hash() -> None:
    """What one intake worker publishes is all another needs to find replays of it, and a new
    selfie costs one small record however many the index holds."""
    published: list[tuple[str, str]] = []
    one = ReplayIndex(8, publish=lambda phash, first: published.append((phash, first)))
    rng = np.random.default_rng(3)
    hashes = [f"{int(h):016x}" for h in rng.integers(0, 2**63, size=2000)]
    for n, h in enumerate(hashes):
        one.check_and_add(h, f"e{n}", f"n{n}", AT_MS)
    one.check_and_add(hashes[0], "e0", "n0", AT_MS)  # a redelivery: nothing new to publish
    assert published == [(h, f"e{n} n{n} {AT_MS}") for n, h in enumerate(hashes)]
    other = ReplayIndex(8)
    for phash, first in published:
        other.learn(phash, first)
    near = f"{int(hashes[1500], 16) ^ 0b101:016x}"  # 2 bits away
    found = other.check_and_add(near, "e-replay", "n-other", AT_MS)
    assert found is not None and found.evidence["original_event_id"] == "e1500"
    assert found.evidence == {"original_event_id": "e1500", "original_nip": "n1500",
                              "hamming": 2}


def test_the_replay_index_keeps_a_window() -> None:
    """A sighting older than the window before a check-in no longer counts: the same hash is
    then a new first sighting, published again, and the earliest sighting of a hash wins."""
    day = 24 * 3600 * 1000
    published: list[tuple[str, str]] = []
    index = ReplayIndex(8, 400 * day, publish=lambda phash, first: published.append((phash, first)))
    assert index.check_and_add("00000000000000ff", "e-old", "n1", AT_MS) is None
    later = AT_MS + 399 * day
    found = index.check_and_add("00000000000000fe", "e-again", "n2", later)
    assert found is not None and found.evidence["original_event_id"] == "e-old"
    much_later = AT_MS + 401 * day  # e-old left the window, e-again is still in it
    found = index.check_and_add("00000000000000ff", "e-new", "n3", much_later)
    assert found is not None and found.evidence["original_event_id"] == "e-again"
    assert published[-1] == ("00000000000000ff", f"e-new n3 {much_later}")
    assert index.check_and_add("00000000000000ff", "e-last", "n4", AT_MS + 900 * day) is None
    index.learn("00000000000000ff", f"e-old n1 {AT_MS}")  # an older sighting from elsewhere
    assert index.first["00000000000000ff"].event_id == "e-old"
    with pytest.raises(ValueError, match="not a selfie index entry"):
        index.learn("0000000000000001", "e-1 n1")


def test_a_multi_picture_jpeg_is_its_first_picture() -> None:
    """Phones' HDR and portrait shots are JPEGs with more pictures after the first (MPO)."""
    first = Image.open(FACES / "img1.jpg").convert("RGB")
    mpo, jpeg = io.BytesIO(), io.BytesIO()
    first.save(mpo, format="MPO", save_all=True, append_images=[first.resize((64, 64))])
    first.save(jpeg, format="JPEG")
    assert Image.open(io.BytesIO(mpo.getvalue())).format == "MPO"
    assert decode_image(mpo.getvalue()).phash == decode_image(jpeg.getvalue()).phash
