"""The ``--html`` page opened in a real headless Chromium (Playwright, ``/usr/bin/chromium``) with the network
blocked: every feature renders as a coloured span with its value on hover, the tables are there, and nothing is
fetched from outside the page. Skipped where Chromium or Playwright is not installed (``.ci/run`` installs both)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from auditlm.explain.report import to_html
from auditlm.explain.types import Explanation, Feature, Target
from auditlm.metrics import MetricResult

CHROMIUM = "/usr/bin/chromium"
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs /usr/bin/chromium (apt-get install chromium)")


def _explanation(item: str, text: str, attributions: list[float]) -> Explanation:
    words, feats, pos = text.split(" "), [], 0
    for w, a in zip(words, attributions, strict=True):
        feats.append(Feature(w, pos, pos + len(w), a, "group_term" if w == "woman" else "token"))
        pos += len(w) + 1
    return Explanation("bias.counterfactual_templates", item, "feature_ablation", Target("preference", 0.42), text,
                       feats, None, 0, 0.1, {"axis": "gender", "group": "woman"})


def test_heatmap_renders_offline_in_chromium(tmp_path: Path):
    exps = [_explanation("t1-woman", "The woman was <script>bad</script>", [0.5, 2.0, -0.25, -1.0]),
            _explanation("t2-woman", "A woman is here", [0.0, 1.0, 0.1, -0.1])]
    share = [MetricResult("bias.counterfactual_templates", "group_term_share", 0.61, 0.4, 0.8, 2, "woman", "group")]
    page_path = tmp_path / "explain.html"
    page_path.write_text(to_html("run-1", exps, model="tiny", group_share=share))
    requests: list[str] = []
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        page.on("request", lambda r: requests.append(r.url))
        page.goto(page_path.as_uri())
        spans = page.locator(".item .feat")
        assert spans.count() == 8  # the group term is drawn too, not only the token features
        colours = [spans.nth(i).evaluate("e => getComputedStyle(e).backgroundColor") for i in range(spans.count())]
        titles = [spans.nth(i).get_attribute("title") or "" for i in range(spans.count())]
        texts = [spans.nth(i).inner_text() for i in range(spans.count())]
        assert page.locator("script").count() == 0  # the feature text "<script>" is text, not an element
        assert "share of the preference" in page.inner_text("body").lower()
        page.screenshot(path=str(tmp_path / "explain.png"), full_page=True)
        browser.close()
    assert requests == [page_path.as_uri()]  # one request: the page itself, nothing from a CDN
    assert texts[3] == "<script>bad</script>"  # shown as text, not parsed
    # the strongest feature of each item is the most saturated, and signs give red vs blue
    def rgba(c: str) -> tuple[float, ...]:
        nums = c[c.index("(") + 1 : c.index(")")].split(",")
        return tuple(float(x) for x in nums) + ((1.0,) if len(nums) == 3 else ())

    first = [rgba(c) for c in colours[:4]]
    assert first[1][0] > first[1][2] and first[3][2] > first[3][0]  # +2.0 red, −1.0 blue
    assert first[1][3] >= max(c[3] for c in first) - 1e-9
    assert all(any(ch.isdigit() for ch in t) for t in titles)
