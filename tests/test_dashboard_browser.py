"""The dashboard in a real browser: ``auditlm dashboard`` started as a process on a free loopback port over a store
of real tiny-model runs, Debian's Chromium driven by Playwright (``/usr/bin/chromium``; Playwright's own browser
download is not available here) visiting every page by its deep link. No page shows a Streamlit exception, the
store file is byte-for-byte unchanged afterwards, and a screenshot of each page is saved (copied to
``$AUDITLM_SCREENSHOTS`` when set). Skipped where Chromium or Playwright is missing (``.ci/run`` installs both)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dashboard_store
import pytest
from dashboard_store import PII, Stores

from auditlm.report.browser import DashboardProcess, capture_html, capture_pages

CHROMIUM = "/usr/bin/chromium"
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs /usr/bin/chromium (apt-get install chromium)")
dash_stores = dashboard_store.dash_stores


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_missing_store_is_a_page_not_an_error(tmp_path: Path):
    """A store that does not exist (yet) is not an error for ``auditlm dashboard``: the page says so."""
    with DashboardProcess(tmp_path / "nothing-here.sqlite") as srv, playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(srv.url + "/run?run=x", wait_until="networkidle", timeout=90_000)
        page.wait_for_selector("h1", timeout=60_000)
        time.sleep(1.0)
        body = page.inner_text("body")
        assert page.locator('[data-testid="stException"]').count() == 0, body
        assert "No run store yet" in body and "nothing-here.sqlite" in body
        browser.close()
    assert not (tmp_path / "nothing-here.sqlite").exists()  # nothing created


def _pages(s: Stores) -> dict[str, str]:
    return {
        "runs": "/",  # the default page (st.navigation serves it at the root)
        "run": f"/run?run={s.run_a}",
        "items": f"/items?run={s.run_a}&suite=bias.crows_pairs",
        "items_pii": f"/items?run={s.run_p}&suite={PII}",
        "explain": f"/explain?run={s.run_a}&suite=bias.counterfactual_templates&item={s.explained_item}",
        "compare": f"/compare?a={s.run_a}&b={s.run_b}&margin=0.05",
    }


def test_every_page_in_chromium(dash_stores: Stores, tmp_path: Path):
    before = _sha(dash_stores.path)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with DashboardProcess(dash_stores.path) as srv:
        got = capture_pages(srv.url, _pages(dash_stores), shots, chromium=CHROMIUM)
    texts, outside = got["texts"], got["outside"]
    if os.environ.get("AUDITLM_SCREENSHOTS"):
        dest = Path(os.environ["AUDITLM_SCREENSHOTS"])
        dest.mkdir(parents=True, exist_ok=True)
        for f in shots.iterdir():
            shutil.copy(f, dest / f.name)
    assert _sha(dash_stores.path) == before  # read-only: the store file is unchanged
    assert sorted(f.name for f in shots.iterdir()) == sorted(f"{n}.png" for n in _pages(dash_stores))
    # (tables are drawn on a canvas: their cells are not page text; AppTest checks them)
    assert "3 of 3 runs" in texts["runs"] and "Runs" in texts["runs"]
    assert all(t in texts["runs"] for t in ("Run", "Items", "Explain", "Compare"))  # st.navigation's menu
    assert "bias.crows_pairs" in texts["run"] and "Provenance" in texts["run"]
    assert "Per-group attribution" in texts["explain"]
    assert "significant change" in texts["compare"]
    assert not [n for n in dash_stores.needles if n.lower() in texts["items_pii"].lower()]
    assert not outside, outside[:5]  # nothing fetched from a CDN or the internet


def test_html_report_opens_offline_in_chromium(dash_stores: Stores, tmp_path: Path):
    """``auditlm report --format html`` (a process) opens in Chromium with every request but the file refused:
    the summary, the gates and the per-group charts (inline SVG) are drawn, nothing is fetched, no script error,
    and no PII of the store is on the page."""
    html = tmp_path / "report.html"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                        os.environ.get("PYTHONPATH", "")])}
    for run, fmt in ((dash_stores.run_a, "html"), (dash_stores.run_a, "json")):
        out = tmp_path / f"report.{fmt}"
        proc = subprocess.run([sys.executable, "-m", "auditlm", "report", run, "--compare", dash_stores.run_b,
                               "--format", fmt, "--out", str(out), "--store", str(dash_stores.path)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / "report.json").read_text())
    got = capture_html(html, tmp_path / "report.png", chromium=CHROMIUM)
    assert not got["refused"] and not got["console_errors"], got
    charts = sum(len(s["charts"]) for s in doc["suites"])
    assert charts > 0 and got["svg"] >= charts  # every chart of the JSON report is drawn in the page
    text = got["text"]
    assert f"Audit report: {doc['run']['model']}" in text
    for section in ("Summary", "Gates", "Sign-off", "Coverage", "Provenance"):
        assert section in text, section
    for v in doc["summary"]:
        assert v["suite"] in text and v["label"] in text
    assert not [n for n in dash_stores.needles if n.lower() in text.lower()]
    if os.environ.get("AUDITLM_SCREENSHOTS"):
        shutil.copy(tmp_path / "report.png", Path(os.environ["AUDITLM_SCREENSHOTS"]) / "report.png")
