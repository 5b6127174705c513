"""Class-conditional DDPM (issue 22) without Ray: training with label dropout, grouped training, guided sampling,
density and coverage against the prdc package, the utility tables, the README's sampling lines, `raydiff sample`."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from raydiff.config import ModelConfig
from raydiff.diffusion import drop_labels, sample_images, train_local
from raydiff.errors import ConfigError
from raydiff.grouped import GroupJob, GroupTrainer, job_inputs
from raydiff.metrics.distances import density_coverage, precision_recall
from raydiff.model import FlatModel, build_scheduler, build_unet
from raydiff.utility import class_grid, per_client_rows, stratified_subset

ROOT = Path(__file__).resolve().parents[1]
COND = ModelConfig(conditional=True, num_train_timesteps=20)
K = 4


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 8, 8)).astype(np.float32), rng.integers(0, K, n)


def _fm(cfg=COND, k=K):
    return FlatModel(build_unet(cfg, 8, 1, seed=0, num_classes=k))


# --- the model ----------------------------------------------------------------------------------------------


def test_conditional_unet_has_a_null_class_and_unconditional_is_unchanged():
    unet = build_unet(COND, 8, 1, seed=0, num_classes=K)
    assert unet.config.num_class_embeds == K + 1  # the last row is "no label"
    plain = build_unet(ModelConfig(num_train_timesteps=20), 8, 1, seed=0, num_classes=K)
    assert plain.config.num_class_embeds is None
    ref = build_unet(ModelConfig(num_train_timesteps=20), 8, 1, seed=0)
    for a, b in zip(plain.parameters(), ref.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ConfigError, match="at least two classes"):
        build_unet(COND, 8, 1, seed=0, num_classes=1)


def test_label_dropout_rate_and_determinism():
    y = torch.zeros(20000, dtype=torch.long)
    a = drop_labels(y, torch.Generator().manual_seed(1), 0.1, 9)
    b = drop_labels(y, torch.Generator().manual_seed(1), 0.1, 9)
    assert torch.equal(a, b)
    assert set(a.unique().tolist()) == {0, 9}
    assert abs(float((a == 9).float().mean()) - 0.1) < 0.01
    assert (drop_labels(y, torch.Generator().manual_seed(1), 0.0, 9) == 0).all()


def test_unconditional_training_draws_nothing_more_from_the_job_generator():
    """The unconditional path must stay bit-identical: its generator ends where noise and timesteps leave it."""
    x, _ = _data()
    cfg = ModelConfig(num_train_timesteps=20)
    fm, sched = _fm(cfg), build_scheduler(cfg)
    batches, gen = job_inputs(5, np.arange(len(x)), 8, 3, "cpu")
    train_local(fm, sched, x, batches, 2e-3, gen)
    _, ref = job_inputs(5, np.arange(len(x)), 8, 3, "cpu")
    for _ in range(3):
        torch.randn((8, 1, 8, 8), generator=ref)
        torch.randint(0, 20, (8,), generator=ref)
    assert torch.equal(gen.get_state(), ref.get_state())


def test_conditional_training_is_seeded_and_uses_the_labels():
    x, y = _data()
    sched = build_scheduler(COND)

    def job(labels, p=0.1, seed=5):
        fm = _fm()
        batches, gen = job_inputs(seed, np.arange(len(x)), 8, 3, "cpu")
        loss, _ = train_local(fm, sched, x, batches, 2e-3, gen, labels=labels, label_dropout=p, null_label=K)
        return fm.vector(), loss

    a, la = job(y)
    b, lb = job(y)
    assert np.array_equal(a, b) and la == lb  # a function of (start, data, labels, seed)
    assert not np.array_equal(a, job((y + 1) % K)[0])  # the labels are trained on
    assert not np.array_equal(job(y, p=0.5)[0], job(y, p=0.0)[0])  # the dropout draws change the labels seen


def test_grouped_conditional_training_matches_jobs_alone():
    x, y = _data()
    sched = build_scheduler(COND)
    fm = _fm()
    start = fm.vector()
    alone = []
    for seed, steps in ((1, 3), (2, 2)):
        fm.load(start)
        batches, gen = job_inputs(seed, np.arange(len(x)), 8, steps, "cpu")
        train_local(fm, sched, x, batches, 2e-3, gen, labels=y, label_dropout=0.2, null_label=K)
        alone.append(fm.vector())
    trainer = GroupTrainer(fm, sched, 2)
    jobs = [GroupJob(start, *job_inputs(s, np.arange(len(x)), 8, n, "cpu")) for s, n in ((1, 3), (2, 2))]
    out = trainer.train(jobs, x, 2e-3, 0.0, y, 0.2, K)
    for o, a in zip(out, alone):  # float rounding of the batched convolutions only (test_grouped.py's tolerance)
        dg, da = o.vector - start, a - start
        assert np.linalg.norm(dg - da) / np.linalg.norm(da) < 1e-3
    assert np.linalg.norm(out[0].vector - out[1].vector) > 1e-2 * np.linalg.norm(alone[0] - start)
    fresh = GroupJob(start, *job_inputs(1, np.arange(len(x)), 8, 3, "cpu"))  # a generator not yet drawn from
    one = trainer.train([fresh], x, 2e-3, 0.0, y, 0.2, K)[0]
    assert np.array_equal(one.vector, alone[0])  # a group of one is train_local itself


# --- sampling -------------------------------------------------------------------------------------------------


def test_guided_sampling_ends_at_its_two_limits():
    fm, sched = _fm(), build_scheduler(COND)
    labels = np.array([0, 1, 2, 3])
    null = np.full(4, K)
    uncond = sample_images(fm.module, sched, 4, 3, "ddim", 5, class_labels=null, guidance_scale=1.0)
    w0 = sample_images(fm.module, sched, 4, 3, "ddim", 5, class_labels=labels, guidance_scale=0.0)
    cond = sample_images(fm.module, sched, 4, 3, "ddim", 5, class_labels=labels, guidance_scale=1.0)
    w2 = sample_images(fm.module, sched, 4, 3, "ddim", 5, class_labels=labels, guidance_scale=2.0)
    assert np.allclose(w0, uncond, atol=1e-5)  # weight 0: the "no label" model
    assert not np.allclose(cond, uncond, atol=1e-3)
    assert not np.allclose(w2, cond, atol=1e-3)
    with pytest.raises(ValueError, match="no class embedding"):
        sample_images(_fm(ModelConfig(num_train_timesteps=20)).module, sched, 4, 3, "ddim", 5, class_labels=labels)
    with pytest.raises(ValueError, match="class labels must be in"):
        sample_images(fm.module, sched, 1, 3, "ddim", 5, class_labels=np.array([K + 1]))


def test_class_grid_has_one_row_per_class():
    images = np.stack([np.full((1, 2, 2), v, np.float32) for v in (0.1, 0.2, 0.3, 0.4, 0.5)])
    labels = np.array([2, 0, 2, 2, 1])
    g = class_grid(images, labels, 3, 2).reshape(3, 2, 1, 2, 2)
    assert g[0, 0, 0, 0, 0] == pytest.approx(0.2) and g[0, 1].max() == -1  # class 0: one image, one blank
    assert g[1, 0, 0, 0, 0] == pytest.approx(0.5)
    assert [g[2, i, 0, 0, 0] for i in range(2)] == pytest.approx([0.1, 0.3])  # at most per_row per class


# --- metrics ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_density_coverage_precision_recall_match_prdc(seed, capsys):
    prdc = pytest.importorskip("prdc")
    rng = np.random.default_rng(seed)
    real = rng.standard_normal((120, 8))
    fake = rng.standard_normal((90, 8)) * 1.3 + 0.4
    ref = prdc.compute_prdc(real, fake, nearest_k=5)
    d, c = density_coverage(real, fake, 5)
    assert d == pytest.approx(ref["density"], rel=1e-12) and c == pytest.approx(ref["coverage"], rel=1e-12)
    ref3 = prdc.compute_prdc(real, fake, nearest_k=3)
    p, r = precision_recall(real, fake, 3)
    assert p == pytest.approx(ref3["precision"]) and r == pytest.approx(ref3["recall"])
    assert 0 < c < 1 and d > 0  # a shifted, wider fake set: neither degenerate


def test_density_is_one_and_coverage_high_for_samples_like_the_real_ones():
    rng = np.random.default_rng(2)
    real = rng.standard_normal((2000, 2))
    d, c = density_coverage(real, rng.standard_normal((2000, 2)), 5)
    assert abs(d - 1) < 0.1 and c > 0.95
    d, c = density_coverage(real, np.zeros((100, 2)) + 0.01, 5)  # a collapsed generator
    assert c < 0.05


def test_per_client_rows_weight_the_classes_a_client_holds():
    labels = np.array([0, 0, 1, 1, 2, 2, 2, 2])
    parts = [np.array([0, 1]), np.array([2, 4, 5, 6])]
    per_class = [
        dict(label_fidelity=1.0, utility_accuracy=0.9, fid=1.0, precision=1, recall=1, density=1, coverage=1),
        dict(label_fidelity=0.5, utility_accuracy=0.6, fid=3.0, precision=1, recall=1, density=1, coverage=1),
        dict(label_fidelity=0.0, utility_accuracy=np.nan, fid=5.0, precision=1, recall=1, density=1, coverage=1),
    ]
    rows = per_client_rows(parts, labels, per_class, 3, speeds=[1.0, 2.0], slow_classes=(0,))
    assert rows[0]["share_0"] == 1.0 and rows[0]["label_fidelity"] == 1.0 and rows[0]["slow_share"] == 1.0
    assert rows[1]["share_1"] == 0.25 and rows[1]["share_2"] == 0.75
    assert rows[1]["label_fidelity"] == pytest.approx(0.25 * 0.5)
    assert rows[1]["fid"] == pytest.approx(0.25 * 3 + 0.75 * 5)
    assert rows[1]["utility_accuracy"] == pytest.approx(0.6)  # NaN classes left out, weights renormalised
    assert rows[1]["speed"] == 2.0


def test_stratified_subset_takes_per_class():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 7)
    pick = stratified_subset(labels, 5, 3, np.random.default_rng(0))
    assert np.bincount(labels[pick]).tolist() == [5, 3, 5]


# --- the exported model: README lines and `raydiff sample` -------------------------------------------------------


def _readme_snippet() -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- conditional-sampling -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md lost its conditional sampling lines (marked <!-- conditional-sampling -->)"
    return m.group(1)


def run_readme_snippet(model_dir: Path, cwd: Path, tail: str) -> None:
    """Run the README's conditional sampling lines, as printed, on ``model_dir``, then ``tail`` (checks)."""
    code = _readme_snippet().replace('"runs/my-conditional-run/model"', repr(str(model_dir)))
    res = subprocess.run([sys.executable, "-c", code + tail], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]


