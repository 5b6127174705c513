"""Checking a Ray cluster-launcher file with Ray's own schema, before anyone pays for machines.

    python -m raydiff.cluster cluster.yaml
"""
from __future__ import annotations

import sys
from pathlib import Path

from .config_load import read_yaml
from .errors import ConfigError


def validate_cluster_yaml(path: str | Path) -> dict:
    """Fill Ray's defaults and validate against ``ray/autoscaler/ray-schema.json``; ConfigError if bad."""
    p = Path(path)
    raw = read_yaml(p, "cluster file")
    import jsonschema
    from ray.autoscaler._private.util import prepare_config, validate_config

    try:
        cfg = prepare_config(raw)
        validate_config(cfg)
    except jsonschema.ValidationError as exc:
        where = ".".join(str(x) for x in exc.absolute_path) or "(top level)"
        raise ConfigError(f"cluster file {str(p)!r}: {where}: {exc.message}") from None
    except (ValueError, KeyError, RuntimeError) as exc:
        raise ConfigError(f"cluster file {str(p)!r}: {exc}") from None
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    path = args[0] if args else "cluster.yaml"
    try:
        cfg = validate_cluster_yaml(path)
    except ConfigError as exc:
        print(f"raydiff: error: {exc}", file=sys.stderr)
        return 2
    types = ", ".join(f"{k} ({v.get('resources', {})})" for k, v in cfg.get("available_node_types", {}).items())
    print(f"{path}: valid Ray cluster config; node types: {types}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
