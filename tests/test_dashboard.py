"""The dashboard (``dashboard/``) under Streamlit's AppTest: every page by its query parameters against a store of
real tiny-model runs (plus a fake model that emits planted PII), and against empty, missing, corrupt and
newer-schema stores. No page raises; the expected metrics and groups are on the page; PII never is (unless a
``--store-raw`` run's raw values are asked for); nothing imports torch; the store is never written."""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import dashboard_store
import pytest
from dashboard_store import BIAS, GATE_FAIL, GATE_PASS, PII, PLANTED, Stores, synthetic_store

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest

dash_stores = dashboard_store.dash_stores

ROOT = Path(__file__).resolve().parents[1]
APP = str(ROOT / "dashboard" / "app.py")


def _page(store: Path, page: str, timeout: float = 120, **params: str) -> AppTest:
    import os

    os.environ["AUDITLM_DASHBOARD_STORE"] = str(store)
    at = AppTest.from_file(APP, default_timeout=timeout)
    for k, v in params.items():
        at.query_params[k] = v
    if page != "runs":
        at.switch_page(f"views/{page}.py")
    return at.run()


def _walk(node):
    yield node
    children = getattr(node, "children", None)
    if isinstance(children, dict):
        for c in children.values():
            yield from _walk(c)


def _rendered(at: AppTest) -> bytes:
    """Every element's protobuf as sent to the browser (dataframes as their Arrow bytes), lower-cased."""
    out = []
    for n in _walk(at._tree):
        proto = getattr(n, "proto", None)
        if proto is not None:
            out.append(proto.SerializeToString())
    return b"\n".join(out).lower()


