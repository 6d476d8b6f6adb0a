"""Bradley-Terry strengths from pairwise preferences, with bootstrap confidence intervals.

P(i beats j) = sigmoid(theta_i - theta_j). Fitted by Newton's method (the log-likelihood is concave) on a win matrix
W[i, j] = wins of i over j; a tie counts half a win to each side; "both bad" is no comparison.
`prior` adds that many virtual ties to every pair of systems that was compared, so a system that
never won still gets a finite strength (0 gives the plain maximum-likelihood fit). Strengths are
reported as theta with mean 0 (log-odds scale).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from suti.errors import InputError


def win_matrix(systems: Sequence[str], comparisons: Sequence[tuple[str, str, str]]) -> np.ndarray:
    """comparisons: (system_a, system_b, preferred) with preferred in {system_a, system_b, "tie", "both_bad"}."""
    index = {s: i for i, s in enumerate(systems)}
    wins = np.zeros((len(systems), len(systems)))
    for a, b, preferred in comparisons:
        if a not in index or b not in index or a == b:
            raise InputError(f"comparison between unknown or identical systems: {a!r} vs {b!r}")
        i, j = index[a], index[b]
        if preferred == a:
            wins[i, j] += 1
        elif preferred == b:
            wins[j, i] += 1
        elif preferred == "tie":
            wins[i, j] += 0.5
            wins[j, i] += 0.5
        elif preferred != "both_bad":
            raise InputError(f"preferred must be {a!r}, {b!r}, 'tie' or 'both_bad', got {preferred!r}")
    return wins


def _loglik(theta: np.ndarray, wins: np.ndarray) -> float:
    diff = theta[:, None] - theta[None, :]  # (S, S) theta_i - theta_j
    return float(-(wins * np.logaddexp(0.0, -diff)).sum())  # sum W_ij log sigmoid(theta_i - theta_j)


def fit(wins: np.ndarray, prior: float = 0.1, tol: float = 1e-10, max_iter: int = 200) -> np.ndarray:
    """theta (mean 0) maximising the Bradley-Terry likelihood of the win matrix (Newton's method).

    The log-likelihood is concave in theta; a step is halved until the likelihood does not fall.
    """
    wins = np.asarray(wins, dtype=float)
    if prior < 0:
        raise InputError(f"Bradley-Terry prior must be >= 0, got {prior}")
    wins = wins + prior * 0.5 * ((wins + wins.T) > 0)
    games = wins + wins.T  # (S, S) comparisons per pair
    if np.any(games.sum(axis=1) == 0):
        raise InputError("every system needs at least one comparison for a Bradley-Terry fit")
    reach = (wins > 0) | np.eye(len(wins), dtype=bool)  # i -> j: i beat j at least once
    for k in range(len(wins)):  # transitive closure (Warshall)
        reach |= reach[:, k : k + 1] & reach[k : k + 1, :]
    if not reach.all():  # Ford's condition: a finite maximum needs every system to beat its way to every other
        raise InputError("the Bradley-Terry fit has no finite maximum (some systems always win or always lose "
                         "against the rest, or are never compared with them); use a prior > 0")  # fmt: skip
    won = wins.sum(axis=1)
    theta = np.zeros(len(wins))
    for _ in range(max_iter):
        s = 1.0 / (1.0 + np.exp(theta[None, :] - theta[:, None]))  # (S, S) P(i beats j)
        grad = won - (games * s).sum(axis=1)
        if np.max(np.abs(grad)) < tol * (1.0 + games.sum()):
            return theta - theta.mean()
        curv = games * s * (1.0 - s)  # (S, S)
        neg_hessian = np.diag(curv.sum(axis=1)) - curv
        step = np.linalg.lstsq(neg_hessian, grad, rcond=None)[0]
        base, t = _loglik(theta, wins), 1.0
        while _loglik(theta + t * step, wins) < base - 1e-12 and t > 1e-8:
            t /= 2.0
        theta = theta + t * step
    raise InputError(f"the Bradley-Terry fit did not converge in {max_iter} Newton steps")


def fit_with_ci(systems: Sequence[str], comparisons: Sequence[tuple[str, str, str, str]], n_boot: int = 1000,
                seed: int = 0, level: float = 0.95, prior: float = 0.1) -> dict[str, dict[str, float]]:  # fmt: skip
    """Per system: theta and its percentile CI from a bootstrap over items.

    comparisons: (item, system_a, system_b, preferred); items are resampled with replacement, so
    all comparisons made on one item stay together.
    """
    systems = list(systems)
    by_item: dict[str, list[tuple[str, str, str]]] = {}
    for item, a, b, preferred in comparisons:
        by_item.setdefault(item, []).append((a, b, preferred))
    items = sorted(by_item)
    if not items:
        raise InputError("no pairwise comparisons to fit")
    per_item = np.stack([win_matrix(systems, by_item[i]) for i in items])  # (I, S, S)
    theta = fit(per_item.sum(axis=0), prior)
    rng = np.random.default_rng(seed)
    draws = np.stack([fit(per_item[rng.integers(0, len(items), len(items))].sum(axis=0), prior)
                      for _ in range(n_boot)])  # (B, S)  # fmt: skip
    lo, hi = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=0)
    return {s: {"theta": float(theta[k]), "lo": float(lo[k]), "hi": float(hi[k])} for k, s in enumerate(systems)}
