"""Dry runs (run.dry_run=true): the real orchestrator, ParameterServer and strategy on empty vectors,
no training and no Ray. Checks the scheduling semantics visible in events.parquet: determinism, one
final status per job, FedBuff/FedAsync/FedAvg version accounting, dropout and offline failures,
over-selection and deadlines, transfer times, speed-data correlation, and scale.

Each run here takes well under a second after the first (which pays for importing torch/diffusers).
"""

from __future__ import annotations

import bisect
import copy
import importlib
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

import raydiff
from raydiff.config import ModelConfig
from raydiff.hetero import MBPS, Availability, OnOffAvailability
from raydiff.model import build_unet

runner = importlib.import_module("raydiff.runner")

FINAL = {"applied", "dropped", "failed", "rejected"}

BASE: dict[str, Any] = {
    "name": "dry",
    "seed": 0,
    "clients": {"num_clients": 10},
    "strategy": {"name": "fedbuff", "concurrency": 4, "buffer_size": 2},
    "run": {"dry_run": True, "max_updates": 20},
}


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


_runs = 0


def dry(tmp_path: Path, **sections: Any) -> tuple[pd.DataFrame, dict[str, Any]]:
    """One dry run with BASE updated by ``sections``; (events, summary)."""
    global _runs
    _runs += 1
    cfg = merge(BASE, sections)
    r = raydiff.run(cfg, out=tmp_path / f"run{_runs}", progress=False)
    return pd.read_parquet(r.out_dir / "events.parquet"), r.summary


def check_final_statuses(ev: pd.DataFrame, summary: dict[str, Any]) -> None:
    """Every dispatched job appears once, with one final status; the summary agrees."""
    assert ev.job_id.tolist() == list(range(len(ev)))
    assert set(ev.status) <= FINAL, set(ev.status)
    assert summary["jobs_dispatched"] == len(ev)
    for status, key in [
        ("applied", "updates_applied"),
        ("dropped", "jobs_dropped"),
        ("failed", "jobs_failed"),
        ("rejected", "jobs_rejected"),
    ]:
        assert summary[key] == int((ev.status == status).sum())
    applied = ev.status == "applied"
    assert ev.applied_version[applied].notna().all() and ev.applied_version[~applied].isna().all()
    assert (ev.finish_vtime >= ev.dispatch_vtime).all()
    assert (ev.failure_reason[applied] == "").all()
    assert (ev.failure_reason[~applied] != "").all()


def check_one_job_at_a_time(ev: pd.DataFrame) -> None:
    """A client trains one job at a time: its next job starts no earlier than its previous one ended."""
    for client, g in ev.sort_values(["dispatch_vtime", "job_id"]).groupby("client_id"):
        d = g.dispatch_vtime.to_numpy()
        f = g.finish_vtime.to_numpy()
        assert np.all(d[1:] >= f[:-1] - 1e-9), (client, g)


def rounds(ev: pd.DataFrame) -> list[pd.DataFrame]:
    """FedAvg: a round's jobs are all dispatched at the same virtual time."""
    return [g for _, g in ev.groupby("dispatch_vtime", sort=True)]


# ============================================================================================
# the run folder, without Ray
# ============================================================================================


def test_dry_run_writes_the_run_folder_without_ray(tmp_path, monkeypatch):
    def no_ray(*a, **k):
        raise AssertionError("a dry run must not start Ray")

    real = sys.modules.get("ray")
    if real is not None:  # imported by an earlier test: make sure it is not used
        monkeypatch.setattr(real, "init", no_ray)
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now raises ImportError
    r = raydiff.run(merge(BASE, {}), out=tmp_path / "out", progress=False)
    assert r.out_dir == tmp_path / "out"
    assert {p.name for p in r.out_dir.iterdir()} == {
        "config.yaml",
        "events.parquet",
        "summary.json",
        "partition.parquet",
        "partition.png",
        "status.json",
    }
    saved = json.loads((r.out_dir / "summary.json").read_text())
    assert saved == json.loads(json.dumps(r.summary))
    assert saved["dry_run"] is True and saved["model_sha256"] is None
    assert saved["final_version"] == 20
    assert saved["events_per_second"] > 0
    assert saved["vector_bytes"] > 0
    assert raydiff.load_config(r.out_dir / "config.yaml").run.dry_run is True


