"""Issue 25: the hostile-colleague probe's classes, kept as a matrix. Every numeric field of the config by every
nasty value (subnormal, huge, negative, NaN, inf, 0, ...) is refused with a ConfigError naming the field, or is on
a short list of values proven harmless by a dry run; nothing outside the run folder is written or deleted (sweep
case names, folders that only look like runs, planted links); no code from data (a crafted Inception .pth, YAML
alias bombs, duplicate keys); data too small or odd is refused before the run; a full disk ends as exit 2 with the
folder ``failed``; a schedule that can never make a version stops with a message. In-process and without Ray:
seconds, except the few ``slow`` real-bound cases at the end.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import math
import os
import time
import typing
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

import raydiff
from raydiff.cli import main
from raydiff.config import Config
from raydiff.config_load import load_config, read_yaml
from raydiff.errors import ConfigError, DataError, NoProgress

BASE: dict[str, Any] = {
    "name": "m",
    "clients": {"num_clients": 4, "dropout": 0.1},
    "train": {"local_steps": 2, "batch_size": 8},
    "strategy": {"name": "fedbuff", "concurrency": 2, "buffer_size": 2},
    "eval": {"num_heldout": 8, "num_samples": 4},
    "run": {"dry_run": True, "max_updates": 4},
}


def _yaml(v: Any) -> str:
    return yaml.safe_dump(v, default_flow_style=True).strip().removesuffix("...").strip()


def _scenario(tmp_path: Path, data: Any = None, name: str = "s.yaml") -> str:
    p = tmp_path / name
    p.write_text(data if isinstance(data, str) else yaml.safe_dump(BASE if data is None else data))
    return str(p)


def _exit2(capsys, argv: list[str], needle: str) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, (code, err)
    assert "Traceback" not in err and "raydiff: error: " in err, err
    flat = " ".join(err[err.index("raydiff: error: ") :].split())
    assert needle in flat, flat
    return flat


def _listing(root: Path) -> dict[str, bytes]:
    """Every file below ``root`` with its bytes (links as their target text): what must not change."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            out[str(p.relative_to(root))] = os.readlink(p).encode()
        elif p.is_file():
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


# ------------------------------------------------------------------------------------ every numeric field x value
def _leaves(cls: type, prefix: str = "") -> list[tuple[str, Any]]:
    hints = typing.get_type_hints(cls)
    out: list[tuple[str, Any]] = []
    for f in dataclasses.fields(cls):
        tp, path = hints[f.name], prefix + f.name
        out += _leaves(tp, path + ".") if dataclasses.is_dataclass(tp) else [(path, tp)]
    return out


def _numeric_kind(tp: Any) -> str:
    if typing.get_origin(tp) is typing.Union:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) is tuple:
        return "tuple" if typing.get_args(tp)[0] in (int, float) else ""
    return "scalar" if tp in (int, float) else ""


