"""Checking a Ray cluster-launcher file before anyone pays for machines: Ray's own schema, then what a raydiff
cluster needs to start and to stay private (README "Clusters and faults", "Security").

    python -m raydiff.cluster cluster.yaml

Launch checks (each failure is one paragraph naming the field and the fix):
- the token: every ``ray start`` runs with ``RAY_AUTH_MODE=token``, and ``file_mounts`` ships the token file
  Ray reads (``~/.ray/auth_token``, or the file ``RAY_AUTH_TOKEN_PATH`` names) to every node;
- the dashboard (the job API runs any command it is sent) stays on the head's loopback: no public
  ``--dashboard-host``, not turned off (no dashboard, no job server), and no security-group rule opening more
  than SSH to the world;
- the install: ``setup_commands`` install raydiff with its ``[cluster]`` extra and pin Ray's version
  (nodes and the job CLI must run the same Ray); this machine has the extra too (the job CLI, ``ray up``).
"""

from __future__ import annotations

import logging
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config_load import read_yaml
from .errors import ConfigError

DEFAULT_TOKEN_PATH = "~/.ray/auth_token"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@dataclass(frozen=True)
class LaunchReport:
    """What the launch checks found: ``problems`` stop the launch; ``facts`` and ``notes`` are printed."""

    problems: list[str] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def validate_schema(path: str | Path) -> dict:
    """Fill Ray's defaults and validate against ``ray/autoscaler/ray-schema.json``; ConfigError if bad."""
    p = Path(path)
    raw = read_yaml(p, "cluster file")
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    chatty = logging.getLogger("ray.autoscaler._private.util")  # "setting max workers for head node type to 0"
    level = chatty.level
    chatty.setLevel(logging.WARNING)
    try:
        cfg = prepare_config(raw)
        validate_config(cfg)
    except jsonschema.ValidationError as exc:
        where = ".".join(str(x) for x in exc.absolute_path) or "(top level)"
        raise ConfigError(f"cluster file {str(p)!r}: {where}: {exc.message}") from None
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ConfigError(f"cluster file {str(p)!r}: {exc}") from None
    finally:
        chatty.setLevel(level)
    return cfg


def validate_cluster_yaml(path: str | Path) -> dict:
    """The schema, then the launch checks; a ConfigError naming every problem (one paragraph each)."""
    cfg = validate_schema(path)
    problems = check_launch(cfg).problems + check_project(path, cfg).problems
    if problems:
        raise ConfigError("\n".join(f"cluster file {str(path)!r}: {p}" for p in problems))
    return cfg


def _commands(cfg: dict[str, Any], key: str) -> list[str]:
    return [str(c) for c in cfg.get(key) or []]


def _ray_starts(cmds: list[str]) -> list[tuple[str, dict[str, str]]]:
    """Each ``ray start`` command with the environment it runs under: ``VAR=value`` prefixes of the command
    itself, and ``export VAR=value`` in earlier commands of the same list."""
    exported: dict[str, str] = {}
    out = []
    for cmd in cmds:
        for part in re.split(r"&&|;|\n", cmd):
            try:
                words = shlex.split(part)
            except ValueError:
                words = part.split()
            if words[:1] == ["export"]:
                exported.update(w.split("=", 1) for w in words[1:] if "=" in w)  # type: ignore[misc]
                continue
            env = dict(exported)
            while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
                k, v = words.pop(0).split("=", 1)
                env[k] = v
            if words[:2] == ["ray", "start"]:
                out.append((" ".join(words), env))
    return out


def _flag(cmd: str, name: str) -> str | None:
    m = re.search(rf"--{name}(?:=|\s+)(\S+)", cmd)
    return m.group(1).strip("'\"") if m else None


