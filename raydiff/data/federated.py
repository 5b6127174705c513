"""A run's data as the clients see it: the dataset, its hold-out split and each client's share.

One function, because the runner and ``raydiff audit`` (which rebuilds a finished run's members and
non-members from its config.yaml) must draw the very same split and partition.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import DataError
from .datasets import ImageSet, load_dataset, split_holdout
from .partition import partition

if TYPE_CHECKING:
    from ..config import Config


def federated_split(cfg: Config) -> tuple[ImageSet, ImageSet, int, list[np.ndarray]]:
    """(train, held-out, number of classes, each client's indices into train), from ``cfg`` alone.

    The hold-out split uses the stream ``[seed, 6]`` and the partition ``[seed, 5]``: fixed, so that a
    run's folder (or a resumed run) always rebuilds the same clients.
    """
    ds = load_dataset(cfg.data)
    train, held = split_holdout(ds, cfg.data.holdout_fraction, np.random.default_rng([cfg.seed, 6]))
    if len(held.labels) == 0:  # evaluation divides by the held-out count: refuse now, before Ray and the run folder
        raise DataError(
            f"data: the held-out set is empty: {len(ds.labels)} images with data.holdout_fraction="
            f"{cfg.data.holdout_fraction:g} hold out round(images of a class x fraction) = 0 of every class. "
            "Every evaluation scores held-out images; raise data.holdout_fraction or use more images"
        )
    parts = partition(
        train.labels,
        cfg.clients.num_clients,
        cfg.data.partition,
        cfg.data.beta,
        np.random.default_rng([cfg.seed, 5]),
        shards_per_client=cfg.data.shards_per_client,
        quantity_sigma=cfg.data.quantity_sigma,
    )
    return train, held, ds.num_classes, parts
