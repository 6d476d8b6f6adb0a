"""Realism: how typical an image is of the world's renders, per image, plus set-level KID.

Per image: the mean distance from the image's PerceptionNet feature map, reduced to its top principal
components plus the norm of what those components leave out (so energy off the render subspace,
like noise, counts), to its k nearest neighbours in a bank of TRAIN renders. A held-out calibration set of renders gives the
distribution of that distance for real renders, and the score is a soft outlier test:

    p = (1 + #{calibration distances >= d}) / (n + 1)     conformal p-value of "this is a render"
    realism = min(1, p / ALPHA)                            1 = as typical as 90 % of real renders

so real renders score 1 in 90 % of cases (mean ~0.95) and an image stranger than every real render
scores ~1/(n * ALPHA). Set level: KID (polynomial-kernel MMD^2, unbiased) between two embedding sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from suti.errors import ModelLoadError

ALPHA = 0.1
K_NEIGHBOURS = 5
PCA_DIM = 32


@dataclass
class RealismModel:
    mean: np.ndarray  # (F,) feature mean
    proj: np.ndarray  # (F, P) top principal directions (orthonormal columns)
    bank: np.ndarray  # (M, P + 1) reduced TRAIN render features
    calibration: np.ndarray  # (n,) sorted kNN distances of held-out renders

    def reduce(self, feats: np.ndarray) -> np.ndarray:
        """(N, F) features -> (N, P + 1): principal coordinates and the residual norm."""
        x = np.asarray(feats, np.float32) - self.mean  # (N, F)
        y = x @ self.proj  # (N, P)
        residual = np.linalg.norm(x - y @ self.proj.T, axis=1, keepdims=True)  # (N, 1)
        return np.hstack([y, residual])

    def distances(self, feats: np.ndarray) -> np.ndarray:
        """Mean distance to the K nearest bank rows, (N,)."""
        z = self.reduce(feats)  # (N, P + 1)
        d2 = (z**2).sum(1)[:, None] - 2 * z @ self.bank.T + (self.bank**2).sum(1)[None, :]  # (N, M)
        near = np.sqrt(np.maximum(np.partition(d2, K_NEIGHBOURS - 1, axis=1)[:, :K_NEIGHBOURS], 0.0))
        return near.mean(axis=1)

    def score(self, feats: np.ndarray) -> np.ndarray:
        """Realism in [0, 1] per row of features."""
        d = self.distances(feats)
        n = len(self.calibration)
        at_least = n - np.searchsorted(self.calibration, d, side="left")  # calibration distances >= d
        p = (1.0 + at_least) / (n + 1.0)
        return np.minimum(1.0, p / ALPHA)

    def save(self, path: str | Path) -> None:
        from safetensors.numpy import save_file

        arrays = {"mean": self.mean.astype(np.float32), "proj": self.proj.astype(np.float16),
                  "bank": self.bank.astype(np.float16), "calibration": self.calibration.astype(np.float32)}
        # safetensors writes the raw buffer: a transposed (Fortran-order) array would load scrambled
        save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()}, str(path))


def load_realism(path: str | Path) -> RealismModel:
    from safetensors.numpy import load_file

    if not Path(path).is_file():
        raise ModelLoadError(f"realism model {path} not found; run `suti eval train-graders`")
    t = load_file(str(path))
    return RealismModel(t["mean"], t["proj"].astype(np.float32), t["bank"].astype(np.float32), np.sort(t["calibration"]))


def fit_realism(bank_feats: np.ndarray, calib_feats: np.ndarray, dim: int = PCA_DIM) -> RealismModel:
    """PCA of the bank features, the reduced bank, and the calibration distances (stored precision)."""
    x = np.asarray(bank_feats, np.float64)
    mean = x.mean(axis=0)
    _, _, vt = np.linalg.svd(x - mean, full_matrices=False)
    proj = vt[: min(dim, len(vt))].T.astype(np.float16).astype(np.float32)  # (F, P), as stored
    model = RealismModel(mean.astype(np.float32), proj, np.zeros((1, proj.shape[1] + 1), np.float32), np.zeros(1))
    model.bank = model.reduce(bank_feats).astype(np.float16).astype(np.float32)
    model.calibration = np.sort(model.distances(calib_feats)).astype(np.float32)
    return model


def kid(x: np.ndarray, y: np.ndarray) -> float:
    """Kernel Inception Distance analogue: unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if len(x) < 2 or len(y) < 2:
        return float("nan")
    d = x.shape[1]
    kxx, kyy, kxy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    m, n = len(x), len(y)
    return float((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
                 - 2 * kxy.mean())  # fmt: skip
