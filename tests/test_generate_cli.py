"""`suti generate`: from reference photos, and Re-Imagen style from a catalog index; errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from _clip import make_tiny_clip
from _tiny import CAPTIONS, demo_images, tiny_pipe
from tools.cli import main

pytest.importorskip("faiss")
ARGS = ["--steps", "3", "--no-progress", "--seed", "3"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("model")
    tiny_pipe().save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def refs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("refs")
    paths = []
    for i, im in enumerate(demo_images(3, seed=7)):
        paths.append(folder / f"ref{i}.png")
        im.save(paths[-1])
    return paths


def test_generate_from_reference_photos_matches_the_pipeline(tmp_path, model_dir, refs):
    out = tmp_path / "gen"
    code = main(["generate", "--model", str(model_dir), "--prompt", "a red circle in snow", "--out", str(out),
                 "--refs", *map(str, refs), "--caption", CAPTIONS[0], "--caption", CAPTIONS[1],
                 "--caption", CAPTIONS[2], *ARGS])  # fmt: skip
    assert code == 0
    meta = json.loads((out / "generation.json").read_text())
    assert meta["images"] == ["000.png"] and meta["seed"] == 3 and len(meta["references"]) == 3
    got = np.asarray(Image.open(out / "000.png"))
    from suti.pipeline import SuTIPipeline

    pipe = SuTIPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    want = pipe("a red circle in snow", [Image.open(p) for p in refs], CAPTIONS[:3], num_inference_steps=3,
                generator=torch.Generator().manual_seed(3)).images[0]
    np.testing.assert_array_equal(got, np.asarray(want))
    # the same command again refuses to overwrite, then with --overwrite gives the same bytes
    again = ["generate", "--model", str(model_dir), "--prompt", "a red circle in snow", "--out", str(out),
             "--refs", *map(str, refs), "--captions-file", str(_captions(tmp_path)), *ARGS]
    assert main(again) == 2
    assert main([*again, "--overwrite"]) == 0
    np.testing.assert_array_equal(np.asarray(Image.open(out / "000.png")), got)


def _captions(tmp_path):
    path = tmp_path / "captions.txt"
    path.write_text("\n".join(CAPTIONS[:3]) + "\n")
    return path


@pytest.fixture(scope="module")
def catalog_index(tmp_path_factory):
    """A real index over world renders (4 clusters x 4 images) built with a tiny open_clip model."""
    from suti.world import Context, caption, make_subject, render
    from tools.index import main as index_main

    root = tmp_path_factory.mktemp("catalog")
    rng = np.random.default_rng(0)
    lines = []
    for c in range(4):
        subject = make_subject(c, seed=0)
        for j, scene in enumerate(["beach", "jungle", "snow", "desert"]):
            name = f"c{c}-{j}.png"
            ctx = Context(scene=scene)
            render(subject, ctx, 32).save(root / name)
            lines.append(json.dumps({"file": name, "caption": caption(subject, ctx, rng), "cluster": c,
                                     "url": f"https://pets.example/page-{c}"}))  # fmt: skip
    (root / "captions.jsonl").write_text("\n".join(lines) + "\n")
    spec = make_tiny_clip(tmp_path_factory.mktemp("clip"), "generate-test-tiny-clip")
    out = tmp_path_factory.mktemp("index") / "idx"
    assert index_main(["build", "--images", str(root), "--out", str(out), "--no-progress", "--model-name",
                       spec.model_name, "--checkpoint", spec.checkpoint, "--model-config", spec.config]) == 0
    return out


def test_generate_from_a_catalog_records_the_neighbours_used(tmp_path, model_dir, catalog_index, capsys):
    out = tmp_path / "gen"
    assert main(["generate", "--model", str(model_dir), "--index", str(catalog_index), "--k", "3",
                 "--prompt", "a red circle in the jungle", "--out", str(out), "-n", "2", *ARGS]) == 0
    meta = json.loads((out / "generation.json").read_text())
    assert meta["images"] == ["000.png", "001.png"] and meta["references"] is None
    (used,) = meta["neighbors"]
    assert len(used["ids"]) == 3 and used["cluster"] in range(4) and used["chosen_by"] in ("captions", "vectors")
    assert {u.split("/")[-1] for u in used["urls"]} == {f"page-{used['cluster']}"}  # one subject's page
    assert f"demos from cluster {used['cluster']}" in capsys.readouterr().out


def test_pipeline_retriever_argument_uses_the_catalog_images(model_dir, catalog_index):
    from retrieval import open_retriever
    from suti.pipeline import SuTIPipeline

    pipe = SuTIPipeline.from_pretrained(model_dir)
    pipe.set_progress_bar_config(disable=True)
    retriever = open_retriever(catalog_index)
    result = pipe(["a red circle in the jungle", "a blue star on the beach"], retriever=retriever, retrieval_k=2,
                  num_inference_steps=2, output_type="np", generator=[torch.Generator().manual_seed(i) for i in (1, 2)])
    assert len(result.images) == 2 and len(result.neighbors) == 2
    first = result.neighbors[0]
    hits = retriever.search("a red circle in the jungle", k=2)
    assert first.ids == hits.ids  # the demos are exactly the retriever's answer for that prompt
    same = pipe("a red circle in the jungle", hits.images, hits.captions, num_inference_steps=2,
                output_type="np", generator=torch.Generator().manual_seed(1)).images
    np.testing.assert_allclose(result.images[0], same[0], atol=1e-5)


@pytest.mark.parametrize("argv, message", [
    (["--refs", "missing.png"], "does not exist"),
    ([], "exactly one"),
    (["--refs", "REF", "--index", "somewhere"], "exactly one"),
    (["--refs", "REF", "--choose-cluster", "words"], "--choose-cluster must be one of"),
    (["--refs", "REF", "--member-order", "random"], "--member-order must be one of"),
    (["--refs", "REF", "--caption", "only one"], "1 captions for 3 reference images"),
    (["--refs", "REF", "--num-images", "0"], "--num-images"),
    (["--refs", "REF", "--model", "no-such-model"], "neither a directory"),
    (["--refs", "REF", "--steps", "0"], "num_inference_steps"),
])
def test_bad_input_is_one_error_line(tmp_path, refs, capsys, argv, message):
    argv = [a for x in argv for a in ([str(r) for r in refs] if x == "REF" else [x])]
    code = main(["generate", "--model", "tiny", "--prompt", "a red circle", "--out", str(tmp_path / "o"),
                 "--no-progress", *argv])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
