"""The strategy API: an aggregation rule that also declares the scheduling it needs.

The orchestrator never looks at a strategy's name. It asks the strategy object (through
:meth:`Strategy.schedule`, read once when the run starts) whether it is round-based or
asynchronous, whether updates must carry their base vector, how many jobs are in flight and how
many updates make a version. A researcher's strategy subclasses :class:`Strategy`, implements
:meth:`Strategy.receive` (and :meth:`Strategy.end_round` if it is round-based), and plugs in by
import path (``strategy.name: my_module:MyStrategy``) or as an instance (``raydiff.run(...,
strategy=obj)``). Client-level DP, the norm bound and the EMA wrap any strategy (``wrappers.py``).

Pure numpy: a strategy never imports Ray, so every formula is unit-testable by hand.
"""

from __future__ import annotations

import inspect
import math
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Literal, Optional, TypeVar

import numpy as np

from ..errors import ConfigError

if typing.TYPE_CHECKING:
    from ..config import StrategyConfig
    from .server_opt import ServerOptimizer

S = TypeVar("S", bound="Strategy")
SumHook = Callable[[np.ndarray], None]


@dataclass(frozen=True)
class Update:
    """What a client sends back: its change to the base model it was given, and how much data made it.

    ``delta`` and ``base`` are READ-ONLY float32 arrays: under Ray they are views of the object store,
    shared with other readers, so ``update.delta *= w`` raises ``ValueError: output array is
    read-only``. Compute into a new array (``w * update.delta``) or into your own buffer
    (``acc += w * update.delta``).
    """

    client_id: int
    base_version: int
    num_samples: int
    delta: np.ndarray  # float32, x_client - x_base; read-only
    base: Optional[np.ndarray] = None  # x_base, given only to strategies whose ``needs_base`` is True; read-only


DECISION_STATUSES = ("applied", "buffered", "rejected")


@dataclass(frozen=True)
class Decision:
    """``applied``: x changed now (new version); ``buffered``: kept for a later version; ``rejected``: dropped.

    The status is checked here, when the decision is made: a misspelled one (``"buffer"``) would
    otherwise count as applied and silently make a new version. ``weight`` is recorded in
    events.parquet (column ``weight``), so a finite number is required.
    """

    status: Literal["applied", "buffered", "rejected"]
    weight: float = 0.0  # the effective weight the update received (or will receive)
    reason: str = ""

    def __post_init__(self) -> None:
        if self.status not in DECISION_STATUSES:
            raise ValueError(f"Decision status {self.status!r} is not one of {', '.join(map(repr, DECISION_STATUSES))}")
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, (int, float, np.integer, np.floating)) or not math.isfinite(w):
            raise ValueError(f"Decision weight must be a finite number, got {w!r}")
        if not isinstance(self.reason, str):
            raise ValueError(f"Decision reason must be a string, got {self.reason!r}")


@dataclass(frozen=True)
class RunContext:
    """What a run tells its strategy before it starts (:meth:`Strategy.bind`): the population size and
    the scheduling settings of the config (``strategy.concurrency``, ``clients_per_round``,
    ``over_selection``, ``deadline_s``), from which the default declarations are derived."""

    num_clients: int
    concurrency: int = 8
    clients_per_round: int = 10
    over_selection: float = 0.0
    deadline_s: Optional[float] = None


@dataclass(frozen=True)
class Schedule:
    """How the orchestrator drives a strategy: a snapshot of its declarations, taken when the run starts."""

    round_based: bool
    needs_base: bool
    jobs_in_flight: int
    updates_per_version: int
    round_reports: int  # round-based: the round closes once this many updates arrived
    deadline_s: Optional[float]  # round-based: the round closes this long after it starts (None: never)
    one_update_per_client: bool = False  # a client trains again only once its update reached a version


