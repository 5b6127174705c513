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
from .privacy.options import AuditOptions


def _require(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigError(f"{key}: {msg}")


INT64_MAX = 2**63 - 1  # integers go through numpy (seeds, counts): larger ones would overflow there


def _fmt(x: Optional[float]) -> str:
    if x is None:
        return ""
    if x == INT64_MAX:
        return "2^63-1"
    if float(x).is_integer() and abs(x) < 1e7:
        return str(int(x))
    return f"{x:g}"


@dataclass(frozen=True)
class Range:
    """A numeric field's allowed values: finite, and between ``lo`` and ``hi`` (open ends excluded).

    Each dataclass lists its numeric fields with their Range in ONE call of :func:`check_numbers` in
    ``__post_init__``: the check and the message ("must be a finite number in (0, 1], got inf") come
    from the same place, so no field can be range-checked in one spot and forgotten in another.
    """

    lo: Optional[float] = None
    hi: Optional[float] = None
    lo_open: bool = False
    hi_open: bool = False
    hint: str = ""  # appended to the message: what to do instead

    def describe(self) -> str:
        lo, hi = _fmt(self.lo), _fmt(self.hi)
        if self.lo is not None and self.hi is not None:
            return f"in {'(' if self.lo_open else '['}{lo}, {hi}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {lo}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {hi}"
        return "finite"

    def admits(self, v: float) -> bool:
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))


def check_numbers(obj: Any, section: str, **ranges: Range) -> None:
    """Every named field of ``obj`` (a number, a tuple of numbers, or None for "off") is finite and in its Range.

    A subnormal (denormal) float, below 2.2e-308 in size, is refused in every field: such a number passes an
    open lower bound of 0 and then overflows the first division it meets (``eval.every_vtime=5e-324``), or
    reaches Ray as a resource it cannot count (``clients.num_cpus=1e-320``). The Ranges themselves bound each
    field where its arithmetic stays finite.
    """
    import math
    import sys

    for name, rng in ranges.items():
        value = getattr(obj, name)
        if value is None:
            continue
        key = f"{section}.{name}" if section else name
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{key}: expected a number, got {v!r}")
            kind = "an integer" if isinstance(v, int) else "a finite number"
            if isinstance(v, float) and v != 0 and abs(v) < sys.float_info.min:
                raise ConfigError(
                    f"{key}: {v!r} is a subnormal (denormal) number, too small for any arithmetic to stay "
                    f"exact or finite; use a number {rng.describe()}" + (", or 0" if rng.admits(0) else "")
                )
            if not (isinstance(v, int) or math.isfinite(v)) or not rng.admits(v):
                shown = list(value) if isinstance(value, tuple) else v
                raise ConfigError(
                    f"{key}: must be {kind} {rng.describe()}, got {shown}" + (f"; {rng.hint}" if rng.hint else "")
                )


# Ranges shared by a config field and the device-trace column of the same meaning (hetero.read_trace), so a
# trace can never hold what the config refuses (a trace latency_s=1e308 gave finish_vtime=inf)
SPEED_RANGE = Range(1e-6, 1e12)  # training samples per virtual second
MBPS_RANGE = Range(1e-6, 1e9)
LATENCY_RANGE = Range(0, 1e6)
MEAN_ON_RANGE = Range(1e-6, 1e12)
MEAN_OFF_RANGE = Range(0, 1e12)
# Ray counts resources in units of 0.0001: a smaller positive amount is refused by Ray after it started
RAY_UNIT = 1e-4
MAX_CLASSES = 10**5  # class labels 0 .. MAX_CLASSES - 1 (a label is an index into per-class arrays)


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
        check_numbers(
            self,
            "data",
            image_size=Range(4, 512),
            synthetic_size=Range(1, 10**8),
            synthetic_classes=Range(1, MAX_CLASSES),
            shards_per_client=Range(1, 10**6),
            quantity_sigma=Range(0, 20),
            holdout_fraction=Range(0, 0.5, lo_open=True, hi_open=True),
            beta=Range(
                0,
                1e6,
                lo_open=True,
                hint="the Dirichlet concentration (beyond 1e6 the split is IID in all but name and the draw "
                "loses its precision); for IID data set data.partition: iid (beta: inf is refused, not read as IID)",
            ),
        )
        pixels = self.synthetic_size * self.image_size**2
        _require(
            self.dataset != "synthetic" or pixels <= 2**28,
            "data.synthetic_size",
            f"{self.synthetic_size} images of {self.image_size}x{self.image_size} are {pixels:,} pixels, "
            "more than 2^28 (1 GiB of float32 in memory): lower data.synthetic_size or data.image_size",
        )
        where = {"npz": "the .npz file (MedMNIST layout)", "folder": "the folder with one subfolder per class"}
        _require(
            self.root is not None or self.dataset in ("digits", "synthetic"),
            "data.root",
            f"data.dataset={self.dataset} reads files from disk and data.root is not set; set it to "
            f"{where.get(self.dataset, 'the folder that holds (or, with data.download: true, will hold) it')}",
        )
        _require(
            self.channels in (None, 1, 3),
            "data.channels",
            f"must be 1 (greyscale), 3 (RGB) or null (the dataset's own), got {self.channels}",
        )
        _require(bool(self.npz_split), "data.npz_split", "must name a split such as train, val or test")


