"""Reading run folders into one long pandas frame.

A heterogeneity study compares many runs (a sweep folder, or a few folders picked by hand). Keeping
every events row and every evals row of every run in ONE frame, each row tagged with its run's
summary and flattened config, means every comparison afterwards is a plain ``groupby``: no joins,
no bookkeeping of which run had which setting.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Union

import pandas as pd
import yaml

PathLike = Union[str, "os.PathLike[str]"]
TABLES = ("events", "evals")


def _as_list(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        return [Path(paths)]
    return [Path(p) for p in paths]


def find_runs(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    """Run folders named by ``paths``, in a stable order, without duplicates.

    A path that holds ``summary.json`` is a run folder; any other folder is searched recursively
    (a sweep folder holds many runs). Raises ``ValueError`` naming the path when a given path
    holds no run at all, because a silently empty study is worse than a loud typo.
    """
    found: list[Path] = []
    from raydiff.records import EVENTS_STREAM, STREAM_DIR, has_stream

    for p in _as_list(paths):
        if (p / "summary.json").is_file() or has_stream(p):  # a killed run: no summary, its streamed records
            runs = [p]
        elif p.is_dir():
            killed = {s.parent.parent for s in p.rglob(f"{STREAM_DIR}/{EVENTS_STREAM}")}
            runs = sorted({s.parent for s in p.rglob("summary.json")} | killed)
        else:
            raise ValueError(f"{p}: no such folder (expected a run folder or a folder of runs)")
        if not runs:
            raise ValueError(f"{p}: holds no run folder (no summary.json found under it)")
        found.extend(runs)
    out: list[Path] = []
    seen: set[Path] = set()
    for r in found:
        key = r.resolve()
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def flatten(d: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``{"a": {"b": 1}, "c": [1, 2]}`` -> ``{"<prefix>.a.b": 1, "<prefix>.c": "[1, 2]"}``.

    Lists become JSON strings so a column always holds hashable scalars (groupby-able).
    """
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key))
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(list(v))
        else:
            out[key] = v
    return out


def _run_names(runs: list[Path]) -> list[str]:
    """Folder names, unless two runs share one: then their path relative to the runs' common root."""
    names = [r.name for r in runs]
    if len(set(names)) == len(names):
        return names
    resolved = [r.resolve() for r in runs]
    root = Path(os.path.commonpath([str(r) for r in resolved])) if len(runs) > 1 else resolved[0].parent
    return [n if names.count(n) == 1 else r.relative_to(root).as_posix() for n, r in zip(names, resolved)]


def read_run(run_dir: Path) -> tuple[dict[str, Any], dict[str, pd.DataFrame]]:
    """One run folder -> (its per-run scalar columns, {"events": frame, "evals": frame}).

    Missing files give empty frames: a dry run has no evals.parquet, an interrupted one may lack
    more, and an analysis should still show what is there.
    """
    from raydiff.records import folder_state, has_stream, read_stream

    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    meta: dict[str, Any] = {
        f"summary.{k}": v for k, v in summary.items() if v is None or isinstance(v, (str, int, float, bool))
    }
    meta["state"] = folder_state(run_dir)  # finished, interrupted, failed, running or killed (raydiff.records)
    cfg_path = run_dir / "config.yaml"
    if cfg_path.is_file():
        cfg = yaml.safe_load(cfg_path.read_text()) or {}
        if isinstance(cfg, dict):
            meta.update(flatten(cfg, "cfg"))
    tables = {}
    for t in TABLES:
        f = run_dir / f"{t}.parquet"
        tables[t] = pd.read_parquet(f) if f.is_file() else pd.DataFrame()
    if has_stream(run_dir):  # killed (or still running): the streamed records are the newest
        events, evals = read_stream(run_dir)
        tables = {"events": events.to_pandas(), "evals": pd.DataFrame(evals)}
    return meta, tables


def load_runs(paths: PathLike | Iterable[PathLike]) -> pd.DataFrame:
    """Every events and evals row of every run under ``paths``, as one long frame.

    Columns: ``table`` ("events" or "evals"), ``run`` (unique name), ``run_dir``, the table's own
    columns (NaN where a row's table lacks them), ``summary.<key>`` for each scalar of summary.json
    and ``cfg.<section>.<field>`` for the flattened config.yaml.
    """
    runs = find_runs(paths)
    frames: list[pd.DataFrame] = []
    metas: list[dict[str, Any]] = []
    for name, run_dir in zip(_run_names(runs), runs):
        meta, tables = read_run(run_dir)
        meta = {"run": name, "run_dir": str(run_dir), **meta}
        metas.append(meta)
        for t, frame in tables.items():
            if len(frame):
                frames.append(frame.assign(table=t, run=name))
    rows = pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame(columns=["table", "run"])
    meta_df = pd.DataFrame(metas)
    empty = [m["run"] for m in metas if m["run"] not in set(rows["run"])]
    if empty:  # no rows to carry its summary: say so rather than invent a fake row
        warnings.warn(f"runs with neither events nor evals rows are left out: {', '.join(empty)}", stacklevel=2)
    df = rows.merge(meta_df, on="run", how="left", validate="many_to_one")
    first = ["table", "run", "run_dir"]
    return df[first + [c for c in df.columns if c not in first]]


def _select(df: pd.DataFrame, table: str) -> pd.DataFrame:
    sub = df[df["table"] == table].reset_index(drop=True)
    if sub.empty:
        return sub
    return sub.dropna(axis=1, how="all")


def events(df: pd.DataFrame) -> pd.DataFrame:
    """The events rows of ``load_runs``' frame, without the columns that only evals fill."""
    return _select(df, "events")


def evals(df: pd.DataFrame) -> pd.DataFrame:
    """The evals rows of ``load_runs``' frame, without the columns that only events fill."""
    return _select(df, "evals")


__all__ = ["evals", "events", "find_runs", "flatten", "load_runs", "read_run"]
