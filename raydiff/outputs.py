"""Writing the run folder: Parquet tables, PNG grids, the diffusers pipeline, summary.json.

Every file is written to a temporary name and renamed, so an interrupted run never leaves a
half-written file behind (and a failed write leaves no temporary file). JSON files are strict
JSON: a NaN or infinite number is written as null, never as ``NaN``/``Infinity``, which strict
parsers (browsers, jq, most languages) refuse.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

# Column order and types of events.parquet; documented in docs/run-folder.md.
EVENT_SCHEMA = pa.schema(
    [
        ("job_id", pa.int64()),
        ("client_id", pa.int64()),
        ("actor", pa.string()),
        ("node_id", pa.string()),
        ("dispatch_vtime", pa.float64()),
        ("finish_vtime", pa.float64()),
        ("status", pa.string()),
        ("failure_reason", pa.string()),
        ("base_version", pa.int64()),
        ("applied_version", pa.int64()),
        ("staleness", pa.int64()),
        ("weight", pa.float64()),  # the strategy's Decision.weight (null: the strategy never saw the update)
        ("num_samples", pa.int64()),
        ("samples_trained", pa.int64()),
        ("train_loss", pa.float64()),
        ("wall_seconds", pa.float64()),
        ("download_s", pa.float64()),
        ("compute_s", pa.float64()),
        ("upload_s", pa.float64()),
        ("download_bytes", pa.int64()),
        ("upload_bytes", pa.int64()),
    ]
)
# Columns that describe where and how fast the real machine ran a job, not the simulation: the only
# ones allowed to differ between two runs of the same config and seed.
EXECUTION_COLUMNS = ("actor", "node_id", "wall_seconds")


def _umask() -> int:
    """The process's umask (read once: os.umask can only be read by setting it, which threads would race)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _umask()


def _atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` then rename ``tmp`` over ``path``: readers see the old file or the new one, never half.

    ``tmp`` is created fresh with a random name (``mkstemp``: O_CREAT | O_EXCL | O_NOFOLLOW, mode 0600), so a
    file or link planted under a predictable name (``events.parquet.tmp`` -> a file elsewhere) is never
    written through; the rename replaces a link at ``path`` itself, never what it points to. The mode is
    then what an ordinary write would give (0666 less the umask)."""
    import tempfile

    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def write_events(path: Path, rows: list[dict[str, Any]]) -> None:
    cols = {f.name: [r.get(f.name) for r in rows] for f in EVENT_SCHEMA}
    table = pa.table(cols, schema=EVENT_SCHEMA)
    _atomic(path, lambda p: pq.write_table(table, p))


def write_evals(path: Path, rows: Iterable[dict[str, Any]]) -> None:
    rows = sorted(rows, key=lambda r: r["version"])
    keys = list(dict.fromkeys(k for r in rows for k in r))
    table = pa.table({k: [r.get(k) for r in rows] for k in keys})
    _atomic(path, lambda p: pq.write_table(table, p))


def json_safe(v: Any) -> Any:
    """``v`` with every non-finite float (Python or NumPy) replaced by None, and NumPy scalars made Python."""
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def write_json(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(json_safe(data), indent=2, sort_keys=True, allow_nan=False) + "\n"
    _atomic(path, lambda p: p.write_text(text))


def grid_image(images: np.ndarray, min_cell: int = 48):
    """(N, C, H, W) in [-1, 1] -> a PIL image, tiles upscaled (nearest) so tiny digits stay visible."""
    from PIL import Image

    n, c, h, w = images.shape
    cols = int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    pad = 1
    canvas = np.ones((c, rows * (h + pad) + pad, cols * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, q = divmod(i, cols)
        canvas[:, pad + r * (h + pad) : pad + r * (h + pad) + h, pad + q * (w + pad) : pad + q * (w + pad) + w] = (
            images[i] + 1
        ) / 2
    arr = (np.clip(canvas, 0, 1) * 255).round().astype(np.uint8)
    img = Image.fromarray(arr[0] if c == 1 else arr.transpose(1, 2, 0))
    scale = max(1, int(np.ceil(min_cell / h)))
    return img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)


def write_grid(path: Path, images: np.ndarray) -> None:
    img = grid_image(images)
    _atomic(path, lambda p: img.save(p, format="PNG"))


def save_pipeline(path: Path, unet, scheduler) -> None:
    """``DDPMPipeline.from_pretrained(path)`` loads this back."""
    from diffusers import DDPMPipeline

    pipe: Any = DDPMPipeline(unet=unet, scheduler=scheduler)  # diffusers' own hints omit save_pretrained
    pipe.save_pretrained(str(path))