def test_callback_sees_every_version(tmp_path):
    seen: list[int] = []
    raydiff.run(merge(BASE, {}), out=tmp_path / "cb", progress=False, callback=lambda i: seen.append(i["version"]))
    assert seen == list(range(1, 21))


# ============================================================================================
# determinism
# ============================================================================================

RICH = dict(
    clients={
        "num_clients": 12,
        "dropout": 0.2,
        "speed": {"dist": "lognormal", "sigma": 0.8, "jitter": 0.3},
        "network": {"sigma": 0.5},
        "availability": {"mode": "onoff", "mean_on_s": 3.0, "mean_off_s": 1.0},
    },
    strategy={"name": "fedbuff", "concurrency": 5, "buffer_size": 2},
    run={"max_updates": 30},
)


def test_same_seed_same_events_different_seed_different_events(tmp_path):
    a, sa = dry(tmp_path, **RICH)
    b, sb = dry(tmp_path, **RICH)
    c, _ = dry(tmp_path, seed=1, **RICH)
    pd.testing.assert_frame_equal(a, b)
    timing = {"wall_seconds", "loop_seconds", "events_per_second"}
    assert {k: v for k, v in sa.items() if k not in timing} == {k: v for k, v in sb.items() if k not in timing}
    assert not a.equals(c)
    assert a.finish_vtime.tolist() != c.finish_vtime.tolist()[: len(a)]
    # the rich config exercised every kind of outcome
    assert {"applied", "dropped", "failed"} <= set(a.status)


@pytest.mark.parametrize(
    "strategy",
    [
        {"name": "fedavg", "clients_per_round": 3, "over_selection": 0.34, "deadline_s": 1.5},
        {"name": "fedasync", "concurrency": 4},
    ],
)
def test_determinism_other_strategies(tmp_path, strategy):
    cfg = merge(RICH, {"strategy": strategy})
    cfg["strategy"] = strategy
    a, _ = dry(tmp_path, **cfg)
    b, _ = dry(tmp_path, **cfg)
    pd.testing.assert_frame_equal(a, b)


# ============================================================================================
# final statuses and version accounting
# ============================================================================================


@pytest.mark.parametrize("k", [1, 3, 5])
def test_fedbuff_applies_k_updates_per_version(tmp_path, k):
    ev, s = dry(
        tmp_path,
        clients={"num_clients": 12, "dropout": 0.1, "speed": {"dist": "lognormal"}},
        strategy={"name": "fedbuff", "concurrency": 6, "buffer_size": k},
        run={"max_updates": 15},
    )
    check_final_statuses(ev, s)
    check_one_job_at_a_time(ev)
    applied = ev[ev.status == "applied"]
    assert s["final_version"] == 15
    assert len(applied) == k * s["final_version"]
    assert applied.applied_version.value_counts().to_dict() == {float(v): k for v in range(1, 16)}
    # staleness: server version at submit minus base; the flushing update saw version applied-1
    st = applied.staleness.to_numpy()
    assert (st >= 0).all()
    assert (st <= applied.applied_version - 1 - applied.base_version).all()
    # left over at the end: buffered or in flight -> rejected with a reason saying why
    assert set(ev.failure_reason[ev.status == "rejected"]) <= {"run_stopped", "buffer_unflushed"}
    assert (ev.failure_reason[ev.status == "dropped"].str.startswith("dropout_")).all()


