"""tools.bench.denoise_bands: per-band x0 errors on a real (tiny) model, and bad input named."""

import json

import pytest

from _tiny import tiny_pipe
from suti.errors import InputError
from tools.bench import denoise_bands


def test_bands_report_every_key_and_low_noise_is_easier(tmp_path):
    tiny_pipe().save_pretrained(tmp_path / "m")
    bands = [(0, 100), (450, 550), (900, 1000)]
    result = denoise_bands.band_errors(str(tmp_path / "m"), bands, subjects=2, batch=4)
    assert list(result) == ["0-100", "450-550", "900-1000"]
    for row in result.values():
        assert set(row) == set(denoise_bands.KEYS)
    # near t = 0 the noisy input is nearly the clean image, whatever the weights: the error must grow with t
    errs = [result[k]["x0_err_text"] for k in result]
    assert errs[0] < errs[1] < errs[2]
    out = tmp_path / "bands.json"
    argv = ["--model", str(tmp_path / "m"), "--bands", "0,100,450", "--subjects", "2", "--batch", "4"]
    assert denoise_bands.main([*argv, "--out", str(out)]) == 0
    saved = json.loads(out.read_text())
    assert saved["bands"] == ["0-100", "100-450"]
    assert saved["models"][str(tmp_path / "m")]["0-100"] == result["0-100"]  # same batch, noise and t


def test_bad_bands_and_model_dir_are_named(tmp_path, capsys):
    for bad in ("0", "0,x", "200,100", "0,2000", "-5,10"):
        with pytest.raises(InputError, match="--bands"):
            denoise_bands.parse_bands(bad)
    assert denoise_bands.main(["--model", str(tmp_path / "none")]) == 2
    assert "not found" in capsys.readouterr().err
    tiny_pipe().save_pretrained(tmp_path / "m")
    assert denoise_bands.main(["--model", str(tmp_path / "m"), "--batch", "0"]) == 2
    assert "--batch" in capsys.readouterr().err