def check_launch(cfg: dict[str, Any], local_ray_version: str | None = None) -> LaunchReport:
    """The launch checks on a schema-valid (prepared) config. ``local_ray_version``: this machine's Ray
    (default: the installed one), compared with the version the setup commands pin."""
    rep = LaunchReport()
    head = _ray_starts(_commands(cfg, "head_start_ray_commands"))
    workers = _ray_starts(_commands(cfg, "worker_start_ray_commands"))
    if not head:
        rep.problems.append("head_start_ray_commands: no `ray start --head` command")
    if not workers:
        rep.problems.append("worker_start_ray_commands: no `ray start --address=...` command")

    # the token: auth mode on every node, and the token file shipped
    for key, starts in (("head_start_ray_commands", head), ("worker_start_ray_commands", workers)):
        for cmd, env in starts:
            mode = env.get("RAY_AUTH_MODE")
            if mode != "token":
                rep.problems.append(
                    f"{key}: `{cmd}` runs with RAY_AUTH_MODE={mode or '(unset)'}: every node must start with "
                    "RAY_AUTH_MODE=token (write `RAY_AUTH_MODE=token ray start ...`), or a worker cannot join a "
                    "head that uses token authentication, and a head without it lets anyone who reaches its ports "
                    "run code"
                )
            if "RAY_AUTH_TOKEN" in env:
                rep.problems.append(
                    f"{key}: `{cmd}` puts the token itself (RAY_AUTH_TOKEN) into the cluster file, where version "
                    "control and logs keep it: ship the token file instead (file_mounts: "
                    f"{{{DEFAULT_TOKEN_PATH}: {DEFAULT_TOKEN_PATH}}})"
                )
    token_paths = {env.get("RAY_AUTH_TOKEN_PATH", DEFAULT_TOKEN_PATH) for _, env in head + workers}
    mounts = {str(k): str(v) for k, v in (cfg.get("file_mounts") or {}).items()}
    for want in sorted(token_paths):
        remote = [r for r in mounts if _same_remote_path(r, want, cfg)]
        if not remote:
            rep.problems.append(
                f"file_mounts: the auth token is not shipped: Ray on each node reads it from {want}, and no file "
                f"mount writes that path. Add `{want}: ~/.ray/auth_token` under file_mounts (the launcher copies it "
                "to the head, the head's autoscaler on to every worker), after `ray get-auth-token --generate` here"
            )
            continue
        local = Path(mounts[remote[0]]).expanduser()
        rep.facts.append(
            f"token: {mounts[remote[0]]} is shipped to {remote[0]} on every node; "
            "RAY_AUTH_MODE=token on head and workers"
        )
        if not local.is_file():
            rep.notes.append(
                f"before `ray up`: {local} does not exist on this machine; create it with "
                "`ray get-auth-token --generate` (the job CLI here uses the same file)"
            )

    # the dashboard: on, and on the head's loopback
    for cmd, _ in head:
        if (_flag(cmd, "include-dashboard") or "true").lower() in ("false", "0", "no"):
            rep.problems.append(
                f"head_start_ray_commands: `{cmd}` turns the dashboard off, and with it the job server: "
                "`ray job submit` cannot work. Drop --include-dashboard=false"
            )
        host = _flag(cmd, "dashboard-host") or "127.0.0.1"  # Ray's default: localhost
        if host not in LOOPBACK:
            rep.problems.append(
                f"head_start_ray_commands: `--dashboard-host={host}` opens the dashboard and its job API (which "
                "runs any command it is sent) beyond the head: bind it to the loopback (--dashboard-host=127.0.0.1) "
                "and reach it through `ray dashboard cluster.yaml`, an SSH tunnel"
            )
        else:
            rep.facts.append(
                f"dashboard: {host}:{_flag(cmd, 'dashboard-port') or 8265} on the head only; "
                "reach it with `ray dashboard cluster.yaml`"
            )

    for rule in ((cfg.get("provider") or {}).get("security_group") or {}).get("IpPermissions") or []:
        ranges = [*(rule.get("IpRanges") or []), *(rule.get("Ipv6Ranges") or [])]
        world = [c for c in (r.get("CidrIp") or r.get("CidrIpv6") for r in ranges) if c in ("0.0.0.0/0", "::/0")]
        lo, hi = rule.get("FromPort", -1), rule.get("ToPort", -1)
        if world and (lo, hi) != (22, 22):
            ports = "every port" if lo in (-1, None) else f"ports {lo}-{hi}"
            rep.problems.append(
                f"provider.security_group.IpPermissions: a rule opens {ports} to {world[0]}: Ray's ports (the GCS, "
                "the dashboard's job API) would face the internet, guarded by the token alone, which travels in "
                "clear text. Open only SSH (22) to the world; reach the dashboard through `ray dashboard cluster.yaml`"
            )

    # the install, on the head and on the workers: raydiff[cluster] with a Ray pin, into a venv of the tested
    # Python (Ray merges setup_commands into both lists)
    for key in ("head_setup_commands", "worker_setup_commands"):
        _check_install(key, _commands(cfg, key), rep, local_ray_version)
    head_gpus = ((cfg.get("available_node_types") or {}).get(cfg.get("head_node_type"), {}).get("resources") or {}).get(
        "GPU", 0
    )
    head_torch = [c for c in _commands(cfg, "head_setup_commands") if re.search(r"pip3?\s+install.*\btorch\b", c)]
    if not head_gpus and not any("download.pytorch.org/whl/cpu" in c for c in head_torch):
        rep.notes.append(
            "head_setup_commands: the head has no GPU, yet no torch comes from PyTorch's CPU index "
            "(--index-url https://download.pytorch.org/whl/cpu): PyPI's torch is the CUDA build, ~2 GB of unused "
            "libraries"
        )
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        if not any(re.search(r"ulimit\s+-n", c) for c in _commands(cfg, key)):
            rep.notes.append(
                f"{key}: no `ulimit -n` before `ray start`: Ray opens a socket per worker and connection, and the "
                "image's default limit (1024) runs out on a busy node (write `ulimit -n 65536; ray start ...`)"
            )
    if (cfg.get("provider") or {}).get("type") == "aws" and (cfg.get("provider") or {}).get(
        "cache_stopped_nodes", True
    ):
        rep.notes.append(
            "provider.cache_stopped_nodes is true (Ray's default on AWS): `ray down` only stops the machines, and "
            "their volumes keep billing; set it to false to terminate them"
        )
    rep.problems.extend(local_install_problems(cfg))
    return rep


