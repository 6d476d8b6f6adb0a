"""Train the grader networks on TRAIN render pools: PerceptionNet, PoseNet and TraitNet.

PerceptionNet, one step: a batch of subjects grouped by coarse caption (hard negatives for the
identity loss), each seen in `renders_per_subject` random contexts, plus each subject's canonical render.
    loss = sum of probe cross-entropies
         + identity_weight * supervised contrastive loss (canonical renders included as positives)
PoseNet, one step: random pool images (poses as the world draws them: mostly upright, as in the
benchmark) with their subjects' canonical renders,
    loss = cross-entropy over rotation x mirroring.
TraitNet, one step: random pool images (as PoseNet), loss = sum of the shape and pattern cross-entropies.
All: Gaussian pixel noise and colour-channel swaps as augmentation, AdamW, warm-up + cosine decay.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from suti.eval.identity import sample_identity_batch, supcon_loss
from suti.eval.images import add_noise, to_tensor
from suti.eval.nets import NetConfig, PerceptionNet, PoseNet, TraitNet
from suti.eval.pools import RenderPool
from suti.eval.probes import FIELDS, TRAIT_NET_FIELDS, UNGRADED, labels_for, probe_losses


@dataclass(frozen=True)
class PerceptionTrainConfig:
    steps: int = 3000
    subjects_per_batch: int = 24
    renders_per_subject: int = 3
    per_group: int = 4  # subjects per coarse caption in a batch
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup: int = 40
    temperature: float = 0.1
    identity_weight: float = 1.0
    noise_prob: float = 0.3
    permute_prob: float = 0.3  # swap colour channels: breaks colour <-> shape/pattern/pose shortcuts
    seed: int = 0
    net: NetConfig = field(default_factory=NetConfig)


def pool_labels(pool: RenderPool) -> dict[str, np.ndarray]:
    """Class index per field for every pool image: {field: (S, K) int64}."""
    subjects = pool.subjects
    out = {f: np.empty(pool.images.shape[:2], np.int64) for f in FIELDS}
    for s, (subject, ctxs) in enumerate(zip(subjects, pool.contexts)):
        for k, ctx in enumerate(ctxs):
            for f, v in labels_for(subject, ctx).items():
                out[f][s, k] = v
    return out


PERMUTATIONS = ((0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))


def permute_channels(x, rng: np.random.Generator, prob: float):
    """Swap the colour channels of a random subset of a batch; returns (batch, which rows (n,) bool).

    Held-out (shape, colour) pairs never occur in training; with swapped channels a drop may be red,
    so shape, pattern and pose cannot lean on colour. Colour and scene labels of swapped rows are
    dropped (a blue lawn is no world scene) and swapped rows count as their own identities.
    """
    import torch

    rows = rng.random(len(x)) < prob
    if rows.any():
        x = x.clone()
        for i in np.flatnonzero(rows):
            x[i] = x[i, list(PERMUTATIONS[int(rng.integers(0, len(PERMUTATIONS)))])]
    return x, torch.from_numpy(rows)


def _lr_at(step: int, cfg) -> float:
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    t = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def _optimizer_step(opt, loss, lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def train_perception(pool: RenderPool, cfg: PerceptionTrainConfig = PerceptionTrainConfig(),
                     progress: bool = True, log_every: int = 50) -> tuple[PerceptionNet, list[dict]]:  # fmt: skip
    """Train from scratch; returns (net in eval mode, log rows)."""
    import torch
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 0x1D])
    net = PerceptionNet(cfg.net).to(memory_format=torch.channels_last).train()  # ~30 % faster on CPU
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    labels = pool_labels(pool)
    n_k = pool.images.shape[1]
    k = min(cfg.renders_per_subject, n_k)
    log: list[dict] = []
    start = time.perf_counter()
    for step in tqdm(range(cfg.steps), desc="perception", disable=not progress):
        rows = np.asarray(sample_identity_batch(pool.groups, cfg.subjects_per_batch, rng, cfg.per_group))
        cols = np.stack([rng.choice(n_k, k, replace=False) for _ in rows])  # (n, k)
        r_idx, c_idx = np.repeat(rows, k), cols.reshape(-1)  # (n*k,)
        x = add_noise(to_tensor(pool.images[r_idx, c_idx]), rng, cfg.noise_prob)  # (n*k, 3, G, G)
        x, swapped = permute_channels(x, rng, cfg.permute_prob)  # (n*k, 3, G, G), (n*k,)
        ref = to_tensor(pool.refs[rows])  # (n, 3, G, G)
        _, neck = net.features(torch.cat([x, ref]).contiguous(memory_format=torch.channels_last))  # (n*k + n, N)
        m = len(r_idx)
        target = {f: torch.from_numpy(labels[f][r_idx, c_idx]) for f in FIELDS}
        for f in ("color", "scene"):
            target[f] = target[f].masked_fill(swapped, UNGRADED)
        probe_total, parts = probe_losses(net.probe_logits(neck[:m]), target)
        ids = torch.from_numpy(np.concatenate([r_idx, rows]))  # canonical renders are positives too
        ids[:m][swapped] = len(pool.subject_ids) + torch.arange(int(swapped.sum()))  # own identities
        id_loss = supcon_loss(net.embed(neck), ids, cfg.temperature)
        loss = probe_total + cfg.identity_weight * id_loss
        _optimizer_step(opt, loss, _lr_at(step, cfg))
        if step % log_every == 0 or step == cfg.steps - 1:
            log.append({"step": step, "loss": float(loss.detach()), "identity": float(id_loss.detach()), **parts,
                        "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
    return net.to(memory_format=torch.contiguous_format).eval(), log


@dataclass(frozen=True)
class PoseTrainConfig:
    """Batches of random pool images; also the base of the other single-image classifiers' configs."""

    steps: int = 3000
    batch_size: int = 96
    lr: float = 3e-3
    weight_decay: float = 1e-4
    warmup: int = 40
    noise_prob: float = 0.3
    permute_prob: float = 0.3  # channel swaps keep pose, shape and pattern labels (red dots are still dots)
    seed: int = 0
    net: NetConfig = field(default_factory=NetConfig)