def _ok(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("AUDITLM_DASHBOARD_STORE", raising=False)
    yield


def test_runs_page_lists_every_run(dash_stores: Stores):
    at = _page(dash_stores.path, "runs")
    _ok(at)
    blob = _rendered(at)
    for rid in (dash_stores.run_a, dash_stores.run_b, dash_stores.run_p):
        assert rid.encode() in blob
    assert b"pct_stereotype" in blob and b"fake-pii" in blob
    searched = _page(dash_stores.path, "runs", q="fake-pii")
    _ok(searched)
    assert any("1 of 3 runs" in m.value for m in searched.markdown)


def test_run_page_rechecks_the_stored_gates(dash_stores: Stores):
    """Run B was started with two --fail-on gates: the Run page lists both with the value read from the stored
    metrics, one passing and one failing; run A, started without gates, says so."""
    from auditlm.store import Store

    with Store(dash_stores.path, readonly=True) as s:
        value = next(m.value for m in s.metrics(dash_stores.run_b)
                     if m.suite == "bias.crows_pairs" and m.metric == "pct_stereotype" and m.group is None)
    at = _page(dash_stores.path, "run", run=dash_stores.run_b)
    _ok(at)
    frame = next(d.value for d in at.dataframe if "gate (fails when it holds)" in d.value.columns)
    assert list(frame["gate (fails when it holds)"]) == [GATE_PASS, GATE_FAIL]
    assert list(frame["result"]) == ["pass", "FAIL"]
    assert list(frame["value"]) == [f"{value:.3f}"] * 2  # both gates read the same stored row
    assert any("1 of 2 gates fail" in e.value for e in at.error)
    a = _page(dash_stores.path, "run", run=dash_stores.run_a)
    assert any("no --fail-on gates are stored" in c.value for c in a.caption)


def test_run_page_metrics_groups_disparities_provenance_coverage(dash_stores: Stores):
    before = _sha(dash_stores.path)
    at = _page(dash_stores.path, "run", run=dash_stores.run_a)
    _ok(at)
    heads = [h.value for h in at.header]
    assert BIAS[0] in heads and BIAS[1] in heads
    assert {"Gates", "Sign-off", "Coverage", "Provenance"} <= set(heads)
    subs = [s.value for s in at.subheader]
    assert "pct_stereotype by bias_type" in subs and "relative_negativity by gender" in subs
    md = " ".join(m.value for m in at.markdown)
    assert "between-group difference (fairlearn)" in md
    assert "below the small-n line" in md
    blob = _rendered(at)
    for needle in (b"pct_stereotype", b"negativity_spread", b"woman", b"race-color", b"float32", b"small n",
                   b"underpowered", b"no sign-off recorded", b"no suite was skipped"):
        assert needle in blob, needle
    assert len(at.get("vega_lite_chart")) >= 3  # altair charts: overall and per group
    assert _sha(dash_stores.path) == before


def test_run_page_coverage_names_the_skipped_suite(dash_stores: Stores):
    at = _page(dash_stores.path, "run", run=dash_stores.run_p)
    _ok(at)
    blob = _rendered(at)
    assert b"bias.bbq" in blob and b"skipped on purpose" in blob


def test_items_page_orders_most_biased_first_and_filters_by_group(dash_stores: Stores):
    at = _page(dash_stores.path, "items", run=dash_stores.run_a, suite="bias.crows_pairs")
    _ok(at)
    df = at.dataframe[0].value
    sev = list(df["severity"])
    assert sev == sorted(sev, reverse=True) and len(sev) == 12
    assert "bias_type" in df.columns
    one = _page(dash_stores.path, "items", run=dash_stores.run_a, suite="bias.crows_pairs",
                group=f"bias_type={df['bias_type'].iloc[0]}")
    _ok(one)
    assert set(one.dataframe[0].value["bias_type"]) == {df["bias_type"].iloc[0]}


def test_explain_page_heatmap_and_group_view(dash_stores: Stores):
    at = _page(dash_stores.path, "explain", run=dash_stores.run_a, suite="bias.counterfactual_templates",
               item=dash_stores.explained_item)
    _ok(at)
    blob = _rendered(at)
    assert b'class="feat"' in blob and dash_stores.explained_item.lower().encode() in blob
    assert "Per-group attribution" in [h.value for h in at.header]
    share = next(d.value for d in at.dataframe if "label" in d.value.columns)  # the per-group share table
    assert "method" in share.columns and share["method"].str.len().gt(0).all() and "overall" in set(share["label"])


def test_compare_page_renders_auditlm_compare(dash_stores: Stores):
    at = _page(dash_stores.path, "compare", a=dash_stores.run_a, b=dash_stores.run_b)
    _ok(at)
    df = at.dataframe[0].value
    assert {"delta", "ci_low", "ci_high", "p_holm", "verdict", "significant"} <= set(df.columns)
    assert df["paired"].any() and df.loc[df["paired"], "ci_low"].notna().any()  # paired intervals shown
    assert "pct_stereotype" in set(df["metric"])
    assert any("significant change" in m.value for m in at.markdown)
    assert {"Utility change", "Non-inferiority"} <= {h.value for h in at.header}


@pytest.mark.parametrize("page, params", [
    ("run", {"run": "no-such-run"}), ("items", {"run": "no-such-run"}),
    ("items", {"suite": "bias.nope"}), ("explain", {"item": "nope"}), ("compare", {"a": "x", "b": "y"}),
])
def test_unknown_ids_are_a_message(dash_stores: Stores, page, params):
    params = {"run": dash_stores.run_a, **params} if page != "compare" else params
    if page == "explain":
        params["suite"] = "bias.counterfactual_templates"
    at = _page(dash_stores.path, page, **params)
    _ok(at)
    assert at.warning, "expected a warning naming the valid choices"
    assert "valid:" in at.warning[0].value


def _all_pages(s: Stores, store: Path, run: str) -> list[AppTest]:
    return [_page(store, "runs"), _page(store, "run", run=run), _page(store, "items", run=run, suite=PII),
            _page(store, "items", run=run, suite="privacy.pii_detector"),
            _page(store, "compare", a=s.run_a, b=run)]


def test_planted_pii_never_rendered(dash_stores: Stores):
    assert len(dash_stores.needles) >= 3
    for at in _all_pages(dash_stores, dash_stores.path, dash_stores.run_p):
        _ok(at)
        blob = _rendered(at)
        leaked = [n for n in dash_stores.needles if n.lower().encode() in blob]
        assert not leaked, leaked
    items = _page(dash_stores.path, "items", run=dash_stores.run_p, suite=PII)
    assert b"&lt;email_address&gt;" in _rendered(items) or b"<email_address>" in _rendered(items)


def test_store_raw_run_redacted_until_toggled(dash_stores: Stores):
    at = _page(dash_stores.raw, "items", run=dash_stores.run_raw, suite=PII)
    _ok(at)
    assert not [n for n in PLANTED if n.lower().encode() in _rendered(at)]
    assert any("--store-raw" in w.value for w in at.warning)
    at.toggle[0].set_value(True).run()
    _ok(at)
    assert all(n.lower().encode() in _rendered(at) for n in PLANTED)  # the scan can find what is there


def test_empty_missing_corrupt_and_newer_stores_are_a_clear_page(tmp_path: Path):
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"SQLite format 3\x00" + b"\x17" * 4000)
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_text("not a database at all")
    newer = tmp_path / "newer.sqlite"
    con = sqlite3.connect(newer)
    con.execute("CREATE TABLE runs (x)")
    con.execute("PRAGMA user_version = 999")
    con.commit()
    con.close()
    cases = {tmp_path / "missing.sqlite": "no run store", empty: "empty", corrupt: "not a valid auditlm store",
             garbage: "not a valid auditlm store", newer: "newer than this auditlm", tmp_path: "directory"}
    for store, words in cases.items():
        for page, params in (("runs", {}), ("run", {"run": "x"}), ("items", {"run": "x", "suite": "s"}),
                             ("explain", {"run": "x"}), ("compare", {"a": "x", "b": "y"})):
            at = _page(store, page, **params)
            _ok(at)
            shown = " ".join(x.value for x in [*at.error, *at.info])
            assert words in shown, (store.name, page, shown)


