"""A real multi-raylet Ray cluster on this machine, started with ``ray start`` as separate processes, for the
cluster-launch tests (tests/test_cluster_launch.py) and the sweep speed-up measurement (cluster_sweep_speedup.py).

The commands are the README's own ("Try it on one machine"), run as written, with these substitutions only,
because other engineers run Ray on the same machine at the same time:
- free ports instead of the fixed ones (GCS 6379, dashboard 8265, the agents', Ray Client's), and a temp dir of
  its own; every ``ray start`` runs in a session of its own, and ``stop()`` kills exactly this cluster's processes
  (those sessions' process groups, their descendants, anything naming the temp dir), never ``ray stop``, which
  would stop every Ray on the machine;
- its own token file (``RAY_AUTH_TOKEN_PATH``) instead of ``ray get-auth-token --generate``, so it neither reads
  nor writes ``~/.ray/auth_token``; ``RAY_AUTH_MODE`` comes from the README's ``export`` line;
- ``--out`` of a job in the test's own folder.

Loopback only: the README's commands give every node ``--node-ip-address=127.0.0.2`` (see NODE_IP), and the nodes
run without ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER`` (with it, ``ray start --address`` refuses to start a worker).
"""

from __future__ import annotations

import os
import re
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

BIN = Path(sys.executable).parent  # the venv's bin: ray, raydiff
# Every node's IP. Ray replaces 127.0.0.1 (given to --node-ip-address or --address) by the machine's network
# address unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which in turn forbids `ray start --address`. 127.0.0.2 is
# loopback too (127.0.0.0/8), and Ray leaves it alone: the nodes talk to each other without leaving the machine.
NODE_IP = "127.0.0.2"


@dataclass
class Recipe:
    """The README's one-machine recipe, split into what the tests run."""

    env: dict[str, str] = field(default_factory=dict)  # from `export` lines
    head: str = ""  # the `ray start --head` line
    workers: list[str] = field(default_factory=list)  # `ray start --address` lines
    submit: list[str] = field(default_factory=list)  # the `ray job submit` command, split


def readme_recipe(readme: Path) -> Recipe:
    """The first ```bash block of the README's "## Clusters and faults" section that starts a head."""
    text = readme.read_text()
    section = text.split("## Clusters and faults", 1)[1].split("\n## ", 1)[0]
    block = next(b for b in re.findall(r"```bash\n(.*?)```", section, re.S) if "ray start --head" in b)
    rec = Recipe()
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words[:1] == ["export"]:
            rec.env.update(w.split("=", 1) for w in words[1:])  # type: ignore[misc]
        elif words[:3] == ["ray", "start", "--head"]:
            rec.head = shlex.join(words)
        elif words[:2] == ["ray", "start"]:
            rec.workers.append(shlex.join(words))
        elif words[:3] == ["ray", "job", "submit"]:
            rec.submit = words
    return rec