def train_pose(pool: RenderPool, cfg: PoseTrainConfig = PoseTrainConfig(), progress: bool = True,
               log_every: int = 50) -> tuple[PoseNet, list[dict]]:  # fmt: skip
    """Train PoseNet from scratch on (pool image, its subject's canonical render) pairs."""
    import torch
    import torch.nn.functional as F
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 0x905E])
    net = PoseNet(cfg.net).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    poses = pool_labels(pool)["pose"].reshape(-1)  # (S*K,)
    images, srow, _ = pool.flat()
    log, start = [], time.perf_counter()
    for step in tqdm(range(cfg.steps), desc="pose", disable=not progress):
        idx = rng.choice(len(images), min(cfg.batch_size, len(images)), replace=False)
        x = add_noise(to_tensor(images[idx]), rng, cfg.noise_prob)  # (B, 3, G, G)
        x, _ = permute_channels(x, rng, cfg.permute_prob)
        ref = to_tensor(pool.refs[srow[idx]])  # (B, 3, G, G)
        logits = net(x.contiguous(memory_format=torch.channels_last), ref.contiguous(memory_format=torch.channels_last))
        loss = F.cross_entropy(logits, torch.from_numpy(poses[idx]))
        _optimizer_step(opt, loss, _lr_at(step, cfg))
        if step % log_every == 0 or step == cfg.steps - 1:
            log.append({"step": step, "loss": float(loss.detach()), "seconds": round(time.perf_counter() - start, 1)})
    return net.to(memory_format=torch.contiguous_format).eval(), log


@dataclass(frozen=True)
class TraitTrainConfig(PoseTrainConfig):
    net: NetConfig = field(default_factory=lambda: NetConfig(channels=(24, 48, 96), neck=192))


def train_traits(pool: RenderPool, cfg: TraitTrainConfig = TraitTrainConfig(), progress: bool = True,
                 log_every: int = 50) -> tuple[TraitNet, list[dict]]:  # fmt: skip
    """Train TraitNet from scratch on random pool images; returns (net in eval mode, log rows)."""
    import torch
    from tqdm import tqdm

    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng([cfg.seed, 0x7A17])
    net = TraitNet(cfg.net).to(memory_format=torch.channels_last).train()
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    labels = {f: v.reshape(-1) for f, v in pool_labels(pool).items() if f in TRAIT_NET_FIELDS}  # {field: (S*K,)}
    images = pool.flat()[0]
    log, start = [], time.perf_counter()
    for step in tqdm(range(cfg.steps), desc="traits", disable=not progress):
        idx = rng.choice(len(images), min(cfg.batch_size, len(images)), replace=False)
        x = add_noise(to_tensor(images[idx]), rng, cfg.noise_prob)  # (B, 3, G, G)
        x, _ = permute_channels(x, rng, cfg.permute_prob)
        target = {f: torch.from_numpy(v[idx]) for f, v in labels.items()}  # UNGRADED rows are ignored
        loss, parts = probe_losses(net(x.contiguous(memory_format=torch.channels_last)), target, TRAIT_NET_FIELDS)
        _optimizer_step(opt, loss, _lr_at(step, cfg))
        if step % log_every == 0 or step == cfg.steps - 1:
            log.append({"step": step, "loss": float(loss.detach()), **parts,
                        "seconds": round(time.perf_counter() - start, 1)})  # fmt: skip
    return net.to(memory_format=torch.contiguous_format).eval(), log
