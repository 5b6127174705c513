"""Which class ``strategy.name`` means, and the wrapped, bound strategy a run uses.

``strategy.name`` is a registered name (``fedavg``, ``fedasync``, ``fedbuff``, or one a user added
with :func:`register_strategy`) or an import path ``package.module:ClassName``. The module is
imported with the current folder on ``sys.path``, so ``raydiff run ... --set
strategy.name=my_strategy:LatestWins`` works from the folder that holds ``my_strategy.py``. Importing
runs the module's code, so a scenario that names an import path is code: the file is announced (a
warning naming it) before it is imported.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import logging
import os
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Optional, TypeVar, Union, overload

import numpy as np

from ..errors import ConfigError
from .base import RunContext, Strategy
from .dp import GaussianMechanism
from .fedasync import FedAsync
from .fedavg import FedAvg
from .fedbuff import FedBuff
from .update_checks import NormBound
from .wrappers import ClientDP, NormBounded, StalenessBounded, WithEMA

if TYPE_CHECKING:
    from ..config import StrategyConfig

log = logging.getLogger(__name__)

C = TypeVar("C", bound=type[Strategy])
_REGISTRY: dict[str, type[Strategy]] = {}


@overload
def register_strategy(name: str, cls: C) -> C: ...
@overload
def register_strategy(name: str, cls: None = None) -> Callable[[C], C]: ...


def register_strategy(name: str, cls: Optional[C] = None) -> Union[C, Callable[[C], C]]:
    """Make ``strategy.name: <name>`` mean ``cls``; usable as a decorator (``@register_strategy("mine")``).

    Registering is per process: a name registered in a notebook is known to runs started there.
    Registering a different class under a taken name raises ValueError.
    """
    if not name or ":" in name or name != name.strip():
        raise ValueError(f"strategy names are non-empty and contain no ':' or surrounding spaces, got {name!r}")

    def add(c: C) -> C:
        if not (isinstance(c, type) and issubclass(c, Strategy)):
            raise TypeError(f"register_strategy({name!r}): {c!r} is not a subclass of raydiff.Strategy")
        old = _REGISTRY.get(name)
        if old is not None and old is not c:
            raise ValueError(f"strategy name {name!r} is already registered for {old.__module__}.{old.__qualname__}")
        _REGISTRY[name] = c
        return c

    return add if cls is None else add(cls)


def registered_strategies() -> tuple[str, ...]:
    return tuple(_REGISTRY)


def strategy_class(name: str) -> type[Strategy]:
    """The class behind ``strategy.name``; a ConfigError naming the field if there is none."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" not in name:
        raise ConfigError(
            f"strategy.name: {name!r} is not one of {', '.join(_REGISTRY)} (the registered "
            "strategies), nor an import path such as 'my_module:MyStrategy'"
        )
    module_name, _, attr = name.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"strategy.name: {name!r} is not an import path 'package.module:ClassName'")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # a user's module next to where they run raydiff
    _announce(name, module_name)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(
            f"strategy.name: cannot import module {module_name!r} ({exc}); run from the folder "
            "that holds it, or put it on PYTHONPATH"
        ) from None
    except Exception as exc:  # noqa: BLE001 - the user's module raised while importing
        raise ConfigError(f"strategy.name: importing {module_name!r} raised {type(exc).__name__}: {exc}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ConfigError(f"strategy.name: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    if not (isinstance(obj, type) and issubclass(obj, Strategy)):
        raise ConfigError(f"strategy.name: {name!r} is {obj!r}, not a subclass of raydiff.Strategy")
    if getattr(obj, "__abstractmethods__", None):
        missing = ", ".join(sorted(obj.__abstractmethods__))
        raise ConfigError(f"strategy.name: {name!r} does not implement {missing} (a Strategy must define receive)")
    return obj


_ANNOUNCED: set[str] = set()


def _announce(name: str, module_name: str) -> None:
    """Say which file ``strategy.name`` makes raydiff import, BEFORE importing it (importing runs its code).

    Finding the top-level package's file imports nothing; a dotted name's inner modules are found by
    the import itself, so the top-level file (or, for a module already imported, its own) is named.
    Once per module and process."""
    if module_name in _ANNOUNCED:
        return
    _ANNOUNCED.add(module_name)
    loaded = sys.modules.get(module_name)
    if loaded is not None:
        where = getattr(loaded, "__file__", None) or "a module already imported in this process"
    else:
        top = module_name.split(".")[0]
        try:
            spec = importlib.util.find_spec(top)
        except (ImportError, ValueError):
            spec = None
        if spec is None:
            return  # nothing to import: the ImportError below names the module
        where = spec.origin or ", ".join(spec.submodule_search_locations or []) or top
        if top != module_name:
            where = f"package {top!r} at {where}"
    log.warning(
        "strategy.name %r: importing module %r from %s (importing runs that file's code: a scenario that "
        "names an import path is code, run it only if you trust it)",
        name,
        module_name,
        where,
    )


# strategy.* fields that only the built-ins read (each reads its own; README, "Configuration").
# max_staleness is enforced for every other strategy by a wrapper; the rest are refused when set.
BUILTIN_ONLY_FIELDS = (
    "server_lr",
    "server_optimizer",
    "server_momentum",
    "server_beta1",
    "server_beta2",
    "server_tau",
    "buffer_size",
    "staleness_exponent",
    "alpha",
    "staleness",
)


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def unused_fields(cfg: StrategyConfig, cls: type[Strategy]) -> list[str]:
    """The ``strategy.*`` fields set to a non-default value that ``cls`` does not read (built-ins: none)."""
    reads = cls.config_fields
    if reads is None:
        return []
    defaults = {f.name: _default(f) for f in dataclasses.fields(cfg)}
    return [k for k in BUILTIN_ONLY_FIELDS if k not in reads and getattr(cfg, k) != defaults[k]]


def check_fields(cfg: StrategyConfig, cls: type[Strategy]) -> None:
    """A ConfigError for the first ``strategy.*`` field that ``cls`` would silently ignore."""
    unused = unused_fields(cfg, cls)
    if unused:
        k = unused[0]
        raise ConfigError(
            f"strategy.{k}: {cls.__name__} does not use it ({k} is read by the built-in strategies "
            f"fedavg, fedasync, fedbuff only), so it would be ignored; give {cls.__name__}'s own "
            "settings in strategy.options, or remove the field"
        )


def _plain(v: Any, where: str) -> Any:
    """``v`` as a YAML value (NumPy scalars made Python), or a ConfigError naming ``where``."""
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    if isinstance(v, (list, tuple)):
        return [_plain(x, f"{where}[{i}]") for i, x in enumerate(v)]
    if isinstance(v, Mapping) and all(isinstance(k, str) for k in v):
        return {k: _plain(x, f"{where}.{k}") for k, x in v.items()}
    raise ConfigError(
        f"{where}: a {type(v).__name__} cannot be written to config.yaml (numbers, strings, bools, "
        "None, lists and dicts can); define options() on the strategy class to return YAML values"
    )


def instance_options(strategy: Strategy) -> dict[str, Any]:
    """What config.yaml records as ``strategy.options`` for ``raydiff.run(..., strategy=obj)``: the options
    that rebuild ``obj`` (:meth:`Strategy.options`), checked to be YAML values that its class accepts.

    A class configured by the strategy section itself (it overrides ``from_config``, as the built-ins
    do) cannot be recorded from an instance: a ConfigError says to name it instead."""
    cls = type(strategy)
    if getattr(cls.from_config, "__func__", None) is not getattr(Strategy.from_config, "__func__", None):
        raise ConfigError(
            f"strategy: a {cls.__name__} instance takes its settings from the strategy section "
            f"({cls.__name__}.from_config), which config.yaml cannot reproduce from an instance; name the "
            "strategy with strategy.name and set its strategy.* fields instead"
        )
    own = getattr(strategy, "options", None)  # an instance attribute named options would shadow the method
    raw = own() if callable(own) else Strategy.options(strategy)
    opts: dict[str, Any] = _plain(dict(raw), "strategy.options")
    cls.from_options(opts)  # the recorded options rebuild the class (ConfigError naming the field if not)
    return opts


def build_strategy(
    cfg: StrategyConfig,
    num_clients: int,
    rng: Optional[np.random.Generator] = None,
    mask: Optional[np.ndarray] = None,
    base: Optional[Strategy] = None,
) -> Strategy:
    """The strategy a run uses: ``base`` (or the class ``cfg.name`` names, built from the config), wrapped
    by client-level DP, the norm bound and the EMA as configured, and bound to the run's scheduling.

    ``rng`` draws the DP noise (required with ``cfg.dp.enabled``); ``mask`` restricts that noise to
    the exchanged coordinates (``compression.partial``). Errors are ConfigErrors naming the field.
    """
    s = base if base is not None else strategy_class(cfg.name).from_config(cfg)
    if not isinstance(s, Strategy):
        raise ConfigError(f"strategy: {s!r} is not a raydiff.Strategy")
    check_fields(cfg, type(s))
    reads = type(s).config_fields
    if cfg.max_staleness is not None and reads is not None and "max_staleness" not in reads:
        s = StalenessBounded(s, cfg.max_staleness)  # the strategy does not bound staleness itself
    if cfg.dp.enabled:
        if cfg.norm_bound is not None and cfg.norm_mode == "reject":
            raise ConfigError(
                "strategy.norm_mode: 'reject' cannot be combined with strategy.dp: whether an update is "
                "rejected depends on its data, the rejection is published in events.parquet, and the "
                "privacy accounting does not count it. Use norm_mode: clip (DP clips every update to "
                "strategy.dp.clip_norm anyway), or no norm_bound"
            )
        if rng is None and not cfg.dp.secret_noise:
            raise ValueError("strategy.dp needs a random generator for its noise")
        noise_rng = np.random.default_rng() if cfg.dp.secret_noise or rng is None else rng  # OS entropy
        try:
            mech = GaussianMechanism(cfg.dp.noise_multiplier, cfg.dp.clip_norm, noise_rng, secret=cfg.dp.secret_noise)
            s = ClientDP(s, mech, mask=mask)
        except ValueError as exc:
            raise ConfigError(f"strategy.dp.enabled: {exc}") from None
    if cfg.norm_bound is not None:
        s = NormBounded(s, NormBound(cfg.norm_bound, cfg.norm_mode))
    if cfg.ema_decay is not None:
        s = WithEMA(s, cfg.ema_decay)
    s.bind(
        RunContext(
            num_clients=num_clients,
            concurrency=cfg.concurrency,
            clients_per_round=cfg.clients_per_round,
            over_selection=cfg.over_selection,
            deadline_s=cfg.deadline_s,
        )
    )
    return s


register_strategy("fedavg", FedAvg)
register_strategy("fedasync", FedAsync)
register_strategy("fedbuff", FedBuff)