def free_ports(n: int) -> list[int]:
    """n distinct ports that were free a moment ago (bound together, then released)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def isolated(cmd: str, gcs_port: int, temp_dir: Path, head: bool) -> tuple[str, int]:
    """A ``ray start`` line with its fixed ports replaced by free ones and a temp dir of its own;
    returns it and the dashboard port (0 for a worker)."""
    cmd = cmd.replace("$RAY_HEAD_IP", NODE_IP)
    cmd = re.sub(r"--port=\d+", f"--port={gcs_port}", cmd)
    cmd = re.sub(r"(--address=[\d.]+):\d+", rf"\g<1>:{gcs_port}", cmd)
    cmd = re.sub(r"\s--(object-manager-port|dashboard-port|dashboard-agent-listen-port)=\d+", "", cmd)
    cmd = re.sub(r"\s--autoscaling-config=\S+", "", cmd)
    om, agent, dash, client = free_ports(4)
    flags = [
        f"--object-manager-port={om}",
        f"--dashboard-agent-listen-port={agent}",
        f"--temp-dir={temp_dir}",
        "--min-worker-port=0",
        "--max-worker-port=0",
        "--disable-usage-stats",
    ]
    if head:
        flags += [f"--dashboard-port={dash}", f"--ray-client-server-port={client}"]
    if "--node-ip-address" not in cmd:
        flags.append(f"--node-ip-address={NODE_IP}")
    return f"{cmd} {' '.join(flags)}", dash if head else 0


class LocalRayCluster:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        """``env``: what the recipe exports (RAY_AUTH_MODE=token), on top of this process's environment."""
        self.root = Path(tempfile.mkdtemp(prefix="rdc", dir="/tmp"))  # short: Ray's socket paths must fit 107 chars
        self.token_file = self.root / "token"
        self.token_file.write_text(secrets.token_hex(32))
        self.gcs_port, self.dashboard_port = free_ports(1)[0], 0
        self.pgids: list[int] = []
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_MODE")
        }
        self.env.update(
            RAY_AUTH_TOKEN_PATH=str(self.token_file),
            RAY_USAGE_STATS_ENABLED="0",
            RAYDIFF_NO_PROGRESS="1",
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            **(env or {}),
        )

    @property
    def gcs_address(self) -> str:
        return f"{NODE_IP}:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _start(self, cmd: str) -> str:
        log = self.root / f"start{len(self.pgids)}.log"  # a file, not a pipe: the daemons keep their stdout open
        with open(log, "w") as f:
            p = subprocess.Popen(
                ["bash", "-c", cmd], env=self.env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True
            )
            self.pgids.append(p.pid)
            rc = p.wait(timeout=180)
        out = log.read_text()
        if rc != 0:
            raise RuntimeError(f"{cmd!r} failed ({rc}):\n{out[-4000:]}")
        return out

    def start_head(self, cmd: str) -> str:
        cmd, self.dashboard_port = isolated(cmd, self.gcs_port, self.root / "head", head=True)
        return self._start(cmd)

    def add_worker(self, cmd: str) -> str:
        cmd, _ = isolated(cmd, self.gcs_port, self.root / f"w{len(self.pgids)}", head=False)
        return self._start(cmd)

    def wait_for_nodes(self, n: int, timeout: float = 90) -> None:
        deadline = time.monotonic() + timeout
        while True:
            r = subprocess.run(
                [str(BIN / "ray"), "status", "--address", self.gcs_address],
                env=self.env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            active = re.search(r"Active:\n(.*?)\nPending:", r.stdout, re.S)
            if active and active.group(1).count("node_") >= n:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{n} nodes did not join in {timeout} s:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
            time.sleep(1)

    def job_submit(
        self,
        argv: list[str],
        cwd: Path,
        out: Path | None = None,
        timeout: float = 300,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        """A ``ray job submit`` command (split) sent to this cluster's dashboard; ``out`` replaces the run's
        ``--out``. Waits for the job: the exit status is the job's."""
        argv = list(argv)
        argv[argv.index("--address") + 1] = self.dashboard_url
        if out is not None:
            argv[argv.index("--out") + 1] = str(out)
        argv[0] = str(BIN / argv[0])
        return subprocess.run(argv, cwd=cwd, env=env or self.env, capture_output=True, text=True, timeout=timeout)

    def processes(self) -> list[psutil.Process]:
        """Every process of this cluster: the ``ray start`` sessions' groups, their descendants, and anything
        naming the temp dir (the job driver runs in a session of its own)."""
        found: dict[int, psutil.Process] = {}
        me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}  # never the test itself
        for p in psutil.process_iter(["pid", "cmdline"]):
            try:
                if p.pid in me:
                    continue
                if os.getpgid(p.pid) in self.pgids or str(self.root) in " ".join(p.info["cmdline"] or []):
                    found[p.pid] = p
            except (ProcessLookupError, psutil.Error):
                continue
        for p in list(found.values()):
            try:
                found.update({c.pid: c for c in p.children(recursive=True) if c.pid not in me})
            except psutil.Error:
                pass
        return list(found.values())

    def listeners(self) -> list[tuple[str, str, int]]:
        """(process name, address, port) of every listening TCP socket of this cluster (what ``ss -ltnp`` shows)."""
        out = []
        for p in self.processes():
            try:
                out += [
                    (p.name(), c.laddr.ip, c.laddr.port)
                    for c in p.net_connections(kind="tcp")
                    if c.status == psutil.CONN_LISTEN
                ]
            except psutil.Error:
                pass
        return sorted(set(out))

    def stop(self) -> None:
        procs = self.processes()
        for p in procs:
            try:
                p.send_signal(signal.SIGTERM)
            except psutil.Error:
                pass
        _, alive = psutil.wait_procs(procs, timeout=5)
        for p in alive:
            try:
                p.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(alive, timeout=5)