NUMERIC = [(p, k) for p, tp in _leaves(Config) if (k := _numeric_kind(tp))]
VALUES: dict[str, Any] = {
    "denormal": 5e-324,
    "denormal2": 1e-320,
    "small": 1e-300,
    "large": 1e15,
    "huge": 1e308,
    "int30": 10**30,
    "negative": -1,
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "zero": 0,
}
# Accepted on purpose, each proven harmless by the dry runs below (test_accepted_extremes_are_harmless). Every
# other (field, value) pair must be refused naming the field; a pair accepted but not listed fails the matrix.
ZERO_OK = {  # 0 is in range and means "off", "none" or a plain boundary
    "seed",
    "data.quantity_sigma",
    "clients.num_gpus",
    "clients.speed.sigma",
    "clients.speed.tier_fractions",
    "clients.speed.jitter",
    "clients.network.latency_s",
    "clients.network.sigma",
    "clients.availability.mean_off_s",
    "clients.dropout",
    "clients.slow_classes",
    "train.prox_mu",
    "train.label_dropout",
    "strategy.over_selection",
    "strategy.staleness_exponent",
    "strategy.staleness.a",
    "strategy.staleness.b",
    "strategy.max_staleness",
    "strategy.server_momentum",
    "strategy.server_beta1",
    "strategy.server_beta2",
    "strategy.dp.noise_multiplier",
    "eval.every_versions",
    "eval.sample_every_versions",
    "eval.fid_every_versions",
    "eval.privacy_audit.t_range",
    "eval.guidance_scale",
    "eval.utility_samples_per_class",
    "run.stop_grace_s",
}
SMALL_OK = {  # 1e-300: a tiny but normal number, whose arithmetic stays finite (the reason after each)
    "data.beta",  # each class goes to one client (numpy's Dirichlet stays finite)
    "data.quantity_sigma",
    "data.holdout_fraction",  # refused before the run: the held-out set is empty (DataError)
    "clients.speed.sigma",
    "clients.speed.tier_fractions",  # unused unless dist=tiers, where they must sum to 1
    "clients.speed.jitter",
    "clients.network.latency_s",
    "clients.network.sigma",
    "clients.availability.p",  # stops: no version (NoProgress)
    "clients.availability.mean_off_s",
    "clients.dropout",
    "train.local_epochs",  # one step
    "train.lr",
    "train.prox_mu",
    "train.label_dropout",
    "strategy.over_selection",
    "strategy.deadline_s",  # refused at the first round: shorter than any job (NoProgress)
    "strategy.server_lr",
    "strategy.staleness_exponent",
    "strategy.alpha",
    "strategy.staleness.a",
    "strategy.server_momentum",
    "strategy.server_beta1",
    "strategy.server_beta2",
    "strategy.norm_bound",  # clips every update to ~0, as asked
    "strategy.ema_decay",
    "strategy.dp.clip_norm",
    "strategy.dp.delta",
    "strategy.compression.fraction",  # keeps one entry (k = ceil(fraction n) >= 1)
    "eval.privacy_audit.t_range",
    "eval.privacy_audit.extraction_threshold",
    "eval.guidance_scale",
    "run.max_vtime",  # stops at once, at version 0
    "run.stop_grace_s",
}
LARGE_OK = {  # 1e15 (an integer where the field is one): "never" for a schedule, or just a big seed
    "seed",
    "strategy.staleness.b",
    "strategy.max_staleness",
    "eval.every_versions",
    "eval.every_vtime",
    "eval.sample_every_versions",
    "eval.fid_every_versions",
    "run.max_updates",
    "run.max_vtime",
    "run.checkpoint_every",
}
HARMLESS = {"zero": ZERO_OK, "small": SMALL_OK, "large": LARGE_OK}


def _override(path: str, kind: str, value: Any) -> list[str]:
    val = [value, value] if kind == "tuple" else value
    out = [f"{path}={_yaml(val)}"]
    if path == "train.local_epochs":
        out.append("train.local_steps=null")  # exactly one of the two
    return out


@pytest.mark.parametrize("path, kind", NUMERIC, ids=[p for p, _ in NUMERIC])
def test_every_numeric_field_by_value(path, kind):
    """A subnormal, huge, negative, NaN or infinite number in any field is a ConfigError naming that field, before
    anything runs; the few accepted extremes are exactly the listed harmless ones."""
    for name, value in VALUES.items():
        try:
            load_config(BASE, _override(path, kind, value))
        except ConfigError as exc:
            assert path in str(exc), f"{path}={value!r}: the error names another field: {exc}"
        else:
            assert path in HARMLESS.get(name, ()), f"{path}={value!r} was accepted but is not proven harmless"
    for name, ok in HARMLESS.items():  # the list does not rot: what it calls accepted still is
        if path in ok:
            load_config(BASE, _override(path, kind, VALUES[name]))


def test_the_matrix_covers_the_probes_fields():
    paths = {p for p, _ in NUMERIC}
    for p in ("eval.every_vtime", "clients.num_cpus", "data.beta", "eval.privacy_audit.num_threads", "seed"):
        assert p in paths
    assert all(p in paths for ok in HARMLESS.values() for p in ok)


