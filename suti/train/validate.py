"""Validation during training: cheap conditioning metrics, and a sample grid PNG.

Conditioning metrics (ARCHITECTURE §8): on a fixed batch of held-out subjects, with fixed noise and
t >= metric_t_from, the mean absolute x0 error in grey levels (0-255) of the model's prediction
    with the prompt and no demos        x0_err_text
    with the empty prompt, no demos     x0_err_uncond
    with the prompt and the demos       x0_err_demos      (apprentice)
    with the empty prompt and the demos x0_err_demos_only (apprentice)
text_gain = x0_err_uncond / x0_err_text - 1 (> 0: the prompt helps), demo_gain = x0_err_text /
x0_err_demos - 1 (> 0: the demos help on top of the prompt), demo_only_gain = x0_err_uncond /
x0_err_demos_only - 1 (> 0: the demos alone say something about the target). A model that ignores a
condition has a gain of ~0. Each also comes as `..._subj`: the same over the subject's own pixels
(its body coverage from the renderer), where the subject words of the prompt and the demos must act.

Grid: one row per validation subject: its demos, then one sample per skill; below it, the oracle's
rendering of the same prompts (what a perfect model would draw).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import PIL.Image
import torch

from suti.models.subject_attn import DemoContext
from suti.train.data import Tokenize, demo_context, to_tensor, validation_subjects
from suti.train.model import TrainModule
from suti.train.recipe import TrainRecipe
from suti.world import SKILLS, Context, allowed_recolors, caption, for_skill, make_subject, render, sample_context
from suti.world import split_of
from suti.world.render import render_layers

CELL = 64  # grid cell size in pixels (small images are upscaled with nearest neighbour)


def prompt_for(recipe: TrainRecipe, text: str) -> str:
    return f"{recipe.dreambooth.identifier} {text}" if recipe.kind == "dreambooth" else text


def demo_set(subject, n: int, rng: np.random.Generator, size: int, split: str,
             kind: str = "any") -> tuple[list, list[str]]:  # fmt: skip
    contexts = [Context()] + [demo_context(rng, subject, j, kind, split) for j in range(1, n)]
    return [render(subject, c, size) for c in contexts], [caption(subject, c, rng) for c in contexts]


def metric_batch(recipe: TrainRecipe, tokenize: Tokenize, size: int) -> dict[str, torch.Tensor]:
    """A fixed batch (same every call) of held-out subjects in random contexts, with (up to) 3 demos each."""
    ws, n_demo = recipe.world.world_seed, min(recipe.apprentice.max_demos, 3)
    rng = np.random.default_rng([ws, 0x5A1])  # by world seed: runs that differ only in loop.seed compare
    ids = validation_subjects(recipe)
    targets, bodies, texts, demos, demo_texts = [], [], [], [], []
    for i in range(recipe.validation.metric_batch):
        sid = ids[i % len(ids)]
        s, split = make_subject(sid, ws), split_of(sid, ws)
        ctx = sample_context(rng, s, allowed_recolors(s, split))
        layers = render_layers(s, ctx, size)
        targets.append(layers.to_pil())
        bodies.append(layers.body)
        texts.append(prompt_for(recipe, caption(s, ctx, rng)))
        ims, caps = demo_set(s, n_demo, rng, size, split, recipe.apprentice.demo_contexts)
        demos += ims
        demo_texts += caps
    B = len(targets)
    return {"target": to_tensor(targets), "body": torch.from_numpy(np.stack(bodies))[:, None],  # (B, 1, S, S)
            "text_ids": tokenize(texts), "empty_ids": tokenize([""] * B),
            "demos": to_tensor(demos).view(B, n_demo, 3, size, size), "demo_ids": tokenize(demo_texts).view(B, n_demo, -1),
            "demo_mask": torch.ones(B, n_demo, dtype=torch.bool)}


@torch.no_grad()
def conditioning_metrics(module: TrainModule, batch: dict[str, torch.Tensor], recipe: TrainRecipe,
                         t_range: tuple[int, int] | None = None) -> dict[str, float]:
    """The metrics above, with t drawn from `t_range` = [lo, hi) (default [metric_t_from, T))."""
    module.eval()
    g = torch.Generator().manual_seed(1234)
    x0 = module.to_model_space(batch["target"])  # (B, C, s, s)
    B, T = x0.shape[0], module.scheduler.config.num_train_timesteps
    lo, hi = t_range if t_range is not None else (min(recipe.validation.metric_t_from, T - 1), T)
    t = torch.randint(lo, hi, (B,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    x_t = module.noisy(x0, noise, t)

    body = batch["body"]  # (B, 1, S, S) the subject's coverage
    out: dict[str, float] = {}

    def err(name: str, text_ids: torch.Tensor, ctx: DemoContext | None) -> None:
        """x0_err_<name> over the frame and x0_err_<name>_subj over the subject's own pixels."""
        x0_hat = module.predicted_x0(module.denoise(x_t, t, text_ids, ctx), x_t, t)
        if module.vae is not None:
            x0_hat = module.vae.decode(x0_hat / module.vae.config.scaling_factor).sample
        e = (x0_hat.clamp(-1, 1) - batch["target"]).abs() * 127.5  # (B, 3, S, S) grey levels
        out[f"x0_err_{name}"] = float(e.mean())
        out[f"x0_err_{name}_subj"] = float((e * body).sum() / (body.sum() * 3).clamp_min(1e-6))

    def gain(key: str, worse: str, better: str) -> None:
        out[key] = out[worse] / max(out[better], 1e-6) - 1
        out[f"{key}_subj"] = out[f"{worse}_subj"] / max(out[f"{better}_subj"], 1e-6) - 1

    err("text", batch["text_ids"], None)
    err("uncond", batch["empty_ids"], None)
    gain("text_gain", "x0_err_uncond", "x0_err_text")
    if recipe.kind == "apprentice":
        ctx = module.demo_context(batch["demos"], batch["demo_ids"], batch["demo_mask"], torch.ones(B))
        err("demos", batch["text_ids"], ctx)
        gain("demo_gain", "x0_err_text", "x0_err_demos")
        err("demos_only", batch["empty_ids"], ctx)
        gain("demo_only_gain", "x0_err_uncond", "x0_err_demos_only")
    if recipe.kind == "apprentice":  # how open the demo attention is: mean |tanh(gate)| over the layers
        out["gate_abs"] = float(np.mean([abs(np.tanh(g)) for g in module.subject.gates().values()]))
    module.train()
    if module.vae is not None:
        module.vae.eval()
    return {k: round(v, 4) for k, v in out.items()}


