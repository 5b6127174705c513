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

Every run gets a stable folder name from its case, grid values and seed. A run whose folder holds a
*finished* run (``status.json``, written last) of the same resolved config is skipped, so re-running a
sweep retries exactly the runs that failed, were killed or interrupted, or whose config changed. A
failed run is recorded in the sweep's index (``sweep.yaml``: each run's overrides, status and
reason) and the sweep goes on with the others; the CLI prints the failures at the end and exits 1.
"""

from __future__ import annotations

import itertools
import logging
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import yaml

from .config import check_name
from .config_load import load_config, read_yaml
from .errors import ConfigError, DataError, RunFolderError

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


def _str_key(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"sweep {what}: expected a name, got {value!r}")
    return value


def _check_case(cname: Any, path: Path) -> None:
    """A case name becomes (the start of) a run's folder name: one plain path component, never '.' or '..'."""
    if not isinstance(cname, str):
        raise ConfigError(f"sweep {str(path)!r}: case name {cname!r} must be a string (it names the run's folder)")
    bad = [c for c in cname if c in "/\\" or ord(c) < 32 or ord(c) == 127]
    if not cname.strip() or cname.strip(".") == "" or bad or len(cname) > 100:
        raise ConfigError(
            f"sweep {str(path)!r}: case {cname!r} cannot name a run folder: use 1 to 100 characters without "
            "'/', '\\' or control characters, and not only dots ('.' and '..' would put the run outside "
            "the sweep folder)"
        )


def _check_folder_name(run_name: str, cname: str, path: Path) -> None:
    """The final folder name of a run stays inside the sweep folder (a last guard after the slug)."""
    if run_name.strip(".") == "" or "/" in run_name or "\\" in run_name or Path(run_name).name != run_name:
        raise ConfigError(
            f"sweep {str(path)!r}: case {cname!r} gives the run folder name {run_name!r}, which is not a "
            "folder inside the sweep folder; rename the case"
        )


def plan(sweep_path: str | Path, out: Optional[str | Path] = None) -> tuple[dict, list[PlannedRun]]:
    """Read a sweep file and list its runs (validating every resolved config before anything runs)."""
    path = Path(sweep_path)
    spec = read_yaml(path, "sweep file")
    unknown = [k for k in spec if k not in SWEEP_KEYS]
    if unknown:
        raise ConfigError(f"sweep {str(path)!r}: unknown key {unknown[0]!r}; allowed: {', '.join(SWEEP_KEYS)}")
    if "base" not in spec:
        raise ConfigError(f"sweep {str(path)!r}: 'base' (the scenario file) is required")
    base = (path.parent / _str_key(spec["base"], "base")).resolve()
    name = _str_key(spec.get("name", path.stem), "name")
    check_name(name, "sweep name")
    if spec.get("out") is not None:
        _str_key(spec["out"], "out")
    root = Path(out or spec.get("out") or Path("runs") / name)
    parallel = spec.get("parallel", 1)
    if isinstance(parallel, bool) or not isinstance(parallel, int) or not 1 <= parallel <= 1024:
        raise ConfigError(
            f"sweep {str(path)!r}: parallel must be a whole number of runs at once, 1 to 1024, got {parallel!r}"
        )
    common = [str(s) for s in _as_list(spec.get("set"), "set")]
    cases = spec.get("cases") or {"": []}
    if not isinstance(cases, dict):
        raise ConfigError(f"sweep {str(path)!r}: cases must map a name to a list of overrides")
    if spec.get("cases"):
        for cname in cases:
            _check_case(cname, path)
    grid = spec.get("grid") or {}
    if not isinstance(grid, dict) or any(not isinstance(v, list) or not v for v in grid.values()):
        raise ConfigError(f"sweep {str(path)!r}: grid must map each key to a non-empty list of values")
    for key in grid:
        _str_key(key, "grid")
    seeds = _as_list(spec.get("seeds"), "seeds") or [None]
    runs: list[PlannedRun] = []
    keys = list(grid)
    for case, combo, seed in itertools.product(cases.items(), itertools.product(*grid.values()), seeds):
        cname, cset = case
        over = common + [str(s) for s in _as_list(cset, f"cases.{cname}")]
        over += [
            f"{k}={yaml.safe_dump(v, default_flow_style=True).strip().removesuffix('...').strip()}"
            for k, v in zip(keys, combo)
        ]
        parts = ([cname] if cname else []) + [f"{_short(k)}={v}" for k, v in zip(keys, combo)]
        if seed is not None:
            over.append(f"seed={seed}")
            parts.append(f"seed{seed}")
        run_name = _slug("-".join(parts) or "run")[:150] or "run"
        _check_folder_name(run_name, cname, path)
        over.append(f"name={name}-{run_name}")
        load_config(base, over)  # fail now, naming the key, not after hours of other runs
        runs.append(PlannedRun(run_name, tuple(over), root / run_name))
    names = [r.name for r in runs]
    if len(set(names)) != len(names):
        raise ConfigError(f"sweep {str(path)!r}: two runs would share a folder name; vary case names or grid values")
    return dict(spec, base=str(base), out=str(root), name=name, parallel=parallel), runs