TESTED_PYTHON = "3.11"  # the Python CI tests (pyproject's [tool.mypy] python_version, .ci/run's venv)
_PIP = re.compile(r"(?:^|[\s;&|(])(\S*?)(?:pip3?|python[\d.]*\s+-m\s+pip)\s+install\b")


def _venvs(cmds: list[str]) -> dict[str, str]:
    """The venvs the commands create: folder -> the Python asked for ('' when none is named)."""
    out: dict[str, str] = {}
    for cmd in cmds:
        for m in re.finditer(r"\buv\s+venv\b([^;&|]*)", cmd):
            args = m.group(1).split()
            py = next((a.split("=", 1)[1] for a in args if a.startswith("--python=")), "")
            if "--python" in args and args.index("--python") + 1 < len(args):
                py = args[args.index("--python") + 1]
            folders = [a for i, a in enumerate(args) if not a.startswith("-") and (i == 0 or args[i - 1] != "--python")]
            out[folders[0] if folders else ".venv"] = py
        for m in re.finditer(r"(\S*python[\d.]*)\s+-m\s+(?:venv|virtualenv)\s+(?:-\S+\s+)*(\S+)", cmd):
            out[m.group(2)] = re.sub(r".*python", "", m.group(1))
    return out


def _check_install(key: str, cmds: list[str], rep: LaunchReport, local_ray_version: str | None) -> None:
    installs = [c for c in cmds if _PIP.search(c)]
    if not any(re.search(r"raydiff\S*\[cluster\]|\.\[cluster\]", c) for c in installs):
        rep.problems.append(
            f"{key}: no `pip install` of raydiff's cluster extra on the nodes (for example "
            '`~/raydiff-venv/bin/pip install "/home/ubuntu/raydiff-dist/raydiff-X.Y.Z-py3-none-any.whl[cluster]"`): '
            'without ray[default] the head starts no dashboard and no job server ("Cannot include dashboard with '
            'missing packages")'
        )
    if any(re.search(r"\binstall\b.*\s(-e|--editable)\s", c) for c in installs):
        rep.problems.append(
            f"{key}: an editable install (`pip install -e`) needs the working folder on the node; ship raydiff as a "
            "wheel instead (`pip wheel --no-deps -w dist .`, file_mounts `/home/ubuntu/raydiff-dist: dist`)"
        )
    venvs = _venvs(cmds)
    for c in installs:
        if "--target" in c:
            continue  # into a folder of its own (the uv binary), not into any Python
        prefix = _PIP.search(c).group(1)  # type: ignore[union-attr]
        if not any(prefix.startswith(v.rstrip("/") + "/bin/") for v in venvs):
            rep.problems.append(
                f"{key}: `{c.strip()[:90]}` installs into the image's own Python (as a non-root user pip falls back "
                "to ~/.local, which images with PEP 668 refuse), whose version is not the tested one: create a venv "
                f"with Python {TESTED_PYTHON} first (`uv venv --seed --python {TESTED_PYTHON} ~/raydiff-venv`) and "
                "install with its pip (`~/raydiff-venv/bin/python -m pip install ...`)"
            )
            break
    if not venvs:
        rep.problems.append(
            f"{key}: no venv is created (`uv venv --seed --python {TESTED_PYTHON} ~/raydiff-venv`): the nodes would "
            f"run the image's Python (3.10 on Ubuntu 22.04) instead of the tested {TESTED_PYTHON}, resolving other "
            "numpy/pandas/scipy versions, and Ray Client needs the same Python on both ends"
        )
    for folder, py in venvs.items():
        if py.lstrip("=") != TESTED_PYTHON and not py.startswith(TESTED_PYTHON + "."):
            rep.problems.append(
                f"{key}: the venv {folder} is made with Python {py or '(the image default)'}, not the tested "
                f"{TESTED_PYTHON}: write `uv venv --seed --python {TESTED_PYTHON} {folder}`"
            )
    pins = [m.group(1) for c in installs for m in re.finditer(r"ray(?:\[[\w,]+\])?==([\w.]+)", c)]
    if not pins:
        rep.problems.append(
            f'{key}: Ray\'s version is not pinned (add "ray[default]==X.Y.Z" to the pip install, X.Y.Z '
            "from `ray --version` here): every node and the job CLI must run the same Ray"
        )
        return
    if local_ray_version is None:
        from importlib.metadata import version

        local_ray_version = version("ray")
    fact = (
        f"install: raydiff[cluster] with ray=={pins[0]} into a Python {TESTED_PYTHON} venv "
        f"(this machine: Ray {local_ray_version})"
    )
    if fact not in rep.facts:
        rep.facts.append(fact)
    note = (
        f"setup commands pin ray=={pins[0]} but this machine has Ray {local_ray_version}: "
        "the job CLI and the cluster should run the same version; change one of them"
    )
    if pins[0] != local_ray_version and note not in rep.notes:
        rep.notes.append(note)


