"""The privacy audit (raydiff/privacy/audit.py): its statistics against sklearn and hand-computed numbers, the
attack against models whose leakage is known (a denoiser that memorised its training set, one that learned
nothing), memorisation on copies, and the rebuild from a run folder."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score, roc_curve

from raydiff.errors import ConfigError
from raydiff.privacy.audit import (
    PER_CLIENT_COLUMNS,
    SUMMARY_FIELDS,
    AuditOptions,
    audit_model,
    audit_run_folder,
    class_matching_weights,
    membership_auc,
    membership_scores,
    memorization,
    nearest_distances,
    tpr_at_fpr,
    write_audit,
)


class TestStatistics:
    def test_auc_hand_computed_with_ties_and_weights(self):
        """members (3, 1), non-members (2, 1): pairs 3>2, 3>1, 1<2, 1=1 (half) -> 2.5/4. Non-member weights
        (1, 3): (1 + 3 + 0 + 0.5*3) / (2 * 4) = 5.5/8."""
        assert membership_auc(np.array([3.0, 1.0]), np.array([2.0, 1.0])) == 0.625
        assert membership_auc(np.array([3.0, 1.0]), np.array([2.0, 1.0]), np.array([1.0, 3.0])) == 0.6875

    @pytest.mark.parametrize("weighted", [False, True])
    def test_auc_matches_sklearn(self, weighted):
        """Integer scores force many ties; sklearn's trapezoidal ROC area counts them 1/2 as Mann-Whitney does."""
        rng = np.random.default_rng(0)
        a, b = rng.integers(0, 12, 300).astype(float) + 1, rng.integers(0, 12, 170).astype(float)
        w = rng.uniform(0, 3, len(b)) if weighted else None
        y = np.r_[np.ones(len(a)), np.zeros(len(b))]
        sw = None if w is None else np.r_[np.ones(len(a)), w]
        assert membership_auc(a, b, w) == pytest.approx(roc_auc_score(y, np.r_[a, b], sample_weight=sw), abs=1e-12)

    @pytest.mark.parametrize("seed", [0, 1, 2])
    def test_tpr_at_fpr_matches_sklearn_roc_curve(self, seed):
        rng = np.random.default_rng(seed)
        a, b = rng.normal(0.8, 1, 400), rng.normal(0, 1, 250)
        a[:5] = b[:5]  # some ties across the groups
        fpr, tpr, _ = roc_curve(np.r_[np.ones(len(a)), np.zeros(len(b))], np.r_[a, b], drop_intermediate=False)
        for target in (0.0, 0.01, 0.1):
            assert tpr_at_fpr(a, b, target) == pytest.approx(tpr[fpr <= target].max(), abs=1e-12)

    def test_tpr_at_fpr_hand_computed(self):
        """Non-members 0..99, members (99.5, 98.5, 96.5). FPR 0: tau = 99.5 catches one member (1/3). FPR 1%:
        tau = 98.5 lets one non-member (99) through and catches two (2/3); 2% adds nothing; 3%: tau = 96.5,
        non-members 97, 98, 99 through, all members caught."""
        b, a = np.arange(100.0), np.array([99.5, 98.5, 96.5])
        assert tpr_at_fpr(a, b, 0.0) == pytest.approx(1 / 3)
        assert tpr_at_fpr(a, b, 0.01) == pytest.approx(2 / 3)
        assert tpr_at_fpr(a, b, 0.02) == pytest.approx(2 / 3)
        assert tpr_at_fpr(a, b, 0.03) == pytest.approx(1.0)

    def test_class_matching_weights(self):
        """members (0, 0, 1): p = (2/3, 1/3); non-members (0, 1, 1, 1): p = (1/4, 3/4) -> w = (8/3, 4/9, 4/9, 4/9)."""
        w = class_matching_weights(np.array([0, 0, 1]), np.array([0, 1, 1, 1]))
        np.testing.assert_allclose(w, [8 / 3, 4 / 9, 4 / 9, 4 / 9])
        assert class_matching_weights(np.array([1]), np.array([0, 1])).tolist() == [0.0, 2.0]

    def test_nearest_distances_brute_force_and_leave_one_out(self):
        from scipy.spatial.distance import cdist

        rng = np.random.default_rng(3)
        q, r = rng.normal(size=(7, 1, 3, 3)), rng.normal(size=(20, 1, 3, 3))
        d = cdist(q.reshape(7, -1), r.reshape(20, -1))
        np.testing.assert_allclose(nearest_distances(q, r, chunk=3), d.min(1), rtol=1e-9)
        own = np.arange(20)
        dd = cdist(r.reshape(20, -1), r.reshape(20, -1))
        np.fill_diagonal(dd, np.inf)
        np.testing.assert_allclose(nearest_distances(r, r, self_index=own, chunk=6), dd.min(1), rtol=1e-9)

    def test_memorization_on_copies_and_on_fresh_images(self):
        rng = np.random.default_rng(4)
        train = rng.uniform(-1, 1, (200, 1, 4, 4)).astype(np.float32)
        held = rng.uniform(-1, 1, (50, 1, 4, 4)).astype(np.float32)
        copies = train[:10] + np.float32(0.01)
        ratios, null = memorization(copies, train, held, np.random.default_rng(0))
        assert (ratios < 0.05).all()  # 0.04 away from their original, ~2 from anything held out
        fresh = rng.uniform(-1, 1, (40, 1, 4, 4)).astype(np.float32)
        ratios, _ = memorization(fresh, train, held, np.random.default_rng(0))
        assert 0.5 < np.median(ratios) < 1.0  # more training images than held-out ones: below 1, not extracted
        assert len(null) == 50 and np.isfinite(null).all()


