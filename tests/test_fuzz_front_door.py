"""Fuzzing the front door (issue 18): whatever a user types or hands us, raydiff finishes a dry run or exits 2
with one paragraph; never a traceback, never exit 1.

Hypothesis generates scenarios from the config's own dataclasses: valid values, extreme and invalid ones
(NaN, inf, huge and negative numbers, wrong types, NUL bytes, odd unicode), missing and extra keys, whole
sections replaced, files in odd encodings, ``--set`` overrides, bad ``--out`` paths, and argument lists for
every subcommand. Every case runs in-process through ``raydiff.cli.main``: a valid one is a small dry run
(no Ray), an invalid one must be refused with exit 2.

CI runs a fixed (derandomized) set of examples in well under a minute. More, with fresh random seeds:
``RAYDIFF_FUZZ_EXAMPLES=5000 pytest tests/test_fuzz_front_door.py``. A seed that finds a bug becomes an
``@example`` below (or an explicit test in tests/test_hardening.py).
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import io
import itertools
import math
import os
import shutil
import tempfile
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from raydiff.cli import main
from raydiff.config import Config

EXAMPLES = int(os.environ.get("RAYDIFF_FUZZ_EXAMPLES", "0"))


def _fuzz(ci_examples: int) -> settings:
    return settings(
        max_examples=EXAMPLES or ci_examples,
        deadline=None,
        database=None,
        derandomize=not EXAMPLES,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
    )


# A small valid dry run: every example starts here and mutates it.
BASE: dict[str, Any] = {
    "name": "fz",
    "seed": 1,
    "clients": {"num_clients": 6, "dropout": 0.1},
    "train": {"local_steps": 2, "batch_size": 8},
    "strategy": {"name": "fedbuff", "concurrency": 3, "buffer_size": 2},
    "run": {"dry_run": True, "max_updates": 4},
}

# Values that must be refused (or, where they happen to be valid, handled): the usual suspects.
NASTY = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2,
    2**31,
    2**63,
    2**64,
    -(2**63) - 1,
    10**30,
    0.0,
    -0.0,
    5e-324,
    1e-300,
    1e308,
    math.inf,
    -math.inf,
    math.nan,
    "",
    " ",
    "x",
    "1e3",
    "inf",
    "\x00",
    "caf\u00e9",
    "\u202e",
    "../..",
    "a" * 300,
    [],
    [1],
    [math.nan],
    [[1]],
    {},
    {"a": 1},
    {"": None},
]

# Fields whose *valid* values could make a dry run slow, touch the network or read arbitrary files: for
# these only invalid values and the few valid ones listed are drawn.
SAFE_VALID: dict[str, list[Any]] = {
    "run.dry_run": [True],
    "run.max_updates": [1, 3, 6],
    "run.max_vtime": [0.5, 5.0],
    "run.address": ["auto"],
    "run.checkpoint_every": [1, 2],
    "run.actors": [1, 2],
    "run.num_cpus": [1, 2],
    "run.server_node": ["head"],
    "data.download": [False],
    "data.root": ["/nonexistent/raydiff-fuzz"],
    "data.dataset": ["digits", "synthetic", "mnist", "npz", "folder"],
    "data.synthetic_size": [40, 300],
    "data.synthetic_classes": [1, 3, 10],
    "data.image_size": [4, 8, 12],
    "clients.num_clients": [1, 2, 7, 40, 5000],
    "clients.trace": ["/nonexistent/trace.csv"],
    "clients.availability.p": [0.5, 1.0],
    "clients.availability.retry_s": [0.5, 2.0],
    "clients.availability.mean_on_s": [1.0, 50.0],
    "clients.availability.mean_off_s": [0.0, 1.0],
    "strategy.name": [
        "fedavg",
        "fedasync",
        "fedbuff",
        "fedsgd",
        "nope:Nope",
        "json:JSONDecoder",
        "raydiff.strategies:FedAvg",
        "os.path:join",
        ":",
        "a:b:c",
    ],
    "strategy.concurrency": [1, 3, 9],
    "strategy.clients_per_round": [1, 3, 9],
    "strategy.buffer_size": [1, 3, 9],
    "train.local_steps": [1, 3],
    "train.local_epochs": [0.5, 2.0],
    "train.batch_size": [1, 16],
    "eval.inception_weights": ["/nonexistent/w.pth"],
    "eval.cache_dir": ["/nonexistent/cache"],
    "model.num_train_timesteps": [2, 50],
    "model.preset": ["tiny"],
}


def _fields(cls: type, prefix: str = "") -> list[tuple[str, Any]]:
    """Every leaf field of the config as (dotted path, annotation), read from the dataclasses themselves."""
    out = []
    for f in dataclasses.fields(cls):
        tp = typing.get_type_hints(cls)[f.name]
        path = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(tp):
            out += _fields(tp, path + ".")
        else:
            out.append((path, tp))
    return out


FIELDS = _fields(Config)
SECTIONS = sorted({p.split(".")[0] for p, _ in FIELDS if "." in p})


def _valid(path: str, tp: Any) -> st.SearchStrategy:
    """Small values of the field's own type (the dataclass still decides whether they are in range)."""
    if path in SAFE_VALID:
        return st.sampled_from(SAFE_VALID[path])
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        inner = next(a for a in args if a is not type(None))
        return st.none() | _valid(path, inner)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if tp is bool:
        return st.booleans()
    if tp is int:
        return st.integers(-2, 20)
    if tp is float:
        return st.floats(-0.5, 12.0, allow_nan=False) | st.sampled_from([0.0, 0.5, 1.0, 1e-6])
    if tp is str:
        return st.text(alphabet="abc_-./:", max_size=8)
    if origin is tuple:
        return st.lists(st.integers(0, 3) | st.floats(0, 2, allow_nan=False), max_size=3)
    return st.dictionaries(st.text("abc", min_size=1, max_size=3), st.integers(0, 3), max_size=2)


