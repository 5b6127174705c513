"""The HTML report, rendered by a real headless browser (Debian's chromium), shows every plot."""
from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

import raydiff

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--hide-scrollbars"]


@pytest.fixture
def browser():
    if CHROMIUM is None:
        if os.environ.get("RAYDIFF_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium is required here (RAYDIFF_REQUIRE_BROWSER=1) but not installed")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return CHROMIUM


def _chromium(browser, tmp_path, *args):
    return subprocess.run([browser, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=120)


def test_report_renders_every_plot(ray_session, tiny_cfg, tmp_path, browser):
    from analysis.report import write_report
    from PIL import Image

    runs = tmp_path / "runs"
    raydiff.run(tiny_cfg, out=runs / "fedbuff", progress=False)
    tiny_cfg["strategy"]["name"] = "fedasync"
    raydiff.run(tiny_cfg, out=runs / "fedasync", progress=False)
    report = write_report([runs], tmp_path / "report.html", title="browser test")
    from analysis.study import study_table, to_markdown

    table = study_table([runs])
    assert sorted(table.strategy) == ["fedasync", "fedbuff"] and table.heldout_loss.notna().all()
    assert to_markdown(table).count("\n") == 3  # header, rule, two rows
    html = report.read_text()
    assert "http://" not in html and "https://" not in html  # self-contained
    url = report.resolve().as_uri()

    dom = _chromium(browser, tmp_path, "--virtual-time-budget=5000", "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    for plot in ("plot-metric", "plot-staleness", "plot-gantt", "plot-participation"):
        assert f'id="{plot}"' in dom.stdout, plot
    # the page's own check: every <img> decoded with a non-zero size
    m = re.search(r'data-images-loaded="(\d+)" data-images-total="(\d+)"', dom.stdout)
    assert m and m.group(1) == m.group(2) and int(m.group(2)) >= 4, m and m.groups()

    shot = tmp_path / "report.png"
    r = _chromium(browser, tmp_path, f"--screenshot={shot}", "--window-size=1280,2400", url)
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    img = Image.open(shot).convert("L")
    lo, hi = img.getextrema()
    assert hi - lo > 100  # not a blank page
    shutil.copy(shot, tmp_path.parent / "report-screenshot.png")  # for a person to look at
