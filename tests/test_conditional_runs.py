"""Class-conditional runs on Ray (issue 22): every strategy, DP, top-k compression and grouped training train a
conditional model unchanged; the run folder gets the per-class files; the README's lines sample its model/."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_conditional import run_readme_snippet

import raydiff
from raydiff.outputs import EXECUTION_COLUMNS

VARIANTS = {
    "fedbuff": {},
    "grouped": {"train": {"group_size": 2}},
    "fedavg": {"strategy": {"name": "fedavg", "clients_per_round": 3}},
    "fedasync": {"strategy": {"name": "fedasync"}},
    "dp": {"strategy": {"dp": {"enabled": True, "clip_norm": 1.0, "noise_multiplier": 0.5}}},
    "topk": {"strategy": {"compression": {"name": "topk", "fraction": 0.05}}},
}
# each a ~15 s Ray run (minutes on a loaded machine): in the slow set, which CI runs; the default suite runs
# test_conditional_run_folder_and_readme_lines (a conditional FedBuff run) instead
SLOW = set(VARIANTS)


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _merge(out.get(k, {}), v) if isinstance(v, dict) else v
    return out


def _conditional(tiny_cfg: dict, variant: str) -> dict:
    cfg = _merge(tiny_cfg, {"model": {"conditional": True}, "eval": {"privacy_audit": {"enabled": False}}})
    return _merge(cfg, VARIANTS[variant])


@pytest.mark.parametrize("variant", [pytest.param(v, marks=pytest.mark.slow) if v in SLOW else v for v in VARIANTS])
def test_every_strategy_trains_a_conditional_model(ray_session, tiny_cfg, tmp_path, variant):
    res = raydiff.run(_conditional(tiny_cfg, variant), out=tmp_path / variant, progress=False)
    s, out = res.summary, res.out_dir
    ev = pd.read_parquet(out / "events.parquet")
    assert s["updates_applied"] > 0 and (ev.status == "applied").sum() == s["updates_applied"]
    assert s["utility_labels"] == "conditional" and 0 <= s["label_fidelity"] <= 1
    for key in ("utility_accuracy", "utility_accuracy_real", "utility_ratio", "final_density", "final_coverage"):
        assert key in s, key
    per_class = pd.read_parquet(out / "evals_per_class.parquet")
    assert per_class["class"].tolist() == list(range(10)) and (per_class["n"] == 4).all()
    assert len(pd.read_parquet(out / "evals_per_client.parquet")) == tiny_cfg["clients"]["num_clients"]
    assert (out / "samples" / "by_class.png").is_file() and (out / "samples" / "real_by_class.png").is_file()
    from diffusers import UNet2DModel

    unet = UNet2DModel.from_pretrained(str(out / "model" / "unet"))
    assert unet.config.num_class_embeds == 11  # 10 digits + "no label"


@pytest.mark.slow  # 15-60 s: keeps the default run under 7 minutes; CI runs it
def test_conditional_run_folder_and_readme_lines(ray_session, tiny_cfg, tmp_path):
    """A conditional run with its privacy audit: summary fields, per-class files, one MIA row per class; the
    README's lines run on its model/."""
    cfg = _merge(tiny_cfg, {"model": {"conditional": True}})
    res = raydiff.run(cfg, out=tmp_path / "run", progress=False)
    out, s = res.out_dir, res.summary
    assert s["utility_labels"] == "conditional" and 0 <= s["label_fidelity"] <= 1
    for key in ("utility_accuracy", "utility_accuracy_real", "utility_ratio", "final_density", "final_coverage"):
        assert key in s, key
    assert pd.read_parquet(out / "evals_per_class.parquet")["class"].tolist() == list(range(10))
    assert (out / "samples" / "by_class.png").is_file() and (out / "samples" / "real_by_class.png").is_file()
    priv = pd.read_parquet(out / "privacy.parquet")
    assert sorted(priv.loc[priv["scope"] == "class", "class"]) == list(range(10))
    assert (priv.loc[priv["scope"] == "client", "client_id"] >= 0).all()
    run_readme_snippet(out / "model", tmp_path, "\nassert images.shape[0] == 8 and bool(images.isfinite().all())\n")


@pytest.mark.slow  # every tiny run of the default suite computes the pseudo-label utility already
def test_unconditional_run_reports_pseudo_label_utility(ray_session, tiny_cfg, tmp_path):
    cfg = _merge(tiny_cfg, {"eval": {"privacy_audit": {"enabled": False}}})
    s = json.loads((raydiff.run(cfg, out=tmp_path / "u", progress=False).out_dir / "summary.json").read_text())
    assert s["utility_labels"] == "pseudo" and s["label_fidelity"] is None
    assert 0 <= s["utility_accuracy"] <= 1 and s["utility_accuracy_real"] > 0.2  # 4 real images per class; chance 0.1


@pytest.mark.slow
def test_conditional_run_is_the_same_whatever_the_actor_count(ray_session, tiny_cfg, tmp_path):
    runs = []
    for actors in (1, 2):
        cfg = _merge(_conditional(tiny_cfg, "fedbuff"), {"run": {"actors": actors}})
        res = raydiff.run(cfg, out=tmp_path / f"a{actors}", progress=False)
        assert res.summary["actors"] == actors
        ev = pd.read_parquet(res.out_dir / "events.parquet").drop(columns=list(EXECUTION_COLUMNS))
        runs.append((res.summary["model_sha256"], ev))
    assert runs[0][0] == runs[1][0]
    pd.testing.assert_frame_equal(runs[0][1], runs[1][1])
    assert np.isfinite(runs[0][1].train_loss.dropna()).all()