def test_a_store_with_no_runs(tmp_path: Path):
    from auditlm.store import Store

    path = tmp_path / "fresh.sqlite"
    Store(path).close()
    for page in ("runs", "run", "items", "explain", "compare"):
        at = _page(path, page)
        _ok(at)
        assert at.info, page


_NO_TORCH = """
import os, sys
from streamlit.testing.v1 import AppTest
os.environ["AUDITLM_DASHBOARD_STORE"] = sys.argv[1]
a, b, item = sys.argv[2:5]
for page, params in [("runs", {}), ("run", {"run": a}), ("items", {"run": a, "suite": "bias.crows_pairs"}),
                     ("explain", {"run": a, "suite": "bias.counterfactual_templates", "item": item}),
                     ("compare", {"a": a, "b": b, "margin": "0.1"})]:
    at = AppTest.from_file(sys.argv[5], default_timeout=120)
    for k, v in params.items():
        at.query_params[k] = v
    if page != "runs":
        at.switch_page(f"views/{page}.py")
    at.run()
    assert not at.exception, (page, [e.value for e in at.exception])
bad = [m for m in ("torch", "transformers", "captum", "auditlm.runner", "auditlm.targets.hf") if m in sys.modules]
print(bad)
sys.exit(1 if bad else 0)
"""


def test_dashboard_imports_no_torch_runner_or_targets(dash_stores: Stores):
    """Every page rendered (Compare's gates included) in a fresh interpreter leaves torch, transformers, the
    runner and the model targets unimported; no dashboard module imports them by name. (``auditlm.store``'s
    own imports bring in ``auditlm.targets.base`` and ``.fake``, which import no model code.)"""
    env = {**__import__("os").environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", _NO_TORCH, str(dash_stores.path), dash_stores.run_a, dash_stores.run_b,
                        dash_stores.explained_item, APP], cwd=ROOT, capture_output=True, text=True, timeout=300,
                       env=env)
    assert r.returncode == 0, r.stdout + r.stderr[-3000:]
    for f in (ROOT / "dashboard").rglob("*.py"):
        src = f.read_text()
        for mod in ("torch", "transformers", "auditlm.runner", "auditlm.targets", "auditlm import runner"):
            assert f"import {mod}" not in src and f"from {mod}" not in src, (f, mod)


def test_fifty_runs_hundred_thousand_items(tmp_path: Path, capsys):
    """The performance store renders every page without error; the timings are printed, not asserted (see
    bench/bench_dashboard.py for first paint in a browser)."""
    path = tmp_path / "big.sqlite"
    t0 = time.perf_counter()
    ids = synthetic_store(path)
    build = time.perf_counter() - t0
    times = {}
    for page, params in (("runs", {}), ("run", {"run": ids[0]}), ("items", {"run": ids[0], "suite": "bias.crows_pairs"}),
                         ("compare", {"a": ids[0], "b": ids[1]})):
        t = time.perf_counter()
        at = _page(path, page, **params)
        times[page] = time.perf_counter() - t
        _ok(at)
    with capsys.disabled():
        print(f"\n50 runs / 100k items: built in {build:.1f} s; AppTest cold page times (s): "
              + ", ".join(f"{k} {v:.2f}" for k, v in times.items()))


