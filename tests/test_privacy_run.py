"""Issue 14, phase 2: the privacy numbers and the audit wired into runs, and the defects the issue lists.

Each defect has a test here (or named here) that fails on the code before its fix:
- 1 (epsilon assumed q = clients_per_round / N): test_summary_reports_the_real_rate_under_over_selection;
- 2 (two updates of one client in one FedBuff buffer): tests/test_dp.py::
  test_fedbuff_with_dp_puts_at_most_one_update_per_client_in_a_buffer;
- 3 (DP noise on weights no client sends): TestNoiseOnlyWhereUpdatesAre and test_dp_partial_run_on_ray;
- a rejected (NaN) update became the client's error-feedback residual: test_a_rejected_update_never_becomes_...;
- int8/fp16 had error feedback only with partial: TestErrorFeedbackOnlyForTopK;
- server_beta1/beta2's comments: test_server_beta_comments_name_the_optimizers_that_use_them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import pytest

import raydiff
from raydiff.config_load import load_config
from raydiff.data import load_dataset
from raydiff.exchange import make_exchange
from raydiff.model import FlatModel, build_unet
from raydiff.privacy.accounting import SUMMARY_FIELDS, rigorous_epsilon, sampled_epsilon
from raydiff.strategies import ClientDP, FedBuff, GaussianMechanism, Update, build_strategy

ROOT = Path(__file__).resolve().parents[1]
DELTA = 1e-5
DECODER = ["up_blocks", "conv_norm_out", "conv_out"]


# --- defect 3: noise only where updates are ----------------------------------------------------------------


class TestNoiseOnlyWhereUpdatesAre:
    def test_the_wrapper_noises_only_the_mask(self):
        """sigma 2, C 1, K 2, mask (T, F, T, F): two zero updates; x changes by 2 z / 2 on coordinates 0 and 2
        only, z the first two draws of the seed (the unmasked coordinates draw nothing)."""
        mask = np.array([True, False, True, False])
        x = np.array([1, 2, 3, 4], np.float32)
        s = ClientDP(FedBuff(2, 1.0, 0.0), GaussianMechanism(2.0, 1.0, np.random.default_rng(5)), mask=mask)
        s.receive(x, 0, Update(0, 0, 1, np.zeros(4, np.float32)))
        assert s.receive(x, 0, Update(1, 0, 1, np.zeros(4, np.float32))).status == "applied"
        z = np.random.default_rng(5).standard_normal(2, dtype=np.float32).astype(np.float64)
        np.testing.assert_allclose(x[[0, 2]], np.array([1.0, 3.0]) + 2.0 * z / 2, rtol=1e-6)
        assert x[1] == 2.0 and x[3] == 4.0

    def test_build_strategy_passes_the_exchange_mask_to_dp(self):
        """What the runner does: the partial exchange's mask reaches the DP wrapper."""
        cfg = load_config({"strategy": {"dp": {"enabled": True}, "compression": {"partial": DECODER}}})
        mask = make_exchange(cfg, build_unet(cfg.model, 8, 1)).mask
        s = build_strategy(cfg.strategy, 10, rng=np.random.default_rng(0), mask=mask)
        dp = s
        while not isinstance(dp, ClientDP):
            dp = dp.inner
        assert dp.mask is mask and 0 < mask.sum() < mask.size