def _dry(tmp_path: Path, overrides: list[str], name: str, base: dict[str, Any] = BASE) -> dict[str, Any]:
    r = raydiff.run(base, overrides, out=tmp_path / name, progress=False)
    s = r.summary
    assert math.isfinite(s["virtual_time"]) and s["final_version"] >= 0
    assert json.loads((r.out_dir / "status.json").read_text())["status"] == "finished"
    ev = pd.read_parquet(r.out_dir / "events.parquet")
    assert np.isfinite(ev.finish_vtime).all()
    return s


def test_accepted_extremes_are_harmless(tmp_path, monkeypatch):
    """The harmless lists, proven: each accepted extreme (all at once where they combine) makes a clean dry run,
    or a clear refusal before any version (DataError, NoProgress): never a traceback or a non-finite result."""
    monkeypatch.setattr("raydiff.runner.write_partition", lambda *a: None)  # its plot is 3/4 of a dry run's time
    kinds = dict(NUMERIC)
    skip = {"data.holdout_fraction", "clients.availability.p", "strategy.deadline_s"}

    def sets(names: set[str], value: Any) -> list[str]:
        return [o for p in sorted(names - skip) for o in _override(p, kinds[p], value)]

    dp = ["strategy.dp.enabled=true", "clients.num_clients=8", "strategy.buffer_size=2"]
    assert _dry(tmp_path, sets(ZERO_OK, 0) + dp, "zero")["epsilon"] == math.inf  # no noise (JSON: null)
    s = _dry(tmp_path, [*sets(SMALL_OK - {"run.max_vtime"}, 1e-300), *dp, "train.local_steps=null"], "small")
    assert s["final_version"] == 4
    assert _dry(tmp_path, ["run.max_vtime=1e-300"], "stop-at-once")["final_version"] == 0
    big = [*sets(LARGE_OK - {"run.max_vtime"}, 10**15), "run.max_vtime=2"]
    assert _dry(tmp_path, big, "large")["virtual_time"] <= 2
    with pytest.raises(DataError, match="the held-out set is empty"):
        raydiff.run(BASE, ["data.holdout_fraction=1e-300"], out=tmp_path / "h", progress=False)
    assert not (tmp_path / "h").exists()  # refused before the folder
    fedavg = ["strategy.name=fedavg", "strategy.clients_per_round=2"]
    with pytest.raises(NoProgress, match=r"strategy.deadline_s=1e-300 is shorter than the fastest client's job"):
        raydiff.run(BASE, [*fedavg, "strategy.deadline_s=1e-300"], out=tmp_path / "d", progress=False)


# ------------------------------------------------------------------------------------ the probe's own numbers
@pytest.mark.parametrize(
    "override, needle",
    [
        ("eval.every_vtime=5e-324", "eval.every_vtime: 5e-324 is a subnormal (denormal) number"),
        ("clients.num_cpus=1e-320", "clients.num_cpus: 1e-320 is a subnormal (denormal) number"),
        ("clients.num_cpus=0.00001", "clients.num_cpus: must be a finite number in [0.0001, 4096]"),
        ("clients.num_gpus=0.00001", "clients.num_gpus: must be 0 or at least 0.0001"),
        ("eval.privacy_audit.num_threads=1000000000000000000000000000000", "eval.privacy_audit.num_threads"),
        ("eval.privacy_audit.num_members=100000000", "eval.privacy_audit.num_members: must be an integer in"),
        ("eval.privacy_audit.noise_draws=1000000", "eval.privacy_audit.noise_draws"),
        ("data.beta=1e308", "data.beta: must be a finite number in (0, 1000000]"),
        ("eval.every_vtime=1e-300", "eval.every_vtime: must be a finite number in [1e-06, 1e+15]"),
        ("strategy.server_tau=1e-30", "strategy.server_tau"),
        ("strategy.dp.noise_multiplier=1e-300", "strategy.dp.noise_multiplier: must be 0 (no noise"),
    ],
)
def test_the_probes_numbers_exit_2_before_ray(tmp_path, capsys, monkeypatch, override, needle):
    """Issue 25, point 9: these passed the range checks and overflowed later (num_cpus=1e-320 after Ray started)."""
    monkeypatch.setattr("raydiff.ray_setup.keep_ray_local", lambda cfg: pytest.fail("Ray was about to start"))
    _exit2(capsys, ["run", _scenario(tmp_path), "--set", override, "--set", "run.dry_run=false"], needle)


