"""Splitting a labelled set between clients: IID and the seed paper's per-class Dirichlet label skew.

Pure numpy with an explicit Generator: the same seed gives the same split on any machine.
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError


def iid(labels: np.ndarray, num_clients: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle and deal out in near-equal parts (sizes differ by at most one)."""
    return [np.sort(p) for p in np.array_split(rng.permutation(len(labels)), num_clients)]


def dirichlet(labels: np.ndarray, num_clients: int, beta: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Per class, draw client shares from Dirichlet(beta * 1) and cut that class's shuffled indices.

    This is the split of Tun et al. (and of Hsu et al. 2019): small beta gives each client few classes.
    Clients left empty by the draw receive one sample taken from the largest client, so that every
    client can train; the caller has already checked there are at least as many samples as clients.
    """
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        shares = rng.dirichlet(np.full(num_clients, beta))
        cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(np.int64)
        for k, chunk in enumerate(np.split(idx, cuts)):
            parts[k].append(chunk)
    out = [np.concatenate(p) if p else np.zeros(0, np.int64) for p in parts]
    for k in range(num_clients):
        if len(out[k]) == 0:
            donor = int(np.argmax([len(p) for p in out]))
            out[k], out[donor] = out[donor][-1:], out[donor][:-1]
    return [np.sort(p.astype(np.int64)) for p in out]


def partition(labels: np.ndarray, num_clients: int, method: str, beta: float,
              rng: np.random.Generator) -> list[np.ndarray]:
    """Indices of each client's samples. Raises DataError if some client would get nothing."""
    if num_clients > len(labels):
        raise DataError(f"clients.num_clients={num_clients} is more than the {len(labels)} training samples: "
                        "every client needs at least one sample; lower clients.num_clients")
    if method == "iid":
        parts = iid(labels, num_clients, rng)
    elif method == "dirichlet":
        if beta <= 0:
            raise DataError(f"data.beta must be > 0, got {beta}")
        parts = dirichlet(labels, num_clients, beta, rng)
    else:
        raise DataError(f"data.partition: unknown partitioner {method!r}; allowed: iid, dirichlet")
    assert sum(len(p) for p in parts) == len(labels)
    return parts
