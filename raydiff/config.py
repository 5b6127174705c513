"""The run configuration: frozen dataclasses, one per concern.

Every field has a default so a scenario file only states what it changes. Validation that needs
more than a type lives in ``__post_init__`` and raises :class:`ConfigError` naming the field, so a
bad scenario fails before Ray starts. Loading from YAML and ``--set`` overrides is in
:mod:`raydiff.config_load`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Optional

from .errors import ConfigError


def _require(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


@dataclass(frozen=True)
class DataConfig:
    """Which images, how they are split between clients, and what is held out for evaluation."""

    dataset: Literal["digits", "synthetic", "mnist", "fashion_mnist", "cifar10", "svhn", "folder", "npz"] = "digits"
    image_size: int = 8
    synthetic_size: int = 60000  # synthetic: images (class templates plus noise; for dry runs, tests, benchmarks)
    synthetic_classes: int = 10
    root: Optional[str] = None  # real datasets: torchvision root folder, image folder, or the .npz file
    download: bool = False  # torchvision sets only: fetch missing files (needs internet)
    channels: Optional[int] = None  # None: the dataset's own; 1 or 3 converts greyscale <-> RGB
    npz_split: str = "train"  # npz (MedMNIST layout): reads <split>_images and <split>_labels
    partition: Literal["iid", "dirichlet", "shards", "quantity"] = "dirichlet"
    beta: float = 0.5
    shards_per_client: int = 2  # shards: label-sorted shards dealt to each client (McMahan et al. 2017)
    quantity_sigma: float = 1.0  # quantity: lognormal spread of client sizes, labels IID
    holdout_fraction: float = 0.1

    def __post_init__(self) -> None:
        _require(4 <= self.image_size <= 512, "data.image_size", f"must be in [4, 512], got {self.image_size}")
        _require(self.synthetic_size >= 1, "data.synthetic_size", f"must be >= 1, got {self.synthetic_size}")
        _require(self.synthetic_classes >= 1, "data.synthetic_classes",
                 f"must be >= 1, got {self.synthetic_classes}")
        _require(self.beta > 0, "data.beta", f"the Dirichlet concentration must be > 0, got {self.beta}")
        where = {"npz": "the .npz file (MedMNIST layout)", "folder": "the folder with one subfolder per class"}
        _require(self.root is not None or self.dataset in ("digits", "synthetic"), "data.root",
                 f"data.dataset={self.dataset} reads files from disk and data.root is not set; set it to "
                 f"{where.get(self.dataset, 'the folder that holds (or, with data.download: true, will hold) it')}")
        _require(self.channels in (None, 1, 3), "data.channels",
                 f"must be 1 (greyscale), 3 (RGB) or null (the dataset's own), got {self.channels}")
        _require(bool(self.npz_split), "data.npz_split", "must name a split such as train, val or test")
        _require(self.shards_per_client >= 1, "data.shards_per_client",
                 f"must be >= 1, got {self.shards_per_client}")
        _require(self.quantity_sigma >= 0, "data.quantity_sigma", f"must be >= 0, got {self.quantity_sigma}")
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
    """Virtual compute speed of a client, in training samples per virtual second; ``mean`` is the mean."""

    dist: Literal["constant", "lognormal", "pareto", "tiers"] = "constant"
    mean: float = 1000.0
    sigma: float = 0.5  # lognormal: std of log-speed
    shape: float = 2.0  # pareto: tail index alpha (> 1 for a finite mean)
    tier_fractions: tuple[float, ...] = ()  # tiers: share of clients per tier
    tier_speeds: tuple[float, ...] = ()  # tiers: speed per tier
    jitter: float = 0.0  # per-job lognormal noise on speed (std of log), mean 1

    def __post_init__(self) -> None:
        _require(self.mean > 0, "clients.speed.mean", f"must be > 0 samples/s, got {self.mean}")
        _require(self.sigma >= 0, "clients.speed.sigma", f"must be >= 0, got {self.sigma}")
        _require(self.shape > 1, "clients.speed.shape", f"the Pareto tail index must be > 1 (finite mean), "
                 f"got {self.shape}")
        _require(self.jitter >= 0, "clients.speed.jitter", f"must be >= 0, got {self.jitter}")
        if self.dist == "tiers":
            _require(len(self.tier_fractions) >= 1 and len(self.tier_fractions) == len(self.tier_speeds),
                     "clients.speed.tier_fractions", "tiers need tier_fractions and tier_speeds of equal, "
                     f"non-zero length; got {list(self.tier_fractions)} and {list(self.tier_speeds)}")
            _require(all(f >= 0 for f in self.tier_fractions) and abs(sum(self.tier_fractions) - 1) < 1e-6,
                     "clients.speed.tier_fractions", f"must be >= 0 and sum to 1, got {list(self.tier_fractions)}")
            _require(all(v > 0 for v in self.tier_speeds), "clients.speed.tier_speeds",
                     f"must all be > 0, got {list(self.tier_speeds)}")


@dataclass(frozen=True)
class NetworkConfig:
    """Each client's link: asymmetric bandwidth (megabits/s) and one-way latency per transfer."""

    down_mbps: float = 100.0
    up_mbps: float = 20.0
    latency_s: float = 0.05
    sigma: float = 0.0  # lognormal spread of per-client bandwidth (mean 1), the same factor up and down

    def __post_init__(self) -> None:
        _require(self.down_mbps > 0, "clients.network.down_mbps", f"must be > 0, got {self.down_mbps}")
        _require(self.up_mbps > 0, "clients.network.up_mbps", f"must be > 0, got {self.up_mbps}")
        _require(self.latency_s >= 0, "clients.network.latency_s", f"must be >= 0, got {self.latency_s}")
        _require(self.sigma >= 0, "clients.network.sigma", f"must be >= 0, got {self.sigma}")


