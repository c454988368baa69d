"""Screenshots of the dashboard and the HTML report in a real browser (Playwright driving a Chromium binary).

For review artefacts and the browser tests: :class:`DashboardProcess` starts ``auditlm dashboard`` as a process
on a free loopback port, :func:`capture_pages` visits pages by their deep links and saves one full-page
screenshot each (failing on a Streamlit exception element or a "Page not found"), and :func:`capture_html`
opens a report file with every network request refused. Playwright is imported only when called (it is a
test extra); ``chromium`` is a browser binary (Debian's ``/usr/bin/chromium`` here: Playwright's own browser
download is not used).

Command line: ``python -m auditlm.report.browser STORE --run ID [--compare ID] [--suite S] [--item I]
[--report FILE.html] --out DIR``.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

#: The Chromium binary the screenshots use unless told otherwise.
CHROMIUM = "/usr/bin/chromium"


def free_port() -> int:
    """A TCP port free on the loopback interface now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class DashboardProcess:
    """``auditlm dashboard --store STORE --port FREE`` as a child process for the ``with`` block; ``url`` is its
    address once it answers ``/_stcore/health``."""

    def __init__(self, store: Path, timeout: float = 90.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.timeout = timeout
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen([sys.executable, "-m", "auditlm", "dashboard", "--store", str(store),
                                      "--port", str(self.port)], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                raise RuntimeError(f"auditlm dashboard exited {self.proc.returncode}: {err}")
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=2) as r:
                    if r.read().strip() == b"ok":
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError(f"the dashboard did not answer within {self.timeout:.0f} s")

    def __enter__(self) -> DashboardProcess:
        try:
            self._wait_healthy()
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


def _launch(p: Any, chromium: str) -> Any:
    return p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])


def capture_pages(url: str, pages: dict[str, str], out: Path, *, chromium: str = CHROMIUM,
                  width: int = 1400) -> dict[str, Any]:
    """Visit ``url + path`` for each ``name: path`` of ``pages`` and save ``out/NAME.png`` (the whole page).

    Returns ``{"texts": {name: page text}, "outside": [requests to anything but the dashboard]}``. Raises
    ``AssertionError`` naming the page when one shows a Streamlit exception or "Page not found".
    """
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    texts: dict[str, str] = {}
    outside: list[str] = []
    with sync_playwright() as p:
        browser = _launch(p, chromium)
        page = browser.new_page(viewport={"width": width, "height": 1000})
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(url)
                and not r.url.startswith("data:") else None)
        for name, path in pages.items():
            page.goto(url + path, wait_until="networkidle", timeout=90_000)
            page.wait_for_selector("h1", timeout=60_000)
            page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
                                   timeout=60_000)
            time.sleep(1.5)
            body = page.inner_text("body")
            if page.locator('[data-testid="stException"]').count():
                raise AssertionError(f"page {name} ({path}) shows an exception: {body[:2000]}")
            if "Page not found" in body:
                raise AssertionError(f"page {name} ({path}): Page not found")
            texts[name] = body
            # Streamlit scrolls inside its main block, not the document: grow the viewport to the page's height
            # so that the screenshot holds all of it
            height = page.evaluate("() => Math.max(...[...document.querySelectorAll('[data-testid=stMain], "
                                   "[data-testid=stMainBlockContainer]')].map(e => e.scrollHeight), 1000)")
            page.set_viewport_size({"width": width, "height": min(int(height) + 100, 16000)})
            time.sleep(1.0)
            page.screenshot(path=str(out / f"{name}.png"), full_page=True)
            page.set_viewport_size({"width": width, "height": 1000})
        browser.close()
    return {"texts": texts, "outside": outside}


def capture_html(report: Path, png: Path, *, chromium: str = CHROMIUM, width: int = 1200) -> dict[str, Any]:
    """Open a report file (``file://``) with every request but the file itself refused (it must be
    self-contained), save a full-page screenshot to ``png`` and return ``{"text", "svg", "refused",
    "console_errors"}``: the page text, the number of ``<svg>`` charts drawn, the refused URLs and the
    page's console errors."""
    from playwright.sync_api import sync_playwright

    target = report.resolve().as_uri()
    refused: list[str] = []
    errors: list[str] = []
    with sync_playwright() as p:
        browser = _launch(p, chromium)
        page = browser.new_page(viewport={"width": width, "height": 1000})

        def route(r: Any) -> None:
            if r.request.url == target or r.request.url.startswith("data:"):
                r.continue_()
            else:
                refused.append(r.request.url)
                r.abort()

        page.route("**/*", route)
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(target, wait_until="load", timeout=60_000)
        png.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(png), full_page=True)
        doc = {"text": page.inner_text("body"), "svg": page.locator("svg").count(), "refused": refused,
               "console_errors": errors}
        browser.close()
    return doc


def dashboard_pages(run: str, *, compare: str | None = None, suite: str | None = None,
                    item: str | None = None, explain_suite: str | None = None) -> dict[str, str]:
    """The deep links of the pages a review looks at: Runs, Run, Items (``suite``), Explain (``item`` of
    ``explain_suite``, default ``suite``) and Compare (``compare`` as the baseline A, ``run`` as B)."""
    pages = {"runs": "/", "run": f"/run?run={run}"}
    if suite:
        pages["items"] = f"/items?run={run}&suite={suite}"
    if item and (explain_suite or suite):
        pages["explain"] = f"/explain?run={run}&suite={explain_suite or suite}&item={item}"
    if compare:
        pages["compare"] = f"/compare?a={compare}&b={run}"
    return pages


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m auditlm.report.browser", description=__doc__.split("\n\n")[0])
    ap.add_argument("store", type=Path)
    ap.add_argument("--run", required=True)
    ap.add_argument("--compare", help="baseline run for the Compare page")
    ap.add_argument("--suite", help="suite for the Items page")
    ap.add_argument("--item", help="explained item for the Explain page")
    ap.add_argument("--explain-suite", help="suite of --item (default: --suite)")
    ap.add_argument("--report", type=Path, help="an HTML report to open and screenshot too")
    ap.add_argument("--chromium", default=CHROMIUM)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    pages = dashboard_pages(a.run, compare=a.compare, suite=a.suite, item=a.item, explain_suite=a.explain_suite)
    with DashboardProcess(a.store) as d:
        got = capture_pages(d.url, pages, a.out, chromium=a.chromium)
    for name in pages:
        print(f"{a.out / (name + '.png')}  ({len(got['texts'][name])} characters of text)")
    if a.report:
        h = capture_html(a.report, a.out / "report.png", chromium=a.chromium)
        print(f"{a.out / 'report.png'}  ({h['svg']} charts, {len(h['refused'])} requests refused, "
              f"{len(h['console_errors'])} console errors)")
    if got["outside"]:
        print(f"requests outside the dashboard: {got['outside'][:5]}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
