"""The privacy labels a run prints (issue 26, points 10-13): FedBuff is not uniform selection, the uniformity test
reads every client, a data-dependent rejection is refused beside DP, and the noise can be made secret."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import raydiff
from raydiff.cli import main
from raydiff.privacy.accounting import (
    privacy_over_versions,
    sampled_epsilon,
    selection_is_uniform,
    uniform_selection_p,
    uniform_selection_p_low,
)
from raydiff.strategies import build_strategy

ROOT = Path(__file__).parent.parent
QUICKSTART = ROOT / "scenarios" / "quickstart.yaml"
DELTA = 1e-5


def _dry(tmp_path: Path, *sets: str) -> raydiff.RunResult:
    return raydiff.run(
        QUICKSTART, ["strategy.dp.enabled=true", "run.dry_run=true", *sets], out=tmp_path / "r", progress=False
    )


def test_fedbuff_dp_dry_run_of_the_quickstart_is_not_uniform_selection(tmp_path):
    """Acceptance: FedBuff fills buffers with whoever finishes first (a client in version v is in v+1 with
    probability 0.003, against 0.40 overall), though its counts look uniform; q is the busiest client's rate."""
    s = _dry(tmp_path).summary
    assert s["uniform_selection"] is False
    assert s["sample_rate"] == pytest.approx(s["participations_max"] / s["final_version"]) and s["sample_rate"] > 0.4
    assert s["epsilon_sampled"] == pytest.approx(sampled_epsilon(1.0, s["sample_rate"], s["final_version"], DELTA))
    ev = pd.read_parquet(tmp_path / "r" / "events.parquet")
    (counts_only,) = privacy_over_versions(ev, 10, 1.0, DELTA, [s["final_version"]])
    assert counts_only.uniform_selection  # the counts alone cannot see it: the schedule decides


def test_over_selection_at_20_versions_reports_the_busiest_clients_rate(tmp_path):
    """Acceptance (the issue's run): FedAvg, 5 of 10 per round, over_selection 0.8 (9 selected, the first 5 kept),
    20 rounds: the fast clients join 17 of 20 rounds, two clients never. The busiest alone passes the old test
    (P = 0.013 > 1%, read as uniform with q = 0.5); the schedule and the least busy clients both reject it."""
    s = _dry(
        tmp_path,
        "strategy.name=fedavg",
        "strategy.clients_per_round=5",
        "strategy.over_selection=0.8",
        "run.max_updates=20",
    ).summary
    assert s["final_version"] == 20 and s["uniform_selection"] is False
    assert s["sample_rate"] == s["participations_max"] / 20 == 0.85
    ev = pd.read_parquet(tmp_path / "r" / "events.parquet")
    (counts_only,) = privacy_over_versions(ev, 10, 1.0, DELTA, [20])
    assert uniform_selection_p(17, 20, 0.5, 10) > 0.01 and not counts_only.uniform_selection
    assert counts_only.sample_rate == 0.85


def _events(counts: list[int], versions: int, per_version: int) -> pd.DataFrame:
    """Applied updates with these per-client counts, ``per_version`` distinct clients in each version."""
    left = np.array(counts)
    rows = []
    for v in range(1, versions + 1):
        picked = np.argsort(-left, kind="stable")[:per_version]
        assert (left[picked] > 0).all()
        left[picked] -= 1
        rows += [dict(client_id=int(c), status="applied", applied_version=v) for c in picked]
    assert not left.any()
    return pd.DataFrame(rows)


def test_clients_that_never_joined_make_the_counts_non_uniform():
    """10 clients, 5 per version, 20 versions; 3 clients never joined, the busiest joined 17. The busiest alone
    passes (P = 0.013 > 1%), which the old test read as uniform; the least busy (0) does not."""
    ev = _events([17, 17, 15, 15, 12, 12, 12, 0, 0, 0], 20, 5)
    assert uniform_selection_p(17, 20, 0.5, 10) > 0.01  # what the busiest-only test saw
    assert uniform_selection_p_low(0, 20, 0.5, 10) < 1e-4
    (p,) = privacy_over_versions(ev, 10, 1.0, DELTA, [20])
    assert not p.uniform_selection and p.sample_rate == p.sample_rate_max == 0.85 and p.sample_rate_mean == 0.5


def test_balanced_counts_stay_uniform_and_the_schedule_can_overrule_them():
    ev = _events([10] * 10, 20, 5)
    (p,) = privacy_over_versions(ev, 10, 1.0, DELTA, [20])
    assert p.uniform_selection and p.sample_rate == 0.5
    (q,) = privacy_over_versions(ev, 10, 1.0, DELTA, [20], selection_uniform=False)
    assert not q.uniform_selection and q.sample_rate == q.sample_rate_max == 0.5


@pytest.mark.parametrize(
    "round_based, over, deadline, avail, expected",
    [
        (True, 0.0, None, "always", True),
        (False, 0.0, None, "always", False),  # FedBuff, FedAsync: whoever finishes first
        (True, 0.5, None, "always", False),
        (True, 0.0, 2.0, "always", False),
        (True, 0.0, None, "bernoulli", False),
    ],
)
def test_uniform_by_design(round_based, over, deadline, avail, expected):
    assert selection_is_uniform(round_based, over, deadline, avail) is expected


def test_dp_with_a_rejecting_norm_bound_is_refused(capsys, tmp_path):
    args = ["run", str(QUICKSTART), "--out", str(tmp_path / "r"), "--set", "strategy.dp.enabled=true"]
    args += ["--set", "strategy.norm_bound=1.0", "--set", "strategy.norm_mode=reject", "--set", "run.dry_run=true"]
    assert main(args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("raydiff: error: strategy.norm_mode: 'reject' cannot be combined with strategy.dp")
    assert not (tmp_path / "r").exists()
    assert main([*args[:-4], "--set", "strategy.norm_mode=clip", "--set", "run.dry_run=true"]) == 0


def _noise(secret: bool, seed_rng: int = 9) -> tuple[np.ndarray, dict]:
    cfg = raydiff.load_config(
        QUICKSTART, ["strategy.dp.enabled=true", f"strategy.dp.secret_noise={str(secret).lower()}"]
    )
    s = build_strategy(cfg.strategy, 10, rng=np.random.default_rng([0, seed_rng]))
    total = np.zeros(64, np.float32)
    s.mechanism.noise_sum(total)  # type: ignore[attr-defined]
    return total, s.state_dict()


def test_secret_noise_is_not_the_seeds_noise():
    a, state = _noise(False)
    b, _ = _noise(False)
    np.testing.assert_array_equal(a, b)  # the default: anyone with config.yaml regenerates it
    c, secret_state = _noise(True)
    d, _ = _noise(True)
    assert not np.array_equal(c, a) and not np.array_equal(c, d)
    assert "bit_generator" in state["mechanism"] and secret_state["mechanism"] == {"secret": True}


def test_the_docs_say_whose_noise_it_is():
    for path in (ROOT / "README.md", ROOT / "docs" / "privacy.md"):
        text = " ".join(path.read_text().split())
        assert "secret_noise: true" in text and "simulated mechanism" in text, path
