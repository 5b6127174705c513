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
    problems = check_launch(cfg).problems
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

    # the install: raydiff[cluster] and a Ray pin
    setup = _commands(cfg, "setup_commands")
    installs = [c for c in setup if re.search(r"pip3?\s+install", c)]
    if not any(re.search(r"raydiff\S*\[cluster\]|\.\[cluster\]", c) for c in installs):
        rep.problems.append(
            "setup_commands: no `pip install` of raydiff's cluster extra on the nodes (for example "
            '`python3 -m pip install -e "/home/ubuntu/raydiff[cluster]"`): without ray[default] the head starts '
            'no dashboard and no job server ("Cannot include dashboard with missing packages")'
        )
    pins = [m.group(1) for c in installs for m in re.finditer(r"ray(?:\[[\w,]+\])?==([\w.]+)", c)]
    if not pins:
        rep.problems.append(
            'setup_commands: Ray\'s version is not pinned (add "ray[default]==X.Y.Z" to the pip install, X.Y.Z '
            "from `ray --version` here): every node and the job CLI must run the same Ray"
        )
    else:
        if local_ray_version is None:
            from importlib.metadata import version

            local_ray_version = version("ray")
        rep.facts.append(f"install: raydiff[cluster] with ray=={pins[0]} (this machine: {local_ray_version})")
        if pins[0] != local_ray_version:
            rep.notes.append(
                f"setup_commands pin ray=={pins[0]} but this machine has Ray {local_ray_version}: "
                "the job CLI and the cluster should run the same version; change one of them"
            )
    rep.problems.extend(local_install_problems(cfg))
    return rep


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


def _same_remote_path(mount: str, want: str, cfg: dict[str, Any]) -> bool:
    """``~`` on a node is the SSH user's home."""
    user = (cfg.get("auth") or {}).get("ssh_user", "ubuntu")
    home = "/root" if user == "root" else f"/home/{user}"

    def norm(p: str) -> str:
        return (home + p[1:] if p.startswith("~") else p).rstrip("/")

    return norm(mount) == norm(want)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else "cluster.yaml"
    try:
        cfg = validate_schema(path)
    except ConfigError as exc:
        print(f"raydiff: error: {exc}", file=sys.stderr)
        return 2
    rep = check_launch(cfg)
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
