"""A real multi-raylet Ray cluster on this machine, for the cluster-launch tests (tests/test_cluster_launch.py) and
the sweep speed-up measurement (cluster_sweep_speedup.py): the README's one-machine recipe ("Try it on one
machine"), which is `raydiff cluster local up DIR --workers N`, `. DIR/env`, `ray job submit ...` and
`raydiff cluster local down DIR`.

The helper itself (raydiff/cluster.py: local_up, local_down) already does what a shared machine needs: free ports
instead of the fixed ones, a temp dir and a token of its own (never ~/.ray/auth_token), every node on 127.0.0.2
(loopback, and left alone by Ray), no RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER (it forbids `ray start --address`), and a
stop that ends exactly its own processes (never `ray stop`, which would stop every Ray on the machine). Here only
the folder is a fresh short one per cluster and a job's ``--out`` goes to the test's own folder.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from raydiff.cluster import NODE_IP, local_down, local_processes, local_up

BIN = Path(sys.executable).parent  # the venv's bin: ray, raydiff
__all__ = ["NODE_IP", "LocalRayCluster", "Recipe", "readme_recipe"]


@dataclass
class Recipe:
    """The README's one-machine recipe, split into what the tests run."""

    up: list[str] = field(default_factory=list)  # `raydiff cluster local up DIR --workers N`
    env_file: str = ""  # `. DIR/env`
    submit: list[str] = field(default_factory=list)  # the `ray job submit` command, split
    down: list[str] = field(default_factory=list)  # `raydiff cluster local down DIR`
    lines: list[str] = field(default_factory=list)  # every command line of the block, in order

    @property
    def dir(self) -> str:
        return self.up[4]

    @property
    def workers(self) -> int:
        return int(self.up[self.up.index("--workers") + 1]) if "--workers" in self.up else 1


def readme_recipe(readme: Path) -> Recipe:
    """The first ```bash block of the README's "## Clusters and faults" section that starts a local cluster."""
    text = readme.read_text()
    section = text.split("## Clusters and faults", 1)[1].split("\n## ", 1)[0]
    block = next(b for b in re.findall(r"```bash\n(.*?)```", section, re.S) if "raydiff cluster local up" in b)
    rec = Recipe()
    for line in block.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        rec.lines.append(shlex.join(words))
        if words[:4] == ["raydiff", "cluster", "local", "up"]:
            rec.up = words
        elif words[:4] == ["raydiff", "cluster", "local", "down"]:
            rec.down = words
        elif words[0] in (".", "source") and len(words) == 2:
            rec.env_file = words[1]
        elif words[:3] == ["ray", "job", "submit"]:
            rec.submit = words
    return rec


class LocalRayCluster:
    def __init__(self, workers: int = 1) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="rdc", dir="/tmp"))  # short: Ray's socket paths must fit 107 chars
        self.workers = workers
        self.state: dict = {}
        self.env: dict[str, str] = {}

    def start(self) -> None:
        self.state = local_up(self.root, workers=self.workers)
        base = {
            k: v
            for k, v in os.environ.items()
            if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
        }
        exported = dict(
            re.findall(r"^export (\w+)=(.*)$", (self.root / "env").read_text(), re.M)
        )  # what `. DIR/env` sets
        self.env = dict(base, RAYDIFF_NO_PROGRESS="1", PATH=f"{BIN}{os.pathsep}{base.get('PATH', '')}", **exported)

    @property
    def token_file(self) -> Path:
        return self.root / "auth_token"

    @property
    def gcs_address(self) -> str:
        return self.state["gcs_address"]

    @property
    def dashboard_url(self) -> str:
        return self.state["dashboard"]

    @property
    def dashboard_port(self) -> int:
        return int(self.state["ports"]["dashboard"])

    def job_submit(
        self,
        argv: list[str],
        cwd: Path,
        out: Path | None = None,
        timeout: float = 300,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        """A ``ray job submit`` command (split) sent to this cluster's dashboard (RAY_API_SERVER_ADDRESS from the
        env file, or ``--address``); ``out`` replaces the run's ``--out``. Waits: the exit status is the job's."""
        argv = list(argv)
        if "--address" in argv:
            argv[argv.index("--address") + 1] = self.dashboard_url
        if out is not None:
            argv[argv.index("--out") + 1] = str(out)
        argv[0] = str(BIN / argv[0])
        return subprocess.run(argv, cwd=cwd, env=env or self.env, capture_output=True, text=True, timeout=timeout)

    def processes(self) -> list[psutil.Process]:
        return local_processes(self.root)

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
        local_down(self.root, quiet=True)
