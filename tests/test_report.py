"""Reports: verdict rules, the ten-second run summary, the auditlm.report/1 document and its Markdown, HTML and
model-card renderings, from real tiny-model runs."""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import run_cli

from auditlm.metrics import MetricResult
from auditlm.report import build_report
from auditlm.report.html import render_html
from auditlm.report.markdown import render_markdown
from auditlm.report.verdicts import HEADLINES, judge, suite_verdicts
from auditlm.store import Store

SUITE = "bias.counterfactual_templates"
SCHEMA = json.loads((Path(__file__).parents[1] / "auditlm" / "report" / "report_schema.json").read_text())


def _row(value, lo, hi, n=200, small=False, metric="pct_stereotype", suite="bias.crows_pairs", group=None,
         note=None):
    extra = {"ci": {"method": "clopper-pearson", "confidence": 0.95, "unit": "item", "n_units": n}}
    if small:
        extra["small_n"] = True
    if note:
        extra["note"] = note
    return MetricResult(suite, metric, value, lo, hi, n, group, "bias_type" if group else None, extra)


# --- verdict rules on constructed metrics ------------------------------------------------------------------


@pytest.mark.parametrize("row, verdict, label", [
    (_row(0.62, 0.58, 0.66), "detected", "bias detected"),                 # interval excludes 0.5
    (_row(0.40, 0.36, 0.44), "detected", "bias detected"),                 # below the ideal counts too
    (_row(0.61, 0.52, 0.70, n=12, small=True), "detected", "bias detected"),  # excluded at small n: still detected
    (_row(0.50, 0.47, 0.53), "no_evidence", "no evidence of bias"),        # includes 0.5, within ±0.05
    (_row(0.52, 0.40, 0.64), "underpowered", "underpowered"),              # includes 0.5 but too wide
    (_row(0.50, 0.47, 0.53, n=20, small=True), "underpowered", "underpowered"),  # narrow but small n
    (_row(float("nan"), float("nan"), float("nan"), note="no pairs"), "underpowered", "underpowered"),
])
def test_verdict_rules(row, verdict, label):
    v = judge(row, HEADLINES["crows_pairs"], "crows_pairs")
    assert (v.verdict, v.label) == (verdict, label), v.reason
    assert v.ideal == 0.5 and v.tolerance == 0.05 and v.metric == "pct_stereotype"


def test_leakage_wording_and_ideal_at_a_bound():
    h = HEADLINES["pii_emission"]
    found = judge(_row(0.1, 0.05, 0.2, metric="emission_rate", suite="privacy.pii_emission"), h)
    none = judge(_row(0.0, 0.0, 0.018, metric="emission_rate", suite="privacy.pii_emission"), h)
    wide = judge(_row(0.0, 0.0, 0.3, metric="emission_rate", suite="privacy.pii_emission"), h)
    assert (found.label, none.label, wide.label) == ("leakage detected", "no evidence of leakage", "underpowered")


def test_suite_verdicts_cover_skipped_and_checks():
    suites = [{"suite_id": "bias.crows_pairs", "status": "complete"},
              {"suite_id": "bias.bbq", "status": "skipped", "detail": "no benchmark data"},
              {"suite_id": "privacy.pii_detector", "status": "complete"}]
    metrics = [_row(0.5, 0.48, 0.52), _row(0.9, 0.8, 0.95, metric="f1", suite="privacy.pii_detector"),
               _row(0.7, 0.6, 0.8, group="gender")]
    vs = {v.suite: v for v in suite_verdicts(suites, metrics)}
    assert vs["bias.crows_pairs"].verdict == "no_evidence" and vs["bias.crows_pairs"].group is None
    assert vs["bias.bbq"].verdict == "not_run" and vs["bias.bbq"].reason == "no benchmark data"
    assert vs["privacy.pii_detector"].verdict == "no_verdict"


# --- real runs ---------------------------------------------------------------------------------------------


def _cli(argv: list[str]) -> tuple[int, str, str]:
    from auditlm.cli import main

    o, e = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(o), redirect_stderr(e):
        try:
            main(argv)
        except SystemExit as x:
            code = x.code
    return code, o.getvalue(), e.getvalue()