def local_install_problems(cfg: dict[str, Any]) -> list[str]:
    """What this machine lacks to launch and use the cluster: ray[default] (the job CLI, `ray dashboard`) and,
    for the AWS provider, boto3."""
    import importlib.util

    from ray._private.utils import get_dashboard_dependency_error

    out = []
    err = get_dashboard_dependency_error()
    if err is not None:
        out.append(
            f"this machine lacks ray[default] ({err}), which `ray job submit` and `ray dashboard` need: "
            'pip install -e ".[cluster]" (or pip install "raydiff[cluster]")'
        )
    if (cfg.get("provider") or {}).get("type") == "aws" and importlib.util.find_spec("boto3") is None:
        out.append(
            "provider.type aws: this machine lacks boto3, which `ray up` needs to start the machines: "
            'pip install -e ".[cluster]"'
        )
    return out


# -- what the file says around the launch: its commands, the data, what `ray up` ships ---------------------------


SUBCOMMANDS = ("run", "sweep", "report", "sample", "audit", "bench", "data", "cluster")


def comment_commands(text: str) -> list[list[str]]:
    """The ``raydiff ...`` commands in a YAML file's comments, each split into words: continuation lines joined,
    a ``ray job submit ... --`` prefix dropped, commands in backticks or after prose (``...:  raydiff run x``)
    found too; a command ends at ``;``, ``&&``, a parenthesis or a backtick."""
    lines = [ln.split("#", 1)[1] for ln in text.splitlines() if ln.lstrip().startswith("#")]
    joined = re.sub(r"\\\n", " ", "\n".join(lines))
    out = []
    for line in joined.splitlines():
        for part in re.split(r";|&&|\(|\)|`|\s--\s", line):
            try:
                words = shlex.split(part, comments=True)
            except ValueError:
                continue
            at = next((i for i in range(len(words) - 1) if words[i] == "raydiff" and words[i + 1] in SUBCOMMANDS), None)
            if at is not None:
                out.append(words[at:])
    return out


