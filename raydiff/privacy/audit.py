"""An empirical privacy audit of a trained DDPM: does the model give away who was in the training set, or
reproduce training images?

Two attacks a hospital's data-protection officer would ask about (README, "Privacy audit"):

- **Membership inference**, the loss-threshold attack (Yeom et al. 2018; Carlini et al. 2022,
  "Membership Inference Attacks From First Principles"; for diffusion models Matsumoto et al. 2023 and
  SecMI, Duan et al. 2023): a trained model denoises its training images better than fresh ones. Each
  image's score is minus its mean log denoising loss over fixed (t, noise) pairs drawn from the seed;
  the attack's AUC over members (training images) and non-members (held-out images) is 0.5 for a model
  that leaks nothing. Per client, non-members are re-weighted to the client's class mix, so a client
  holding only 0s and 1s is compared with held-out 0s and 1s, not with the 8s the model finds harder.
- **Memorisation** (Carlini et al. 2023, "Extracting Training Data from Diffusion Models"): for each
  generated sample, the L2 distance to its nearest training image over the distance to its nearest
  held-out image. A sample under ``extraction_threshold`` (1/3) is "extracted". The same statistic for
  real held-out images (against the training set and the other held-out images) is reported beside it
  (``*_null``): what a perfect generator that never saw the training set would score. The training set
  is larger than the held-out set, so even that null is below 1.

Torch, no Ray. :func:`audit_model` works on arrays and a module; :func:`audit_run_folder` rebuilds
everything from a finished run folder, as the runner does.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from .options import AuditOptions

log = logging.getLogger(__name__)

DEFAULT_OPTIONS = AuditOptions()
AUDIT_STREAM = 0xA0D1  # np.random.default_rng([seed, AUDIT_STREAM]): member subsets, (t, noise) pairs
NULL_QUERIES = 256  # held-out images scored for the memorisation null (each one costs a pass over the training set)
PER_CLIENT_COLUMNS = ("client_id", "num_samples", "num_scored", "mia_auc", "mia_auc_se", "mean_log_loss")
# privacy.parquet's per-class rows (rare classes memorise first): client_id -1, "class" the class; the
# per-client rows have class -1. A "scope" column says which ("client" or "class").
PER_CLASS_COLUMNS = ("scope", "class")
SUMMARY_FIELDS = (
    "mia_auc",
    "mia_auc_se",
    "mia_tpr_at_1pct_fpr",
    "mia_num_members",
    "mia_num_nonmembers",
    "memorization_ratio_median",
    "memorization_ratio_median_null",
    "extraction_rate",
    "extraction_rate_null",
    "extraction_threshold",
    "privacy_audit_samples",
    "privacy_audit_seconds",
)


# --- attack statistics (pure numpy) -------------------------------------------------------------------


def membership_auc(member: np.ndarray, nonmember: np.ndarray, nonmember_weights: Optional[np.ndarray] = None) -> float:
    """P(score of a member > score of a non-member), ties counted 1/2: the Mann-Whitney U / (n1 n0).

    ``nonmember_weights`` re-weight the non-members (class matching); each member counts once. NaN if
    either side is empty (or has zero total weight).
    """
    a = np.asarray(member, dtype=np.float64)
    b = np.asarray(nonmember, dtype=np.float64)
    w = np.ones(len(b)) if nonmember_weights is None else np.asarray(nonmember_weights, dtype=np.float64)
    if len(w) != len(b) or np.any(w < 0):
        raise ValueError("nonmember_weights must be one non-negative weight per non-member")
    if len(a) == 0 or len(b) == 0 or w.sum() <= 0:
        return math.nan
    order = np.argsort(b, kind="stable")
    bs, cw = b[order], np.concatenate([[0.0], np.cumsum(w[order])])
    below = cw[np.searchsorted(bs, a, side="left")]
    equal = cw[np.searchsorted(bs, a, side="right")] - below
    return float((below + 0.5 * equal).sum() / (len(a) * cw[-1]))


def auc_standard_error(auc: float, n_members: int, n_nonmembers: float) -> float:
    """Hanley and McNeil's (1982) standard error of an AUC; ``n_nonmembers`` may be an effective count."""
    if math.isnan(auc) or n_members < 1 or n_nonmembers < 1:
        return math.nan
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (n_members - 1) * (q1 - auc * auc) + (n_nonmembers - 1) * (q2 - auc * auc)) / (
        n_members * n_nonmembers
    )
    return float(math.sqrt(max(var, 0.0)))


