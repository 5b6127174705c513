"""Shared fixtures. Ray runs once per session on 127.0.0.1 with 2 CPUs and a (fake) GPU, so fractional
``num_gpus`` scheduling is exercised without a GPU."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

# The smallest end-to-end run that still exercises everything: 6 clients, FedBuff, dropouts, evaluation.
TINY = {
    "name": "tiny",
    "seed": 3,
    "clients": {
        "num_clients": 6,
        "num_cpus": 1,
        "num_gpus": 0.25,
        "dropout": 0.2,
        "speed": {"dist": "lognormal", "mean": 1000, "sigma": 0.8},
    },
    "train": {"local_steps": 2, "batch_size": 8},
    "strategy": {"name": "fedbuff", "concurrency": 4, "buffer_size": 2},
    "eval": {
        "every_versions": 3,
        "num_heldout": 16,
        "num_samples": 4,  # a small privacy audit: ~1/60 of its cost
        "utility_samples_per_class": 4,  # the utility evaluation still runs, on 40 samples (issue 22)
        "privacy_audit": {"num_members": 128, "num_nonmembers": 64, "timesteps": 2, "noise_draws": 1},
    },
    "model": {"num_train_timesteps": 20},
    "run": {"max_updates": 6},
}


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=2,
            num_gpus=1,
            include_dashboard=False,
            _node_ip_address="127.0.0.1",
            configure_logging=False,
            log_to_driver=False,
        )
    yield ray
    ray.shutdown()


@pytest.fixture
def tiny_cfg():
    import copy

    return copy.deepcopy(TINY)
