"""The benchmarks run and end with their figure (the figures themselves are checked by people, not CI)."""

from __future__ import annotations

import re

import pytest

from raydiff.cli import main


def _last_number(text: str) -> float:
    last = text.strip().splitlines()[-1]
    return float(re.findall(r"[-+]?\d[\d,]*\.?\d*", last)[-1].replace(",", ""))


def test_bench_engine_prints_events_per_second(capsys):
    assert main(["bench", "engine", "--clients", "500"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("engine events/s:")
    assert _last_number(out) > 0


def test_bench_aggregate_prints_ratio(capsys):
    assert main(["bench", "aggregate", "--size", "200000"]) == 0
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("aggregate ratio")
    assert 0 < _last_number(out) < 100


@pytest.mark.slow
def test_bench_overhead_prints_ratio(ray_session, capsys):
    from raydiff.bench.overhead import bench_overhead

    ratio = bench_overhead(actors=2, local_steps=5, updates=12)
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("overhead ratio")
    # a sane, finite ratio; the speed target itself is the benchmark's verdict (timed asserts flake under load:
    # 3.4 measured on this 2-core VM with other jobs running)
    assert 0 < ratio < 10