def tpr_at_fpr(
    member: np.ndarray, nonmember: np.ndarray, fpr: float = 0.01, nonmember_weights: Optional[np.ndarray] = None
) -> float:
    """The attack's true-positive rate at a false-positive rate of at most ``fpr`` (Carlini et al. 2022's metric).

    Over every threshold tau ("member if score >= tau", tau from all scores and +inf), the largest
    share of members above tau among those with (weighted) share of non-members above tau <= ``fpr``.
    With n non-members it resolves FPR only in steps of 1/n: read it with ``mia_num_nonmembers``.
    """
    a = np.asarray(member, dtype=np.float64)
    b = np.asarray(nonmember, dtype=np.float64)
    w = np.ones(len(b)) if nonmember_weights is None else np.asarray(nonmember_weights, dtype=np.float64)
    if len(a) == 0 or len(b) == 0 or w.sum() <= 0:
        return math.nan
    taus = np.unique(np.concatenate([a, b]))
    order = np.argsort(b, kind="stable")
    bs, cw = b[order], np.concatenate([[0.0], np.cumsum(w[order])])
    fp = (cw[-1] - cw[np.searchsorted(bs, taus, side="left")]) / cw[-1]  # weighted share of b >= tau
    tp = (len(a) - np.searchsorted(np.sort(a), taus, side="left")) / len(a)
    ok = fp <= fpr + 1e-12
    return float(tp[ok].max()) if ok.any() else 0.0


def class_matching_weights(member_labels: np.ndarray, nonmember_labels: np.ndarray) -> np.ndarray:
    """w_j = p_members(class_j) / p_nonmembers(class_j): non-members re-weighted to the members' class mix."""
    m = np.asarray(member_labels)
    n = np.asarray(nonmember_labels)
    classes, counts = np.unique(n, return_counts=True)
    p_non = dict(zip(classes.tolist(), (counts / len(n)).tolist()))
    mc, mcounts = np.unique(m, return_counts=True)
    p_mem = dict(zip(mc.tolist(), (mcounts / max(len(m), 1)).tolist()))
    return np.array([p_mem.get(c, 0.0) / p_non[c] for c in n.tolist()], dtype=np.float64)


def nearest_distances(
    queries: np.ndarray, refs: np.ndarray, self_index: Optional[np.ndarray] = None, chunk: int = 1024
) -> np.ndarray:
    """The L2 distance from each query to its nearest reference (flattened images), in float64.

    ``self_index[k]``: the row of ``refs`` that IS query k, skipped (leave one out).
    """
    q = np.asarray(queries, dtype=np.float64).reshape(len(queries), -1)
    r = np.asarray(refs, dtype=np.float64).reshape(len(refs), -1)
    rr = (r * r).sum(1)
    out = np.empty(len(q))
    for s in range(0, len(q), chunk):
        qq = q[s : s + chunk]
        d2 = (qq * qq).sum(1)[:, None] + rr[None, :] - 2.0 * qq @ r.T
        if self_index is not None:
            d2[np.arange(len(qq)), np.asarray(self_index)[s : s + chunk]] = np.inf
        out[s : s + chunk] = np.sqrt(np.maximum(d2.min(1), 0.0))
    return out


# --- model side (torch) -------------------------------------------------------------------------------


def _module(model: Any) -> torch.nn.Module:
    """A raydiff FlatModel's module, or the module itself."""
    return model.module if hasattr(model, "flat") and hasattr(model, "module") else model


