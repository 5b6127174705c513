"""The run configuration: frozen dataclasses, one per concern.

Every field has a default so a scenario file only states what it changes. Validation that needs
more than a type lives in ``__post_init__`` and raises :class:`ConfigError` naming the field, so a
bad scenario fails before Ray starts. Loading from YAML and ``--set`` overrides is in
:mod:`raydiff.config_load`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from .errors import ConfigError


def _require(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


@dataclass(frozen=True)
class DataConfig:
    """Which images, how they are split between clients, and what is held out for evaluation."""

    dataset: Literal["digits"] = "digits"
    image_size: int = 8
    partition: Literal["iid", "dirichlet"] = "dirichlet"
    beta: float = 0.5
    holdout_fraction: float = 0.1

    def __post_init__(self) -> None:
        _require(4 <= self.image_size <= 512, "data.image_size", f"must be in [4, 512], got {self.image_size}")
        _require(self.beta > 0, "data.beta", f"the Dirichlet concentration must be > 0, got {self.beta}")
        _require(0 < self.holdout_fraction < 0.5, "data.holdout_fraction",
                 f"must be in (0, 0.5), got {self.holdout_fraction}")


@dataclass(frozen=True)
class ModelConfig:
    """A diffusers UNet2DModel preset and the DDPM noise schedule."""

    preset: Literal["tiny", "small", "ddpm-cifar10"] = "tiny"
    num_train_timesteps: int = 1000
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"

    def __post_init__(self) -> None:
        _require(self.num_train_timesteps >= 2, "model.num_train_timesteps",
                 f"must be >= 2, got {self.num_train_timesteps}")


@dataclass(frozen=True)
class SpeedConfig:
    """Virtual compute speed of a client, in training samples per virtual second."""

    dist: Literal["constant", "lognormal"] = "constant"
    mean: float = 1000.0
    sigma: float = 0.5  # lognormal: std of log-speed

    def __post_init__(self) -> None:
        _require(self.mean > 0, "clients.speed.mean", f"must be > 0 samples/s, got {self.mean}")
        _require(self.sigma >= 0, "clients.speed.sigma", f"must be >= 0, got {self.sigma}")


@dataclass(frozen=True)
class ClientsConfig:
    """The simulated population: how many, what each actor may use, how they straggle and drop out."""

    num_clients: int = 10
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    dropout: float = 0.0  # probability that a job fails before its upload completes
    bandwidth_mbps: float = 100.0  # symmetric link, megabits per second
    latency_s: float = 0.05

    def __post_init__(self) -> None:
        _require(self.num_clients >= 1, "clients.num_clients", f"must be >= 1, got {self.num_clients}")
        _require(self.num_cpus > 0, "clients.num_cpus", f"must be > 0, got {self.num_cpus}")
        _require(self.num_gpus >= 0, "clients.num_gpus", f"must be >= 0, got {self.num_gpus}")
        _require(self.num_gpus <= 1 or float(self.num_gpus).is_integer(), "clients.num_gpus",
                 f"a fraction must be <= 1 (Ray packs fractions onto one GPU), got {self.num_gpus}")
        _require(0 <= self.dropout < 1, "clients.dropout", f"must be in [0, 1), got {self.dropout}")
        _require(self.bandwidth_mbps > 0, "clients.bandwidth_mbps", f"must be > 0, got {self.bandwidth_mbps}")
        _require(self.latency_s >= 0, "clients.latency_s", f"must be >= 0, got {self.latency_s}")


@dataclass(frozen=True)
class TrainConfig:
    """Local training on a client: one job = ``local_steps`` Adam steps (or ``local_epochs`` passes)."""

    local_steps: Optional[int] = 10
    local_epochs: Optional[float] = None
    batch_size: int = 32
    lr: float = 2e-3
    device: Literal["auto", "cpu", "cuda"] = "auto"

    def __post_init__(self) -> None:
        _require((self.local_steps is None) != (self.local_epochs is None), "train.local_steps",
                 "set exactly one of train.local_steps and train.local_epochs (the other to null)")
        if self.local_steps is not None:
            _require(self.local_steps >= 1, "train.local_steps", f"must be >= 1, got {self.local_steps}")
        if self.local_epochs is not None:
            _require(self.local_epochs > 0, "train.local_epochs", f"must be > 0, got {self.local_epochs}")
        _require(self.batch_size >= 1, "train.batch_size", f"must be >= 1, got {self.batch_size}")
        _require(self.lr > 0, "train.lr", f"must be > 0, got {self.lr}")


@dataclass(frozen=True)
class StalenessConfig:
    """How FedAsync discounts a stale update: s(staleness) multiplies the mixing weight alpha."""

    fn: Literal["constant", "polynomial", "hinge"] = "polynomial"
    a: float = 0.5
    b: int = 4

    def __post_init__(self) -> None:
        _require(self.a >= 0, "strategy.staleness.a", f"must be >= 0, got {self.a}")
        _require(self.b >= 0, "strategy.staleness.b", f"must be >= 0, got {self.b}")


@dataclass(frozen=True)
class StrategyConfig:
    """Server aggregation. Fields not used by the chosen strategy are ignored."""

    name: Literal["fedavg", "fedasync", "fedbuff"] = "fedbuff"
    concurrency: int = 8  # async: jobs in flight at once
    clients_per_round: int = 10  # fedavg
    server_lr: float = 1.0  # fedavg, fedbuff
    buffer_size: int = 4  # fedbuff: K
    staleness_exponent: float = 0.5  # fedbuff: weight 1/(1+s)^p
    alpha: float = 0.6  # fedasync mixing weight
    staleness: StalenessConfig = field(default_factory=StalenessConfig)

    def __post_init__(self) -> None:
        _require(self.concurrency >= 1, "strategy.concurrency", f"must be >= 1, got {self.concurrency}")
        _require(self.clients_per_round >= 1, "strategy.clients_per_round",
                 f"must be >= 1, got {self.clients_per_round}")
        _require(self.server_lr > 0, "strategy.server_lr", f"must be > 0, got {self.server_lr}")
        _require(self.buffer_size >= 1, "strategy.buffer_size", f"must be >= 1, got {self.buffer_size}")
        _require(self.staleness_exponent >= 0, "strategy.staleness_exponent",
                 f"must be >= 0, got {self.staleness_exponent}")
        _require(0 < self.alpha <= 1, "strategy.alpha", f"must be in (0, 1], got {self.alpha}")


@dataclass(frozen=True)
class EvalConfig:
    """Held-out denoising loss every N versions; sample grids; the digit judge for the digits set."""

    every_versions: int = 25
    num_heldout: int = 128
    num_samples: int = 64
    sample_every_versions: int = 0  # 0: a grid of the final model only
    judge: bool = True  # digits only: score samples with a classifier trained on real digits

    def __post_init__(self) -> None:
        _require(self.every_versions >= 1, "eval.every_versions", f"must be >= 1, got {self.every_versions}")
        _require(self.num_heldout >= 1, "eval.num_heldout", f"must be >= 1, got {self.num_heldout}")
        _require(self.num_samples >= 1, "eval.num_samples", f"must be >= 1, got {self.num_samples}")
        _require(self.sample_every_versions >= 0, "eval.sample_every_versions",
                 f"must be >= 0, got {self.sample_every_versions}")


@dataclass(frozen=True)
class RunConfig:
    """When to stop, how many actors, and which Ray cluster."""

    max_updates: Optional[int] = 200  # model versions
    max_vtime: Optional[float] = None  # virtual seconds
    actors: Optional[int] = None  # None: one per client while resources allow (at most the concurrency)
    address: Optional[str] = None  # Ray address; None starts (or reuses) a local Ray on 127.0.0.1
    num_cpus: Optional[int] = None  # local Ray only: CPUs to give it (None: all)

    def __post_init__(self) -> None:
        _require(self.max_updates is not None or self.max_vtime is not None, "run.max_updates",
                 "set run.max_updates or run.max_vtime, or the run never stops")
        if self.max_updates is not None:
            _require(self.max_updates >= 1, "run.max_updates", f"must be >= 1, got {self.max_updates}")
        if self.max_vtime is not None:
            _require(self.max_vtime > 0, "run.max_vtime", f"must be > 0, got {self.max_vtime}")
        if self.actors is not None:
            _require(self.actors >= 1, "run.actors", f"must be >= 1, got {self.actors}")


@dataclass(frozen=True)
class Config:
    """A whole scenario. ``seed`` alone decides every random choice of the run."""

    name: str = "run"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    clients: ClientsConfig = field(default_factory=ClientsConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
