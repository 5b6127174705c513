"""Grouped training in runs (``train.group_size``; issue 16, phase 2): which jobs share a group is decided from
the virtual schedule alone, each job of a group gets its own inputs and results, and faults and resume work.

The numerics of a group (a job in a group equals the job alone up to float rounding) are tests/test_grouped.py's.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest

import raydiff
from raydiff.errors import ConfigError, InternalError
from raydiff.messages import JobSpec
from raydiff.outputs import EXECUTION_COLUMNS
from raydiff.sim.grouping import GroupBuffer, Member


def _m(job_id: int, client: int | None = None) -> Member:
    return Member(JobSpec(job_id, job_id if client is None else client, 0, np.arange(3), 1, 1), 0, None, None)


def _ids(group) -> list[int]:
    return [m.spec.job_id for m in group]


# ---------------------------------------------------------------------------------------------- GroupBuffer
def test_g_waiting_jobs_go_out_as_one_group_in_job_id_order():
    b = GroupBuffer(3)
    assert b.add(_m(0)) is None and b.add(_m(2)) is None and len(b) == 2 and 2 in b
    assert _ids(b.add(_m(5))) == [0, 2, 5]
    assert len(b) == 0 and b.flush() == []
    assert b.add(_m(6)) is None
    assert [_ids(g) for g in b.flush()] == [[6]]  # a group that cannot fill goes out smaller when due
    assert [_ids(g) for g in b.groups] == [[0, 2, 5], [6]]


def test_withdrawn_jobs_are_never_sent():
    b = GroupBuffer(2)
    b.add(_m(0))
    assert b.withdraw(0) and len(b) == 0
    assert b.add(_m(1)) is None and _ids(b.add(_m(2))) == [1, 2]
    assert not b.withdraw(1)  # already sent
    assert [_ids(g) for g in b.groups] == [[1, 2]]


def test_out_of_order_jobs_and_two_jobs_of_one_client_are_refused():
    b = GroupBuffer(2)
    b.add(_m(4))
    with pytest.raises(InternalError, match="job-id order"):
        b.add(_m(3))
    with pytest.raises(InternalError, match="two of them from one client"):
        b.add(_m(5, client=4))
    with pytest.raises(ValueError, match=">= 2"):
        GroupBuffer(1)


def test_live_keeps_only_groups_with_an_unsettled_job():
    b = GroupBuffer(2)
    b.add(_m(0))
    b.add(_m(1))
    b.add(_m(2))
    b.add(_m(3))
    assert [_ids(g) for g in b.live({1, 9})] == [[0, 1]]
    assert b.live(set()) == [] and b.groups == []


def test_group_size_is_checked():
    from raydiff.config_load import load_config

    with pytest.raises(ConfigError, match=r"train\.group_size: must be an integer in \[1, 4096\], got 0"):
        load_config({"train": {"group_size": 0}})
    with pytest.raises(ConfigError, match=r"train\.group_size: 2 trains jobs through torch\.func\.vmap"):
        load_config({"train": {"group_size": 2, "compile": True}})


# ---------------------------------------------------------------------------------------------- dry runs
def _record(monkeypatch, cls) -> list[list[tuple[int, int]]]:
    """Spy on ``cls.train_group``: the (job id, client id) of every group sent, in order."""
    sent: list[list[tuple[int, int]]] = []
    real = cls.train_group

    def spy(self, specs, bases, states):
        sent.append([(s.job_id, s.client_id) for s in specs])
        return real(self, specs, bases, states)

    monkeypatch.setattr(cls, "train_group", spy)
    return sent


DRY = {
    "clients": {
        "num_clients": 12,
        "dropout": 0.2,
        "availability": {"mode": "onoff", "mean_on_s": 2.0, "mean_off_s": 1.0},
    },
    "run": {"dry_run": True, "max_updates": 30},
}


@pytest.mark.parametrize(
    "strategy",
    [
        {"name": "fedbuff", "concurrency": 6, "buffer_size": 3},
        # rounds closed early: waiting jobs of over-selected and late clients are withdrawn, never sent
        {"name": "fedavg", "clients_per_round": 5, "over_selection": 0.5, "deadline_s": 3.0},
    ],
)
def test_dry_run_events_do_not_depend_on_the_group_size(tmp_path, monkeypatch, strategy):
    from raydiff.dry_run import DryExecutor

    base = dict(DRY, strategy=strategy)
    raydiff.run(base, out=tmp_path / "g1", progress=False)
    sent = _record(monkeypatch, DryExecutor)
    cfg = copy.deepcopy(base)
    cfg["train"] = {"group_size": 4}
    raydiff.run(cfg, out=tmp_path / "g4", progress=False)
    e1, e4 = (pd.read_parquet(tmp_path / d / "events.parquet") for d in ("g1", "g4"))
    pd.testing.assert_frame_equal(e1, e4)  # grouping changes no virtual time, no status, no version

    jobs = [j for g in sent for j, _ in g]
    assert len(jobs) == len(set(jobs))  # each job is sent once
    assert all(1 <= len(g) <= 4 and len({c for _, c in g}) == len(g) for g in sent)
    assert all(_ids_sorted(g) for g in sent)
    sizes = {len(g) for g in sent}
    assert 4 in sizes and min(sizes) < 4  # full groups, and groups sent before they filled
    # every job that ended with a training result was sent; jobs never sent are doomed or withdrawn
    trained = set(e4.job_id[e4.status.isin(["applied"])])
    assert trained <= set(jobs)
    assert not set(jobs) & set(e4.job_id[e4.status == "dropped"])


def _ids_sorted(group) -> bool:
    return [j for j, _ in group] == sorted(j for j, _ in group)


def test_a_group_size_above_the_jobs_in_flight_never_waits_for_a_full_group(tmp_path, monkeypatch):
    from raydiff.dry_run import DryExecutor

    sent = _record(monkeypatch, DryExecutor)
    cfg = dict(DRY, strategy={"name": "fedasync", "concurrency": 4}, train={"group_size": 16})
    res = raydiff.run(cfg, out=tmp_path / "g16", progress=False)
    assert res.summary["final_version"] == 30
    assert sent and max(len(g) for g in sent) <= 4


def test_dry_run_resume_with_groups_is_identical(tmp_path, monkeypatch):
    """A checkpoint holds the waiting jobs and the groups still training. The resumed run sends those groups
    again whole (members already settled included, so each job trains with the same mates), then exactly the
    groups the uninterrupted run sent, and ends with the same events."""
    from raydiff.dry_run import DryExecutor
    from raydiff.sim import checkpoint

    sent = _record(monkeypatch, DryExecutor)
    base = dict(
        DRY,
        strategy={
            "name": "fedbuff",
            "concurrency": 5,
            "buffer_size": 3,
            "compression": {"name": "topk", "fraction": 0.1},
        },
        train={"group_size": 4},
        run={"dry_run": True, "max_updates": 30, "checkpoint_every": 7},
    )
    a = raydiff.run(base, out=tmp_path / "a", progress=False)
    ga = list(sent)

    def stop(info):
        if info["version"] == 16:
            raise KeyboardInterrupt

    raydiff.run(base, out=tmp_path / "b", progress=False, callback=stop)
    state = checkpoint.read(tmp_path / "b" / checkpoint.CHECKPOINT)
    live = [[(m.spec.job_id, m.spec.client_id) for m in g] for g in state.groups]
    in_flight = {j.spec.job_id for j in state.inflight}
    assert any(j not in in_flight for g in live for j, _ in g)  # the case at stake: a group with a settled job
    sent.clear()
    c = raydiff.run(resume=tmp_path / "b", progress=False)
    assert sent[: len(live)] == live and all(g in ga for g in live)
    new = sent[len(live) :]
    assert new and new == ga[len(ga) - len(new) :]
    assert c.summary["final_version"] == a.summary["final_version"] == 30
    pd.testing.assert_frame_equal(
        pd.read_parquet(tmp_path / "a" / "events.parquet"), pd.read_parquet(tmp_path / "b" / "events.parquet")
    )


def test_a_checkpoint_that_loses_a_grouped_job_is_refused(tmp_path):
    from raydiff.errors import CheckpointError
    from raydiff.sim import checkpoint

    base = dict(
        DRY,
        strategy={"name": "fedbuff", "concurrency": 5, "buffer_size": 3},
        train={"group_size": 4},
        run={"dry_run": True, "max_updates": 10, "checkpoint_every": 7},
    )
    raydiff.run(base, out=tmp_path / "a", progress=False)
    state = checkpoint.read(tmp_path / "a" / checkpoint.CHECKPOINT)
    members = [m for g in state.groups for m in g] + state.waiting
    parts = [np.arange(1)] * 12
    for m in members:
        parts[m.spec.client_id] = m.spec.indices
    checkpoint._check_groups(state, parts)  # as saved: fits
    in_flight = {j.spec.job_id for j in state.inflight if j.trained}
    assert in_flight
    if state.waiting:
        state.waiting.pop()
    else:
        g = next(g for g in state.groups if any(m.spec.job_id in in_flight for m in g))
        g.remove(next(m for m in g if m.spec.job_id in in_flight))
    with pytest.raises(CheckpointError, match="not each waiting or in one group"):
        checkpoint._check_groups(state, parts)


# ---------------------------------------------------------------------------------------------- the client actor
def _worker(**train):
    from raydiff.actors.client import ClientWorker
    from raydiff.config_load import load_config
    from raydiff.data.datasets import load_digits_set

    cfg = load_config(
        {
            "model": {"preset": "tiny", "num_train_timesteps": 50},
            "clients": {"num_cpus": 1},
            "train": {"local_steps": 3, "batch_size": 8, "device": "cpu", "prox_mu": 0.5, **train},
            "strategy": {
                "compression": {"name": "topk", "fraction": 0.3, "partial": ["up_blocks", "conv_norm_out", "conv_out"]}
            },
        }
    )
    return ClientWorker(cfg, load_digits_set().images, "w")


def test_a_group_on_the_actor_gives_each_job_its_own_base_state_and_results():
    """Distinct bases and client states (top-k residual, private weights), FedProx: each job of a group gets
    what it would get alone (within test_grouped.py's rounding tolerance), and a group of one is ``train``."""
    w = _worker(group_size=4)
    n = w.fm.size
    rng = np.random.default_rng(0)
    x0 = w.fm.vector()
    specs = [JobSpec(j, j, 100 + j, np.arange(200 * j, 200 * j + 150), 3, 8) for j in range(3)]
    bases = [x0 + np.float32(0.01) * rng.standard_normal(n).astype(np.float32) for _ in specs]
    states = [None] + [w.train(s, b)[2] for s, b in zip(specs[1:], bases[1:])]  # two clients with a history
    assert states[1]["local"] is not None and states[1]["residual"] is not None

    out = w.train_group(specs, *bases, *states)
    assert len(out) == 9
    dec = w.exchange.compressor.decode
    for i, (s, b, st) in enumerate(zip(specs, bases, states)):
        m, payload, new = out[3 * i : 3 * i + 3]
        am, apayload, anew = w.train(s, b, st)
        assert (
            m.job_id == s.job_id and m.samples_trained == 24 and m.train_loss == pytest.approx(am.train_loss, rel=1e-4)
        )
        # top-k may pick another entry where two are equal up to rounding; what was sent plus what is carried
        # (error feedback's invariant: delta + the previous residual) may not differ by more than rounding
        sent, asent = dec(payload, n), dec(apayload, n)
        assert np.mean(np.abs(sent - asent) > 1e-5) < 0.001
        for got, want in ((sent + new["residual"], asent + anew["residual"]), (new["local"], anew["local"])):
            gap = np.abs(got - want)
            assert gap.max() < 0.5 * 2e-3 * 3 and np.mean(gap > 1e-5) < 0.01
    # jobs really differ: a mix-up of bases or states between the group's jobs would be far outside that bound
    assert np.abs(out[5]["local"] - out[8]["local"]).max() > 1e-2

    alone = w.train(specs[1], bases[1], states[1])
    one = w.train_group(specs[1:2], bases[1], states[1])
    assert one[1][1].tobytes() == alone[1][1].tobytes() and one[2]["local"].tobytes() == alone[2]["local"].tobytes()


def test_the_actor_groups_with_its_precision_and_layout():
    """bf16 and channels_last reach the actor's GroupTrainer (their numerics: test_grouped.py)."""
    w = _worker(group_size=2, precision="bf16", channels_last=True)
    assert w.grouper is not None and w.grouper.bf16 and w.grouper.channels_last
    x0 = w.fm.vector()
    specs = [JobSpec(j, j, 7 + j, np.arange(100 * j, 100 * j + 80), 2, 8) for j in range(2)]
    out = w.train_group(specs, x0, x0, None, None)
    assert all(np.isfinite(out[3 * i].train_loss) and np.isfinite(out[3 * i + 2]["local"]).all() for i in range(2))
    assert not np.array_equal(out[2]["local"], out[5]["local"])


def test_a_job_through_train_is_unchanged_by_the_group_split():
    """``train`` (the group_size 1 path) still trains exactly as train_local with the job's own derivation."""
    from raydiff.diffusion import batch_stream, job_generator, train_local

    w = _worker()
    assert w.grouper is None
    spec = JobSpec(0, 0, 77, np.arange(150), 3, 8)
    x0 = w.fm.vector()
    state = w.train(spec, x0)[2]
    w.fm.load(x0)
    rng = np.random.default_rng(77)
    gen = job_generator(int(rng.integers(2**63 - 1)), "cpu")
    train_local(w.fm, w.scheduler, w.images, batch_stream(spec.indices, 8, 3, rng), w.lr, gen, 0.5)
    assert state["local"].tobytes() == w.fm.vector().tobytes()


# ---------------------------------------------------------------------------------------------- real Ray runs
def _events(out) -> pd.DataFrame:
    return pd.read_parquet(out / "events.parquet")


@pytest.mark.slow  # 15-60 s: keeps the default run under 7 minutes; CI runs it
def test_grouped_run_is_the_same_with_one_and_two_actors(ray_session, tiny_cfg, tmp_path, monkeypatch):
    from raydiff.ray_exec.executor import RayExecutor

    sent = _record(monkeypatch, RayExecutor)
    tiny_cfg["train"]["group_size"] = 4
    tiny_cfg["eval"]["privacy_audit"] = {"enabled": False}
    runs = []
    for actors in (1, 2):
        tiny_cfg["run"]["actors"] = actors
        res = raydiff.run(tiny_cfg, out=tmp_path / f"a{actors}", progress=False)
        runs.append((res.summary, _events(res.out_dir), list(sent)))
        sent.clear()
    (s1, e1, g1), (s2, e2, g2) = runs
    assert s1["model_sha256"] == s2["model_sha256"] and s2["actors"] == 2
    sim = [c for c in e1.columns if c not in EXECUTION_COLUMNS]
    pd.testing.assert_frame_equal(e1[sim], e2[sim])
    assert g1 == g2 and max(len(g) for g in g1) >= 2  # the same groups, and real ones
    assert s1["final_version"] == 6


@pytest.mark.slow  # 15-60 s: keeps the default run under 7 minutes; CI runs it
def test_group_above_concurrency_with_topk_partial_and_fedprox(ray_session, tiny_cfg, tmp_path, monkeypatch):
    """G = 16 with 4 jobs in flight completes (no group waits to fill); top-k residuals, private weights and
    FedProx go through groups; the schedule is the one of group_size 1."""
    from raydiff.ray_exec.executor import RayExecutor

    tiny_cfg["eval"]["privacy_audit"] = {"enabled": False}
    tiny_cfg["train"]["prox_mu"] = 0.1
    tiny_cfg["strategy"]["compression"] = {
        "name": "topk",
        "fraction": 0.2,
        "partial": ["up_blocks", "conv_norm_out", "conv_out"],
    }
    tiny_cfg["run"]["actors"] = 2
    ref = raydiff.run(tiny_cfg, out=tmp_path / "g1", progress=False)
    sent = _record(monkeypatch, RayExecutor)
    tiny_cfg["train"]["group_size"] = 16
    res = raydiff.run(tiny_cfg, out=tmp_path / "g16", progress=False)
    assert res.summary["final_version"] == 6
    assert sent and max(len(g) for g in sent) >= 2 and max(len(g) for g in sent) <= 4
    e1, e16 = _events(ref.out_dir), _events(res.out_dir)
    sim = [c for c in e1.columns if c not in (*EXECUTION_COLUMNS, "train_loss")]
    pd.testing.assert_frame_equal(e1[sim], e16[sim])
    np.testing.assert_allclose(e16.train_loss, e1.train_loss, rtol=2e-3)  # rounding only, not other training


@pytest.mark.slow  # 15-60 s: keeps the default run under 7 minutes; CI runs it
def test_a_killed_actor_fails_every_job_of_its_group(ray_session, tiny_cfg, tmp_path, monkeypatch):
    """Kill a client actor mid-run with group_size 2: a group lost with its actor fails each of its jobs
    (actor_lost), no group is half applied, a fresh actor takes the slot and the run completes."""
    import ray

    from raydiff.ray_exec.executor import RayExecutor

    sent = _record(monkeypatch, RayExecutor)
    tiny_cfg["run"] = {"max_updates": 8, "actors": 2}
    tiny_cfg["clients"]["dropout"] = 0.0
    tiny_cfg["train"]["group_size"] = 2
    tiny_cfg["eval"]["privacy_audit"] = {"enabled": False}
    killed = []

    def kill_at_version_2(info):
        if info["version"] == 2 and not killed:
            names = [
                n["name"] for n in ray.util.list_named_actors(all_namespaces=True) if n["name"].endswith("-client-0-g0")
            ]
            ray.kill(ray.get_actor(names[0]), no_restart=True)
            killed.append(names[0])

    res = raydiff.run(tiny_cfg, out=tmp_path / "kill", progress=False, callback=kill_at_version_2)
    assert killed and res.summary["actors_replaced"] == 1 and res.summary["final_version"] == 8
    ev = _events(res.out_dir).set_index("job_id")
    failed = ev[ev.status == "failed"]
    assert len(failed) >= 2 and (failed.failure_reason == "actor_lost").all()
    lost_groups = 0
    for g in sent:
        statuses = {ev.status[j] for j, _ in g}
        assert not ("failed" in statuses and "applied" in statuses), g  # a group is lost whole or not at all
        lost_groups += len(g) >= 2 and statuses == {"failed"}
    assert lost_groups >= 1