@dataclass(frozen=True)
class AvailabilityConfig:
    """When clients are online: always; a coin per dispatch attempt; or an on/off process in virtual time."""

    mode: Literal["always", "bernoulli", "onoff"] = "always"
    p: float = 0.8  # bernoulli: chance that a client is online when asked
    retry_s: float = 1.0  # bernoulli: when no idle client is online, ask again this much later
    mean_on_s: float = 600.0  # onoff: mean length of an online period (exponential)
    mean_off_s: float = 300.0  # onoff: mean length of an offline period

    def __post_init__(self) -> None:
        _require(0 < self.p <= 1, "clients.availability.p", f"must be in (0, 1], got {self.p}")
        _require(self.retry_s > 0, "clients.availability.retry_s", f"must be > 0, got {self.retry_s}")
        _require(self.mean_on_s > 0, "clients.availability.mean_on_s", f"must be > 0, got {self.mean_on_s}")
        _require(self.mean_off_s >= 0, "clients.availability.mean_off_s", f"must be >= 0, got {self.mean_off_s}")


@dataclass(frozen=True)
class ClientsConfig:
    """The simulated population: how many, what each actor may use, how they straggle, go offline, drop out."""

    num_clients: int = 10
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    speed: SpeedConfig = field(default_factory=SpeedConfig)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    availability: AvailabilityConfig = field(default_factory=AvailabilityConfig)
    dropout: float = 0.0  # probability that a job fails at a uniformly drawn point of it
    trace: Optional[str] = None  # CSV: client_id, speed, down_mbps, up_mbps, latency_s[, mean_on_s, mean_off_s]
    slow_classes: tuple[int, ...] = ()  # tie speed to data: who holds most of these classes is slowest

    def __post_init__(self) -> None:
        _require(self.num_clients >= 1, "clients.num_clients", f"must be >= 1, got {self.num_clients}")
        _require(self.num_cpus > 0, "clients.num_cpus", f"must be > 0, got {self.num_cpus}")
        _require(self.num_gpus >= 0, "clients.num_gpus", f"must be >= 0, got {self.num_gpus}")
        _require(self.num_gpus <= 1 or float(self.num_gpus).is_integer(), "clients.num_gpus",
                 f"a fraction must be <= 1 (Ray packs fractions onto one GPU), got {self.num_gpus}")
        _require(0 <= self.dropout < 1, "clients.dropout", f"must be in [0, 1), got {self.dropout}")
        _require(all(c >= 0 for c in self.slow_classes), "clients.slow_classes",
                 f"class ids must be >= 0, got {list(self.slow_classes)}")


