"""First paint of the dashboard on a store of 50 runs and 100,000 items (not a test: prints seconds).

Builds the synthetic store of ``tests/dashboard_store.py`` (CrowS-Pairs-like items with per-group metrics, written
through the store's API), starts ``auditlm dashboard`` on a free loopback port, and opens each page by its deep
link in Debian's Chromium (Playwright, ``/usr/bin/chromium``): *first paint* is the time from navigation until the
page's title and its first table (or chart) are drawn, cold (first visit: nothing cached) and warm (second visit).
Also prints the same pages' script times under Streamlit's AppTest (no browser). Usage::

    python bench/bench_dashboard.py [--runs 50] [--items 100000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
CHROMIUM = "/usr/bin/chromium"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _apptest(store: Path, pages: dict[str, tuple[str, dict[str, str]]]) -> dict[str, float]:
    from streamlit.testing.v1 import AppTest

    os.environ["AUDITLM_DASHBOARD_STORE"] = str(store)
    out = {}
    for name, (page, params) in pages.items():
        at = AppTest.from_file(str(ROOT / "dashboard" / "app.py"), default_timeout=120)
        for k, v in params.items():
            at.query_params[k] = v
        if page != "runs":
            at.switch_page(f"views/{page}.py")
        t = time.perf_counter()
        at.run()
        out[name] = time.perf_counter() - t
        assert not at.exception, [e.value for e in at.exception]
    return out


def _browser(store: Path, urls: dict[str, str]) -> dict[str, tuple[float, float]]:
    from playwright.sync_api import sync_playwright

    port = _port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-m", "auditlm", "dashboard", "--store", str(store), "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out: dict[str, tuple[float, float]] = {}
    try:
        for _ in range(180):
            try:
                with urllib.request.urlopen(base + "/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            for name, path in urls.items():
                times = []
                for _ in range(2):  # cold, then warm (cached queries)
                    t = time.perf_counter()
                    page.goto(base + path, wait_until="commit")
                    page.wait_for_selector("h1", timeout=120_000)
                    page.wait_for_selector('[data-testid="stDataFrame"], [data-testid="stVegaLiteChart"]',
                                           timeout=120_000)
                    times.append(time.perf_counter() - t)
                out[name] = (times[0], times[1])
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--items", type=int, default=100_000)
    ap.add_argument("--keep", type=Path, help="build the store in this folder and keep it")
    args = ap.parse_args()
    os.environ.setdefault("AUDITLM_KEYS", tempfile.mkdtemp(prefix="auditlm-keys-"))
    from dashboard_store import synthetic_store

    folder = args.keep or Path(tempfile.mkdtemp(prefix="auditlm-dash-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    store = folder / "big.sqlite"
    if store.exists():
        store.unlink()
    t = time.perf_counter()
    ids = synthetic_store(store, args.runs, args.items)
    print(f"store: {args.runs} runs, {args.items} items, {store.stat().st_size / 1e6:.1f} MB, built in "
          f"{time.perf_counter() - t:.1f} s")
    pages = {"runs": ("runs", {}), "run": ("run", {"run": ids[0]}),
             "items": ("items", {"run": ids[0], "suite": "bias.crows_pairs"}),
             "compare": ("compare", {"a": ids[0], "b": ids[1]})}
    urls = {"runs": "/", "run": f"/run?run={ids[0]}", "items": f"/items?run={ids[0]}&suite=bias.crows_pairs",
            "compare": f"/compare?a={ids[0]}&b={ids[1]}"}
    if os.path.exists(CHROMIUM):
        for name, (cold, warm) in _browser(store, urls).items():
            print(f"first paint (chromium) {name:8s} cold {cold:5.2f} s  warm {warm:5.2f} s")
    else:
        print(f"no {CHROMIUM}: browser first paint not measured")
    for name, s in _apptest(store, pages).items():
        print(f"AppTest script run       {name:8s} {s:5.2f} s (cold cache)")


if __name__ == "__main__":
    main()
