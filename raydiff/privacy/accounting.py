"""Client-level privacy accounting from what a run actually did: who took part in which noisy aggregation.

Two numbers, honestly named (README, "Differential privacy"):

- ``epsilon``, a rigorous per-client bound that needs no sampling assumption. In every aggregation a
  client takes part in, its clipped update (norm <= C) is one term of a sum that gets N(0, (sigma C)^2)
  noise per coordinate: a Gaussian mechanism of sensitivity C per update, i.e. sensitivity m*C for a
  client with m updates in one aggregation. Gaussian mechanisms compose exactly (Dong, Roth and Su
  2019, "Gaussian Differential Privacy", Cor. 3.3): the client's whole history is mu-GDP with
  ``mu = sqrt(sum_v m_v^2) / sigma`` (``sqrt(k) / sigma`` for k single participations), and the exact
  (epsilon, delta) curve of mu-GDP is Balle and Wang 2018's analytic Gaussian mechanism,
  ``delta(eps) = Phi(-eps/mu + mu/2) - e^eps Phi(-eps/mu - mu/2)``. The schedule (who takes part when)
  is treated as public: the bound says how well the model hides the CONTENT of a client's updates
  ("zero-out" neighbours: the client's updates replaced by zeros), and it holds for any scheduler.
  ``epsilon`` is the worst client's, ``epsilon_median`` the median over all clients.
- ``epsilon_sampled``, the DP-FedAvg estimate (McMahan et al. 2018): the subsampled Gaussian mechanism
  (RDP, Mironov et al. 2019), one step per aggregation, with the sampling rate the run really had.
  Amplification by subsampling needs each client to be picked at random with the same rate q in every
  aggregation (FedAvg with uniform selection and no availability skew); for other schedules it is an
  estimate, not a guarantee. ``uniform_selection`` needs both: a schedule that selects uniformly at
  random BY DESIGN (``selection_uniform``: round-based, no over-selection, no deadline, clients always
  available; FedBuff and FedAsync fill versions with whoever finishes first, so never: in the quickstart
  P(in version v+1 | in v) was 0.009 against 0.30 overall, which per-client counts cannot show), and
  per-client counts consistent with it (no client joined more often, nor less often, than uniform
  selection would make happen with probability 1%, each side Sidak-corrected over ALL clients, so
  clients that never joined count; no client had two updates in one aggregation). Then q = updates per
  aggregation / clients; else q = the busiest client's observed rate. Taking the busiest client's rate
  always would overstate q under uniform selection: of 1,000 clients picked at q = 0.1 for 150 rounds,
  the busiest is picked 18% of the time by chance.

Pure numpy/scipy here (no torch, no Ray); Opacus' RDP code is imported only when ``epsilon_sampled``
is asked for (it pulls in torch).
"""

from __future__ import annotations

import logging
import math
import numbers
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Optional

import numpy as np
from scipy import optimize, special, stats

log = logging.getLogger(__name__)

# RDP orders: Opacus' defaults (1.1 ... 10.9 in steps of 0.1, then 12 ... 63) plus dp-accounting's
# large orders, which matter for small epsilon (large sigma, small q): without them the best order is
# the largest one and the bound is loose (measured: sigma 5, q 0.01, one step: 0.103 with orders <= 63,
# 0.045 with 1024).
RDP_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10.0 for x in range(1, 100)] + [float(a) for a in range(12, 64)] + [128.0, 256.0, 512.0, 1024.0]
)


def _check_delta(delta: float) -> None:
    if not (isinstance(delta, numbers.Real) and 0 < delta < 1):
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")


def _check_sigma(noise_multiplier: float) -> None:
    if not (isinstance(noise_multiplier, numbers.Real) and 0 <= noise_multiplier < math.inf):
        raise ValueError(f"noise_multiplier must be finite and >= 0, got {noise_multiplier!r}")


def gdp_log_delta(mu: float, epsilon: float) -> float:
    """log delta(epsilon) of a mu-GDP mechanism, computed in log space so it stays exact for large mu.

    delta = Phi(a) - e^eps Phi(b), a = -eps/mu + mu/2, b = -eps/mu - mu/2; written as
    log Phi(a) + log(1 - exp(eps + log Phi(b) - log Phi(a))): both terms can be far below 1e-300.
    """
    a, b = -epsilon / mu + mu / 2, -epsilon / mu - mu / 2
    la = float(special.log_ndtr(a))
    r = epsilon + float(special.log_ndtr(b)) - la  # log of the subtracted share, < 0
    if r >= 0:  # only from rounding, when delta is ~0 relative to Phi(a)
        return -math.inf
    return la + math.log(-math.expm1(r))