@dataclass(frozen=True)
class ModelConfig:
    """A diffusers UNet2DModel preset and the DDPM noise schedule."""

    preset: Literal["tiny", "small", "ddpm-cifar10"] = "tiny"
    num_train_timesteps: int = 1000
    beta_schedule: Literal["linear", "scaled_linear", "squaredcos_cap_v2"] = "squaredcos_cap_v2"
    # class-conditional (issue 22): the UNet gets num_class_embeds = num_classes + 1 (the last one: "no label")
    # and trains with classifier-free guidance (train.label_dropout); sampling uses eval.guidance_scale
    conditional: bool = False

    def __post_init__(self) -> None:
        check_numbers(self, "model", num_train_timesteps=Range(2, 100_000))


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
        # speeds in samples per virtual second; log-spreads capped where exp() would overflow to inf
        check_numbers(
            self,
            "clients.speed",
            mean=SPEED_RANGE,
            sigma=Range(0, 10),
            jitter=Range(0, 10),
            shape=Range(1, 1e6, lo_open=True, hint="the Pareto tail index; > 1 for a finite mean"),
        )
        check_numbers(self, "clients.speed", tier_fractions=Range(0, 1), tier_speeds=SPEED_RANGE)
        if self.dist == "tiers":
            _require(
                len(self.tier_fractions) >= 1 and len(self.tier_fractions) == len(self.tier_speeds),
                "clients.speed.tier_fractions",
                "tiers need tier_fractions and tier_speeds of equal, "
                f"non-zero length; got {list(self.tier_fractions)} and {list(self.tier_speeds)}",
            )
            _require(
                abs(sum(self.tier_fractions) - 1) < 1e-6,
                "clients.speed.tier_fractions",
                f"must sum to 1, got {list(self.tier_fractions)}",
            )


@dataclass(frozen=True)
class NetworkConfig:
    """Each client's link: asymmetric bandwidth (megabits/s) and one-way latency per transfer."""

    down_mbps: float = 100.0
    up_mbps: float = 20.0
    latency_s: float = 0.05
    sigma: float = 0.0  # lognormal spread of per-client bandwidth (mean 1), the same factor up and down

    def __post_init__(self) -> None:
        check_numbers(
            self,
            "clients.network",
            down_mbps=MBPS_RANGE,
            up_mbps=MBPS_RANGE,
            latency_s=LATENCY_RANGE,
            sigma=Range(0, 10),
        )


