"""A researcher's own strategy, defined outside the package (tests/plugins/user_strategies.py), plugged in by
import path or instance: bad options and paths are clear errors; runs are deterministic across actor counts
with the DP and EMA wrappers around it; the README's example works as printed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

import raydiff
from raydiff.cli import main
from raydiff.errors import ConfigError
from raydiff.outputs import EXECUTION_COLUMNS
from raydiff.runner import check_config

PLUGINS = Path(__file__).parent / "plugins"
ROOT = Path(__file__).parent.parent
sys.path.insert(0, str(PLUGINS))

from user_strategies import BufferedMean

DRY = {"clients": {"num_clients": 8}, "strategy": {"concurrency": 4}, "run": {"dry_run": True, "max_updates": 20}}


def _cli_error(capsys, monkeypatch, *sets: str) -> str:
    monkeypatch.chdir(PLUGINS)
    args = ["run", str(ROOT / "scenarios" / "quickstart.yaml"), "--no-progress"]
    for s in sets:
        args += ["--set", s]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("raydiff: error: ") and "Traceback" not in err
    return " ".join(err.split())


@pytest.mark.parametrize(
    "sets, needle",
    [
        (
            ["strategy.name=user_strategies:BufferedMean", "strategy.options.k=two"],
            "strategy.options.k: expected an integer, got 'two'",
        ),
        (
            ["strategy.name=user_strategies:BufferedMean", "strategy.options.q=1"],
            "strategy.options.q: unknown option of BufferedMean; allowed: k, lr",
        ),
        (
            ["strategy.name=user_strategies:BufferedMean", "strategy.options.k=0"],
            "strategy.options: BufferedMean refused its options: k must be >= 1, got 0",
        ),
        (["strategy.name=no_such_module:Thing"], "strategy.name: cannot import module 'no_such_module'"),
        (
            ["strategy.name=user_strategies:Missing"],
            "strategy.name: module 'user_strategies' has no attribute 'Missing'",
        ),
        (["strategy.name=user_strategies:NotAStrategy"], "not a subclass of raydiff.Strategy"),
        (
            ["strategy.name=user_strategies:NoState", "run.checkpoint_every=5"],
            "run.checkpoint_every: the strategy 'user_strategies:NoState' does not implement state_dict()",
        ),
        (["strategy.name=fedbuff", "strategy.options.k=3"], "strategy.options.k: unknown option of FedBuff"),
        (
            ["strategy.name=user_strategies:NoState", "strategy.dp.enabled=true"],
            "strategy.dp.enabled: client-level DP noises an aggregated sum of updates, and NoState does not",
        ),
    ],
)
def test_bad_strategy_input_is_exit_2_naming_the_field(capsys, monkeypatch, sets, needle):
    assert needle in _cli_error(capsys, monkeypatch, *sets)


def test_options_reach_the_class_with_their_types(monkeypatch):
    monkeypatch.chdir(PLUGINS)
    s = check_config(
        raydiff.load_config(
            DRY, ["strategy.name=user_strategies:BufferedMean", "strategy.options.k=3", "strategy.options.lr=1"]
        )
    )
    assert type(s).__name__ == "BufferedMean" and s.k == 3 and s.optimizer.lr == 1.0
    assert isinstance(s.optimizer.lr, float)  # an int in YAML, a float for the annotated parameter
    sch = s.schedule()
    assert (sch.round_based, sch.needs_base, sch.jobs_in_flight, sch.updates_per_version) == (False, False, 4, 3)


def test_a_registered_user_strategy_is_found_by_name(monkeypatch):
    raydiff.register_strategy("buffered-mean-test", BufferedMean)
    s = check_config(raydiff.load_config(DRY, ["strategy.name=buffered-mean-test", "strategy.options.k=2"]))
    assert isinstance(s, BufferedMean)
    with pytest.raises(ValueError, match="already registered"):
        raydiff.register_strategy("fedbuff", BufferedMean)


def test_builtin_strategies_declare_their_schedules():
    def sch(*sets):
        return check_config(raydiff.load_config(DRY, list(sets))).schedule()

    a = sch(
        "strategy.name=fedavg", "strategy.clients_per_round=5", "strategy.over_selection=0.5", "strategy.deadline_s=2"
    )
    assert (a.round_based, a.jobs_in_flight, a.round_reports, a.updates_per_version, a.deadline_s) == (
        True,
        8,
        5,
        5,
        2.0,
    )  # ceil(5 * 1.5) selected, 5 kept
    b = sch("strategy.name=fedbuff", "strategy.buffer_size=3")
    assert (b.round_based, b.needs_base, b.jobs_in_flight, b.updates_per_version) == (False, False, 4, 3)
    c = sch("strategy.name=fedasync")
    assert (c.round_based, c.needs_base, c.updates_per_version) == (False, True, 1)
    d = sch("strategy.name=fedbuff", "strategy.dp.enabled=true", "strategy.ema_decay=0.9")
    assert d.one_update_per_client and d.updates_per_version == 4  # wrappers pass declarations through


def test_a_strategy_instance_runs_a_dry_run_and_is_recorded(tmp_path):
    res = raydiff.run(DRY, out=tmp_path / "r", progress=False, strategy=BufferedMean(k=2))
    ev = pd.read_parquet(tmp_path / "r" / "events.parquet")
    applied = ev[ev.status == "applied"]
    assert res.summary["final_version"] == 20 and applied.groupby("applied_version").size().eq(2).all()
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert saved["strategy"]["name"] == "user_strategies:BufferedMean"


def _run_user(tmp_path, tiny_cfg, actors: int):
    cfg = dict(
        tiny_cfg,
        strategy={
            "concurrency": 4,
            "ema_decay": 0.8,
            "dp": {"enabled": True, "clip_norm": 0.5, "noise_multiplier": 0.3},
        },
    )
    cfg["run"] = dict(cfg["run"], actors=actors)
    return raydiff.run(cfg, out=tmp_path / f"a{actors}", progress=False, strategy=BufferedMean(k=2))


@pytest.mark.slow  # 15-60 s: keeps the default run under 7 minutes; CI runs it
def test_user_strategy_with_dp_and_ema_is_deterministic_across_actor_counts(ray_session, tiny_cfg, tmp_path):
    one, two = _run_user(tmp_path, tiny_cfg, 1), _run_user(tmp_path, tiny_cfg, 2)
    assert one.summary["actors"] == 1 and two.summary["actors"] == 2
    assert one.summary["model_sha256"] == two.summary["model_sha256"]
    assert one.summary["ema_sha256"] == two.summary["ema_sha256"] is not None
    assert one.summary["exported_model"] == "ema"
    ea, eb = (pd.read_parquet(r.out_dir / "events.parquet") for r in (one, two))
    sim = [c for c in ea.columns if c not in EXECUTION_COLUMNS]
    pd.testing.assert_frame_equal(ea[sim], eb[sim])
    applied = ea[ea.status == "applied"]
    assert len(applied) == 2 * one.summary["final_version"]
    # DP: one update per client per version (its update waits in the buffer, the client is not re-sent)
    assert applied.groupby("applied_version").client_id.nunique().eq(2).all()
    evals = pd.read_parquet(one.out_dir / "evals.parquet")
    assert evals.epsilon.iloc[-1] > 0


def _readme_blocks() -> tuple[str, str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Write your own strategy", 1)[1].split("\n## ", 1)[0]
    py = re.search(r"```python\n(.*?)```", section, re.S)
    sh = re.search(r"```bash\n(.*?)```", section, re.S)
    assert py and sh, "the README section needs a python block and a bash block"
    return py.group(1), sh.group(1).strip().splitlines()[0]


def test_readme_example_block_is_a_valid_strategy(tmp_path, monkeypatch):
    code, command = _readme_blocks()
    (tmp_path / "my_strategy.py").write_text(code)
    assert command.startswith("raydiff run scenarios/quickstart.yaml --set strategy.name=my_strategy:")
    monkeypatch.chdir(tmp_path)
    name = re.search(r"strategy\.name=(\S+)", command).group(1)
    sets = re.findall(r"--set (\S+)", command)
    s = check_config(raydiff.load_config(DRY, sets))
    assert type(s).__module__ == "my_strategy" and name.split(":")[1] == type(s).__name__
    x = np.zeros(3, np.float32)
    d = s.receive(x, 2, raydiff.Update(0, 0, 1, np.ones(3, np.float32), np.zeros(3, np.float32)))
    assert d.status == "applied" and 0 < x[0] < 1


@pytest.mark.slow
def test_readme_example_runs_as_printed(tmp_path):
    """Acceptance: the README's module saved as my_strategy.py, its command plus run.max_updates=12."""
    code, command = _readme_blocks()
    (tmp_path / "my_strategy.py").write_text(code)
    (tmp_path / "scenarios").symlink_to(ROOT / "scenarios")
    bindir = Path(sys.executable).parent
    env = dict(os.environ, RAYDIFF_NO_PROGRESS="1", PATH=f"{bindir}:{os.environ['PATH']}")
    r = subprocess.run(
        f"{command} --set run.max_updates=12 --out out",
        shell=True,
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    ev = pd.read_parquet(tmp_path / "out" / "events.parquet")
    assert (ev.status == "applied").sum() >= 12
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["final_version"] == 12


def test_checkpoint_needs_state_dict_even_through_the_api(tmp_path, monkeypatch):
    from user_strategies import NoState

    with pytest.raises(ConfigError, match="run.checkpoint_every"):
        raydiff.run(
            dict(DRY, run={"dry_run": True, "max_updates": 5, "checkpoint_every": 2}),
            out=tmp_path / "x",
            progress=False,
            strategy=NoState(),
        )
    assert not (tmp_path / "x").exists()  # refused before anything was written
