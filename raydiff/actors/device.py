"""Where an actor computes, and how many threads it may use."""

from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)


def setup_torch(num_cpus: float, want: str = "auto") -> torch.device:
    """Threads from the actor's CPU share (actors must not fight over cores); CUDA when granted and present.

    Ray sets CUDA_VISIBLE_DEVICES to the GPU an actor was granted, so ``cuda`` here is that GPU.
    """
    torch.set_num_threads(max(1, int(num_cpus)))
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass
    if want == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda")
    if want == "cuda":
        log.warning("train.device=cuda but no CUDA device is visible to this actor; using the CPU")
    return torch.device("cpu")


def node_id() -> str:
    """The Ray node this process runs on, or "local" outside Ray."""
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # noqa: BLE001 - placement info is best effort
        pass
    return "local"
