"""Live trackers (``run.log: [tensorboard, mlflow]`` or ``raydiff run --log``): more readers of the run's records.

Each is a :class:`raydiff.records.RecordSink`. Per model version (step = the version) and per virtual second
(step = the whole virtual second, the first version in it): the training loss (mean of the last 20 jobs), the
staleness of the updates the version applied, the jobs dropped and failed so far; per evaluation: the held-out
loss, FID and the other sample metrics when computed, and epsilon with client-level DP. Sample grids are
images; the resolved config is the parameters; MLflow also gets the run folder as artifacts at the end.

Both libraries are optional (``pip install 'raydiff[track]'``); a run that asks for one that is missing is
refused before Ray starts. The :class:`~raydiff.records.Records` hub drops a tracker that raises, so a
tracker never loses the run.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import numpy as np

from .config import Config
from .errors import ConfigError

log = logging.getLogger(__name__)

TB_DIR = "tensorboard"
MLFLOW_DIR = "mlruns"
# run.log name -> (module that must be importable, PyPI package)
NEEDS = {"tensorboard": ("tensorboard", "tensorboard"), "mlflow": ("mlflow", "mlflow")}
_SKIP_ARTIFACTS = {MLFLOW_DIR, "stream"}


def check_trackers(names: tuple[str, ...] | list[str], key: str = "run.log") -> None:
    """Refuse (ConfigError: exit 2, before Ray) a tracker whose library is not installed."""
    for name in names:
        module, package = NEEDS[name]
        if importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"{key}: {name} needs the {package!r} package, which is not installed: "
                f"pip install 'raydiff[track]' (or pip install {package}), or leave {name} out of {key}"
            )


def _number(v: Any) -> Optional[float]:
    if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


_EVAL_SKIP = {"version", "vtime", "eval_seconds", "fid_seconds", "fid_num_samples", "delta"}


class _Scalars:
    """What both trackers log, worked out once: (tag, value, step) triples per version, second and evaluation."""

    def __init__(self) -> None:
        self.staleness: list[int] = []
        self.last_second = -1
        self.last_version = 0

    def job(self, row: Mapping[str, Any]) -> None:
        if row.get("status") == "applied" and row.get("staleness") is not None:
            self.staleness.append(int(row["staleness"]))

    def version(self, info: Mapping[str, Any]) -> list[tuple[str, float, int]]:
        v = int(info["version"])
        self.last_version = v
        values = {
            "train_loss": _number(info.get("loss")),
            "staleness": float(np.mean(self.staleness)) if self.staleness else None,
            "dropped": _number(info.get("dropped")),
            "failed": _number(info.get("failed")),
            "vtime": _number(info.get("vtime")),
        }
        self.staleness = []
        out = [(f"version/{k}", x, v) for k, x in values.items() if x is not None]
        second = math.floor(float(info.get("vtime") or 0.0))
        if second > self.last_second:
            self.last_second = second
            out += [(f"vtime/{k}", x, second) for k, x in values.items() if x is not None and k != "vtime"]
        return out

    def evaluation(self, row: Mapping[str, Any]) -> list[tuple[str, float, int]]:
        v = int(row["version"])
        second = math.floor(float(row.get("vtime") or 0.0))
        out: list[tuple[str, float, int]] = []
        for k, x in row.items():
            f = _number(x)
            if k in _EVAL_SKIP or f is None:
                continue
            out += [(f"version/{k}", f, v), (f"vtime/{k}", f, second)]
        return out


def _grid_array(images: np.ndarray) -> np.ndarray:
    """The run's PNG grid (outputs.grid_image) as an HWC uint8 array with 3 channels."""
    from .outputs import grid_image

    arr = np.asarray(grid_image(images).convert("RGB"))
    return arr


