"""Safe decoding of uploaded images: bytes -> an upright RGB image of the model's size, or a typed error.

The order of checks is the point:
    1. byte count            (before anything is parsed)          -> 413 payload_too_large
    2. magic bytes           PNG / JPEG / WebP only                -> 415 unsupported_media_type
    3. header only           width, height, pixel count            -> 413 image_too_large / 422 image_too_small
       (a decompression bomb declares its size in the header; it is rejected before any pixel is decoded)
    4. full decode           truncated / corrupt data              -> 422 invalid_image
    5. EXIF orientation, then CMYK / 16-bit / alpha / palette -> 8-bit RGB (shared with the pipeline),
       then the pipeline's own resize + centre crop (so for PNG/WebP a served demo equals what `pipe(...)`
       makes of the same file). JPEGs are decoded with DCT scaling (`draft`) straight to about the model
       size, which bounds memory (and differs from a full decode + resize by a few grey levels).
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import threading
import warnings
from dataclasses import dataclass

import PIL.Image

from suti.serve.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP")
_SIGNATURES = (  # (prefix, format name) for sniffing; only the first three are accepted
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
    (b"\x00\x00\x01\x00", "ICO"),
    (b"%PDF", "PDF"),
)
_DATA_URL = re.compile(r"^data:image/[a-z0-9.+-]+;base64,", re.IGNORECASE)


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int
    max_pixels: int
    max_side: int
    min_side: int


def sniff_format(data: bytes) -> str:
    """The container format named by the first bytes ('PNG', 'JPEG', 'WEBP', 'GIF', ... or 'unknown')."""
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    for prefix, name in _SIGNATURES:
        if data.startswith(prefix):
            return name
    head = data[:256].lstrip().lower()
    if head.startswith((b"<?xml", b"<svg")):
        return "SVG"
    return "unknown"


def check_header(img: PIL.Image.Image, where: str, limits: ImageLimits) -> None:
    w, h = img.size
    if w < limits.min_side or h < limits.min_side:
        raise InvalidInput(f"{where}: image is {w}x{h}; each side must be at least {limits.min_side} px",
                           code="image_too_small")
    if w > limits.max_side or h > limits.max_side or w * h > limits.max_pixels:
        raise PayloadTooLarge(f"{where}: image is {w}x{h} ({w * h} pixels); the limit is {limits.max_pixels} "
                              f"pixels and {limits.max_side} px per side", code="image_too_large")


class ImageDecoder:
    """Decodes uploads one bounded step at a time; at most `concurrency` full decodes run at once."""

    def __init__(self, limits: ImageLimits, size: int, concurrency: int = 2):
        self.limits = limits
        self.size = int(size)  # the model's image side: every image leaves here as size x size RGB
        self._slots = threading.BoundedSemaphore(concurrency)

    def decode(self, data: bytes, where: str = "image") -> PIL.Image.Image:
        from suti.pipeline.preprocess import fit_square, to_rgb_image

        if not isinstance(data, (bytes, bytearray)):
            raise InvalidInput(f"{where}: expected image bytes, got {type(data).__name__}")
        if len(data) == 0:
            raise InvalidInput(f"{where}: the file is empty", code="invalid_image")
        if len(data) > self.limits.max_bytes:
            raise PayloadTooLarge(f"{where}: {len(data)} bytes; the limit is {self.limits.max_bytes} bytes per image")
        kind = sniff_format(bytes(data[:256]))
        if kind not in ALLOWED_FORMATS:
            looks = "" if kind == "unknown" else f" (looks like {kind})"
            raise UnsupportedMediaType(f"{where}: not a PNG, JPEG or WebP image{looks}")
        with self._slots:
            img = self._open(bytes(data), kind, where)
            check_header(img, where, self.limits)
            if kind == "JPEG":  # DCT-domain downscale: decode at >= the model size, never at full size
                try:
                    img.draft(None, (self.size, self.size))
                except Exception:  # draft is an optimisation only
                    pass
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    img.load()
            except Exception as e:  # any decoder failure on hostile bytes is the client's bad file
                raise InvalidInput(f"{where}: cannot decode the {kind} data ({_reason(e)})",
                                   code="invalid_image") from None
            rgb = to_rgb_image(img, where)
            return fit_square(rgb, self.size)

    def _open(self, data: bytes, kind: str, where: str) -> PIL.Image.Image:
        """Parse only the header (PIL opens lazily); a declared size beyond PIL's own bomb guard is a 413."""
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", PIL.Image.DecompressionBombWarning)
                img = PIL.Image.open(io.BytesIO(data), formats=[kind])
        except (PIL.Image.DecompressionBombError, PIL.Image.DecompressionBombWarning) as e:
            raise PayloadTooLarge(f"{where}: decompression bomb rejected ({e})", code="image_too_large") from None
        except Exception as e:
            raise InvalidInput(f"{where}: cannot read the {kind} header ({_reason(e)})", code="invalid_image") from None
        if img.format not in ALLOWED_FORMATS:
            raise UnsupportedMediaType(f"{where}: {img.format} images are not accepted (PNG, JPEG or WebP only)")
        return img


def _reason(e: Exception) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return text[:200]


def decode_base64(text: object, where: str, max_bytes: int) -> bytes:
    """A base64 string (optionally a `data:image/...;base64,` URL) -> bytes, size-checked before decoding."""
    if not isinstance(text, str):
        raise InvalidInput(f"{where}: expected a base64 string, got {type(text).__name__}")
    body = _DATA_URL.sub("", text, count=1)
    if len(body) // 4 * 3 > max_bytes + 3:
        raise PayloadTooLarge(f"{where}: about {len(body) // 4 * 3} bytes; the limit is {max_bytes} bytes per image")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidInput(f"{where}: not valid base64 ({_reason(e)})", code="invalid_base64") from None
