"""The identity embedding (the DINO analogue) and its calibration into P(same subject).

Training (see `perception_train.py`): batches hold several subjects that share one coarse caption
(same shape, colour, pattern), each in several random contexts; a supervised contrastive loss pulls
renders of one subject together and pushes the look-alikes apart, so only the unnameable details
(exact hue, pattern phase and angle, mark, outline) can separate them.

Scoring: an image is compared with REFERENCE renders of the claimed subject (fixed contexts); the
mean cosine is mapped to P(same subject) by a logistic calibration fitted on TRAIN subjects
(positives: the subject in random contexts; negatives: other subjects with the same coarse caption).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from suti.world.context import Context

REFERENCE_CONTEXTS: tuple[Context, ...] = (
    Context(), Context(scene="grass", variant=1), Context(scene="beach", variant=2),
    Context(scene="snow", variant=3), Context(scene="brick_wall"), Context(scene="kitchen_table", variant=1),
    Context(scene="city_street", variant=2), Context(scene="desert", variant=3),
)  # fmt: skip


def supcon_loss(z, labels, temperature: float = 0.1):
    """Supervised contrastive loss over unit embeddings z (B, E) with integer labels (B,)."""
    import torch

    sim = z @ z.T / temperature  # (B, B)
    eye = torch.eye(len(z), dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)  # (B, B)
    pos = (labels[:, None] == labels[None, :]) & ~eye  # (B, B)
    n_pos = pos.sum(1)
    has = n_pos > 0
    per_anchor = -(log_prob.masked_fill(~pos, 0.0).sum(1)[has] / n_pos[has])
    return per_anchor.mean()


def sample_identity_batch(groups: dict, n_subjects: int, rng: np.random.Generator,
                          per_group: int = 4) -> list[int]:  # fmt: skip
    """Pool rows for one batch: groups of `per_group` subjects sharing coarse traits (hard negatives)."""
    rich = [rows for rows in groups.values() if len(rows) >= per_group]
    chosen: list[int] = []
    for i in rng.permutation(len(rich)):
        if len(chosen) + per_group > n_subjects:
            break
        chosen += [int(r) for r in rng.choice(rich[i], per_group, replace=False)]
    if len(chosen) < n_subjects:  # small pools: fill with random subjects
        everyone = np.array(sorted({r for rows in groups.values() for r in rows if r not in set(chosen)}))
        extra = rng.choice(everyone, min(n_subjects - len(chosen), len(everyone)), replace=False)
        chosen += [int(r) for r in extra]
    return chosen


@dataclass(frozen=True)
class Calibration:
    """P(same subject) = sigmoid(a * mean_cosine + b)."""

    a: float
    b: float

    def __call__(self, cosine: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(self.a * np.asarray(cosine, np.float64) + self.b)))

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b}


def fit_calibration(pos: np.ndarray, neg: np.ndarray, iters: int = 100) -> Calibration:
    """Logistic regression of same (1) vs different (0) on the scalar cosine, balanced classes (Newton)."""
    x = np.concatenate([pos, neg]).astype(np.float64)
    y = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    w = np.concatenate([np.full(len(pos), 0.5 / len(pos)), np.full(len(neg), 0.5 / len(neg))])
    X = np.stack([x, np.ones_like(x)], axis=1)  # (n, 2)
    theta = np.zeros(2)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(X @ theta)))
        grad = X.T @ (w * (p - y)) + 1e-6 * theta
        hess = (X * (w * p * (1 - p))[:, None]).T @ X + 1e-6 * np.eye(2)
        step = np.linalg.solve(hess, grad)
        theta -= step
        if np.abs(step).max() < 1e-10:
            break
    return Calibration(float(theta[0]), float(theta[1]))


def mean_cosine(emb: np.ndarray, refs: np.ndarray) -> np.ndarray:
    """Mean cosine of each row of emb (N, E) to the rows of refs (R, E), or row-wise refs (N, R, E)."""
    if refs.ndim == 2:
        return (emb @ refs.T).mean(axis=1)
    return np.einsum("ne,nre->nr", emb, refs).mean(axis=1)