@torch.no_grad()
def membership_scores(
    model: Any,
    scheduler,
    images: np.ndarray,
    seed: int,
    options: AuditOptions = DEFAULT_OPTIONS,
    device: torch.device | str = "cpu",
    labels: Optional[np.ndarray] = None,
) -> np.ndarray:
    """Per image: minus its mean log denoising loss over ``timesteps x noise_draws`` fixed (t, noise) pairs.

    ``labels``: a class-conditional model is scored given each image's true class (the attacker who knows a
    record knows its label: the stronger attack).

    The log makes every timestep count alike (the loss at small t is ~10x the loss at large t). Higher
    score = more member-like. The noise comes from ``seed`` only, so two models (or runs) are scored on
    the very same pairs.
    """
    net = _module(model)
    net.eval()
    T = scheduler.config.num_train_timesteps
    gen = torch.Generator().manual_seed(int(np.random.default_rng([seed, AUDIT_STREAM, 1]).integers(2**62)))
    x_all = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))
    total = torch.zeros(len(x_all), dtype=torch.float64)
    pairs = 0
    for t in options.timestep_grid(T):
        for _ in range(options.noise_draws):
            noise_all = torch.randn(x_all.shape, generator=gen)
            for s in range(0, len(x_all), options.batch_size):
                x0 = x_all[s : s + options.batch_size].to(device)
                noise = noise_all[s : s + options.batch_size].to(device)
                tt = torch.full((len(x0),), t, dtype=torch.long, device=device)
                if labels is None:
                    pred = net(scheduler.add_noise(x0, noise, tt), tt).sample
                else:
                    y = torch.from_numpy(np.asarray(labels[s : s + options.batch_size], dtype=np.int64)).to(device)
                    pred = net(scheduler.add_noise(x0, noise, tt), tt, class_labels=y).sample
                loss = (pred.float() - noise).pow(2).flatten(1).mean(1)
                total[s : s + len(x0)] += torch.log(loss.clamp_min(1e-30)).double().cpu()
            pairs += 1
    scores = -(total / pairs).numpy()
    # a non-finite loss (a diverged model) is the least member-like score, not a NaN that breaks the ranking
    return np.where(np.isnan(scores), -np.inf, scores)


# --- the audit ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditResult:
    """The audit's numbers (``summary()``: the summary.json fields) and the arrays behind its plot."""

    mia_auc: float
    mia_auc_se: float
    mia_tpr_at_1pct_fpr: float
    mia_num_members: int
    mia_num_nonmembers: int
    memorization_ratio_median: float
    memorization_ratio_median_null: float
    extraction_rate: float
    extraction_rate_null: float
    extraction_threshold: float
    privacy_audit_samples: int
    privacy_audit_seconds: float
    per_client: Any = field(repr=False, compare=False)  # pandas DataFrame, PER_CLIENT_COLUMNS
    member_scores: np.ndarray = field(repr=False, compare=False)
    nonmember_scores: np.ndarray = field(repr=False, compare=False)
    ratios: np.ndarray = field(repr=False, compare=False)  # per generated sample
    null_ratios: np.ndarray = field(repr=False, compare=False)  # per held-out image (the null)
    # per class (labelled data): members of class k against non-members of class k; None without labels
    per_class: Any = field(default=None, repr=False, compare=False)
    conditional: bool = field(default=False, compare=False)  # the audited model was class-conditional

    def table(self) -> Any:
        """privacy.parquet: the per-client rows; a class-conditional model's audit adds one row per class
        (``scope`` "class", ``client_id`` -1; the client rows get ``scope`` "client", ``class`` -1)."""
        import pandas as pd

        if not self.conditional or self.per_class is None:
            return self.per_client
        clients = self.per_client.assign(scope="client", **{"class": -1})
        return pd.concat([clients, self.per_class], ignore_index=True)

    def summary(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in SUMMARY_FIELDS}