def _sha(run: PlannedRun, base: str) -> str:
    from .run_folder import config_sha256

    return config_sha256(load_config(base, run.overrides))


def is_finished(run: PlannedRun, base: str) -> bool:
    """The run's folder holds a finished run of exactly its config (status.json ``finished``, same sha256)."""
    from .run_folder import is_finished as finished

    return finished(run.out_dir, _sha(run, base))


def describe(run: PlannedRun, base: str) -> str:
    """done, todo, running, killed, interrupted, failed or changed (``raydiff sweep --list``)."""
    from .run_folder import describe as word

    return word(run.out_dir, _sha(run, base))


INDEX_MARKER = "sweep-index/1"  # the ``raydiff`` field of a sweep's sweep.yaml: a file raydiff may rewrite


def check_index(path: Path) -> None:
    """``path`` (a sweep folder's sweep.yaml) is absent or an index raydiff wrote: never a user's own file (a
    sweep file itself, when --out is its own folder), which rewriting would destroy."""
    if not path.exists() and not path.is_symlink():
        return
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() and not path.is_symlink() else None
    except (OSError, ValueError, yaml.YAMLError):
        data = None
    ours = isinstance(data, dict) and (
        data.get("raydiff") == INDEX_MARKER
        or (set(data) == {"name", "base", "runs"} and isinstance(data["runs"], list))  # the previous release's
    )
    if not ours:
        raise RunFolderError(
            f"sweep out: {str(path)!r} is not a sweep index raydiff wrote, and raydiff writes its index "
            "there; choose another --out for the sweep (raydiff never overwrites a file it did not write)"
        )


class _Index:
    """The sweep's ``sweep.yaml``: every run with its overrides and status, rewritten as runs end."""

    def __init__(self, spec: dict, runs: list[PlannedRun], records: dict[str, dict]) -> None:
        self.path = Path(spec["out"]) / "sweep.yaml"
        self.spec, self.runs, self.records = spec, runs, records
        self.lock = threading.Lock()
        check_index(self.path)

    def update(self, record: Optional[dict] = None) -> None:
        from .outputs import _atomic

        with self.lock:
            if record is not None:
                self.records[record["name"]] = record
            entries = []
            for r in self.runs:
                rec = self.records.get(r.name, {})
                entry = dict(name=r.name, overrides=list(r.overrides), status=rec.get("status", "todo"))
                if rec.get("reason"):
                    entry["reason"] = rec["reason"]
                entries.append(entry)
            text = yaml.safe_dump(
                dict(raydiff=INDEX_MARKER, name=self.spec["name"], base=self.spec["base"], runs=entries),
                sort_keys=False,
            )
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _atomic(self.path, lambda p: p.write_text(text))


