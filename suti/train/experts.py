"""Apprenticeship data from experts: one DreamBooth expert per cluster, new prompts, CLIP-filtered outputs.

    report = run_experts(ExpertsConfig(clusters=20), "runs/experts", scorer=load_world_clip())

For each cluster (a train-split subject): fine-tune the base on its photos (the `dreambooth` recipe),
render `prompts_per_cluster` new prompts (one skill each, cycling), score every output with the world
CLIP — subject = mean cosine to the cluster's photos (CLIP-I), text = cosine to the prompt (CLIP-T),
overall = sqrt(max(subject, 0) * max(text, 0)) — and keep, per cluster, the top `keep_fraction` of
outputs whose overall score is at least `min_score`. Written as an HF dataset (kept rows: image, caption,
subject_id, skill, scores) that the apprentice recipe reads with `expert_fraction > 0`, plus
`experts.json` (per-cluster kept counts, the kept ratio, time per expert).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from suti.errors import ConfigError
from suti.train.recipe import TrainRecipe, load_recipe

DATASET_DIR = "dataset"


class Scorer(Protocol):  # the world CLIP (suti.eval.clip_world.WorldClip) has this interface
    def score_subject(self, images: Any, demos: Any) -> np.ndarray: ...

    def score_text(self, images: Any, prompts: list[str]) -> np.ndarray: ...


@dataclass
class ExpertsConfig:
    recipe: str = "dreambooth"  # DreamBooth recipe each expert runs
    init_from: str | None = None  # base pipeline (default: the recipe's init_from)
    clusters: int = 20  # the first N train-split subjects
    prompts_per_cluster: int = 10
    keep_fraction: float = 0.5  # per cluster, of the outputs that pass min_score
    min_score: float = 0.0  # overall score threshold
    max_steps: int | None = None  # override the recipe's DreamBooth steps
    sample_steps: int = 25
    guidance_scale: float = 3.0
    world_seed: int = 0
    seed: int = 0

    def validate(self) -> "ExpertsConfig":
        if self.clusters <= 0 or self.prompts_per_cluster <= 0 or self.sample_steps <= 0:
            raise ConfigError("clusters, prompts_per_cluster and sample_steps must be > 0")
        if not 0.0 < self.keep_fraction <= 1.0:
            raise ConfigError(f"keep_fraction: must be in (0, 1], got {self.keep_fraction!r}")
        if not -1.0 <= self.min_score <= 1.0:
            raise ConfigError(f"min_score: must be in [-1, 1], got {self.min_score!r}")
        return self


def overall_score(subject: np.ndarray, text: np.ndarray) -> np.ndarray:
    return np.sqrt(np.clip(subject, 0, None) * np.clip(text, 0, None))


def filter_outputs(subject: np.ndarray, text: np.ndarray, keep_fraction: float, min_score: float) -> np.ndarray:
    """Keep mask (N,): overall >= min_score, and among those the top ceil(keep_fraction * N) by overall."""
    overall = overall_score(np.asarray(subject, np.float64), np.asarray(text, np.float64))
    passing = np.flatnonzero(overall >= min_score)
    k = min(len(passing), math.ceil(keep_fraction * len(overall)))
    best = passing[np.argsort(-overall[passing], kind="stable")[:k]]
    keep = np.zeros(len(overall), dtype=bool)
    keep[best] = True
    return keep


def expert_recipe(cfg: ExpertsConfig, subject_id: int) -> TrainRecipe:
    r = load_recipe(cfg.recipe)
    if r.kind != "dreambooth":
        raise ConfigError(f"experts need a dreambooth recipe, {cfg.recipe!r} is {r.kind!r}")
    loop = replace(r.loop, max_steps=cfg.max_steps or r.loop.max_steps, validate_every=0, grid_every=0,
                   checkpoint_every=cfg.max_steps or r.loop.max_steps, keep_last=1)
    return replace(r, init_from=cfg.init_from or r.init_from, loop=loop,
                   dreambooth=replace(r.dreambooth, subject_id=subject_id))


def run_experts(cfg: ExpertsConfig, out: str | Path, scorer: Scorer, progress: bool = True) -> dict[str, Any]:
    import datasets
    import torch
    from tqdm.auto import tqdm

    from suti.pipeline import SuTIPipeline
    from suti.train.data import dreambooth_photos, subjects_of_split
    from suti.train.loop import train
    from suti.world import SKILLS, caption, for_skill, make_subject

    cfg.validate()
    out = Path(out)
    ids = subjects_of_split("train", 20 * cfg.clusters + 100, cfg.world_seed)[: cfg.clusters]
    rows: list[dict[str, Any]] = []
    per_cluster: dict[str, Any] = {}
    for sid in tqdm(ids, desc="experts", disable=not progress):
        recipe = expert_recipe(cfg, sid)
        t0 = time.time()
        result = train(recipe, out / "experts" / f"s{sid:05d}", resume=True, progress=False)
        train_s = time.time() - t0
        pipe = SuTIPipeline.from_pretrained(result.model_dir, dtype=torch.float32)
        pipe.set_progress_bar_config(disable=True)
        subject = make_subject(sid, cfg.world_seed)
        photos = [im for im, _ in dreambooth_photos(subject, sid, recipe.dreambooth.num_photos, cfg.world_seed,
                                                    pipe.image_size)]
        rng = np.random.default_rng([cfg.seed, sid, 0xE8])
        skills = [SKILLS[i % len(SKILLS)] for i in range(cfg.prompts_per_cluster)]
        captions = [caption(subject, for_skill(k, rng, subject), rng) for k in skills]
        prompts = [f"{recipe.dreambooth.identifier} {c}" for c in captions]
        gens = [torch.Generator().manual_seed(cfg.seed * 100_003 + sid * 101 + i) for i in range(len(prompts))]
        images = pipe(prompts, num_inference_steps=cfg.sample_steps, guidance_scale=cfg.guidance_scale,
                      generator=gens).images
        subj, text = scorer.score_subject(images, photos), scorer.score_text(images, captions)
        keep = filter_outputs(subj, text, cfg.keep_fraction, cfg.min_score)
        overall = overall_score(subj, text)
        for i in range(len(images)):
            rows.append({"image": images[i], "caption": captions[i], "subject_id": sid, "skill": skills[i],
                         "score_subject": float(subj[i]), "score_text": float(text[i]),
                         "score": float(overall[i]), "kept": bool(keep[i])})
        per_cluster[str(sid)] = {"kept": int(keep.sum()), "outputs": len(images), "train_s": round(train_s, 1),
                                 "steps": result.step}
    kept = [r for r in rows if r["kept"]]
    data = {k: [r[k] for r in kept] for k in ("image", "caption", "subject_id", "skill", "score_subject",
                                              "score_text", "score")}
    features = datasets.Features({"image": datasets.Image(), "caption": datasets.Value("string"),
                                  "subject_id": datasets.Value("int64"), "skill": datasets.Value("string"),
                                  "score_subject": datasets.Value("float32"), "score_text": datasets.Value("float32"),
                                  "score": datasets.Value("float32")})
    datasets.Dataset.from_dict(data, features=features).save_to_disk(str(out / DATASET_DIR))
    report = {"config": asdict(cfg), "clusters": len(ids), "outputs": len(rows), "kept": len(kept),
              "kept_ratio": round(len(kept) / max(len(rows), 1), 4),
              "mean_score_kept": round(float(np.mean([r["score"] for r in kept])), 4) if kept else None,
              "mean_score_all": round(float(np.mean([r["score"] for r in rows])), 4) if rows else None,
              "per_cluster": per_cluster, "dataset": DATASET_DIR}
    (out / "experts.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
