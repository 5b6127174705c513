"""Launching on a Ray cluster, for real, and keeping a local Ray local.

- The README's one-machine recipe ("Try it on one machine"): a head (`ray start --head`, dashboard on) and a
  second raylet (`ray start --address`) as separate processes, token authentication on, then `ray job submit
  --working-dir .` of `raydiff run` and of a parallel `raydiff sweep`; the run folders are checked (events on
  both nodes). Clients without the token are refused; the dashboard listens on the loopback only.
- A local run started from an environment without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER listens on 127.0.0.1 only
  (also when `ray` was imported before raydiff).
- `python -m raydiff.cluster`: cluster.yaml passes; copies without the token, with a public dashboard or without
  the extra are flagged.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import yaml

from raydiff import ray_setup
from raydiff.cluster import check_launch, validate_schema
from raydiff.cluster import main as cluster_main
from raydiff.config_load import load_config
from raydiff.errors import ConfigError, ResourceError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "scripts"))
from ray_local_cluster import NODE_IP, LocalRayCluster, readme_recipe

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def _node_ids(events: Path) -> set[str]:
    ev = pd.read_parquet(events)
    return set(ev.node_id[ev.node_id != ""])


# -- the README's recipe on two raylets -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    rec = readme_recipe(ROOT / "README.md")
    assert rec.env.get("RAY_AUTH_MODE") == "token" and rec.head and len(rec.workers) == 1 and rec.submit
    c = LocalRayCluster(env=rec.env)
    try:
        c.start_head(rec.head)
        for w in rec.workers:
            c.add_worker(w)
        c.wait_for_nodes(2)
        yield c, rec
    finally:
        c.stop()
        shutil.rmtree(c.root, ignore_errors=True)


@pytest.mark.slow
def test_readme_job_submit_runs_the_quickstart_on_both_raylets(cluster, tmp_path):
    c, rec = cluster
    assert rec.submit[rec.submit.index("--") + 1 :][:3] == ["raydiff", "run", "scenarios/quickstart.yaml"]
    out = tmp_path / "qs"
    r = c.job_submit(rec.submit, cwd=ROOT, out=out, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "succeeded" in r.stdout + r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_version"] == 12 and not summary.get("interrupted")
    assert (out / "evals.parquet").is_file() and (out / "model").is_dir()
    assert len(_node_ids(out / "events.parquet")) == 2  # one client actor on each raylet


@pytest.mark.slow
def test_job_submit_parallel_sweep_spreads_runs_over_the_nodes(cluster, tmp_path):
    c, rec = cluster
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "cl",
                "base": str(ROOT / "scenarios" / "quickstart.yaml"),
                "seeds": [0, 1],
                "parallel": 2,
                "set": [
                    "run.max_updates=4",
                    "run.actors=1",
                    "model.num_train_timesteps=100",
                    "eval.every_versions=0",
                    "eval.num_samples=8",
                    "eval.fid=false",
                    "eval.privacy_audit.enabled=false",
                ],
            }
        )
    )
    argv = [*rec.submit[: rec.submit.index("--") + 1], "raydiff", "sweep", str(sweep), "--out", "SWEEP"]
    r = c.job_submit(argv, cwd=ROOT, out=tmp_path / "sw", timeout=400)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "2 runs, 2 ran" in r.stdout
    nodes = [_node_ids(tmp_path / "sw" / f"seed{s}" / "events.parquet") for s in (0, 1)]
    assert all(len(n) == 1 for n in nodes)  # run.actors=1: each run's client actor on one node...
    assert nodes[0] != nodes[1]  # ...and the two runs, at once, on different nodes
    for s in (0, 1):
        assert json.loads((tmp_path / "sw" / f"seed{s}" / "summary.json").read_text())["final_version"] == 4


@pytest.mark.slow
def test_clients_without_the_token_are_refused_and_the_dashboard_is_private(cluster):
    c, rec = cluster
    listening = c.listeners()
    dash = [ip for _, ip, port in listening if port == c.dashboard_port]
    assert dash and set(dash) <= LOOPBACK, listening  # the job API: the head's loopback only
    assert any(name == "gcs_server" for name, _, _ in listening)

    def get(headers: dict) -> int:
        try:
            return urllib.request.urlopen(
                urllib.request.Request(f"{c.dashboard_url}/api/jobs/", headers=headers), timeout=30
            ).status
        except urllib.error.HTTPError as exc:
            return exc.code

    token = c.token_file.read_text()
    assert get({}) == 401
    assert get({"Authorization": "Bearer not-the-token"}) == 403
    assert get({"Authorization": f"Bearer {token}"}) == 200  # so the two refusals above are about the token

    env = {k: v for k, v in c.env.items() if k != "RAY_AUTH_TOKEN_PATH"}
    wrong = dict(env, RAY_AUTH_TOKEN="not-the-token")
    r = subprocess.run(
        [str(Path(sys.executable).parent / "ray"), "job", "list", "--address", c.dashboard_url],
        env=wrong,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode != 0 and "Invalid authentication token" in r.stdout + r.stderr
    r = c.job_submit(rec.submit, cwd=ROOT, env=wrong, timeout=120)
    assert r.returncode != 0 and "raysubmit_" not in r.stdout  # no job was created
    probe = (
        f"import ray\ntry:\n    ray.init(address={c.gcs_address!r}, log_to_driver=False)\n    print('CONNECTED')\n"
        "except Exception as e:\n    print('REFUSED', type(e).__name__)\n"
    )
    r = subprocess.run([sys.executable, "-c", probe], env=wrong, capture_output=True, text=True, timeout=180)
    assert "REFUSED" in r.stdout and "CONNECTED" not in r.stdout, r.stdout[-2000:] + r.stderr[-2000:]


def test_readme_recipe_is_cluster_yaml_on_loopback():
    """What the launch tests run is what `ray up` runs: the README's `ray start` lines carry cluster.yaml's
    flags (apart from the launcher's own and the node's address)."""
    rec = readme_recipe(ROOT / "README.md")
    cy = yaml.safe_load((ROOT / "cluster.yaml").read_text())

    def flags(cmd: str) -> set[str]:
        skip = ("--autoscaling-config", "--object-manager-port", "--node-ip-address", "--num-cpus", "--address")
        return {f for f in re.findall(r"--[\w-]+(?:=\S+)?", cmd) if not f.startswith(skip)}

    head = next(x for x in cy["head_start_ray_commands"] if "ray start" in x)
    worker = next(x for x in cy["worker_start_ray_commands"] if "ray start" in x)
    assert flags(head) == flags(rec.head) and flags(worker) == flags(rec.workers[0])
    assert head.startswith("RAY_AUTH_MODE=token ") and worker.startswith("RAY_AUTH_MODE=token ")
    assert f"--node-ip-address={NODE_IP}" in rec.head and f"--address={NODE_IP}:6379" in rec.workers[0]


# -- local runs stay local --------------------------------------------------------------------------------------


def _local_listeners(tmp_path: Path, mode: str) -> dict:
    env = {
        k: v
        for k, v in __import__("os").environ.items()
        if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")
    }
    r = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "scripts" / "local_listeners.py"), str(tmp_path / "r"), mode],
        env=dict(env, RAYDIFF_NO_PROGRESS="1", RAY_USAGE_STATS_ENABLED="0"),
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, r.stdout[-2000:] + r.stderr[-2000:]
    return json.loads(lines[-1][len("RESULT ") :])


@pytest.mark.slow
def test_local_run_without_the_variable_listens_on_loopback_only(tmp_path):
    res = _local_listeners(tmp_path, "fresh")
    names = {name for name, _, _ in res["listeners"]}
    assert {"gcs_server", "raylet"} <= names and any("ClientWorker" in n for n in names)  # the run's own processes
    assert {ip for _, ip, _ in res["listeners"]} <= LOOPBACK, res["listeners"]
    assert res["node_ip"] == "127.0.0.1" and res["final_version"] == 2


@pytest.mark.slow
def test_local_run_after_a_notebook_imported_ray_listens_on_loopback_only(tmp_path):
    res = _local_listeners(tmp_path, "preimported")
    assert {"gcs_server", "raylet"} <= {name for name, _, _ in res["listeners"]}
    assert {ip for _, ip, _ in res["listeners"]} <= LOOPBACK, res["listeners"]


def _cfg(**run):
    return load_config({"run": run})


def test_keep_ray_local_sets_the_variable_for_local_runs_only(monkeypatch):
    monkeypatch.setattr(ray_setup, "_forced_local", {"env": False, "constant": False})
    monkeypatch.delitem(sys.modules, "ray._private.ray_constants", raising=False)  # as before `import ray`
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    import os

    assert ray_setup.keep_ray_local(_cfg()) is True
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0"
    assert ray_setup.keep_ray_local(_cfg(address="10.0.0.5:6379")) is False  # attaching undoes it
    assert "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert ray_setup.keep_ray_local(_cfg()) is False and "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER" not in os.environ
    monkeypatch.delenv("RAY_ADDRESS")
    monkeypatch.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "1")  # the user's own choice wins
    assert ray_setup.keep_ray_local(_cfg()) is True and os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "1"
    assert ray_setup.keep_ray_local(_cfg(address="x:1")) is False
    assert os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "1"


def test_keep_ray_local_sets_rays_copy_when_ray_was_imported_first(monkeypatch):
    """Ray imported, not started (a notebook): its constant is set, and restored when a run attaches."""
    import types

    fake = types.SimpleNamespace(ENABLE_RAY_CLUSTER=True, IS_WINDOWS_OR_OSX=False)
    fake_ray = types.SimpleNamespace(is_initialized=lambda: False)
    monkeypatch.setattr(ray_setup, "_forced_local", {"env": False, "constant": False})
    monkeypatch.setitem(sys.modules, "ray._private.ray_constants", fake)
    monkeypatch.setitem(sys.modules, "ray", fake_ray)
    monkeypatch.delenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    ray_setup.keep_ray_local(_cfg())
    assert fake.ENABLE_RAY_CLUSTER is False
    ray_setup.keep_ray_local(_cfg(address="10.0.0.5:6379"))
    assert fake.ENABLE_RAY_CLUSTER is True


def test_parallel_sweep_needs_actors_that_fit_together():
    cfgs = [load_config({"name": f"r{i}", "clients": {"num_clients": 4, "num_cpus": 1}}) for i in range(3)]
    with pytest.raises(ResourceError, match=re.escape("add run.actors=N to the sweep's `set`")):
        ray_setup.check_parallel_fit(cfgs, 2)
    ray_setup.check_parallel_fit(cfgs, 1)  # one at a time: each may take the whole cluster
    sized = [
        load_config({"name": f"r{i}", "clients": {"num_clients": 4, "num_cpus": 1}, "run": {"actors": 2}})
        for i in range(3)
    ]
    ray_setup.check_parallel_fit(sized, 2, {"CPU": 4.0})
    with pytest.raises(ResourceError, match=r"need 4 CPUs .* has 3 CPUs"):
        ray_setup.check_parallel_fit(sized, 2, {"CPU": 3.0})


# -- python -m raydiff.cluster ----------------------------------------------------------------------------------


def test_cluster_yaml_passes_the_launch_checks(capsys):
    assert cluster_main([str(ROOT / "cluster.yaml")]) == 0
    out = capsys.readouterr().out
    assert "token:" in out and "dashboard: 127.0.0.1:8265" in out and "install: raydiff[cluster] with ray==" in out
    rep = check_launch(validate_schema(ROOT / "cluster.yaml"))
    assert not rep.problems


@pytest.mark.parametrize(
    "old, new, needle",
    [
        ("  ~/.ray/auth_token: ~/.ray/auth_token\n", "", "file_mounts: the auth token is not shipped"),
        (
            "RAY_AUTH_MODE=token ray start --address",
            "ray start --address",
            "runs with RAY_AUTH_MODE=(unset): every node must start with RAY_AUTH_MODE=token",
        ),
        ("--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0", "`--dashboard-host=0.0.0.0` opens the dashboard"),
        ("--dashboard-host=127.0.0.1", "--include-dashboard=false", "turns the dashboard off"),
        (
            "  cache_stopped_nodes: true\n",
            "  cache_stopped_nodes: true\n  security_group:\n    IpPermissions:\n"
            "      - {FromPort: 8265, ToPort: 8265, IpProtocol: tcp, IpRanges: [{CidrIp: 0.0.0.0/0}]}\n",
            "a rule opens ports 8265-8265 to 0.0.0.0/0",
        ),
        ('"/home/ubuntu/raydiff[cluster]"', "/home/ubuntu/raydiff", "no `pip install` of raydiff's cluster extra"),
        (' "ray[default]==2.60.0"', "", "Ray's version is not pinned"),
    ],
)
def test_cluster_yaml_copies_missing_a_launch_point_are_flagged(tmp_path, capsys, old, new, needle):
    text = (ROOT / "cluster.yaml").read_text()
    assert old in text
    bad = tmp_path / "cluster.yaml"
    bad.write_text(text.replace(old, new, 1))
    assert cluster_main([str(bad)]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    with pytest.raises(ConfigError, match=re.escape(needle)):
        from raydiff.cluster import validate_cluster_yaml

        validate_cluster_yaml(bad)


def test_a_ray_pin_other_than_this_machines_is_a_note_not_an_error():
    rep = check_launch(validate_schema(ROOT / "cluster.yaml"), local_ray_version="9.9.9")
    assert not rep.problems and any("this machine has Ray 9.9.9" in n for n in rep.notes)