@dataclass(frozen=True)
class TrainConfig:
    """Local training on a client: one job = ``local_steps`` Adam steps (or ``local_epochs`` passes)."""

    local_steps: Optional[int] = 10
    local_epochs: Optional[float] = None
    batch_size: int = 32
    lr: float = 2e-3
    prox_mu: float = 0.0  # FedProx: proximal term mu/2 ||w - w_global||^2
    precision: Literal["fp32", "bf16"] = "fp32"  # bf16: autocast of forward and loss (GPU; works on CPU)
    channels_last: bool = False  # NHWC inputs (GPU convolutions)
    compile: bool = False  # torch.compile the UNet in each client actor (slow start; keep out of timings)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # GPU clients: keep the training set on the device (auto: when it is at most 2 GiB) so that a step
    # needs no host copy; "never" indexes it on the host and copies each batch
    data_on_device: Literal["auto", "always", "never"] = "auto"

    def __post_init__(self) -> None:
        _require((self.local_steps is None) != (self.local_epochs is None), "train.local_steps",
                 "set exactly one of train.local_steps and train.local_epochs (the other to null)")
        if self.local_steps is not None:
            _require(self.local_steps >= 1, "train.local_steps", f"must be >= 1, got {self.local_steps}")
        if self.local_epochs is not None:
            _require(self.local_epochs > 0, "train.local_epochs", f"must be > 0, got {self.local_epochs}")
        _require(self.batch_size >= 1, "train.batch_size", f"must be >= 1, got {self.batch_size}")
        _require(self.lr > 0, "train.lr", f"must be > 0, got {self.lr}")
        _require(self.prox_mu >= 0, "train.prox_mu", f"must be >= 0, got {self.prox_mu}")


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
class DPConfig:
    """Client-level differential privacy (DP-FedAvg, McMahan et al. 2018): clip each update, noise each sum."""

    enabled: bool = False
    clip_norm: float = 1.0  # C: every update is clipped to this L2 norm
    noise_multiplier: float = 1.0  # sigma: Gaussian noise of std sigma*C is added to each aggregated sum
    delta: float = 1e-5  # the delta of the (epsilon, delta) reported per evaluation

    def __post_init__(self) -> None:
        _require(self.clip_norm > 0, "strategy.dp.clip_norm", f"must be > 0, got {self.clip_norm}")
        _require(self.noise_multiplier >= 0, "strategy.dp.noise_multiplier",
                 f"must be >= 0, got {self.noise_multiplier}")
        _require(0 < self.delta < 1, "strategy.dp.delta", f"must be in (0, 1), got {self.delta}")


@dataclass(frozen=True)
class CompressionConfig:
    """What clients upload: the float32 delta, or a compressed form (the bytes feed the network model)."""

    name: Literal["none", "fp16", "int8", "topk"] = "none"
    fraction: float = 0.01  # topk: share of entries kept (the rest carried as error feedback)
    chunk: int = 4096  # int8: values per scale
    partial: tuple[str, ...] = ()  # exchange only these UNet parts, e.g. [up_blocks, conv_norm_out, conv_out]

    def __post_init__(self) -> None:
        _require(0 < self.fraction <= 1, "strategy.compression.fraction", f"must be in (0, 1], got {self.fraction}")
        _require(self.chunk >= 1, "strategy.compression.chunk", f"must be >= 1, got {self.chunk}")


