"""Distances between two sets of feature vectors: Frechet distance, KID, precision and recall.

Plain numpy, so they run anywhere (driver, actor, notebook) and are easy to test against
hand-made sets. Every function takes features (N, D) and returns a float.
"""

from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)


def _moments(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    f = np.asarray(f, dtype=np.float64)
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    """Symmetric square root of a covariance (eigenvalues clipped at 0: round-off makes some tiny negative)."""
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_from_moments(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), Heusel et al. 2017.

    Why the symmetric form: Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2), and the right-hand matrix is
    symmetric positive semi-definite, so its root comes from ``eigh`` with no complex round-off (the
    usual ``scipy.linalg.sqrtm(S1 @ S2)`` returns tiny imaginary parts, and fails on the singular
    covariances that a few dozen samples in 64 dimensions give).
    """
    r1 = _psd_sqrt(s1)
    m = r1 @ s2 @ r1
    eig = np.linalg.eigvalsh((m + m.T) / 2)
    tr_covmean = float(np.sqrt(np.clip(eig, 0, None)).sum())
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean, 0.0))


def frechet_distance(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID-style distance between the Gaussians fitted to two feature sets (each needs >= 2 rows)."""
    if len(f1) < 2 or len(f2) < 2:
        raise ValueError(f"the Frechet distance needs >= 2 samples per set, got {len(f1)} and {len(f2)}")
    return frechet_from_moments(*_moments(f1), *_moments(f2))


def kernel_inception_distance(
    f1: np.ndarray,
    f2: np.ndarray,
    num_subsets: int = 100,
    subset_size: int = 1000,
    rng: np.random.Generator | None = None,
) -> float:
    """KID (Binkowski et al. 2018): unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3, averaged over subsets.

    Unbiased, so real vs real is ~0 (it may be slightly negative), and it needs no Gaussian assumption:
    more trustworthy than FID at the small sample counts a CPU run can afford.
    """
    rng = rng if rng is not None else np.random.default_rng(0)
    f1 = np.asarray(f1, dtype=np.float64)
    f2 = np.asarray(f2, dtype=np.float64)
    m = min(subset_size, len(f1), len(f2))
    if m < 2:
        raise ValueError(f"KID needs >= 2 samples per set, got {len(f1)} and {len(f2)}")
    d = f1.shape[1]
    total = 0.0
    for _ in range(num_subsets):
        x = f1[rng.choice(len(f1), m, replace=False)]
        y = f2[rng.choice(len(f2), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        total += ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.mean()
    return float(total / num_subsets)


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.maximum(d, 0)


def _knn_radii(f: np.ndarray, k: int, chunk: int = 1024) -> np.ndarray:
    """Squared distance from each row to its k-th nearest OTHER row (the row itself is at distance 0)."""
    out = np.empty(len(f))
    for s in range(0, len(f), chunk):
        d = _sq_dists(f[s : s + chunk], f)
        out[s : s + chunk] = np.partition(d, k, axis=1)[:, k]  # index 0 is the row itself
    return out


def _covered(query: np.ndarray, ref: np.ndarray, radii: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """For each query row: is it inside the k-NN ball of at least one reference row?"""
    hit = np.empty(len(query), dtype=bool)
    for s in range(0, len(query), chunk):
        hit[s : s + chunk] = (_sq_dists(query[s : s + chunk], ref) <= radii[None, :]).any(axis=1)
    return hit


def precision_recall(real: np.ndarray, fake: np.ndarray, k: int = 3) -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019), k-NN balls with k = 3 as in the paper.

    Precision: the share of generated samples that fall in the real manifold (quality); recall: the
    share of real samples that fall in the generated manifold (diversity). FID mixes the two; a
    model that draws one perfect digit has high precision and low recall.
    """
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    if len(real) <= k or len(fake) <= k:
        raise ValueError(
            f"precision/recall with k={k} needs more than {k} samples per set, "
            f"got {len(real)} real and {len(fake)} generated"
        )
    precision = _covered(fake, real, _knn_radii(real, k)).mean()
    recall = _covered(real, fake, _knn_radii(fake, k)).mean()
    return float(precision), float(recall)


def density_coverage(real: np.ndarray, fake: np.ndarray, k: int = 5) -> tuple[float, float]:
    """Density and coverage (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics"), k = 5 as in the paper.

    Both use only the REAL k-NN balls, so an outlier among the samples cannot inflate them (it can inflate
    improved precision's real manifold test only through real outliers, and recall's through fake ones).
    Density: how many real balls contain each sample, over k, averaged (1 for samples drawn like the real
    images; above 1 when they crowd dense regions). Coverage: the share of real balls holding at least one
    sample (diversity, bounded by 1). The formulas of the ``prdc`` package (tests/test_conditional.py checks).
    """
    real = np.asarray(real, dtype=np.float64)
    fake = np.asarray(fake, dtype=np.float64)
    if len(real) <= k or len(fake) < 1:
        raise ValueError(f"density/coverage with k={k} needs more than {k} real samples, got {len(real)} real")
    radii = _knn_radii(real, k)
    inside = np.zeros(len(fake))
    covered = np.zeros(len(real), dtype=bool)
    for s in range(0, len(fake), 1024):
        hit = _sq_dists(real, fake[s : s + 1024]) < radii[:, None]  # (real, fake chunk)
        inside[s : s + 1024] = hit.sum(0)
        covered |= hit.any(1)
    return float(inside.sum() / (k * len(fake))), float(covered.mean())


__all__ = [
    "density_coverage",
    "frechet_distance",
    "frechet_from_moments",
    "kernel_inception_distance",
    "precision_recall",
]