@dataclass(frozen=True)
class AvailabilityConfig:
    """When clients are online: always; a coin per dispatch attempt; or an on/off process in virtual time."""

    mode: Literal["always", "bernoulli", "onoff"] = "always"
    p: float = 0.8  # bernoulli: chance that a client is online when asked
    retry_s: float = 1.0  # bernoulli: when no idle client is online, ask again this much later
    mean_on_s: float = 600.0  # onoff: mean length of an online period (exponential)
    mean_off_s: float = 300.0  # onoff: mean length of an offline period

    def __post_init__(self) -> None:
        check_numbers(
            self,
            "clients.availability",
            p=Range(0, 1, lo_open=True),
            retry_s=Range(1e-6, 1e9),
            mean_on_s=MEAN_ON_RANGE,
            mean_off_s=MEAN_OFF_RANGE,
        )


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
        check_numbers(
            self,
            "clients",
            num_clients=Range(1, 10**6),
            num_cpus=Range(RAY_UNIT, 4096, hint="Ray counts CPUs in units of 0.0001"),
            num_gpus=Range(0, 4096),
            dropout=Range(0, 1, hi_open=True),
            slow_classes=Range(0, 10**5),
        )
        _require(
            self.num_gpus == 0 or self.num_gpus >= RAY_UNIT,
            "clients.num_gpus",
            f"must be 0 or at least {RAY_UNIT} (Ray counts GPUs in units of 0.0001), got {self.num_gpus}",
        )
        _require(
            self.num_gpus <= 1 or float(self.num_gpus).is_integer(),
            "clients.num_gpus",
            f"a fraction must be <= 1 (Ray packs fractions onto one GPU), got {self.num_gpus}",
        )


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
    # grouped training (raydiff/grouped.py): an actor trains up to group_size jobs at once as ONE vectorised
    # computation; which jobs share a group is decided from the virtual schedule (sim/grouping.py). 1: one by one
    group_size: int = 1
    # model.conditional only: the chance that a training image's label is replaced by the "no label" class
    # (classifier-free guidance, Ho and Salimans 2022, who use 0.1-0.2), drawn from the job's own generator
    label_dropout: float = 0.1

    def __post_init__(self) -> None:
        _require(
            (self.local_steps is None) != (self.local_epochs is None),
            "train.local_steps",
            "set exactly one of train.local_steps and train.local_epochs (the other to null)",
        )
        check_numbers(
            self,
            "train",
            local_steps=Range(1, 10**9),
            local_epochs=Range(0, 1e6, lo_open=True),
            batch_size=Range(1, 10**6),
            lr=Range(0, 1e3, lo_open=True),
            prox_mu=Range(0, 1e6),
            group_size=Range(1, 4096),
            label_dropout=Range(0, 1, hi_open=True, hint="1 would never train the conditional model"),
        )
        _require(
            not (self.compile and self.group_size > 1),
            "train.group_size",
            f"{self.group_size} trains jobs through torch.func.vmap, which train.compile's compiled UNet "
            "does not go through; set train.compile to false, or train.group_size to 1",
        )


@dataclass(frozen=True)
class StalenessConfig:
    """How FedAsync discounts a stale update: s(staleness) multiplies the mixing weight alpha."""

    fn: Literal["constant", "polynomial", "hinge"] = "polynomial"
    a: float = 0.5
    b: int = 4

    def __post_init__(self) -> None:
        check_numbers(self, "strategy.staleness", a=Range(0, 1e3), b=Range(0, INT64_MAX))


@dataclass(frozen=True)
class DPConfig:
    """Client-level differential privacy (DP-FedAvg, McMahan et al. 2018): clip each update, noise each sum."""

    enabled: bool = False
    clip_norm: float = 1.0  # C: every update is clipped to this L2 norm
    noise_multiplier: float = 1.0  # sigma: Gaussian noise of std sigma*C is added to each aggregated sum
    delta: float = 1e-5  # the delta of the (epsilon, delta) reported per evaluation
    # the noise from OS entropy instead of the run's seed: deliberately not reproducible. With the default
    # (seeded) noise anyone holding config.yaml can regenerate and subtract it: the guarantee is then for
    # the simulated mechanism only (README, "Privacy"); set this for a model you publish.
    secret_noise: bool = False

    def __post_init__(self) -> None:
        check_numbers(
            self,
            "strategy.dp",
            clip_norm=Range(0, 1e12, lo_open=True),
            noise_multiplier=Range(0, 1e6),
            delta=Range(0, 1, lo_open=True, hi_open=True),
        )
        _require(  # the accounting squares sqrt(k)/sigma: below 1e-6 it overflows (1e-300 gave a ValueError)
            self.noise_multiplier == 0 or self.noise_multiplier >= 1e-6,
            "strategy.dp.noise_multiplier",
            f"must be 0 (no noise: epsilon is infinite) or at least 1e-6, got {self.noise_multiplier}",
        )


