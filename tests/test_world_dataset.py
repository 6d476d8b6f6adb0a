"""`suti world build` / `suti world show` in-process: dataset contents, determinism, atomicity, errors."""

import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from suti.world import BuildConfig, build_dataset, contact_sheet, make_subject, parse_caption, split_of
from tools.cli import main

SMALL = ["--clusters", "6", "--per-cluster", "4", "--size", "32", "--noise", "0.5", "--no-progress"]


def _build(out, *extra: str) -> int:
    return main(["world", "build", "--out", str(out), *SMALL, *extra])


def _hashes(directory) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir())}


def _leftovers(parent) -> list:
    return [p.name for p in parent.iterdir() if ".tmp-" in p.name]


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("world") / "nested" / "ds"
    assert _build(out, "--seed", "1") == 0
    return out


def test_build_writes_a_loadable_dataset_with_ground_truth(built):
    import datasets

    ds = datasets.load_from_disk(str(built))
    assert set(ds.column_names) == {"image", "caption", "url", "cluster", "subject_id", "split", "attributes",
                                    "is_noise", "noise_kind"}  # fmt: skip
    assert isinstance(ds.features["image"], datasets.Image)
    manifest = json.loads((built / "world.json").read_text())
    assert len(ds) == manifest["rows"] >= 6 * 4
    assert sorted(set(ds["cluster"])) == list(range(6))
    for row in ds:
        assert row["image"].size == (32, 32) and row["image"].mode == "RGB"
        attrs = json.loads(row["attributes"])
        assert attrs["subject"]["id"] == row["subject_id"]
        assert row["split"] == split_of(row["cluster"], 1)
        assert row["is_noise"] == (row["noise_kind"] != "")
        said = parse_caption(row["caption"])
        about = attrs["caption_context"]
        assert said["scene"] == about["scene"] and said["style"] == about["style"]
        if not row["is_noise"]:
            assert row["subject_id"] == row["cluster"]
            assert said["shape"] == attrs["subject"]["shape"] and said["color"] == attrs["subject"]["color"]
    assert sum(ds["is_noise"]) == sum(manifest["noise_rows"].values()) > 0
    assert set(manifest["vocabulary"]) >= {w for c in ds["caption"] for w in c.split()}


def test_build_is_byte_identical_for_a_seed_and_differs_across_seeds(built, tmp_path):
    assert _build(tmp_path / "again", "--seed", "1", "--workers", "2") == 0
    assert _hashes(tmp_path / "again") == _hashes(built)
    assert _build(tmp_path / "other", "--seed", "2") == 0
    other = _hashes(tmp_path / "other")
    assert other["data-00000-of-00001.arrow"] != _hashes(built)["data-00000-of-00001.arrow"]


def test_existing_output_needs_overwrite(tmp_path, capsys):
    out = tmp_path / "ds"
    assert _build(out, "--seed", "1") == 0
    before = _hashes(out)
    capsys.readouterr()
    assert _build(out, "--seed", "2") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "already exists" in err and "--overwrite" in err and "\n" not in err
    assert _hashes(out) == before
    assert _build(out, "--seed", "2", "--overwrite") == 0
    assert _hashes(out) != before
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "args, words",
    [
        (["--size", "0"], "size"),
        (["--size", "10000"], "size"),
        (["--styles", "photo,oil"], "unknown style 'oil'"),
        (["--clusters", "-1"], "clusters"),
        (["--per-cluster", "-3"], "per-cluster"),
        (["--noise", "2"], "noise"),
        (["--workers", "0"], "workers"),
    ],
)
def test_bad_build_arguments_fail_cleanly(tmp_path, capsys, args, words):
    out = tmp_path / "new" / "ds"
    assert main(["world", "build", "--out", str(out), "--clusters", "2", "--per-cluster", "2", *args]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and words in err
    assert not (tmp_path / "new").exists()


def test_unwritable_output_fails_cleanly(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    assert main(["world", "build", "--out", str(blocker / "ds"), *SMALL]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "not a directory" in err and err.count("\n") == 1
    assert main(["world", "build", "--out", str(blocker), *SMALL]) == 2
    assert "not a directory" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file"]


def test_failure_mid_build_leaves_nothing_behind(tmp_path, monkeypatch):
    import suti.world.dataset as dataset_module

    calls = {"n": 0}
    real = dataset_module.render_row

    def flaky(row, size):
        calls["n"] += 1
        if calls["n"] > 5:
            raise RuntimeError("renderer crashed")
        return real(row, size)

    monkeypatch.setattr(dataset_module, "render_row", flaky)
    with pytest.raises(RuntimeError, match="crashed"):
        build_dataset(tmp_path / "deep" / "ds", BuildConfig(clusters=4, per_cluster=4, size=16), progress=False)
    assert calls["n"] > 5
    assert list(tmp_path.iterdir()) == []

    monkeypatch.setattr(dataset_module, "render_row", real)
    out = build_dataset(tmp_path / "ds", BuildConfig(clusters=2, per_cluster=2, size=16), progress=False)
    before = _hashes(out)
    calls["n"] = 0
    monkeypatch.setattr(dataset_module, "render_row", flaky)
    with pytest.raises(RuntimeError, match="crashed"):
        build_dataset(out, BuildConfig(clusters=4, per_cluster=4, size=16, seed=9), overwrite=True, progress=False)
    assert _hashes(out) == before  # a failed --overwrite keeps the old dataset
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_show_writes_the_contact_sheet(tmp_path, capsys):
    out = tmp_path / "sheets" / "s.png"
    assert main(["world", "show", "--out", str(out), "--subject-id", "3", "--size", "32"]) == 0
    img = Image.open(out)
    expected = contact_sheet(make_subject(3), size=32)
    assert img.size == expected.size and np.array_equal(np.asarray(img.convert("RGB")), np.asarray(expected))
    assert img.width > 9 * 32 and img.height > 6 * 32
    assert [p.name for p in out.parent.iterdir()] == ["s.png"]


@pytest.mark.parametrize(
    "args, words",
    [(["--style", "oil"], "unknown style"), (["--size", "10000"], "size"), (["--subject-id", "-4"], "subject id"),
     (["--zoom", "0"], "zoom")],
)  # fmt: skip
def test_bad_show_arguments_fail_cleanly(tmp_path, capsys, args, words):
    out = tmp_path / "s.png"
    assert main(["world", "show", "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and words in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_show_needs_a_png_path(tmp_path, capsys):
    assert main(["world", "show", "--out", str(tmp_path / "s.jpg")]) == 2
    assert ".png" in capsys.readouterr().err