@pytest.fixture(scope="module")
def two_runs(tiny_model_dir: Path, tmp_path_factory) -> tuple[Path, str, str]:
    """Two tiny-model runs of the counterfactual templates (seeds 0 and 1) in one store."""
    store = tmp_path_factory.mktemp("report") / "runs.sqlite"
    ids = []
    for seed in ("0", "1"):
        code, out, err = _cli(["run", "--model", str(tiny_model_dir), "--suite", SUITE, "--limit", "8", "--seed", seed,
                               "--store", str(store), "--json"])
        assert code == 0, err
        summary = json.loads(out)
        (v,) = summary["verdicts"]  # added within auditlm.run/1
        assert v["suite"] == SUITE and v["metric"] == "negativity_spread" and v["ideal"] == 0.0
        ids.append(summary["run_id"])
    return store, ids[0], ids[1]


def test_run_prints_the_ten_second_summary(tiny_model_dir: Path, tmp_path: Path, capsys):
    store = str(tmp_path / "runs.sqlite")
    argv = ["run", "--model", str(tiny_model_dir), "--suite", SUITE, "--limit", "8", "--store", store]
    code, out, _ = run_cli(argv, capsys)
    assert code == 0
    lines = [x for x in out.splitlines() if x.strip()]
    assert len(lines) <= 4, out  # title, one line per suite, the hint
    (line,) = [x for x in lines if x.strip().startswith(SUITE)]
    assert "negativity_spread" in line and "ideal 0" in line and "n=8" in line
    assert re.search(r"(BIAS DETECTED|NO EVIDENCE OF BIAS|UNDERPOWERED)", line)
    assert "relative_negativity" not in out  # the full table only with --details
    code, out, _ = run_cli([*argv, "--details"], capsys)
    assert code == 0 and "relative_negativity" in out and "negativity_spread" in out
    assert any(x.strip().startswith(SUITE) and "ideal 0" in x for x in out.splitlines())


def test_report_json_follows_the_schema_and_holds_the_numbers(two_runs):
    store, rid, _ = two_runs
    with Store(store, readonly=True) as st:
        doc = build_report(st, rid)
        metrics = st.metrics(rid)
    jsonschema.validate(doc, SCHEMA)
    assert doc["schema"] == "auditlm.report/1" and doc["run"]["run_id"] == rid and doc["raw_values"] is False
    (suite,) = doc["suites"]
    assert suite["id"] == SUITE and suite["kind"] == "counterfactual_loglikelihood"
    stored = {(m.metric, m.group_field, m.group): m for m in metrics}
    assert len(suite["metrics"]) == len(metrics)
    for m in suite["metrics"]:
        s = stored[(m["metric"], m["group_field"], m["group"])]
        assert m["n"] == s.n
        for k in ("value", "ci_low", "ci_high"):
            x = getattr(s, k)
            assert (m[k] is None) if x != x else m[k] == pytest.approx(x)
    (v,) = doc["summary"]
    assert v["metric"] == "negativity_spread" and v["verdict"] in ("detected", "no_evidence", "underpowered")
    assert suite["charts"] and all(len(c["rows"]) >= 2 for c in suite["charts"])
    assert len(suite["worst_items"]) == 5 and all(w["text"] for w in suite["worst_items"])
    sev = [w["severity"] for w in suite["worst_items"]]
    assert sev == sorted(sev, reverse=True)
    assert len(doc["coverage"]["small_n"]) == sum(1 for m in metrics if m.extra.get("small_n"))
    assert any("--limit 8" in n for n in doc["coverage"]["notes"])
    assert doc["provenance"]["suites"][0]["data_files"][0]["source"] == "suite"
    # the CLI prints the same document
    code, out, err = _cli(["report", rid, "--format", "json", "--store", str(store)])
    assert code == 0, err
    printed = json.loads(out)
    assert printed["summary"] == doc["summary"] and printed["suites"] == doc["suites"]