def test_a_large_beta_still_splits_every_class(tmp_path):
    """The largest beta allowed gives a near-IID split, finite and complete (1e308 gave one client 1,609 of 1,618)."""
    from raydiff.data.partition import dirichlet

    labels = np.repeat(np.arange(10), 160)
    parts = dirichlet(labels, 10, 1e6, np.random.default_rng(0))
    sizes = np.array([len(p) for p in parts])
    assert sizes.sum() == len(labels) and sizes.min() >= 150 and sizes.max() <= 170


# ------------------------------------------------------------------------------------ YAML: aliases and duplicates
BOMB = "\n".join(
    [f"a: &a [{','.join(['lol'] * 9)}]"]
    + [f"{c}: &{c} [{','.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
)


def test_a_yaml_alias_bomb_exits_2_in_under_2_seconds(tmp_path, capsys):
    """Issue 25, point 8: a 1 KB alias bomb expanded past 5 GiB (apply_overrides deep-copies every alias)."""
    assert len(BOMB) < 1024
    sc = _scenario(tmp_path, BOMB + "\nrun: {dry_run: true}\n")
    t0 = time.perf_counter()
    _exit2(capsys, ["run", sc, "--set", "seed=1"], "once its aliases (*name) are expanded (an alias bomb?)")
    assert time.perf_counter() - t0 < 2.0
    (tmp_path / "w.yaml").write_text("name: w\nbase: s.yaml\n" + BOMB)
    t0 = time.perf_counter()
    _exit2(capsys, ["sweep", str(tmp_path / "w.yaml"), "--list"], "an alias bomb?")
    assert time.perf_counter() - t0 < 2.0
    bomb_value = "[&a [1,1,1,1,1,1,1,1,1,1], &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a], &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]"
    bomb_value += ", &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c], [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]]"
    _exit2(capsys, ["run", _scenario(tmp_path), "--set", f"strategy.options={bomb_value}"], "an alias bomb?")


def test_an_alias_that_contains_itself_and_harmless_aliases(tmp_path, capsys):
    _exit2(capsys, ["run", _scenario(tmp_path, "a: &a [*a]\n")], "an alias contains itself")
    good = "common: &c {num_clients: 4, dropout: 0.1}\n"  # ordinary anchors still work (merge keys too)
    data = read_yaml(_scenario(tmp_path, good + "clients: {<<: *c, dropout: 0.2}\n", "g.yaml"))
    assert data["clients"] == {"num_clients": 4, "dropout": 0.2}


@pytest.mark.parametrize(
    "text, key, lines",
    [
        (
            "seed: 1\nname: x\nseed: 2\n",
            "'seed'",
            "line 3: the key 'seed' appears twice in one mapping (first on line 1)",
        ),
        ("data: {beta: 1}\nseed: 1\ndata:\n  beta: 2\n", "'data'", "(first on line 1)"),
        ("clients:\n  num_clients: 4\n  num_clients: 5\n", "'num_clients'", "line 3"),
    ],
)
def test_duplicate_yaml_keys_are_an_error_naming_the_key(tmp_path, capsys, text, key, lines):
    """Issue 25, point 11: `seed` twice or a second `data:` section silently took the last."""
    flat = _exit2(capsys, ["run", _scenario(tmp_path, text)], f"the key {key} appears twice")
    assert lines in flat


def test_duplicate_keys_in_sweep_and_cluster_files(tmp_path, capsys):
    _scenario(tmp_path)
    (tmp_path / "w.yaml").write_text("name: w\nbase: s.yaml\nseeds: [1]\nseeds: [2]\n")
    _exit2(capsys, ["sweep", str(tmp_path / "w.yaml"), "--list"], "sweep file")
    (tmp_path / "c.yaml").write_text("head: {address: a}\nhead: {address: b}\n")
    with pytest.raises(ConfigError, match=r"cluster file .* line 2: the key 'head' appears twice"):
        read_yaml(tmp_path / "c.yaml", "cluster file")


# ------------------------------------------------------------------------------------ nothing outside the run folder
@pytest.mark.parametrize("case", ["..", ".", "a/b", "../up", "", "x\x01y", "..."])
def test_a_sweep_case_that_is_not_a_folder_name_is_refused(tmp_path, capsys, case):
    """Issue 25, point 3: cases `..` and `.` wrote into the sweep folder's parent; with force, files there
    (model/precious.txt, samples/keep.txt) were deleted."""
    root = tmp_path / "home"
    (root / "model").mkdir(parents=True)
    (root / "model" / "precious.txt").write_text("mine")
    (root / "samples").mkdir()
    (root / "samples" / "keep.txt").write_text("mine")
    _scenario(root)
    (root / "w.yaml").write_text(yaml.safe_dump({"name": "w", "base": "s.yaml", "cases": {case: ["seed=2"]}}))
    before = _listing(tmp_path)
    for argv in (["sweep", str(root / "w.yaml"), "--out", str(root / "sw")], ["sweep", str(root / "w.yaml"), "--list"]):
        _exit2(capsys, argv, f"case {case!r}")
    assert _listing(tmp_path) == before and not (root / "sw").exists()


def test_a_sweep_never_overwrites_a_file_named_like_its_index(tmp_path, capsys):
    _scenario(tmp_path)
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({"name": "w", "base": "s.yaml", "seeds": [1]}))
    before = _listing(tmp_path)
    _exit2(
        capsys, ["sweep", str(tmp_path / "sweep.yaml"), "--out", str(tmp_path)], "is not a sweep index raydiff wrote"
    )
    assert _listing(tmp_path) == before