def fedasync_case(tmp_path):
    return dry(
        tmp_path,
        clients={"num_clients": 12, "dropout": 0.1, "speed": {"dist": "lognormal"}},
        strategy={"name": "fedasync", "concurrency": 6},
        run={"max_updates": 25},
    )


def test_fedasync_applies_one_update_per_version(tmp_path):
    ev, s = fedasync_case(tmp_path)
    check_final_statuses(ev, s)
    check_one_job_at_a_time(ev)
    applied = ev[ev.status == "applied"]
    assert len(applied) == s["final_version"] == 25
    assert sorted(applied.applied_version) == list(range(1, 26))
    np.testing.assert_array_equal(applied.staleness, applied.applied_version - 1 - applied.base_version)


def test_fedavg_statuses_and_versions(tmp_path):
    ev, s = dry(
        tmp_path,
        clients={"num_clients": 10, "dropout": 0.2, "speed": {"dist": "lognormal"}},
        strategy={"name": "fedavg", "clients_per_round": 4},
        run={"max_updates": 10},
    )
    check_final_statuses(ev, s)
    check_one_job_at_a_time(ev)
    assert s["final_version"] == 10
    prev_end = 0.0
    for g in rounds(ev):
        assert len(g) == 4 and g.client_id.is_unique
        assert g.dispatch_vtime.iloc[0] == pytest.approx(prev_end)  # a round starts when the last one ended
        assert g.base_version.nunique() == 1
        prev_end = g.finish_vtime.max()  # no over-selection, no deadline: the round waits for everyone
        assert set(g.status) <= {"applied", "dropped"}
        assert (g.staleness[g.status == "applied"] == 0).all()


# ============================================================================================
# dropout and availability
# ============================================================================================


def test_dropout_gives_dropped_jobs_in_the_phase_they_name(tmp_path):
    ev, s = dry(tmp_path, clients={"num_clients": 10, "dropout": 0.4}, run={"max_updates": 30})
    check_final_statuses(ev, s)
    dropped = ev[ev.status == "dropped"]
    assert len(dropped) > 10
    assert dropped.failure_reason.str.startswith("dropout_").all()
    assert dropped.applied_version.isna().all() and dropped.staleness.isna().all()
    elapsed = dropped.finish_vtime - dropped.dispatch_vtime
    total = dropped.download_s + dropped.compute_s + dropped.upload_s
    assert (elapsed < total).all()
    phase = np.where(
        elapsed < dropped.download_s,
        "download",
        np.where(elapsed < dropped.download_s + dropped.compute_s, "compute", "upload"),
    )
    assert (dropped.failure_reason == "dropout_" + pd.Series(phase, index=dropped.index)).all()
    assert "failed" not in set(ev.status)  # no availability limits: nothing fails for being offline
    # finished jobs take exactly their three phases
    ok = ev[ev.status == "applied"]
    np.testing.assert_allclose(
        ok.finish_vtime - ok.dispatch_vtime, ok.download_s + ok.compute_s + ok.upload_s, rtol=1e-12
    )


ONOFF = dict(
    clients={
        "num_clients": 10,
        "speed": {"dist": "lognormal", "sigma": 0.5},
        "availability": {"mode": "onoff", "mean_on_s": 2.0, "mean_off_s": 1.0},
    },
    strategy={"name": "fedbuff", "concurrency": 4, "buffer_size": 2},
    run={"max_updates": 40},
)


def test_onoff_availability_gives_offline_failures(tmp_path):
    ev, s = dry(tmp_path, **ONOFF)
    check_final_statuses(ev, s)
    check_one_job_at_a_time(ev)
    failed = ev[ev.status == "failed"]
    assert len(failed) >= 5
    assert failed.failure_reason.str.startswith("offline_").all()
    assert ev.failure_reason[ev.failure_reason.str.startswith("offline_")].index.isin(failed.index).all()
    assert "dropped" not in set(ev.status)  # dropout=0: every failure is an offline one


