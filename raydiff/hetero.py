"""Client heterogeneity: who is fast, who is far, who is online; and how a job ends in virtual time.

Pure numpy (no Ray). The orchestrator asks, at dispatch, how long a job will take and whether
(and when) it fails, so the virtual finish time is known before any real training happens.
Peers read for the model (not copied): FedScale's device traces, Plato's speed simulation,
FLSim's event generator.
"""

from __future__ import annotations

import csv
import io
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .config import (
    LATENCY_RANGE,
    MBPS_RANGE,
    MEAN_OFF_RANGE,
    MEAN_ON_RANGE,
    SPEED_RANGE,
    ClientsConfig,
    Range,
)
from .errors import ConfigError, DataError

MBPS = 1e6 / 8  # bytes per second in one megabit per second


@dataclass(frozen=True)
class ClientProfile:
    client_id: int
    speed: float  # training samples per virtual second
    down_bps: float  # bytes per second
    up_bps: float
    latency_s: float
    dropout: float  # probability that a job fails
    mean_on_s: float = math.inf  # on/off availability (inf: always on)
    mean_off_s: float = 0.0


@dataclass(frozen=True)
class JobPlan:
    """The virtual-time story of one job, fixed at dispatch."""

    download_s: float
    compute_s: float
    upload_s: float
    fails: bool
    end_s: float  # seconds after dispatch when the job ends (finishes or fails)
    failure_reason: str  # "" or "{dropout,offline}_{download,compute,upload}"


# ---------------------------------------------------------------------------------------- profiles
def _lognormal_mean(mean: float, sigma: float, n: int, rng: np.random.Generator) -> np.ndarray:
    """Lognormal draws whose MEAN is ``mean`` (not their median)."""
    return mean * np.exp(sigma * rng.standard_normal(n) - sigma**2 / 2)


def sample_speeds(cfg: ClientsConfig, rng: np.random.Generator) -> np.ndarray:
    """Per-client speeds (samples per virtual second): mean ``speed.mean`` for constant, lognormal and
    Pareto; ``tiers`` uses ``tier_speeds`` as absolute speeds (``mean`` does not apply)."""
    s, n = cfg.speed, cfg.num_clients
    if s.dist == "constant":
        return np.full(n, s.mean)
    if s.dist == "lognormal":
        return _lognormal_mean(s.mean, s.sigma, n, rng)
    if s.dist == "pareto":  # classical Pareto, x_m = mean (alpha-1)/alpha, heavy right tail
        xm = s.mean * (s.shape - 1) / s.shape
        return xm * (1 + rng.pareto(s.shape, n))
    if s.dist == "tiers":  # exact proportions (largest remainder), shuffled over clients
        frac = np.asarray(s.tier_fractions, dtype=float)
        frac = frac / frac.sum()  # the config allows a 1e-6 slack; exact shares keep counts summing to n
        counts = np.floor(frac * n).astype(int)
        rest = np.argsort(-(frac * n - counts), kind="stable")[: n - counts.sum()]
        counts[rest] += 1
        return rng.permutation(np.repeat(np.asarray(s.tier_speeds, dtype=float), counts))
    raise ValueError(f"clients.speed.dist: unknown distribution {s.dist!r}")


TRACE_REQUIRED = ("client_id", "speed", "down_mbps", "up_mbps", "latency_s")
TRACE_OPTIONAL = ("mean_on_s", "mean_off_s")
# each column's allowed values: the very Range of the config field of the same meaning
TRACE_RANGES = {
    "client_id": Range(0, 2**53),
    "speed": SPEED_RANGE,
    "down_mbps": MBPS_RANGE,
    "up_mbps": MBPS_RANGE,
    "latency_s": LATENCY_RANGE,
    "mean_on_s": MEAN_ON_RANGE,
    "mean_off_s": MEAN_OFF_RANGE,
}
TRACE_SAME = {
    "speed": ", as clients.speed.mean",
    "down_mbps": ", as clients.network.down_mbps",
    "up_mbps": ", as clients.network.up_mbps",
    "latency_s": ", as clients.network.latency_s",
    "mean_on_s": ", as clients.availability.mean_on_s",
    "mean_off_s": ", as clients.availability.mean_off_s",
}


