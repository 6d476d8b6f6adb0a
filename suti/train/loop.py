"""The one training loop behind all three recipes (accelerate: 1 or N processes, CPU or GPU).

    result = train(load_recipe("base_tiny"), "runs/b0")            # fresh run
    result = train(None, "runs/b0", resume=True, max_steps=4000)    # continue from the latest checkpoint

Each optimizer step: `grad_accum` micro-batches rendered from the world (a pure function of the step,
so a resumed run sees the same data), noise and timesteps from a per-step generator, v/ε/x0 loss,
gradient clipping, AdamW with warm-up, EMA update. Every `log_every` steps a line in RUN/log.jsonl;
every `validate_every` conditioning metrics in RUN/metrics.jsonl; every `grid_every` a PNG in
RUN/samples/; every `checkpoint_every` a checkpoint (last `keep_last` kept) and RUN/model/ re-exported.
"""

from __future__ import annotations

import json
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from suti.errors import InputError
from suti.train.checkpoint import (EMA, MODEL_DIR, export_pipeline, latest_checkpoint, load_checkpoint,
                                   save_checkpoint)
from suti.train.data import make_source
from suti.train.model import TrainModule, build_pipeline, sample_timesteps
from suti.train.recipe import TrainRecipe
from suti.train.validate import conditioning_metrics, metric_batch, sample_grid

RECIPE_FILE = "recipe.json"


@dataclass
class RunResult:
    out: Path
    step: int
    steps_per_s: float
    checkpoint: Path | None
    model_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)


def lr_factor(step: int, recipe: TrainRecipe, max_steps: int) -> float:
    o = recipe.optim
    if o.warmup_steps and step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    if o.schedule == "cosine":
        span = max(max_steps - o.warmup_steps, 1)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min((step - o.warmup_steps) / span, 1.0)))
    return 1.0


def resolve_recipe(recipe: TrainRecipe | None, out: Path, resume: bool) -> TrainRecipe:
    saved = out / RECIPE_FILE
    if recipe is None:
        if not (resume and saved.is_file()):
            raise InputError(f"no recipe given and no {RECIPE_FILE} in {str(out)!r} to resume from")
        return TrainRecipe.from_dict(json.loads(saved.read_text()))
    if latest_checkpoint(out) is not None and not resume:
        raise InputError(f"{str(out)!r} already holds checkpoints: pass --resume to continue, or choose a new --out")
    return recipe


def make_optimizer(module: TrainModule, recipe: TrainRecipe) -> torch.optim.Optimizer:
    subject = module.subject_names()
    named = module.trainable()
    # per-layer scalars (gates, per-head locality strengths) take the gate lr
    gate = lambda n: n in subject and n.endswith((".gate", ".locality"))  # noqa: E731
    base_lr = recipe.optim.lr * (recipe.optim.base_lr_scale if recipe.kind == "apprentice" else 1.0)
    # the text encoder gets its own group only when its lr differs (so older checkpoints' groups still match)
    text = lambda n: recipe.optim.text_lr_scale != 1.0 and n.startswith("text_encoder.")  # noqa: E731
    groups = [{"params": [p for n, p in named.items() if n in subject and not gate(n)], "base_lr": recipe.optim.lr},
              {"params": [p for n, p in named.items() if gate(n)], "base_lr": recipe.optim.lr * recipe.optim.gate_lr_scale},
              {"params": [p for n, p in named.items() if n not in subject and not text(n)], "base_lr": base_lr},
              {"params": [p for n, p in named.items() if text(n)], "base_lr": base_lr * recipe.optim.text_lr_scale}]
    groups = [g for g in groups if g["params"]]
    return torch.optim.AdamW(groups, lr=recipe.optim.lr, weight_decay=recipe.optim.weight_decay)