def _subset(n: int, cap: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= cap else np.sort(rng.choice(n, cap, replace=False))


def memorization(
    samples: np.ndarray, train_images: np.ndarray, held_images: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """(ratio per generated sample, ratio per held-out image for up to NULL_QUERIES of them: the null).

    ratio = distance to the nearest training image / distance to the nearest held-out image (for a
    held-out image: the nearest OTHER held-out image).
    """
    ratios = nearest_distances(samples, train_images) / nearest_distances(samples, held_images)
    if len(held_images) < 2:
        return ratios, np.full(0, np.nan)
    pick = _subset(len(held_images), NULL_QUERIES, rng)
    null = nearest_distances(held_images[pick], train_images) / nearest_distances(
        held_images[pick], held_images, self_index=pick
    )
    return ratios, null


def _share_below(r: np.ndarray, threshold: float) -> float:
    r = r[np.isfinite(r)]
    return float((r < threshold).mean()) if len(r) else math.nan


@contextlib.contextmanager
def torch_threads(n: Optional[int]) -> Iterator[None]:
    """torch's intra-op CPU threads set to ``n`` (None: unchanged) for the block, then restored."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def audit_model(
    model: Any,
    scheduler,
    train_images: np.ndarray,
    held_images: np.ndarray,
    samples: np.ndarray,
    seed: int,
    *,
    parts: Optional[Sequence[np.ndarray]] = None,
    train_labels: Optional[np.ndarray] = None,
    held_labels: Optional[np.ndarray] = None,
    options: AuditOptions = DEFAULT_OPTIONS,
    device: torch.device | str = "cpu",
) -> AuditResult:
    """Audit ``model`` (a diffusers UNet2DModel or a raydiff FlatModel) trained on ``train_images``.

    ``parts``: each client's indices into ``train_images`` (raydiff.data.partition's output), for the
    per-client table; ``samples``: images the model generated, (N, C, H, W) in [-1, 1]. Labels, when
    given, class-match the non-members (see the module docstring). Deterministic given ``seed``.
    """
    import pandas as pd

    t0 = time.perf_counter()
    rng = np.random.default_rng([seed, AUDIT_STREAM])
    mem = _subset(len(train_images), options.num_members, rng)
    non = _subset(len(held_images), options.num_nonmembers, rng)
    cond_labels = None
    if _conditional(model):
        if train_labels is None or held_labels is None:
            raise ValueError("auditing a class-conditional model needs the training and held-out labels")
        cond_labels = np.concatenate([train_labels[mem], held_labels[non]])
    with torch_threads(options.num_threads):
        scores = membership_scores(
            model,
            scheduler,
            np.concatenate([train_images[mem], held_images[non]]),
            seed,
            options,
            device,
            labels=cond_labels,
        )
    s_mem, s_non = scores[: len(mem)], scores[len(mem) :]
    mem_labels = train_labels[mem] if train_labels is not None and held_labels is not None else None
    non_labels = held_labels[non] if mem_labels is not None and held_labels is not None else None
    w = class_matching_weights(mem_labels, non_labels) if mem_labels is not None and non_labels is not None else None
    auc = membership_auc(s_mem, s_non, w)
    n_eff = _effective_n(w, len(non))

    rows = []
    owner = np.full(len(train_images), -1, dtype=np.int64)
    for c, idx in enumerate(parts or ()):
        owner[np.asarray(idx, dtype=np.int64)] = c
    for c, idx in enumerate(parts or ()):
        sel = owner[mem] == c
        wc = (
            class_matching_weights(mem_labels[sel], non_labels)
            if mem_labels is not None and non_labels is not None and sel.any()
            else None
        )
        a = membership_auc(s_mem[sel], s_non, wc)
        rows.append(
            dict(
                client_id=c,
                num_samples=len(idx),
                num_scored=int(sel.sum()),
                mia_auc=a,
                mia_auc_se=auc_standard_error(a, int(sel.sum()), _effective_n(wc, len(non))),
                mean_log_loss=float(-s_mem[sel].mean()) if sel.any() else math.nan,
            )
        )
    per_client = pd.DataFrame(rows, columns=list(PER_CLIENT_COLUMNS))
    per_class = (
        _class_rows(per_client, s_mem, s_non, mem_labels, non_labels)
        if mem_labels is not None and non_labels is not None
        else None
    )

    ratios, null = memorization(samples, train_images, held_images, rng)
    return AuditResult(
        mia_auc=auc,
        mia_auc_se=auc_standard_error(auc, len(mem), n_eff),
        mia_tpr_at_1pct_fpr=tpr_at_fpr(s_mem, s_non, 0.01, w),
        mia_num_members=len(mem),
        mia_num_nonmembers=len(non),
        memorization_ratio_median=float(np.nanmedian(ratios)) if np.isfinite(ratios).any() else math.nan,
        memorization_ratio_median_null=float(np.nanmedian(null)) if len(null) else math.nan,
        extraction_rate=_share_below(ratios, options.extraction_threshold),
        extraction_rate_null=_share_below(null, options.extraction_threshold),
        extraction_threshold=options.extraction_threshold,
        privacy_audit_samples=len(samples),
        privacy_audit_seconds=time.perf_counter() - t0,
        per_client=per_client,
        per_class=per_class,
        conditional=cond_labels is not None,
        member_scores=s_mem,
        nonmember_scores=s_non,
        ratios=ratios,
        null_ratios=null,
    )


def _conditional(model: Any) -> bool:
    """Whether ``model`` is a class-conditional UNet2DModel (a class embedding)."""
    cfg = getattr(_module(model), "config", None)
    return getattr(cfg, "num_class_embeds", None) is not None


def _class_rows(
    per_client: Any, s_mem: np.ndarray, s_non: np.ndarray, mem_labels: np.ndarray, non_labels: np.ndarray
) -> Any:
    """One row per class, in privacy.parquet's columns: members of class k against non-members of class k."""
    import pandas as pd

    rows = []
    for k in np.unique(np.concatenate([mem_labels, non_labels])).tolist():
        a_sel, b_sel = mem_labels == k, non_labels == k
        a = membership_auc(s_mem[a_sel], s_non[b_sel])
        rows.append(
            {
                "client_id": -1,
                "num_samples": int(a_sel.sum()),
                "num_scored": int(a_sel.sum()),
                "mia_auc": a,
                "mia_auc_se": auc_standard_error(a, int(a_sel.sum()), float(b_sel.sum())),
                "mean_log_loss": float(-s_mem[a_sel].mean()) if a_sel.any() else math.nan,
                "scope": "class",
                "class": int(k),
            }
        )
    return pd.DataFrame(rows, columns=[*PER_CLIENT_COLUMNS, *PER_CLASS_COLUMNS])


def _effective_n(w: Optional[np.ndarray], n: int) -> float:
    """Kish's effective sample size of weighted non-members."""
    if w is None:
        return float(n)
    s2 = float((w * w).sum())
    return float(w.sum() ** 2 / s2) if s2 > 0 else 0.0


# --- the run folder ---------------------------------------------------------------------------------------


def write_audit(result: AuditResult, out_dir: str | Path) -> None:
    """privacy.parquet (one row per client) and privacy.png, written atomically into ``out_dir``."""
    from ..outputs import _atomic  # a fresh temporary: never written through a planted privacy.parquet.tmp link

    out = Path(out_dir)
    table = result.table()
    _atomic(out / "privacy.parquet", lambda tmp: table.to_parquet(tmp, index=False))
    plot_audit(result, out / "privacy.png")


def plot_audit(result: AuditResult, path: str | Path) -> None:
    """Three panels: member vs non-member losses; per-client AUC against client size; memorisation ratios."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(14, 3.9))
    lm, ln = -result.member_scores, -result.nonmember_scores
    lm, ln = lm[np.isfinite(lm)], ln[np.isfinite(ln)]
    both = np.concatenate([lm, ln, [0.0]]) if len(lm) + len(ln) == 0 else np.concatenate([lm, ln])
    bins = np.linspace(both.min(), both.max() + 1e-9, 40)
    for values, label in ((lm, "members (training)"), (ln, "non-members (held out)")):
        if len(values):  # a diverged model has no finite loss to plot
            ax[0].hist(values, bins=bins, density=True, alpha=0.55, label=f"{label}, n={len(values)}")
    ax[0].set(
        xlabel="mean log denoising loss",
        ylabel="density",
        title=f"membership inference: AUC {result.mia_auc:.3f}, TPR@1%FPR {result.mia_tpr_at_1pct_fpr:.3f}",
    )
    if len(lm) + len(ln):
        ax[0].legend(fontsize=8)
    pc = result.per_client
    if len(pc):
        ax[1].errorbar(pc["num_samples"], pc["mia_auc"], yerr=1.96 * pc["mia_auc_se"], fmt="o", ms=4, capsize=2)
        ax[1].set_xscale("log")
        ax[1].xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())  # 50, 100, 200; not 5x10^1
        ax[1].xaxis.set_minor_formatter(matplotlib.ticker.ScalarFormatter())
    ax[1].axhline(0.5, color="grey", lw=0.8, ls="--")
    ax[1].set(xlabel="client's training images", ylabel="AUC (95% interval)", title="per client (class-matched)")
    gen, null = result.ratios[np.isfinite(result.ratios)], result.null_ratios[np.isfinite(result.null_ratios)]
    top = min(3.0, max(1.5, float(np.max(np.r_[gen, null, 1.0]))))  # larger ratios go into the last bin
    rb = np.linspace(0, top, 40)
    for values, label in ((gen, f"generated (n={len(gen)})"), (null, "real held-out (null)")):
        if len(values):
            ax[2].hist(np.minimum(values, top), bins=rb, density=True, alpha=0.55, label=label)
    ax[2].axvline(result.extraction_threshold, color="red", lw=1, label="extraction threshold")
    ax[2].set(
        xlabel="nearest training / nearest held-out distance",
        ylabel="density",
        title=f"memorisation: median {result.memorization_ratio_median:.2f}, extracted {result.extraction_rate:.1%}",
    )
    ax[2].legend(fontsize=8)
    fig.tight_layout()
    from ..outputs import _atomic

    try:
        _atomic(Path(path), lambda tmp: fig.savefig(tmp, format="png", dpi=90))
    finally:
        plt.close(fig)


def audit_trained(
    cfg: Any,
    model: Any,
    train: Any,
    held: Any,
    parts: Sequence[np.ndarray],
    samples: Optional[np.ndarray] = None,
    options: Optional[AuditOptions] = None,
    device: torch.device | str = "cpu",
) -> AuditResult:
    """Audit a run's trained ``model`` (the exported one) given what the runner built: its config, the
    hold-out split (``train``, ``held``: raydiff.data datasets) and the partition.

    ``samples``: the run's final samples (free: the runner has them). None, or fewer or more than
    ``options.num_samples`` asks for: drawn with the run's sampler, steps and seed (the first ones of
    the run's own samples when it asks for fewer). ``options`` None: ``cfg.eval.privacy_audit``.
    """
    from ..model import build_scheduler

    options = options if options is not None else cfg.eval.privacy_audit
    scheduler = build_scheduler(cfg.model)
    n = options.num_samples or cfg.eval.num_samples
    class_labels = None
    if _conditional(model):  # equal numbers per class, as the evaluator draws them (n rounded down)
        from ..utility import sample_labels

        unet_cfg: Any = getattr(_module(model), "config")  # noqa: B009 - a diffusers FrozenDict, untyped
        k = int(unet_cfg.num_class_embeds) - 1
        class_labels = sample_labels(k, max(1, n // k))
        n = len(class_labels)
    if samples is not None and len(samples) >= n:
        samples = samples[:n]
    else:
        from ..diffusion import sample_images
        from ..metrics.eval_checks import default_sample_steps

        ev = cfg.eval
        steps = default_sample_steps(ev.sampler, ev.sample_steps, cfg.model.num_train_timesteps)
        with torch_threads(options.num_threads):
            samples = sample_images(
                _module(model),
                scheduler,
                n,
                cfg.seed,
                ev.sampler,
                steps,
                device,
                class_labels=class_labels,
                guidance_scale=ev.guidance_scale,
            )
    labelled = len(np.unique(train.labels)) >= 2
    return audit_model(
        model,
        scheduler,
        train.images,
        held.images,
        samples,
        cfg.seed,
        parts=parts,
        train_labels=train.labels if labelled else None,
        held_labels=held.labels if labelled else None,
        options=options,
        device=device,
    )


def audit_run_folder(
    run_dir: str | Path,
    options: Optional[AuditOptions] = None,
    samples: Optional[np.ndarray] = None,
    write: bool = True,
    device: torch.device | str = "cpu",
) -> AuditResult:
    """Audit a finished run from its folder alone; with ``write``, add privacy.parquet and privacy.png to it.

    The data, hold-out split and partition are rebuilt from config.yaml exactly as the runner builds
    them; the model is the exported one (``model/unet``: what leaves the federation). ``samples``
    None: drawn afresh with the run's sampler, steps, ``eval.num_samples`` (or ``options.num_samples``)
    and seed, which are the final samples the run drew itself. ``options`` None: the config's
    ``eval.privacy_audit``.
    """
    from ..config_load import load_config
    from ..errors import RaydiffError

    run = Path(run_dir)
    if not (run / "config.yaml").is_file() or not (run / "model" / "unet").is_dir():
        raise RaydiffError(f"{run}: not a finished run folder (it needs config.yaml and model/unet)")
    from diffusers import UNet2DModel

    from ..data import federated_split

    cfg = load_config(run / "config.yaml")
    train, held, _, parts = federated_split(cfg)
    unet = UNet2DModel.from_pretrained(str(run / "model" / "unet")).to(device)
    result = audit_trained(cfg, unet, train, held, parts, samples, options, device)
    if write:
        write_audit(result, run)
    log.info(
        "privacy audit of %s: AUC %.3f, TPR@1%%FPR %.3f, extraction %.3f (%.1f s)",
        run,
        result.mia_auc,
        result.mia_tpr_at_1pct_fpr,
        result.extraction_rate,
        result.privacy_audit_seconds,
    )
    return result


def audit_command(run_dir: str | Path, device: str = "cpu") -> dict[str, Any]:
    """``raydiff audit RUN``: audit a finished run, write privacy.parquet and privacy.png, and add the audit's
    fields to its summary.json (when it has one); returns them. Runs that predate the audit, or ran with
    ``eval.privacy_audit.enabled: false``, get it afterwards this way."""
    import json

    from ..errors import RaydiffError
    from ..outputs import write_json

    if device == "cuda" and not torch.cuda.is_available():
        raise RaydiffError("--device cuda: no CUDA device is visible to this process; use --device cpu")
    run = Path(run_dir)
    fields = audit_run_folder(run, device=device).summary()
    summary_path = run / "summary.json"
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
        except ValueError as exc:
            raise RaydiffError(
                f"{summary_path}: not valid JSON ({exc}); privacy.parquet and privacy.png were "
                "written, summary.json was left alone"
            ) from None
        write_json(summary_path, {**summary, **fields})
    return fields


__all__ = [
    "AuditOptions",
    "AuditResult",
    "auc_standard_error",
    "audit_command",
    "audit_model",
    "audit_run_folder",
    "audit_trained",
    "class_matching_weights",
    "membership_auc",
    "membership_scores",
    "memorization",
    "nearest_distances",
    "plot_audit",
    "tpr_at_fpr",
    "write_audit",
]