@pytest.fixture(scope="module")
def saved_conditional(tmp_path_factory):
    """A conditional model folder written exactly as a run writes model/ (outputs.save_pipeline)."""
    from raydiff.outputs import save_pipeline

    run = tmp_path_factory.mktemp("cond-run")
    cfg = ModelConfig(conditional=True, num_train_timesteps=20)
    save_pipeline(run / "model", build_unet(cfg, 8, 1, seed=0, num_classes=10), build_scheduler(cfg))
    return run


def test_readme_lines_sample_one_class_from_a_saved_model(saved_conditional, tmp_path):
    assert len(_readme_snippet().strip().splitlines()) <= 16
    run_readme_snippet(
        saved_conditional / "model", tmp_path, "\nimport numpy as np\nnp.save('out.npy', images.numpy())\n"
    )
    images = np.load(tmp_path / "out.npy")
    assert images.shape == (8, 1, 8, 8) and np.isfinite(images).all() and images.min() >= -1.0001


def test_sample_command_by_class_and_its_errors(saved_conditional, tmp_path):
    from raydiff.cli import main

    out = tmp_path / "three.png"
    args = ["sample", str(saved_conditional), "--class", "3", "--guidance", "2", "--n", "2", "--sampler", "ddim"]
    assert main([*args, "--steps", "3", "--out", str(out)]) == 0
    assert out.stat().st_size > 100
    grid = tmp_path / "all.png"
    assert (
        main(["sample", str(saved_conditional), "--n", "20", "--sampler", "ddim", "--steps", "2", "--out", str(grid)])
        == 0
    )
    from PIL import Image

    w, h = Image.open(grid).size
    assert h > w  # 10 rows (one per class) of 2
    assert main(["sample", str(saved_conditional), "--class", "10", "--n", "1", "--out", str(out)]) == 2