def train(recipe: TrainRecipe | None, out: str | Path, resume: bool = False, max_steps: int | None = None,
          progress: bool = True) -> RunResult:
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs
    from tqdm.auto import tqdm

    out = Path(out)
    recipe = resolve_recipe(recipe, out, resume)
    if max_steps is not None:
        if max_steps <= 0:
            raise InputError(f"--max-steps must be > 0, got {max_steps}")
        recipe = replace(recipe, loop=replace(recipe.loop, max_steps=max_steps))
    loop = recipe.loop
    cuda = torch.cuda.is_available()
    precision = ("fp16" if cuda else "no") if loop.mixed_precision == "auto" else loop.mixed_precision
    acc = Accelerator(cpu=not cuda, mixed_precision=precision, gradient_accumulation_steps=loop.grad_accum,
                      kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    main = acc.is_main_process

    pipe = build_pipeline(recipe)
    module = TrainModule(pipe, recipe)
    params = module.trainable()
    optimizer = make_optimizer(module, recipe)
    ema = EMA(params, loop.ema_decay) if loop.ema_decay > 0 else None
    step, elapsed_before, cpu_before = 0, 0.0, 0.0
    ckpt = latest_checkpoint(out) if resume else None
    if ckpt is not None:
        state = load_checkpoint(ckpt, params, ema, optimizer)
        step, elapsed_before = int(state["step"]), float(state.get("elapsed_s", 0.0))
        cpu_before = float(state.get("cpu_s", 0.0))
    model, optimizer = acc.prepare(module, optimizer)

    tokenize = lambda texts: pipe.tokenize(texts).input_ids  # noqa: E731
    source = make_source(recipe, tokenize, pipe.image_size, module.subject.config.max_demos)
    mbatch = metric_batch(recipe, tokenize, pipe.image_size) if loop.validate_every else None
    config = {"recipe": recipe.to_dict(), "model": pipe.suti_config.to_dict()}
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / RECIPE_FILE).write_text(recipe.to_json())
    unet_cfg, T = pipe.unet.config, pipe.scheduler.config.num_train_timesteps
    shape = (loop.batch_size, unet_cfg.in_channels, unet_cfg.sample_size, unet_cfg.sample_size)

    def log(name: str, row: dict[str, Any]) -> None:
        if main:
            with open(out / name, "a") as f:
                f.write(json.dumps(row) + "\n")

    def validate(with_grid: bool) -> dict[str, Any]:
        metrics: dict[str, Any] = {}
        if main:
            with (ema.applied(params) if ema else nullcontext()):
                if mbatch is not None:
                    metrics = conditioning_metrics(module, mbatch, recipe)
                    log("metrics.jsonl", {"step": step, **metrics})
                if with_grid:
                    sample_grid(pipe, recipe, out / "samples" / f"step-{step:07d}.png")
                    module.train()
        acc.wait_for_everyone()
        return metrics

    def checkpoint() -> None:
        if main:
            extra = {"elapsed_s": elapsed_before + time.time() - t0, "cpu_s": cpu_before + time.process_time() - c0}
            save_checkpoint(out, step, params, ema, optimizer, config, extra, loop.keep_last)
            with (ema.applied(params) if ema else nullcontext()):
                export_pipeline(pipe, out / MODEL_DIR)
        acc.wait_for_everyone()

    t0, c0, start = time.time(), time.process_time(), step
    metrics: dict[str, Any] = {}
    bar = tqdm(total=loop.max_steps, initial=step, disable=not (main and progress), desc=f"train {recipe.kind}")
    while step < loop.max_steps:
        for g in optimizer.param_groups:
            g["lr"] = g["base_lr"] * lr_factor(step, recipe, loop.max_steps)
        for micro in range(loop.grad_accum):
            batch = source.batch(step, micro, acc.process_index)
            seed = np.random.SeedSequence([loop.seed, step, micro, acc.process_index]).generate_state(1)[0]
            gen = torch.Generator().manual_seed(int(seed))
            noise = torch.randn(shape, generator=gen)  # (B, C, s, s) in the UNet's input space
            t = sample_timesteps(loop.batch_size, recipe, T, gen)  # (B,)
            batch = {k: v.to(acc.device) for k, v in batch.items()}
            with acc.accumulate(model):
                loss = model(**batch, noise=noise.to(acc.device), timesteps=t.to(acc.device))
                acc.backward(loss)
                if acc.sync_gradients and recipe.optim.grad_clip > 0:
                    acc.clip_grad_norm_(list(params.values()), recipe.optim.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        step += 1
        if ema is not None:
            ema.update(params)
        bar.update(1)
        stop = False
        if step % loop.log_every == 0 or step == loop.max_steps:
            mean_loss = acc.reduce(loss.detach().float().reshape(1), "mean").item()
            spent = time.time() - t0
            over = torch.tensor([float(loop.max_minutes > 0 and (elapsed_before + spent) / 60 >= loop.max_minutes)])
            stop = acc.reduce(over.to(acc.device), "sum").item() > 0
            bar.set_postfix(loss=f"{mean_loss:.4f}")
            log("log.jsonl", {"step": step, "loss": round(mean_loss, 6), "lr": optimizer.param_groups[0]["lr"],
                              "elapsed_s": round(elapsed_before + spent, 1),
                              "cpu_s": round(cpu_before + time.process_time() - c0, 1),
                              "steps_per_s": round((step - start) / max(spent, 1e-9), 4)})
        done = stop or step == loop.max_steps
        if loop.validate_every and (step % loop.validate_every == 0 or done):
            metrics = validate(loop.grid_every > 0 and (step % loop.grid_every == 0 or done)) or metrics
        if step % loop.checkpoint_every == 0 or done:
            checkpoint()
        if stop:
            break
    bar.close()  # the last step always checkpoints (same decision on every process: no lone barrier)
    rate = (step - start) / max(time.time() - t0, 1e-9)
    if main:
        summary = {"step": step, "steps_per_s": round(rate, 4), "processes": acc.num_processes,
                   "samples_per_s": round(rate * loop.batch_size * loop.grad_accum * acc.num_processes, 3),
                   "metrics": metrics}
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    acc.end_training()
    return RunResult(out, step, rate, latest_checkpoint(out), out / MODEL_DIR, metrics)
