"""``raydiff sweep SWEEP.yaml``: the cartesian product of cases x grid x seeds, resumable.

A sweep file::

    name: async-study
    base: quickstart.yaml            # scenario, relative to the sweep file
    set: [run.max_updates=60]        # overrides for every run
    cases:                           # optional: named bundles of overrides (conditions)
      homogeneous: []
      stragglers: [clients.speed.dist=lognormal, clients.speed.sigma=1.0]
    grid:                            # optional: key -> values
      strategy.name: [fedavg, fedasync, fedbuff]
    seeds: [0, 1]
    parallel: 1                      # runs at once (they share one Ray cluster)

Every run gets a stable folder name from its case, grid values and seed. A run whose folder already
holds a summary.json of a finished (not interrupted) run with the same resolved config is skipped,
so re-running a sweep resumes it.
"""
from __future__ import annotations

import itertools
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from .config_load import dump_yaml, load_config, read_yaml
from .errors import ConfigError

log = logging.getLogger(__name__)

SWEEP_KEYS = ("name", "base", "set", "cases", "grid", "seeds", "parallel", "out")


@dataclass(frozen=True)
class PlannedRun:
    name: str
    overrides: tuple[str, ...]
    out_dir: Path


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")


def _short(key: str) -> str:
    """A grid key as it appears in folder names: the last part ('strategy.name' -> 'strategy')."""
    bits = key.split(".")
    return bits[-2] if bits[-1] == "name" and len(bits) > 1 else bits[-1]


def _as_list(value: Any, key: str) -> list:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"sweep {key}: expected a list, got {value!r}")
    return value


def plan(sweep_path: str | Path, out: Optional[str | Path] = None) -> tuple[dict, list[PlannedRun]]:
    """Read a sweep file and list its runs (validating every resolved config before anything runs)."""
    path = Path(sweep_path)
    spec = read_yaml(path, "sweep file")
    unknown = [k for k in spec if k not in SWEEP_KEYS]
    if unknown:
        raise ConfigError(f"sweep {str(path)!r}: unknown key {unknown[0]!r}; allowed: {', '.join(SWEEP_KEYS)}")
    if "base" not in spec:
        raise ConfigError(f"sweep {str(path)!r}: 'base' (the scenario file) is required")
    base = (path.parent / spec["base"]).resolve()
    name = spec.get("name", path.stem)
    root = Path(out or spec.get("out") or Path("runs") / name)
    common = [str(s) for s in _as_list(spec.get("set"), "set")]
    cases = spec.get("cases") or {"": []}
    if not isinstance(cases, dict):
        raise ConfigError(f"sweep {str(path)!r}: cases must map a name to a list of overrides")
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict) or any(not isinstance(v, list) or not v for v in grid.values()):
        raise ConfigError(f"sweep {str(path)!r}: grid must map each key to a non-empty list of values")
    seeds = _as_list(spec.get("seeds"), "seeds") or [None]
    runs: list[PlannedRun] = []
    keys = list(grid)
    for case, combo, seed in itertools.product(cases.items(), itertools.product(*grid.values()), seeds):
        cname, cset = case
        over = common + [str(s) for s in _as_list(cset, f"cases.{cname}")]
        over += [f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
                 for k, v in zip(keys, combo)]
        parts = ([cname] if cname else []) + [f"{_short(k)}={v}" for k, v in zip(keys, combo)]
        if seed is not None:
            over.append(f"seed={seed}")
            parts.append(f"seed{seed}")
        run_name = _slug("-".join(parts) or "run")
        over.append(f"name={name}-{run_name}")
        load_config(base, over)  # fail now, naming the key, not after hours of other runs
        runs.append(PlannedRun(run_name, tuple(over), root / run_name))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError(f"sweep {str(path)!r}: two runs would share a folder name; vary case names or grid values")
    return dict(spec, base=str(base), out=str(root), name=name), runs


def is_finished(run: PlannedRun, base: str) -> bool:
    summary = run.out_dir / "summary.json"
    cfg_file = run.out_dir / "config.yaml"
    if not summary.is_file() or not cfg_file.is_file():
        return False
    import json

    try:
        done = json.loads(summary.read_text())
    except ValueError:
        return False
    return not done.get("interrupted") and cfg_file.read_text() == dump_yaml(load_config(base, run.overrides))


def run_sweep(sweep_path: str | Path, out: Optional[str | Path] = None, progress: bool = False) -> list[dict]:
    """Run what is not finished yet; returns one record per run (name, folder, ran or skipped)."""
    from .runner import run

    spec, runs = plan(sweep_path, out)
    todo = [r for r in runs if not is_finished(r, spec["base"])]
    log.info("sweep %s: %d runs, %d to do", spec["name"], len(runs), len(todo))
    parallel = max(1, int(spec.get("parallel", 1)))
    if todo and parallel > 1 and not all(load_config(spec["base"], r.overrides).run.dry_run for r in todo):
        from .ray_setup import init_ray

        init_ray(load_config(spec["base"], todo[0].overrides))  # one cluster shared by concurrent runs

    def one(r: PlannedRun) -> dict:
        res = run(spec["base"], list(r.overrides), out=r.out_dir, progress=progress and parallel == 1)
        return dict(name=r.name, out_dir=str(r.out_dir), status="ran", wall_seconds=res.summary["wall_seconds"])

    if parallel == 1:  # in the main thread, so Ctrl-C reaches the run and leaves a consistent folder
        done = {r.name: one(r) for r in todo}
    else:
        with ThreadPoolExecutor(max_workers=parallel) as pool:
            done = {r.name: rec for r, rec in zip(todo, pool.map(one, todo))}
    records = [done.get(r.name, dict(name=r.name, out_dir=str(r.out_dir), status="skipped")) for r in runs]
    Path(spec["out"]).mkdir(parents=True, exist_ok=True)
    (Path(spec["out"]) / "sweep.yaml").write_text(yaml.safe_dump(
        dict(name=spec["name"], base=spec["base"], runs=[dict(name=r.name, overrides=list(r.overrides))
                                                         for r in runs]), sort_keys=False))
    return records
