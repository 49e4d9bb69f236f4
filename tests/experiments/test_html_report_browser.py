"""report.html in a real headless browser (Chromium/Chrome), when one is installed; else skipped.

The page's inline script records, after ``load``, how many images decoded and how many tables
exist as attributes of <body>; ``--dump-dom`` shows them. A screenshot must not be one flat colour.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ctrgraph.experiments.html_report import write_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
TIMEOUT_S = 60


def find_browser() -> str | None:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


def _png(path: Path, values) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(5, 3), dpi=90)
    ax.bar(range(len(values)), values, color="#4c72b0")
    ax.set_ylim(0.8, 0.86)
    ax.set_title("test AUC per variant")
    fig.savefig(path, format="png")
    plt.close(fig)


def build_report(root: Path) -> Path:
    """A small OUT directory (two items, two figures, one table each) and its report.html."""
    _png(root / "dg-enn" / "table5.png", [0.8379, 0.8470, 0.8420])
    _png(root / "dg-enn" / "table3.png", [0.81, 0.83])
    runs = [{"label": "PNN", "dataset": "ml100k", "seed": 1, "key": "pnn-1a2b3c4d", "dir": "runs/pnn-1a2b3c4d-seed1",
             "status": "trained", "test_auc": 0.8379}]
    manifest = {
        "ctrgraph": "0.1.0", "updated": "2026-12-06T15:00:00",
        "environment": {"python": "3.11.7", "torch": "2.13.0", "numpy": "2.1.0", "platform": "Linux", "cpu_count": 2,
                        "cuda": None},
        "papers": {"dg-enn": {"title": "DG-ENN (Guo et al., KDD 2021)", "doc": "docs/dg-enn.md"}},
        "items": [
            {"paper": "dg-enn", "name": "table5", "title": "Table 5: ablation of the graphs", "caption": "one seed",
             "command": "ctrgraph reproduce dg-enn table5 --seeds 1",
             "tables": [{"title": "Test AUC, mean ± std over seeds", "columns": ["variant", "runs", "test AUC", "RelaImpr"],
                         "rows": [["PNN", "1", "0.8379 ± 0.0000", "+0.00%"], ["DG (all)", "1", "0.8470 ± 0.0000", "+2.69%"],
                                  ["<script>document.body.remove()</script>", "1", "0.8420 ± 0.0000", "+1.20%"]]}],
             "figures": [{"title": "Test AUC per variant", "png": "dg-enn/table5.png"}], "runs": runs},
            {"paper": "dg-enn", "name": "table3", "title": "Table 3: main results", "caption": "one seed",
             "command": "ctrgraph reproduce dg-enn table3",
             "tables": [{"title": "Test AUC", "columns": ["model", "AUC"], "rows": [["DIN", "0.81"], ["DG-DIN", "0.83"]]}],
             "figures": [{"title": "AUC", "png": "dg-enn/table3.png"}], "runs": runs},
        ],
        "configs": {"pnn-1a2b3c4d": {"data": {"name": "ml100k"}, "model": {"name": "pnn"}, "train": {"lr": 0.001}}},
    }
    (root / "reproduce.json").write_text(json.dumps(manifest), encoding="utf-8")
    return write_report(root)


def run_browser(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    """Run the headless browser once; skip (not fail) when it cannot start in this environment."""
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           "--disable-dev-shm-usage", "--disable-extensions", "--hide-scrollbars", f"--user-data-dir={profile}", *args]
    env = dict(os.environ, HOME=str(profile))  # keep the browser's caches out of the real home
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, env=env)
    except subprocess.TimeoutExpired:
        pytest.skip(f"{browser} did not finish within {TIMEOUT_S}s")
    except OSError as exc:
        pytest.skip(f"{browser} could not be started: {exc}")
    if proc.returncode != 0 and not proc.stdout.strip():
        pytest.skip(f"{browser} exited {proc.returncode} with no output: {proc.stderr[-1500:]}")
    return proc


def _attr(dom: str, name: str) -> int:
    m = re.search(r"<body[^>]*\s" + re.escape(name) + r'="(\d+)"', dom)
    assert m, f"{name} not set on <body>: the page's load script did not run"
    return int(m.group(1))


def test_report_in_headless_browser(tmp_path):
    browser = find_browser()
    if browser is None:
        pytest.skip(f"no headless browser installed (looked for {', '.join(BROWSERS)}; e.g. apt-get install chromium)")
    out = tmp_path / "out"
    out.mkdir()
    report = build_report(out)
    html_text = report.read_text(encoding="utf-8")
    url = report.resolve().as_uri()

    proc = run_browser(browser, tmp_path / "profile-dom", "--dump-dom", url)
    dom = proc.stdout
    assert "<body" in dom, f"no DOM dumped; stderr: {proc.stderr[-1500:]}"
    total, loaded = _attr(dom, "data-images-total"), _attr(dom, "data-images-loaded")
    assert total == 2 and loaded == total, f"{loaded}/{total} images decoded"
    assert _attr(dom, "data-tables") == html_text.count("<table") > 0
    assert "Table 5: ablation of the graphs" in dom
    assert "&lt;script&gt;document.body.remove()" in dom  # the cell stayed text

    shot = tmp_path / "shot.png"
    run_browser(browser, tmp_path / "profile-shot", f"--screenshot={shot}", "--window-size=1200,2000", url)
    if not shot.exists():
        pytest.skip(f"{browser} wrote no screenshot")
    import matplotlib.image as mpimg

    img = np.asarray(mpimg.imread(shot))
    assert img.ndim == 3 and img.shape[0] >= 1000 and img.shape[1] >= 1000, img.shape
    flat = img[..., :3].reshape(-1, 3)
    assert float(flat.std(axis=0).max()) > 0.01, "screenshot is a single uniform colour"
    assert len(np.unique((flat * 255).astype(np.uint8), axis=0)) > 20