def test_sample_command_refuses_class_for_an_unconditional_model(tmp_path, capsys):
    from raydiff.cli import main
    from raydiff.outputs import save_pipeline

    cfg = ModelConfig(num_train_timesteps=20)
    save_pipeline(tmp_path / "model", build_unet(cfg, 8, 1, seed=0), build_scheduler(cfg))
    assert main(["sample", str(tmp_path), "--class", "1", "--n", "1", "--out", str(tmp_path / "x.png")]) == 2
    assert "unconditional model" in capsys.readouterr().err


# --- analysis/per_class.py -------------------------------------------------------------------------------------


def _fake_run(path: Path, strategy: str, fidelity: list[float]) -> None:
    import json

    import pandas as pd
    import yaml

    path.mkdir(parents=True)
    (path / "summary.json").write_text(json.dumps({"utility_accuracy": 0.8, "utility_labels": "conditional"}))
    cfg = {"seed": 0, "strategy": {"name": strategy}, "data": {"beta": 0.5}, "clients": {"slow_classes": [0, 1]}}
    (path / "config.yaml").write_text(yaml.safe_dump(cfg))
    rows = [
        dict(version=5, n=10, fid=1.0 + k, precision=0.5, recall=0.5, density=1.0, coverage=0.5, label_fidelity=f)
        | {"class": k, "utility_accuracy": f, "utility_accuracy_real": 0.9, "num_real": 5}
        for k, f in enumerate(fidelity)
    ]
    pd.DataFrame(rows).to_parquet(path / "evals_per_class.parquet")
    pd.DataFrame(
        [
            dict(client_id=0, num_samples=10, slow_share=1.0, label_fidelity=fidelity[0], utility_accuracy=0.5, fid=1),
            dict(client_id=1, num_samples=10, slow_share=0.0, label_fidelity=fidelity[3], utility_accuracy=0.9, fid=2),
        ]
    ).to_parquet(path / "evals_per_client.parquet")


