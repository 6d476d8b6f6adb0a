"""suti.human statistics against hand-computed and published values on small fixed tables."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from suti.errors import InputError
from suti.human.agreement import coincidences, fleiss_from_units, fleiss_kappa, krippendorff_alpha
from suti.human.bradley_terry import fit, fit_with_ci, win_matrix
from suti.human.stats import StatsConfig, bootstrap_ci, drop_failing, gold_accuracy, system_means, with_derived

# Four units, two raters each, on the {0, 0.5, 1} scale.
SMALL = [[0, 0], [0, 0.5], [1, 1], [0.5, 1]]


def test_alpha_small_table_by_hand():
    # Coincidences (values 0, .5, 1): [[2,1,0],[1,0,1],[0,1,2]]; n_c = [3,2,3]; n = 8.
    values, o = coincidences(SMALL)
    assert values == [0, 0.5, 1]
    np.testing.assert_array_equal(o, [[2, 1, 0], [1, 0, 1], [0, 1, 2]])
    # nominal: 1 - (n-1) * 4 / (2 * (3*2 + 3*3 + 2*3)) = 1 - 28/42
    assert krippendorff_alpha(SMALL, "nominal") == pytest.approx(1 / 3)
    # ordinal: d2(0,.5) = d2(.5,1) = ((3+2)/2)^2 = 6.25, d2(0,1) = (3+2+3 - 3)^2 = 25;
    # sum o*d2 = 4 * 6.25 = 25; sum n_c n_k d2 = 2 * (6*6.25 + 6*6.25 + 9*25) = 600; alpha = 1 - 7*25/600
    assert krippendorff_alpha(SMALL, "ordinal") == pytest.approx(1 - 175 / 600)
    # interval: sum o*d2 = 4 * 0.25 = 1; sum n_c n_k d2 = 2 * (6*.25 + 6*.25 + 9*1) = 24; alpha = 1 - 7/24
    assert krippendorff_alpha(SMALL, "interval") == pytest.approx(1 - 7 / 24)


def test_alpha_published_example():
    # Krippendorff (2011), "Computing Krippendorff's alpha-reliability": 4 observers, 12 units, missing values.
    a = [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None]
    b = [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3]
    c = [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None]
    d = [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None]
    units = [[r[i] for r in (a, b, c, d) if r[i] is not None] for i in range(12)]
    assert krippendorff_alpha(units, "nominal") == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units, "ordinal") == pytest.approx(0.815, abs=5e-4)
    assert krippendorff_alpha(units, "interval") == pytest.approx(0.849, abs=5e-4)


def test_alpha_edges():
    assert krippendorff_alpha([[1, 1], [0, 0], [0.5, 0.5]]) == pytest.approx(1.0)
    assert math.isnan(krippendorff_alpha([[1, 1], [1, 1]]))  # one value only: undefined
    assert krippendorff_alpha([[0, 1], [1, 0]], "ordinal") < 0  # systematic disagreement
    with pytest.raises(InputError, match="level"):
        krippendorff_alpha(SMALL, "ratio-ish")


def test_fleiss_kappa_by_hand_and_published():
    # SMALL as counts: P_i = 1, 0, 1, 0 -> 0.5; p = (3, 2, 3) / 8 -> Pe = 22/64; kappa = (1/2 - 22/64) / (42/64) = 5/21
    counts = np.array([[2, 0, 0], [1, 1, 0], [0, 0, 2], [0, 1, 1]])
    assert fleiss_kappa(counts) == pytest.approx(5 / 21)
    assert fleiss_from_units(SMALL + [[1, 1, 1]], [0, 0.5, 1]) == (pytest.approx(5 / 21), 4)  # modal size 2 kept
    # Fleiss (1971) / the textbook example: 10 units, 14 raters, 5 categories -> kappa = 0.210
    table = np.array([[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
                      [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]])  # fmt: skip
    assert fleiss_kappa(table) == pytest.approx(0.210, abs=5e-4)
    with pytest.raises(InputError, match="same number"):
        fleiss_kappa(np.array([[2, 0], [1, 2]]))


def test_bootstrap_matches_exact_enumeration_and_seeds():
    # x = (0, .5, .5, 1, 1): of the 5^5 equally likely resamples, the mean is <= 0.2 in 61 (1.95%) and
    # <= 0.3 in 221 (7.07%); it is <= 0.8 in 2933 (93.9%) and <= 0.9 in 3093 (99.0%). So the exact
    # 2.5% / 97.5% bootstrap quantiles are 0.3 and 0.9, far from a jump of the CDF.
    x = np.array([0.0, 0.5, 0.5, 1.0, 1.0])
    means = np.array([np.mean(c) for c in itertools.product(x, repeat=5)])
    assert np.mean(means <= 0.2 + 1e-9) == pytest.approx(61 / 3125) and np.mean(means <= 0.9 + 1e-9) == pytest.approx(
        3093 / 3125
    )
    mean, lo, hi = bootstrap_ci(x, n_boot=100_000, seed=1)
    assert (mean, lo, hi) == (pytest.approx(0.6), pytest.approx(0.3), pytest.approx(0.9))
    # the documented draw: rng.integers(0, n, (B, n)) from default_rng(seed)
    x = np.array([0.0, 0.5, 1.0])
    idx = np.random.default_rng(7).integers(0, 3, size=(5, 3))
    means = x[idx].mean(axis=1)
    assert bootstrap_ci(x, n_boot=5, seed=7)[1:] == tuple(pytest.approx(q) for q in np.quantile(means, [0.025, 0.975]))
    assert bootstrap_ci(x, 50, seed=3) == bootstrap_ci(x, 50, seed=3)
    assert bootstrap_ci(np.arange(20.0), 50, seed=3) != bootstrap_ci(np.arange(20.0), 50, seed=4)
    assert bootstrap_ci([0.5] * 9, 100) == (0.5, 0.5, 0.5)
    with pytest.raises(InputError):
        bootstrap_ci([], 10)


def test_bradley_terry_by_hand():
    # 2 systems, A wins 3 of 4: the MLE has P(A > B) = 3/4, so theta_A - theta_B = ln 3
    wins = win_matrix(["A", "B"], [("A", "B", "A")] * 3 + [("A", "B", "B"), ("A", "B", "both_bad")])
    np.testing.assert_array_equal(wins, [[0, 3], [1, 0]])  # W[i, j] = wins of i over j
    theta = fit(wins, prior=0.0)
    assert theta[0] - theta[1] == pytest.approx(math.log(3), abs=1e-8) and theta.sum() == pytest.approx(0)
    # a tie is half a win each: A 2 wins + tie vs B 1 win -> 2.5 : 1.5
    theta = fit(win_matrix(["A", "B"], [("A", "B", "A"), ("B", "A", "A"), ("A", "B", "tie"), ("A", "B", "B")]), 0.0)
    assert theta[0] - theta[1] == pytest.approx(math.log(2.5 / 1.5), abs=1e-8)
    # 3 systems: at the MLE every system's expected wins equal its observed wins
    w = np.array([[0, 5, 7], [3, 0, 6], [2, 4, 0]], dtype=float)
    th = fit(w, prior=0.0)
    games = w + w.T
    expected = (games / (1 + np.exp(th[None, :] - th[:, None]))).sum(axis=1)
    np.testing.assert_allclose(expected, w.sum(axis=1), rtol=1e-7)
    assert th[0] > th[1] > th[2]
    # a system that always wins has no finite MLE; the default prior keeps it finite
    with pytest.raises(InputError, match="no finite maximum"):
        fit(np.array([[0, 4], [0, 0]]), prior=0.0)
    assert np.isfinite(fit(np.array([[0, 4], [0, 0]]))).all()


def test_bradley_terry_ci_contains_estimate_and_is_seeded():
    rng = np.random.default_rng(0)
    strength = {"good": 1.0, "mid": 0.0, "bad": -1.0}
    comps = []
    for item in range(40):
        for a, b in itertools.combinations(strength, 2):
            p = 1 / (1 + math.exp(strength[b] - strength[a]))
            comps.append((f"i{item}", a, b, a if rng.random() < p else b))
    res = fit_with_ci(list(strength), comps, n_boot=200, seed=5)
    for s in strength:
        assert res[s]["lo"] <= res[s]["theta"] <= res[s]["hi"]
    assert res["good"]["lo"] > res["bad"]["hi"]  # 120 comparisons separate a 2-logit gap
    assert res == fit_with_ci(list(strength), comps, n_boot=200, seed=5)
    with pytest.raises(InputError, match="unknown"):
        win_matrix(["A"], [("A", "Z", "A")])


def _table() -> pd.DataFrame:
    """Two raters, two items, systems x / y, plus one gold item each rater answered."""
    rows = [("r1", "i1", "x", 1, 1, 1), ("r2", "i1", "x", 1, 0.5, 1), ("r1", "i1", "y", 0, 1, 1),
            ("r2", "i1", "y", 0.5, 1, 0.5), ("r1", "i2", "x", 1, 1, 1), ("r2", "i2", "x", 0.5, 0.5, 0),
            ("r1", "i2", "y", 0, 0, 0.5), ("r2", "i2", "y", 0, 0.5, 0.5)]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["rater", "item", "system", "subject", "text", "realism"])
    frame["is_gold"], frame["expected"], frame["skill"] = False, None, "view"
    frame["task"] = frame["item"] + frame["system"]
    gold = pd.DataFrame([("r1", "g", "gold:noise", 0, 0, 0), ("r2", "g", "gold:noise", 1, 0, 0)],
                        columns=["rater", "item", "system", "subject", "text", "realism"])  # fmt: skip
    gold["is_gold"], gold["expected"], gold["skill"], gold["task"] = (
        True,
        [{"subject": 0.0, "text": 0.0}] * 2,
        "view",
        "g",
    )
    return pd.concat([frame, gold], ignore_index=True)


def test_derived_gold_and_system_means_by_hand():
    t = _table()
    d = with_derived(t)
    assert d.loc[1, "overall"] == pytest.approx(math.sqrt(0.5)) and d.loc[0, "all_pass"] == 1.0
    acc = gold_accuracy(t).set_index("rater")
    assert acc.loc["r1", "accuracy"] == 1.0 and acc.loc["r2", "accuracy"] == 0.0  # r2 gave noise subject = 1
    kept, dropped = drop_failing(t, gold_accuracy(t), 0.5)
    assert dropped == ["r2"] and set(kept["rater"]) == {"r1"}
    means = system_means(t, ("system",), StatsConfig(n_boot=100, seed=0)).set_index("system")
    # x: item means of subject are (1+1)/2 = 1 and (1+0.5)/2 = .75 -> .875; gold rows never count
    assert means.loc["x", "subject"] == pytest.approx(0.875) and means.loc["x", "items"] == 2
    # all_pass for x: i1 (1 + 0)/2, i2 (1 + 0)/2 -> 0.5; overall y: i1 (0 + sqrt(.5))/2, i2 (0 + 0)/2
    assert means.loc["x", "all_pass"] == pytest.approx(0.5)
    assert means.loc["y", "overall"] == pytest.approx(math.sqrt(0.5) / 4)
    assert means.loc["x", "subject_lo"] <= 0.875 <= means.loc["x", "subject_hi"]