class RecordingOnOff(OnOffAvailability):
    """The same process (same draws, one switch at a time), remembering every switch it passes."""

    def __init__(self, *a: Any, **k: Any) -> None:
        super().__init__(*a, **k)
        self.initial = self.on.copy()
        self.switches: list[list[float]] = [[] for _ in range(len(self.on))]

    def _advance(self, c: int, t: float) -> None:
        while self.switch[c] <= t:
            at = float(self.switch[c])
            self.switches[c].append(at)
            super()._advance(c, at)  # exactly one switch (periods are > 0 with probability 1)

    def timeline(self, c: int) -> list[float]:
        return self.switches[c] + [float(self.switch[c])]  # the pending switch too

    def state(self, c: int, t: float) -> bool:
        """Online at t? (at a switch time the new state holds)."""
        return bool(self.initial[c]) ^ (bisect.bisect_right(self.timeline(c), t) % 2 == 1)


@pytest.mark.parametrize(
    "strategy",
    [
        {"name": "fedbuff", "concurrency": 4, "buffer_size": 2},
        {"name": "fedavg", "clients_per_round": 3},
    ],
)
def test_no_dispatch_to_an_offline_client_and_offline_failures_at_the_switch(tmp_path, monkeypatch, strategy):
    made: list[RecordingOnOff] = []

    def make(cfg, profiles, rng):
        made.append(
            RecordingOnOff(np.array([p.mean_on_s for p in profiles]), np.array([p.mean_off_s for p in profiles]), rng)
        )
        return made[-1]

    monkeypatch.setattr(runner, "make_availability", make)
    cfg = merge(ONOFF, {"strategy": strategy})
    cfg["strategy"] = strategy
    ev, s = dry(tmp_path, **cfg)
    (av,) = made
    check_final_statuses(ev, s)
    assert (ev.status == "failed").sum() >= 3
    for row in ev.itertuples():
        c = row.client_id
        assert av.state(c, row.dispatch_vtime), f"job {row.job_id} dispatched to offline client {c}"
        tl = av.timeline(c)
        inside = [t for t in tl if row.dispatch_vtime < t < row.finish_vtime]
        if row.failure_reason.startswith("offline_"):
            # the job ends at exactly the client's next switch (online -> offline)
            nxt = tl[bisect.bisect_right(tl, row.dispatch_vtime)]
            assert row.finish_vtime == pytest.approx(nxt, rel=0, abs=1e-9)
            assert av.state(c, np.nextafter(nxt, -np.inf)) and not av.state(c, nxt)
            assert inside == []
        elif row.status == "applied":
            assert inside == [], f"job {row.job_id} kept training while client {c} was offline"


def test_onoff_dispatches_as_soon_as_a_client_comes_online(tmp_path, monkeypatch):
    """Nobody online at t=0: the first dispatch waits for the first client to come online (a Wake)."""

    class Scripted(Availability):
        def is_on(self, c, t):
            return t >= 5.0 + c

        def on_until(self, c, t):
            return math.inf if self.is_on(c, t) else t

        def next_on(self, c, t):
            return max(t, 5.0 + c)

    monkeypatch.setattr(runner, "make_availability", lambda cfg, profiles, rng: Scripted())
    ev, _ = dry(
        tmp_path,
        clients={"num_clients": 3, "speed": {"mean": 10.0}},  # jobs take ~32 s
        strategy={"name": "fedbuff", "concurrency": 3, "buffer_size": 1},
        run={"max_updates": 3},
    )
    first = ev.groupby("client_id").dispatch_vtime.min().to_dict()
    assert first == {0: 5.0, 1: 6.0, 2: 7.0}


class Intervals(Availability):
    """Online during the given [start, end) intervals of each client."""

    def __init__(self, iv: dict[int, list[tuple[float, float]]]) -> None:
        self.iv = iv

    def _end(self, c: int, t: float):
        return next((e for s, e in self.iv[c] if s <= t < e), None)

    def is_on(self, c: int, t: float) -> bool:
        return self._end(c, t) is not None

    def on_until(self, c: int, t: float) -> float:
        e = self._end(c, t)
        return t if e is None else e

    def next_on(self, c: int, t: float) -> float:
        return t if self.is_on(c, t) else min(s for s, _ in self.iv[c] if s > t)


