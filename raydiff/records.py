"""One record stream, many readers: every settled job and every evaluation row goes through ONE sink interface.

The event loop settles each job exactly once and the evaluator returns each evaluation row once: these are
facts, emitted as they happen (not collected until the end), to every :class:`RecordSink` of the run:

- :class:`StreamSink`, the run folder's own record: ``stream/events.arrows`` and ``stream/evals.arrows``,
  append-only Arrow IPC streams, flushed to the operating system at every new version (a background thread
  does the writing, so the loop never waits for the disk) and at least once a second. A run killed with
  SIGKILL, by the OOM killer or a lost node keeps every job settled up to the last flush; :func:`read_stream`
  reads such a folder (a torn last batch is skipped), ``raydiff status`` and ``analysis.load_runs`` call it
  ``killed``. A run that ends (finished, interrupted, failed) compacts its rows into ``events.parquet`` and
  ``evals.parquet`` exactly as before this stream existed, then removes the stream.
- the live trackers of ``run.log`` (:mod:`raydiff.trackers`: TensorBoard, MLflow), which only read.

A tracker that fails is reported once and dropped: a live view never costs the run. Why Arrow IPC rather
than Parquet for the stream: a Parquet file is readable only once its footer is written, so appending means
one file per flush; an IPC stream is one file that is valid after every batch.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, Optional, Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

log = logging.getLogger(__name__)

STREAM_DIR = "stream"
EVENTS_STREAM = "events.arrows"
EVALS_STREAM = "evals.arrows"
STREAM_ENABLED = True  # False only in `raydiff bench stream`, which measures what the stream costs
FLUSH_EVERY_S = 1.0  # the most wall time a settled job waits before it is in the file
# evaluation rows have no fixed columns (FID, privacy and per-configuration columns come and go): the stream
# keeps each as one JSON object beside its version; compaction uses the rows themselves, not this copy
EVALS_SCHEMA = pa.schema([("version", pa.int64()), ("row", pa.string())])


@runtime_checkable
class RecordSink(Protocol):
    """What every reader of a run's records implements. Calls come from the run's main thread, in order."""

    def job(self, row: Mapping[str, Any]) -> None:
        """A job settled (its one final status): its events.parquet row."""

    def evaluation(self, row: Mapping[str, Any]) -> None:
        """An evaluation came back: its evals.parquet row (a version evaluated twice: the later row wins)."""

    def version(self, info: Mapping[str, Any]) -> None:
        """A new model version: ``version, vtime, loss`` and the job counts so far (the progress callback's)."""

    def grid(self, version: int, images: np.ndarray, final: bool = False) -> None:
        """A grid of samples of ``version`` (N, C, H, W in [-1, 1]); ``final``: the exported model's."""

    def close(self, status: str, folder: Optional[Path] = None) -> None:
        """The run ended (``finished``, ``interrupted`` or ``failed``); ``folder``: its complete run folder."""


def _event_columns() -> list[str]:
    from .outputs import EVENT_SCHEMA

    return list(EVENT_SCHEMA.names)


class StreamSink:
    """The run folder's append-only record (see the module's docstring).

    ``seed_rows`` / ``seed_evals``: a resumed run's rows and evaluations as its checkpoint holds them; the
    stream starts afresh with them, so rows a killed run wrote after its checkpoint are not counted twice.
    """

    def __init__(
        self,
        folder: Path,
        seed_rows: Iterable[Mapping[str, Any]] = (),
        seed_evals: Iterable[Mapping[str, Any]] = (),
        flush_every_s: float = FLUSH_EVERY_S,
    ) -> None:
        from .outputs import EVENT_SCHEMA

        self.dir = folder / STREAM_DIR
        self.dir.mkdir(exist_ok=True)
        self.schema = EVENT_SCHEMA
        self.names = list(EVENT_SCHEMA.names)
        self._rows: list[tuple[Any, ...]] = []
        self._evals: list[tuple[int, str]] = []
        self._lock = threading.Lock()  # guards the buffers (the loop appends, the writer thread swaps)
        self._write_lock = threading.Lock()  # one writer at a time: the thread, or close()
        self._wake = threading.Event()
        self._stop = False
        self.flush_every_s = flush_every_s
        self.flushes = 0
        self.error: Optional[BaseException] = None
        self._files = {}
        self._writers = {}
        for name, schema in ((EVENTS_STREAM, EVENT_SCHEMA), (EVALS_STREAM, EVALS_SCHEMA)):
            path = self.dir / name
            if path.is_symlink() or path.exists():
                path.unlink()  # an older stream of this folder's run; never written through a link
            f = open(path, "xb", buffering=0)
            self._files[name] = f
            self._writers[name] = pa.ipc.new_stream(f, schema)
        for r in sorted(seed_rows, key=lambda r: r["job_id"]):
            self.job(r)
        for e in seed_evals:
            self.evaluation(e)
        self._flush()
        self._thread = threading.Thread(target=self._run, name="raydiff-records", daemon=True)
        self._thread.start()

    # ---- RecordSink
    def job(self, row: Mapping[str, Any]) -> None:
        values = tuple(row.get(n) for n in self.names)
        with self._lock:
            self._rows.append(values)

    def evaluation(self, row: Mapping[str, Any]) -> None:
        from .outputs import json_safe

        text = json.dumps(json_safe(dict(row)), default=str, allow_nan=False)
        with self._lock:
            self._evals.append((int(row["version"]), text))

    def version(self, info: Mapping[str, Any]) -> None:
        self._wake.set()  # the writer thread flushes now (several versions in a burst: one flush)

    def grid(self, version: int, images: np.ndarray, final: bool = False) -> None:
        pass  # grids are written as PNG files by the run itself

    def close(self, status: str, folder: Optional[Path] = None) -> None:
        """Stop the writer thread and write what is buffered; the stream stays (see :meth:`remove`)."""
        self._stop = True
        self._wake.set()
        self._thread.join(timeout=10)
        self._flush()
        with self._write_lock:
            for name, w in list(self._writers.items()):
                try:
                    w.close()
                finally:
                    self._files[name].close()
            self._writers.clear()

    def remove(self) -> None:
        """Delete the stream once events.parquet and evals.parquet hold its rows."""
        for name in (EVENTS_STREAM, EVALS_STREAM):
            p = self.dir / name
            if p.is_file() or p.is_symlink():
                p.unlink()
        try:
            self.dir.rmdir()  # only when empty: nothing but the stream is ever deleted
        except OSError:
            pass

    # ---- the writer
    def _run(self) -> None:
        while not self._stop:
            self._wake.wait(self.flush_every_s)
            self._wake.clear()
            if self._stop:
                return
            try:
                self._flush()
            except Exception as exc:  # noqa: BLE001 - a full disk: the run keeps its rows in memory
                self.error = exc
                log.warning(
                    "the run folder's record stream failed (%s); events.parquet is still written at the end", exc
                )
                return

    def _flush(self) -> None:
        with self._lock:
            rows, self._rows = self._rows, []
            evals, self._evals = self._evals, []
        if not rows and not evals:
            return
        with self._write_lock:
            if not self._writers:
                return
            if rows:
                cols = list(zip(*rows))
                batch = pa.RecordBatch.from_arrays(
                    [pa.array(c, type=f.type) for c, f in zip(cols, self.schema)], schema=self.schema
                )
                self._writers[EVENTS_STREAM].write_batch(batch)
            if evals:
                v, text = zip(*evals)
                self._writers[EVALS_STREAM].write_batch(
                    pa.RecordBatch.from_arrays(
                        [pa.array(v, pa.int64()), pa.array(text, pa.string())], schema=EVALS_SCHEMA
                    )
                )
            self.flushes += 1  # unbuffered files: each batch is with the OS now, so a SIGKILL cannot lose it


class Records:
    """The run's sinks behind one door. The stream's errors are the run's; a tracker's are logged once and the
    tracker dropped (a live view never loses the run). ``enrich(row)``: what the trackers see of an evaluation
    row (with client-level DP: the epsilon spent by its version)."""

    def __init__(self, stream: Optional[StreamSink], trackers: Iterable[RecordSink] = ()) -> None:
        self.stream = stream
        self.trackers = list(trackers)
        self.enrich: Callable[[Mapping[str, Any]], Mapping[str, Any]] = lambda row: row
        self.jobs = 0
        self.evals = 0

    def _each(self, method: str, *args: Any, **kw: Any) -> None:
        for t in list(self.trackers):
            try:
                getattr(t, method)(*args, **kw)
            except Exception as exc:  # noqa: BLE001 - any tracker failure: report, drop the tracker, go on
                log.warning(
                    "live tracker %s failed in %s (%s: %s); the run goes on without it",
                    type(t).__name__,
                    method,
                    type(exc).__name__,
                    exc,
                )
                self.trackers.remove(t)

    def job(self, row: Mapping[str, Any]) -> None:
        self.jobs += 1
        if self.stream is not None:
            self.stream.job(row)
        self._each("job", row)

    def evaluation(self, row: Mapping[str, Any]) -> None:
        self.evals += 1
        if self.stream is not None:
            self.stream.evaluation(row)
        if self.trackers:
            try:
                row = self.enrich(row)
            except Exception:
                log.debug("enriching an evaluation row for the trackers", exc_info=True)
            self._each("evaluation", row)

    def version(self, info: Mapping[str, Any]) -> None:
        if self.stream is not None:
            self.stream.version(info)
        self._each("version", info)

    def grid(self, version: int, images: np.ndarray, final: bool = False) -> None:
        self._each("grid", version, images, final=final)

    def close_stream(self) -> None:
        """Flush and close the stream (the rows are then all on disk); idempotent."""
        if self.stream is not None and self.stream._writers:
            try:
                self.stream.close("")
            except Exception:
                log.warning("closing the record stream", exc_info=True)

    def remove_stream(self) -> None:
        if self.stream is not None:
            self.stream.remove()

    def close(self, status: str, folder: Optional[Path] = None, compacted: bool = True) -> None:
        """The end: the stream closed (and removed when ``compacted``: events.parquet holds its rows), trackers
        told the status and given the folder."""
        self.close_stream()
        if self.stream is not None and compacted:
            self.stream.remove()
        self._each("close", status, folder)
        self.trackers.clear()


# ---------------------------------------------------------------------------------------- reading
def _read_batches(path: Path) -> list[pa.RecordBatch]:
    """Every complete batch of an IPC stream; a torn last batch (a write cut by SIGKILL) is left out."""
    out: list[pa.RecordBatch] = []
    try:
        f = pa.OSFile(str(path), "rb")
    except (OSError, pa.ArrowException):
        return out
    with f:
        try:
            reader = pa.ipc.open_stream(f)
        except (OSError, pa.ArrowException):
            return out  # not even the schema made it to disk
        while True:
            try:
                out.append(reader.read_next_batch())
            except StopIteration:
                break
            except (OSError, pa.ArrowException, EOFError):
                break
    return out


def has_stream(folder: Path) -> bool:
    return (folder / STREAM_DIR / EVENTS_STREAM).is_file()


def read_stream(folder: Path) -> tuple[pa.Table, list[dict[str, Any]]]:
    """A run folder's streamed records: (events as events.parquet would hold them, sorted by job id; the
    evaluation rows, one per version, the later row of a repeated version, sorted by version)."""
    from .outputs import EVENT_SCHEMA

    batches = [b for b in _read_batches(folder / STREAM_DIR / EVENTS_STREAM) if b.schema.equals(EVENT_SCHEMA)]
    table = pa.Table.from_batches(batches, schema=EVENT_SCHEMA) if batches else EVENT_SCHEMA.empty_table()
    if table.num_rows:
        table = table.sort_by("job_id")
    by_version: dict[int, dict[str, Any]] = {}
    for b in _read_batches(folder / STREAM_DIR / EVALS_STREAM):
        for text in b.column(1).to_pylist():
            try:
                row = json.loads(text)
            except (TypeError, ValueError):
                continue
            if isinstance(row, dict) and "version" in row:
                by_version[int(row["version"])] = row
    return table, [by_version[v] for v in sorted(by_version)]


def stream_rows(folder: Path) -> list[dict[str, Any]]:
    """The streamed events as row dicts (for compacting the folder of a run that ended without its rows)."""
    table, _ = read_stream(folder)
    return table.to_pylist()


def folder_state(folder: Path) -> str:
    """``finished``, ``interrupted``, ``failed``, ``running`` (a live process holds the folder), ``killed``
    (status.json says running and no process holds the lock) or ``unknown``."""
    from .run_folder import run_state

    return run_state(folder)


def describe_folder(folder: Path) -> dict[str, Any]:
    """What ``raydiff status RUN`` prints: the state, the status file's fields, and the records' extent."""
    from .run_folder import read_status

    st = read_status(folder) or {}
    info: dict[str, Any] = {"run": str(folder), "state": folder_state(folder)}
    for k in ("name", "pid", "host", "started", "resumed", "ended", "reason", "version"):
        if k in st:
            info[k] = st[k]
    if has_stream(folder):
        table, evals = read_stream(folder)
        src = "stream"
    elif (folder / "events.parquet").is_file():
        import pyarrow.parquet as pq

        table, evals, src = pq.read_table(folder / "events.parquet"), [], "events.parquet"
        if (folder / "evals.parquet").is_file():
            evals = pq.read_table(folder / "evals.parquet").to_pylist()
    else:
        table, evals, src = None, [], "none"
    info["records"] = src
    if table is not None:
        status = table.column("status").to_pylist()
        applied = [v for v in table.column("applied_version").to_pylist() if v is not None]
        info.update(
            jobs_settled=table.num_rows,
            jobs_applied=status.count("applied"),
            last_version=max(applied) if applied else 0,
            last_vtime=max(
                (t for t in table.column("finish_vtime").to_pylist() if t is not None and math.isfinite(t)), default=0.0
            ),
        )
    info["evaluations"] = len(evals)
    if evals:
        last = evals[-1]
        info["last_evaluation"] = {k: last[k] for k in ("version", "vtime", "heldout_loss") if k in last}
    summary = folder / "summary.json"
    if summary.is_file():
        try:
            s = json.loads(summary.read_text(encoding="utf-8"))
            if s.get("not_computed"):
                info["not_computed"] = s["not_computed"]
        except (OSError, ValueError):
            pass
    return info


class Ticker:
    """Calls ``fn`` at most once per ``every_s`` of wall time (for work that must not run at every event)."""

    def __init__(self, fn: Callable[[], None], every_s: float) -> None:
        self.fn, self.every_s, self.last = fn, every_s, 0.0

    def __call__(self) -> None:
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            self.fn()


__all__ = [
    "EVALS_STREAM",
    "EVENTS_STREAM",
    "STREAM_DIR",
    "RecordSink",
    "Records",
    "StreamSink",
    "describe_folder",
    "folder_state",
    "has_stream",
    "read_stream",
    "stream_rows",
]