@dataclass(frozen=True)
class CompressionConfig:
    """What clients upload: the float32 delta, or a compressed form (the bytes feed the network model)."""

    name: Literal["none", "fp16", "int8", "topk"] = "none"
    fraction: float = 0.01  # topk: share of entries kept (the rest carried as error feedback)
    chunk: int = 4096  # int8: values per scale
    partial: tuple[str, ...] = ()  # exchange only these UNet parts, e.g. [up_blocks, conv_norm_out, conv_out]

    def __post_init__(self) -> None:
        check_numbers(self, "strategy.compression", fraction=Range(0, 1, lo_open=True), chunk=Range(1, 2**31 - 1))


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
    server_beta1: float = 0.9  # fedadagrad, fedadam, fedyogi: the momentum of the averaged delta
    server_beta2: float = 0.99  # fedadam, fedyogi (fedadagrad sums delta^2 and ignores it)
    server_tau: float = 1e-3  # adaptivity (Reddi et al. 2021)
    norm_bound: Optional[float] = None  # updates with a larger L2 norm are clipped or rejected
    norm_mode: Literal["clip", "reject"] = "clip"
    ema_decay: Optional[float] = None  # keep an EMA of the global model on the server (DDPM practice)
    dp: DPConfig = field(default_factory=DPConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)

    def __post_init__(self) -> None:
        unit = Range(0, 1, hi_open=True)
        check_numbers(
            self,
            "strategy",
            concurrency=Range(1, 10**6),
            clients_per_round=Range(1, 10**6),
            over_selection=Range(0, 100, hint="select ceil(clients_per_round * (1 + this)) clients"),
            deadline_s=Range(0, 1e12, lo_open=True, hint="or null for no deadline"),
            server_lr=Range(0, 1e6, lo_open=True),
            buffer_size=Range(1, 10**6),
            staleness_exponent=Range(0, 1e3),
            alpha=Range(0, 1, lo_open=True),
            max_staleness=Range(0, INT64_MAX, hint="or null for none"),
            server_momentum=unit,
            server_beta1=unit,
            server_beta2=unit,
            server_tau=Range(
                1e-18, 1e6, hint="the servers' float32 arithmetic needs tau^2 above float32's smallest normal"
            ),
            norm_bound=Range(0, 1e12, lo_open=True, hint="or null for none"),
            ema_decay=Range(0, 1, lo_open=True, hi_open=True, hint="or null for no EMA"),
        )
        _require(
            bool(self.name.strip()),
            "strategy.name",
            "must name a strategy (fedavg, fedasync, fedbuff, or an import path such as my_module:MyStrategy)",
        )
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
    fid: bool = True  # domain-classifier FID, KID, precision, recall (and Inception FID if weights are given)
    fid_every_versions: int = 0  # 0: the final version only (FID needs fresh samples: costly)
    fid_num_samples: Optional[int] = None  # generated samples per FID; null: num_samples
    inception_weights: Optional[str] = None  # local torch-fidelity InceptionV3 .pth; null: no Inception FID
    cache_dir: str = "~/.cache/raydiff/judges"  # trained domain classifiers, keyed by a hash of the training set
    judge: bool = True  # digits only: score samples with a classifier trained on real digits
    export_ema: bool = True  # with strategy.ema_decay: model/ and the final samples use the EMA weights
    privacy_audit: AuditOptions = field(default_factory=AuditOptions)  # end-of-run MIA and memorisation audit
    # --- class-conditional models and utility (issue 22; README "Class-conditional models") ---
    # classifier-free guidance weight w in eps_uncond + w (eps_cond - eps_uncond): 1 is the plain conditional
    # model, 0 the unconditional one. 2.0: on the conditional quickstart (DDIM 50) label fidelity / utility
    # ratio were 0.74 / 0.94 at w=1, 0.89 / 0.95 at 2, 0.67 / 0.88 at 3, 0.43 / 0.62 at 4 (docs/conditional.md)
    guidance_scale: float = 2.0
    # utility: a classifier trained on this many generated images per class, tested on the real held-out
    # images (train-synthetic-test-real), beside the same recipe trained on as many real ones; also the
    # samples of label_fidelity and evals_per_class.parquet. 0: off
    utility_samples_per_class: int = 50
    utility_sampler: Literal["ddpm", "ddim"] = "ddim"  # those samples' sampler: DDIM keeps them cheap
    # null: the sampler's default (see sample_steps); at most T. 25 DDIM steps: on the conditional quickstart
    # label fidelity 0.95 / utility ratio 0.92, against 0.89 / 0.95 with 50 steps, at half the cost
    utility_sample_steps: Optional[int] = 25

    def __post_init__(self) -> None:
        check_numbers(
            self,
            "eval",
            every_versions=Range(0, INT64_MAX, hint="0: off"),
            every_vtime=Range(1e-6, 1e15, hint="virtual seconds, or null"),
            num_heldout=Range(1, 10**7),
            num_samples=Range(1, 10**5),
            sample_every_versions=Range(0, INT64_MAX, hint="0: the final version only"),
            sample_steps=Range(1, 100_000, hint="or null for the sampler's default"),
            fid_every_versions=Range(0, INT64_MAX, hint="0: the final version only"),
            fid_num_samples=Range(2, 10**6, hint="or null for eval.num_samples"),
            guidance_scale=Range(0, 100),
            utility_samples_per_class=Range(0, 10**5, hint="0: no utility or per-class evaluation"),
            utility_sample_steps=Range(1, 100_000, hint="or null for the sampler's default"),
        )
        _require(bool(self.cache_dir), "eval.cache_dir", "must name a folder")
        # the audit's own checks (privacy/options.py) give the lower bounds; these add the upper ones, where a
        # count would exhaust memory or overflow (num_threads=10**30 reached torch as a C int)
        check_numbers(
            self.privacy_audit,
            "eval.privacy_audit",
            num_members=Range(2, 10**7),
            num_nonmembers=Range(2, 10**7),
            timesteps=Range(1, 10_000),
            noise_draws=Range(1, 10_000),
            t_range=Range(0, 1, hi_open=True),
            num_samples=Range(1, 10**6, hint="or null for eval.num_samples"),
            extraction_threshold=Range(0, 1, lo_open=True, hi_open=True),
            batch_size=Range(1, 10**6),
            num_threads=Range(1, 4096, hint="or null for torch's default"),
        )


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
    # --- live records and the wind-down (issue 23; README "Watching a run") ---
    # live trackers beside the run folder's own streamed records: TensorBoard event files, an MLflow run
    # (pip install 'raydiff[track]')
    log: tuple[Literal["tensorboard", "mlflow"], ...] = ()
    # after SIGINT/SIGTERM/SIGHUP: seconds to write the model, records, status and summary; what does not fit
    # (final sampling, FID, the audit) is skipped, marked not computed, and `raydiff eval RUN` computes it later
    stop_grace_s: float = 20.0

    def __post_init__(self) -> None:
        _require(
            self.max_updates is not None or self.max_vtime is not None,
            "run.max_updates",
            "set run.max_updates or run.max_vtime, or the run never stops",
        )
        check_numbers(
            self,
            "run",
            max_updates=Range(1, INT64_MAX),
            max_vtime=Range(0, 1e15, lo_open=True),
            actors=Range(1, 10**5),
            num_cpus=Range(1, 10**5, hint="or null for all of this machine's"),
            checkpoint_every=Range(1, INT64_MAX, hint="or null for no checkpoints"),
            stop_grace_s=Range(0, 86_400),
        )
        _require(len(set(self.log)) == len(self.log), "run.log", f"names a tracker twice: {list(self.log)}")


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

    def __post_init__(self) -> None:
        check_numbers(self, "", seed=Range(0, INT64_MAX))
        check_name(self.name, "name")


def check_name(name: str, key: str) -> None:
    """A name that becomes a folder name (runs/<name>-<time>, a sweep's runs/<name>): one path component."""
    bad = [c for c in name if c in "/\\" or ord(c) < 32 or ord(c) == 127]
    _require(
        bool(name.strip()) and not bad and name.strip(".") != "" and len(name) <= 200,
        key,
        f"{name!r} cannot be a folder name: use 1 to 200 characters without '/', '\\' or control "
        "characters, and not only dots",
    )
