"""Inter-rater agreement: Krippendorff's alpha (nominal / ordinal / interval) and Fleiss' kappa.

Both take plain numbers, so they can be checked by hand:

    krippendorff_alpha([[1, 1, 0.5], [0, 0.5], [1, 1]], level="ordinal")
    fleiss_kappa(counts)          # counts[i, j] = raters who put unit i in category j

Alpha follows Krippendorff (2011, "Computing Krippendorff's alpha-reliability"): a coincidence matrix
from all pairable values (units with >= 2 values), alpha = 1 - (n - 1) * sum(o * d2) / sum(n_c n_k d2),
with the ordinal metric d2(c, k) = (sum_{g=c..k} n_g - (n_c + n_k) / 2)^2 over ranked values.
Fleiss' kappa (1971) needs the same number of ratings per unit; `fleiss_from_units` keeps the units
with the most common count (and says how many it kept).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from suti.errors import InputError

LEVELS = ("nominal", "ordinal", "interval")


def _unit_counts(units: Sequence[Sequence[float]], categories: Sequence | None = None):
    """(values sorted, counts matrix units x values) over the units with at least 2 values."""
    kept = [list(u) for u in units if len(u) >= 2]
    values = sorted({v for u in kept for v in u}) if categories is None else list(categories)
    index = {v: i for i, v in enumerate(values)}
    counts = np.zeros((len(kept), len(values)))
    for row, unit in enumerate(kept):
        for v in unit:
            if v not in index:
                raise InputError(f"value {v!r} is not one of the categories {values}")
            counts[row, index[v]] += 1
    return values, counts


def coincidences(units: Sequence[Sequence[float]]) -> tuple[list, np.ndarray]:
    """Krippendorff's coincidence matrix o[c, k] over the values that occur (sorted)."""
    values, counts = _unit_counts(units)
    m = counts.sum(axis=1, keepdims=True)  # (U, 1) values per unit
    weighted = counts / (m - 1.0)  # (U, V)
    o = counts.T @ weighted - np.diag(weighted.sum(axis=0))  # (V, V) pairs of different raters in a unit
    return values, o


def distance2(values: list, n_c: np.ndarray, level: str) -> np.ndarray:
    """Squared difference metric delta^2(c, k) for the sorted values, given their marginal counts."""
    if level == "nominal":
        return 1.0 - np.eye(len(values))
    v = np.arange(len(values)) if level == "ordinal" else np.asarray(values, dtype=float)
    if level == "interval":
        return (v[:, None] - v[None, :]) ** 2
    if level == "ordinal":
        cum = np.concatenate([[0.0], np.cumsum(n_c)])  # cum[i] = sum of n_g for g < i
        lo = np.minimum.outer(np.arange(len(v)), np.arange(len(v)))
        hi = np.maximum.outer(np.arange(len(v)), np.arange(len(v)))
        between = cum[hi + 1] - cum[lo]  # sum_{g=lo..hi} n_g
        d = between - (n_c[lo] + n_c[hi]) / 2.0
        return np.where(lo == hi, 0.0, d) ** 2
    raise InputError(f"unknown alpha level {level!r}; choose from {', '.join(LEVELS)}")


def krippendorff_alpha(units: Sequence[Sequence[float]], level: str = "ordinal") -> float:
    """Alpha over units (each the list of values its raters gave); nan when undefined (one value only)."""
    if level not in LEVELS:
        raise InputError(f"unknown alpha level {level!r}; choose from {', '.join(LEVELS)}")
    values, o = coincidences(units)
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if len(values) < 2 or n < 2:
        return float("nan")
    d2 = distance2(values, n_c, level)
    expected = (np.outer(n_c, n_c) * d2).sum()
    if expected == 0:
        return float("nan")
    return float(1.0 - (n - 1.0) * (o * d2).sum() / expected)


def fleiss_kappa(counts: np.ndarray) -> float:
    """Fleiss' kappa from counts[i, j] (units x categories); every row must sum to the same n >= 2."""
    counts = np.asarray(counts, dtype=float)
    if counts.ndim != 2 or counts.shape[0] < 1:
        raise InputError(f"counts must be a units x categories table, got shape {counts.shape}")
    n = counts.sum(axis=1)
    if not np.all(n == n[0]) or n[0] < 2:
        raise InputError("Fleiss' kappa needs the same number (>= 2) of ratings for every unit")
    per_unit = ((counts**2).sum(axis=1) - n) / (n * (n - 1.0))  # (N,) P_i
    p = counts.sum(axis=0) / n.sum()  # (K,) share of each category
    agree, chance = per_unit.mean(), (p**2).sum()
    if chance == 1.0:
        return float("nan")
    return float((agree - chance) / (1.0 - chance))


def fleiss_from_units(units: Sequence[Sequence], categories: Sequence) -> tuple[float, int]:
    """Kappa over the units that have the most common number (>= 2) of ratings; (kappa, units used)."""
    sizes = Counter(len(u) for u in units if len(u) >= 2)
    if not sizes:
        return float("nan"), 0
    size = max(sizes, key=lambda k: (sizes[k], k))
    _, counts = _unit_counts([u for u in units if len(u) == size], categories)
    return fleiss_kappa(counts), len(counts)
