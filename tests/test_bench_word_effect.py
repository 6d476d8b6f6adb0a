"""tools.bench.word_effect: the word-swap probe runs on a real (tiny) model and names bad input."""

import json

from _tiny import tiny_pipe
from tools.bench import word_effect


def test_probe_reports_each_swap_and_a_model_that_ignores_text_scores_zero(tmp_path):
    pipe = tiny_pipe()
    pipe.save_pretrained(tmp_path / "m")
    with_text = word_effect.word_effects(str(tmp_path / "m"), t=850, draws=2)
    assert set(with_text) == {name for name, _, _ in word_effect.SWAPS}
    assert any(v["centre"] > 0 for v in with_text.values())  # random cross-attention already reacts to words
    for name, module in pipe.unet.named_modules():  # zero every text value projection: words cannot act
        if name.endswith("attn2"):
            module.to_v.weight.data.zero_()
    pipe.save_pretrained(tmp_path / "deaf")
    deaf = word_effect.word_effects(str(tmp_path / "deaf"), t=850, draws=2)
    assert all(v["centre"] == 0 and v["border"] == 0 for v in deaf.values())
    out = tmp_path / "effect.json"
    assert word_effect.main(["--model", str(tmp_path / "m"), "--draws", "2", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["models"][str(tmp_path / "m")] == with_text


def test_bad_model_dir_and_timestep_are_named(tmp_path, capsys):
    assert word_effect.main(["--model", str(tmp_path / "none")]) == 2
    assert "not found" in capsys.readouterr().err
    tiny_pipe().save_pretrained(tmp_path / "m")
    assert word_effect.main(["--model", str(tmp_path / "m"), "--t", "5000"]) == 2
    assert "--t must be" in capsys.readouterr().err