def read_trace(path: str | Path, num_clients: int) -> list[dict[str, float]]:
    """A device trace CSV (one row per client); the first ``num_clients`` rows by client_id are used."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"clients.trace: file {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"clients.trace {str(p)!r} is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    with io.StringIO(text, newline="") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in TRACE_REQUIRED if c not in header]
        if missing:
            raise DataError(
                f"clients.trace {str(p)!r}: missing column(s) {', '.join(missing)}; required: "
                f"{', '.join(TRACE_REQUIRED)}; optional: {', '.join(TRACE_OPTIONAL)}"
            )
        rows = []
        for line, raw in enumerate(reader, start=2):
            row: dict[str, float] = {}
            for col in TRACE_REQUIRED + TRACE_OPTIONAL:
                if col not in header:
                    continue
                try:
                    row[col] = float(raw[col])
                except (TypeError, ValueError):
                    raise DataError(
                        f"clients.trace {str(p)!r} line {line}: {col}={raw[col]!r} is not a number"
                    ) from None
                rng = TRACE_RANGES[col]
                v = row[col]
                whole = col != "client_id" or (math.isfinite(v) and v.is_integer())
                tiny = v != 0 and abs(v) < sys.float_info.min  # subnormal: refused like the config's own fields
                if not math.isfinite(v) or not rng.admits(v) or not whole or tiny:
                    raise DataError(
                        f"clients.trace {str(p)!r} line {line}: {col}={raw[col].strip()} must be "
                        f"{'a whole number' if col == 'client_id' else 'a finite number'} {rng.describe()}"
                        f"{TRACE_SAME.get(col, '')}"
                    )
            rows.append(row)
    ids = [r["client_id"] for r in rows]
    if len(set(ids)) != len(ids):
        raise DataError(f"clients.trace {str(p)!r}: client_id values repeat")
    if len(rows) < num_clients:
        raise DataError(f"clients.trace {str(p)!r} has {len(rows)} clients but clients.num_clients={num_clients}")
    return sorted(rows, key=lambda r: r["client_id"])[:num_clients]


def class_share(parts: Sequence[np.ndarray], labels: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    """Fraction of each client's samples that belong to ``classes``."""
    cls = np.asarray(list(classes))
    return np.array([np.isin(labels[p], cls).mean() if len(p) else 0.0 for p in parts])


def sample_profiles(
    cfg: ClientsConfig, rng: np.random.Generator, slow_score: Optional[np.ndarray] = None
) -> list[ClientProfile]:
    """Every client's profile from the config (or a trace), drawn from ``rng``.

    ``slow_score`` ties speed to data: the client with the highest score gets the slowest speed
    (for example the share of minority classes it holds), so staleness bias can be studied.
    """
    n, net, av = cfg.num_clients, cfg.network, cfg.availability
    if cfg.trace:
        rows = read_trace(cfg.trace, n)
        speeds = np.array([r["speed"] for r in rows])
        down = np.array([r["down_mbps"] for r in rows]) * MBPS
        up = np.array([r["up_mbps"] for r in rows]) * MBPS
        lat = np.array([r["latency_s"] for r in rows])
        on = np.array([r.get("mean_on_s", av.mean_on_s) for r in rows])
        off = np.array([r.get("mean_off_s", av.mean_off_s) for r in rows])
    else:
        speeds = sample_speeds(cfg, rng)
        link = _lognormal_mean(1.0, net.sigma, n, rng) if net.sigma > 0 else np.ones(n)
        down, up = net.down_mbps * MBPS * link, net.up_mbps * MBPS * link
        lat = np.full(n, net.latency_s)
        on, off = np.full(n, av.mean_on_s), np.full(n, av.mean_off_s)
    if av.mode != "onoff":
        on, off = np.full(n, math.inf), np.zeros(n)
    if slow_score is not None:
        order = np.argsort(-np.asarray(slow_score), kind="stable")  # highest score first
        speeds = speeds.copy()
        speeds[order] = np.sort(speeds)
    return [
        ClientProfile(
            i, float(speeds[i]), float(down[i]), float(up[i]), float(lat[i]), cfg.dropout, float(on[i]), float(off[i])
        )
        for i in range(n)
    ]


# ---------------------------------------------------------------------------------------- availability
class Availability:
    """Whether a client is online at a virtual time, and until when. Default: always."""

    def is_on(self, client: int, t: float) -> bool:
        return True

    def on_until(self, client: int, t: float) -> float:
        """The virtual time at which an online client next goes offline (inf if never)."""
        return math.inf

    def next_on(self, client: int, t: float) -> float:
        """The earliest time >= t at which the client is online."""
        return t