class Strategy(ABC):
    """An aggregation rule and the scheduling it asks for. ``x`` is the global float32 vector, changed in place.

    Subclasses implement :meth:`receive`. The declarations below have defaults derived from the
    run's config; override any of them with a class attribute or a property:

    - ``round_based`` (False): asynchronous strategies decide per update and the orchestrator keeps
      ``jobs_in_flight`` jobs out at all times; round-based ones buffer, and the orchestrator closes
      each round (all selected clients back, ``round_reports`` updates in, or the deadline) with
      :meth:`end_round`.
    - ``needs_base`` (False): each :class:`Update` carries the vector the client started from
      (FedAsync mixes ``base + delta``); the server keeps old versions alive for it.
    - ``jobs_in_flight``: asynchronous: ``strategy.concurrency``; round-based: the clients selected per
      round, ``ceil(round_reports * (1 + strategy.over_selection))``.
    - ``round_reports`` (``strategy.clients_per_round``) and ``round_deadline_s`` (``strategy.deadline_s``).
    - ``updates_per_version``: how many accepted updates make one version (1 when asynchronous,
      ``round_reports`` when round-based). A BUFFERED asynchronous strategy (one that answers
      ``buffered`` until K updates are in, like FedBuff) must declare K here: with client-level DP the
      orchestrator needs K distinct clients per version (it checks K <= clients.num_clients), and the
      progress report counts with it. The privacy accounting counts who really took part, from the events.
    - ``aggregates_sums`` (False): True promises that every version is made by :meth:`apply_aggregate`
      from a sum of received updates, each weighted at most 1 when its ``num_samples`` is 1. Client-level
      DP needs this (it noises that sum before anything else touches it).

    ``Update.delta`` and ``Update.base`` are read-only (object-store views): compute into new arrays.

    ``strategy.*`` fields: a class constructed from ``strategy.options`` (the default :meth:`from_config`)
    lists in ``config_fields`` the ``strategy.*`` fields it reads itself (none by default). Of the
    fields that only the built-ins read, ``max_staleness`` is enforced for any other strategy by a
    wrapper (:class:`~raydiff.strategies.wrappers.StalenessBounded`), and the rest
    (``server_lr``, ``server_optimizer``, ``buffer_size``, ...) are refused when set, never ignored.

    Checkpoints save a strategy through :meth:`state_dict` / :meth:`load_state_dict`; a strategy that
    keeps state between calls must implement both (nested dicts of numbers, strings, lists and numpy
    arrays), or runs with ``run.checkpoint_every`` are refused before they start.
    """

    #: ``strategy.*`` fields this class reads itself; None: the whole section, leaving unused fields be
    #: (the built-ins, so one scenario can switch among them with ``--set strategy.name=...``).
    config_fields: ClassVar[Optional[frozenset[str]]] = frozenset()

    # ------------------------------------------------------------------ declarations
    @property
    def round_based(self) -> bool:
        return False

    @property
    def needs_base(self) -> bool:
        return False

    @property
    def aggregates_sums(self) -> bool:
        return False

    @property
    def round_reports(self) -> int:
        return self.context.clients_per_round

    @property
    def round_deadline_s(self) -> Optional[float]:
        return self.context.deadline_s

    @property
    def jobs_in_flight(self) -> int:
        if self.round_based:
            return math.ceil(self.round_reports * (1 + self.context.over_selection))
        return self.context.concurrency

    @property
    def updates_per_version(self) -> int:
        return self.round_reports if self.round_based else 1

    @property
    def one_update_per_client(self) -> bool:
        """True when a client's update must reach a version before the client trains again (DP)."""
        return False

    def bind(self, context: RunContext) -> None:
        """Called once by the run before it starts (and before :meth:`schedule`)."""
        self._context = context

    @property
    def context(self) -> RunContext:
        ctx: Optional[RunContext] = getattr(self, "_context", None)
        if ctx is None:
            raise RuntimeError(f"{type(self).__name__} is not bound to a run: call bind(RunContext(...)) first")
        return ctx

    def schedule(self) -> Schedule:
        """The declarations as one frozen record (the orchestrator reads nothing else)."""
        return Schedule(
            round_based=bool(self.round_based),
            needs_base=bool(self.needs_base),
            jobs_in_flight=int(self.jobs_in_flight),
            updates_per_version=int(self.updates_per_version),
            round_reports=int(self.round_reports),
            deadline_s=self.round_deadline_s,
            one_update_per_client=bool(self.one_update_per_client),
        )

    # ------------------------------------------------------------------ the rule
    def start(self, x: np.ndarray) -> None:
        """The run's initial global vector, before any update (the EMA starts from it)."""

    @abstractmethod
    def receive(self, x: np.ndarray, version: int, update: Update) -> Decision:
        """Take one update that arrived while the server is at ``version``; change ``x`` in place to apply."""

    def end_round(self, x: np.ndarray) -> bool:
        """Close a round (round-based strategies); True if x changed. Asynchronous rules have no rounds."""
        return False

    def pending(self) -> int:
        """Updates received but not yet folded into x."""
        return 0

    def discard_pending(self) -> None:
        """Forget buffered updates (at the end of a run)."""

    def export_vector(self) -> Optional[np.ndarray]:
        """A vector to export and sample from instead of the global model (the EMA), or None."""
        return None

    # ------------------------------------------------------------------ sums (for DP)
    def add_sum_hook(self, hook: SumHook) -> None:
        """Run ``hook(total)`` on every aggregated sum, in place, before it is divided and applied."""
        self.__dict__.setdefault("_sum_hooks", []).append(hook)

    def apply_aggregate(self, x: np.ndarray, total: np.ndarray, denominator: float, optimizer: ServerOptimizer) -> None:
        """Make a version from a sum of weighted updates: sum hooks (DP noise) on ``total`` in place,
        then ``optimizer.step(x, total / denominator)``. ``total`` is overwritten (pass your own buffer).

        ``optimizer``: a server optimizer the strategy owns, e.g. ``raydiff.SGD(lr)`` (x += lr * mean,
        plain FedAvg/FedBuff), ``raydiff.FedAvgM``, ``FedAdagrad``, ``FedAdam``, ``FedYogi`` (all in
        :mod:`raydiff.strategies` and at the top level); save its ``state_dict()`` in the strategy's own."""
        for hook in self.__dict__.get("_sum_hooks", ()):
            hook(total)
        total /= np.float32(denominator)
        optimizer.step(x, total)

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs; nested dicts of numbers, strings, lists, numpy arrays."""
        raise NotImplementedError(
            f"{type(self).__name__} does not implement state_dict()/load_state_dict(), "
            "so a run with run.checkpoint_every cannot save it"
        )

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        raise NotImplementedError(f"{type(self).__name__} does not implement load_state_dict()")

    # ------------------------------------------------------------------ construction from config
    def options(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this instance with :meth:`from_options`.

        ``raydiff.run(..., strategy=obj)`` records them as ``strategy.options`` in config.yaml, so that
        file reruns the same strategy. The default reads each ``__init__`` parameter back from the
        attribute of the same name (``self.alpha`` for ``alpha``), which must hold a YAML value (number,
        string, bool, None, or lists/dicts of them); override this method when the constructor stores
        its arguments otherwise. A ConfigError names the parameter that cannot be read back.
        """
        out: dict[str, Any] = {}
        for name in _init_params(type(self)):
            if not hasattr(self, name):
                raise ConfigError(
                    f"strategy: {type(self).__name__}'s option {name!r} cannot be read back from the instance "
                    f"(it has no attribute {name!r}), so config.yaml could not rerun it: store the argument "
                    f"as self.{name}, or define {type(self).__name__}.options() returning the keyword arguments"
                )
            out[name] = getattr(self, name)
        return out

    @classmethod
    def from_config(cls: type[S], cfg: StrategyConfig) -> S:
        """Build from the ``strategy`` section. The default passes ``strategy.options`` to :meth:`from_options`;
        the built-ins read their own ``strategy.*`` fields instead."""
        return cls.from_options(cfg.options)

    @classmethod
    def refuse_options(cls, cfg: StrategyConfig, fields: str) -> None:
        """For strategies configured by ``strategy.*`` fields (the built-ins): options would be ignored."""
        if cfg.options:
            key = next(iter(cfg.options))
            raise ConfigError(
                f"strategy.options.{key}: unknown option of {cls.__name__}, which takes its settings "
                f"from the strategy section itself ({fields}); strategy.options is for strategies "
                "named by import path"
            )

    @classmethod
    def from_options(cls: type[S], options: Mapping[str, Any], where: str = "strategy.options") -> S:
        """``cls(**options)``, each value checked against ``__init__``'s type hints first.

        Errors name the field (``strategy.options.alpha: expected a number, got 'x'``); an exception
        the constructor raises (ValueError, TypeError) becomes a ConfigError naming the class.
        """
        from ..config_load import convert_value

        sig = inspect.signature(cls.__init__)
        try:
            hints = typing.get_type_hints(cls.__init__)
        except Exception:  # noqa: BLE001 - unresolvable annotations: take values as given
            hints = {}
        params = _init_params(cls)
        takes_any = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
        unknown = [k for k in options if k not in params and not takes_any]
        if unknown:
            allowed = ", ".join(params) or "none"
            raise ConfigError(f"{where}.{unknown[0]}: unknown option of {cls.__name__}; allowed: {allowed}")
        missing = [n for n, p in params.items() if p.default is p.empty and n not in options]
        if missing:
            raise ConfigError(
                f"{where}.{missing[0]}: required by {cls.__name__} and not given "
                f"(set it with --set {where}.{missing[0]}=...)"
            )
        kwargs = {k: convert_value(v, hints[k], f"{where}.{k}") if k in hints else v for k, v in options.items()}
        try:
            return cls(**kwargs)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"{where}: {cls.__name__} refused its options: {exc}") from None


def _init_params(cls: type[Strategy]) -> dict[str, inspect.Parameter]:
    """The named parameters of ``cls.__init__`` (not self, not ``*args`` / ``**kwargs``)."""
    sig = inspect.signature(cls.__init__)
    return {
        n: p for n, p in sig.parameters.items() if n != "self" and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }


def implements_state(strategy: Strategy) -> bool:
    """Whether ``strategy`` (and every strategy it wraps) overrides state_dict and load_state_dict."""
    s: Optional[Strategy] = strategy
    while s is not None:
        cls = type(s)
        if cls.state_dict is Strategy.state_dict or cls.load_state_dict is Strategy.load_state_dict:
            return False
        s = getattr(s, "inner", None)
    return True
