"""The dashboard in a real browser: ``auditlm dashboard`` started as a process on a free loopback port over a store
of real tiny-model runs, Debian's Chromium driven by Playwright (``/usr/bin/chromium``; Playwright's own browser
download is not available here) visiting every page by its deep link. No page shows a Streamlit exception, the
store file is byte-for-byte unchanged afterwards, and a screenshot of each page is saved (copied to
``$AUDITLM_SCREENSHOTS`` when set). Skipped where Chromium or Playwright is missing (``.ci/run`` installs both)."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dashboard_store
import pytest
from dashboard_store import PII, Stores

CHROMIUM = "/usr/bin/chromium"
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs /usr/bin/chromium (apt-get install chromium)")
dash_stores = dashboard_store.dash_stores


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"auditlm dashboard exited {proc.returncode}: {proc.stderr.read() if proc.stderr else ''}")
        try:
            with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                if r.read().strip() == b"ok":
                    return
        except OSError:
            time.sleep(0.5)
    raise AssertionError("the dashboard did not come up")


class _Server:
    """``auditlm dashboard --store STORE --port FREE`` as a process, until the block ends."""

    def __init__(self, store: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                            os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen([sys.executable, "-m", "auditlm", "dashboard", "--store", str(store),
                                      "--port", str(self.port)], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)

    def __enter__(self) -> _Server:
        try:
            _wait_healthy(self.url, self.proc)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def test_missing_store_is_a_page_not_an_error(tmp_path: Path):
    """A store that does not exist (yet) is not an error for ``auditlm dashboard``: the page says so."""
    with _Server(tmp_path / "nothing-here.sqlite") as srv, playwright.sync_playwright() as p:
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
    texts: dict[str, str] = {}
    with _Server(dash_stores.path) as srv, playwright.sync_playwright() as p:
        url = srv.url
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        outside: list[str] = []
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(url)
                and not r.url.startswith("data:") else None)
        for name, path in _pages(dash_stores).items():
            page.goto(url + path, wait_until="networkidle", timeout=90_000)
            page.wait_for_selector("h1", timeout=60_000)
            page.wait_for_function(
                "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
            time.sleep(1.5)
            body = page.inner_text("body")
            assert page.locator('[data-testid="stException"]').count() == 0, (name, body)
            assert "Page not found" not in body, name
            texts[name] = page.inner_text("body")
            # Streamlit scrolls inside its main block, not the document: grow the viewport to the page's
            # height so that the screenshot holds all of it
            height = page.evaluate("() => Math.max(...[...document.querySelectorAll('[data-testid=stMain], "
                                   "[data-testid=stMainBlockContainer]')].map(e => e.scrollHeight), 1000)")
            page.set_viewport_size({"width": 1400, "height": min(int(height) + 100, 16000)})
            time.sleep(1.0)
            page.screenshot(path=str(shots / f"{name}.png"), full_page=True)
            page.set_viewport_size({"width": 1400, "height": 1000})
        browser.close()
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