class TensorBoardSink:
    """TensorBoard event files in ``<run>/tensorboard`` (``tensorboard --logdir <run>/tensorboard``)."""

    def __init__(self, folder: Path, cfg: Config, resume_version: Optional[int] = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        from .config_load import dump_yaml

        # a resumed run re-logs the versions after its checkpoint: purge_step drops the killed run's copies
        self.writer = SummaryWriter(log_dir=str(folder / TB_DIR), flush_secs=1, purge_step=resume_version)
        self.scalars = _Scalars()
        self.writer.add_text("config", "```\n" + dump_yaml(cfg) + "\n```", 0)

    def job(self, row: Mapping[str, Any]) -> None:
        self.scalars.job(row)

    def version(self, info: Mapping[str, Any]) -> None:
        for tag, x, step in self.scalars.version(info):
            self.writer.add_scalar(tag, x, step)

    def evaluation(self, row: Mapping[str, Any]) -> None:
        for tag, x, step in self.scalars.evaluation(row):
            self.writer.add_scalar(tag, x, step)
        self.writer.flush()

    def grid(self, version: int, images: np.ndarray, final: bool = False) -> None:
        step = self.scalars.last_version if final else version
        self.writer.add_image("samples/final" if final else "samples", _grid_array(images), step, dataformats="HWC")
        self.writer.flush()

    def close(self, status: str, folder: Optional[Path] = None) -> None:
        self.writer.add_text("status", status, self.scalars.last_version)
        self.writer.close()


def mlflow_uri(folder: Path) -> str:
    """MLFLOW_TRACKING_URI when set, else a file store in ``<run>/mlruns``."""
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    return uri if uri else (folder.resolve() / MLFLOW_DIR).as_uri()


class MlflowSink:
    """An MLflow run (experiment: the config's name) with the config as params, the scalars as metrics, the
    grids as images and the run folder as artifacts at the end."""

    def __init__(self, folder: Path, cfg: Config) -> None:
        uri = mlflow_uri(folder)
        if uri.startswith("file:") or "://" not in uri:
            # MLflow 3 refuses its file store unless asked: a local store under the run folder is what we want
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow import MlflowClient
        from mlflow.entities import Metric, Param

        from .config_load import to_dict

        self.Metric = Metric
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(cfg.name)
        eid = exp.experiment_id if exp is not None else self.client.create_experiment(cfg.name)
        self.run_id = self.client.create_run(
            eid, run_name=folder.name, tags={"raydiff.run_folder": str(folder)}
        ).info.run_id
        flat = _flatten(to_dict(cfg))
        params = [Param(k, str(v)[:6000]) for k, v in flat.items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 params per batch
            self.client.log_batch(self.run_id, params=params[i : i + 100])
        self.scalars = _Scalars()
        self.pending: list[Any] = []
        self.uri = uri

    def _log(self, triples: list[tuple[str, float, int]]) -> None:
        import time

        now = int(time.time() * 1000)
        self.pending += [self.Metric(tag, x, now, step) for tag, x, step in triples]
        if len(self.pending) >= 1:
            for i in range(0, len(self.pending), 1000):
                self.client.log_batch(self.run_id, metrics=self.pending[i : i + 1000])
            self.pending = []

    def job(self, row: Mapping[str, Any]) -> None:
        self.scalars.job(row)

    def version(self, info: Mapping[str, Any]) -> None:
        self._log(self.scalars.version(info))

    def evaluation(self, row: Mapping[str, Any]) -> None:
        self._log(self.scalars.evaluation(row))

    def grid(self, version: int, images: np.ndarray, final: bool = False) -> None:
        step = self.scalars.last_version if final else version
        self.client.log_image(self.run_id, _grid_array(images), key="final_samples" if final else "samples", step=step)

    def close(self, status: str, folder: Optional[Path] = None) -> None:
        if folder is not None:
            for p in sorted(folder.iterdir()):
                if p.name in _SKIP_ARTIFACTS or p.name.startswith("."):
                    continue
                if p.is_dir() and not p.is_symlink():
                    self.client.log_artifacts(self.run_id, str(p), artifact_path=f"run/{p.name}")
                elif p.is_file() and not p.is_symlink():
                    self.client.log_artifact(self.run_id, str(p), artifact_path="run")
        state = {"finished": "FINISHED", "interrupted": "KILLED"}.get(status, "FAILED")
        self.client.set_terminated(self.run_id, state)


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


def open_trackers(cfg: Config, folder: Path, resume_version: Optional[int] = None) -> list[Any]:
    """The trackers ``run.log`` names; one that cannot start is reported and left out (the run goes on)."""
    out: list[Any] = []
    for name in cfg.run.log:
        try:
            if name == "tensorboard":
                out.append(TensorBoardSink(folder, cfg, resume_version))
            else:
                out.append(MlflowSink(folder, cfg))
        except Exception as exc:  # noqa: BLE001 - a tracker never stops the run
            log.warning(
                "live tracker %s could not start (%s: %s); the run goes on without it", name, type(exc).__name__, exc
            )
    return out


__all__ = ["MlflowSink", "TensorBoardSink", "check_trackers", "mlflow_uri", "open_trackers"]