def _home(cfg: dict[str, Any]) -> str:
    user = (cfg.get("auth") or {}).get("ssh_user", "ubuntu")
    return "/root" if user == "root" else f"/home/{user}"


def _on_node(path: str, cfg: dict[str, Any]) -> str:
    """A path as the head sees it (``~`` is the SSH user's home)."""
    return (_home(cfg) + path[1:] if path.startswith("~") else path).rstrip("/")


def _is_sweep(path: Path) -> bool:
    from .config_load import read_yaml

    spec = read_yaml(path, "scenario file")
    return isinstance(spec, dict) and "base" in spec


def _job_configs(words: list[str], where: Path) -> tuple[list[str], list[Any]]:
    """Problems of one ``raydiff run|sweep FILE`` command, and the configs it would run."""
    from .config_load import load_config

    sub, args = words[1], words[2:]
    files = [a for a in args if a.endswith((".yaml", ".yml"))]
    if sub not in ("run", "sweep") or not files:
        return [], []
    path = where / files[0]
    cmd = " ".join(words)
    if not path.is_file():
        return [f"the comment command `{cmd}` names {files[0]}, which does not exist (from {where})"], []
    try:
        sweep = _is_sweep(path)
    except ConfigError as exc:
        return [f"the comment command `{cmd}`: {exc}"], []
    if sub == "run" and sweep:
        return [
            f"the comment command `{cmd}` runs a sweep file ({files[0]} has `base:`), which `raydiff run` refuses "
            f'("base: unknown key"): write `raydiff sweep {files[0]}`'
        ], []
    if sub == "sweep" and not sweep:
        return [
            f"the comment command `{cmd}` sweeps a scenario file ({files[0]} has no `base:`): write "
            f"`raydiff run {files[0]}`"
        ], []
    try:
        if sweep:
            from .sweep import plan

            spec, runs = plan(path, "/nonexistent-sweep-out")
            return [], [load_config(spec["base"], r.overrides) for r in runs]
        sets = [args[i + 1] for i, a in enumerate(args[:-1]) if a == "--set"]
        return [], [load_config(path, sets)]
    except ConfigError as exc:
        return [f"the comment command `{cmd}`: {exc}"], []


def _walk_mount(local: Path, limit: int = 200_000) -> tuple[list[str], int, int]:
    """What `ray up` would hash under a file mount: (venvs and run folders found, files, bytes); stops looking
    inside a venv or run folder once found, and after ``limit`` files."""
    import os

    if local.is_file():
        return [], 1, local.stat().st_size
    bad: list[str] = []
    files = size = 0
    for dirpath, dirnames, filenames in os.walk(local):
        d = Path(dirpath)
        if "pyvenv.cfg" in filenames:
            bad.append(f"{d} (a venv)")
            dirnames.clear()
            continue
        if ("status.json" in filenames and "config.yaml" in filenames) or (d.name == "runs" and d != local):
            bad.append(f"{d} (run folders)")
            dirnames.clear()
            continue
        files += len(filenames)
        for f in filenames:
            try:
                size += (d / f).stat().st_size
            except OSError:
                pass
        if files > limit:
            break
    return bad, files, size


