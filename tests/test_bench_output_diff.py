"""tools.bench.output_diff: per-item pixel change between systems of an EVAL_DIR, and named bad input."""

import json

import numpy as np
from PIL import Image

from tools.bench import output_diff


def _eval_dir(tmp_path, systems: dict[str, list[int]]):
    """An EVAL_DIR whose system `name` rendered item k as a flat grey image of level systems[name][k]."""
    rows = []
    for k in range(max(len(v) for v in systems.values())):
        row = {"item_id": f"s000-p{k:02d}-0", "outputs": {}}
        for name, levels in systems.items():
            if k < len(levels):
                rel = f"outputs/{name}/{row['item_id']}.png"
                (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(np.full((8, 8, 3), levels[k], dtype=np.uint8)).save(tmp_path / rel)
                row["outputs"][name] = rel
        rows.append(row)
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_change_is_the_mean_over_shared_items_and_zero_for_identical_outputs(tmp_path):
    d = _eval_dir(tmp_path, {"ref": [100, 100, 50], "same": [100, 100, 50], "moved": [110, 90], "far": [0, 0, 0]})
    diffs = output_diff.output_diffs(d, "ref")
    assert diffs["same"] == {"items": 3, "mean_abs_change": 0.0}
    assert diffs["moved"] == {"items": 2, "mean_abs_change": 10.0}  # only the two items it rendered
    assert diffs["far"]["mean_abs_change"] == round((100 + 100 + 50) / 3, 3)
    out = tmp_path / "diff.json"
    assert output_diff.main([str(d), "--reference", "ref", "--system", "moved", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["systems"] == {"moved": diffs["moved"]}


def test_unknown_dir_and_systems_are_named(tmp_path, capsys):
    assert output_diff.main([str(tmp_path / "none"), "--reference", "ref"]) == 2
    assert "items.jsonl" in capsys.readouterr().err
    d = _eval_dir(tmp_path, {"ref": [1], "a": [2]})
    assert output_diff.main([str(d), "--reference", "nope"]) == 2
    assert "reference system 'nope'" in capsys.readouterr().err
    assert output_diff.main([str(d), "--reference", "ref", "--system", "b"]) == 2
    assert "b have no outputs" in capsys.readouterr().err
