"""The HTML report's "Privacy" section (analysis/privacy.py): the two epsilons and the audit's numbers beside
their nulls, privacy.png and the per-client table, rendered by headless Chromium (as tests/test_report_browser.py
does for the rest of the report). The run folders are cheap: dry runs with DP, given an untrained tiny UNet
and audited with ``raydiff audit``."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess

import pytest

import raydiff
from raydiff.model import build_unet

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

BASE = {
    "data": {"dataset": "synthetic", "synthetic_size": 120, "synthetic_classes": 3},
    "clients": {"num_clients": 3},
    "model": {"num_train_timesteps": 10},
    "strategy": {"name": "fedbuff", "concurrency": 2, "buffer_size": 2},
    "eval": {"num_samples": 5, "privacy_audit": {"timesteps": 2, "noise_draws": 1}},
    "run": {"dry_run": True, "max_updates": 12},
}


def _run(tmp_path, name: str, dp: bool, audit: bool):
    from raydiff.privacy.audit import audit_command

    cfg = json.loads(json.dumps(BASE))
    cfg["name"] = name
    cfg["strategy"]["dp"] = {"enabled": dp, "noise_multiplier": 1.5}
    out = raydiff.run(cfg, out=tmp_path / "runs" / name, progress=False).out_dir
    if audit:  # a dry run has no model: give it an untrained one, as a finished run has
        build_unet(raydiff.load_config(out / "config.yaml").model, 8, 1, seed=0).save_pretrained(
            str(out / "model" / "unet")
        )
        audit_command(out)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("privacy-report")
    return tmp, {
        "dp": _run(tmp, "dp", dp=True, audit=True),
        "plain": _run(tmp, "plain", dp=False, audit=True),
        "none": _run(tmp, "none", dp=False, audit=False),
    }


def _table(html: str, table_id: str) -> list[list[str]]:
    """The cells of the table with ``table_id``, row by row (header first)."""
    body = html.split(f'id="{table_id}"', 1)[1].split("</table>", 1)[0]
    rows = re.findall(r"<tr[^>]*>(.*?)</tr>", body, re.S)
    return [[c.strip() for c in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)] for row in rows]


def test_section_lists_the_numbers_beside_their_nulls(runs):
    from analysis.load import load_runs
    from analysis.privacy import privacy_section

    tmp, folders = runs
    html = privacy_section(load_runs([tmp / "runs"]))
    summary = json.loads((folders["dp"] / "summary.json").read_text())
    head, *rows = _table(html, "privacy-table")
    assert [r[0] for r in rows] == ["dp", "plain"]  # "none" has neither DP nor an audit
    dp, plain = (dict(zip(head, r)) for r in rows)  # a repeated header ("null") keeps its last value
    assert float(dp["epsilon (guarantee, worst client)"]) == pytest.approx(summary["epsilon"], rel=1e-2)
    assert float(dp["epsilon_sampled (estimate)"]) == pytest.approx(summary["epsilon_sampled"], rel=1e-2)
    assert dp["MIA AUC"].startswith(f"{summary['mia_auc']:.3g} ± ")
    auc_null = rows[0][head.index("MIA AUC") + 1]
    assert head[head.index("MIA AUC") + 1] == "null" and float(auc_null) == 0.5
    extraction_null = rows[0][head.index("extraction rate") + 1]
    assert float(extraction_null) == pytest.approx(summary["extraction_rate_null"], abs=1e-3)
    assert plain["epsilon (guarantee, worst client)"] == "" and plain["MIA AUC"] != ""
    clients = _table(html, "privacy-clients-dp")  # one per-client table per audited run
    assert clients[0][:2] == ["client_id", "num_samples"] and [r[0] for r in clients[1:]] == ["0", "1", "2"]
    assert 'id="privacy-clients-plain"' in html and 'id="privacy-clients-none"' not in html
    assert privacy_section(load_runs([folders["none"]])) == ""


def test_report_renders_the_privacy_section(runs):
    from analysis.report import write_report

    if CHROMIUM is None:
        if os.environ.get("RAYDIFF_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is required here (RAYDIFF_REQUIRE_BROWSER=1) but not installed")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    tmp, _ = runs
    report = write_report([tmp / "runs"], tmp / "report.html", title="privacy")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
    dom = subprocess.run(
        [
            CHROMIUM,
            *flags,
            f"--user-data-dir={tmp / 'profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            report.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert '<h2 id="privacy">Privacy</h2>' in dom.stdout
    assert 'id="plot-privacy-dp"' in dom.stdout and 'id="plot-privacy-plain"' in dom.stdout
    m = re.search(r'data-images-loaded="(\d+)" data-images-total="(\d+)"', dom.stdout)
    assert m and m.group(1) == m.group(2), m and m.groups()