def test_a_folder_of_the_users_own_files_is_never_a_run(tmp_path, capsys):
    """Issue 25, point 4: a folder with a user's config.yaml and README was taken for an old run and overwritten
    without --force; one with an unreadable status.json beside thesis.tex was taken for a run."""
    sc = _scenario(tmp_path)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "config.yaml").write_text("my: own config\n")
    (mine / "README").write_text("my notes")
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "status.json").write_text("{not json")
    (thesis / "thesis.tex").write_text("\\begin{document}")
    before = _listing(tmp_path)
    for d in (mine, thesis):
        _exit2(capsys, ["run", sc, "--out", str(d)], "holds files that are not a raydiff run")
        _exit2(capsys, ["run", sc, "--out", str(d), "--force"], "raydiff never overwrites or deletes files it did not")
    assert _listing(tmp_path) == before
    notes = tmp_path / "notes"  # --force may share a folder with other files when no name collides
    notes.mkdir()
    (notes / "notes.txt").write_text("mine")
    assert main(["run", sc, "--out", str(notes), "--force"]) == 0
    assert (notes / "notes.txt").read_text() == "mine" and (notes / "summary.json").is_file()


def test_force_replaces_a_runs_files_only(tmp_path):
    """--force replaces another config's run: its files go, a user's file among them (even below model/ and
    samples/) stays."""
    old = raydiff.run(BASE, out=tmp_path / "r", progress=False).out_dir
    for sub, name in (("model", "precious.txt"), ("samples", "keep.txt"), ("", "thesis.tex")):
        (old / sub).mkdir(exist_ok=True)
        (old / sub / name).write_text("mine")
    (old / "samples" / "final.png").write_bytes(b"an old run's grid")
    (old / "model" / "unet").mkdir()
    (old / "model" / "unet" / "config.json").write_text("{}")
    raydiff.run(BASE, ["seed=9"], out=old, progress=False, force=True)
    assert (old / "model" / "precious.txt").read_text() == "mine"
    assert (old / "samples" / "keep.txt").read_text() == "mine" and (old / "thesis.tex").read_text() == "mine"
    assert not (old / "samples" / "final.png").exists() and not (old / "model" / "unet").exists()
    assert yaml.safe_load((old / "config.yaml").read_text())["seed"] == 9