def gdp_epsilon(mu: float, delta: float) -> float:
    """The smallest epsilon for which a mu-GDP mechanism is (epsilon, delta)-DP (exact, not a bound).

    mu = 0: 0; mu = inf (no noise): inf. Solved by Brent's method on log delta(eps), which is
    decreasing in eps; the bracket's top, mu^2/2 + mu * z with Phi(-z) = delta, already has
    Phi(a) = delta, so delta(top) < delta.
    """
    _check_delta(delta)
    if not mu >= 0:
        raise ValueError(f"mu must be >= 0, got {mu!r}")
    if mu == 0:
        return 0.0
    if math.isinf(mu):
        return math.inf
    target = math.log(delta)
    if gdp_log_delta(mu, 0.0) <= target:
        return 0.0
    hi = max(mu * mu / 2 + mu * float(-special.ndtri(delta)), 1e-12)
    while gdp_log_delta(mu, hi) > target:  # not reached for delta < 1/2; kept for safety
        hi *= 2
    f = lambda e: gdp_log_delta(mu, e) - target
    return float(optimize.brentq(f, 0.0, hi, xtol=1e-12, rtol=1e-14, maxiter=500))


def composed_mu(participations: float | np.ndarray, noise_multiplier: float) -> float | np.ndarray:
    """mu of a client's composed history: sqrt(sum_v m_v^2) / sigma, given ``participations`` = sum_v m_v^2.

    With one update per aggregation (m_v = 1) that is sqrt(k)/sigma for k participations: k Gaussian
    mechanisms of noise multiplier sigma are one of noise multiplier sigma/sqrt(k).
    """
    _check_sigma(noise_multiplier)
    p = np.asarray(participations, dtype=np.float64)
    if np.any(p < 0):
        raise ValueError("participations must be >= 0")
    with np.errstate(divide="ignore", invalid="ignore"):
        mu = (
            np.where(p == 0, 0.0, np.sqrt(p) / noise_multiplier)
            if noise_multiplier > 0
            else np.where(p == 0, 0.0, np.inf)
        )
    return float(mu) if mu.ndim == 0 else mu


def rigorous_epsilon(participations: float, noise_multiplier: float, delta: float) -> float:
    """epsilon of a client after ``participations`` (sum of m_v^2) aggregations with noise multiplier sigma.

    0 participations: 0; sigma = 0 with any participation: inf.
    """
    return gdp_epsilon(float(composed_mu(participations, noise_multiplier)), delta)


def sampled_epsilon(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """DP-FedAvg's estimate: ``steps`` subsampled Gaussian mechanisms at rate ``sample_rate`` (RDP).

    Opacus' RDP of the sampled Gaussian mechanism (Mironov, Talwar and Zhang 2019) at ``RDP_ORDERS``,
    converted with Balle et al. 2020, Thm. 21. Opacus rather than dp-accounting at run time: it is
    already a dependency, and its fractional-order series converges where dp-accounting's gives up
    and drops the order (sigma <= 0.8 with q >= 0.1: checked against direct numerical integration in
    tests/test_privacy_accounting.py), so dp-accounting stays the independent check.
    """
    _check_sigma(noise_multiplier)
    _check_delta(delta)
    if not 0 <= sample_rate <= 1:
        raise ValueError(f"sample_rate must be in [0, 1], got {sample_rate!r}")
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps!r}")
    if steps == 0 or sample_rate == 0:
        return 0.0
    if noise_multiplier == 0:
        return math.inf
    from opacus.accountants.analysis.rdp import compute_rdp, get_privacy_spent

    orders = list(RDP_ORDERS)
    rdp = compute_rdp(q=float(sample_rate), noise_multiplier=float(noise_multiplier), steps=int(steps), orders=orders)
    with warnings.catch_warnings():  # "optimal order is the smallest/largest alpha": the bound stays valid
        warnings.simplefilter("ignore", UserWarning)
        eps, _ = get_privacy_spent(orders=orders, rdp=rdp, delta=delta)
    return float(eps)


@dataclass(frozen=True)
class PrivacySpent:
    """The privacy a run had spent by ``version`` (the privacy columns of one evals.parquet row).

    ``sample_rate``: the q behind ``epsilon_sampled`` (module docstring); ``sample_rate_mean``: updates
    per aggregation / clients (what DP-FedAvg assumes); ``sample_rate_max``: the busiest client's
    aggregations joined / aggregations so far. ``uniform_selection``: the counts are consistent with
    uniform random selection of one update per client per aggregation (else ``epsilon_sampled`` is
    not even an estimate). ``updates_per_aggregation_max`` > 1: some client had m > 1 updates in one
    aggregation (sensitivity m*C, counted in ``epsilon``).
    """

    version: int
    epsilon: float
    epsilon_median: float
    epsilon_sampled: float
    delta: float
    sample_rate: float
    sample_rate_mean: float
    sample_rate_max: float
    uniform_selection: bool
    participations_max: int
    updates_per_aggregation_max: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> dict[str, Any]:
        """The summary.json fields (README, "The run folder")."""
        return {k: getattr(self, k) for k in SUMMARY_FIELDS}