@st.composite
def mutations(draw) -> list[tuple[str, str, Any]]:
    """A few changes to BASE: set a field (valid or nasty), delete it, add an unknown key, clobber a section."""
    out = []
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["valid"] * 4 + ["nasty"] * 2 + ["delete", "extra", "section"]))
        path, tp = draw(st.sampled_from(FIELDS))
        if kind == "valid":
            out.append(("set", path, draw(_valid(path, tp))))
        elif kind == "nasty":
            value = draw(st.sampled_from(NASTY))
            if path == "run.dry_run" and value is False:
                value = "no"  # never a real (Ray) run
            out.append(("set", path, value))
        elif kind == "delete":
            if path != "run.dry_run":  # its default is a real (Ray) run
                out.append(("delete", path, None))
        elif kind == "extra":
            where = draw(st.sampled_from(["", *SECTIONS]))
            out.append(("set", f"{where}.{draw(st.text('xyz_', min_size=1, max_size=5))}".lstrip("."), 1))
        else:
            out.append(("set", draw(st.sampled_from(SECTIONS)), draw(st.sampled_from([None, 3, "x", [1], []]))))
    return out


def _apply(cfg: dict, muts: list[tuple[str, str, Any]]) -> dict:
    import copy

    cfg = copy.deepcopy(cfg)
    for op, path, value in muts:
        node, *keys = [cfg, *path.split(".")]
        for k in keys[:-1]:
            nxt = node.get(k) if isinstance(node, dict) else None
            if not isinstance(nxt, dict):
                if op == "delete":
                    break
                nxt = node[k] = {}
            node = nxt
        else:
            if op == "delete":
                node.pop(keys[-1], None)
            else:
                node[keys[-1]] = value
    return cfg


def _yaml_value(v: Any) -> str:
    return yaml.safe_dump(v, default_flow_style=True, allow_unicode=True).strip().removesuffix("...").strip()


ENCODINGS = ["utf-8"] * 6 + ["utf-8-sig", "utf-16", "latin-1", "truncated", "garbage", "nul", "tabs"]