def test_a_previous_releases_status_still_counts_as_a_run(tmp_path):
    """Status files written before the marker (the exact shape of that release's) keep their runs: a sweep skips
    a finished one instead of redoing it."""
    from raydiff.run_folder import MARKER_KEY, describe, is_run_folder

    r = raydiff.run(BASE, out=tmp_path / "r", progress=False)
    st = json.loads((r.out_dir / "status.json").read_text())
    st.pop(MARKER_KEY)
    (r.out_dir / "status.json").write_text(json.dumps(st))
    sha = st["config_sha256"]
    assert is_run_folder(r.out_dir) and describe(r.out_dir, sha) == "done"
    (r.out_dir / "status.json").write_text(json.dumps({"status": "finished", "config_sha256": sha}))
    assert not is_run_folder(r.out_dir) and describe(r.out_dir, sha) == "todo"  # not raydiff's shape


def test_planted_tmp_links_are_never_followed_on_resume(tmp_path):
    """Issue 25, point 5: on --resume, planted *.tmp links (events, summary, status, checkpoint) were followed:
    the target was overwritten and the run's own files became links to it."""
    r = raydiff.run(BASE, ["run.checkpoint_every=2"], out=tmp_path / "r", progress=False).out_dir
    st = json.loads((r / "status.json").read_text())
    (r / "status.json").write_text(json.dumps(dict(st, status="running")))  # as if killed after its checkpoint
    target = tmp_path / "victim.txt"
    target.write_text("precious")
    outside = tmp_path / "outside"
    outside.mkdir()
    for name in ("events.parquet", "summary.json", "status.json", "checkpoint.npz", "evals.parquet"):
        (r / f"{name}.tmp").symlink_to(target)
    (r / "samples").symlink_to(outside)  # written at the end of a (Ray) run: the link goes, not through it
    assert main(["run", "--resume", str(r)]) == 0
    assert target.read_text() == "precious" and not any(outside.iterdir())
    for name in ("events.parquet", "summary.json", "status.json", "checkpoint.npz"):
        assert (r / name).is_file() and not (r / name).is_symlink(), name
    assert json.loads((r / "status.json").read_text())["status"] == "finished"
    assert not (r / "samples").is_symlink()


