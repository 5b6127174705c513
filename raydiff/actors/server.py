"""ParameterServer: the global vector, its version and the strategy's state. It executes; policy is the strategy's."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..strategies import EMA, Compressor, NormBound, Strategy, Update, check_update


def _kind(obj: Any) -> tuple:
    if isinstance(obj, np.ndarray):
        return ("ndarray", str(obj.dtype), tuple(obj.shape))
    if isinstance(obj, (tuple, list)):
        return (type(obj).__name__,) + tuple(_kind(o) for o in obj)
    return (type(obj).__name__,)


class ParameterServer:
    """Applies updates in the order the orchestrator sends them (virtual-time order).

    Each call returns (outcome, new vector or None). Under Ray the vector becomes one object-store
    blob per version, handed to clients by reference without passing through the driver.
    """

    def __init__(self, x0: np.ndarray, strategy: Strategy, copy_on_return: bool = True,
                 compressor: Optional[Compressor] = None, norm_bound: Optional[NormBound] = None,
                 ema_decay: Optional[float] = None) -> None:
        """``copy_on_return=False`` under Ray: a returned array is serialised into the object store
        before the actor runs its next method, so handing out ``self.x`` itself is safe and saves a copy.
        ``compressor`` decodes payloads; ``norm_bound`` clips or rejects large updates; ``ema_decay``
        keeps an exponential moving average of the global model, updated at every version."""
        self.x = np.array(x0, dtype=np.float32, copy=True)
        self.copy_on_return = copy_on_return
        self.compressor = compressor
        self.norm_bound = norm_bound
        self.ema = EMA(ema_decay) if ema_decay is not None else None
        self.received: set[tuple] = set()  # kinds of data clients sent: an audit, see audit()
        if self.ema is not None:
            self.ema.update(self.x)
        self.version = 0
        self.strategy = strategy
        self.buffered_jobs: list[int] = []

    def submit(self, job_id: int, client_id: int, base_version: int, num_samples: int, payload: Any,
               base: Optional[np.ndarray] = None) -> tuple[dict[str, Any], Optional[np.ndarray]]:
        staleness = self.version - base_version
        out: dict[str, Any] = dict(job_id=job_id, staleness=staleness, applied_jobs=[], reason="")
        self.received.add(_kind(payload))
        if base is not None:
            self.received.add(_kind(base))
        delta = self.compressor.decode(payload, self.x.size) if self.compressor is not None else payload
        reason = check_update(delta, self.x.size)
        if reason is None and self.norm_bound is not None:
            delta, reason = self.norm_bound.apply(delta)
        if reason is not None:
            out.update(status="rejected", reason=reason, version=self.version)
            return out, None
        decision = self.strategy.receive(self.x, self.version, Update(client_id, base_version, num_samples,
                                                                     delta, base))
        out.update(status=decision.status, weight=decision.weight, reason=decision.reason)
        if decision.status == "rejected":
            out["version"] = self.version
            return out, None
        self.buffered_jobs.append(job_id)
        if decision.status == "buffered":
            out["version"] = self.version
            return out, None
        return self._new_version(out)

    def end_round(self) -> tuple[dict[str, Any], Optional[np.ndarray]]:
        """Close a synchronous round (FedAvg)."""
        out: dict[str, Any] = dict(applied_jobs=[])
        if not self.strategy.end_round(self.x):
            out["version"] = self.version
            return out, None
        return self._new_version(out)

    def _new_version(self, out: dict[str, Any]) -> tuple[dict[str, Any], np.ndarray]:
        self.version += 1
        if self.ema is not None:
            self.ema.update(self.x)
        out.update(version=self.version, applied_jobs=self.buffered_jobs)
        self.buffered_jobs = []
        return out, self.x.copy() if self.copy_on_return else self.x

    def discard_pending(self) -> list[int]:
        """End of run: buffered updates that never reached a version."""
        jobs, self.buffered_jobs = self.buffered_jobs, []
        self.strategy.discard_pending()
        return jobs

    def vector(self) -> np.ndarray:
        return self.x.copy()

    def audit(self) -> list[tuple]:
        """Every (type, dtype, shape) of data that ever reached this server from clients: model-sized
        vectors (or their compressed parts) only, never images (tests/test_security.py)."""
        return sorted(self.received, key=repr)

    def state(self) -> dict[str, Any]:
        """Everything, for a checkpoint: vector, version, strategy (buffers, optimizer, DP RNG), EMA."""
        return {k: v for k, v in self.__dict__.items() if k != "copy_on_return"}

    def load_state(self, state: dict[str, Any]) -> None:
        import pickle

        # a state that came through Ray's object store holds read-only arrays: own writable copies
        self.__dict__.update(pickle.loads(pickle.dumps(state, protocol=4)))  # (5 keeps read-only buffers)

    def ema_vector(self) -> Optional[np.ndarray]:
        return None if self.ema is None else self.ema.value.copy()

    def get_version(self) -> int:
        return self.version