def _cell(im: PIL.Image.Image) -> PIL.Image.Image:
    return im.convert("RGB").resize((CELL, CELL), PIL.Image.Resampling.NEAREST)


@torch.no_grad()
def sample_grid(pipe, recipe: TrainRecipe, path: str | Path, collect: list | None = None) -> Path:
    """Demos | one sample per skill, and the oracle's renders below; written as PNG. `collect`, if given,
    receives one dict per sample: image, subject, prompt, context, skill, demos (for grading)."""
    cfg, ws, size = recipe.validation, recipe.world.world_seed, pipe.image_size
    n_demo = min(recipe.apprentice.max_demos, 3) if recipe.kind == "apprentice" else 0
    rows = []
    for sid in validation_subjects(recipe):
        s, split = make_subject(sid, ws), split_of(sid, ws)
        rng = np.random.default_rng([recipe.loop.seed, sid, 0x9D])
        demos, demo_caps = demo_set(s, max(n_demo, 1), rng, size, split, recipe.apprentice.demo_contexts)
        contexts = [for_skill(k, rng, s) for k in SKILLS]
        prompts = [prompt_for(recipe, caption(s, c)) for c in contexts]
        kw = {}
        if n_demo:
            kw = dict(subject_images=[demos] * len(prompts), subject_captions=[demo_caps] * len(prompts),
                      subject_guidance_scale=cfg.subject_guidance_scale)
        gens = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
        out = pipe(prompts, num_inference_steps=cfg.sample_steps, guidance_scale=cfg.guidance_scale,
                   generator=gens, **kw).images
        blank = PIL.Image.new("RGB", (size, size), (255, 255, 255))
        lead = demos[:n_demo] if n_demo else [blank]
        rows.append(lead + list(out))
        if collect is not None:
            collect.extend(dict(image=im, subject=s, prompt=p, context=c, skill=k, demos=demos)
                           for im, p, c, k in zip(out, prompts, contexts, SKILLS))  # fmt: skip
        rows.append([blank] * len(lead) + [render(s, c, size) for c in contexts])
    width = max(len(r) for r in rows)
    sheet = PIL.Image.new("RGB", (width * CELL, len(rows) * CELL), (255, 255, 255))
    for i, row in enumerate(rows):
        for j, im in enumerate(row):
            sheet.paste(_cell(im), (j * CELL, i * CELL))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path