def run_sweep(sweep_path: str | Path, out: Optional[str | Path] = None, progress: bool = False) -> list[dict]:
    """Run what is not finished yet; returns one record per run: ``status`` is ``ran``, ``skipped`` (already
    finished), ``failed`` (with ``reason``; the sweep goes on) or ``interrupted`` (a signal: the sweep stops)."""
    from .runner import run

    spec, runs = plan(sweep_path, out)
    check_dir = Path(spec["out"])
    from .run_folder import check_writable_dir

    check_writable_dir(check_dir, "sweep out")
    check_index(check_dir / "sweep.yaml")  # before any run: the index is the sweep's only file outside its runs
    todo = [r for r in runs if not is_finished(r, spec["base"])]
    from .datafetch import missing_data  # a missing data.root stops the sweep here, not each run in turn

    for r in todo:
        why = missing_data(load_config(spec["base"], r.overrides).data)
        if why:
            raise DataError(f"sweep {spec['name']!r}, run {r.name}: {why}")
    log.info("sweep %s: %d runs, %d to do", spec["name"], len(runs), len(todo))
    parallel = spec["parallel"]
    if todo and parallel > 1 and not all(load_config(spec["base"], r.overrides).run.dry_run for r in todo):
        from .ray_setup import check_parallel_fit, init_ray

        cfgs = [load_config(spec["base"], r.overrides) for r in todo]
        check_parallel_fit(cfgs, parallel)  # run.actors set: before Ray starts
        init_ray(cfgs[0])  # one cluster shared by concurrent runs (a local one stays on 127.0.0.1)
        import ray  # after init_ray, which decides how a local Ray binds before Ray is first imported

        check_parallel_fit(cfgs, parallel, ray.cluster_resources())
    skipped = {r.name: dict(name=r.name, out_dir=str(r.out_dir), status="skipped") for r in runs if r not in todo}
    index = _Index(spec, runs, dict(skipped))
    index.update()  # the index exists (every run "todo" or "skipped") before the first run starts
    stop = threading.Event()

    def one(r: PlannedRun) -> dict:
        rec: dict[str, Any] = dict(name=r.name, out_dir=str(r.out_dir))
        if stop.is_set():
            return dict(rec, status="todo")
        try:
            # force: the sweep owns its folders; a changed run's old folder is replaced
            res = run(spec["base"], list(r.overrides), out=r.out_dir, progress=progress and parallel == 1, force=True)
        except Exception as exc:  # noqa: BLE001 - any run's failure (bad input, a bug, a lost node) is recorded
            first = (str(exc).strip().splitlines() or [""])[0]
            rec.update(status="failed", reason=f"{type(exc).__name__}: {first}"[:500])
            log.error("sweep run %s failed: %s", r.name, rec["reason"])
        except KeyboardInterrupt as exc:
            stop.set()
            rec.update(status="interrupted", reason=f"stopped by {exc}", signal=getattr(exc, "signum", None))
        else:
            if res.summary.get("interrupted"):
                stop.set()  # a signal stopped the run: the sweep stops too
                sig = res.summary.get("stop_signal") or "SIGINT"
                rec.update(status="interrupted", reason=f"stopped by {sig}", signal=int(signal.Signals[sig]))
            else:
                rec.update(status="ran", wall_seconds=res.summary.get("wall_seconds"))
        index.update(rec)
        return rec

    if parallel == 1:  # in the main thread, so Ctrl-C reaches the run and leaves a consistent folder
        done = {}
        for r in todo:
            done[r.name] = one(r)
            if stop.is_set():
                break
    else:
        # diffusers resolves its names lazily, and not thread-safely: two runs' first imports at once fail
        # ("cannot import name 'UNet2DModel'"), so resolve them here, once, before the threads start
        from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel  # noqa: F401

        with ThreadPoolExecutor(max_workers=parallel) as pool:
            try:
                done = {r.name: rec for r, rec in zip(todo, pool.map(one, todo))}
            except KeyboardInterrupt:
                stop.set()  # runs not started yet are skipped; those running (in threads) finish
                raise
    return [
        done.get(r.name, skipped.get(r.name, dict(name=r.name, out_dir=str(r.out_dir), status="todo"))) for r in runs
    ]