class Oracle(torch.nn.Module):
    """A denoiser that memorised ``train`` exactly: it returns the noise that maps the training image
    nearest to its input onto it. On members at small t it is nearly exact; on non-members it is wrong.
    ``blind`` = it predicts zeros: nothing learned, nothing leaked."""

    def __init__(self, train: np.ndarray, scheduler, blind: bool = False) -> None:
        super().__init__()
        self.train_x = torch.from_numpy(train)
        self.abar = scheduler.alphas_cumprod
        self.blind = blind

    def forward(self, x: torch.Tensor, t: torch.Tensor):
        if self.blind:
            return SimpleNamespace(sample=torch.zeros_like(x))
        a = self.abar[t].view(-1, 1, 1, 1).float()
        x0_guess = x / a.sqrt()
        d = torch.cdist(x0_guess.flatten(1), self.train_x.flatten(1))
        x0 = self.train_x[d.argmin(1)]
        return SimpleNamespace(sample=(x - a.sqrt() * x0) / (1 - a).sqrt())


def synthetic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    return rng.uniform(-1, 1, (n, 1, 4, 4)).astype(np.float32), labels


@pytest.fixture(scope="module")
def scheduler():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2")


OPTS = AuditOptions(timesteps=3, noise_draws=2, t_range=(0.02, 0.1), batch_size=64)


class TestAttack:
    def test_memorising_model_is_caught_and_blind_model_is_not(self, scheduler):
        train, tl = synthetic(120, 0)
        held, hl = synthetic(80, 1)
        parts = [np.arange(0, 10), np.arange(10, 120)]
        samples = train[:8].copy()  # a memorising generator: copies of training images
        res = audit_model(
            Oracle(train, scheduler),
            scheduler,
            train,
            held,
            samples,
            seed=0,
            parts=parts,
            train_labels=tl,
            held_labels=hl,
            options=OPTS,
        )
        assert res.mia_auc > 0.99 and res.mia_tpr_at_1pct_fpr > 0.9
        assert res.extraction_rate == 1.0 and res.memorization_ratio_median == 0.0
        assert res.per_client["mia_auc"].min() > 0.99
        blind = audit_model(
            Oracle(train, scheduler, blind=True),
            scheduler,
            train,
            held,
            held[:8] + 0.3,
            seed=0,
            parts=parts,
            train_labels=tl,
            held_labels=hl,
            options=OPTS,
        )
        assert abs(blind.mia_auc - 0.5) < 3 * blind.mia_auc_se  # no leak: 0.5 within its error
        assert blind.extraction_rate == 0.0

    def test_per_client_table_and_files(self, scheduler, tmp_path):
        train, tl = synthetic(60, 2)
        held, hl = synthetic(30, 3)
        parts = [np.arange(0, 5), np.arange(5, 25), np.arange(25, 60)]
        opts = AuditOptions(num_members=40, timesteps=2, noise_draws=1, t_range=(0.05, 0.1))
        res = audit_model(
            Oracle(train, scheduler),
            scheduler,
            train,
            held,
            train[:4],
            seed=7,
            parts=parts,
            train_labels=tl,
            held_labels=hl,
            options=opts,
        )
        pc = res.per_client
        assert list(pc.columns) == list(PER_CLIENT_COLUMNS)
        assert pc["client_id"].tolist() == [0, 1, 2] and pc["num_samples"].tolist() == [5, 20, 35]
        assert pc["num_scored"].sum() == res.mia_num_members == 40  # a seeded subset of 40 members
        assert res.mia_num_nonmembers == 30
        assert set(res.summary()) == set(SUMMARY_FIELDS)
        write_audit(res, tmp_path)
        back = pd.read_parquet(tmp_path / "privacy.parquet")
        pd.testing.assert_frame_equal(back, pc)
        assert (tmp_path / "privacy.png").stat().st_size > 10_000
        assert not list(tmp_path.glob("*.tmp"))

    def test_a_diverged_model_is_audited_not_crashed_on(self, scheduler, tmp_path):
        """NaN predictions and NaN samples (a model blown up by noise): every score ties at -inf, so AUC 0.5;
        the memorisation numbers are NaN rather than made up, and the files are still written."""

        class Diverged(torch.nn.Module):
            def forward(self, x, t):
                return SimpleNamespace(sample=torch.full_like(x, float("nan")))

        train, tl = synthetic(30, 8)
        held, hl = synthetic(20, 9)
        nan_samples = np.full((4, 1, 4, 4), np.nan, np.float32)
        res = audit_model(
            Diverged(),
            scheduler,
            train,
            held,
            nan_samples,
            seed=0,
            parts=[np.arange(30)],
            train_labels=tl,
            held_labels=hl,
            options=OPTS,
        )
        assert res.mia_auc == 0.5
        assert math.isnan(res.memorization_ratio_median) and math.isnan(res.extraction_rate)
        write_audit(res, tmp_path)
        assert (tmp_path / "privacy.png").is_file()

    def test_deterministic_given_the_seed(self, scheduler):
        train, _ = synthetic(40, 5)
        held, _ = synthetic(20, 6)
        net = Oracle(train, scheduler)
        a = membership_scores(net, scheduler, np.concatenate([train, held]), 11, OPTS)
        b = membership_scores(net, scheduler, np.concatenate([train, held]), 11, OPTS)
        c = membership_scores(net, scheduler, np.concatenate([train, held]), 12, OPTS)
        assert a.tobytes() == b.tobytes() and a.tobytes() != c.tobytes()


