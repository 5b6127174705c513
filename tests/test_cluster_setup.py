"""cluster.yaml's setup commands, run for real on this machine as `ray up` runs them on the head: in a throwaway
HOME (the node's /home/ubuntu), through `bash --login -i` after `source ~/.bashrc` (Ray's command runner does
the same), from the file mounts (the built wheel) to `raydiff --help` and `ray --version` in the venv.

What differs from a cloud head, and why (each substitution is a line below):
- the image: ``python3`` is Python 3.10 (as on Ubuntu 22.04) and ``python3.11`` is on PATH, so uv builds the venv
  from the machine's 3.11 (here uv may not download Pythons: UV_PYTHON_DOWNLOADS=never);
- PyTorch's CPU index (download.pytorch.org) is unreachable here: the CPU torch wheel on this machine's disk
  stands in for it (``--find-links`` and a constraint, since this machine's registry also offers the CUDA
  build, which a head reading only the CPU index never sees);
- CIFAR-10 cannot be downloaded here: a tiny stand-in in the torchvision layout is put in place first, so the
  data command finds it and fetches nothing (tests/test_cluster_data.py checks the fetch itself).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_cluster_data import write_fake_cifar10

CPU_INDEX = "--index-url https://download.pytorch.org/whl/cpu"


def _python(version: str) -> str | None:
    for cand in (f"/root/.pyenv/versions/{version}*/bin/python{version}", f"/usr/bin/python{version}"):
        hits = sorted(glob.glob(cand))
        if hits:
            return hits[-1]
    return shutil.which(f"python{version}")


@pytest.mark.slow
def test_cluster_yaml_setup_commands_install_raydiff_from_the_wheel(tmp_path):
    cpu_wheels = sorted(glob.glob("/opt/wheels/torch-*+cpu-*.whl"))
    py311, py310 = _python("3.11"), _python("3.10")
    if not cpu_wheels or not py311:
        pytest.skip("needs a CPU torch wheel in /opt/wheels and a python3.11 on this machine")
    cfg = yaml.safe_load((ROOT / "cluster.yaml").read_text())
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("# the image's .bashrc\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(py310 or py311)  # the image's own Python: not the tested one
    (bin_dir / "python3.11").symlink_to(py311)

    # the file mounts, as `ray up` copies them: the wheel folder (built now) and the token
    mounts = cfg["file_mounts"]
    remote_dist = next(r for r, local in mounts.items() if local.rstrip("/") == "dist")
    built = tmp_path / "dist"
    r = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(built), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    shutil.copytree(built, Path(re.sub(r"^(~|/home/ubuntu)", str(home), remote_dist)))
    (home / ".ray").mkdir()
    (home / ".ray" / "auth_token").write_text("0" * 64)
    write_fake_cifar10(home / "data" / "cifar10", per_batch=4)

    torch_version = re.match(r"torch-([^-]+)-", Path(cpu_wheels[0]).name).group(1)  # type: ignore[union-attr]
    constraints = tmp_path / "constraints.txt"
    base = Path("/etc/xdg/pip/constraints.txt")
    constraints.write_text((base.read_text() if base.is_file() else "") + f"\ntorch=={torch_version}\n")
    commands = cfg["setup_commands"] + cfg["head_setup_commands"]
    assert sum(CPU_INDEX in c for c in commands) == 1
    commands = [c.replace(CPU_INDEX, f"--find-links {Path(cpu_wheels[0]).parent}") for c in commands]
    env = {
        "HOME": str(home),
        "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
        "UV_PYTHON_DOWNLOADS": "never",
        "PIP_CONSTRAINT": str(constraints),
        "LANG": "C.UTF-8",
    }
    env.update({k: v for k, v in os.environ.items() if k.startswith(("PIP_", "SSL_", "REQUESTS_")) and k not in env})

    def on_node(cmd: str, timeout: float = 900) -> subprocess.CompletedProcess:
        """One command as Ray's command runner sends it: a fresh login shell that sources ~/.bashrc."""
        wrapped = f"source ~/.bashrc; export OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore && ({cmd})"
        return subprocess.run(
            ["bash", "--login", "-c", "-i", wrapped], env=env, cwd=home, capture_output=True, text=True, timeout=timeout
        )

    outs = []
    for cmd in commands:
        r = on_node(cmd)
        outs.append(r.stdout)
        assert r.returncode == 0, f"`{cmd}` failed:\n{(r.stdout + r.stderr)[-5000:]}"
    r = on_node(
        "raydiff --help && ray --version && python --version && "
        "python -c 'import torch, raydiff, sys; print(\"TORCH\", torch.__version__, sys.prefix)'"
    )
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    assert "usage: raydiff" in r.stdout and "data" in r.stdout and "cluster" in r.stdout
    assert re.search(r"ray, version 2\.60\.0", r.stdout), out[-3000:]
    assert "Python 3.11" in r.stdout
    assert f"TORCH {torch_version} {home}/raydiff-venv" in r.stdout  # the CPU build, in the venv
    assert "already in" in outs[-1]  # the data command found the data and fetched nothing
    bashrc = (home / ".bashrc").read_text()
    assert "raydiff-venv/bin/activate" in bashrc and "RAY_AUTH_MODE=token" in bashrc
    # idempotent: `ray up` runs the setup again on a changed file; the second time it changes nothing
    for cmd in commands:
        r2 = on_node(cmd, timeout=600)
        assert r2.returncode == 0, f"`{cmd}` failed the second time:\n{(r2.stdout + r2.stderr)[-4000:]}"
    assert (home / ".bashrc").read_text() == bashrc
