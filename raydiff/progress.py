"""A progress bar over model versions (or virtual time) showing virtual time, version and loss.

tqdm because it degrades well: a live bar on a terminal, periodic lines in a log file, a widget in Jupyter.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Optional

from tqdm.auto import tqdm

from .config import Config


class Progress:
    def __init__(self, cfg: Config, enabled: bool = True) -> None:
        self.by_version = cfg.run.max_updates is not None
        total = cfg.run.max_updates if self.by_version else cfg.run.max_vtime
        self.bar = tqdm(
            total=total,
            desc=cfg.name,
            unit="ver" if self.by_version else "vs",
            disable=not enabled,
            dynamic_ncols=True,
            mininterval=0.5,
        )
        self.last: float = 0

    def __call__(self, info: dict[str, Any]) -> None:
        pos = info["version"] if self.by_version else round(min(info["vtime"], self.bar.total), 1)
        loss = info["loss"]
        self.bar.set_postfix(
            vtime=f"{info['vtime']:.1f}s",
            v=info["version"],
            loss="nan" if math.isnan(loss) else f"{loss:.4f}",
            drop=info["dropped"],
            fail=info["failed"],
            refresh=False,
        )
        self.bar.update(pos - self.last)
        self.last = pos

    def close(self) -> None:
        self.bar.close()


def chain(bar: Progress, *callbacks: Optional[Callable[[dict[str, Any]], None]]) -> Callable[[dict[str, Any]], None]:
    """The bar, then each callback given (None: skipped), in order, at every new version."""
    calls = [c for c in callbacks if c is not None]
    if not calls:
        return bar

    def call(info: dict[str, Any]) -> None:
        bar(info)
        for c in calls:
            c(info)

    return call
