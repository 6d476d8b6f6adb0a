"""Systems under test: anything callable as system(demos, demo_captions, prompt, seed) -> image.

A system may also have `batch(requests) -> images`, requests being (demos, demo_captions, prompt, seed)
tuples: the runner then generates several items of one subject per call (the pipeline systems do).

Built-in reference systems, chosen by a spec string (optionally "NAME=SPEC" to rename):
    gt              ground-truth renders of the prompted context (ceiling; needs the benchmark)
    copy            returns one of the demos unchanged (text floor)
    base:DIR        any SuTIPipeline dir run text-only (subject_images=None): the subject floor
    suti:DIR[@OPTS] any SuTIPipeline dir with the demos and their captions; OPTS (ablations), comma-separated:
                    demos=N (only the first N demos), captions=off (empty demo captions),
                    demo_timestep=current|T (re-encode the demos at every step, or encode them at T),
                    places=off (demo tokens without their places: no locality bias in demo attention),
                    pool=N (average-pool each demo feature level to N x N tokens: fewer, cheaper tokens)
    dreambooth:DIR[@STEPS]  per subject, fine-tune DIR on the demos (the `dreambooth` recipe, STEPS steps,
                    default the recipe's), then render "sks <prompt>" text-only: the per-subject baseline
    pkg.mod:NAME    your own callable (or a zero-argument factory returning one, if NAME ends in "()")

Pipelines run with the benchmark's sampler, step count and guidance scales, and a torch generator
seeded with the item's seed, so every system sees the same fixed seeds.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from suti.errors import ConfigError, InputError
from suti.eval.benchmark import Benchmark, BenchmarkConfig, item_context
from suti.world.render import render

System = Callable[[Sequence[Any], Sequence[str], str, int], Any]
BUILTINS = ("gt", "copy", "base", "suti", "dreambooth")
SAMPLERS = ("ddim", "ddpm", "euler", "dpm")


@dataclass
class NamedSystem:
    name: str
    spec: str
    fn: System


class GroundTruthSystem:
    """Renders the benchmark subject in the prompted context; the seed picks the scene layout."""

    def __init__(self, bench: Benchmark):
        self.bench = bench
        self.lookup: dict[tuple[str, tuple[str, ...]], Any] = {}
        for it in bench.items:
            key = (it.prompt, bench.by_key[it.subject].demo_captions)
            self.lookup.setdefault(key, it)

    def __call__(self, demos, demo_captions, prompt: str, seed: int):
        item = self.lookup.get((prompt, tuple(demo_captions)))
        if item is None:
            raise InputError("the ground-truth system only knows the benchmark's own prompts")
        ctx = item_context(replace(item, seed=int(seed)))
        return render(self.bench.subject(item.subject), ctx, self.bench.config.demo_size)


def copy_demo(demos, demo_captions, prompt: str, seed: int):
    """The text floor: one demo, whatever the prompt says."""
    return demos[seed % len(demos)]


def _scheduler(pipe, sampler: str):
    from diffusers import (
        DDIMScheduler,
        DDPMScheduler,
        DPMSolverMultistepScheduler,
        EulerDiscreteScheduler,
    )

    cls = {"ddim": DDIMScheduler, "ddpm": DDPMScheduler, "euler": EulerDiscreteScheduler,
           "dpm": DPMSolverMultistepScheduler}[sampler]  # fmt: skip
    return cls.from_config(pipe.scheduler.config)


@dataclass(frozen=True)
class SutiOptions:
    """Inference-time ablations of `suti:DIR@...`: demo count, demo captions, demo timestep, token places,
    token pooling."""

    demos: int = 0  # 0 = all the benchmark's demos
    captions: bool = True
    demo_timestep: int | str | None = None  # None = the model's own setting
    places: bool = True  # False: demo tokens lose their places (subject.positions models: no locality bias)
    pool: int | None = None  # N: each demo feature level average-pooled to N x N tokens (None = the model's)

    @classmethod
    def parse(cls, text: str) -> SutiOptions:
        """"demos=1,captions=off,demo_timestep=current" -> SutiOptions; unknown keys or values raise."""
        out: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, eq, value = part.partition("=")
            if not eq:
                raise InputError(f"suti option {part!r} must be KEY=VALUE "
                                 "(demos, captions, demo_timestep, places, pool)")
            if key == "demos" and value.isdigit() and 1 <= int(value) <= 8:
                out["demos"] = int(value)
            elif key == "captions" and value in ("on", "off"):
                out["captions"] = value == "on"
            elif key == "demo_timestep" and (value == "current" or value.isdigit()):
                out["demo_timestep"] = value if value == "current" else int(value)
            elif key == "places" and value in ("on", "off"):
                out["places"] = value == "on"
            elif key == "pool" and value.isdigit() and int(value) >= 1:
                out["pool"] = int(value)
            else:
                raise InputError(f"bad suti option {part!r}: use demos=1-8, captions=on|off, "
                                 "demo_timestep=current|T, places=on|off, pool=N (N >= 1)")  # fmt: skip
        if not out.get("places", True) and "demo_timestep" in out:
            raise InputError("suti options places=off and demo_timestep cannot be combined "
                             "(places are dropped from demo tokens encoded once, at the model's timestep)")
        return cls(**out)


class PipelineSystem:
    """A SuTIPipeline directory, with demos (SuTI) or text-only (base model)."""

    def __init__(self, model_dir: str | Path, config: BenchmarkConfig, use_demos: bool,
                 options: SutiOptions | None = None):  # fmt: skip
        from suti.pipeline import SuTIPipeline

        if not Path(model_dir).is_dir():
            raise InputError(f"model directory {model_dir} not found")
        self.pipe = SuTIPipeline.from_pretrained(str(model_dir))
        self.pipe.scheduler = _scheduler(self.pipe, config.sampler)
        self.pipe.set_progress_bar_config(disable=True)
        self.config, self.use_demos = config, use_demos
        self.options = options or SutiOptions()
        if self.options.pool is not None:
            self.pipe.subject.set_pool_size(self.options.pool)

    def __call__(self, demos, demo_captions, prompt: str, seed: int):
        return self.batch([(demos, demo_captions, prompt, seed)])[0]

    def batch(self, requests: Sequence[tuple]) -> list:
        """Images for (demos, demo_captions, prompt, seed) requests in ONE pipeline call: each image has its
        own seeded generator, so a batch gives the images of single calls (to float rounding)."""
        import torch

        prompts = [r[2] for r in requests]
        gens = [torch.Generator().manual_seed(int(r[3])) for r in requests]
        kwargs: dict[str, Any] = {}
        if self.use_demos:
            o = self.options
            demo_sets = [list(r[0])[: o.demos or None] for r in requests]
            caption_sets = [list(r[1])[: o.demos or None] for r in requests]
            if o.places:
                kwargs = {"subject_images": demo_sets, "subject_captions": caption_sets if o.captions else None}
            else:  # encode once, then drop the places: demo attention without its locality bias
                kwargs = {"subject_embeds": [replace(self.pipe.encode_subject(d, c if o.captions else None),
                                                     positions=None) for d, c in zip(demo_sets, caption_sets)]}
            kwargs["subject_guidance_scale"] = self.config.subject_guidance_scale
            if o.demo_timestep is not None:
                kwargs["demo_timestep"] = o.demo_timestep
        out = self.pipe(prompts, num_inference_steps=self.config.steps, guidance_scale=self.config.guidance_scale,
                        generator=gens, **kwargs)  # fmt: skip
        return list(out.images)


class DreamBoothSystem:
    """Per-subject fine-tuning: one DreamBooth run per distinct demo set, cached for all its prompts.

    The demos and captions are written as a photo folder (captions.jsonl) and fine-tuned with the
    `dreambooth` recipe from `model_dir`; its images come from the fine-tuned model prompted with
    "<identifier> <prompt>" and the benchmark's sampler, steps and text guidance (no demos at sampling).
    `seconds` records each subject's fine-tuning time (the adaptation cost SuTI avoids)."""

    def __init__(self, model_dir: str | Path, config: BenchmarkConfig, steps: int | None = None,
                 recipe: str = "dreambooth"):  # fmt: skip
        import shutil
        import tempfile
        import weakref

        from suti.train.recipe import load_recipe

        if not Path(model_dir).is_dir():
            raise InputError(f"model directory {model_dir} not found")
        if steps is not None and steps <= 0:
            raise InputError(f"dreambooth steps must be > 0, got {steps}")
        self.recipe = load_recipe(recipe, init_from=str(model_dir))
        self.steps = steps or self.recipe.loop.max_steps
        self.config = config
        self.work = Path(tempfile.mkdtemp(prefix="suti-dreambooth-"))  # fine-tuned copies: removed with the system
        weakref.finalize(self, shutil.rmtree, self.work, ignore_errors=True)
        self.pipes: dict[tuple, Any] = {}
        self.seconds: list[float] = []

    def _finetune(self, demos, demo_captions):
        import json
        import time

        from suti.pipeline import SuTIPipeline
        from suti.pipeline.preprocess import to_rgb_image
        from suti.train.loop import train

        run = self.work / f"subject-{len(self.pipes):03d}"
        photos = run / "photos"
        photos.mkdir(parents=True)
        lines = []
        for i, (im, cap) in enumerate(zip(demos, demo_captions)):
            to_rgb_image(im, f"demo {i}").save(photos / f"{i}.png")
            lines.append(json.dumps({"file": f"{i}.png", "caption": cap}))
        (photos / "captions.jsonl").write_text("\n".join(lines) + "\n")
        r = self.recipe
        recipe = replace(r, loop=replace(r.loop, max_steps=self.steps, checkpoint_every=self.steps, keep_last=1,
                                         validate_every=0, grid_every=0),
                         dreambooth=replace(r.dreambooth, photos=str(photos)))  # fmt: skip
        t = time.perf_counter()
        train(recipe, run / "train", progress=False)
        self.seconds.append(time.perf_counter() - t)
        pipe = SuTIPipeline.from_pretrained(str(run / "train" / "model"))
        pipe.scheduler = _scheduler(pipe, self.config.sampler)
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def _tuned_key(self, demos, demo_captions) -> tuple:
        """The key of this demo set's fine-tuned pipeline in `self.pipes` (fine-tuned on first use)."""
        import hashlib

        import numpy as np

        from suti.pipeline.preprocess import to_rgb_image

        digest = hashlib.sha256()
        for i, im in enumerate(demos):
            digest.update(np.asarray(to_rgb_image(im, f"demo {i}")).tobytes())
        key = (digest.hexdigest(), tuple(demo_captions))
        if key not in self.pipes:
            self.pipes[key] = self._finetune(demos, demo_captions)
        return key

    def __call__(self, demos, demo_captions, prompt: str, seed: int):
        return self.batch([(demos, demo_captions, prompt, seed)])[0]

    def batch(self, requests: Sequence[tuple]) -> list:
        """Images for (demos, demo_captions, prompt, seed) requests: one sampling call per distinct demo set."""
        import torch

        groups: dict[tuple, list[int]] = {}  # fine-tuned pipeline's key -> request indices
        for i, (demos, caps, _, _) in enumerate(requests):
            groups.setdefault(self._tuned_key(demos, caps), []).append(i)
        images: list = [None] * len(requests)
        for key, idx in groups.items():
            prompts = [f"{self.recipe.dreambooth.identifier} {requests[i][2]}" for i in idx]
            gens = [torch.Generator().manual_seed(int(requests[i][3])) for i in idx]
            out = self.pipes[key](prompts, num_inference_steps=self.config.steps,
                                  guidance_scale=self.config.guidance_scale, generator=gens)  # fmt: skip
            for i, im in zip(idx, out.images):
                images[i] = im
        return images