@dataclass(frozen=True)
class StrategyConfig:
    """Server aggregation. Fields not used by the chosen strategy are ignored."""

    # a registered strategy (fedavg, fedasync, fedbuff, or one added with raydiff.register_strategy) or an
    # import path "package.module:ClassName" of a raydiff.Strategy subclass (raydiff.strategies.registry)
    name: str = "fedbuff"
    options: dict[str, Any] = field(default_factory=dict)  # keyword arguments of a user strategy's class
    concurrency: int = 8  # async: jobs in flight at once
    clients_per_round: int = 10  # fedavg: updates aggregated per round
    over_selection: float = 0.0  # fedavg: select ceil(clients_per_round * (1 + this)), keep the first to report
    deadline_s: Optional[float] = None  # fedavg: close the round this long after it starts; stragglers discarded
    server_lr: float = 1.0  # fedavg, fedbuff
    buffer_size: int = 4  # fedbuff: K
    staleness_exponent: float = 0.5  # fedbuff: weight 1/(1+s)^p
    alpha: float = 0.6  # fedasync mixing weight
    staleness: StalenessConfig = field(default_factory=StalenessConfig)
    max_staleness: Optional[int] = None  # fedasync, fedbuff: staler updates are rejected
    server_optimizer: Literal["sgd", "fedavgm", "fedadagrad", "fedadam", "fedyogi"] = "sgd"  # fedavg, fedbuff
    server_momentum: float = 0.9  # fedavgm
    server_beta1: float = 0.9  # fedadam, fedyogi
    server_beta2: float = 0.99  # fedadagrad, fedadam, fedyogi
    server_tau: float = 1e-3  # adaptivity (Reddi et al. 2021)
    norm_bound: Optional[float] = None  # updates with a larger L2 norm are clipped or rejected
    norm_mode: Literal["clip", "reject"] = "clip"
    ema_decay: Optional[float] = None  # keep an EMA of the global model on the server (DDPM practice)
    dp: DPConfig = field(default_factory=DPConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)

    def __post_init__(self) -> None:
        _require(self.concurrency >= 1, "strategy.concurrency", f"must be >= 1, got {self.concurrency}")
        _require(self.clients_per_round >= 1, "strategy.clients_per_round",
                 f"must be >= 1, got {self.clients_per_round}")
        _require(self.over_selection >= 0, "strategy.over_selection", f"must be >= 0, got {self.over_selection}")
        _require(self.deadline_s is None or self.deadline_s > 0, "strategy.deadline_s",
                 f"must be > 0 (or null for none), got {self.deadline_s}")
        _require(self.server_lr > 0, "strategy.server_lr", f"must be > 0, got {self.server_lr}")
        _require(self.buffer_size >= 1, "strategy.buffer_size", f"must be >= 1, got {self.buffer_size}")
        _require(self.staleness_exponent >= 0, "strategy.staleness_exponent",
                 f"must be >= 0, got {self.staleness_exponent}")
        _require(0 < self.alpha <= 1, "strategy.alpha", f"must be in (0, 1], got {self.alpha}")
        _require(self.max_staleness is None or self.max_staleness >= 0, "strategy.max_staleness",
                 f"must be >= 0 (or null), got {self.max_staleness}")
        _require(0 <= self.server_momentum < 1, "strategy.server_momentum", f"must be in [0, 1), got {self.server_momentum}")
        _require(0 <= self.server_beta1 < 1 and 0 <= self.server_beta2 < 1, "strategy.server_beta1",
                 f"server_beta1 and server_beta2 must be in [0, 1), got {self.server_beta1}, {self.server_beta2}")
        _require(self.server_tau > 0, "strategy.server_tau", f"must be > 0, got {self.server_tau}")
        _require(self.norm_bound is None or self.norm_bound > 0, "strategy.norm_bound",
                 f"must be > 0 (or null), got {self.norm_bound}")
        _require(self.ema_decay is None or 0 < self.ema_decay < 1, "strategy.ema_decay",
                 f"must be in (0, 1) (or null), got {self.ema_decay}")
        _require(bool(self.name.strip()), "strategy.name", "must name a strategy (fedavg, fedasync, fedbuff, or "
                 "an import path such as my_module:MyStrategy)")
        if ":" not in self.name:  # a registered name is checked now; an import path when the strategy is built
            from .strategies.registry import strategy_class

            strategy_class(self.name)


