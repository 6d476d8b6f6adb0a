"""Upload decoding without a server: formats, conversions, EXIF, and bombs refused from the header alone."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import PIL.Image
import pytest

from suti.serve.errors import InvalidInput, PayloadTooLarge, UnsupportedMediaType
from suti.serve.uploads import ImageDecoder, ImageLimits, decode_base64, sniff_format

LIMITS = ImageLimits(max_bytes=2_000_000, max_pixels=1_000_000, max_side=2048, min_side=8)


def encode(img: PIL.Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def halves(w: int = 40, h: int = 20) -> PIL.Image.Image:
    """Left half red, right half blue: orientation-sensitive and colour-checkable."""
    arr = np.zeros((h, w, 3), np.uint8)
    arr[:, : w // 2] = (255, 0, 0)
    arr[:, w // 2:] = (0, 0, 255)
    return PIL.Image.fromarray(arr)


@pytest.fixture(scope="module")
def decoder():
    return ImageDecoder(LIMITS, size=16)


def test_png_jpeg_webp_decode_to_the_model_size(decoder):
    for fmt, tol in (("PNG", 0), ("WEBP", 40), ("JPEG", 40)):
        out = decoder.decode(encode(halves(), fmt, **({"lossless": True} if fmt == "WEBP" else {})), fmt)
        arr = np.asarray(out, dtype=np.int16)
        assert out.mode == "RGB" and out.size == (16, 16)
        assert np.abs(arr[8, 2] - (255, 0, 0)).max() <= tol and np.abs(arr[8, 13] - (0, 0, 255)).max() <= tol


def test_modes_are_converted_to_rgb(decoder):
    cmyk = encode(halves().convert("CMYK"), "JPEG", quality=95)
    grey16 = PIL.Image.fromarray((np.arange(400).reshape(20, 20) * 160).astype(np.uint16))
    palette = halves().convert("P", palette=PIL.Image.Palette.ADAPTIVE, colors=4)
    rgba = PIL.Image.new("RGBA", (20, 20), (255, 0, 0, 0))  # fully transparent red -> white background
    la = PIL.Image.new("LA", (20, 20), (0, 255))
    for name, data in [("cmyk", cmyk), ("16-bit", encode(grey16, "PNG")), ("palette", encode(palette, "PNG")),
                       ("rgba", encode(rgba, "PNG")), ("la", encode(la, "PNG"))]:
        out = decoder.decode(data, name)
        assert out.mode == "RGB" and out.size == (16, 16), name
    assert np.asarray(decoder.decode(encode(rgba, "PNG")))[8, 8].tolist() == [255, 255, 255]
    assert np.asarray(decoder.decode(encode(la, "PNG")))[8, 8].tolist() == [0, 0, 0]
    grey = np.asarray(decoder.decode(encode(grey16, "PNG")))
    assert grey[..., 0].max() > 200 and grey[..., 0].min() < 60  # 16-bit range mapped onto 8 bits


def test_exif_orientation_is_applied(decoder):
    upright = halves(20, 40).transpose(PIL.Image.Transpose.ROTATE_90)  # what the camera stored, sideways
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to view"
    tagged = decoder.decode(encode(upright, "JPEG", exif=exif, quality=95))
    plain = decoder.decode(encode(halves(20, 40), "JPEG", quality=95))
    assert np.abs(np.asarray(tagged, np.int16) - np.asarray(plain, np.int16)).mean() < 10


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def test_bombs_are_refused_from_the_header_before_any_decoding(decoder):
    # headers that claim a huge image with NO pixel data: a decoder would fail with "truncated";
    # a 413 here proves that the size was judged from the header alone
    def header_only(w, h):
        ihdr = _chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
        return b"\x89PNG\r\n\x1a\n" + ihdr + _chunk(b"IEND", b"")

    with pytest.raises(PayloadTooLarge, match="9000x9000"):  # our limit
        decoder.decode(header_only(9000, 9000))
    with pytest.raises(PayloadTooLarge) as e:  # beyond PIL's own guard, which fires while parsing the header
        decoder.decode(header_only(50_000, 50_000))
    assert e.value.code == "image_too_large"
    with pytest.raises(PayloadTooLarge):
        decoder.decode(encode(PIL.Image.new("L", (1100, 1000)), "PNG"))  # a real one, 1.1 MP > 1 MP
    with pytest.raises(PayloadTooLarge):
        decoder.decode(encode(PIL.Image.new("L", (4000, 9)), "PNG"))  # side over 2048
    with pytest.raises(InvalidInput, match="at least 8"):
        decoder.decode(encode(PIL.Image.new("RGB", (7, 100)), "PNG"))


def test_bytes_formats_and_corruption(decoder):
    good = encode(halves(), "PNG")
    with pytest.raises(PayloadTooLarge):
        decoder.decode(good + b"\x00" * 2_000_000)
    with pytest.raises(InvalidInput, match="empty"):
        decoder.decode(b"")
    for fmt in ("GIF", "BMP", "TIFF"):
        with pytest.raises(UnsupportedMediaType, match=f"looks like {fmt}"):
            decoder.decode(encode(halves(), fmt))
    with pytest.raises(InvalidInput) as e:
        decoder.decode(good[: len(good) // 2])
    assert e.value.code == "invalid_image" and e.value.status == 422
    assert sniff_format(b"RIFF\x00\x00\x00\x00WEBPVP8 ") == "WEBP" and sniff_format(b"<svg") == "SVG"


def test_base64_limits_and_data_urls():
    import base64

    data = b"\x89PNG\r\n\x1a\n" + b"x" * 10
    assert decode_base64("data:image/png;base64," + base64.b64encode(data).decode(), "img", 100) == data
    with pytest.raises(PayloadTooLarge):
        decode_base64("A" * 4000, "img", 100)  # refused from the string length, before decoding
    with pytest.raises(InvalidInput, match="base64"):
        decode_base64("not base64 at all!", "img", 100)
    with pytest.raises(InvalidInput, match="string"):
        decode_base64(123, "img", 100)