def _scenario_bytes(cfg: dict, encoding: str, noise: bytes) -> bytes:
    try:
        text = yaml.safe_dump(cfg, allow_unicode=True, sort_keys=False)
    except yaml.YAMLError:
        text = "name: [unclosed"
    if encoding == "truncated":
        return text.encode("utf-8", "surrogatepass")[: max(1, len(text) // 2)]
    if encoding == "garbage":
        return noise
    if encoding == "nul":
        return text.encode("utf-8", "surrogatepass") + b"\x00"
    if encoding == "tabs":
        return text.replace("  ", "\t").encode("utf-8", "surrogatepass")
    return text.encode(encoding, "surrogatepass" if encoding.startswith("utf") else "replace")


_counter = itertools.count()
_ROOT = Path(tempfile.mkdtemp(prefix="raydiff-fuzz-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)
# Hypothesis keeps caches (its unicode tables for st.text) in ./.hypothesis even with database=None: keep them out
# of the checkout, in this run's temporary folder (issue 25)
set_hypothesis_home_dir(_ROOT / "hypothesis-home")


def _no_ray(cfg: Any) -> None:
    raise AssertionError("the fuzz generator made a real run; it must only make dry runs")


def _run_cli(argv: list[str]) -> tuple[int, str, str]:
    from unittest import mock

    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        mock.patch("raydiff.ray_setup.keep_ray_local", _no_ray),
    ):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: usage errors exit 2, --help exits 0
            code = exc.code if isinstance(exc.code, int) else 2
    if code in (129, 130, 143):  # a signal (Ctrl-C) stopped the run cleanly: stop pytest too, never a "failure"
        raise KeyboardInterrupt(f"raydiff exited {code}: interrupted by a signal")  # that Hypothesis would shrink
    return code, out.getvalue(), err.getvalue()


def _check(code: int, err: str, argv: list[str]) -> None:
    assert code in (0, 2), f"exit {code} for {argv!r}:\n{err}"
    assert "Traceback" not in err, f"a traceback for {argv!r}:\n{err}"
    if code == 2:
        assert err.startswith(("raydiff: error: ", "usage: ")), f"no clear message for {argv!r}:\n{err}"
        msg = err.split("raydiff: error: ", 1)[-1]
        assert "\n\n" not in msg.strip(), f"more than one paragraph for {argv!r}:\n{err}"


@_fuzz(200)
@given(
    muts=mutations(),
    encoding=st.sampled_from(ENCODINGS),
    noise=st.binary(max_size=64),
    sets=st.lists(st.tuples(st.sampled_from(FIELDS), st.sampled_from(NASTY)), max_size=1),
    out=st.sampled_from(["new"] * 6 + ["file", "below_file", "nul"]),
)
@example(muts=[("set", "strategy.over_selection", math.inf)], encoding="utf-8", noise=b"", sets=[], out="new")
@example(muts=[("set", "seed", -1)], encoding="utf-8", noise=b"", sets=[], out="new")
@example(muts=[("set", "seed", 2**63)], encoding="utf-8", noise=b"", sets=[], out="new")
@example(muts=[("set", "run.num_cpus", -1)], encoding="utf-8", noise=b"", sets=[], out="new")
@example(muts=[("set", "data.beta", math.inf)], encoding="utf-8", noise=b"", sets=[], out="new")
@example(muts=[("set", "name", "../up")], encoding="utf-8", noise=b"", sets=[], out="new")
@example(muts=[("set", "clients.trace", "\x00")], encoding="utf-8", noise=b"", sets=[], out="new")
@example(muts=[], encoding="latin-1", noise=b"", sets=[], out="below_file")
@example(muts=[("set", "name", "caf\u00e9 \u202e")], encoding="utf-16", noise=b"", sets=[], out="nul")
def test_any_scenario_finishes_a_dry_run_or_exits_2(muts, encoding, noise, sets, out):
    d = _ROOT / f"c{next(_counter)}"
    d.mkdir()
    cfg = _apply(BASE, muts)
    if isinstance(cfg.get("run"), dict):  # a clobbered, then re-made run section: still a dry run
        cfg["run"].setdefault("dry_run", True)
    sc = d / "s.yaml"
    sc.write_bytes(_scenario_bytes(cfg, encoding, noise))
    blocker = d / "blocker"
    blocker.write_text("a file")
    target = {"new": d / "run", "file": blocker, "below_file": blocker / "run", "nul": Path(str(d / "r\x00n"))}[out]
    argv = ["run", str(sc), "--out", str(target)]
    if encoding in ("garbage", "truncated"):  # what is left may parse as a mapping without run.dry_run
        argv += ["--set", "run.dry_run=true"]
    for (path, _), value in sets:
        if path == "run.dry_run" and value is False:
            continue  # never a real (Ray) run
        argv += ["--set", f"{path}={_yaml_value(value)}"]
    code, _, err = _run_cli(argv)
    _check(code, err, argv)


SUBCOMMANDS = ["run", "sweep", "report", "sample", "bench", "audit", "nope", "", "-h"]
TOKENS = [
    "--out",
    "--set",
    "--resume",
    "--force",
    "--n",
    "--steps",
    "--seed",
    "--sampler",
    "--list",
    "--title",
    "--address",
    "--groups",
    "--actors",
    "--clients",
    "-5",
    "0",
    "two",
    "1,x",
    "x=1",
    "=",
    "a.b=",
    "seed=-1",
    "--set=",
    "ddim",
    "/nonexistent",
    "\x00",
    "caf\u00e9",
    "--no-progress",
    "-v",
    "--help",
]


@_fuzz(150)
@given(cmd=st.sampled_from(SUBCOMMANDS), rest=st.lists(st.sampled_from(TOKENS) | st.text(max_size=6), max_size=6))
@example(cmd="sample", rest=["/nonexistent", "--out", "\x00"])
@example(cmd="report", rest=["/nonexistent", "--out", "/nonexistent/x/r.html"])
@example(cmd="run", rest=["--resume", "/nonexistent", "--set", "seed=1"])
def test_any_argument_list_exits_0_or_2_with_a_message(cmd, rest):
    d = _ROOT / f"a{next(_counter)}"
    d.mkdir()
    argv = [cmd, *[str(d / t[1:]) if t.startswith("/nonexistent") else t for t in rest]]
    if cmd in ("bench", "audit"):
        argv += ["--actors", "0"] if cmd == "bench" else [str(d / "no-run")]  # never a real benchmark or audit
    if cmd == "run" and not any(t in argv for t in ("--resume",)) and len(argv) > 1 and not argv[1].startswith("-"):
        argv[1] = str(d / "missing.yaml")  # a scenario that does not exist: refused, never a real run
    code, _, err = _run_cli(argv)
    _check(code, err, argv)


@_fuzz(100)
@given(
    spec=st.fixed_dictionaries(
        {},
        optional={
            "name": st.sampled_from(["s", "", "../x", 3, None, "a/b"]),
            "base": st.sampled_from(["base.yaml", "missing.yaml", 3, None, [], "/"]),
            "set": st.sampled_from([[], ["seed=1"], "seed=1", [3], [None], ["nonsense"]]),
            "cases": st.sampled_from([{}, {"a": []}, {"a": ["seed=2"], "b": "x"}, [], {3: []}, {"": ["x=1"]}]),
            "grid": st.sampled_from(
                [
                    {},
                    {"seed": [1, 2]},
                    {"seed": []},
                    {"seed": 1},
                    {3: [1]},
                    {"strategy.name": ["fedsgd"]},
                    {"clients.dropout": [0.0, math.nan]},
                ]
            ),
            "seeds": st.sampled_from([[1], [], [-1], ["x"], 5, [2**64]]),
            "parallel": st.sampled_from([1, 2, 0, -1, "two", 2.5, True, None, 10**9]),
            "out": st.sampled_from(["o", 3, "", None]),
            "extra": st.just(1),
        },
    )
)
def test_any_sweep_file_lists_or_exits_2(spec):
    d = _ROOT / f"w{next(_counter)}"
    d.mkdir()
    (d / "base.yaml").write_text(yaml.safe_dump(BASE))
    (d / "sweep.yaml").write_text(yaml.safe_dump(spec, allow_unicode=True))
    argv = ["sweep", str(d / "sweep.yaml"), "--out", str(d / "o"), "--list"]
    code, _, err = _run_cli(argv)
    _check(code, err, argv)