def test_atomic_writes_use_a_fresh_temporary_and_normal_modes(tmp_path):
    from raydiff.outputs import write_json

    target = tmp_path / "victim"
    target.write_text("precious")
    (tmp_path / "s.json.tmp").symlink_to(target)
    (tmp_path / "s.json").symlink_to(target)  # even the file itself: the link is replaced, never followed
    write_json(tmp_path / "s.json", {"a": 1})
    assert target.read_text() == "precious"
    p = tmp_path / "s.json"
    assert not p.is_symlink() and json.loads(p.read_text()) == {"a": 1}
    mask = os.umask(0)
    os.umask(mask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask
    assert sorted(x.name for x in tmp_path.iterdir()) == ["s.json", "s.json.tmp", "victim"]


def test_a_300_character_out_name_is_exit_2(tmp_path, capsys):
    """Issue 25, point 10: a 300-character --out name gave an OSError traceback."""
    _exit2(capsys, ["run", _scenario(tmp_path), "--out", str(tmp_path / ("a" * 300))], "is 300 bytes long")
    _exit2(capsys, ["sample", str(tmp_path), "--out", str(tmp_path / ("b" * 300 + ".png"))], "bytes long")


# ------------------------------------------------------------------------------------ no code from data
def _malicious(path: Path, marker: Path, torch_format: bool) -> None:
    """A weights file that runs `touch marker` when unpickled without restriction."""
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    if torch_format:
        import torch

        torch.save({"Conv2d_1a_3x3.conv.weight": Evil()}, path)
    else:
        path.write_bytes(pickle.dumps(Evil()))


@pytest.mark.parametrize("torch_format", [True, False], ids=["torch-zip", "plain-pickle"])
def test_a_crafted_inception_pth_runs_nothing_and_exits_2(tmp_path, capsys, torch_format):
    """Issue 25, point 6: torch-fidelity loads the weights with weights_only=False: a crafted .pth ran code."""
    pytest.importorskip("torch_fidelity")
    from raydiff.metrics.inception import fid_metric

    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pth"
    _malicious(evil, marker, torch_format)
    _exit2(
        capsys,
        ["run", _scenario(tmp_path), "--set", f"eval.inception_weights={evil}", "--out", str(tmp_path / "r")],
        "eval.inception_weights",
    )
    with pytest.raises(ConfigError, match="cannot be read as tensors only"):
        fid_metric(str(evil))  # the Evaluator's own load: the same refusal
    assert not marker.exists() and not (tmp_path / "r").exists()
    # the test really is malicious: an unrestricted load runs it
    import pickle

    if not torch_format:
        pickle.loads(evil.read_bytes())
        assert marker.exists()


def test_inception_weights_of_tensors_but_not_inceptions_are_refused(tmp_path):
    import torch

    from raydiff.metrics.inception import check_inception_weights

    pytest.importorskip("torch_fidelity")
    p = tmp_path / "other.pth"
    torch.save({"w": torch.zeros(2)}, p)
    with pytest.raises(ConfigError, match="not torch-fidelity's InceptionV3 weights"):
        check_inception_weights(str(p))


# ------------------------------------------------------------------------------------ data edge cases
def _npz(tmp_path: Path, images: np.ndarray, labels: np.ndarray) -> str:
    p = tmp_path / "d.npz"
    np.savez(p, train_images=images, train_labels=labels)
    return str(p)


@pytest.mark.parametrize(
    "images, labels, needle",
    [
        (np.zeros((40, 8, 8), np.uint8), np.full(40, 2**63 + 5, np.uint64), "holds the class id 9223372036854775813"),
        (np.zeros((40, 8, 8), np.uint8), np.full(40, 10**9, np.int64), "class ids must be 0 to 99999"),
        (np.zeros((40, 0, 0), np.uint8), np.zeros(40, np.int64), "images of zero size"),
        (np.zeros((0, 8, 8), np.uint8), np.zeros(0, np.int64), "no images"),
        (np.zeros((4, 8, 8), np.uint8), np.arange(4), "the held-out set is empty"),
    ],
    ids=["uint64-labels", "huge-labels", "zero-size", "no-images", "held-out-empty"],
)
def test_odd_npz_data_is_refused_before_the_run(tmp_path, capsys, images, labels, needle):
    """Issue 25, point 10: uint64 or huge labels, zero-size images, too few images for a held-out set: tracebacks
    (ZeroDivisionError in heldout_loss, after the run had started)."""
    sets = ["data.dataset=npz", f"data.root={_npz(tmp_path, images, labels)}", "clients.num_clients=2"]
    argv = ["run", _scenario(tmp_path), "--out", str(tmp_path / "r")]
    for s in sets:
        argv += ["--set", s]
    _exit2(capsys, argv, needle)
    assert not (tmp_path / "r").exists()


# ------------------------------------------------------------------------------------ a full disk
def test_a_full_disk_is_exit_2_with_the_folder_failed(tmp_path, capsys, monkeypatch):
    """Issue 25, point 10: a full disk (or a file-size limit) gave a traceback and left the folder inconsistent."""
    import raydiff.outputs as outputs

    real = outputs._atomic

    def full(path, write):
        if path.name == "summary.json":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, write)

    monkeypatch.setattr(outputs, "_atomic", full)
    out = tmp_path / "r"
    flat = _exit2(capsys, ["run", _scenario(tmp_path), "--out", str(out)], "the disk is full (No space left on device)")
    assert "summary.json" in flat
    st = json.loads((out / "status.json").read_text())
    assert st["status"] == "failed" and "No space left" in st["reason"]
    assert len(pd.read_parquet(out / "events.parquet")) > 0  # the events are kept