# What summary.json reports of the final version (evals.parquet has every PrivacySpent field per row).
SUMMARY_FIELDS = (
    "epsilon",
    "epsilon_median",
    "epsilon_sampled",
    "delta",
    "sample_rate",
    "uniform_selection",
    "participations_max",
    "updates_per_aggregation_max",
)


def summary_fields(
    events: Any,
    num_clients: int,
    noise_multiplier: float,
    delta: float,
    version: int,
    selection_uniform: bool = True,
) -> dict[str, Any]:
    """summary.json's privacy fields: what the run had spent by ``version`` (its final version)."""
    (spent,) = privacy_over_versions(
        events, num_clients, noise_multiplier, delta, [version], selection_uniform=selection_uniform
    )
    return spent.summary()


def selection_is_uniform(
    round_based: bool, over_selection: float, deadline_s: Optional[float], availability: str
) -> bool:
    """Whether a schedule selects each aggregation's clients uniformly at random BY DESIGN: only a
    round-based strategy that waits for every selected client (no over-selection, no deadline: which
    of them report first depends on speed) from a population that is always available. Asynchronous
    strategies (FedBuff, FedAsync) fill versions with whoever finishes first."""
    return round_based and over_selection == 0 and deadline_s is None and availability == "always"


def _applied(events: Any) -> tuple[np.ndarray, np.ndarray]:
    """(client_id, applied_version) of every applied update, from a DataFrame or an iterable of rows."""
    if hasattr(events, "columns"):  # a pandas DataFrame (events.parquet)
        missing = {"client_id", "status", "applied_version"} - set(events.columns)
        if missing:
            raise ValueError(f"events lack the column(s) {sorted(missing)} (README: 'The run folder')")
        mask = (events["status"] == "applied").to_numpy()
        clients = events["client_id"].to_numpy()[mask]
        versions = events["applied_version"].to_numpy()[mask]
    else:
        rows = [r for r in events if r["status"] == "applied"]
        clients = np.array([r["client_id"] for r in rows])
        versions = np.array([r["applied_version"] for r in rows])
    if len(versions) and (np.any(np.isnan(versions.astype(np.float64))) or np.any(versions < 1)):
        raise ValueError("every applied update needs an applied_version >= 1")
    return clients.astype(np.int64), versions.astype(np.int64)


def privacy_over_versions(
    events: Any,
    num_clients: int,
    noise_multiplier: float,
    delta: float,
    versions: Optional[Iterable[int]] = None,
    selection_uniform: bool = True,
) -> list[PrivacySpent]:
    """Privacy spent by each of ``versions`` (default: every version that applied an update), from events.

    ``events``: events.parquet as a DataFrame, or rows with ``client_id, status, applied_version``.
    Every version is one noisy aggregation (FedAvg round, FedBuff flush), so by version v there were v
    of them. A client's participations count its applied updates; m updates of one client in one
    aggregation count m^2 towards ``epsilon`` (sensitivity m*C). Clients that never took part count as 0
    in ``epsilon_median``. Version 0 (the initial model) has spent nothing. ``selection_uniform``: the
    schedule selects uniformly at random by design (:func:`selection_is_uniform`); when False,
    ``uniform_selection`` is False and q is the busiest client's rate, whatever the counts say.
    """
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    _check_sigma(noise_multiplier)
    _check_delta(delta)
    clients, vers = _applied(events)
    if len(clients) and (clients.min() < 0 or clients.max() >= num_clients):
        raise ValueError(f"client ids must be in [0, {num_clients}), got {clients.min()}..{clients.max()}")
    # one entry per (version, client) with its multiplicity m, in version order
    pairs, mult = (
        np.unique(np.stack([vers, clients], axis=1), axis=0, return_counts=True)
        if len(vers)
        else (np.zeros((0, 2), np.int64), np.zeros(0, np.int64))
    )
    wanted = sorted(set(int(v) for v in (versions if versions is not None else np.unique(vers))))
    sq = np.zeros(num_clients, dtype=np.float64)  # sum of m_v^2 per client
    joined = np.zeros(num_clients, dtype=np.int64)  # aggregations joined per client
    updates = 0
    m_max = 0
    i = 0
    out = []
    for v in wanted:
        if v < 0:
            raise ValueError(f"versions must be >= 0, got {v}")
        while i < len(pairs) and pairs[i, 0] <= v:
            c, m = int(pairs[i, 1]), int(mult[i])
            sq[c] += m * m
            joined[c] += 1
            updates += m
            m_max = max(m_max, m)
            i += 1
        out.append(_spent(v, sq, joined, updates, m_max, num_clients, noise_multiplier, delta, selection_uniform))
    return out


