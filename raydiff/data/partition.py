"""Splitting a labelled set between clients: IID, per-class Dirichlet label skew (the seed paper's),
McMahan et al.'s label-sorted shards, and IID labels with lognormal client sizes (quantity skew).

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


def shards(labels: np.ndarray, num_clients: int, shards_per_client: int, rng: np.random.Generator) -> list[np.ndarray]:
    """McMahan et al. (2017)'s pathological non-IID split: sort by label, cut into num_clients * k shards of
    near-equal size, deal k random shards to each client, so each client sees about k classes.

    Samples are shuffled within a class before the stable sort, so which images of a class land in a
    shard is random too. Sizes differ by at most k; every client gets samples when N >= num_clients * k.
    """
    if shards_per_client < 1:
        raise DataError(f"data.shards_per_client must be >= 1, got {shards_per_client}")
    n_shards = num_clients * shards_per_client
    if n_shards > len(labels):
        raise DataError(
            f"data.shards_per_client={shards_per_client} with clients.num_clients={num_clients} needs "
            f"{n_shards} shards but there are only {len(labels)} training samples; lower one of them"
        )
    perm = rng.permutation(len(labels))
    order = perm[np.argsort(labels[perm], kind="stable")]
    pieces = np.array_split(order, n_shards)
    deal = rng.permutation(n_shards).reshape(num_clients, shards_per_client)
    return [np.sort(np.concatenate([pieces[s] for s in row]).astype(np.int64)) for row in deal]


def quantity(labels: np.ndarray, num_clients: int, sigma: float, rng: np.random.Generator) -> list[np.ndarray]:
    """Quantity skew: IID labels, client sizes in proportions drawn from lognormal(0, sigma).

    Each client first gets one sample, then the other N - num_clients are shared by a multinomial
    draw over the proportions, so sizes sum to N exactly and none is empty. sigma = 0 gives equal
    expected sizes; with sigma = 1 the largest of ten clients is typically over ten times the smallest.
    """
    if sigma < 0:
        raise DataError(f"data.quantity_sigma must be >= 0, got {sigma}")
    share = rng.lognormal(0.0, sigma, num_clients)
    sizes = 1 + rng.multinomial(len(labels) - num_clients, share / share.sum())
    cuts = np.cumsum(sizes)[:-1]
    return [np.sort(p.astype(np.int64)) for p in np.split(rng.permutation(len(labels)), cuts)]


def partition(
    labels: np.ndarray,
    num_clients: int,
    method: str,
    beta: float,
    rng: np.random.Generator,
    *,
    shards_per_client: int = 2,
    quantity_sigma: float = 1.0,
) -> list[np.ndarray]:
    """Indices of each client's samples. Raises DataError if some client would get nothing."""
    if num_clients > len(labels):
        raise DataError(
            f"clients.num_clients={num_clients} is more than the {len(labels)} training samples: "
            "every client needs at least one sample; lower clients.num_clients"
        )
    if method == "iid":
        parts = iid(labels, num_clients, rng)
    elif method == "dirichlet":
        if beta <= 0:
            raise DataError(f"data.beta must be > 0, got {beta}")
        parts = dirichlet(labels, num_clients, beta, rng)
    elif method == "shards":
        parts = shards(labels, num_clients, shards_per_client, rng)
    elif method == "quantity":
        parts = quantity(labels, num_clients, quantity_sigma, rng)
    else:
        raise DataError(f"data.partition: unknown partitioner {method!r}; allowed: iid, dirichlet, shards, quantity")
    assert sum(len(p) for p in parts) == len(labels)
    return parts
