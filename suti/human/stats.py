"""Study statistics on the ratings table: means with bootstrap CIs, agreement, gold accuracy, preferences.

The ratings table has one row per rating (see `report.load_ratings`): item, skill, system, rater,
the axes subject / text / realism in {0, 0.5, 1} (absolute mode) or `preferred` (pairwise mode),
and `expected` for gold rows. Per rating, overall = sqrt(subject * text) (ImagenHub) and
all_pass = subject == text == realism == 1 (SuTI's human evaluation). A system's score averages its
ratings per item first, then over items; the 95% CI is a percentile bootstrap over items
(`n_boot` resamples drawn from `np.random.default_rng(seed)`), so the raters of one item move together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from suti.errors import InputError
from suti.human.agreement import fleiss_from_units, krippendorff_alpha
from suti.human.gold import passes

AXES = ("subject", "text", "realism")
METRICS = AXES + ("overall", "all_pass")


@dataclass(frozen=True)
class StatsConfig:
    n_boot: int = 2000
    seed: int = 0
    level: float = 0.95
    gold_tolerance: float = 0.5
    min_gold_accuracy: float | None = None  # drop raters below this gold accuracy (None: keep all)
    bt_prior: float = 0.1

    def check(self) -> StatsConfig:
        if self.n_boot < 1:
            raise InputError(f"bootstrap resamples must be >= 1, got {self.n_boot}")
        if not 0.0 < self.level < 1.0:
            raise InputError(f"CI level must be in (0, 1), got {self.level}")
        if self.min_gold_accuracy is not None and not 0.0 <= self.min_gold_accuracy <= 1.0:
            raise InputError(f"minimum gold accuracy must be in [0, 1], got {self.min_gold_accuracy}")
        return self


def bootstrap_ci(values, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """(mean, lo, hi): percentile bootstrap of the mean of `values` (one value per resampling unit).

    The resamples are rng.integers(0, n, size=(n_boot, n)) with rng = np.random.default_rng(seed).
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or len(x) == 0 or not np.all(np.isfinite(x)):
        raise InputError("bootstrap needs a non-empty 1-D array of finite values")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)  # (B,)
    lo, hi = np.quantile(means, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(x.mean()), float(lo), float(hi)


def with_derived(ratings: pd.DataFrame) -> pd.DataFrame:
    """Adds overall = sqrt(subject * text) and all_pass (1.0 when all three axes are 1)."""
    out = ratings.copy()
    if {"subject", "text", "realism"} <= set(out.columns):
        out["overall"] = np.sqrt(out["subject"] * out["text"])
        out["all_pass"] = ((out["subject"] == 1) & (out["text"] == 1) & (out["realism"] == 1)).astype(float)
        out.loc[out["subject"].isna(), ["overall", "all_pass"]] = np.nan
    return out


def gold_accuracy(ratings: pd.DataFrame, tolerance: float = 0.5) -> pd.DataFrame:
    """Per rater: gold pages rated, passed, accuracy (see `gold.passes`)."""
    gold = ratings[ratings["is_gold"]]
    rows = []
    for rater, group in ratings.groupby("rater", sort=True):
        mine = gold[gold["rater"] == rater]
        passed = sum(passes(r.expected, r._asdict(), tolerance) for r in mine.itertuples(index=False))
        rows.append({"rater": rater, "gold_rated": len(mine), "gold_passed": int(passed),
                     "accuracy": passed / len(mine) if len(mine) else np.nan, "ratings": len(group)})  # fmt: skip
    return pd.DataFrame(rows, columns=["rater", "gold_rated", "gold_passed", "accuracy", "ratings"])


def drop_failing(ratings: pd.DataFrame, accuracy: pd.DataFrame, minimum: float) -> tuple[pd.DataFrame, list[str]]:
    """Removes every rating of raters whose gold accuracy is below `minimum` (raters without gold stay)."""
    failing = sorted(accuracy.loc[accuracy["accuracy"] < minimum, "rater"])
    return ratings[~ratings["rater"].isin(failing)], failing


def system_means(ratings: pd.DataFrame, by: tuple[str, ...], config: StatsConfig) -> pd.DataFrame:
    """Mean and CI of every metric per group of `by` (e.g. ("system",) or ("system", "skill"))."""
    real = with_derived(ratings[~ratings["is_gold"]])
    rows = []
    for key, group in real.groupby(list(by), sort=True):
        key = key if isinstance(key, tuple) else (key,)
        per_item = group.groupby("item")[list(METRICS)].mean()  # (items, metrics)
        row = dict(zip(by, key), items=len(per_item), ratings=len(group))
        for metric in METRICS:
            mean, lo, hi = bootstrap_ci(per_item[metric].to_numpy(), config.n_boot, config.seed, config.level)
            row.update({metric: mean, f"{metric}_lo": lo, f"{metric}_hi": hi})
        rows.append(row)
    return pd.DataFrame(rows)


def agreement(ratings: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Per axis: Krippendorff's alpha (ordinal; nominal for pairwise choices) and Fleiss' kappa.

    Units are the rated outputs (tasks) of real items; values are the raters' answers to one axis.
    """
    real = ratings[~ratings["is_gold"]]
    rows = []
    axes = AXES if mode == "absolute" else ("preferred",)
    for axis in axes:
        units = [g.dropna().tolist() for _, g in real.groupby("task")[axis]]
        categories = [0.0, 0.5, 1.0] if mode == "absolute" else sorted({v for u in units for v in u})
        kappa, kappa_units = fleiss_from_units(units, categories) if categories else (float("nan"), 0)
        pairable = [u for u in units if len(u) >= 2]
        alpha = krippendorff_alpha(pairable, "ordinal" if mode == "absolute" else "nominal") if pairable else np.nan
        rows.append({"axis": axis, "alpha": alpha, "alpha_level": "ordinal" if mode == "absolute" else "nominal",
                     "alpha_units": len(pairable), "kappa": kappa, "kappa_units": kappa_units})  # fmt: skip
    return pd.DataFrame(rows)


def preferences(ratings: pd.DataFrame, systems: list[str], config: StatsConfig) -> pd.DataFrame:
    """Pairwise mode: Bradley-Terry theta with CI, and each system's win / tie / both-bad shares."""
    from suti.human.bradley_terry import fit_with_ci

    real = ratings[~ratings["is_gold"]]
    if real.empty:
        return pd.DataFrame()
    comparisons = list(zip(real["item"], real["system"], real["system_b"], real["preferred"]))
    try:
        bt = fit_with_ci(systems, comparisons, config.n_boot, config.seed, config.level, config.bt_prior)
    except InputError:  # too few comparisons so far (e.g. a system only ever in "both bad")
        bt = {s: {"theta": np.nan, "lo": np.nan, "hi": np.nan} for s in systems}
    rows = []
    for s in systems:
        mine = real[(real["system"] == s) | (real["system_b"] == s)]
        rows.append({"system": s, "theta": bt[s]["theta"], "theta_lo": bt[s]["lo"], "theta_hi": bt[s]["hi"],
                     "comparisons": len(mine), "win": float((mine["preferred"] == s).mean()),
                     "tie": float((mine["preferred"] == "tie").mean()),
                     "both_bad": float((mine["preferred"] == "both_bad").mean())})  # fmt: skip
    return pd.DataFrame(rows).sort_values("theta", ascending=False, ignore_index=True)
