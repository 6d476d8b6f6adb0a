"""Bad input raises InputError naming the problem; demo images of any kind/size/mode are accepted."""

import io
import math

import numpy as np
import PIL.Image
import pytest
import torch

from suti.errors import InputError
from suti.pipeline.preprocess import prepare_demo_images, to_rgb_image

from _tiny import CAPTIONS, demo_images, gen, tiny_pipe


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipe()


D3 = demo_images(3)


@pytest.mark.parametrize("kwargs, match", [
    (dict(subject_images=[]), "no demo images"),
    (dict(subject_images=demo_images(9)), "at most 8"),
    (dict(subject_captions=CAPTIONS[:2]), "caption count must equal the demo count"),
    (dict(subject_images=D3[:2] + ["cat.png"]), r"subject_images\[2\].*got str"),
    (dict(subject_images=D3[:2] + [{"image": 1}]), r"subject_images\[2\].*got dict"),
    (dict(subject_images=42), "got int"),
    (dict(num_inference_steps=0), "num_inference_steps"),
    (dict(num_inference_steps=-3), "num_inference_steps"),
    (dict(num_inference_steps=2.5), "num_inference_steps"),
    (dict(guidance_scale=math.nan), "guidance_scale.*NaN"),
    (dict(subject_guidance_scale=float("nan")), "subject_guidance_scale.*NaN"),
    (dict(guidance_scale=-1.0), "guidance_scale.*negative"),
    (dict(subject_guidance_scale=-0.5), "subject_guidance_scale.*negative"),
    (dict(prompt=[]), "prompt list is empty"),
    (dict(prompt=["a", "b"], subject_images=[D3]), "same length"),
    (dict(prompt=["a", "b"], subject_images=D3[:2]), "one demo set per prompt"),
    (dict(prompt=["a", "b"], subject_images=[D3, D3], subject_captions=[CAPTIONS[:3]]), "one caption list per prompt"),
    (dict(prompt=["a", 3], subject_images=[D3, D3]), r"prompt\[1\]"),
    (dict(prompt=None), "prompt"),
    (dict(num_images_per_prompt=0), "num_images_per_prompt"),
    (dict(guidance_mode="triple"), "guidance_mode"),
    (dict(demo_timestep=-1), "demo_timestep"),
    (dict(demo_timestep="later"), "demo_timestep"),
    (dict(output_type="jpeg"), "output_type"),
    (dict(generator=[gen(0), gen(1), gen(2)]), "generator"),
    (dict(subject_images=[np.full((8, 8, 3), np.nan, np.float32)] * 3), "NaN"),
    (dict(subject_images=[np.full((8, 8, 3), 3.0, np.float32)] * 3), r"\[0, 1\]"),
    (dict(subject_images=[np.zeros((8, 8, 7), np.uint8)] * 3), "shape"),
])
def test_bad_input_raises_input_error(pipe, kwargs, match):
    call = dict(prompt="a red circle", subject_images=D3, num_inference_steps=1)
    call.update(kwargs)
    prompt = call.pop("prompt")
    with pytest.raises(InputError, match=match) as info:
        pipe(prompt, **call)
    assert isinstance(info.value, ValueError)


def test_demo_count_outside_3_to_5_warns_but_runs(pipe):
    for n in (1, 6, 8):
        with pytest.warns(UserWarning, match="3-5"):
            out = pipe("a red circle", demo_images(n), num_inference_steps=1, output_type="np").images
        assert np.isfinite(out).all()


def _exif_rotated_png() -> PIL.Image.Image:
    """A 20x10 image (left red, right blue) whose EXIF says 'rotate 90° clockwise to display'."""
    arr = np.zeros((10, 20, 3), np.uint8)
    arr[:, :10, 0] = 255
    arr[:, 10:, 2] = 255
    img = PIL.Image.fromarray(arr)
    exif = img.getexif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, format="PNG", exif=exif.tobytes())
    return PIL.Image.open(io.BytesIO(buf.getvalue()))


def test_exif_orientation_is_applied():
    img = to_rgb_image(_exif_rotated_png())
    assert img.size == (10, 20)  # now portrait
    arr = np.asarray(img)
    assert arr[2, 5, 0] == 255 and arr[17, 5, 2] == 255  # red on top, blue at the bottom


def _modes():
    rgb = PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (12, 18, 3), dtype=np.uint8))
    rgba = rgb.convert("RGBA")
    rgba.putalpha(0)  # fully transparent -> white
    grey16 = PIL.Image.fromarray(np.full((12, 18), 65535, np.uint16))
    p_transparent = rgb.convert("P")
    p_transparent.info["transparency"] = 0
    return {
        "RGB": rgb, "RGBA": rgba, "L": rgb.convert("L"), "1": rgb.convert("1"), "P": rgb.convert("P"),
        "P+transparency": p_transparent, "CMYK": rgb.convert("CMYK"), "LA": rgb.convert("LA"),
        "I;16": grey16, "I": rgb.convert("I"), "F": rgb.convert("F"), "YCbCr": rgb.convert("YCbCr"),
    }


@pytest.mark.parametrize("mode", list(_modes()))
def test_pil_modes_convert_to_rgb(mode):
    img = _modes()[mode]
    x = prepare_demo_images([img], 16)
    assert x.shape == (1, 3, 16, 16) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    if mode == "RGBA":
        assert torch.allclose(x, torch.ones_like(x))  # transparent composited on white
    if mode == "I;16":
        assert torch.allclose(x, torch.ones_like(x))  # 16-bit white stays white


@pytest.mark.parametrize("obj", [
    np.zeros((30, 20, 3), np.uint8),
    np.ones((30, 20, 3), np.float32),
    np.zeros((30, 20), np.uint8),
    np.zeros((30, 20, 1), np.uint8),
    np.zeros((30, 20, 4), np.uint8),
    np.full((30, 20, 3), 1000, np.uint16),
    torch.rand(3, 30, 20),
    torch.randint(0, 255, (3, 30, 20), dtype=torch.uint8),
    torch.rand(30, 20),
    torch.rand(1, 30, 20, dtype=torch.float64),
])
def test_arrays_and_tensors_of_any_size(obj):
    x = prepare_demo_images([obj], 16)
    assert x.shape == (1, 3, 16, 16) and -1 <= x.min() and x.max() <= 1


def test_resize_shorter_side_then_center_crop():
    arr = np.zeros((16, 48, 3), np.uint8)  # wide: left third red, middle green, right third blue
    arr[:, :16, 0], arr[:, 16:32, 1], arr[:, 32:, 2] = 255, 255, 255
    x = prepare_demo_images([arr], 16)
    assert torch.allclose(x[0, 1], torch.ones(16, 16), atol=0.02)  # only the green middle survives the crop


def test_batched_array_of_demos_and_single_image(pipe):
    batch = np.stack([np.asarray(d.resize((16, 16))) for d in demo_images(3)])  # (N, H, W, 3)
    a = pipe("a red circle", batch, num_inference_steps=1, output_type="np", generator=gen(0)).images
    b = pipe("a red circle", list(batch), num_inference_steps=1, output_type="np", generator=gen(0)).images
    assert np.array_equal(a, b)
    with pytest.warns(UserWarning):
        pipe("a red circle", demo_images(1)[0], num_inference_steps=1)  # one image = one demo
