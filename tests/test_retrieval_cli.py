"""tools/index.py: `build` from a captions folder or a datasets dir, `query` by text or image, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from _clip import make_tiny_clip
from tools.index import main, parse_bytes

pytest.importorskip("open_clip")
pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A tiny open_clip config (ViT width 64, 2 layers, 32 px) and a seeded random local checkpoint."""
    return make_tiny_clip(tmp_path_factory.mktemp("clip"), "retrieval-cli-tiny-clip")


def _model_args(spec) -> list[str]:
    return ["--model-name", spec.model_name, "--checkpoint", spec.checkpoint, "--model-config", spec.config]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    lines = []
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(root / f"{i}.png")
        lines.append(json.dumps({"file": f"{i}.png", "caption": f"photo {i} of subject {i // 4}",
                                 "url": f"https://www.shop.example/item-{i // 4}/", "cluster": i // 4}))  # fmt: skip
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_build_from_folder_then_query_by_text_and_image(tmp_path, model, folder, capsys):
    out = tmp_path / "index"
    assert main(["build", "--images", str(folder), "--out", str(out), "--no-progress", "--shard-size", "5",
                 *_model_args(model)]) == 0  # fmt: skip
    said = capsys.readouterr().out
    assert "embedded 12 new rows" in said and "Flat index of 12 x 32" in said
    infos = json.loads((out / "index_infos.json").read_text())
    assert infos["evaluation"]["queries"] == "given"  # caption embeddings as queries (text -> image)
    assert main(["query", "--index", str(out), "--text", "photo 5 of subject 1", "-k", "3", "--json"]) == 0
    hits = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert 1 <= len(hits) <= 3 and len({h["cluster"] for h in hits}) == 1
    assert main(["query", "--index", str(out), "--text", "photo 5 of subject 1", "-k", "3", "--json",
                 "--member-order", "central"]) == 0  # fmt: skip
    central = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {h["cluster"] for h in central} == {hits[0]["cluster"]}  # same cluster, its consensus members
    assert main(["query", "--index", str(out), "--text", "x", "--member-order", "random"]) == 2
    assert "member_order must be one of" in capsys.readouterr().err
    # an image query for an indexed image finds itself first (plain search)
    assert main(["query", "--index", str(out), "--image", str(folder / "7.png"), "-k", "2", "--any-cluster"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert "id=7 " in first and "photo 7 of subject 1" in first
    # re-running the build reuses every embedding shard
    assert main(["build", "--images", str(folder), "--out", str(out), "--no-progress", "--shard-size", "5",
                 *_model_args(model)]) == 0  # fmt: skip
    assert "embedded 0 new rows (3 shards reused" in capsys.readouterr().out


def test_build_from_a_dataset_dir_with_mining(tmp_path, model, capsys):
    import datasets

    rng = np.random.default_rng(1)
    base = rng.integers(0, 255, (2, 24, 24, 3), dtype=np.uint8)
    rows = {"image": [], "caption": [], "url": []}
    for i in range(8):  # two pages of near-identical images: mining keeps one cluster per page
        img = np.clip(base[i % 2].astype(int) + rng.integers(-3, 4, (24, 24, 3)), 0, 255).astype(np.uint8)
        rows["image"].append(Image.fromarray(img))
        rows["caption"].append(f"page {i % 2} picture")
        rows["url"].append(f"https://site.example/page-{i % 2}?ref={i}")
    ds = datasets.Dataset.from_dict(rows, features=datasets.Features(
        {"image": datasets.Image(), "caption": datasets.Value("string"), "url": datasets.Value("string")}))  # fmt: skip
    ds.save_to_disk(str(tmp_path / "ds"))
    out = tmp_path / "index"
    # a random tiny model cannot judge captions (threshold off); near-identical images are duplicates
    assert main(["build", "--dataset", str(tmp_path / "ds"), "--out", str(out), "--no-progress", "--mine",
                 "--min-caption-cos", "-1", "--min-cluster-size", "1", *_model_args(model)]) == 0  # fmt: skip
    said = capsys.readouterr().out
    assert "mined 2 clusters, kept 2/8 rows" in said, said
    stats = json.loads((out / "mine" / "mine_stats.json").read_text())
    assert stats["dropped"]["near_duplicate"] == 6
    assert "Flat index of 2 x 32" in said


def test_user_errors_are_one_line_exit_2(tmp_path, model, folder, capsys):
    assert main(["query", "--index", str(tmp_path / "none"), "--text", "x"]) == 2
    assert "error: index directory" in capsys.readouterr().err
    assert main(["build", "--out", str(tmp_path / "o"), *_model_args(model)]) == 2
    assert "exactly one of --images" in capsys.readouterr().err
    assert main(["build", "--images", str(tmp_path), "--out", str(tmp_path / "o"), *_model_args(model)]) == 2
    assert "captions.jsonl" in capsys.readouterr().err
    assert main(["build", "--images", str(folder), "--out", str(tmp_path / "o"), "--model-name", "nope",
                 "--checkpoint", model.checkpoint]) == 2  # fmt: skip
    assert "unknown open_clip model" in capsys.readouterr().err
    assert main(["query", "--index", str(tmp_path), "--text", "x", "--image", str(folder / "1.png")]) == 2
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "captions.jsonl").write_text("\n")
    assert main(["build", "--images", str(tmp_path / "empty"), "--out", str(tmp_path / "o"), *_model_args(model)]) == 2
    assert "lists no images" in capsys.readouterr().err
    assert main(["--help"]) == 0


def test_parse_bytes():
    assert parse_bytes("2G") == 2 * 10**9 and parse_bytes("500m") == 5 * 10**8 and parse_bytes("1234") == 1234
    from suti.errors import InputError

    with pytest.raises(InputError):
        parse_bytes("lots")


def test_read_dataset_dir_selects_a_split_column(tmp_path):
    import datasets

    from retrieval import read_dataset_dir
    from suti.errors import InputError

    datasets.Dataset.from_dict({"caption": list("abcd"), "split": ["train", "test", "train", "test"]}).save_to_disk(
        str(tmp_path / "ds")
    )
    assert read_dataset_dir(tmp_path / "ds", "train")["caption"] == ["a", "c"]
    assert len(read_dataset_dir(tmp_path / "ds")) == 4
    with pytest.raises(InputError, match="no rows with split"):
        read_dataset_dir(tmp_path / "ds", "val")
    with pytest.raises(InputError, match="not found"):
        read_dataset_dir(tmp_path / "missing")


def test_unreadable_images_are_skipped_and_k_must_be_positive(tmp_path, model, folder, capsys):
    import shutil

    root = tmp_path / "images"
    shutil.copytree(folder, root)
    (root / "broken.png").write_bytes(b"\x89PNG truncated")
    with open(root / "captions.jsonl", "a") as f:
        f.write(json.dumps({"file": "broken.png", "caption": "a broken file", "url": "https://x.example/b"}) + "\n")
    out = tmp_path / "index"
    assert main(["build", "--images", str(root), "--out", str(out), "--no-progress", *_model_args(model)]) == 0
    said = capsys.readouterr().out
    assert "embedded 12 new rows" in said and "skipped 1 unreadable image(s), e.g. row 12: cannot read image" in said
    assert main(["query", "--index", str(out), "--text", "photo", "-k", "0"]) == 2
    assert "k must be a positive integer" in capsys.readouterr().err
    # nothing readable at all: a clear error, not an empty index
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"nope")
    (bad / "captions.jsonl").write_text(json.dumps({"file": "x.png", "caption": "x"}) + "\n")
    assert main(["build", "--images", str(bad), "--out", str(tmp_path / "o"), "--no-progress",
                 *_model_args(model)]) == 2  # fmt: skip
    assert "no readable image in the catalog (1 unreadable skipped" in capsys.readouterr().err


def test_engine_flags_are_checked_before_any_work(tmp_path, capsys):
    common = ["build", "--images", str(tmp_path), "--out", str(tmp_path / "o"), "--model-name", "x"]
    assert main([*common, "--engine", "spark"]) == 2
    assert "add --mine" in capsys.readouterr().err
    assert main([*common, "--mine", "--engine", "dask"]) == 2
    assert "--engine must be local or spark" in capsys.readouterr().err