def test_client_back_online_before_a_pending_wake_is_dispatched_at_once(tmp_path, monkeypatch):
    """Client 0 is online [0, 1) and from 2 on; client 1 only from 10 on; jobs take ~32 s.
    t=0: client 0 gets a job (it fails offline at 1); client 1 is offline, a Wake is set for 10.
    t=1: client 0 is idle and offline, back at 2 -> its next job should start at 2, not at 10."""
    av = Intervals({0: [(0.0, 1.0), (2.0, math.inf)], 1: [(10.0, math.inf)]})
    monkeypatch.setattr(runner, "make_availability", lambda cfg, profiles, rng: av)
    ev, _ = dry(
        tmp_path,
        clients={"num_clients": 2, "speed": {"mean": 10.0}},
        strategy={"name": "fedbuff", "concurrency": 2, "buffer_size": 1},
        run={"max_updates": 2},
    )
    c0 = ev[ev.client_id == 0].sort_values("job_id")
    assert c0.failure_reason.iloc[0] == "offline_compute" and c0.finish_vtime.iloc[0] == 1.0
    assert c0.dispatch_vtime.iloc[1] == 2.0


def test_bernoulli_availability_runs_and_retries(tmp_path):
    ev, s = dry(
        tmp_path,
        clients={"num_clients": 6, "availability": {"mode": "bernoulli", "p": 0.2, "retry_s": 0.25}},
        strategy={"name": "fedbuff", "concurrency": 6, "buffer_size": 2},
        run={"max_updates": 10},
    )
    check_final_statuses(ev, s)
    check_one_job_at_a_time(ev)
    assert s["final_version"] == 10
    assert "failed" not in set(ev.status)  # a Bernoulli client never goes offline mid-job
    # with p=0.2 some dispatches had to wait for a retry: dispatch times on the retry grid appear
    frac = (ev.dispatch_vtime / 0.25) % 1
    assert ((frac < 1e-9) | (frac > 1 - 1e-9)).sum() > 1


def test_max_vtime_stops_the_run(tmp_path):
    ev, s = dry(tmp_path, run={"max_updates": None, "max_vtime": 5.0})
    check_final_statuses(ev, s)
    assert s["virtual_time"] <= 5.0
    assert (ev.dispatch_vtime <= 5.0).all()
    assert s["final_version"] > 0


# ============================================================================================
# FedAvg: over-selection, deadlines, empty rounds
# ============================================================================================


def test_fedavg_over_selection_keeps_the_first_to_report(tmp_path):
    ev, s = dry(
        tmp_path,
        clients={"num_clients": 12, "speed": {"dist": "lognormal", "sigma": 1.0}},
        strategy={"name": "fedavg", "clients_per_round": 4, "over_selection": 0.5},
        run={"max_updates": 8},
    )
    check_final_statuses(ev, s)
    assert s["final_version"] == 8
    rs = rounds(ev)
    assert len(rs) == 8
    for i, g in enumerate(rs):
        assert len(g) == 6 and g.client_id.is_unique  # ceil(4 * 1.5)
        applied, rejected = g[g.status == "applied"], g[g.status == "rejected"]
        assert len(applied) == 4 and len(rejected) == 2
        assert (rejected.failure_reason == "over_selected").all()
        assert applied.applied_version.nunique() == 1 and applied.applied_version.iloc[0] == i + 1
        assert (rejected.finish_vtime >= applied.finish_vtime.max()).all()  # the slowest two are cut
        if i + 1 < len(rs):  # the next round starts as soon as the 4th update arrives
            assert rs[i + 1].dispatch_vtime.iloc[0] == applied.finish_vtime.max()
    assert (ev.applied_version.value_counts() == 4).all()