def test_gap_table_and_report_panel(tmp_path):
    import pandas as pd

    from analysis.per_class import gap_table, per_class_section

    _fake_run(tmp_path / "a", "fedavg", [0.9, 0.7, 0.8, 1.0])
    _fake_run(tmp_path / "b", "fedbuff", [0.2, 0.4, 0.8, 0.6])
    g = gap_table(tmp_path).set_index("cfg.strategy.name")
    assert g.loc["fedavg", "label_fidelity_slow"] == pytest.approx(0.8)  # classes 0 and 1, the run's slow classes
    assert g.loc["fedavg", "label_fidelity_gap"] == pytest.approx(0.8 - 0.9)
    assert g.loc["fedbuff", "label_fidelity_gap"] == pytest.approx(0.3 - 0.7)
    assert g.loc["fedbuff", "fid_gap"] == pytest.approx(1.5 - 3.5)
    assert g.loc["fedbuff", "label_fidelity_slow_clients"] == pytest.approx(0.2)
    assert g.loc["fedavg", "condition"] == "beta=0.5"
    html = per_class_section(pd.DataFrame({"run_dir": [str(tmp_path / "a"), str(tmp_path / "b")]}))
    assert 'id="plot-per-class"' in html and "data:image/png;base64," in html
    assert per_class_section(pd.DataFrame({"run_dir": [str(tmp_path / "none")]})) == ""