class TestOptions:
    def test_timestep_grid(self):
        assert AuditOptions().timestep_grid(1000) == [50, 100, 150, 200, 250, 300]
        assert AuditOptions(timesteps=1, t_range=(0.1, 0.3)).timestep_grid(1000) == [200]

    @pytest.mark.parametrize(
        "field, value",
        [
            ("num_members", 1),
            ("num_nonmembers", 0),
            ("timesteps", 0),
            ("noise_draws", 0),
            ("t_range", (0.3, 0.1)),
            ("t_range", (0.1, 1.0)),
            ("t_range", (math.nan, 0.2)),
            ("t_range", (0.1,)),
            ("num_samples", 0),
            ("extraction_threshold", math.inf),
            ("extraction_threshold", math.nan),
            ("extraction_threshold", 0.0),
            ("batch_size", 0),
            ("num_threads", 0),
        ],
    )
    def test_bad_values_name_the_field(self, field, value):
        with pytest.raises(ConfigError, match=f"eval.privacy_audit.{field}"):
            AuditOptions(**{field: value})

    def test_builds_from_yaml_like_the_rest_of_the_config(self):
        """The loader raydiff.load_config uses for every section: lists become tuples, ints floats, names checked."""
        from raydiff.config_load import build

        opts = build(AuditOptions, {"t_range": [0, 0.2], "num_samples": None, "timesteps": 3}, "eval.privacy_audit")
        assert opts == AuditOptions(t_range=(0.0, 0.2), timesteps=3)
        with pytest.raises(ConfigError, match=r"eval\.privacy_audit\.t_rang"):
            build(AuditOptions, {"t_rang": [0, 0.2]}, "eval.privacy_audit")
        with pytest.raises(ConfigError, match=r"eval\.privacy_audit\.t_range"):
            build(AuditOptions, {"t_range": [0.1, 0.2, 0.3]}, "eval.privacy_audit")


def test_audit_run_folder_rebuilds_the_run(tmp_path):
    """A run folder made by hand (config.yaml, an untrained tiny UNet in model/unet): the audit rebuilds the
    same hold-out split and partition as the runner (per-client sizes), samples with the run's sampler and
    writes privacy.parquet and privacy.png."""
    from raydiff.config_load import dump_yaml, load_config
    from raydiff.data import load_dataset, partition, split_holdout
    from raydiff.model import build_unet

    cfg = load_config(
        {
            "name": "aud",
            "seed": 4,
            "data": {"dataset": "synthetic", "synthetic_size": 120, "synthetic_classes": 3},
            "clients": {"num_clients": 3},
            "model": {"num_train_timesteps": 10},
            "eval": {"num_samples": 5},
        }
    )
    (tmp_path / "config.yaml").write_text(dump_yaml(cfg))
    build_unet(cfg.model, 8, 1, seed=0).save_pretrained(str(tmp_path / "model" / "unet"))
    res = audit_run_folder(tmp_path, AuditOptions(timesteps=2, noise_draws=1))
    ds = load_dataset(cfg.data)
    train, held = split_holdout(ds, cfg.data.holdout_fraction, np.random.default_rng([cfg.seed, 6]))
    parts = partition(train.labels, 3, cfg.data.partition, cfg.data.beta, np.random.default_rng([cfg.seed, 5]))
    assert res.per_client["num_samples"].tolist() == [len(p) for p in parts]
    assert res.mia_num_members == len(train.images) and res.mia_num_nonmembers == len(held.images)
    assert res.privacy_audit_samples == 5
    assert (tmp_path / "privacy.parquet").is_file() and (tmp_path / "privacy.png").is_file()
