"""Every `raydiff` command the README shows, and every one in the comments of cluster.yaml and scenarios/*.yaml, run
in a quick local form, so a command and its file cannot drift apart (issue 24: the README's cloud job ran a sweep
file with `raydiff run`, which exits 2 with "base: unknown key").

Quick forms, in-process: `raydiff run FILE ...` as a dry run (`run.dry_run=true`, at most 20 versions, `--out` in
a temp folder); `raydiff sweep FILE ...` with `--list`; a command with a placeholder (`<timestamp>`, `...`) or one
that needs a finished run or a cluster (report, sample, audit, bench, data, cluster) through the real argument
parser, with the files it names checked to exist. Inline `raydiff SUB` mentions in the README's text must name a
real subcommand.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from raydiff.cli import _parser, main
from raydiff.cluster import comment_commands

ROOT = Path(__file__).resolve().parents[1]
PREFIXES = (("raydiff",), (".venv/bin/raydiff",), ("python", "-m", "raydiff"))


def _split(line: str) -> list[list[str]]:
    """The raydiff commands in one shell line: after `;`, `&&`, `||`, a `ray job submit ... --`, and with
    `a | b | c` alternatives of the last word expanded (the README's `raydiff bench overhead | aggregate`)."""
    out: list[list[str]] = []
    for part in re.split(r";|&&|\|\||\s--\s", line):
        pieces = [p for p in part.split("|")]
        try:
            first = shlex.split(pieces[0], comments=True)
        except ValueError:
            continue
        for prefix in PREFIXES:
            if tuple(first[: len(prefix)]) == prefix and len(first) > len(prefix):
                cmd = ["raydiff", *first[len(prefix) :]]
                out.append(cmd)
                for alt in pieces[1:]:
                    words = shlex.split(alt, comments=True)
                    if len(words) == 1 and not words[0].startswith("raydiff"):
                        out.append([*cmd[:-1], words[0]])
    return out


def _readme_commands() -> list[tuple[str, list[str]]]:
    text = (ROOT / "README.md").read_text()
    found = []
    for m in re.finditer(r"```bash\n(.*?)```", text, re.S):
        start = text[: m.start()].count("\n") + 2
        block = m.group(1).replace("\\\n", " ")
        for i, line in enumerate(block.splitlines()):
            for cmd in _split(line):
                found.append((f"README.md:{start + i}", cmd))
    return found


def _comment_commands() -> list[tuple[str, list[str]]]:
    found = []
    for path in [ROOT / "cluster.yaml", *sorted((ROOT / "scenarios").glob("*.yaml"))]:
        for cmd in comment_commands(path.read_text()):
            found.append((str(path.relative_to(ROOT)), cmd))
    return found


def _unique(found: list[tuple[str, list[str]]]) -> list[tuple[str, list[str]]]:
    """One test per quick form (`raydiff sweep X` and `raydiff sweep X --list` are the same check)."""
    seen: dict[tuple[str, ...], tuple[str, list[str]]] = {}
    for where, cmd in found:
        seen.setdefault(tuple(w for w in cmd if w != "--list"), (where, cmd))
    return list(seen.values())


ALL = _readme_commands() + _comment_commands()
COMMANDS = _unique(ALL)


def test_the_commands_are_found():
    where = {w.split(":")[0] for w, _ in ALL}
    assert {"README.md", "cluster.yaml", "scenarios/async-study-gpu.yaml", "scenarios/quickstart.yaml"} <= where
    subs = {c[1] for _, c in COMMANDS}
    assert {"run", "sweep", "report", "sample", "audit", "bench", "cluster"} <= subs
    cloud = [c for w, c in ALL if w == "cluster.yaml"]
    assert ["raydiff", "sweep", "scenarios/async-study-gpu.yaml", "--out", "/home/ubuntu/runs/study"] in cloud


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    """A folder like the repository's root for the commands' relative paths: scenarios/, and the README's
    my_strategy.py ("Save the module as my_strategy.py and run the command from the same folder")."""
    (tmp_path / "scenarios").symlink_to(ROOT / "scenarios")
    text = (ROOT / "README.md").read_text()
    module = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "class StalenessDecay" in b)
    (tmp_path / "my_strategy.py").write_text(module)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RAYDIFF_NO_PROGRESS", "1")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _placeholder(cmd: list[str]) -> bool:
    return any("<" in w or w == "..." or re.fullmatch(r"[A-Z_]{3,}", w) for w in cmd)


def _with_out(args: list[str], out: Path) -> list[str]:
    if "--out" in args:
        args = list(args)
        args[args.index("--out") + 1] = str(out)
        return args
    return [*args, "--out", str(out)]


@pytest.mark.parametrize("where, cmd", COMMANDS, ids=[f"{w}:{' '.join(c[1:3])}" for w, c in COMMANDS])
def test_documented_command_runs_in_its_quick_form(where, cmd, workdir, capsys):
    args = cmd[1:]
    for a in args:
        if a.endswith((".yaml", ".yml")) and not a.startswith("/"):
            assert (workdir / a).is_file(), f"{where}: `{shlex.join(cmd)}` names {a}, which does not exist"
    if args[0] == "run" and not _placeholder(cmd):
        quick = [
            *_with_out(args, workdir / "out"),
            "--set",
            "run.dry_run=true",
            "--set",
            "run.max_updates=20",
            "--no-progress",
        ]
        rc = main(quick)
        assert rc == 0, f"{where}: `{shlex.join(cmd)}` (dry run) exited {rc}: {capsys.readouterr().err}"
        assert "dry run:" in capsys.readouterr().out
    elif args[0] == "sweep" and not _placeholder(cmd):
        rc = main([*_with_out([a for a in args if a != "--list"], workdir / "sweep"), "--list"])
        out, err = capsys.readouterr()
        assert rc == 0, f"{where}: `{shlex.join(cmd)}` (--list) exited {rc}: {err}"
        assert out.count("todo") >= 1
    else:  # needs a finished run, a cluster or the network: the argument list must parse as written
        try:
            _parser().parse_args([a for a in args if a != "..."] if "..." not in args else [args[0], "--help"])
        except SystemExit as exc:
            assert exc.code == 0, f"{where}: `{shlex.join(cmd)}` does not parse: {capsys.readouterr().err}"


def test_inline_mentions_name_real_subcommands(capsys):
    text = (ROOT / "README.md").read_text()
    subs = {m.group(1) for m in re.finditer(r"`raydiff ([a-z]+)[^`]*`", text)}
    assert {"run", "sweep", "report", "audit"} <= subs
    for sub in sorted(subs):
        with pytest.raises(SystemExit) as exc:
            _parser().parse_args([sub, "--help"])
        assert exc.value.code == 0, sub
    capsys.readouterr()


def test_python_m_raydiff_is_the_same_command():
    """The README's `python -m raydiff run ...`: one subprocess, the module entry point."""
    r = subprocess.run(
        [sys.executable, "-m", "raydiff", "run", "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert r.returncode == 0 and "usage: raydiff run" in r.stdout, r.stderr[-2000:]