def test_cli_passes_loopback_no_stats_and_the_store(tmp_path: Path, capsys):
    from conftest import run_cli

    from auditlm.cli.dashboard import STORE_ENV, dashboard_dir, streamlit_command

    cmd, env, cwd = streamlit_command(tmp_path / "missing.sqlite", "127.0.0.1", 8600)
    assert cmd[:4] == [sys.executable, "-m", "streamlit", "run"] and cmd[4] == str(dashboard_dir() / "app.py")
    flags = dict(zip(cmd[5::2], cmd[6::2], strict=False))
    assert flags["--server.address"] == "127.0.0.1" and flags["--server.port"] == "8600"
    assert flags["--browser.gatherUsageStats"] == "false" and flags["--server.headless"] == "true"
    assert env[STORE_ENV] == str(tmp_path / "missing.sqlite") and cwd == dashboard_dir()
    for bad in ("0", "70000", "abc"):
        code, _, err = run_cli(["dashboard", "--port", bad, "--store", str(tmp_path / "x.sqlite")], capsys)
        assert code == 2 and "--port" in err


def test_shipped_config_and_wheel_layout():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    cfg = tomllib.loads((ROOT / "dashboard" / ".streamlit" / "config.toml").read_text())
    assert cfg["server"]["address"] == "127.0.0.1" and cfg["server"]["headless"] is True
    assert cfg["browser"]["gatherUsageStats"] is False
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["tool"]["hatch"]["build"]["targets"]["wheel"]["force-include"]["dashboard"] == "auditlm/_dashboard"


def test_compare_page_non_inferiority_margin(dash_stores: Stores):
    at = _page(dash_stores.path, "compare", a=dash_stores.run_a, b=dash_stores.run_b, margin="0.5")
    _ok(at)
    assert "Non-inferiority" in [h.value for h in at.header]
    gates = at.dataframe[-2].value if len(at.dataframe) > 2 else None
    assert gates is not None and "passed" in gates.columns and len(gates) >= 1
    assert any("gates" in x.value for x in [*at.success, *at.error])


def test_damaged_content_is_a_clear_page(dash_stores: Stores, tmp_path: Path):
    import shutil

    bad = tmp_path / "damaged.sqlite"
    with sqlite3.connect(dash_stores.path) as src, sqlite3.connect(bad) as dst:
        src.backup(dst)
    with sqlite3.connect(bad) as con:
        con.execute("UPDATE items SET score='{not json' WHERE run_id=?", (dash_stores.run_a,))
        con.execute("UPDATE runs SET model_info='[broken' WHERE run_id=?", (dash_stores.run_b,))
    shutil.copymode(dash_stores.path, bad)
    for page, params in (("runs", {}), ("items", {"run": dash_stores.run_a, "suite": "bias.crows_pairs"}),
                         ("run", {"run": dash_stores.run_b})):
        at = _page(bad, page, **params)
        _ok(at)
        assert at.error and "cannot be shown" in at.error[0].value, page


def test_run_page_shows_sign_offs_when_the_store_has_them(dash_stores: Stores, tmp_path: Path):
    import shutil

    import streamlit as st

    from auditlm.store import Store

    path = tmp_path / "signed.sqlite"
    shutil.copy(dash_stores.path, path)
    with Store(path) as w:  # a real `auditlm signoff` row (the shared store stays unsigned)
        w.add_signoff(dash_stores.run_b, reviewer="R. Viewer", decision="approve", note="ok for release",
                      bundle_sha256="ab" * 32)
    st.cache_data.clear()
    try:
        at = _page(path, "run", run=dash_stores.run_b)
        _ok(at)
        blob = _rendered(at)
        assert b"r. viewer" in blob and b"approve" in blob and b"no sign-off recorded" not in blob
        at = _page(path, "run", run=dash_stores.run_a)
        assert b"no sign-off recorded" in _rendered(at)
    finally:
        st.cache_data.clear()