@dataclass(frozen=True)
class EvalConfig:
    """What the evaluator actor scores, and when (README: "Evaluation").

    Held-out loss is cheap and runs on the version (or virtual-time) schedule; FID-type metrics need
    samples, so they have their own, sparser schedule and always run on the final version.
    """

    every_versions: int = 25  # held-out loss every N versions (0: off; version 0 and the final one always)
    every_vtime: Optional[float] = None  # also: the first version at or after each multiple of this (virtual s)
    num_heldout: int = 128
    num_samples: int = 64
    sample_every_versions: int = 0  # 0: a grid of the final model only
    sampler: Literal["ddpm", "ddim"] = "ddpm"  # grids, FID samples and the final samples
    sample_steps: Optional[int] = None  # null: model.num_train_timesteps for ddpm, 50 for ddim
    fid: bool = True  # domain-judge FID, KID, precision, recall (and Inception FID if weights are given)
    fid_every_versions: int = 0  # 0: the final version only (FID needs fresh samples: costly)
    fid_num_samples: Optional[int] = None  # generated samples per FID; null: num_samples
    inception_weights: Optional[str] = None  # local torch-fidelity InceptionV3 .pth; null: no Inception FID
    cache_dir: str = "~/.cache/raydiff/judges"  # trained domain judges, keyed by a hash of the training set
    judge: bool = True  # digits only: score samples with a classifier trained on real digits
    export_ema: bool = True  # with strategy.ema_decay: model/ and the final samples use the EMA weights

    def __post_init__(self) -> None:
        _require(self.every_versions >= 0, "eval.every_versions", f"must be >= 0, got {self.every_versions}")
        _require(self.every_vtime is None or self.every_vtime > 0, "eval.every_vtime",
                 f"must be > 0 virtual seconds (or null), got {self.every_vtime}")
        _require(self.num_heldout >= 1, "eval.num_heldout", f"must be >= 1, got {self.num_heldout}")
        _require(self.num_samples >= 1, "eval.num_samples", f"must be >= 1, got {self.num_samples}")
        _require(self.sample_every_versions >= 0, "eval.sample_every_versions",
                 f"must be >= 0, got {self.sample_every_versions}")
        _require(self.sample_steps is None or self.sample_steps >= 1, "eval.sample_steps",
                 f"must be >= 1 (or null), got {self.sample_steps}")
        _require(self.fid_every_versions >= 0, "eval.fid_every_versions",
                 f"must be >= 0 (0: the final version only), got {self.fid_every_versions}")
        _require(self.fid_num_samples is None or self.fid_num_samples >= 2, "eval.fid_num_samples",
                 f"must be >= 2 (or null for num_samples), got {self.fid_num_samples}")
        _require(bool(self.cache_dir), "eval.cache_dir", "must name a folder")


@dataclass(frozen=True)
class RunConfig:
    """When to stop, how many actors, and which Ray cluster."""

    max_updates: Optional[int] = 200  # model versions
    max_vtime: Optional[float] = None  # virtual seconds
    actors: Optional[int] = None  # None: one per client while resources allow (at most the concurrency)
    address: Optional[str] = None  # Ray address; None starts (or reuses) a local Ray on 127.0.0.1
    num_cpus: Optional[int] = None  # local Ray only: CPUs to give it (None: all)
    dry_run: bool = False  # schedule without training: no model compute, no Ray; real update sizes
    server_node: Optional[str] = None  # node id or IP for the parameter server and evaluator (None: the head)
    checkpoint_every: Optional[int] = None  # versions between checkpoints (raydiff run --resume DIR continues)

    def __post_init__(self) -> None:
        _require(self.max_updates is not None or self.max_vtime is not None, "run.max_updates",
                 "set run.max_updates or run.max_vtime, or the run never stops")
        if self.max_updates is not None:
            _require(self.max_updates >= 1, "run.max_updates", f"must be >= 1, got {self.max_updates}")
        if self.max_vtime is not None:
            _require(self.max_vtime > 0, "run.max_vtime", f"must be > 0, got {self.max_vtime}")
        if self.actors is not None:
            _require(self.actors >= 1, "run.actors", f"must be >= 1, got {self.actors}")
        _require(self.checkpoint_every is None or self.checkpoint_every >= 1, "run.checkpoint_every",
                 f"must be >= 1 (or null), got {self.checkpoint_every}")


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