def test_markdown_and_html_render_metrics_intervals_and_n(two_runs, tmp_path: Path):
    store, rid, _ = two_runs
    with Store(store, readonly=True) as st:
        doc = build_report(st, rid)
    md, page = render_markdown(doc), render_html(doc)
    v = doc["summary"][0]
    for text in (md, page):
        assert "negativity_spread" in text and "relative_negativity" in text and v["label"] in text
        assert "Bias, Risks, and Limitations" in text and "Coverage" in text and "Provenance" in text
    overall = next(m for m in doc["suites"][0]["metrics"] if m["metric"] == "negativity_spread" and m["group"] is None)
    assert f"| negativity_spread | overall | {overall['value']:.4g} |" in md
    lo = next(m for m in doc["suites"][0]["metrics"] if m["ci_low"] is not None)
    assert f"[{lo['ci_low']:.4g}, {lo['ci_high']:.4g}]" in md and f"[{lo['ci_low']:.4g}, {lo['ci_high']:.4g}]" in page
    assert f"{overall['n']} ({overall['extra']['ci']['n_units']} templates)" in md
    # self-contained HTML: inline SVG charts, no scripts, no external resources
    assert page.count("<svg") == len(doc["suites"][0]["charts"]) >= 1
    assert "<script" not in page.lower()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", page, re.I)
    assert not re.search(r"@import|url\(\s*['\"]?https?:", page, re.I)
    code, _, err = _cli(["report", rid, "--format", "html", "--out", str(tmp_path / "r.html"), "--store", str(store)])
    assert code == 0, err
    assert (tmp_path / "r.html").read_text().startswith("<!DOCTYPE html>")
    assert (tmp_path / "r.html").stat().st_mode & 0o777 == 0o600


def test_model_card_has_the_numbers_and_valid_model_index(two_runs):
    store, rid, _ = two_runs
    with Store(store, readonly=True) as st:
        doc = build_report(st, rid)
    card = doc["model_card"]["markdown"]
    assert card.startswith("---\n")
    front, _, body = card[4:].partition("\n---\n")
    meta = yaml.safe_load(front)
    (entry,) = meta["model-index"]
    (result,) = entry["results"]
    assert result["dataset"]["type"] == SUITE and result["task"]["type"] == "text-generation"
    overall = {m["metric"]: m for m in doc["suites"][0]["metrics"] if m["group"] is None}
    for m in result["metrics"]:
        assert m["value"] == pytest.approx(overall[m["type"]]["value"], abs=1e-6) and m["verified"] is False
        assert f"n={overall[m['type']]['n']}" in m["name"]
    assert "## Bias, Risks, and Limitations" in body
    v = doc["summary"][0]
    assert f"`negativity_spread` = {v['value']:.3g}" in body and f"n = {v['n']}" in body and v["label"] in body
    assert meta["model-index"] == doc["model_card"]["model_index"]


def test_report_compare_and_bad_inputs(two_runs, tmp_path: Path):
    store, a, b = two_runs
    with Store(store, readonly=True) as st:
        doc = build_report(st, b, compare_with=a)
    jsonschema.validate(doc, SCHEMA)
    assert doc["comparison"]["schema"] == "auditlm.compare/1" and doc["comparison"]["run_a"]["run_id"] == a
    assert f"Comparison with {a}" in render_markdown(doc)
    code, out, err = _cli(["report", b, "--compare", a, "--format", "md", "--store", str(store)])
    assert code == 0 and f"Comparison with {a}" in out, err
    for argv, needle in ((["report", "no-such-run", "--store", str(store)], "unknown run 'no-such-run'"),
                         (["report", a, "--format", "pdf", "--store", str(store)], "valid: md, html, json"),
                         (["report", a, "--store", str(tmp_path / "none.sqlite")], "no run store")):
        code, out, err = _cli(argv)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err


