"""analysis.reevaluate: a finished run's final model scored again under other eval settings, reading only."""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY

import raydiff
from analysis import reevaluate


@pytest.fixture(scope="module")
def finished(ray_session, tmp_path_factory):
    """A sweep-like folder holding one tiny finished run (DDPM samples with the model's 20 steps)."""
    cfg = copy.deepcopy(TINY)
    cfg["eval"] = dict(cfg["eval"], sampler="ddpm", fid_num_samples=16)
    root = tmp_path_factory.mktemp("sweep")
    raydiff.run(cfg, out=root / "tiny-s3", progress=False)
    return root


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
            h.update(str(p.stat().st_mtime_ns).encode())
    return h.hexdigest()


def test_own_settings_reproduce_the_runs_final_metrics(finished, tmp_path):
    summary = json.loads((finished / "tiny-s3" / "summary.json").read_text())
    before = _digest(finished)
    out = tmp_path / "same.csv"
    assert reevaluate.main([str(finished), "--out", str(out), "--threads", "1"]) == 0
    row = pd.read_csv(out).iloc[0]
    assert row["run"] == "tiny-s3" and row["model_sha256"] == summary["model_sha256"]
    for key in ("final_heldout_loss", "final_fid_domain", "final_recall", "judge_mean_confidence"):
        assert key in summary, key
        assert row[key] == pytest.approx(summary[key], rel=1e-5, abs=1e-7), key
    assert row["eval_sampler"] == "ddpm" and row["eval_sample_steps_used"] == 20
    assert _digest(finished) == before  # nothing in the run folder was written or touched


def test_a_sampler_override_changes_fid_but_not_the_loss(finished, tmp_path):
    summary = json.loads((finished / "tiny-s3" / "summary.json").read_text())
    rows = reevaluate.reevaluate(
        finished, ["eval.sampler=ddim", "eval.sample_steps=4"], threads=1, progress=False
    ).iloc[0]
    assert rows["eval_sampler"] == "ddim" and rows["eval_sample_steps_used"] == 4
    assert rows["final_heldout_loss"] == pytest.approx(summary["final_heldout_loss"], rel=1e-6)
    assert rows["final_fid_domain"] != pytest.approx(summary["final_fid_domain"], rel=1e-6)


@pytest.mark.parametrize(
    "args, words",
    [
        (["--set", "train.lr=0.1"], "only eval.<key>=<value>"),
        (["--set", "eval.sampler"], "only eval.<key>=<value>"),
        (["--set", "eval.sampler=euler"], "sampler"),
        (["--glob", "nothing-*"], "matches 'nothing-*'"),
    ],
)
def test_bad_arguments_exit_2_with_a_message_and_write_nothing(finished, tmp_path, capsys, args, words):
    out = tmp_path / "x.csv"
    before = _digest(finished)
    assert reevaluate.main([str(finished), "--out", str(out), *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("analysis.reevaluate: ") and words in err and "Traceback" not in err
    assert not out.exists() and _digest(finished) == before


def test_output_inside_a_run_folder_is_refused(finished, capsys):
    before = _digest(finished)
    out = finished / "tiny-s3" / "scores.csv"
    assert reevaluate.main([str(finished), "--out", str(out)]) == 2
    assert "inside a run folder" in capsys.readouterr().err
    assert not out.exists() and _digest(finished) == before


def test_a_model_that_is_not_the_one_summarized_is_refused(finished, tmp_path):
    import shutil

    copy_ = tmp_path / "copy" / "tiny-s3"
    shutil.copytree(finished / "tiny-s3", copy_)
    summary = json.loads((copy_ / "summary.json").read_text())
    summary["model_sha256"] = "0" * 64
    (copy_ / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(reevaluate.ReevaluateError, match="hash differs"):
        reevaluate.reevaluate(copy_.parent, [], progress=False)


def test_an_exported_ema_without_the_global_model_is_refused(finished, tmp_path):
    # the run's final metrics score the global model; model/ then holds the EMA, which is another model
    import shutil

    copy_ = tmp_path / "ema" / "tiny-s3"
    shutil.copytree(finished / "tiny-s3", copy_)
    summary = json.loads((copy_ / "summary.json").read_text())
    summary["exported_model"] = "ema"
    (copy_ / "summary.json").write_text(json.dumps(summary))
    with pytest.raises(reevaluate.ReevaluateError, match="holds the EMA"):
        reevaluate.reevaluate(copy_.parent, [], progress=False)