def test_fedavg_deadline_cuts_stragglers(tmp_path):
    deadline = 0.8
    ev, s = dry(
        tmp_path,
        clients={"num_clients": 12, "speed": {"dist": "lognormal", "sigma": 1.0}},
        strategy={"name": "fedavg", "clients_per_round": 4, "deadline_s": deadline},
        run={"max_updates": 8},
    )
    check_final_statuses(ev, s)
    rs = rounds(ev)
    cut = empty = 0
    version = 0
    for i, g in enumerate(rs):
        start = g.dispatch_vtime.iloc[0]
        assert len(g) == 4
        assert (g.base_version == version).all()
        late = g[g.status == "rejected"]
        on_time = g[g.status == "applied"]
        assert set(g.status) <= {"applied", "rejected"}
        assert (late.failure_reason == "deadline").all()
        assert (late.finish_vtime > start + deadline).all()
        assert (on_time.finish_vtime <= start + deadline).all()
        if len(on_time):
            version += 1
            assert (on_time.applied_version == version).all()
        else:
            empty += 1  # nobody made it: the version stays
        nxt = rs[i + 1].dispatch_vtime.iloc[0] if i + 1 < len(rs) else None
        if len(late):
            cut += 1
            if nxt is not None:
                assert nxt == pytest.approx(start + deadline, abs=1e-12)
        elif nxt is not None:
            assert nxt == g.finish_vtime.max()  # everyone in time: no waiting for the deadline
    assert version == s["final_version"] == 8
    assert cut >= 3  # the deadline did cut stragglers in this scenario
    assert empty >= 1  # and in some round nobody made it


def test_fedavg_over_selection_and_deadline_together(tmp_path):
    ev, s = dry(
        tmp_path,
        clients={"num_clients": 12, "speed": {"dist": "lognormal", "sigma": 1.0}},
        strategy={"name": "fedavg", "clients_per_round": 3, "over_selection": 1.0, "deadline_s": 0.7},
        run={"max_updates": 10},
    )
    check_final_statuses(ev, s)
    for g in rounds(ev):
        assert len(g) == 6
        assert (g.status == "applied").sum() <= 3
        assert set(g.failure_reason[g.status == "rejected"]) <= {"deadline", "over_selected"}
        assert g.failure_reason.isin(["deadline", "over_selected"]).sum() == (g.status == "rejected").sum()


def test_fedavg_round_where_everyone_drops_leaves_the_version(tmp_path):
    ev, s = dry(
        tmp_path,
        clients={"num_clients": 6, "dropout": 0.8},
        strategy={"name": "fedavg", "clients_per_round": 2},
        run={"max_updates": 6},
    )
    check_final_statuses(ev, s)
    assert s["final_version"] == 6
    rs = rounds(ev)
    empty = 0
    for i, g in enumerate(rs[:-1]):
        nxt = rs[i + 1]
        assert nxt.dispatch_vtime.iloc[0] == g.finish_vtime.max()  # the next round starts at once
        if (g.status == "dropped").all():
            empty += 1
            assert nxt.base_version.iloc[0] == g.base_version.iloc[0]  # no new version
        else:
            assert nxt.base_version.iloc[0] == g.base_version.iloc[0] + 1
    assert empty >= 2


# ============================================================================================
# transfer and compute times
# ============================================================================================


def test_transfer_columns_follow_the_network(tmp_path):
    ev, s = dry(
        tmp_path,
        clients={
            "num_clients": 8,
            "dropout": 0.2,
            "speed": {"mean": 640.0},
            "network": {"down_mbps": 40.0, "up_mbps": 8.0, "latency_s": 0.03},
        },
        train={"local_steps": 3, "batch_size": 16},
    )
    vb = s["vector_bytes"]
    assert vb == 4 * sum(p.numel() for p in build_unet(ModelConfig(), 8, 1).parameters())  # digits 8x8 grey, float32
    assert (ev.download_bytes == vb).all() and (ev.upload_bytes == vb).all()
    np.testing.assert_allclose(ev.download_s, 0.03 + vb / (40.0 * MBPS), rtol=1e-12)
    np.testing.assert_allclose(ev.upload_s, 0.03 + vb / (8.0 * MBPS), rtol=1e-12)
    assert (ev.samples_trained == 48).all()
    np.testing.assert_allclose(ev.compute_s, 48 / 640.0, rtol=1e-12)


