"""The pre-stated paper-grid analysis: the fixed-effect intercept, Holm, and the tables from a runs frame."""

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis.paper_grid import analyze, fedavg_weighted_steps, fixed_effect_intercept, holm, with_metrics_from


def test_one_group_is_the_paired_t_test():
    d = np.array([0.3, -0.1, 0.8, 0.5, 0.2])
    fit = fixed_effect_intercept(d, ["g"] * 5)
    ref = stats.ttest_1samp(d, 0.0)
    ci = ref.confidence_interval(0.95)
    assert fit.estimate == pytest.approx(d.mean())
    assert (fit.low, fit.high) == pytest.approx((ci.low, ci.high))
    assert fit.p_value == pytest.approx(ref.pvalue)
    assert fit.df == 4


def test_balanced_groups_by_hand():
    # group a: 1, 2, 3 (mean 2); group b: 5, 6, 7 (mean 6). Intercept = mean of group means = 4.
    # Residuals -1, 0, 1 in each group: sigma^2 = 4 / (6 - 2) = 1; se = sqrt(sigma^2 / n) = sqrt(1/6).
    fit = fixed_effect_intercept(np.array([1, 2, 3, 5, 6, 7.0]), ["a"] * 3 + ["b"] * 3)
    assert fit.estimate == pytest.approx(4.0)
    assert fit.se == pytest.approx(np.sqrt(1 / 6))
    assert fit.df == 4
    q = stats.t.ppf(0.975, 4)
    assert (fit.low, fit.high) == pytest.approx((4 - q * np.sqrt(1 / 6), 4 + q * np.sqrt(1 / 6)))
    assert fit.p_value == pytest.approx(2 * stats.t.sf(4 / np.sqrt(1 / 6), 4))


def test_unbalanced_groups_weigh_groups_not_runs():
    # group a has 4 runs at 0 +/- 1, group b 2 runs at 10 +/- 1: intercept 5 (not the run mean 3.33)
    fit = fixed_effect_intercept(np.array([-1, 1, -1, 1, 9, 11.0]), list("aaaabb"))
    assert fit.estimate == pytest.approx(5.0)


def test_interval_excludes_zero_iff_p_below_005():
    rng = np.random.default_rng(7)
    for _ in range(200):
        d = rng.normal(rng.normal(0, 0.5), 1.0, size=15)
        fit = fixed_effect_intercept(d, [10, 30, 50] * 5)
        assert (fit.low > 0 or fit.high < 0) == (fit.p_value < 0.05)


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> 0.02, 0.03, 0.06, max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])


def _runs(effect: float) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    cells = [(10, 5), (30, 5), (50, 5), (10, 1), (10, 10)]
    for clients, epochs in cells:
        for seed in range(10, 15):
            base = rng.normal(2.0, 0.3)
            for beta in (5.0, 0.5, 0.1):
                shift = effect if beta == 0.1 else 0.0
                rows.append(
                    {
                        "run": f"c{clients}-e{epochs}-{beta}-{seed}",
                        "seed": seed,
                        "num_clients": clients,
                        "local_epochs": epochs,
                        "beta": beta,
                        "model_sha256": "x",
                        "final_fid_domain": base + shift + rng.normal(0, 0.05),
                        "final_recall": 0.8 - shift / 10 + rng.normal(0, 0.01),
                        "final_kid_domain": 0.01,
                        "final_precision": 0.9,
                        "judge_mean_confidence": 0.9,
                        "final_heldout_loss": 0.2,
                    }
                )
    return pd.DataFrame(rows)


def test_analyze_finds_a_planted_effect_and_only_it():
    tables = analyze(_runs(effect=0.5))
    prim = tables["primary"].set_index(["metric", "b"])
    assert len(prim) == 4
    assert prim.loc[("final_fid_domain", 0.1), "diff"] == pytest.approx(0.5, abs=0.05)
    assert prim.loc[("final_fid_domain", 0.1), "p_holm"] < 0.05
    assert prim.loc[("final_fid_domain", 0.5), "diff_low"] < 0 < prim.loc[("final_fid_domain", 0.5), "diff_high"]
    assert prim.loc[("final_fid_domain", 0.1), "n_pairs"] == 15
    sec = tables["secondary"]
    assert set(sec["slice"].str[0]) == {"A", "B"}
    cells = tables["cells"]
    assert len(cells[(cells.metric == "final_fid_domain")]) == 5 * 2
    for t in (tables["primary"], tables["secondary"], tables["cells"]):
        excl = (t["diff_low"] > 0) | (t["diff_high"] < 0)
        assert (excl == (t["p_value"] < 0.05)).all()


def test_fedavg_weighted_steps_by_hand(tmp_path):
    # clients of 10 and 30 samples, batch 32, 5 local epochs: ceil(50/32) = 2 and ceil(150/32) = 5 steps;
    # FedAvg weighs them 10:30, so (10*2 + 30*5) / 40 = 4.25 (the plain mean would be 3.5)
    pd.DataFrame({"client_id": [0, 1], "n": [10, 30]}).to_parquet(tmp_path / "partition.parquet")
    cfg = {"train": {"batch_size": 32, "local_steps": None, "local_epochs": 5}}
    assert fedavg_weighted_steps(tmp_path, cfg) == 4.25
    assert np.isnan(fedavg_weighted_steps(tmp_path / "absent", cfg))


def test_a_subset_gets_only_the_slices_it_has_the_levels_for():
    # the sampler check: slice A at beta 5 and 0.1 only. No slice B row (its 10-client runs are all at 5
    # epochs: a "slice B" fit would be the 10-client cell under another name), no 5 -> 0.5 contrast.
    runs = _runs(effect=0.5)
    sub = runs[(runs.local_epochs == 5) & (runs.beta != 0.5)]
    tables = analyze(sub)
    assert set(tables["primary"]["b"]) == {0.1} and len(tables["primary"]) == 2
    assert set(tables["secondary"]["slice"].str[0]) == {"A"}
    assert set(tables["primary"]["slice"]) == {"A: clients {10,30,50} at 5 epochs"}
    two = analyze(sub[sub.num_clients != 30])  # the label names the levels the fit had, not the plan's
    assert set(two["primary"]["slice"]) == {"A: clients {10,50} at 5 epochs"} and (two["primary"]["df"] == 8).all()
    assert set(tables["cells"]["num_clients"]) == {10, 30, 50} and set(tables["cells"]["local_epochs"]) == {5}
    # the 10-client cell alone: no pooled fit at all, only its cell test
    one = analyze(sub[sub.num_clients == 10])
    assert one["primary"].empty and one["secondary"].empty and len(one["cells"]) == 6  # 6 endpoints, 1 contrast


def test_metrics_from_replaces_the_endpoints_and_keeps_only_rescored_runs():
    runs = _runs(effect=0.0)
    scores = runs[["run"]].iloc[:10].assign(final_fid_domain=1.0, final_recall=0.5)
    out = with_metrics_from(runs, scores)
    assert list(out.columns) == list(runs.columns) and len(out) == 10
    assert (out.final_fid_domain == 1.0).all() and (out.final_recall == 0.5).all()
    assert (out.final_heldout_loss == runs.final_heldout_loss.iloc[:10].to_numpy()).all()  # not re-scored: kept
    with pytest.raises(ValueError, match="'run' column"):
        with_metrics_from(runs, scores.drop(columns="run"))