UNIFORM_TEST_LEVEL = 0.01  # the busiest (or least busy) client's count rejects uniform selection below this


def _sidak(p1: float, num_clients: int) -> float:
    """P(at least one of ``num_clients`` independent clients has an event of probability ``p1``)."""
    return float(-math.expm1(num_clients * math.log1p(-p1))) if p1 < 1 else 1.0


def uniform_selection_p(busiest: int, versions: int, rate: float, num_clients: int) -> float:
    """P(some client joins >= ``busiest`` of ``versions`` aggregations) when each joins each one with
    probability ``rate`` independently: 1 - (1 - P(Bin(versions, rate) >= busiest))^clients."""
    return _sidak(float(stats.binom.sf(busiest - 1, versions, min(rate, 1.0))), num_clients)


def uniform_selection_p_low(least: int, versions: int, rate: float, num_clients: int) -> float:
    """P(some client joins <= ``least`` of ``versions`` aggregations) under the same independent model:
    1 - (1 - P(Bin(versions, rate) <= least))^clients. Catches clients that (almost) never join."""
    return _sidak(float(stats.binom.cdf(least, versions, min(rate, 1.0))), num_clients)


def _spent(
    v: int,
    sq: np.ndarray,
    joined: np.ndarray,
    updates: int,
    m_max: int,
    n: int,
    sigma: float,
    delta: float,
    by_design: bool = True,
) -> PrivacySpent:
    if v == 0 or updates == 0:
        return PrivacySpent(v, 0.0, 0.0, 0.0, delta, 0.0, 0.0, 0.0, by_design, 0, m_max)
    # epsilon is increasing in mu, so the max and the median need the solver at most three times
    order = np.sort(sq)
    eps_max = rigorous_epsilon(order[-1], sigma, delta)
    mid = n // 2
    if n % 2:
        eps_med = rigorous_epsilon(order[mid], sigma, delta)
    else:
        eps_med = 0.5 * (rigorous_epsilon(order[mid - 1], sigma, delta) + rigorous_epsilon(order[mid], sigma, delta))
    busiest, least = int(joined.max()), int(joined.min())  # over ALL clients: those that never joined count
    q_mean, q_max = updates / (v * n), busiest / v
    uniform = (
        by_design
        and m_max <= 1
        and uniform_selection_p(busiest, v, q_mean, n) >= UNIFORM_TEST_LEVEL
        and uniform_selection_p_low(least, v, q_mean, n) >= UNIFORM_TEST_LEVEL
    )
    q = q_mean if uniform else q_max
    return PrivacySpent(
        v,
        eps_max,
        eps_med,
        sampled_epsilon(sigma, min(q, 1.0), v, delta),
        delta,
        q,
        q_mean,
        q_max,
        uniform,
        busiest,
        m_max,
    )


def privacy_columns(
    evals: Sequence[Mapping[str, Any]],
    events: Any,
    num_clients: int,
    noise_multiplier: float,
    delta: float,
    selection_uniform: bool = True,
) -> list[dict[str, Any]]:
    """Each evals.parquet row with ``epsilon, epsilon_median, epsilon_sampled, delta`` (and the rates) added."""
    versions = [int(r["version"]) for r in evals]
    spent = {
        p.version: p
        for p in privacy_over_versions(
            events, num_clients, noise_multiplier, delta, versions, selection_uniform=selection_uniform
        )
    }
    return [
        dict(r, **{k: val for k, val in spent[int(r["version"])].as_dict().items() if k != "version"}) for r in evals
    ]


__all__ = [
    "RDP_ORDERS",
    "SUMMARY_FIELDS",
    "UNIFORM_TEST_LEVEL",
    "PrivacySpent",
    "composed_mu",
    "gdp_epsilon",
    "gdp_log_delta",
    "privacy_columns",
    "privacy_over_versions",
    "rigorous_epsilon",
    "sampled_epsilon",
    "selection_is_uniform",
    "summary_fields",
    "uniform_selection_p",
    "uniform_selection_p_low",
]
