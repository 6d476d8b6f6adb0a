"""The personalization API end to end: the real server on loopback with the tiny preset (random weights,
which is fine for these invariants), real HTTP, real uvicorn, real subject store on disk."""

from __future__ import annotations

import base64
import io
import threading
import time

import httpx
import numpy as np
import PIL.Image
import pytest

from suti.errors import ConfigError
from suti.serve.config import ServeConfig
from suti.serve.server import BackgroundServer

CAPTIONS = ["a red circle", "a red circle in the jungle", "a red circle on the beach"]


def png(seed: int, w: int = 40, h: int = 36) -> bytes:
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
    buf = io.BytesIO()
    PIL.Image.fromarray(small).resize((w, h), PIL.Image.BILINEAR).save(buf, format="PNG")
    return buf.getvalue()


def files(blobs: list[bytes]) -> list:
    return [("images", (f"{i}.png", b, "image/png")) for i, b in enumerate(blobs)]


def pixels(b64: str) -> np.ndarray:
    return np.asarray(PIL.Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"), dtype=np.int16)


def tiny_model_dir(root) -> str:
    """The tiny preset with its subject gates opened (at init they are 0, so demos would not matter),
    saved and served from disk like a trained model."""
    from suti.pipeline import SuTIPipeline

    pipe = SuTIPipeline.from_config("tiny")
    pipe.subject.set_gates(0.7)
    pipe.save_pretrained(root / "tiny-open")
    return str(root / "tiny-open")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("model"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, model_dir):
    cfg = ServeConfig(model=model_dir, port=0, store_dir=str(tmp_path_factory.mktemp("store")), max_batch=8,
                      max_wait_ms=0, queue_size=6, max_n=3, default_steps=2, max_steps=8, request_timeout_s=60,
                      max_concurrent_uploads=2)
    with BackgroundServer(cfg) as s:
        yield s


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def subject(http):
    r = http.post("/v1/subjects", files=files([png(0), png(1), png(2)]), data={"captions": CAPTIONS})
    assert r.status_code == 201, r.text
    return r.json()


def gen(http, **body) -> dict:
    r = http.post("/v1/generations", json={"prompt": "a red circle on the beach", "steps": 2, **body})
    assert r.status_code == 200, r.text
    return r.json()


def encoder_calls(server) -> int:
    return server.service.runner.stats.demo_encoder_calls


def test_register_then_same_seed_same_image_without_reencoding(server, http, subject):
    assert subject["subject_id"].startswith("sub_") and subject["n_images"] == 3 and subject["captions"] == CAPTIONS
    before = encoder_calls(server)
    a = gen(http, subject_id=subject["subject_id"], seed=7)
    b = gen(http, subject_id=subject["subject_id"], seed=7)
    c = gen(http, subject_id=subject["subject_id"], seed=8)
    assert encoder_calls(server) == before  # generations reuse the cached demo tokens
    assert a["images"][0]["png_base64"] == b["images"][0]["png_base64"]
    assert a["images"][0]["png_base64"] != c["images"][0]["png_base64"]
    assert a["seed"] == 7 and {"queue", "run", "total"} <= set(a["timings_ms"])
    # n = 2: image i is exactly the single image of seed + i
    two = gen(http, subject_id=subject["subject_id"], seed=7, n=2)
    assert [im["seed"] for im in two["images"]] == [7, 8]
    assert two["images"][0]["png_base64"] == a["images"][0]["png_base64"]
    assert two["images"][1]["png_base64"] == c["images"][0]["png_base64"]
    assert server.service.store.stats.memory_hits >= 4


def test_inline_images_equal_the_registered_subject(server, http, subject):
    before = encoder_calls(server)
    inline = gen(http, images=[base64.b64encode(png(i)).decode() for i in range(3)], captions=CAPTIONS, seed=7)
    assert encoder_calls(server) == before + 1  # inline demos are encoded for this request
    cached = gen(http, subject_id=subject["subject_id"], seed=7)
    assert inline["images"][0]["png_base64"] == cached["images"][0]["png_base64"]
    other = gen(http, images=[base64.b64encode(png(i + 10)).decode() for i in range(3)], captions=CAPTIONS, seed=7)
    assert other["images"][0]["png_base64"] != cached["images"][0]["png_base64"]  # the demos matter


def test_png_response_and_size(http, subject):
    body = {"subject_id": subject["subject_id"], "prompt": "a red circle on the beach", "steps": 2, "seed": 7}
    r = http.post("/v1/generations", json={**body, "response_format": "png"})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.headers["x-suti-seed"] == "7" and "total;dur=" in r.headers["server-timing"]
    assert base64.b64encode(r.content).decode() == gen(http, **body)["images"][0]["png_base64"]
    big = gen(http, **{**body, "size": 48})
    assert pixels(big["images"][0]["png_base64"]).shape == (48, 48, 3) and big["size"] == 48


def test_get_and_delete_subject(server, http):
    r = http.post("/v1/subjects", files=files([png(5), png(6), png(7), png(8)]))
    sid = r.json()["subject_id"]
    assert http.get(f"/v1/subjects/{sid}").json()["n_images"] == 4
    assert http.delete(f"/v1/subjects/{sid}").json() == {"subject_id": sid, "deleted": True}
    for response in (http.get(f"/v1/subjects/{sid}"), http.delete(f"/v1/subjects/{sid}"),
                     http.post("/v1/generations", json={"subject_id": sid, "prompt": "x", "steps": 1})):
        assert response.status_code == 404 and response.json()["error"]["code"] == "subject_not_found"
    assert not (server.service.store.dir / f"{sid}.safetensors").exists()


def wait_until(condition, timeout_s: float = 10.0) -> None:
    until = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < until, "timed out waiting for the server state"
        time.sleep(0.005)


def post_in_thread(url: str, body: dict, out: list, i: int) -> threading.Thread:
    def run():
        out[i] = httpx.post(url + "/v1/generations", json=body, timeout=60)

    t = threading.Thread(target=run)
    t.start()
    return t


def block_worker(server, body: dict, out: list) -> threading.Thread:
    """Inside `runner.hold()`: send a request the worker takes and then waits on, so later ones queue up."""
    t = post_in_thread(server.url, body, out, 0)
    wait_until(lambda: server.service.batcher.busy)
    return t


def test_concurrent_requests_share_one_call_and_equal_one_by_one(server, http, subject):
    other = http.post("/v1/subjects", files=files([png(20), png(21), png(22), png(23), png(24)])).json()
    requests = [
        dict(subject_id=subject["subject_id"], prompt="a red circle on the beach", seed=1),
        dict(subject_id=other["subject_id"], prompt="a blue square in snow", seed=2, n=2),  # 5 demos: padded
        dict(subject_id=subject["subject_id"], prompt="a green star with a hat", seed=3),
        dict(subject_id=other["subject_id"], prompt="a red circle in the city", seed=4),
    ]
    alone = [gen(http, **r) for r in requests]
    assert all(a["batch_images"] == r.get("n", 1) for a, r in zip(alone, requests))

    blocker = {"subject_id": subject["subject_id"], "prompt": "blocker", "steps": 3, "seed": 0}  # another key
    results: list = [None] * len(requests)
    with server.service.runner.hold():
        threads = [block_worker(server, blocker, [None])]
        threads += [post_in_thread(server.url, {"steps": 2, **r}, results, i) for i, r in enumerate(requests)]
        wait_until(lambda: server.service.batcher.pending == 5)
    for t in threads:
        t.join(60)
    together = [r.json() for r in results]
    assert all(t["batch_images"] == 5 for t in together), [t.get("batch_images") for t in together]
    for a, t in zip(alone, together):
        for ia, it in zip(a["images"], t["images"]):
            diff = np.abs(pixels(ia["png_base64"]) - pixels(it["png_base64"]))
            assert diff.max() <= 1, f"batched image differs from the one-by-one image by {diff.max()} levels"


def test_full_queue_gives_429_with_retry_after_then_recovers(server, http, subject):
    body = {"subject_id": subject["subject_id"], "prompt": "a red circle", "steps": 1, "seed": 0}
    filled: list = [None, None]
    with server.service.runner.hold():
        threads = [block_worker(server, {**body, "steps": 2}, [None])]
        threads += [post_in_thread(server.url, {**body, "n": 3}, filled, i) for i in range(2)]
        wait_until(lambda: server.service.batcher.pending == 6)  # the queue holds 6 images: full
        r = http.post("/v1/generations", json=body)
        assert r.status_code == 429 and r.json()["error"]["code"] == "queue_full"
        assert int(r.headers["retry-after"]) >= 1
        ready = http.get("/readyz")
        assert ready.status_code == 503 and ready.json()["error"]["code"] == "not_ready"
        assert http.get("/healthz").status_code == 200  # saturated is not dead
    for t in threads:
        t.join(60)
    assert all(f.status_code == 200 for f in filled)  # everything admitted was served
    assert http.get("/readyz").status_code == 200
    assert gen(http, **body)["batch_images"] == 1


def test_large_uploads_in_flight_are_bounded(server, http):
    rng = np.random.default_rng(0)  # 160 x 160 noise: > 64 KB per request
    noisy = []
    for _ in range(3):
        buf = io.BytesIO()
        PIL.Image.fromarray(rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)).save(buf, format="PNG")
        noisy.append(buf.getvalue())
    held: list = [None, None]

    def register(i):
        held[i] = httpx.post(server.url + "/v1/subjects", files=files(noisy), timeout=60)

    with server.service.runner.hold():
        threads = [threading.Thread(target=register, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        wait_until(lambda: server.service.batcher.busy and server.service.batcher.pending == 1)
        r = http.post("/v1/subjects", files=files(noisy))
        assert r.status_code == 429 and r.json()["error"]["code"] == "too_many_uploads"
        assert http.post("/v1/generations", json={"prompt": "x", "subject_id": "sub_" + "0" * 24}).status_code == 404
    for t in threads:
        t.join(60)
    assert [h.status_code for h in held] == [201, 201]


def test_request_timeout_is_a_504_and_the_worker_skips_the_job(server, http, subject):
    body = {"subject_id": subject["subject_id"], "prompt": "a red circle", "steps": 1, "seed": 0}
    saved = server.service.cfg.request_timeout_s
    jobs_before = server.service.batcher.stats.jobs
    server.service.cfg.request_timeout_s = 0.3
    blocked: list = [None]
    try:
        with server.service.runner.hold():
            thread = block_worker(server, body, blocked)
            r = http.post("/v1/generations", json=body)
            assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
        thread.join(60)
    finally:
        server.service.cfg.request_timeout_s = saved
    assert blocked[0].status_code == 504  # the blocker also outlived its 0.3 s
    b = server.service.batcher
    wait_until(lambda: b.pending == 0 and not b.busy and b.stats.jobs >= jobs_before + 1)
    assert b.stats.jobs == jobs_before + 1  # only the blocker ran; the queued one was dropped unrun
    assert gen(http, **body)["images"]


def test_openapi_docs_limits_and_stats(http):
    schema = http.get("/openapi.json").json()
    paths = set(schema["paths"])
    assert {"/v1/subjects", "/v1/subjects/{subject_id}", "/v1/generations", "/healthz", "/readyz"} <= paths
    assert "/v1/catalog/generations" not in schema["paths"]  # no index loaded
    assert "GenerationRequest" in schema["components"]["schemas"]
    assert http.get("/docs").status_code == 200
    limits = http.get("/v1/limits").json()
    assert limits["max_n"] == 3 and limits["native_size"] == 16 and "api_key" not in limits


def test_disk_cache_survives_eviction_and_restart(tmp_path, model_dir):
    store = tmp_path / "store"
    key = "k" * 32
    cfg = ServeConfig(model=model_dir, port=0, store_dir=str(store), cache_items=1, max_wait_ms=0, api_key=key)
    auth = {"Authorization": f"Bearer {key}"}
    with BackgroundServer(cfg) as s, httpx.Client(base_url=s.url, headers=auth, timeout=60) as c:
        a = c.post("/v1/subjects", files=files([png(0), png(1), png(2)])).json()["subject_id"]
        c.post("/v1/subjects", files=files([png(3), png(4), png(5)]))  # evicts `a` from the memory LRU
        assert a not in s.service.store.memory_ids()
        calls = encoder_calls(s)
        first = gen(c, subject_id=a, seed=5)
        assert encoder_calls(s) == calls and s.service.store.stats.disk_hits == 1
        # the API key: required on /v1, not on health checks; both header forms work
        assert httpx.get(s.url + "/v1/limits").status_code == 401
        assert httpx.get(s.url + "/v1/limits", headers={"Authorization": "Bearer wrong-key-000000"}).status_code == 401
        assert httpx.get(s.url + "/v1/limits", headers={"X-API-Key": key}).status_code == 200
        assert httpx.get(s.url + "/healthz").status_code == 200
    with BackgroundServer(cfg) as s, httpx.Client(base_url=s.url, headers=auth, timeout=60) as c:
        assert c.get(f"/v1/subjects/{a}").json()["n_images"] == 3
        again = gen(c, subject_id=a, seed=5)
        assert encoder_calls(s) == 0  # a restarted server never re-encodes a stored subject
        assert again["images"][0]["png_base64"] == first["images"][0]["png_base64"]


def test_non_loopback_bind_needs_an_api_key():
    with pytest.raises(ConfigError, match="API key"):
        ServeConfig(model="tiny", host="0.0.0.0").check()
    ServeConfig(model="tiny", host="0.0.0.0", api_key="x" * 20).check()
    ServeConfig(model="tiny", host="::1").check()