class BernoulliAvailability(Availability):
    """Each dispatch attempt finds the client online with probability ``p`` (no memory between attempts)."""

    def __init__(self, p: float, retry_s: float, rng: np.random.Generator) -> None:
        self.p, self.retry_s, self.rng = p, retry_s, rng

    def is_on(self, client: int, t: float) -> bool:
        return bool(self.rng.random() < self.p)

    def next_on(self, client: int, t: float) -> float:
        return t + self.retry_s


class OnOffAvailability(Availability):
    """An alternating renewal process per client: exponential on and off periods with given means.

    Started in its stationary state (on with probability on/(on+off), memoryless residual), and
    advanced lazily, so 100,000 clients cost nothing until they are asked about.
    Long-run fraction of time online: mean_on / (mean_on + mean_off).
    """

    def __init__(self, mean_on: np.ndarray, mean_off: np.ndarray, rng: np.random.Generator) -> None:
        self.mean_on = np.asarray(mean_on, dtype=float)
        self.mean_off = np.asarray(mean_off, dtype=float)
        self.rng = rng
        p_on = self.mean_on / (self.mean_on + self.mean_off)
        self.on = rng.random(len(p_on)) < p_on
        self.switch = rng.exponential(np.where(self.on, self.mean_on, self.mean_off))

    def _advance(self, c: int, t: float) -> None:
        while self.switch[c] <= t:
            self.on[c] = not self.on[c]
            self.switch[c] += self.rng.exponential(self.mean_on[c] if self.on[c] else self.mean_off[c])

    def is_on(self, client: int, t: float) -> bool:
        self._advance(client, t)
        return bool(self.on[client])

    def on_until(self, client: int, t: float) -> float:
        self._advance(client, t)
        return float(self.switch[client]) if self.on[client] else t

    def next_on(self, client: int, t: float) -> float:
        self._advance(client, t)
        return t if self.on[client] else float(self.switch[client])


def make_availability(cfg: ClientsConfig, profiles: Sequence[ClientProfile], rng: np.random.Generator) -> Availability:
    av = cfg.availability
    if av.mode == "always":
        return Availability()
    if av.mode == "bernoulli":
        return BernoulliAvailability(av.p, av.retry_s, rng)
    if av.mode == "onoff":
        return OnOffAvailability(
            np.array([p.mean_on_s for p in profiles]), np.array([p.mean_off_s for p in profiles]), rng
        )
    raise ConfigError(f"clients.availability.mode: unknown mode {av.mode!r}")


# ---------------------------------------------------------------------------------------- one job
def plan_job(
    profile: ClientProfile,
    samples: int,
    down_bytes: int,
    up_bytes: int,
    rng: np.random.Generator,
    jitter: float = 0.0,
    offline_after: float = math.inf,
) -> JobPlan:
    """download = latency + bytes/down_bps; compute = samples/speed * J; upload = latency + bytes/up_bps.

    J = exp(jitter*z - jitter^2/2) is lognormal with mean 1, so jitter spreads compute times without
    changing their mean (turning jitter on must not slow the whole simulation down).

    The job fails at the earlier of a dropout point (probability ``dropout``, uniform over the job)
    and the moment its client goes offline (``offline_after`` seconds after dispatch), if that falls
    before the end. The phase the failure falls in is named. Three draws per job, always, so the
    RNG stream does not depend on outcomes or on whether jitter is enabled.
    """
    drop = rng.random() < profile.dropout
    u = float(rng.random())
    z = float(rng.standard_normal())
    factor = math.exp(jitter * z - jitter**2 / 2) if jitter > 0 else 1.0
    download = profile.latency_s + down_bytes / profile.down_bps
    compute = samples / profile.speed * factor
    upload = profile.latency_s + up_bytes / profile.up_bps
    total = download + compute + upload
    end, cause = total, ""
    if drop and u * total < end:
        end, cause = u * total, "dropout"
    if offline_after < end:
        end, cause = offline_after, "offline"
    if not cause:
        return JobPlan(download, compute, upload, False, total, "")
    phase = "download" if end < download else "compute" if end < download + compute else "upload"
    return JobPlan(download, compute, upload, True, end, f"{cause}_{phase}")