def parse_dreambooth_spec(arg: str) -> tuple[str, int | None]:
    """"DIR" or "DIR@STEPS" -> (DIR, STEPS or None)."""
    path, at, steps = arg.rpartition("@")
    if not at:
        return arg, None
    if not steps.isdigit():
        raise InputError(f"dreambooth:{arg}: the part after '@' must be a step count, got {steps!r}")
    return path, int(steps)


def _import_callable(spec: str) -> System:
    module_name, _, attr = spec.partition(":")
    factory = attr.endswith("()")
    attr = attr[:-2] if factory else attr
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"system {spec!r}: cannot import {attr!r} from {module_name!r} ({e})") from e
    obj = obj() if factory else obj
    if not callable(obj):
        raise ConfigError(f"system {spec!r} is not callable")
    return obj


def resolve_system(text: str, bench: Benchmark) -> NamedSystem:
    """A system from its spec string (see the module docstring)."""
    head, eq, rest = text.partition("=")
    # "NAME=SPEC" only when the part before the first "=" is a bare name (options hold "=" too)
    name, spec = (head, rest) if eq and not any(c in head for c in ":@/") else ("", text)
    spec = spec.strip()
    kind, _, arg = spec.partition(":")
    if kind in ("gt", "copy") and not arg:
        fn: System = GroundTruthSystem(bench) if kind == "gt" else copy_demo
    elif kind in ("base", "suti"):
        if not arg:
            raise InputError(f"system {spec!r} needs a model directory: {kind}:DIR")
        if bench.config.sampler not in SAMPLERS:
            raise ConfigError(f"unknown sampler {bench.config.sampler!r}; choose from {', '.join(SAMPLERS)}")
        model_dir, at, opts = arg.partition("@") if kind == "suti" else (arg, "", "")
        fn = PipelineSystem(model_dir, bench.config, use_demos=kind == "suti",
                            options=SutiOptions.parse(opts) if at else None)  # fmt: skip
    elif kind == "dreambooth":
        if not arg:
            raise InputError("system 'dreambooth' needs a base model directory: dreambooth:DIR[@STEPS]")
        model_dir, steps = parse_dreambooth_spec(arg)
        fn = DreamBoothSystem(model_dir, bench.config, steps)
    elif ":" in spec and kind not in BUILTINS:
        fn = _import_callable(spec)
        kind = arg.removesuffix("()")
    else:
        raise InputError(f"unknown system {spec!r}; use gt, copy, base:DIR, suti:DIR[@OPTS], dreambooth:DIR[@STEPS] "
                         "or module:callable")
    name = name.strip() or kind
    if not name.replace("-", "").replace("_", "").isalnum():
        raise InputError(f"system name {name!r} must be letters, digits, '-' or '_'")
    return NamedSystem(name, spec, fn)
