"""The strategy API's sharp edges (issue 26, points 1-9): decisions checked when made, an instance recorded so
that its config.yaml reruns it, no strategy.* field silently ignored, state checked before the run, the weight
in events.parquet, clear reasons when a strategy raises or Ray does not start, and a typo reported before
torch is imported."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import raydiff
from raydiff.cli import main
from raydiff.errors import ConfigError
from raydiff.outputs import EXECUTION_COLUMNS
from raydiff.runner import check_config, failure_reason
from raydiff.strategies import FedBuff, StalenessBounded, build_strategy

PLUGINS = Path(__file__).parent / "plugins"
ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(PLUGINS))

from user_strategies import BufferedMean, DeclaredOption, HiddenOption, LatestWins

DRY = {"clients": {"num_clients": 8}, "strategy": {"concurrency": 4}, "run": {"dry_run": True, "max_updates": 20}}
ENV = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", RAY_USAGE_STATS_ENABLED="0", RAYDIFF_NO_PROGRESS="1")


def _cli_error(capsys, monkeypatch, *sets: str, scenario: str = "scenarios/quickstart.yaml") -> str:
    monkeypatch.chdir(PLUGINS)
    args = ["run", str(ROOT / scenario), "--no-progress", "--out", str(PLUGINS / "never-written")]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("raydiff: error: ") and "Traceback" not in err
    assert not (PLUGINS / "never-written").exists()
    return " ".join(err.split())


# ---------------------------------------------------------------- 1. decisions
@pytest.mark.parametrize("status", ["buffer", "reject", "Applied", ""])
def test_a_misspelled_decision_status_raises_when_made(status):
    with pytest.raises(ValueError, match="'applied', 'buffered', 'rejected'"):
        raydiff.Decision(status)  # type: ignore[arg-type]


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), "1", None, True])
def test_a_decision_weight_is_a_finite_number(weight):
    with pytest.raises(ValueError, match="weight must be a finite number"):
        raydiff.Decision("applied", weight=weight)  # type: ignore[arg-type]
    assert raydiff.Decision("buffered", weight=np.float32(0.5)).weight == 0.5


# ---------------------------------------------------------------- 2. an instance is recorded by its options
def _sim(path: Path) -> pd.DataFrame:
    ev = pd.read_parquet(path / "events.parquet")
    return ev[[c for c in ev.columns if c not in EXECUTION_COLUMNS]]


def test_an_instance_records_its_options_and_its_config_reruns_it(tmp_path, monkeypatch):
    """k=3 (not the class default 2): before, config.yaml said options: {} and its rerun made versions of 2."""
    first = raydiff.run(DRY, out=tmp_path / "a", progress=False, strategy=BufferedMean(k=3, lr=0.5))
    saved = yaml.safe_load((tmp_path / "a" / "config.yaml").read_text())["strategy"]
    assert saved["name"] == "user_strategies:BufferedMean" and saved["options"] == {"k": 3, "lr": 0.5}
    monkeypatch.chdir(PLUGINS)
    again = raydiff.run(tmp_path / "a" / "config.yaml", out=tmp_path / "b", progress=False)
    pd.testing.assert_frame_equal(_sim(tmp_path / "a"), _sim(tmp_path / "b"))
    ev = _sim(tmp_path / "b")
    assert ev[ev.status == "applied"].groupby("applied_version").size().eq(3).all()
    status = [json.loads((tmp_path / d / "status.json").read_text())["config_sha256"] for d in "ab"]
    assert status[0] == status[1] and first.summary["final_version"] == again.summary["final_version"] == 20


@pytest.mark.slow
def test_an_instance_run_and_its_config_rerun_give_the_same_model_hash(ray_session, tiny_cfg, tmp_path, monkeypatch):
    cfg = dict(tiny_cfg, strategy={"concurrency": 4})
    cfg["eval"] = dict(cfg["eval"], privacy_audit={"enabled": False}, fid=False)
    one = raydiff.run(cfg, out=tmp_path / "a", progress=False, strategy=BufferedMean(k=3, lr=0.7))
    monkeypatch.chdir(PLUGINS)
    two = raydiff.run(tmp_path / "a" / "config.yaml", out=tmp_path / "b", progress=False)
    assert one.summary["model_sha256"] == two.summary["model_sha256"] is not None


def test_options_beside_an_instance_are_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"strategy\.options\.k: given beside a strategy instance"):
        raydiff.run(DRY, ["strategy.options.k=5"], out=tmp_path / "x", progress=False, strategy=BufferedMean())
    assert not (tmp_path / "x").exists()


def test_an_instance_whose_options_cannot_be_read_back_is_refused_unless_it_declares_them(tmp_path):
    with pytest.raises(ConfigError, match=r"option 'rate' cannot be read back.*self\.rate.*options\(\)"):
        raydiff.run(DRY, out=tmp_path / "x", progress=False, strategy=HiddenOption(0.25))
    assert not (tmp_path / "x").exists()
    raydiff.run(DRY, out=tmp_path / "y", progress=False, strategy=DeclaredOption(0.25))
    assert yaml.safe_load((tmp_path / "y" / "config.yaml").read_text())["strategy"]["options"] == {"rate": 0.25}


def test_a_builtin_instance_is_refused_with_the_way_to_name_it(tmp_path):
    with pytest.raises(ConfigError, match="FedBuff instance takes its settings from the strategy section"):
        raydiff.run(DRY, out=tmp_path / "x", progress=False, strategy=FedBuff(2, 1.0, 0.5))


# ---------------------------------------------------------------- 3. no strategy.* field ignored
def test_max_staleness_is_enforced_around_a_user_strategy():
    cfg = raydiff.load_config(DRY, ["strategy.name=user_strategies:LatestWins", "strategy.max_staleness=1"])
    s = build_strategy(cfg.strategy, 8)
    assert isinstance(s, StalenessBounded) and isinstance(s.inner, LatestWins)
    x = np.zeros(2, np.float32)
    old = raydiff.Update(0, 3, 1, np.ones(2, np.float32), np.zeros(2, np.float32))
    d = s.receive(x, 5, old)  # staleness 2 > 1
    assert d.status == "rejected" and d.reason == "stale: staleness 2 > max_staleness 1" and not x.any()
    assert s.receive(x, 4, old).status == "applied" and x.all()
    builtin = build_strategy(raydiff.load_config(DRY, ["strategy.max_staleness=1"]).strategy, 8)
    assert type(builtin) is FedBuff  # the built-ins bound staleness themselves: unchanged


def test_a_dry_run_of_a_user_strategy_rejects_stale_updates(tmp_path, monkeypatch):
    monkeypatch.chdir(PLUGINS)
    res = raydiff.run(
        DRY,
        ["strategy.name=user_strategies:LatestWins", "strategy.max_staleness=0"],
        out=tmp_path / "r",
        progress=False,
    )
    ev = pd.read_parquet(res.out_dir / "events.parquet")
    stale = ev[ev.failure_reason.str.startswith("stale", na=False)]
    assert len(stale) > 0 and (stale.status == "rejected").all() and (stale.staleness > 0).all()
    assert (ev[ev.status == "applied"].staleness == 0).all()


@pytest.mark.parametrize(
    "field", ["server_lr=0.5", "server_optimizer=fedadam", "buffer_size=8", "staleness_exponent=1", "alpha=0.3"]
)
def test_builtin_only_fields_are_refused_for_a_user_strategy(capsys, monkeypatch, field):
    err = _cli_error(capsys, monkeypatch, "strategy.name=user_strategies:BufferedMean", f"strategy.{field}")
    key = field.split("=")[0]
    assert f"strategy.{key}: BufferedMean does not use it" in err


def test_builtins_still_share_one_scenario(monkeypatch):
    """fedasync ignores buffer_size, as before: one scenario switches among the built-ins with --set."""
    s = check_config(raydiff.load_config(DRY, ["strategy.name=fedasync", "strategy.buffer_size=8"]))
    assert type(s).__name__ == "FedAsync"


# ---------------------------------------------------------------- 5. state checked before the run
def test_a_state_dict_that_cannot_be_saved_is_refused_before_the_run(capsys, monkeypatch):
    err = _cli_error(capsys, monkeypatch, "strategy.name=user_strategies:SetState", "run.checkpoint_every=5")
    assert "run.checkpoint_every: the strategy 'user_strategies:SetState' returns a state_dict()" in err
    assert "a set cannot go into a checkpoint" in err


# ---------------------------------------------------------------- 6. the weight in events.parquet
def test_events_record_each_decisions_weight(tmp_path):
    res = raydiff.run(
        ROOT / "scenarios" / "quickstart.yaml",
        ["run.dry_run=true", "run.max_updates=30", "strategy.max_staleness=3"],
        out=tmp_path / "r",
        progress=False,
    )
    ev = pd.read_parquet(res.out_dir / "events.parquet")
    took = ev[ev.status.isin(["applied", "buffered"]) | ev.failure_reason.eq("buffer_unflushed")]
    assert len(took) > 0
    np.testing.assert_allclose(took.weight, (1.0 + took.staleness) ** -0.5)  # FedBuff: 1/(1+s)^p
    stale = ev[ev.failure_reason.str.startswith("stale", na=False)]
    assert (stale.weight == 0.0).all()  # the strategy decided: Decision("rejected") has weight 0
    never = ev[ev.status.isin(["dropped", "failed"])]
    assert never.weight.isna().all()


# ---------------------------------------------------------------- 7. reasons and colours
def test_failure_reason_keeps_the_exception_of_a_remote_traceback():
    text = (
        "the parameter server raised an exception on the update of client 3's job 17 (on a), so the run stops "
        "(a bug in the strategy or the server); the remote traceback:\n"
        "\x1b[36mray::ParameterServer.submit()\x1b[39m (pid=1, ip=127.0.0.1)\n"
        '  File "my.py", line 3, in receive\n    raise ValueError("boom")\nValueError: boom\n'
    )
    reason = failure_reason(raydiff.errors.InternalError(text))
    assert reason.startswith("InternalError: the parameter server raised") and reason.endswith("ValueError: boom")
    assert "\x1b" not in reason
    assert failure_reason(ValueError("one line")) == "ValueError: one line"


@pytest.mark.slow
def test_a_raising_strategy_leaves_its_exception_in_status_json(ray_session, tiny_cfg, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(PLUGINS)
    cfg = dict(tiny_cfg, strategy={"name": "user_strategies:Raises", "concurrency": 2})
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "r"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "ValueError: boom from the strategy" in err and "\x1b[" not in err
    status = json.loads((tmp_path / "r" / "status.json").read_text())
    assert status["status"] == "failed" and status["reason"].endswith("ValueError: boom from the strategy")


# ---------------------------------------------------------------- 8. Ray that does not start
def test_ray_failing_to_start_is_a_clear_error_and_a_failed_folder(tmp_path, tiny_cfg, monkeypatch, capsys):
    import ray

    if ray.is_initialized():
        pytest.skip("Ray already runs in this process (init_ray would reuse it)")

    def no_start(*args, **kwargs):
        raise Exception("The current node timed out during startup. This could happen because ...")

    monkeypatch.setattr(ray, "init", no_start)
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(tiny_cfg))
    assert main(["run", str(tmp_path / "s.yaml"), "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raydiff: error: Ray failed to start a local Ray") and "timed out during startup" in err
    assert "Traceback" not in err
    status = json.loads((tmp_path / "r" / "status.json").read_text())
    assert status["status"] == "failed" and "timed out during startup" in status["reason"]


# ---------------------------------------------------------------- 9. a typo before torch
def test_a_set_typo_is_reported_before_torch_is_imported(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys, time
        t = time.process_time()
        from raydiff.cli import main
        rc = main(["run", {str(ROOT / "scenarios/quickstart.yaml")!r}, "--set", "strategy.buffer_sise=4",
                   "--out", {str(tmp_path / "r")!r}])
        print(rc, "torch" in sys.modules, "ray" in sys.modules, "diffusers" in sys.modules, time.process_time() - t)
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    rc, torch, ray, diffusers, cpu = r.stdout.split()
    assert (rc, torch, ray, diffusers) == ("2", "False", "False", "False"), r.stderr
    assert "strategy.buffer_sise" in r.stderr and float(cpu) < 3.0
    assert not (tmp_path / "r").exists()


# ---------------------------------------------------------------- 4. the public names a strategy needs
def test_server_optimizers_are_public_and_import_raydiff_stays_light():
    code = (
        "import sys, raydiff; from raydiff import SGD, FedAvgM, FedAdagrad, FedAdam, FedYogi, ServerOptimizer; "
        "print(issubclass(SGD, ServerOptimizer), 'torch' in sys.modules)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=ENV, timeout=120)
    assert r.stdout.split() == ["True", "False"], r.stderr


def test_readme_says_what_a_strategy_may_not_write_and_where_its_optimizer_comes_from():
    text = (ROOT / "README.md").read_text()
    section = " ".join(text.split("## Write your own strategy", 1)[1].split("\n## ", 1)[0].split())
    assert "read-only" in section and "update.delta" in section
    assert "raydiff.SGD" in section and "updates_per_version" in section


# ---------------------------------------------------------------- issue 25, point 7: the import is announced
def test_the_imported_file_is_named_before_its_code_runs(monkeypatch, caplog):
    monkeypatch.chdir(PLUGINS)
    cfg = raydiff.load_config(DRY, ["strategy.name=announce_probe:X"])  # names no module yet: imports nothing
    with caplog.at_level(logging.WARNING, logger="raydiff.strategies.registry"):
        with pytest.raises(ConfigError, match="announce_probe ran"):
            build_strategy(cfg.strategy, 8)
    (msg,) = [r.getMessage() for r in caplog.records if "announce_probe" in r.getMessage()]
    assert str(PLUGINS / "announce_probe.py") in msg and "is code" in msg


# ---------------------------------------------------------------- 15. the README's cross-machine comparison
def test_the_readmes_cross_machine_recipe_accepts_the_same_schedule_and_rejects_another(tmp_path):
    text = (ROOT / "README.md").read_text()
    section = text.split("### Reproducibility: what is bit-identical, and where", 1)[1].split("\n## ", 1)[0]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    base = ["run.dry_run=true", "run.max_updates=30"]
    for name, extra in (("here", []), ("there", []), ("other", ["seed=1"])):
        raydiff.run(ROOT / "scenarios" / "quickstart.yaml", base + extra, out=tmp_path / name, progress=False)
    exec(code.replace("runs/here", str(tmp_path / "here")).replace("runs/there", str(tmp_path / "there")), {})
    with pytest.raises(AssertionError):
        exec(code.replace("runs/here", str(tmp_path / "here")).replace("runs/there", str(tmp_path / "other")), {})
