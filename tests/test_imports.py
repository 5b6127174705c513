"""Light imports and layering: what a module may load, checked in a fresh interpreter."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
HEAVY = ("torch", "ray", "diffusers")


def _loaded_after(statement: str) -> list[str]:
    code = f"import sys; {statement}; print([m for m in {HEAVY!r} if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return eval(out.stdout.strip().splitlines()[-1])


def test_import_raydiff_and_analysis_load_neither_torch_nor_ray():
    assert _loaded_after("import raydiff, analysis; from raydiff import Strategy, register_strategy") == []
    assert _loaded_after("from raydiff.statuses import APPLIED; from raydiff.strategies import FedBuff") == []


def test_run_is_still_reachable_lazily():
    assert "torch" in _loaded_after("import raydiff; raydiff.run")


def _imports(path: Path) -> set[str]:
    """Every module a file imports, relative imports resolved against the raydiff package."""
    pkg = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names.add(base)
    return names


def test_sim_and_strategies_import_neither_actors_nor_ray():
    """The event loop depends on policy and protocols only; policy never imports Ray."""
    for folder in ("sim", "strategies"):
        for f in (ROOT / "raydiff" / folder).glob("*.py"):
            bad = {
                m
                for m in _imports(f)
                if m.startswith(("raydiff.actors", "ray", "torch")) and not m.startswith("raydiff.")
            } | {m for m in _imports(f) if m.startswith("raydiff.actors")}
            assert not bad, f"{f.relative_to(ROOT)} imports {sorted(bad)}"


def test_no_strategy_name_literals_outside_strategies():
    """The orchestrator asks the strategy object; nothing outside strategies/ compares strategy.name."""
    for f in (ROOT / "raydiff").rglob("*.py"):
        if "strategies" in f.parts:
            continue
        text = f.read_text()
        for lit in ("fedavg", "fedasync", "fedbuff"):
            assert f'name == "{lit}"' not in text and f'name != "{lit}"' not in text, f"{f}: compares with {lit}"
