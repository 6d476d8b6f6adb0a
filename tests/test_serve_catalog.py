"""Re-Imagen mode over HTTP: a real FAISS index built by `suti index build` with a tiny open_clip model,
served by the real server; the neighbours used are echoed, and their demo tokens are cached."""

from __future__ import annotations

import json

import httpx
import numpy as np
import pytest
from PIL import Image

from suti.serve.config import ServeConfig
from suti.serve.server import BackgroundServer

pytest.importorskip("open_clip")
pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def index_dir(tmp_path_factory):
    """12 captioned images in 3 clusters, embedded by a seeded random tiny open_clip, indexed with FAISS."""
    import open_clip
    import torch

    from tools.index import main as index_main

    root = tmp_path_factory.mktemp("catalog")
    name = "serve-catalog-tiny-clip"
    config = root / f"{name}.json"
    config.write_text(json.dumps({
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16, "head_width": 32},
        "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1},
    }))  # fmt: skip
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    torch.save(open_clip.create_model(name).state_dict(), root / "clip.pt")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(images / f"{i}.png")
        lines.append(json.dumps({"file": f"{i}.png", "caption": f"photo {i} of subject {i // 4}",
                                 "url": f"https://shop.example/item-{i // 4}/", "cluster": i // 4}))
    (images / "captions.jsonl").write_text("\n".join(lines) + "\n")
    out = root / "index"
    code = index_main(["build", "--images", str(images), "--out", str(out), "--no-progress", "--model-name", name,
                       "--checkpoint", str(root / "clip.pt"), "--model-config", str(config)])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def server(index_dir):
    with BackgroundServer(ServeConfig(model="tiny", index=str(index_dir), port=0, max_wait_ms=0)) as s:
        yield s


def test_catalog_generation_echoes_neighbours_and_caches_their_tokens(server):
    with httpx.Client(base_url=server.url, timeout=60) as http:
        assert "/v1/catalog/generations" in http.get("/openapi.json").json()["paths"]
        assert http.get("/readyz").json()["catalog"] is True
        body = {"prompt": "photo 5 of subject 1", "k": 3, "steps": 2, "seed": 4}
        first = http.post("/v1/catalog/generations", json=body)
        assert first.status_code == 200, first.text
        nb = first.json()["neighbors"]
        assert nb["prompt"] == body["prompt"] and len(nb["ids"]) == 3 == len(nb["captions"]) == len(nb["scores"])
        assert nb["cluster"] in (0, 1, 2) and all(c.endswith(f"subject {nb['cluster']}") for c in nb["captions"])
        calls = server.service.runner.stats.demo_encoder_calls
        second = http.post("/v1/catalog/generations", json=body).json()
        assert server.service.runner.stats.demo_encoder_calls == calls  # same neighbours: cached tokens
        assert second["images"][0]["png_base64"] == first.json()["images"][0]["png_base64"]
        assert "encode" in first.json()["timings_ms"] and "encode" not in second["timings_ms"]
        for bad in ({**body, "k": 0}, {**body, "k": 50}, {**body, "prompt": ""}, {**body, "subject_id": "x"}):
            r = http.post("/v1/catalog/generations", json=bad)
            assert r.status_code == 422 and r.json()["error"]["message"], bad