@pytest.mark.slow
def test_dp_partial_run_on_ray(ray_session, tiny_cfg, tmp_path):
    """A real run with DP, partial exchange of the decoder and top-k: the exported model's weights that no
    client sends are still the initial ones (no noise there; before the fix every weight got noise), the
    decoder's changed; summary.json and evals.parquet carry the two epsilons and the audit's numbers."""
    sigma = 1.0
    tiny_cfg["strategy"].update(
        dp={"enabled": True, "noise_multiplier": sigma, "clip_norm": 1.0},
        compression={"name": "topk", "fraction": 0.1, "partial": DECODER},
    )
    tiny_cfg["run"]["max_updates"] = 4
    res = raydiff.run(tiny_cfg, out=tmp_path / "dp", progress=False)
    out, s = res.out_dir, res.summary
    cfg = load_config(out / "config.yaml")
    x0 = FlatModel(build_unet(cfg.model, 8, 1, seed=cfg.seed))
    mask = make_exchange(cfg, x0.module).mask
    from diffusers import DDPMPipeline

    final = FlatModel(DDPMPipeline.from_pretrained(str(out / "model")).unet).vector()
    start = x0.vector()
    assert np.array_equal(final[~mask], start[~mask])
    assert not np.array_equal(final[mask], start[mask])

    for key in (*SUMMARY_FIELDS, "mia_auc", "mia_tpr_at_1pct_fpr", "memorization_ratio_median", "extraction_rate"):
        assert key in s, key
    assert json.loads((out / "summary.json").read_text())["epsilon"] == s["epsilon"]
    ev = pd.read_parquet(out / "events.parquet")
    per_client = ev[ev.status == "applied"].groupby("client_id").size()
    assert s["participations_max"] == per_client.max() and s["updates_per_aggregation_max"] == 1
    assert s["epsilon"] == pytest.approx(rigorous_epsilon(per_client.max(), sigma, DELTA))
    assert s["epsilon_median"] <= s["epsilon"] and s["delta"] == DELTA
    evals = pd.read_parquet(out / "evals.parquet")
    assert {"epsilon", "epsilon_median", "epsilon_sampled", "delta", "uniform_selection"} <= set(evals.columns)
    assert evals.epsilon.iloc[0] == 0 and evals.epsilon.iloc[-1] == pytest.approx(s["epsilon"])
    table = pd.read_parquet(out / "privacy.parquet")
    assert table.client_id.tolist() == list(range(6)) and (out / "privacy.png").is_file()
    assert s["mia_num_members"] == 128 and s["mia_num_nonmembers"] == 64  # conftest's small audit
    assert 0 <= s["mia_auc"] <= 1 and 0 <= s["extraction_rate"] <= 1


# --- defect 1: the rate epsilon_sampled uses ------------------------------------------------------------------