def test_os_error_messages():
    from raydiff.errors import os_error_message

    assert "File too large" in os_error_message(OSError(errno.EFBIG, "File too large", "/x/events.parquet"))
    assert "too long" in os_error_message(OSError(errno.ENAMETOOLONG, "File name too long"))
    assert os_error_message(OSError(errno.ENOENT, "No such file")) is None  # a bug keeps its traceback
    assert os_error_message(ValueError("boom")) is None
    safetensors = pytest.importorskip("safetensors")
    err = safetensors.SafetensorError(
        'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
    )
    assert "the disk is full" in os_error_message(err)


@pytest.mark.slow
def test_a_real_file_size_limit_is_exit_2_with_the_folder_failed(tmp_path):
    """The same with a real limit (ulimit -f): the first large file fails with EFBIG."""
    import resource
    import subprocess
    import sys

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, 16 * 1024))

    out = tmp_path / "r"
    env = dict(os.environ, RAYDIFF_NO_PROGRESS="1")
    p = subprocess.run(
        [sys.executable, "-m", "raydiff", "run", _scenario(tmp_path), "--out", str(out)],
        preexec_fn=limit,
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert p.returncode == 2 and "Traceback" not in p.stderr and "File too large" in p.stderr, p.stderr
    assert json.loads((out / "status.json").read_text())["status"] == "failed"


# ------------------------------------------------------------------------------------ schedules that never finish
NEVER = {
    "bernoulli": ["clients.availability.mode=bernoulli", "clients.availability.p=1e-9"],
    "onoff": ["clients.availability.mode=onoff", "clients.availability.mean_on_s=1e-6"],
    "dropout": ["clients.dropout=0.99999999"],
}


@pytest.mark.parametrize("name", list(NEVER))
def test_a_schedule_that_never_makes_a_version_stops_with_a_message(tmp_path, capsys, monkeypatch, name):
    """Issue 25, point 11: these spun forever without a word. The stop rule counts events without a new version
    (here lowered, so the test takes a second; the real bound is checked by the slow test below)."""
    monkeypatch.setattr("raydiff.sim.orchestrator.STALL_EVENTS", 3000)
    out = tmp_path / "r"
    argv = ["run", _scenario(tmp_path), "--out", str(out)]
    for s in NEVER[name]:
        argv += ["--set", s]
    _exit2(capsys, argv, "no new model version in 3,000 events since version 0")
    assert json.loads((out / "status.json").read_text())["status"] == "failed"
    assert (out / "events.parquet").is_file()


def test_a_deadline_no_job_can_meet_is_refused_at_once(tmp_path, capsys):
    out = tmp_path / "r"
    argv = ["run", _scenario(tmp_path), "--out", str(out)]
    for s in ("strategy.name=fedavg", "strategy.clients_per_round=2", "strategy.deadline_s=1e-9"):
        argv += ["--set", s]
    _exit2(capsys, argv, "strategy.deadline_s=1e-09 is shorter than the fastest client's job")


def test_a_slow_but_possible_schedule_is_not_stopped(tmp_path):
    """The stop rule leaves a schedule alone that makes versions, however slowly (p = 0.02: ~1 in 50 asks)."""
    s = raydiff.run(
        BASE,
        ["clients.availability.mode=bernoulli", "clients.availability.p=0.02", "clients.dropout=0.5"],
        out=tmp_path / "r",
        progress=False,
    ).summary
    assert s["final_version"] == 4


@pytest.mark.slow
@pytest.mark.parametrize("name", list(NEVER))
def test_the_real_stop_bound_is_seconds(tmp_path, name):
    t0 = time.perf_counter()
    with pytest.raises(NoProgress, match="no new model version in 100,000 events"):
        raydiff.run(BASE, NEVER[name], out=tmp_path / "r", progress=False)
    assert time.perf_counter() - t0 < 120  # ~10 s on a quiet core
