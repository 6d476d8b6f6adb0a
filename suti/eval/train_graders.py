"""(Re)train every grader model, then validate them; one command: `suti eval train-graders`.

    1. render pools: TRAIN subjects (training), other TRAIN subjects (calibration, unseen by the nets),
       held-out subjects (validation only; the benchmark's subjects are excluded)
    2. PerceptionNet (identity embedding + probes)                     -> perception.safetensors/.json
       PoseNet (rotation x mirroring vs the canonical render), same pool -> pose.safetensors/.json
       TraitNet (shape and pattern at full resolution), same pool       -> traits.safetensors/.json
    3. identity calibration P(same) on the calibration subjects       -> calibration.json
    4. realism: bank of TRAIN features, calibration-subject distances -> realism.safetensors
    5. world CLIP (open_clip, custom config), recall on held-out      -> suti-world-clip.json/.safetensors
    6. manifest.json (configs, timings, sha256) and validation.json (validation.py)
Deterministic given the config (CPU, one thread); ~30-35 CPU-minutes at the defaults.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from retrieval.atomic import sha256_file
from suti.errors import InputError
from suti.eval.benchmark import BenchmarkConfig, benchmark_subject_ids
from suti.eval.clip_world import (
    WEIGHTS_DIR,
    ClipTrainConfig,
    load_world_clip,
    retrieval_recall,
    train_world_clip,
)
from suti.eval.identity import REFERENCE_CONTEXTS, fit_calibration
from suti.eval.images import GRADER_SIZE
from suti.eval.nets import save_net
from suti.eval.perception_train import (
    PerceptionTrainConfig,
    PoseTrainConfig,
    TraitTrainConfig,
    train_perception,
    train_pose,
    train_traits,
)
from suti.eval.pools import PoolConfig, RenderPool, build_pool
from suti.eval.realism import fit_realism
from suti.eval.validation import lookalike
from suti.world.captions import caption
from suti.world.render import render
from suti.world.traits import make_subject

CALIBRATION_FIRST_ID = 50_000  # calibration subjects: TRAIN split, never in the training pool


@dataclass(frozen=True)
class GraderTrainConfig:
    train_subjects: int = 10000  # PerceptionNet pool (more subjects generalise better than more epochs)
    per_subject: int = 6
    clip_subjects: int = 3000  # world CLIP pool
    calib_subjects: int = 400
    heldout_subjects: int = 300
    bank_size: int = 2000
    world_seed: int = 0
    perception: PerceptionTrainConfig = field(default_factory=PerceptionTrainConfig)
    pose: PoseTrainConfig = field(default_factory=PoseTrainConfig)
    traits: TraitTrainConfig = field(default_factory=TraitTrainConfig)
    clip: ClipTrainConfig = field(default_factory=ClipTrainConfig)

    @classmethod
    def tiny(cls) -> GraderTrainConfig:
        """A few steps on a few subjects: for tests of the training code, not for grading."""
        from suti.eval.nets import NetConfig

        net = NetConfig(channels=(8, 16, 16), neck=32, embed_dim=16)
        return cls(train_subjects=40, per_subject=3, clip_subjects=20, calib_subjects=16,
                   heldout_subjects=12, bank_size=60, clip=ClipTrainConfig(steps=3, batch_size=32),
                   pose=PoseTrainConfig(steps=3, batch_size=16, net=net),
                   traits=TraitTrainConfig(steps=3, batch_size=16, net=net),
                   perception=PerceptionTrainConfig(steps=3, subjects_per_batch=16, renders_per_subject=2, net=net))  # fmt: skip


def identity_calibration(graders, pool: RenderPool):
    """Fit P(same) on calibration subjects: each in its contexts (same) vs, claimed as it, a TRAIN
    look-alike with the same caption and a random other subject in the same contexts (different)."""
    subjects = pool.subjects
    emb = graders.perceive(pool.flat()[0]).embedding.reshape(*pool.images.shape[:2], -1)  # (S, K, E)
    pos, neg = [], []
    for s, subject in enumerate(subjects):
        ctxs = pool.contexts[s]
        twin = make_subject(lookalike(subject.subject_id, pool.world_seed, split="train"), pool.world_seed)
        other = subjects[(s + 1 + len(subjects) // 2) % len(subjects)]
        fakes = [render(twin, c, GRADER_SIZE) for c in ctxs] + [render(other, ctxs[0], GRADER_SIZE)]
        fake_emb = graders.perceive(fakes).embedding
        pos.append(graders.identity_statistic(emb[s], [subject] * len(ctxs), ctxs))
        neg.append(graders.identity_statistic(fake_emb, [subject] * len(fakes), ctxs + ctxs[:1]))
    return fit_calibration(np.concatenate(pos), np.concatenate(neg))


def calibrate(out: Path, calib: RenderPool, train_images: np.ndarray, cfg: GraderTrainConfig):
    """Identity calibration and realism model, fitted with the SAVED (fp16-rounded) PerceptionNet."""
    from suti.eval.graders import Graders
    from suti.eval.identity import Calibration
    from suti.eval.nets import load_net

    graders = Graders(load_net(out, "perception"), None, Calibration(1.0, 0.0), None, None)
    calibration = identity_calibration(graders, calib)
    (out / "calibration.json").write_text(json.dumps({"identity": calibration.to_dict()}, indent=2) + "\n")
    rng = np.random.default_rng([cfg.world_seed, 0xBA2C])
    bank = train_images[rng.choice(len(train_images), min(cfg.bank_size, len(train_images)), replace=False)]
    realism = fit_realism(graders.perceive(bank).realism_features, graders.perceive(calib.flat()[0]).realism_features)
    realism.save(out / "realism.safetensors")
    return calibration


PARTS = ("perception", "pose", "traits", "calibration", "clip")


def train_graders(out_dir: str | Path = WEIGHTS_DIR, cfg: GraderTrainConfig = GraderTrainConfig(),
                  progress: bool = True, validate_after: bool = True, parts: tuple[str, ...] = PARTS) -> dict:  # fmt: skip
    """Train the grader models into out_dir; returns the manifest (also written as manifest.json).

    `parts` retrains only some models (the others must already be in out_dir): "calibration" refits
    identity calibration and realism for the saved PerceptionNet; every part is deterministic.
    """
    import torch

    from suti.eval.graders import Graders

    unknown = set(parts) - set(PARTS)
    if unknown or not parts:
        raise InputError(f"parts must be some of {', '.join(PARTS)}, got {', '.join(parts) or 'none'}")
    if "perception" in parts and "calibration" not in parts:
        raise InputError("a retrained PerceptionNet needs a new calibration: add the 'calibration' part")
    torch.set_num_threads(1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    old = json.loads((out / "manifest.json").read_text()) if (out / "manifest.json").is_file() else {}
    times: dict[str, float] = dict(old.get("seconds", {}))
    t = time.perf_counter()
    bench_ids = tuple(benchmark_subject_ids(BenchmarkConfig().subjects, cfg.world_seed))
    train = build_pool(PoolConfig("train", cfg.train_subjects, cfg.per_subject, world_seed=cfg.world_seed), progress)
    calib = build_pool(PoolConfig("train", cfg.calib_subjects, 4, world_seed=cfg.world_seed, draw_seed=1,
                                  first_id=CALIBRATION_FIRST_ID), progress)  # fmt: skip
    held = build_pool(PoolConfig("held_out", cfg.heldout_subjects, 4, world_seed=cfg.world_seed, draw_seed=2,
                                 skip_ids=bench_ids), progress)  # fmt: skip
    times["render_pools"] = time.perf_counter() - t
    manifest = {**old, "command": "suti eval train-graders", "config": asdict(cfg), "grader_size": GRADER_SIZE,
                "reference_contexts": [c.to_dict() for c in REFERENCE_CONTEXTS]}  # fmt: skip

    if "perception" in parts:
        t = time.perf_counter()
        net, manifest["perception_log"] = train_perception(train, cfg.perception, progress)
        save_net(net, out)
        times["perception"] = time.perf_counter() - t
    if "pose" in parts:
        t = time.perf_counter()
        pose_net, manifest["pose_log"] = train_pose(train, cfg.pose, progress)
        save_net(pose_net, out, "pose")
        times["pose"] = time.perf_counter() - t
    if "traits" in parts:
        t = time.perf_counter()
        trait_net, manifest["traits_log"] = train_traits(train, cfg.traits, progress)
        save_net(trait_net, out, "traits")
        times["traits"] = time.perf_counter() - t
    if "calibration" in parts:
        t = time.perf_counter()
        manifest["identity_calibration"] = calibrate(out, calib, train.flat()[0], cfg).to_dict()
        times["calibration"] = time.perf_counter() - t
    t = time.perf_counter()
    if "clip" in parts:  # the CLIP pool = the first clip_subjects subjects of the training pool
        clip, manifest["clip_log"] = train_world_clip(train.head(cfg.clip_subjects), out, cfg.clip, progress=progress)
    else:
        clip = load_world_clip(out)
    h_images, srow, scol = held.flat()
    crng = np.random.default_rng([cfg.world_seed, 0xCA9])
    caps = [caption(held.subjects[s], held.contexts[s][c], crng) for s, c in zip(srow, scol)]
    manifest["clip_recall_heldout"] = retrieval_recall(clip, h_images, caps)
    times["clip" if "clip" in parts else "clip_recall"] = time.perf_counter() - t

    files = {p.name: sha256_file(p) for p in sorted(out.iterdir()) if p.suffix in (".safetensors", ".json")
             and p.name not in ("manifest.json", "validation.json")}  # fmt: skip
    manifest["seconds"] = {k: round(v, 1) for k, v in times.items()}
    manifest["files"] = files
    manifest["parts_retrained_last"] = list(parts)
    for key in ("perception_log", "pose_log", "traits_log", "clip_log"):
        manifest[key] = manifest.get(key, [])[-3:]
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    if validate_after:
        from suti.eval.validation import validate

        t = time.perf_counter()
        report = validate(Graders.load(out))
        report["seconds"] = round(time.perf_counter() - t, 1)
        (out / "validation.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
        manifest["validation_all_pass"] = report["all_pass"]
    return manifest

