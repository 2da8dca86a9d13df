"""Selfie bytes to pixels: decoding JPEG, PNG and WebP safely (size checked before any pixel is
decoded, truncated files refused with a readable reason) and the perceptual hash the replay
check compares."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import cv2
import imagehash
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from processors.events import InvalidCheckin
from processors.face_policy import FacePolicy

DETECT_SIZE = 640  # the detector sees the image scaled to this longest side (never enlarged)
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "MPO")  # MPO: a JPEG with more pictures after it
# (phones' HDR and portrait shots); its first picture is the photo


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
