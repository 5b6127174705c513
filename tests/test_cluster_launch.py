"""Launching on a Ray cluster, for real, and keeping a local Ray local.

- The README's one-machine recipe ("Try it on one machine"), run as written: `raydiff cluster local up` (a head
  and a second raylet on 127.0.0.2, free ports, a token of its own), `. DIR/env`, `ray job submit --working-dir .`
  of `raydiff run`, `raydiff cluster local down`; the run folder has events on both nodes, no process of the recipe
  is left and an unrelated Ray started before it still works. On the same kind of cluster: a parallel
  `raydiff sweep` job; clients without the token are refused; the dashboard listens on the loopback only.
- A local run started from an environment without RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER listens on 127.0.0.1 only
  (also when `ray` was imported before raydiff).
- `python -m raydiff.cluster`: cluster.yaml passes; copies without the token, with a public dashboard or without
  the extra are flagged (tests/test_cluster_checks.py: the commands, data, file mounts and Python).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import psutil
import pytest
import yaml

from raydiff import ray_setup
from raydiff.cluster import check_launch, local_processes, validate_schema
from raydiff.cluster import main as cluster_main
from raydiff.config_load import load_config
from raydiff.errors import ConfigError, ResourceError

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "scripts"))
from ray_local_cluster import LocalRayCluster, readme_recipe

LOOPBACK = {"127.0.0.1", "::ffff:127.0.0.1", "::1"}


def _node_ids(events: Path) -> set[str]:
    ev = pd.read_parquet(events)
    return set(ev.node_id[ev.node_id != ""])


# -- the README's recipe on two raylets -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    rec = readme_recipe(ROOT / "README.md")
    assert rec.up and rec.env_file and rec.submit and rec.down
    c = LocalRayCluster(workers=rec.workers)
    try:
        c.start()
        yield c, rec
    finally:
        c.stop()
        shutil.rmtree(c.root, ignore_errors=True)


_UNRELATED = """
import sys, ray
ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
@ray.remote
def one():
    return 1
print("READY", ray.get(one.remote()), flush=True)
for line in sys.stdin:
    print("STILL", ray.get(one.remote()), flush=True)
"""


@pytest.mark.slow
def test_readme_recipe_as_written_runs_on_both_raylets_and_leaves_no_process_behind(tmp_path):
    """The recipe's lines after the install, in one shell, as written: only the cluster folder and the job's
    --out are made unique to this test. An unrelated local Ray runs throughout and must survive."""
    rec = readme_recipe(ROOT / "README.md")
    assert "ray stop" not in "\n".join(rec.lines)
    assert rec.submit[rec.submit.index("--") + 1 :][:3] == ["raydiff", "run", "scenarios/quickstart.yaml"]
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS")}
    env.update(RAY_USAGE_STATS_ENABLED="0", RAYDIFF_NO_PROGRESS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the venv, activated
    other = subprocess.Popen(
        [sys.executable, "-c", _UNRELATED],
        env=dict(env, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0"),
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert other.stdout is not None and other.stdin is not None
        assert other.stdout.readline().strip() == "READY 1"
        others = {p.pid for p in psutil.Process(other.pid).children(recursive=True)}
        assert others  # its GCS, raylet, workers
        folder = tempfile.mkdtemp(prefix="rdr", dir="/tmp")
        os.rmdir(folder)  # `up` wants a new folder
        out = tmp_path / "qs"
        lines = [ln for ln in rec.lines if not ln.startswith(("python3 -m venv", "pip install"))]
        script = "\n".join(ln.replace(rec.dir, folder).replace("/tmp/qs", str(out)) for ln in lines)
        assert script.count(folder) >= 3 and str(out) in script
        t0 = time.monotonic()
        r = subprocess.run(["bash", "-ec", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        took = time.monotonic() - t0
        log = r.stdout[-4000:] + r.stderr[-4000:]
        assert r.returncode == 0, log
        assert "succeeded" in r.stdout + r.stderr and "processes ended; no other Ray was touched" in r.stdout, log
        summary = json.loads((out / "summary.json").read_text())
        assert summary["final_version"] == 12 and not summary.get("interrupted")
        assert len(_node_ids(out / "events.parquet")) == 2, took  # one client actor on each raylet
        assert not local_processes(folder)  # nothing of the recipe is left
        assert not [p for p in psutil.process_iter(["cmdline"]) if folder in " ".join(p.info["cmdline"] or [])]
        # the unrelated Ray: all its processes alive, and it still runs tasks
        assert others <= {p.pid for p in psutil.process_iter()}
        other.stdin.write("again\n")
        other.stdin.flush()
        assert other.stdout.readline().strip() == "STILL 1"
    finally:
        other.kill()
        other.wait(timeout=30)
        for pid in [p.pid for p in psutil.process_iter() if _in_session(p, other.pid)]:
            try:
                os.kill(pid, 9)
            except OSError:
                pass


def _in_session(p: psutil.Process, sid: int) -> bool:
    try:
        return os.getsid(p.pid) == sid
    except OSError:
        return False


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


def test_readme_never_says_ray_stop_and_the_cluster_yaml_raises_ulimit():
    """`ray stop` stops every Ray on the machine: the README's recipe stops its own cluster instead. On a
    cluster node (cluster.yaml's start commands) `ray stop` stops that node's own earlier Ray, which is fine."""
    readme = (ROOT / "README.md").read_text()
    for block in re.findall(r"```bash\n(.*?)```", readme, re.S):
        assert not re.search(r"^\s*ray stop", block, re.M), block
    cy = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = next(x for x in cy[key] if "ray start" in x)
        assert start.startswith("ulimit -n 65536; RAY_AUTH_MODE=token ray start")
    assert cy["provider"]["cache_stopped_nodes"] is False


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
            "  cache_stopped_nodes: false\n",
            "  cache_stopped_nodes: false\n  security_group:\n    IpPermissions:\n"
            "      - {FromPort: 8265, ToPort: 8265, IpProtocol: tcp, IpRanges: [{CidrIp: 0.0.0.0/0}]}\n",
            "a rule opens ports 8265-8265 to 0.0.0.0/0",
        ),
        ("-py3-none-any.whl[cluster]", "-py3-none-any.whl", "no `pip install` of raydiff's cluster extra"),
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
