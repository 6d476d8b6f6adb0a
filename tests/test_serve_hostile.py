"""Hostile inputs against the real server on loopback: every case a clear 4xx with the JSON error shape,
the server healthy afterwards, and its memory flat over repeated rounds of the whole suite."""

from __future__ import annotations

import base64
import io
import json
import struct
import zlib
from dataclasses import dataclass, field

import httpx
import numpy as np
import PIL.Image
import pytest

from suti.serve.config import ServeConfig
from suti.serve.server import BackgroundServer

LIMITS = dict(max_image_bytes=400_000, max_body_bytes=2_000_000, max_image_pixels=1_000_000, max_image_side=2048,
              max_prompt_chars=200, max_n=2, max_steps=8, default_steps=2, max_size=64, request_timeout_s=30)


# -- hostile files ---------------------------------------------------------------------------------------------
def encode(img: PIL.Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def photo(w: int = 40, h: int = 36, seed: int = 0) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_declaring(w: int, h: int, idat: bytes = b"") -> bytes:
    """A PNG whose header claims w x h (grey, 8 bit) followed by `idat` (often nothing real)."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def png_bomb(w: int, h: int) -> bytes:
    """A REAL decompression bomb: valid zero pixels, w*h of them, in a few kilobytes."""
    co = zlib.compressobj(9)
    row = b"\x00" * (w + 1)
    data = b"".join(co.compress(row) for _ in range(h)) + co.flush()
    return png_declaring(w, h, data)


def jpeg_declaring(w: int, h: int) -> bytes:
    data = bytearray(encode(photo(16, 16), "JPEG"))
    at = data.index(b"\xff\xc0")
    data[at + 5: at + 9] = struct.pack(">HH", h, w)
    return bytes(data)


def webp_vp8x(w: int, h: int) -> bytes:
    vp8x = bytes([0, 0, 0, 0]) + (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little")
    body = b"WEBP" + b"VP8X" + struct.pack("<I", len(vp8x)) + vp8x
    return b"RIFF" + struct.pack("<I", len(body)) + body


def png_crc_broken() -> bytes:
    data = bytearray(encode(photo(), "PNG"))
    data[-20] ^= 0xFF  # inside the last IDAT / its CRC
    return bytes(data)


def png_text_bomb() -> bytes:
    """A zTXt chunk that inflates to 50 MB (PIL refuses text chunks over its limit)."""
    good = encode(photo(), "PNG")
    ztxt = b"Comment\x00\x00" + zlib.compress(b"A" * 50_000_000, 9)
    return good[:33] + _chunk(b"zTXt", ztxt) + good[33:]


@dataclass
class Case:
    name: str
    method: str
    path: str
    kwargs: dict = field(default_factory=dict)
    status: tuple[int, ...] = (422,)


def _files(blobs: list[bytes], name: str = "images") -> list:
    return [(name, (f"f{i}", b, "application/octet-stream")) for i, b in enumerate(blobs)]


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def build_cases(subject_id: str) -> list[Case]:
    ok = encode(photo(), "PNG")
    three = lambda bad: _files([ok, ok, bad])  # two good images and one hostile one
    cases: list[Case] = []
    up = lambda name, files, status=(422,), **kw: cases.append(
        Case(f"upload/{name}", "POST", "/v1/subjects", {"files": files, **kw}, status))

    # image counts
    up("0-images", [("captions", (None, b"x"))])
    for n in (1, 2, 6, 7, 30):
        up(f"{n}-images", _files([ok] * n))
    # bytes and formats
    up("empty-file", three(b""))
    up("text-as-png", three(b"hello, this is not an image at all"), (415,))
    up("gif", three(encode(photo(), "GIF")), (415,))
    up("bmp", three(encode(photo(), "BMP")), (415,))
    up("tiff", three(encode(photo(), "TIFF")), (415,))
    up("ico", three(encode(photo(32, 32), "ICO")), (415,))
    up("svg", three(b'<svg xmlns="http://www.w3.org/2000/svg" width="9e9" height="9e9"/>'), (415,))
    up("pdf", three(b"%PDF-1.4\n%%EOF"), (415,))
    up("html", three(b"<html><body>hi</body></html>"), (415,))
    up("zip", three(b"PK\x03\x04" + b"\x00" * 100), (415,))
    up("random-bytes", three(np.random.default_rng(1).integers(0, 256, 5000, dtype=np.uint8).tobytes()), (415,))
    up("over-byte-limit", three(ok + b"\x00" * 450_000), (413,))
    # truncated / corrupt
    jpg = encode(photo(), "JPEG")
    webp = encode(photo(), "WEBP")
    up("png-truncated-half", three(ok[: len(ok) // 2]))
    up("png-signature-only", three(ok[:8]))
    up("png-header-only", three(ok[:33]))
    up("png-magic-garbage", three(b"\x89PNG\r\n\x1a\n" + b"\x13" * 300))
    up("png-bad-crc", three(png_crc_broken()))
    up("png-text-bomb", three(png_text_bomb()))
    up("jpeg-truncated", three(jpg[: len(jpg) // 2]))
    up("jpeg-magic-garbage", three(b"\xff\xd8\xff" + b"\x42" * 300))
    up("jpeg-soi-only", three(b"\xff\xd8\xff\xd9"))
    up("webp-truncated", three(webp[: len(webp) // 2]))
    up("webp-magic-garbage", three(b"RIFF\x10\x00\x00\x00WEBPVP8 " + b"\x00" * 64))
    # dimensions: zero, tiny, huge (declared), real bombs
    up("png-zero-width", three(png_declaring(0, 10)))
    up("png-zero-height", three(png_declaring(10, 0)))
    up("png-1x1", three(encode(photo(1, 1), "PNG")))
    up("png-4x400", three(encode(photo(4, 400), "PNG")))
    up("png-declares-100k-square", three(png_declaring(100_000, 100_000)), (413,))
    up("png-declares-2^31", three(png_declaring(2**31 - 1, 2**31 - 1)), (413, 422))
    up("png-declares-wide", three(png_declaring(60_000, 9)), (413,))
    up("png-bomb-9000-square", three(png_bomb(9000, 9000)), (413,))
    up("png-bomb-2000x600", three(png_bomb(2000, 600)), (413,))
    up("jpeg-declares-65000", three(jpeg_declaring(65_000, 65_000)), (413,))
    up("jpeg-declares-zero", three(jpeg_declaring(0, 0)))
    up("webp-declares-16k", three(webp_vp8x(16_000, 16_000)), (413, 422))
    up("webp-bomb-real", three(encode(PIL.Image.new("RGB", (1500, 1500), "white"), "WEBP", lossless=True)), (413,))
    up("jpeg-bomb-real", three(encode(PIL.Image.new("RGB", (1200, 1000), "white"), "JPEG", quality=10)), (413,))
    # form shape
    up("wrong-field-name", _files([ok] * 3, name="files"))
    up("images-as-text-fields", [("images", (None, b"a"))] * 3)
    up("captions-too-few", _files([ok] * 3), data={"captions": ["a", "b"]})
    up("captions-too-many", _files([ok] * 3), data={"captions": ["a"] * 4})
    up("caption-too-long", _files([ok] * 3), data={"captions": ["a", "b", "c" * 5000]})
    up("caption-nul", _files([ok] * 3), data={"captions": ["a", "b\x00", "c"]})
    cases += [
        Case("upload/json-body", "POST", "/v1/subjects", {"json": {"images": []}}, (415,)),
        Case("upload/no-content-type", "POST", "/v1/subjects", {"content": b"abc"}, (415,)),
        Case("upload/multipart-no-boundary", "POST", "/v1/subjects",
             {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data"}}, (400, 422)),
        Case("upload/multipart-garbage", "POST", "/v1/subjects",
             {"content": b"\x00\xff" * 100, "headers": {"content-type": "multipart/form-data; boundary=zz"}},
             (400, 422)),
        Case("upload/body-over-limit", "POST", "/v1/subjects", {"files": _files([b"\x89PNG" + b"\x00" * 2_100_000])},
             (413,)),
    ]

    # subject ids
    for name, sid in [("short", "abc"), ("dots", ".."), ("dot-dot-name", "..sub"), ("encoded-traversal",
                      "..%2F..%2Fetc%2Fpasswd"), ("encoded-slash", "%2Fetc%2Fpasswd"), ("null-byte", "sub_%00"),
                      ("uppercase", "SUB_" + "A" * 24), ("long", "sub_" + "a" * 5000), ("unicode", "sub_ü" * 4),
                      ("almost", "sub_" + "g" * 24), ("backslash", "..%5C..%5Cwindows")]:
        cases.append(Case(f"id/get-{name}", "GET", f"/v1/subjects/{sid}", {}, (404, 422)))
        cases.append(Case(f"id/delete-{name}", "DELETE", f"/v1/subjects/{sid}", {}, (404, 422)))
    cases.append(Case("id/unknown-well-formed", "GET", "/v1/subjects/sub_" + "0" * 24, {}, (404,)))
    cases.append(Case("id/delete-unknown", "DELETE", "/v1/subjects/sub_" + "0" * 24, {}, (404,)))

    # generations: JSON bodies
    gen = lambda name, body, status=(422,): cases.append(  # json.dumps writes NaN / Infinity as given
        Case(f"gen/{name}", "POST", "/v1/generations",
             {"content": json.dumps(body).encode(), "headers": {"content-type": "application/json"}}, status))
    raw = lambda name, content, status=(400,), ctype="application/json": cases.append(
        Case(f"gen/{name}", "POST", "/v1/generations", {"content": content, "headers": {"content-type": ctype}},
             status))
    base = {"subject_id": subject_id, "prompt": "a red circle", "steps": 1}
    raw("malformed-json", b"{")
    raw("trailing-garbage", b'{"prompt": "x"} xyz')
    raw("empty-body", b"", (400, 422))
    raw("invalid-utf8", b'{"prompt": "\xff\xfe"}', (400, 422))
    raw("deeply-nested", b"[" * 100_000 + b"]" * 100_000, (400, 422))
    raw("huge-int", b'{"prompt": "x", "seed": ' + b"9" * 5000 + b"}", (400, 422))
    raw("nan-literal", json.dumps(base)[:-1].encode() + b', "guidance_scale": NaN}', (422,))
    raw("infinity-literal", json.dumps(base)[:-1].encode() + b', "subject_guidance_scale": Infinity}', (422,))
    raw("text-plain", json.dumps(base).encode(), (415,), "text/plain")
    raw("form-encoded", b"prompt=x", (415,), "application/x-www-form-urlencoded")
    raw("body-over-limit", b'{"prompt": "' + b"a" * 2_100_000 + b'"}', (413,))
    gen("array-not-object", [base])
    gen("string-not-object", "a red circle")
    gen("null-body", None)
    gen("missing-prompt", {"subject_id": subject_id})
    gen("empty-prompt", {**base, "prompt": ""})
    gen("blank-prompt", {**base, "prompt": "   \n\t "})
    gen("giant-prompt", {**base, "prompt": "a" * 100_000})
    gen("prompt-number", {**base, "prompt": 42})
    gen("prompt-list", {**base, "prompt": ["a", "b"]})
    gen("prompt-nul", {**base, "prompt": "a\x00b"})
    for v in (0, -1, 1000, 1.5, "2", True, None):
        gen(f"n={v!r}", {**base, "n": v})
    for v in (0, -5, 10**6, 1e9, "3", False):
        gen(f"steps={v!r}", {**base, "steps": v})
    for v in (-1, 2**64, 1e30, "abc", 1.5, [1]):
        gen(f"seed={v!r}", {**base, "seed": v})
    for key in ("guidance_scale", "subject_guidance_scale"):
        for v in (-1, -1e-9, 1e9, 1e308 * 10, "x", True):
            gen(f"{key}={v!r}", {**base, key: v})
    for v in (0, -1, 8, 100_000, 64.5):
        gen(f"size={v!r}", {**base, "size": v})
    gen("response-format-bad", {**base, "response_format": "gif"})
    gen("png-with-n-2", {**base, "response_format": "png", "n": 2})
    gen("unknown-field", {**base, "temperature": 0.7})
    gen("both-sources", {**base, "images": [_b64(ok)] * 3})
    gen("no-source", {"prompt": "a red circle"})
    gen("captions-with-subject", {**base, "captions": ["a"] * 3})
    gen("unknown-subject", {**base, "subject_id": "sub_" + "1" * 24}, (404,))
    gen("path-subject", {**base, "subject_id": "../../etc/passwd"})
    gen("subject-int", {**base, "subject_id": 123})
    inline = {"prompt": "a red circle", "steps": 1}
    gen("inline-not-base64", {**inline, "images": ["***"] * 3})
    gen("inline-text", {**inline, "images": [_b64(b"not an image at all")] * 3}, (415,))
    gen("inline-2-images", {**inline, "images": [_b64(ok)] * 2})
    gen("inline-6-images", {**inline, "images": [_b64(ok)] * 6})
    gen("inline-bomb", {**inline, "images": [_b64(ok), _b64(ok), _b64(png_bomb(9000, 9000))]}, (413,))
    gen("inline-not-strings", {**inline, "images": [1, 2, 3]})
    gen("inline-truncated", {**inline, "images": [_b64(ok), _b64(ok), _b64(ok[:40])]})
    gen("inline-over-bytes", {**inline, "images": [_b64(ok + b"\x00" * 450_000)] * 3}, (413,))

    # routes and methods
    cases += [
        Case("route/get-generations", "GET", "/v1/generations", {}, (405,)),
        Case("route/put-subjects", "PUT", "/v1/subjects", {}, (405,)),
        Case("route/unknown", "GET", "/v1/nothing-here", {}, (404,)),
        Case("route/catalog-without-index", "POST", "/v1/catalog/generations", {"json": {"prompt": "x"}}, (404,)),
        Case("route/traversal", "GET", "/v1/../../etc/passwd", {}, (404,)),
    ]
    head = b"POST /v1/generations HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    chunk = b"%x\r\n%s\r\n" % (100_000, b" " * 100_000)
    cases += [  # raw HTTP: what a well-behaved client library refuses to send
        Case("raw/negative-content-length", "RAW", "", {"raw": head + b"Content-Length: -5\r\n\r\n{}"}, (400,)),
        Case("raw/text-content-length", "RAW", "", {"raw": head + b"Content-Length: ten\r\n\r\n{}"}, (400,)),
        Case("raw/chunked-over-limit", "RAW", "",
             {"raw": head + b"Transfer-Encoding: chunked\r\n\r\n" + chunk * 22 + b"0\r\n\r\n"}, (413,)),
    ]
    return cases


# -- the server ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    cfg = ServeConfig(model="tiny", port=0, store_dir=str(tmp_path_factory.mktemp("store")), **LIMITS)
    with BackgroundServer(cfg) as s:
        yield s


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def subject_id(http):
    ok = encode(photo(), "PNG")
    r = http.post("/v1/subjects", files=_files([ok] * 3))
    assert r.status_code == 201, r.text
    return r.json()["subject_id"]


@pytest.fixture(scope="module")
def cases(subject_id):
    return build_cases(subject_id)


@pytest.fixture(scope="module")
def peak_before(cases):
    """Peak memory once the server runs and every hostile body is built, before any is sent."""
    return memory_mb("VmHWM")


def send_raw(base_url: httpx.URL, data: bytes) -> httpx.Response:
    import http.client
    import socket

    with socket.create_connection((base_url.host, base_url.port), timeout=30) as sock:
        sock.sendall(data)
        response = http.client.HTTPResponse(sock)
        response.begin()
        return httpx.Response(response.status, headers=response.getheaders(), content=response.read())


def send(http: httpx.Client, case: Case) -> httpx.Response:
    if case.method == "RAW":
        return send_raw(http.base_url, case.kwargs["raw"])
    kw = dict(case.kwargs)
    if kw.get("files") is None:
        kw.pop("files", None)
    return http.request(case.method, case.path, **kw)


def check(case: Case, r: httpx.Response) -> str | None:
    """None if the response is a clear 4xx in the error shape, else what is wrong."""
    if r.status_code not in case.status:
        return f"{case.name}: status {r.status_code} not in {case.status}: {r.text[:300]}"
    if not r.headers.get("content-type", "").startswith("application/json"):
        return f"{case.name}: content type {r.headers.get('content-type')!r}"
    err = r.json().get("error", {})
    if not (isinstance(err.get("code"), str) and err["code"] and isinstance(err.get("message"), str)
            and len(err["message"]) >= 8):
        return f"{case.name}: no clear error in {r.text[:300]}"
    if "Traceback" in r.text or 'File "' in r.text:
        return f"{case.name}: traceback leaked"
    return None


def memory_mb(field: str = "VmRSS") -> float:
    """Resident (VmRSS) or peak resident (VmHWM) memory of this process, which runs the server thread."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


# -- tests -----------------------------------------------------------------------------------------------------
def test_at_least_100_distinct_cases(cases):
    names = [c.name for c in cases]
    assert len(names) >= 100 and len(set(names)) == len(names)


def test_every_hostile_case_is_a_clear_4xx(http, cases, peak_before):
    problems = [p for p in (check(c, send(http, c)) for c in cases) if p]
    assert not problems, "\n".join(problems)


def test_server_healthy_and_memory_flat_after_repeated_rounds(server, http, cases, subject_id, peak_before):
    rss = []
    for _ in range(2):  # rounds 2 and 3 (round 1 was the test above)
        for c in cases:
            send(http, c)
        rss.append(memory_mb())
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").status_code == 200
    r = http.post("/v1/generations", json={"subject_id": subject_id, "prompt": "a red circle", "steps": 1, "seed": 0})
    assert r.status_code == 200 and len(r.json()["images"]) == 1
    # round 2 -> round 3 (allocators warm): no leak over a round of ~160 hostile requests
    assert rss[1] - rss[0] < 15, f"RSS grew: {rss}"
    # the 81-megapixel bomb was never decoded: decoding it once would lift the peak by >= 81 MB (grey)
    assert memory_mb("VmHWM") - peak_before < 60, f"peak memory rose from {peak_before:.0f} MB"
    stats = http.get("/v1/stats").json()
    assert stats["queue"]["rejected"] == 0 and stats["runner"]["demo_encoder_calls"] == 1


def test_refused_request_on_a_kept_alive_connection_gets_its_answer(http):
    """The gate refuses on the headers (415 here) and closes the connection. Closing a socket with unread
    bytes of the body in it makes the kernel reset it, which can wipe the answer on the way, so the gate
    reads the body first. Each round reuses a kept-alive connection, where unguarded it failed ~1 in 30."""
    for _ in range(150):
        assert http.get("/healthz").status_code == 200
        r = http.post("/v1/subjects", json={"images": []})
        assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_media_type"
