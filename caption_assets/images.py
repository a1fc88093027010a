"""Open one image payload safely and describe it.

The pixel count is read from the header and checked *before* any decode, so a decompression bomb
costs a few kilobytes, not gigabytes. A full decode follows (it is the only way to find truncated
or corrupt data); the perceptual hash reuses that decoded image.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError
from scipy.fft import dctn

from caption_assets.copy_detection import make_thumb

SUPPORTED_FORMATS = frozenset({"JPEG", "PNG", "WEBP"})
DEFAULT_MAX_PIXELS = 64_000_000  # ~8000 x 8000; anything larger is treated as a decompression bomb


class BadImage(Exception):
    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True, slots=True)
class ImageInfo:
    sha256: str
    phash: int  # 64-bit DCT perceptual hash, stored as signed int64 bits
    width: int
    height: int
    format: str
    num_bytes: int
    thumb: bytes | None = None  # copy detection's stored thumbnail (caption_assets.copy_detection); None if it cannot be made


def inspect_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageInfo:
    """Validate and describe an image payload; raise ``BadImage`` with a reason code otherwise."""
    if not data:
        raise BadImage("empty_image", "image payload has zero bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(io.BytesIO(data))
        except Image.DecompressionBombError as exc:
            raise BadImage("decompression_bomb", str(exc)) from None
        except UnidentifiedImageError:
            if _has_image_signature(data):
                raise BadImage("corrupt_image", "image signature present but the header does not parse") from None
            raise BadImage("not_an_image", f"payload is not a recognised image (starts with {data[:8]!r})") from None
        except Exception as exc:  # noqa: BLE001 - Pillow raises many types on hostile headers
            raise BadImage("corrupt_image", f"unreadable image header: {exc}") from None
        with im:
            width, height = im.size
            if width * height > max_pixels:
                raise BadImage("decompression_bomb", f"{width}x{height} = {width * height:,} pixels exceeds the {max_pixels:,} limit")
            if im.format not in SUPPORTED_FORMATS:
                raise BadImage("unsupported_format", f"{im.format} images are not accepted (JPEG, PNG, WebP)")
            fmt = im.format
            try:
                im.load()
            except OSError as exc:
                reason = "truncated_image" if "truncated" in str(exc).lower() else "corrupt_image"
                raise BadImage(reason, f"decode failed: {exc}") from None
            except Exception as exc:  # noqa: BLE001
                raise BadImage("corrupt_image", f"decode failed: {exc}") from None
            ph = perceptual_hash(im)
            thumb = _thumb(im)
    return ImageInfo(hashlib.sha256(data).hexdigest(), ph, width, height, fmt.lower(), len(data), thumb)


def _thumb(im: Image.Image) -> bytes | None:
    """Copy detection's thumbnail; an image it cannot make one of gets no copy verdict, never a quarantine."""
    try:
        return make_thumb(im)
    except Exception:  # noqa: BLE001 - odd modes and palettes: no thumbnail, no copy verdict
        return None


def _has_image_signature(data: bytes) -> bool:
    return data.startswith((b"\xff\xd8\xff", b"\x89PNG", b"GIF8")) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


def perceptual_hash(im: Image.Image) -> int:
    """64-bit DCT perceptual hash (pHash, as imagehash computes it) as a signed int64.

    The image is box-reduced before the 32x32 resize: same hash family, a fraction of the cost of
    a full-size Lanczos resample, which would otherwise cost as much as the JPEG decode itself.
    """
    gray = im.convert("L")
    factor = min(gray.size) // 64
    if factor > 1:
        gray = gray.reduce(factor)
    pixels = np.asarray(gray.resize((32, 32), Image.Resampling.BILINEAR), dtype=np.float32)
    low = dctn(pixels, norm=None)[:8, :8]
    bits = (low > np.median(low)).ravel()
    value = int.from_bytes(np.packbits(bits).tobytes(), "big")
    return value - (1 << 64) if value >= (1 << 63) else value