def test_coverage_names_groups_absent_from_the_run(tmp_path: Path):
    """A --where subset leaves the other axes out: coverage lists them; a skipped suite is listed with why."""
    from auditlm import runner
    from auditlm.suites.loader import discover, select
    from auditlm.targets.fake import FakeTarget

    cfg = runner.RunConfig(model="fake", suites=[SUITE], where={"axis": ["gender"]})
    prepared = runner.prepare(select(discover(), cfg.suites), cfg, None)
    with Store(tmp_path / "s.sqlite") as st:
        t = FakeTarget()
        rid = runner.start_run(st, t, prepared, cfg, {"bias.bbq": "no benchmark data (pass --data-dir)"})
        runner.execute(st, rid, t, prepared, cfg)
        doc = build_report(st, rid)
    jsonschema.validate(doc, SCHEMA)
    (absent,) = doc["coverage"]["absent_groups"]
    assert absent["suite"] == SUITE and absent["field"] == "axis" and absent["present"] == ["gender"]
    assert {"religion", "age", "disability", "nationality"} <= set(absent["absent"])
    assert doc["coverage"]["skipped"] == [{"suite": "bias.bbq", "reason": "no benchmark data (pass --data-dir)"}]
    verdicts = {v["suite"]: v for v in doc["summary"]}
    assert verdicts["bias.bbq"]["verdict"] == "not_run"
    assert any(n.startswith("--where axis=gender") for n in doc["coverage"]["notes"])
    md = render_markdown(doc)
    assert "Skipped: bias.bbq" in md and "Absent from the audited items" in md and "religion" in md
    worst = doc["suites"][0]["worst_items"]
    assert worst and all(w["group"]["axis"] == "gender" and w["group"]["term"] in ("man", "woman") for w in worst)


def test_report_shows_attribution_highlights(two_runs):
    store, _, rid = two_runs
    code, _, err = _cli(["explain", rid, "--suite", SUITE, "--top", "2", "--method", "feature_ablation",
                         "--store", str(store)])
    assert code == 0, err
    with Store(store, readonly=True) as st:
        doc = build_report(st, rid)
        stored = st.explanations(rid)
    jsonschema.validate(doc, SCHEMA)
    assert [(a["item_id"], a["method"]) for a in doc["attributions"]] == [(e.item_id, e.method) for e in stored]
    first, e = doc["attributions"][0], stored[0]
    top = max(e.features, key=lambda f: abs(f.attribution))
    assert first["top_features"][0]["text"] == top.text
    assert first["target_value"] == pytest.approx(e.target.value)
    assert doc["group_share"] and all(m["metric"] == "group_term_share" for m in doc["group_share"])
    md = render_markdown(doc)
    assert "## Attribution highlights" in md and e.item_id.replace("|", "\\|") in md
    # every group-share row names its method (rows of several methods would otherwise read as duplicates)
    share_rows = [ln for ln in md.splitlines() if ln.startswith(f"| {SUITE} | feature_ablation | ")]
    assert len(share_rows) == len(doc["group_share"])
    assert "<th>method</th><th>group</th><th>group-term share</th>" in render_html(doc)


def test_report_rechecks_the_gates_the_run_was_started_with(tiny_model_dir: Path, tmp_path: Path):
    """``--fail-on`` gates are stored in the run's config; the report re-checks each on the stored metrics
    (same value and verdict ``auditlm run`` printed) and shows it in every format; a run without gates says so."""
    store = str(tmp_path / "runs.sqlite")
    passing, failing = f"{SUITE}.negativity_spread>100", f"{SUITE}.negativity_spread>=0"
    code, out, err = _cli(["run", "--model", str(tiny_model_dir), "--suite", SUITE, "--limit", "8", "--store", store,
                           "--fail-on", passing, "--fail-on", failing, "--json"])
    assert code == 1, err  # the second gate always holds
    printed = json.loads(out)
    assert [(g["expr"], g["passed"]) for g in printed["gates"]] == [(passing, True), (failing, False)]
    with Store(store, readonly=True) as st:
        doc = build_report(st, printed["run_id"])
    jsonschema.validate(doc, SCHEMA)
    assert doc["run"]["config"]["fail_on"] == [passing, failing]
    assert [(g["expr"], g["passed"], g["value"]) for g in doc["gates"]] == \
        [(g["expr"], g["passed"], g["value"]) for g in printed["gates"]]
    md, page = render_markdown(doc), render_html(doc)
    assert f"| `{failing}` |" in md and "**FAIL**" in md and "**pass**" in md
    assert f"<code>{failing.replace('>', '&gt;')}</code>" in page and "FAIL" in page
    code, out, err = _cli(["run", "--model", str(tiny_model_dir), "--suite", SUITE, "--limit", "8", "--store", store,
                           "--json"])
    with Store(store, readonly=True) as st:
        plain = build_report(st, json.loads(out)["run_id"])
    assert plain["gates"] == [] and "No `--fail-on` gates" in render_markdown(plain)
