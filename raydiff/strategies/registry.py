"""Which class ``strategy.name`` means, and the wrapped, bound strategy a run uses.

``strategy.name`` is a registered name (``fedavg``, ``fedasync``, ``fedbuff``, or one a user added
with :func:`register_strategy`) or an import path ``package.module:ClassName``. The module is
imported with the current folder on ``sys.path``, so ``raydiff run ... --set
strategy.name=my_strategy:LatestWins`` works from the folder that holds ``my_strategy.py``.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Optional, TypeVar, Union, overload

import numpy as np

from ..errors import ConfigError
from .base import RunContext, Strategy
from .dp import GaussianMechanism
from .fedasync import FedAsync
from .fedavg import FedAvg
from .fedbuff import FedBuff
from .update_checks import NormBound
from .wrappers import ClientDP, NormBounded, WithEMA

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
    if cfg.dp.enabled:
        if rng is None:
            raise ValueError("strategy.dp needs a random generator for its noise")
        try:
            s = ClientDP(s, GaussianMechanism(cfg.dp.noise_multiplier, cfg.dp.clip_norm, rng), mask=mask)
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