# ============================================================================================
# speed tied to data: staleness bias
# ============================================================================================

SLOW = dict(
    data={"dataset": "digits", "partition": "dirichlet", "beta": 0.3},
    clients={"num_clients": 40, "speed": {"dist": "lognormal", "mean": 100.0, "sigma": 1.0}},
    run={"max_updates": 300},
)


def slow_run(tmp_path, monkeypatch, strategy, slow_classes):
    seen: dict[str, Any] = {}
    real = runner.sample_profiles

    def spy(cfg, rng, slow_score=None):
        seen["score"] = slow_score
        seen["profiles"] = real(cfg, rng, slow_score=slow_score)
        return seen["profiles"]

    monkeypatch.setattr(runner, "sample_profiles", spy)
    ev, _ = dry(tmp_path, strategy=strategy, **merge(SLOW, {"clients": {"slow_classes": slow_classes}}))
    return ev, seen


@pytest.mark.parametrize(
    "strategy",
    [
        {"name": "fedbuff", "concurrency": 8, "buffer_size": 2},
        {"name": "fedasync", "concurrency": 8},
    ],
)
def test_slow_classes_raise_the_staleness_of_their_holders(tmp_path, monkeypatch, strategy):
    classes = [0, 1, 2]
    tied, seen = slow_run(tmp_path, monkeypatch, strategy, classes)
    score = seen["score"]
    assert score is not None and len(score) == 40 and (0 <= score).all() and (score <= 1).all()
    speed = np.array([p.speed for p in seen["profiles"]])
    assert speed[np.argmax(score)] == speed.min()
    order = np.argsort(-score, kind="stable")
    assert np.all(np.diff(speed[order]) >= 0)  # higher share of slow classes -> slower
    # the events reflect those speeds: compute_s = samples / speed
    np.testing.assert_allclose(tied.compute_s, tied.samples_trained / speed[tied.client_id], rtol=1e-12)

    plain, seen_plain = slow_run(tmp_path, monkeypatch, strategy, [])
    assert seen_plain["score"] is None
    holders = set(order[:10].tolist())  # the quarter of clients holding most of classes 0-2

    def mean_staleness(ev, who):
        a = ev[(ev.status == "applied") & ev.client_id.isin(who)]
        assert len(a) >= 10
        return a.staleness.mean()

    others = set(range(40)) - holders
    with_corr, without = mean_staleness(tied, holders), mean_staleness(plain, holders)
    assert with_corr > 1.5 * without, (with_corr, without)
    assert with_corr > 1.5 * mean_staleness(tied, others)


# ============================================================================================
# scale
# ============================================================================================


def test_scale_10k_clients_100k_events(tmp_path):
    ev, s = dry(
        tmp_path,
        data={"dataset": "synthetic", "partition": "iid"},
        clients={"num_clients": 10_000, "speed": {"dist": "lognormal", "sigma": 0.5}},
        strategy={"name": "fedbuff", "concurrency": 1000, "buffer_size": 4},
        run={"max_updates": 25_000},
    )
    assert s["final_version"] == 25_000
    assert len(ev) >= 100_000
    assert (ev.status == "applied").sum() == 4 * 25_000
    assert ev.job_id.is_unique and set(ev.status) <= FINAL
    print(f"\n{len(ev)} events, {s['events_per_second']:.0f} events/s (loop {s['loop_seconds']:.1f} s)")