def check_project(path: str | Path, cfg: dict[str, Any]) -> LaunchReport:
    """The checks that read around the file: the ``raydiff`` commands in its comments (a sweep file needs
    ``raydiff sweep``), the data those runs read (something in the head's setup must put it in place), and the
    file mounts (`ray up` hashes every file under them on each launch, rsync_exclude or not). Relative paths
    are resolved from the current folder, as ``ray up`` and ``ray job submit --working-dir .`` do."""
    from .datafetch import FETCHABLE, FILE_DATASETS

    rep = LaunchReport()
    where = Path.cwd()
    text = Path(path).read_text(encoding="utf-8")
    head_setup = _commands(cfg, "head_setup_commands")
    fetched = {}
    for c in head_setup:
        for m in re.finditer(r"raydiff\s+data\s+fetch\s+(\S+)\s+--root(?:=|\s+)(\S+)", c):
            fetched[_on_node(m.group(2), cfg)] = m.group(1)
    jobs = 0
    for words in comment_commands(text):
        files = [w for w in words if w.endswith((".yaml", ".yml"))]
        here = where if not files or (where / files[0]).exists() else Path(path).resolve().parent
        problems, cfgs = _job_configs(words, here)
        rep.problems.extend(problems)
        jobs += bool(cfgs)
        seen = set()
        for run_cfg in cfgs:
            d = run_cfg.data
            if d.dataset not in FILE_DATASETS or d.download or (d.dataset, d.root) in seen:
                continue
            seen.add((d.dataset, d.root))
            cmd = " ".join(words[:3])
            root = str(d.root)
            if not (root.startswith(("/", "~"))):
                rep.problems.append(
                    f"`{cmd}` reads {d.dataset} from the relative data.root {root!r}, which on the cluster is inside "
                    "the job's unpacked copy of this folder (Ray's runtime_resources), where nothing puts it: give "
                    f"an absolute or ~ path and fetch it in head_setup_commands (`raydiff data fetch {d.dataset} "
                    f"--root ~/data/{d.dataset}`)"
                )
            elif fetched.get(_on_node(root, cfg)) != d.dataset:
                how = (
                    f"add `~/raydiff-venv/bin/raydiff data fetch {d.dataset} --root {root}` to head_setup_commands"
                    if d.dataset in FETCHABLE
                    else "copy it there (file_mounts, or a head setup command)"
                )
                rep.problems.append(
                    f"`{cmd}` reads {d.dataset} from {root} on the head, and nothing in the setup commands puts it "
                    f"there, so every run would stop on missing data: {how}"
                )
            else:
                rep.facts.append(f"data: {d.dataset} in {root}, fetched once by the head's setup (`{cmd}`)")
    if jobs:
        rep.facts.append(f"commands: {jobs} raydiff job command(s) in the comments match their files")

    for remote, local in (cfg.get("file_mounts") or {}).items():
        lp = Path(str(local)).expanduser()
        lp = lp if lp.is_absolute() else where / lp
        if not lp.exists():
            if "auth_token" not in str(remote):
                rep.notes.append(f"before `ray up`: file_mounts {remote}: {lp} does not exist here yet")
            continue
        bad, nfiles, size = _walk_mount(lp)
        if bad:
            rep.problems.append(
                f"file_mounts {remote}: {local} holds {', '.join(bad[:3])}: `ray up` reads and hashes every file "
                "under a mount on each launch (rsync_exclude does not apply to the hash), so a venv costs gigabytes "
                "of reading and every new run folder changes the hash and restarts Ray on the nodes. Ship the "
                "package as a wheel (`pip wheel --no-deps -w dist .`, file_mounts `/home/ubuntu/raydiff-dist: "
                "dist`) and let `ray job submit --working-dir .` carry the scenarios"
            )
        elif lp.is_dir():
            rep.facts.append(f"file_mounts {remote}: {local}: {nfiles} files, {size / 1e6:.1f} MB hashed per `ray up`")
    wheels = {m.group(0) for c in head_setup for m in re.finditer(r"raydiff-[\w.]+-py3-none-any\.whl", c)}
    pyproject = where / "pyproject.toml"
    if wheels and pyproject.is_file():
        import tomllib

        want = tomllib.loads(pyproject.read_text())["project"]["version"]
        for w in sorted(wheels):
            if w.split("-")[1] != want:
                rep.problems.append(
                    f"head_setup_commands install {w}, but pyproject.toml says version {want}: the wheel built by "
                    f"`pip wheel --no-deps -w dist .` is raydiff-{want}-py3-none-any.whl"
                )
    return rep


def _same_remote_path(mount: str, want: str, cfg: dict[str, Any]) -> bool:
    """``~`` on a node is the SSH user's home."""
    user = (cfg.get("auth") or {}).get("ssh_user", "ubuntu")
    home = "/root" if user == "root" else f"/home/{user}"

    def norm(p: str) -> str:
        return (home + p[1:] if p.startswith("~") else p).rstrip("/")

    return norm(mount) == norm(want)


# -- a local multi-raylet cluster (README "Try it on one machine") ---------------------------------------------

# Every local node's IP. Ray replaces 127.0.0.1 (given to --node-ip-address) by the machine's network address
# unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, which in turn forbids a second raylet (`ray start --address`).
# 127.0.0.2 is loopback too (127.0.0.0/8) and Ray leaves it alone: the nodes talk without leaving the machine.
NODE_IP = "127.0.0.2"
_STATE = "cluster.json"


