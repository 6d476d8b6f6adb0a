"""The Python client and the `suti client` / `suti serve` commands against the real server on loopback."""

from __future__ import annotations

import json

import numpy as np
import PIL.Image
import pytest

from suti.serve.client import ApiClientError, SutiClient
from suti.serve.config import ServeConfig
from suti.serve.server import BackgroundServer
from tools.client import main as client_main
from tools.serve import main as serve_main


def photo(seed: int) -> PIL.Image.Image:
    rng = np.random.default_rng(seed)
    return PIL.Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def server():
    with BackgroundServer(ServeConfig(model="tiny", port=0, max_wait_ms=0, default_steps=2)) as s:
        yield s


@pytest.fixture
def refs(tmp_path):
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"ref{i}.jpg")
        photo(i).save(paths[-1], format="JPEG")
    return paths


def test_python_client_round_trip(server, refs):
    with SutiClient(server.url) as client:
        assert client.health() == {"status": "ok"} and client.ready()["ready"]
        subject = client.create_subject([refs[0], photo(1), refs[2].read_bytes()], captions=["a", "b", "c"])
        sid = subject["subject_id"]
        assert client.get_subject(sid)["captions"] == ["a", "b", "c"]
        result = client.generate("a red circle", subject_id=sid, n=2, seed=3)
        assert result.seeds == [3, 4] and len(result.images) == 2 and result.images[0].size == (16, 16)
        png, headers = client.generate_png("a red circle", subject_id=sid, seed=3)
        assert np.array_equal(np.asarray(PIL.Image.open(__import__("io").BytesIO(png)).convert("RGB")),
                              np.asarray(result.images[0]))
        assert headers["x-suti-seed"] == "3"
        inline = client.generate("a red circle", images=refs, seed=3)
        assert inline.info["subject_id"] is None
        assert client.delete_subject(sid)["deleted"] is True
        with pytest.raises(ApiClientError) as e:
            client.get_subject(sid)
        assert e.value.status == 404 and e.value.code == "subject_not_found"
        with pytest.raises(ApiClientError) as e:
            client.generate("x", subject_id="../../etc/passwd")
        assert e.value.status == 422 and e.value.code == "invalid_subject_id"
    with SutiClient("http://127.0.0.1:9", timeout_s=2) as dead, pytest.raises(ApiClientError) as e:
        dead.health()
    assert e.value.code == "connection_error"


def test_client_commands(server, refs, tmp_path, capsys):
    url = ["--url", server.url]
    assert client_main(["subjects", "create", *map(str, refs), "--caption", "a", "--caption", "b",
                        "--caption", "c", *url]) == 0
    sid = json.loads(capsys.readouterr().out)["subject_id"]
    assert client_main(["subjects", "get", sid, *url]) == 0
    assert json.loads(capsys.readouterr().out)["n_images"] == 3
    out = tmp_path / "gen"
    assert client_main(["generate", "--subject", sid, "--prompt", "a red circle", "--n", "2", "--seed", "1",
                        "--steps", "1", "--out", str(out), *url]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["000.png", "001.png", "generation.json"]
    assert json.loads((out / "generation.json").read_text())["seeds"] == [1, 2]
    assert client_main(["subjects", "delete", sid, *url]) == 0
    capsys.readouterr()
    assert client_main(["subjects", "get", sid, *url]) == 2
    assert "error: 404 subject_not_found" in capsys.readouterr().err
    assert client_main(["generate", "--prompt", "x", *url]) == 2  # neither --subject nor --image
    assert "exactly one of" in capsys.readouterr().err


def test_serve_command_refuses_bad_setups_with_one_line(monkeypatch, capsys):
    monkeypatch.delenv("SUTI_API_KEY", raising=False)
    assert serve_main(["--model", "tiny", "--host", "0.0.0.0"]) == 2
    assert "needs an API key" in capsys.readouterr().err
    assert serve_main(["--model", "no-such-model", "--port", "0"]) == 2
    assert "no-such-model" in capsys.readouterr().err
    assert serve_main(["--model", "tiny", "--min-images", "0"]) == 2
    assert "image count range" in capsys.readouterr().err