def _dry(tmp_path: Path, folder: str, dp: bool, **strategy: Any) -> dict[str, Any]:
    cfg = {
        "seed": 0,
        "data": {"dataset": "synthetic", "synthetic_size": 500},
        "clients": {"num_clients": 50, "speed": {"dist": "lognormal", "mean": 1000, "sigma": 1.0}},
        "train": {"local_steps": 1, "batch_size": 8},
        "strategy": dict(strategy, dp={"enabled": dp, "noise_multiplier": 1.0}),
        "run": {"max_updates": 200, "dry_run": True},
    }
    res = raydiff.run(cfg, out=tmp_path / folder, progress=False)
    on_disk = json.loads((res.out_dir / "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(res.summary))
    return on_disk


def test_summary_reports_the_real_rate_under_over_selection(tmp_path):
    """FedAvg, 5 of 50 per round, over_selection 0.6, lognormal speeds, 200 rounds: the fast clients are kept
    nearly every time, so the rate behind epsilon_sampled is theirs (>= 0.15), not the 0.1 the old accountant
    assumed, and summary.json says selection was not uniform. (Before: no epsilon in a dry run's summary,
    and a real run's evals used q = 0.1.)"""
    s = _dry(tmp_path, "over", True, name="fedavg", clients_per_round=5, over_selection=0.6)
    assert set(SUMMARY_FIELDS) <= set(s)
    assert s["uniform_selection"] is False and s["sample_rate"] >= 0.15
    assert s["epsilon_sampled"] == pytest.approx(sampled_epsilon(1.0, s["sample_rate"], 200, DELTA))
    assert s["epsilon_sampled"] > 1.3 * sampled_epsilon(1.0, 0.1, 200, DELTA)
    assert s["epsilon"] == pytest.approx(rigorous_epsilon(s["participations_max"], 1.0, DELTA))
    assert not {"epsilon", "mia_auc"} & set(_dry(tmp_path, "plain", False, name="fedavg", clients_per_round=5))


# --- a rejected update and the client's error-feedback state ----------------------------------------------


def test_a_rejected_update_never_becomes_the_clients_error_feedback_state():
    """Orchestrator with stateful clients (top-k, partial) and a server that rejects every third job as NaN:
    each job starts from the state of its client's last ACCEPTED job. Before the fix the state was stored
    before the server's verdict, so one NaN update poisoned the client's residual for good."""
    from raydiff.dry_run import DryExecutor
    from raydiff.hetero import make_availability, sample_profiles
    from raydiff.sim.orchestrator import Orchestrator

    cfg = load_config(
        {
            "seed": 1,
            "clients": {"num_clients": 4, "dropout": 0.1},
            "strategy": {"name": "fedasync", "concurrency": 3},
            "run": {"max_updates": 40},
        }
    )

    class Recording(DryExecutor):
        """A one-value model; every third job's payload is NaN; states are labelled by job."""

        def __init__(self) -> None:  # DryExecutor's, on a one-value vector
            from raydiff.actors.server import ParameterServer

            strategy = build_strategy(cfg.strategy, 4, rng=np.random.default_rng(0))
            self.server = ParameterServer(np.zeros(1, np.float32), strategy)
            self.needs_base = strategy.needs_base
            self.given: dict[int, Optional[str]] = {}

        def train(self, spec, base, state=None):
            self.given[spec.job_id] = state
            return spec.job_id

        def state_after(self, ticket):
            return f"after-{ticket}"

        def submit(self, spec, base_version, ticket, base):
            bad = spec.job_id % 3 == 0
            payload = np.array([np.nan if bad else 0.0], np.float32)
            return self.server.submit(spec.job_id, spec.client_id, base_version, 1, payload, np.zeros(1, np.float32))

    ex = Recording()
    profiles = sample_profiles(cfg.clients, np.random.default_rng(2))
    parts = [np.arange(10)] * 4
    loop = Orchestrator(
        cfg,
        ex.server.strategy.schedule(),
        profiles,
        parts,
        make_availability(cfg.clients, profiles, np.random.default_rng(3)),
        ex,
        None,
        4,
        4,
        stateful_clients=True,
    ).run()
    ev = pd.DataFrame(loop.rows).sort_values("job_id")
    assert (ev.failure_reason.str.startswith("non_finite")).sum() >= 10
    checked = 0
    for _, jobs in ev.groupby("client_id"):
        last_good = None
        for row in jobs.itertuples():
            if row.job_id in ex.given:  # trained (not doomed to drop out before it started)
                assert ex.given[row.job_id] == last_good, (row.job_id, ex.given[row.job_id], last_good)
                checked += 1
            if row.status == "applied":
                last_good = f"after-{row.job_id}"
    assert checked >= 30


# --- error feedback: top-k only ----------------------------------------------------------------------------


class TestErrorFeedbackOnlyForTopK:
    """README: top-k keeps a residual per client (error feedback); fp16 and int8 are plain compression, with or
    without partial. Before the fix int8/fp16 carried a residual exactly when partial was set."""

    @pytest.fixture(scope="class")
    def images(self):
        return load_dataset(load_config().data).images[:64]

    def _states(self, images, compression: dict[str, Any]):
        from raydiff.actors.client import ClientWorker
        from raydiff.messages import JobSpec

        cfg = load_config(
            {"strategy": {"compression": compression}, "model": {"num_train_timesteps": 20}, "clients": {"num_cpus": 1}}
        )
        w = ClientWorker(cfg, images, "w")
        base = w.fm.vector()
        job = JobSpec(0, 0, 7, np.arange(64), 1, 8)
        _, payload, state = w.train(job, base)
        return w.exchange, payload, state

    @pytest.mark.parametrize("name", ["fp16", "int8"])
    def test_quantisers_carry_no_residual(self, images, name):
        xch, _, state = self._states(images, {"name": name, "partial": DECODER})
        assert state is not None and state["residual"] is None and state["local"] is not None  # private weights
        _, _, plain = self._states(images, {"name": name})
        assert plain is None  # stateless without partial, as before
        size = xch.mask.size
        delta = np.random.default_rng(0).normal(size=size).astype(np.float32)
        residual = np.full(size, 0.3, np.float32)
        with_res, _, _ = xch.compressor.encode(delta, residual)
        without, _, _ = xch.compressor.encode(delta, None)
        assert np.array_equal(xch.compressor.decode(with_res, size), xch.compressor.decode(without, size))

    def test_topk_keeps_its_residual_with_partial(self, images):
        xch, _, state = self._states(images, {"name": "topk", "fraction": 0.1, "partial": DECODER})
        res = state["residual"]
        assert res is not None and np.abs(res[xch.mask]).sum() > 0 and not res[~xch.mask].any()


# --- config and CLI -------------------------------------------------------------------------------------------


def test_privacy_audit_is_a_config_section(capsys, tmp_path):
    cfg = load_config(None, ["eval.privacy_audit.enabled=false", "eval.privacy_audit.t_range=[0.1, 0.2]"])
    assert cfg.eval.privacy_audit.enabled is False and cfg.eval.privacy_audit.t_range == (0.1, 0.2)
    assert load_config().eval.privacy_audit.enabled is True
    from raydiff.cli import main

    scenario = tmp_path / "s.yaml"
    scenario.write_text("run: {max_updates: 2}\n")
    assert main(["run", str(scenario), "--set", "eval.privacy_audit.noise_draws=0", "--out", str(tmp_path / "r")]) == 2
    assert "eval.privacy_audit.noise_draws" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_cli_audit(capsys, tmp_path):
    """``raydiff audit RUN``: a run folder made by hand (config.yaml, an untrained UNet, a summary.json) gets
    privacy.parquet, privacy.png and the audit's fields merged into summary.json; a folder that is not a run
    is refused with exit 2."""
    from raydiff.cli import main
    from raydiff.config_load import dump_yaml

    cfg = load_config(
        {
            "seed": 4,
            "data": {"dataset": "synthetic", "synthetic_size": 120, "synthetic_classes": 3},
            "clients": {"num_clients": 3},
            "model": {"num_train_timesteps": 10},
            "eval": {"num_samples": 5, "privacy_audit": {"timesteps": 2, "noise_draws": 1}},
        }
    )
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_yaml(cfg))
    (run / "summary.json").write_text(json.dumps({"final_version": 3}))
    build_unet(cfg.model, 8, 1, seed=0).save_pretrained(str(run / "model" / "unet"))
    assert main(["audit", str(run)]) == 0
    printed = json.loads(capsys.readouterr().out)
    summary = json.loads((run / "summary.json").read_text())
    assert summary["final_version"] == 3 and summary["mia_auc"] == printed["mia_auc"]
    assert summary["privacy_audit_samples"] == 5 and summary["mia_num_members"] > 0
    assert len(pd.read_parquet(run / "privacy.parquet")) == 3 and (run / "privacy.png").is_file()
    assert main(["audit", str(tmp_path / "nothing")]) == 2
    assert "not a finished run folder" in capsys.readouterr().err


# --- server_beta1 / server_beta2 say which optimizers use them ----------------------------------------------


def test_server_beta_comments_name_the_optimizers_that_use_them():
    """The comment after each field in config.py names exactly the server optimizers whose step it changes
    (fedadagrad uses beta1's momentum and ignores beta2; the old comments said the opposite)."""
    from raydiff.strategies.server_opt import SERVER_OPTIMIZERS, make_server_optimizer

    def step(name: str, beta1: float, beta2: float) -> np.ndarray:
        opt = make_server_optimizer(name, 0.1, beta1=beta1, beta2=beta2)
        x = np.zeros(3, np.float32)
        for d in ([1.0, -2.0, 0.5], [0.3, 0.1, -1.0]):
            opt.step(x, np.array(d, np.float32))
        return x

    source = (ROOT / "raydiff" / "config.py").read_text()
    for field, other in (("server_beta1", dict(beta1=0.5, beta2=0.99)), ("server_beta2", dict(beta1=0.9, beta2=0.5))):
        users = {n for n in SERVER_OPTIMIZERS if not np.array_equal(step(n, 0.9, 0.99), step(n, **other))}
        comment = re.search(rf"^\s+{field}: float = [^#]*#([^\n]*)$", source, re.M).group(1)
        named = set(re.findall(r"\b(?:sgd|fedavgm|fedadagrad|fedadam|fedyogi)\b", comment.split("(")[0]))
        assert named == users, (field, named, users)
