"""Demo-image preprocessing and request normalisation for `SuTIPipeline`.

Accepted demo images: PIL images of any mode (EXIF orientation applied; RGBA/LA/P composited on white;
L/1/CMYK/YCbCr/16-bit/float converted to 8-bit RGB), numpy arrays (H, W), (H, W, 1|3|4) as uint8,
uint16 or float in [0, 1], and torch tensors (C, H, W) or (H, W) as uint8 or float in [0, 1]. Every
image is resized on its shorter side and center-cropped to the model size, then mapped to [-1, 1].
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch

from suti.errors import InputError
from suti.models.config import MAX_DEMOS

RECOMMENDED_DEMOS = (3, 5)


def _array_to_pil(arr: np.ndarray, where: str) -> PIL.Image.Image:
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (3, 4)):
        raise InputError(f"{where}: expected an image array (H, W) or (H, W, 1|3|4), got shape {arr.shape}")
    if arr.size == 0:
        raise InputError(f"{where}: the image is empty")
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16:
        arr = np.round(arr.astype(np.float64) / 257.0).astype(np.uint8)
    elif arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise InputError(f"{where}: the image contains NaN or infinite values")
        if arr.min() < -1e-3 or arr.max() > 1 + 1e-3:
            raise InputError(f"{where}: float images must be in [0, 1], got [{arr.min():.3g}, {arr.max():.3g}]")
        arr = np.round(np.clip(arr, 0, 1) * 255.0).astype(np.uint8)
    elif arr.dtype == np.bool_:
        arr = arr.astype(np.uint8) * 255
    else:
        raise InputError(f"{where}: unsupported image dtype {arr.dtype} (use uint8, uint16 or float in [0, 1])")
    img = PIL.Image.fromarray(np.ascontiguousarray(arr))
    return _pil_to_rgb(img, where)


def _pil_to_rgb(img: PIL.Image.Image, where: str) -> PIL.Image.Image:
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):  # 16/32-bit grey: rescale to 8 bits
        arr = np.asarray(img, dtype=np.float64)
        if img.mode.startswith("I;16"):
            top = 65535.0
        elif img.mode == "F" and arr.max() <= 1.0:
            top = 1.0
        else:  # "I"/"F" hold either 8-bit or 16-bit data: judge by the range
            top = 255.0 if arr.max() <= 255 else 65535.0
        img = PIL.Image.fromarray(np.round(np.clip(arr / top, 0, 1) * 255).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = PIL.Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = PIL.Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def to_rgb_image(obj: Any, where: str = "image") -> PIL.Image.Image:
    """Any supported image object -> an upright 8-bit RGB PIL image."""
    if isinstance(obj, PIL.Image.Image):
        try:
            img = PIL.ImageOps.exif_transpose(obj)
        except Exception:  # broken EXIF must not reject an otherwise good image
            img = obj
        if img.width == 0 or img.height == 0:
            raise InputError(f"{where}: the image is empty")
        return _pil_to_rgb(img, where)
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        if t.ndim == 3 and t.shape[0] in (1, 3, 4):
            t = t.permute(1, 2, 0)  # (C, H, W) -> (H, W, C)
        elif t.ndim != 2:
            raise InputError(f"{where}: expected a tensor (C, H, W) or (H, W), got shape {tuple(t.shape)}")
        if t.is_floating_point():
            t = t.float()
        return _array_to_pil(t.numpy(), where)
    if isinstance(obj, np.ndarray):
        return _array_to_pil(obj, where)
    raise InputError(f"{where}: expected a PIL image, numpy array or torch tensor, got {type(obj).__name__}")


def fit_square(img: PIL.Image.Image, size: int) -> PIL.Image.Image:
    """Resize the shorter side to `size` and center-crop to size x size."""
    return PIL.ImageOps.fit(img, (size, size), method=PIL.Image.Resampling.BICUBIC, centering=(0.5, 0.5))


def images_to_tensor(images: Sequence[PIL.Image.Image]) -> torch.Tensor:
    arr = np.stack([np.asarray(im, dtype=np.float32) for im in images])  # (N, S, S, 3)
    return torch.from_numpy(arr).permute(0, 3, 1, 2) / 127.5 - 1.0  # (N, 3, S, S) in [-1, 1]


def prepare_demo_images(demos: Sequence[Any], size: int, where: str = "subject_images") -> torch.Tensor:
    """Demo images of any kind -> (N, 3, size, size) float in [-1, 1]."""
    return images_to_tensor([fit_square(to_rgb_image(d, f"{where}[{i}]"), size) for i, d in enumerate(demos)])


def _is_single_image(obj: Any) -> bool:
    if isinstance(obj, PIL.Image.Image):
        return True
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return obj.ndim <= 3
    return False


def _demo_list(obj: Any, where: str) -> list[Any]:
    if _is_single_image(obj):
        return [obj]
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        if obj.ndim != 4:
            raise InputError(f"{where}: expected a batch of demo images (N, ...), got shape {tuple(obj.shape)}")
        return list(obj)
    if isinstance(obj, (list, tuple)):
        return list(obj)
    raise InputError(f"{where}: expected a list of demo images, got {type(obj).__name__}")


def normalize_request(
    prompt: Any, subject_images: Any, subject_captions: Any
) -> tuple[list[str], list[list[Any]] | None, list[list[str]] | None]:
    """(prompts, one demo list per prompt or None, one caption list per prompt or None), validated."""
    if isinstance(prompt, str):
        prompts, batched = [prompt], False
    elif isinstance(prompt, (list, tuple)):
        if not prompt:
            raise InputError("prompt: the prompt list is empty")
        prompts, batched = list(prompt), True
    else:
        raise InputError(f"prompt: expected a string or a list of strings, got {type(prompt).__name__}")
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise InputError(f"prompt[{i}]: expected a string, got {type(p).__name__}")
    if subject_images is None:
        if subject_captions is not None:
            raise InputError("subject_captions: given without subject_images")
        return prompts, None, None

    if batched:
        if not isinstance(subject_images, (list, tuple)):
            raise InputError("subject_images: with a list of prompts, give one list of demo images per prompt")
        if len(subject_images) != len(prompts):
            raise InputError(f"subject_images: {len(subject_images)} demo sets for {len(prompts)} prompts "
                             "(the prompt list and the demo-set list must have the same length)")
        for i, s in enumerate(subject_images):
            if _is_single_image(s):  # a flat demo list would silently become one 1-demo set per prompt
                raise InputError(f"subject_images[{i}]: with a list of prompts, each entry must be a list of "
                                 "demo images (one demo set per prompt), got a single image")
        sets = [_demo_list(s, f"subject_images[{i}]") for i, s in enumerate(subject_images)]
        names = [f"subject_images[{i}]" for i in range(len(sets))]
    else:
        sets, names = [_demo_list(subject_images, "subject_images")], ["subject_images"]
    for name, demos in zip(names, sets):
        if not demos:
            raise InputError(f"{name}: no demo images (give 1 to {MAX_DEMOS}, ideally 3-5)")
        if len(demos) > MAX_DEMOS:
            raise InputError(f"{name}: {len(demos)} demo images, at most {MAX_DEMOS} are supported")
        for j, d in enumerate(demos):
            if not isinstance(d, (PIL.Image.Image, np.ndarray, torch.Tensor)):
                raise InputError(f"{name}[{j}]: expected a PIL image, numpy array or torch tensor, "
                                 f"got {type(d).__name__}")
        if not RECOMMENDED_DEMOS[0] <= len(demos) <= RECOMMENDED_DEMOS[1]:
            warnings.warn(f"{name}: {len(demos)} demo images; SuTI works best with 3-5", UserWarning, stacklevel=3)

    if subject_captions is None:
        return prompts, sets, None
    if batched:
        if not isinstance(subject_captions, (list, tuple)) or len(subject_captions) != len(prompts):
            raise InputError("subject_captions: with a list of prompts, give one caption list per prompt")
        caps = [subject_captions[i] for i in range(len(prompts))]
    else:
        caps = [subject_captions]
    out = []
    for name, demos, c in zip(names, sets, caps):
        c = [c] if isinstance(c, str) else c
        if not isinstance(c, (list, tuple)):
            raise InputError(f"subject_captions for {name}: expected a list of strings, got {type(c).__name__}")
        if len(c) != len(demos):
            raise InputError(f"subject_captions for {name}: {len(c)} captions for {len(demos)} demo images "
                             "(the caption count must equal the demo count)")
        if not all(isinstance(x, str) for x in c):
            raise InputError(f"subject_captions for {name}: every caption must be a string")
        out.append(list(c))
    return prompts, sets, out