def _free_ports(n: int) -> list[int]:
    """n distinct ports that were free a moment ago (bound together on the loopback, then released)."""
    import socket

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


def _ray_bin() -> str:
    import shutil

    here = Path(sys.executable).parent / "ray"  # the venv's, next to this Python
    return str(here) if here.is_file() else (shutil.which("ray") or "ray")


def local_up(directory: str | Path, workers: int = 1, num_cpus: int = 1) -> dict[str, Any]:
    """Start a head and ``workers`` more raylets on 127.0.0.2, all under ``directory`` (temp dirs, logs, a
    token of their own), on free ports; write ``directory/env`` for the job CLI and print how to use and stop it.

    Why not the fixed ports and ``ray stop``: on a shared machine 6379, 8265, 10001, 52365, 44217 and 44227 may
    belong to someone else's Ray (and ``ray job submit`` would then talk to their dashboard), and ``ray stop``
    stops every Ray of the machine. :func:`local_down` stops exactly the processes started here."""
    import json
    import os
    import secrets
    import subprocess

    from ray._private.utils import get_dashboard_dependency_error

    root = Path(directory).expanduser().absolute()
    if len(str(root)) > 60:  # Ray's socket paths (temp dir + session + sockets/...) must fit in 107 characters
        raise ConfigError(f"cluster local up: {root} is too long for Ray's socket paths; use a short one (/tmp/rdl)")
    if root.exists() and any(root.iterdir()):
        raise ConfigError(
            f"cluster local up: {root} is not empty (a cluster may run there: `raydiff cluster local down {root}`); "
            "give a new folder"
        )
    if get_dashboard_dependency_error() is not None:
        raise ConfigError('cluster local up: the job server needs ray[default]: pip install -e ".[cluster]"')
    root.mkdir(parents=True, exist_ok=True)
    token = root / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    gcs, dash, client, dash_metrics, autoscaler_metrics = _free_ports(5)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_API_SERVER_ADDRESS")
    }
    env.update(
        # the nodes, and so the jobs' drivers, run this Python's `ray` and `raydiff` (the venv, even if not activated)
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        RAY_AUTH_MODE="token",
        RAY_AUTH_TOKEN_PATH=str(token),
        DASHBOARD_METRIC_PORT=str(dash_metrics),  # fixed (44227, 44217) in Ray unless set
        AUTOSCALER_METRIC_PORT=str(autoscaler_metrics),
    )
    state: dict[str, Any] = dict(
        dir=str(root),
        gcs_address=f"{NODE_IP}:{gcs}",
        dashboard=f"http://127.0.0.1:{dash}",
        ports=dict(gcs=gcs, dashboard=dash, client_server=client, dashboard_metrics=dash_metrics),
        pgids=[],
    )
    common = ["--disable-usage-stats", f"--num-cpus={num_cpus}", f"--node-ip-address={NODE_IP}"]
    common += ["--min-worker-port=0", "--max-worker-port=0"]  # workers on random ports, not 10002-19999
    cmds = [
        [
            "--head",
            f"--port={gcs}",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={dash}",
            f"--ray-client-server-port={client}",
            f"--temp-dir={root / 'head'}",
        ]
    ]
    cmds += [[f"--address={NODE_IP}:{gcs}", f"--temp-dir={root / f'w{i}'}"] for i in range(1, workers + 1)]
    try:
        for i, extra in enumerate(cmds):
            (agent,) = _free_ports(1)
            argv = [_ray_bin(), "start", *extra, *common, f"--dashboard-agent-listen-port={agent}"]
            log = root / f"start{i}.log"  # a file, not a pipe: the daemons keep their stdout open
            with open(log, "w") as fh:
                p = subprocess.Popen(argv, env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
                state["pgids"].append(p.pid)
                (root / _STATE).write_text(json.dumps(state, indent=1))  # so `down` finds a half-started cluster
                rc = p.wait(timeout=300)
            if rc != 0:
                raise ConfigError(f"cluster local up: `{' '.join(argv)}` failed ({rc}):\n{log.read_text()[-3000:]}")
        _wait_for_nodes(state, env, len(cmds))
    except BaseException:
        local_down(root, quiet=True)
        raise
    (root / "env").write_text(
        "# . this file: the job CLI (ray job submit/list/logs) then talks to this cluster, with its token\n"
        "export RAY_AUTH_MODE=token\n"
        f"export RAY_AUTH_TOKEN_PATH={token}\n"
        f"export RAY_API_SERVER_ADDRESS={state['dashboard']}\n"
    )
    print(
        f"cluster in {root}: {len(cmds)} nodes on {NODE_IP} ({num_cpus} CPU each), token {token}\n"
        f"  GCS        {state['gcs_address']}   (raydiff run --address {state['gcs_address']})\n"
        f"  dashboard  {state['dashboard']}   (the job API; 127.0.0.1 only)\n"
        f"  job CLI:   . {root / 'env'}   then   ray job submit --working-dir . -- raydiff run ...\n"
        f"  stop it:   raydiff cluster local down {root}"
    )
    return state


def _wait_for_nodes(state: dict[str, Any], env: dict[str, str], n: int, timeout: float = 120) -> None:
    import subprocess
    import time

    deadline = time.monotonic() + timeout
    while True:
        r = subprocess.run(
            [_ray_bin(), "status", "--address", state["gcs_address"]],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        active = re.search(r"Active:\n(.*?)\nPending:", r.stdout, re.S)
        if active and active.group(1).count("node_") >= n:
            return
        if time.monotonic() > deadline:
            raise ConfigError(f"cluster local up: {n} nodes did not join in {timeout:.0f} s:\n{r.stdout[-2000:]}")
        time.sleep(1)


def local_processes(directory: str | Path) -> list[Any]:
    """Every process of the cluster started in ``directory``: the ``ray start`` sessions' process groups, their
    descendants (the job's driver is a child of a Ray worker), and anything naming the folder on its command
    line; never this process or its parents."""
    import json
    import os

    import psutil

    root = Path(directory).expanduser().absolute()
    try:
        pgids = set(json.loads((root / _STATE).read_text())["pgids"])
    except (OSError, ValueError, KeyError):
        pgids = set()
    me = {os.getpid(), *(p.pid for p in psutil.Process().parents())}
    found: dict[int, Any] = {}
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            if p.pid in me:
                continue
            if os.getpgid(p.pid) in pgids or str(root) in " ".join(p.info["cmdline"] or []):
                found[p.pid] = p
        except (ProcessLookupError, psutil.Error):
            continue
    for p in list(found.values()):
        try:
            found.update({c.pid: c for c in p.children(recursive=True) if c.pid not in me})
        except psutil.Error:
            pass
    return list(found.values())


def local_down(directory: str | Path, quiet: bool = False) -> int:
    """Stop the processes of the cluster started in ``directory`` (SIGTERM, then SIGKILL after 10 s); nothing
    else. Returns how many there were. The folder (logs) is left; remove it when you like."""
    import psutil

    root = Path(directory).expanduser().absolute()
    if not quiet and not (root / _STATE).is_file():
        raise ConfigError(f"cluster local down: {root} holds no cluster started by `raydiff cluster local up`")
    procs = local_processes(root)
    for p in procs:
        try:
            p.terminate()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=10)
    left = local_processes(root)
    if left:
        raise ConfigError(f"cluster local down: {len(left)} processes survived: {sorted(p.pid for p in left)}")
    if not quiet:
        print(f"cluster in {root} stopped: {len(procs)} processes ended; no other Ray was touched")
    return len(procs)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else "cluster.yaml"
    try:
        cfg = validate_schema(path)
    except ConfigError as exc:
        print(f"raydiff: error: {exc}", file=sys.stderr)
        return 2
    rep = check_launch(cfg)
    more = check_project(path, cfg)
    rep.problems.extend(more.problems)
    rep.facts.extend(more.facts)
    rep.notes.extend(more.notes)
    for p in rep.problems:
        print(f"raydiff: error: cluster file {path!r}: {p}", file=sys.stderr)
    if rep.problems:
        return 2
    types = ", ".join(f"{k} ({v.get('resources', {})})" for k, v in cfg.get("available_node_types", {}).items())
    print(f"{path}: valid Ray cluster config; node types: {types}")
    for line in rep.facts:
        print(f"  {line}")
    for line in rep.notes:
        print(f"  note: {line}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
