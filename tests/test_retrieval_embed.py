"""retrieval.embed: a tiny custom open_clip model from a local checkpoint, offline; shards; resume."""

from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from retrieval import ClipSpec, embed_rows, load_embedder, load_embeddings
from retrieval.shards import shard_paths
from suti.errors import ConfigError, InputError, ModelLoadError

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

from _clip import make_tiny_clip  # noqa: E402

def rows(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    colours = ["red", "green", "blue", "yellow"]
    out = []
    for i in range(n):
        c = colours[i % 4]
        img = Image.fromarray(rng.integers(0, 255, (40, 36, 3), dtype=np.uint8))
        out.append({"image": img, "caption": f"a {c} thing number {i}", "url": f"https://x.example/p{i // 3}",
                    "cluster": i // 3, "subject_id": 100 + i})  # fmt: skip
    return out


@pytest.fixture(scope="module")
def embedder(tmp_path_factory):
    return load_embedder(make_tiny_clip(tmp_path_factory.mktemp("clip")), batch_size=4)


def test_tiny_model_loads_offline_and_embeds_unit_vectors(embedder):
    data = rows(5)
    img = embedder.embed_images([r["image"] for r in data])
    txt = embedder.embed_texts([r["caption"] for r in data])
    assert img.shape == txt.shape == (5, 32) and img.dtype == txt.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-5)
    # batching does not change the result, and the weights are the checkpoint's (reload -> same vectors)
    np.testing.assert_allclose(embedder.embed_images([r["image"] for r in data], batch_size=2), img, atol=1e-5)
    again = load_embedder(embedder.spec)
    np.testing.assert_allclose(again.embed_texts([r["caption"] for r in data]), txt, atol=1e-6)
    with pytest.raises(InputError, match="list of strings"):
        embedder.embed_texts("one string")


def test_shards_are_row_aligned_and_resume_skips_done_shards(tmp_path, embedder):
    data = rows(10)
    out = tmp_path / "emb"
    stats = embed_rows(data, out, embedder, batch_size=4, shard_size=4, progress=False)
    assert (stats.rows, stats.shards_written, stats.shards_skipped, stats.shards) == (10, 3, 0, [0, 1, 2])
    assert stats.images_per_second > 0 and stats.dim == 32
    emb = load_embeddings(out)
    assert len(emb) == 10 and emb.image.shape == (10, 32)
    np.testing.assert_allclose(np.linalg.norm(emb.image, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb.text, axis=1), 1.0, atol=1e-5)
    meta = emb.metadata
    assert meta["id"].tolist() == [str(i) for i in range(10)]
    assert meta["source_row"].tolist() == list(range(10))
    assert meta["caption"].tolist() == [r["caption"] for r in data]
    assert meta["cluster"].tolist() == [r["cluster"] for r in data]
    assert meta["subject_id"].tolist() == [r["subject_id"] for r in data]  # extra scalar columns pass through
    # row 7's vectors are those of row 7's image and caption
    np.testing.assert_allclose(emb.image[7], embedder.embed_images([data[7]["image"]])[0], atol=1e-5)
    np.testing.assert_allclose(emb.text[7], embedder.embed_texts([data[7]["caption"]])[0], atol=1e-5)

    # a crash lost shard 1: the rerun writes only shard 1 and leaves the others untouched
    first = shard_paths(out, 0).image.stat().st_mtime_ns
    shard_paths(out, 1).metadata.unlink()
    again = embed_rows(data, out, embedder, batch_size=4, shard_size=4, progress=False)
    assert (again.shards, again.shards_skipped, again.rows) == ([1], 2, 4)
    assert shard_paths(out, 0).image.stat().st_mtime_ns == first
    back = load_embeddings(out)
    np.testing.assert_allclose(back.image, emb.image, atol=1e-6)
    assert back.metadata.equals(meta)
    nothing = embed_rows(iter(data), out, embedder, shard_size=4, progress=False)  # a plain iterator works too
    assert (nothing.shards_written, nothing.shards_skipped) == (0, 3)


def test_resume_with_other_settings_is_refused_and_fp16_shards(tmp_path, embedder):
    data = rows(6)
    out = tmp_path / "emb"
    embed_rows(data, out, embedder, shard_size=4, progress=False)
    with pytest.raises(ConfigError, match="shard_size"):
        embed_rows(data, out, embedder, shard_size=3, progress=False)
    with pytest.raises(ConfigError, match="dtype"):
        embed_rows(data, out, embedder, shard_size=4, dtype="float16", progress=False)
    half = tmp_path / "half"
    embed_rows(data, half, embedder, shard_size=4, dtype="float16", progress=False)
    assert np.load(shard_paths(half, 0).image).dtype == np.float16
    emb = load_embeddings(half)
    assert emb.image.dtype == np.float32
    np.testing.assert_allclose(emb.image, load_embeddings(out).image, atol=2e-3)


def test_images_from_paths_and_bad_rows(tmp_path, embedder):
    path = tmp_path / "a.png"
    Image.new("RGB", (20, 30), (255, 0, 0)).save(path)
    out = tmp_path / "emb"
    embed_rows([{"path": str(path), "caption": "red", "id": "A"}], out, embedder, progress=False)
    meta = load_embeddings(out).metadata
    assert meta["id"].tolist() == ["A"] and meta["path"].tolist() == [str(path)]
    with pytest.raises(InputError, match="row 1: caption"):
        embed_rows([{"path": str(path), "caption": "x"}, {"path": str(path)}], tmp_path / "e2", embedder,
                   progress=False)  # fmt: skip
    with pytest.raises(InputError, match="catalog is empty"):
        embed_rows([], tmp_path / "e0", embedder, progress=False)


def test_unreadable_images_are_skipped_and_counted(tmp_path, embedder):
    """Corrupt bytes or a missing file: the row is left out and counted; the others stay aligned."""
    (tmp_path / "bad.png").write_bytes(b"not a png")
    data = rows(6)
    data[1] = {"path": str(tmp_path / "bad.png"), "caption": "corrupt", "id": "bad"}
    data[4] = {"path": str(tmp_path / "missing.png"), "caption": "gone", "id": "gone"}
    stats = embed_rows(data, tmp_path / "emb", embedder, shard_size=2, progress=False)
    assert (stats.rows, stats.images_skipped, len(stats.skipped)) == (4, 2, 2)
    assert stats.skipped[0].startswith("row 1: cannot read image")
    emb = load_embeddings(tmp_path / "emb")
    assert emb.metadata["source_row"].tolist() == [0, 2, 3, 5]  # input positions of the kept rows
    np.testing.assert_allclose(emb.image[1], embedder.embed_images([data[2]["image"]])[0], atol=1e-5)
    # a shard whose every image is unreadable is written empty (so a resume does not redo it)
    only_bad = [{"path": str(tmp_path / "bad.png"), "caption": "x"}] * 2 + rows(1)
    stats = embed_rows(only_bad, tmp_path / "emb2", embedder, shard_size=2, progress=False)
    assert (stats.rows, stats.images_skipped, stats.shards_written) == (1, 2, 2)
    assert load_embeddings(tmp_path / "emb2").metadata["source_row"].tolist() == [2]


def test_model_loading_errors_are_typed(tmp_path, embedder):
    spec = embedder.spec
    with pytest.raises(ModelLoadError, match="not found"):
        load_embedder(ClipSpec(spec.model_name, checkpoint=str(tmp_path / "missing.pt")))
    with pytest.raises(ConfigError, match="unknown open_clip model"):
        load_embedder(ClipSpec("no-such-model", checkpoint=spec.checkpoint))
    with pytest.raises(ConfigError, match="no checkpoint"):
        load_embedder(ClipSpec(spec.model_name))
    wrong = tmp_path / "wrong.pt"
    torch.save({"visual.proj": torch.zeros(3, 3)}, wrong)
    with pytest.raises(ModelLoadError, match="cannot load open_clip model"):
        load_embedder(ClipSpec(spec.model_name, checkpoint=str(wrong)))
