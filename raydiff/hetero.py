"""Client heterogeneity: who is fast, who is far, who drops out; and when a job ends in virtual time.

Pure numpy (no Ray): the orchestrator asks, at dispatch, how long a job will take and whether it
fails, so the virtual finish time is known before any real training happens.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .config import ClientsConfig


@dataclass(frozen=True)
class ClientProfile:
    client_id: int
    speed: float  # training samples per virtual second
    down_bps: float  # bytes per second
    up_bps: float
    latency_s: float
    dropout: float  # probability that a job fails


@dataclass(frozen=True)
class JobPlan:
    """The virtual-time story of one job, fixed at dispatch."""

    download_s: float
    compute_s: float
    upload_s: float
    fails: bool
    end_s: float  # seconds after dispatch when the job ends (finishes or fails)
    failure_reason: str  # "" or "dropout_download" / "dropout_compute" / "dropout_upload"

    @property
    def duration_s(self) -> float:
        return self.download_s + self.compute_s + self.upload_s


def sample_speeds(cfg: ClientsConfig, rng: np.random.Generator) -> np.ndarray:
    """Per-client speeds. The lognormal is parameterised so that its MEAN is ``speed.mean``."""
    s = cfg.speed
    if s.dist == "constant":
        return np.full(cfg.num_clients, s.mean)
    if s.dist == "lognormal":
        return s.mean * np.exp(s.sigma * rng.standard_normal(cfg.num_clients) - s.sigma ** 2 / 2)
    raise ValueError(f"clients.speed.dist: unknown distribution {s.dist!r}")


def sample_profiles(cfg: ClientsConfig, rng: np.random.Generator) -> list[ClientProfile]:
    speeds = sample_speeds(cfg, rng)
    bps = cfg.bandwidth_mbps * 1e6 / 8
    return [ClientProfile(i, float(speeds[i]), bps, bps, cfg.latency_s, cfg.dropout)
            for i in range(cfg.num_clients)]


def plan_job(profile: ClientProfile, samples: int, down_bytes: int, up_bytes: int,
             rng: np.random.Generator) -> JobPlan:
    """download = latency + bytes/down_bps; compute = samples/speed; upload = latency + bytes/up_bps.

    A failing job (probability ``dropout``) ends at a uniformly drawn point of its duration; the
    phase that point falls in names the failure. Two draws per job, always, so the RNG stream
    does not depend on the outcome.
    """
    download = profile.latency_s + down_bytes / profile.down_bps
    compute = samples / profile.speed
    upload = profile.latency_s + up_bytes / profile.up_bps
    total = download + compute + upload
    fails = bool(rng.random() < profile.dropout)
    u = float(rng.random())
    if not fails:
        return JobPlan(download, compute, upload, False, total, "")
    end = u * total
    phase = "download" if end < download else "compute" if end < download + compute else "upload"
    return JobPlan(download, compute, upload, True, end, f"dropout_{phase}")
