"""One test per claim, intervals inside the metric's range, time to target as survival data: checked against
scipy and lifelines, on synthetic numbers (no runs)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml
from scipy import stats

from analysis.metric_table import axis_label, label, metric
from analysis.seeds import _condition_labels, sweep_case
from analysis.stats import excludes_null, paired_ci, paired_test, range_ci
from analysis.survival import km_curve, rmst

# ---- one test per claim -------------------------------------------------------------------------------------


def test_paired_t_is_scipys_test_and_its_interval():
    rng = np.random.default_rng(1)
    a = rng.lognormal(1.0, 0.3, 7)
    b = a * rng.lognormal(0.1, 0.2, 7)
    cmp = paired_ci(a, b)
    ref = stats.ttest_rel(b, a)
    lo, hi = stats.t.interval(0.95, 6, loc=np.mean(b - a), scale=stats.sem(b - a))
    assert cmp.diff.p_value == pytest.approx(ref.pvalue) and (cmp.diff.low, cmp.diff.high) == pytest.approx((lo, hi))
    # the ratio's p-value is the log ratios' test, not the raw differences'
    logs = np.log(b) - np.log(a)
    ref = stats.ttest_rel(np.log(b), np.log(a))
    lo, hi = stats.t.interval(0.95, 6, loc=logs.mean(), scale=stats.sem(logs))
    assert cmp.log_ratio.p_value == pytest.approx(ref.pvalue)
    assert (cmp.ratio_low, cmp.ratio_high) == pytest.approx((math.exp(lo), math.exp(hi)))


def test_the_issues_disagreeing_case_now_agrees():
    """Ratio 0.79 with an interval below 1: the old code gave p = 0.11 from raw differences; the log-ratio test
    that made the interval gives p < 0.05."""
    a = np.array([10.0, 2.0, 5.0, 8.0, 3.0])
    b = a * np.array([0.70, 0.85, 0.80, 0.75, 0.88])
    cmp = paired_ci(a, b)
    assert cmp.ratio_high < 1 and cmp.log_ratio.p_value < 0.05
    assert excludes_null(cmp.ratio_low, cmp.ratio_high, 1.0) == (cmp.log_ratio.p_value < 0.05)
    assert excludes_null(cmp.diff.low, cmp.diff.high, 0.0) == (cmp.diff.p_value < 0.05)


@pytest.mark.parametrize("n,method", [(3, "t"), (5, "t"), (12, "t"), (25, "bootstrap"), (6, "bootstrap")])
def test_interval_excludes_null_iff_p_below_alpha(n, method):
    rng = np.random.default_rng(n)
    for i in range(150 if method == "t" else 40):
        d = rng.normal(rng.normal(0, 0.6), 1.0, n)
        t = paired_test(d, method=method, seed=i)
        assert excludes_null(t.low, t.high, 0.0) == (t.p_value < 0.05), (d, t)
        assert t.method == ("paired t" if method == "t" else "paired bootstrap")
    assert paired_test([2.0, 2.0, 2.0]).p_value == 0.0 and paired_test([0.0, 0.0]).p_value == 1.0
    assert math.isnan(paired_test([1.0]).p_value) and math.isnan(paired_test([1.0]).low)


# ---- intervals inside the metric's range --------------------------------------------------------------------


def test_positive_metrics_get_geometric_mean_intervals():
    fid = [1.64, 0.85, 0.62]  # a plain t interval: 1.04 [-0.30, 2.37]
    ci = range_ci(fid, "positive")
    logs = np.log(fid)
    lo, hi = stats.t.interval(0.95, 2, loc=logs.mean(), scale=stats.sem(logs))
    assert ci.low > 0 and (ci.low, ci.high) == pytest.approx((math.exp(lo), math.exp(hi)))
    assert ci.estimate == pytest.approx(stats.gmean(fid)) and ci.mean == pytest.approx(np.mean(fid))
    assert ci.method == "t, log scale (geometric mean)"
    zeros = range_ci([0.0, 0.5, 1.0], "positive")  # log undefined: raw t, cut at 0, and says so
    assert zeros.low == 0.0 and "cut to the range" in zeros.method


def test_shares_stay_in_unit_interval():
    conf = [0.97, 0.99, 0.995, 0.9]
    ci = range_ci(conf, "unit")
    z = np.log(conf) - np.log1p(-np.array(conf))
    lo, hi = stats.t.interval(0.95, 3, loc=z.mean(), scale=stats.sem(z))
    assert 0 < ci.low < ci.high < 1 and ci.high == pytest.approx(1 / (1 + math.exp(-hi)))
    assert ci.method == "t, logit scale" and ci.low == pytest.approx(1 / (1 + math.exp(-lo)))
    edge = range_ci([1.0, 0.6, 0.98], "unit")  # a raw t interval would pass 1
    assert 0 <= edge.low and edge.high == 1.0
    assert range_ci([-1.0, 2.0], "real").low < -1  # unbounded metrics keep the plain t interval


def test_metric_table():
    assert metric("final_fid_domain").range == "positive" and metric("final_fid_domain").better == "lower"
    assert metric("final_recall").range == "unit" and metric("judge_mean_confidence").better == "higher"
    assert axis_label("ttt_heldout_loss") == "time to held-out denoising loss target (virtual s)"
    assert "10% above best" in label("ttt_heldout_loss@0.1")
    assert label("cfg.strategy.name") == "strategy" and label("cfg.some.field") == "some.field"
    assert metric("made_up").range == "real" and metric("made_up").label == "made_up"


# ---- time to target as survival data -----------------------------------------------------------------------


def test_rmst_equals_lifelines_and_stays_in_budget():
    from lifelines import KaplanMeierFitter
    from lifelines.utils import restricted_mean_survival_time

    t, reached = [12.0, 13.0, 14.0, 15.0, 15.0], [True, True, True, False, False]
    r = rmst(t, reached, budget=15.0)  # the plain t interval was 13.8 [12.18, 15.42]: above the budget
    kmf = KaplanMeierFitter().fit(t, event_observed=reached)
    assert r.rmst == pytest.approx(restricted_mean_survival_time(kmf, t=15.0)) == pytest.approx(13.8)
    assert 0 <= r.low < r.rmst < r.high <= 15.0 and (r.n, r.n_censored, r.budget) == (5, 2, 15.0)
    # censored beyond the budget (a run with a longer budget) and reached after it: both count as tau
    t2, reached2 = [3.0, 9.0, 20.0, 17.0], [True, True, True, False]
    kmf = KaplanMeierFitter().fit(t2, event_observed=reached2)
    assert rmst(t2, reached2, 15.0).rmst == pytest.approx(restricted_mean_survival_time(kmf, t=15.0))
    allc = rmst([15.0, 15.0, 15.0], [False] * 3, 15.0)  # never reached: RMST is the budget, nothing more known
    assert (allc.rmst, allc.low, allc.high, allc.n_censored) == (15.0, 15.0, 15.0, 3)
    with pytest.raises(ValueError, match="censored before the budget"):
        rmst([5.0, 8.0], [True, False], 15.0)


def test_km_curve_is_lifelines():
    from lifelines import KaplanMeierFitter

    t, reached = [2.0, 3.0, 3.0, 5.0, 10.0, 10.0], [True, True, True, True, False, False]
    c = km_curve(t, reached)
    kmf = KaplanMeierFitter().fit(t, event_observed=reached)
    assert c.reached == pytest.approx(1 - kmf.survival_function_.iloc[:, 0].to_numpy())
    assert c.reached[-1] == pytest.approx(4 / 6) and c.censored_at.tolist() == [10.0, 10.0]
    assert (c.low >= 0).all() and (c.high <= 1).all()


# ---- condition labels from the sweep's own record ------------------------------------------------------------


def _record(tmp_path, name, runs):
    root = tmp_path / name
    root.mkdir()
    (root / "sweep.yaml").write_text(yaml.safe_dump(dict(name=name, base="b.yaml", runs=runs)))
    return root


def test_condition_labels_are_case_names(tmp_path):
    import pandas as pd

    def rec(case, over, strategy, seed):
        grid = [f"strategy.name={strategy}", f"seed={seed}"]
        parts = ([case] if case else []) + [f"strategy={strategy}", f"seed{seed}"]
        return dict(name="-".join(parts), overrides=["run.actors=1", *over, *grid, f"name=s-{'-'.join(parts)}"])

    runs = [
        rec(case, over, s, seed)
        for case, over in (("homogeneous", []), ("stragglers", ["clients.speed.sigma=1.0"]))
        for s in ("fedavg", "fedbuff")
        for seed in (0, 1)
    ]
    assert sweep_case(runs[0]) == ("homogeneous", ("strategy.name=fedavg",))
    assert sweep_case(runs[-1]) == ("stragglers", ("strategy.name=fedbuff",))
    root = _record(tmp_path, "study", runs)
    frame = pd.DataFrame(
        {
            "run_dir": [str(root / r["name"]) for r in runs],
            "cfg.clients.speed.sigma": [0.0] * 4 + [1.0] * 4,
            "cfg.strategy.name": ["fedavg", "fedavg", "fedbuff", "fedbuff"] * 2,
        }
    )
    labels = _condition_labels(frame, ["cfg.clients.speed.sigma"], ["cfg.strategy.name"])
    assert labels.tolist() == ["homogeneous"] * 4 + ["stragglers"] * 4  # not "base"
    # a stragglers-only sweep: its one condition is its case, not "base"
    only = _record(tmp_path, "only", runs[4:])
    one = frame.iloc[4:].assign(run_dir=[str(only / r["name"]) for r in runs[4:]])
    assert set(_condition_labels(one, [], ["cfg.strategy.name"])) == {"stragglers"}
    # a record that names its case is taken at its word
    assert sweep_case(dict(runs[0], case="named"))[0] == "named"


def test_time_summary_uses_the_conditions_budget():
    """Runs with different budgets (no run.max_vtime): tau is the smallest, and a run that reached the target
    only after tau is censored at tau, in the RMST and in the counts."""
    import pandas as pd

    from analysis.seeds import paired_diff, time_summary

    runs = pd.DataFrame(
        {
            "condition": ["c"] * 4,
            "arm": ["a", "a", "b", "b"],
            "seed": [0, 1, 0, 1],
            "budget": [10.0, 12.0, 11.0, 10.0],
            "ttt_x": [4.0, 11.0, 12.0, 6.0],  # a/1 reached at 11 > tau = 10; b/0 never reached (its budget, 11)
            "ttt_x_reached": [True, True, False, True],
        }
    )
    t = time_summary(runs, "ttt_x", by=["condition", "arm"]).set_index("arm")
    assert t.loc["a", "budget"] == 10.0 and t.loc["a", "rmst"] == 7.0 and t.loc["a", "n_censored"] == 1
    assert t.loc["b", "rmst"] == 8.0 and t.loc["b", "n_censored"] == 1
    d = paired_diff(runs, "ttt_x", "a", "b", between="arm", pair_on="seed").iloc[0]
    assert (d["diff"], d["n_censored_a"], d["n_censored_b"]) == (1.0, 1, 1)  # [10 - 4, 6 - 10] -> mean 1
    assert -10 <= d["diff_low"] and d["diff_high"] <= 10  # a difference of capped times stays in [-tau, tau]
