"""`python -m raydiff.cluster` on broken copies of cluster.yaml: each copy breaks one thing the launch needs
(the job command in its comments, the data, what `ray up` ships, the nodes' Python) and must be refused, exit 2,
with one paragraph naming it; the shipped file passes."""

from __future__ import annotations

from pathlib import Path

import pytest

from raydiff.cluster import comment_commands
from raydiff.cluster import main as cluster_main

ROOT = Path(__file__).resolve().parents[1]
TEXT = (ROOT / "cluster.yaml").read_text()
FETCH = "  - ~/raydiff-venv/bin/raydiff data fetch cifar10 --root ~/data/cifar10\n"
VENV = "  - test -x ~/raydiff-venv/bin/pip || ~/.uv/bin/uv venv --seed --python 3.11 ~/raydiff-venv\n"
WORKER_TORCH = '  - ~/raydiff-venv/bin/python -m pip install -q "torch>=2.4" "torchvision>=0.19"\n'


@pytest.fixture(autouse=True)
def _repo_root(monkeypatch):
    monkeypatch.chdir(ROOT)  # relative paths resolve from where `ray up` runs: the repository's root


def _check(tmp_path: Path, capsys, text: str) -> tuple[int, str]:
    bad = tmp_path / "cluster.yaml"
    bad.write_text(text)
    rc = cluster_main([str(bad)])
    cap = capsys.readouterr()
    assert "Traceback" not in cap.err
    return rc, cap.err


def test_the_shipped_file_passes_with_its_commands_and_data(capsys):
    assert cluster_main([str(ROOT / "cluster.yaml")]) == 0
    out = capsys.readouterr().out
    assert "data: cifar10 in ~/data/cifar10, fetched once by the head's setup" in out
    assert "commands: 1 raydiff job command(s) in the comments match their files" in out
    assert "into a Python 3.11 venv" in out


def test_comment_commands_are_found_across_continuation_lines():
    cmds = comment_commands(TEXT)
    assert ["raydiff", "sweep", "scenarios/async-study-gpu.yaml", "--out", "/home/ubuntu/runs/study"] in cmds


def _fake_tree(tmp_path: Path, what: str) -> Path:
    folder = tmp_path / "work"
    (folder / "raydiff").mkdir(parents=True)
    (folder / "raydiff" / "__init__.py").write_text("")
    if what == "venv":
        (folder / ".venv" / "bin").mkdir(parents=True)
        (folder / ".venv" / "pyvenv.cfg").write_text("home = /usr/bin\n")
    else:
        run = folder / "runs" / "qs"
        run.mkdir(parents=True)
        (run / "status.json").write_text("{}")
        (run / "config.yaml").write_text("{}")
    return folder


@pytest.mark.parametrize(
    "old, new, needle",
    [
        (  # issue 24 #1: the documented job command ran a sweep file with `raydiff run`
            "raydiff sweep scenarios/async-study-gpu.yaml --out",
            "raydiff run scenarios/async-study-gpu.yaml --out",
            "runs a sweep file (scenarios/async-study-gpu.yaml has `base:`), which `raydiff run` refuses",
        ),
        (
            "#   ray down cluster.yaml\n",
            "#   raydiff sweep scenarios/quickstart.yaml --list\n",
            "sweeps a scenario file (scenarios/quickstart.yaml has no `base:`)",
        ),
        (  # issue 24 #2: nothing put CIFAR-10 on the head
            FETCH,
            "",
            "reads cifar10 from ~/data/cifar10 on the head, and nothing in the setup commands puts it there",
        ),
        (
            FETCH,
            FETCH.replace("~/data/cifar10", "~/cifar"),
            "nothing in the setup commands puts it there",
        ),
        (  # issue 24 #4: no venv, the image's Python
            VENV,
            "",
            "no venv is created",
        ),
        (
            VENV,
            VENV.replace("--python 3.11", "--python 3.10"),
            "the venv ~/raydiff-venv is made with Python 3.10, not the tested 3.11",
        ),
        (
            WORKER_TORCH,
            WORKER_TORCH.replace("~/raydiff-venv/bin/python -m pip", "python3 -m pip"),
            "installs into the image's own Python",
        ),
        (
            '"$HOME/raydiff-dist/raydiff-0.1.0-py3-none-any.whl[cluster]"',
            '-e "$HOME/raydiff[cluster]"',
            "an editable install (`pip install -e`) needs the working folder on the node",
        ),
        (
            "raydiff-0.1.0-py3-none-any.whl",
            "raydiff-0.0.9-py3-none-any.whl",
            "but pyproject.toml says version 0.1.0",
        ),
    ],
)
def test_a_broken_copy_is_refused_naming_the_problem(tmp_path, capsys, old, new, needle):
    assert old in TEXT
    rc, err = _check(tmp_path, capsys, TEXT.replace(old, new))
    assert rc == 2 and needle in err, err


@pytest.mark.parametrize("what, needle", [("venv", "(a venv)"), ("runs", "(run folders)")])
def test_a_file_mount_holding_a_venv_or_run_folders_is_refused(tmp_path, capsys, what, needle):
    """issue 24 #3: `ray up` hashed the whole working folder, .venv and runs/ included."""
    folder = _fake_tree(tmp_path, what)
    rc, err = _check(tmp_path, capsys, TEXT.replace("  ~/raydiff-dist: dist\n", f"  ~/raydiff: {folder}\n"))
    assert rc == 2 and needle in err and "rsync_exclude does not apply to the hash" in err, err


def test_a_file_mount_of_a_clean_wheel_folder_is_counted(tmp_path, capsys):
    dist = tmp_path / "dist"
    dist.mkdir()
    (dist / "raydiff-0.1.0-py3-none-any.whl").write_bytes(b"x" * 1000)
    bad = tmp_path / "cluster.yaml"
    bad.write_text(TEXT.replace("  ~/raydiff-dist: dist\n", f"  ~/raydiff-dist: {dist}\n"))
    assert cluster_main([str(bad)]) == 0
    assert "1 files, 0.0 MB hashed per `ray up`" in capsys.readouterr().out


def test_cluster_local_refuses_a_used_or_long_folder_before_starting_anything(tmp_path, capsys):
    import shutil
    import tempfile

    from raydiff.cli import main

    def err() -> str:
        return " ".join(capsys.readouterr().err.split())  # the message is wrapped at 100 columns

    used = Path(tempfile.mkdtemp(prefix="rdu", dir="/tmp"))
    try:
        (used / "something").write_text("x")
        assert main(["cluster", "local", "up", str(used)]) == 2
        assert "is not empty" in err()
    finally:
        shutil.rmtree(used)
    assert main(["cluster", "local", "up", "/tmp/" + "x" * 60]) == 2
    assert "too long for Ray's socket paths" in err()
    assert main(["cluster", "local", "down", str(tmp_path)]) == 2  # nothing started there: nothing is stopped
    assert "holds no cluster started by `raydiff cluster local up`" in err()
