"""``auditlm explain``'s command line, store and outputs, with a fake explainer (the attribution methods themselves
are tested in tests/test_explain.py): what is stored reads back the same, ``--json`` matches its schema, ``--html``
is self-contained and escaped, every bad input is refused before the model loads with the store unchanged, and
migration 5 upgrades an existing schema-4 store in place."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import sys
import types
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import run_cli, write_fake_run

import auditlm.explain
from auditlm.explain.types import METHODS, Explanation, Feature, Target
from auditlm.metrics import MetricResult
from auditlm.store import MIGRATIONS, SCHEMA_VERSION, Store

SUITE = "bias.counterfactual_templates"
SCHEMA_FILE = Path(auditlm.explain.__file__).parent / "schema.json"
HOSTILE = "<script>alert(1)</script>"


class _Loaded:
    """What the patched model loader returns: a target whose revision matches the run's."""

    def __init__(self, revision: str = "sha256:abc") -> None:
        self.revision = revision

    def info(self) -> dict[str, str]:
        return {"backend": "hf", "model": "tiny", "revision": self.revision}


def _fake_explanations(spec, records, methods, seed):
    out = []
    for r in records:
        text = f"{HOSTILE} the person {r.item_id}"
        words = [(m.start(), m.end()) for m in re.finditer(r"\S+", text)]
        feats = [Feature(text[s:e], s, e, round(((i * 7 + seed) % 5 - 2) / 3, 6)) for i, (s, e) in enumerate(words)]
        for m in methods:
            out.append(Explanation(suite=spec.id, item_id=r.item_id, method=m, target=Target("preference", 0.25),
                                   text=text, features=feats,
                                   delta=0.001 if m == "layer_integrated_gradients" else None, seed=seed,
                                   seconds=0.01, group={"axis": r.input.get("axis", "")}))
    return out


def _metric(metric: str, value: float = 0.5, group: str | None = None) -> MetricResult:
    return MetricResult(SUITE, metric, value, value - 0.1, value + 0.1, 8, group, "axis" if group else None,
                        {"ci": {"method": "bootstrap", "confidence": 0.95}})


@pytest.fixture
def fake_explainer(monkeypatch: pytest.MonkeyPatch):
    """Fake ``auditlm.explain.methods`` / ``faithfulness`` modules and model loader; records what was called."""
    calls: dict[str, list] = {"resolve": [], "explain": [], "faithfulness": [], "select_top": [], "explain_kw": []}
    kinds = ("counterfactual_loglikelihood", "crows_pairs")

    methods = types.ModuleType("auditlm.explain.methods")
    methods.explainable_kinds = lambda: kinds

    def select_top(spec, records, k):
        calls["select_top"].append(k)
        return records[:k]

    def explain_items(target, spec, records, methods_, *, seed=0, progress=None, **kw):
        calls["explain"].append(([r.item_id for r in records], list(methods_), seed))
        calls["explain_kw"].append(kw)
        if progress is not None:  # the real explain_items: progress(1) after each explanation
            for _ in range(len(records) * len(methods_)):
                progress(1)
        return _fake_explanations(spec, records, methods_, seed)

    methods.select_top = select_top
    methods.explain_items = explain_items
    methods.group_terms = lambda spec, rec: ["a", "b"]
    faith = types.ModuleType("auditlm.explain.faithfulness")

    def faithfulness(target, spec, records, explanations, *, seed=0, **kw):
        calls["faithfulness"].append(len(explanations))
        return [_metric("comprehensiveness_aopc", 0.4), _metric("sufficiency_aopc", float("nan"))]

    faith.faithfulness = faithfulness
    faith.group_share = lambda explanations, *, seed=0, **kw: [
        replace(_metric("group_term_share", v, "gender"), extra={"method": m, "ci": {"method": "bootstrap"}})
        for m, v in (("feature_ablation", 0.3), ("shapley_sampling", 0.6))]
    for name, mod in (("methods", methods), ("faithfulness", faith)):
        monkeypatch.setitem(sys.modules, f"auditlm.explain.{name}", mod)
        monkeypatch.setattr(auditlm.explain, name, mod, raising=False)

    from auditlm.targets import registry

    def resolve(spec, **kw):
        calls["resolve"].append((spec, kw))
        return _Loaded()

    monkeypatch.setattr(registry, "resolve", resolve)
    monkeypatch.setattr(registry, "check_model", lambda *a, **k: None)
    calls["kinds"] = kinds
    return calls


def _as_hf(path: Path) -> str:
    """Make the stored fake run look like a run of a local HF model (the explainer and loader are faked)."""
    con = sqlite3.connect(path)
    run_id, config = con.execute("SELECT run_id, config FROM runs").fetchone()
    config = dict(json.loads(config), model="/models/tiny")
    con.execute("UPDATE runs SET model=?, model_info=?, config=?", ("/models/tiny", json.dumps(
        {"backend": "hf", "model": "/models/tiny", "revision": "sha256:abc", "dtype": "float32", "device": "cpu"}),
        json.dumps(config)))
    con.commit()
    con.close()
    return run_id


@pytest.fixture
def hf_run(tmp_path: Path) -> tuple[Path, str]:
    path = write_fake_run(tmp_path / "runs.sqlite")
    return path, _as_hf(path)


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    for p in (path, path.with_name(path.name + "-wal")):
        h.update(p.read_bytes() if p.exists() else b"")  # a reader may create an empty -wal: no change
    return h.hexdigest()


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    return run_cli(argv, capsys)


def _item_ids(path: Path, run_id: str) -> list[str]:
    with Store(path, readonly=True) as st:
        return [r.item_id for r in st.items(run_id, SUITE)]


# --- storing and reading back ----------------------------------------------------------------------------------


def test_explain_stores_and_reads_back_the_same(hf_run, fake_explainer, capsys):
    path, run_id = hf_run
    ids = _item_ids(path, run_id)
    code, out, err = _run(["explain", run_id, "--item", ids[0], "--item", ids[2], "--seed", "3",
                           "--store", str(path)], capsys)
    assert code == 0, err
    assert fake_explainer["resolve"][0][0] == "/models/tiny"
    assert fake_explainer["resolve"][0][1]["dtype"] == "float32"  # the dtype the run resolved, not "auto"
    assert fake_explainer["explain"] == [([ids[0], ids[2]], list(METHODS), 3)]
    with Store(path, readonly=True) as st:
        first = [e.to_dict() for e in st.explanations(run_id)]
        summary = st.explain_summary(run_id)
    expected = [e.to_dict() for e in _fake_explanations(_Spec(), [_Rec(ids[0]), _Rec(ids[2])], list(METHODS), 3)]
    key = lambda d: (d["item_id"], d["method"])  # noqa: E731
    assert sorted(first, key=key) == sorted(expected, key=key)
    assert [m.metric for m in summary["group_share"]] == ["group_term_share"] * 2
    assert "faithfulness" not in summary
    assert "explanations · run" in out and "layer_integrated_gradients" in out and "preference" in out
    # one share table per method, named in its title, holding that method's row only
    tables = re.split(r"group-term share of the preference · ", out)[1:]
    assert [t.split(" · ")[0] for t in tables] == ["feature_ablation", "shapley_sampling"]
    assert "0.300" in tables[0] and "0.600" not in tables[0] and "0.600" in tables[1]
    # explaining again replaces rows rather than adding them, and reads back the same
    assert _run(["explain", run_id, "--item", ids[0], "--item", ids[2], "--seed", "3", "--store", str(path)],
                capsys)[0] == 0
    with Store(path, readonly=True) as st:
        assert [e.to_dict() for e in st.explanations(run_id)] == first
        assert [e.to_dict() for e in st.explanations(run_id, SUITE)] == first
        assert st.explanations(run_id, "bias.other") == []


class _Spec:
    id = SUITE


class _Rec:
    def __init__(self, item_id: str) -> None:
        self.item_id = item_id
        self.input = {"axis": item_id.rsplit("|", 1)[-1]}


def test_top_and_default_pick_items_through_select_top(hf_run, fake_explainer, capsys):
    path, run_id = hf_run
    assert _run(["explain", run_id, "--top", "2", "--method", "feature_ablation", "--store", str(path)],
                capsys)[0] == 0
    assert fake_explainer["select_top"] == [2]
    assert len(fake_explainer["explain"][0][0]) == 2 and fake_explainer["explain"][0][1] == ["feature_ablation"]
    assert _run(["explain", run_id, "--suite", SUITE, "--method", "shapley_sampling", "--store", str(path)],
                capsys)[0] == 0
    assert fake_explainer["select_top"] == [2, 10]


def test_faithfulness_is_printed_and_stored(hf_run, fake_explainer, capsys):
    path, run_id = hf_run
    code, out, err = _run(["explain", run_id, "--top", "1", "--faithfulness", "--store", str(path)], capsys)
    assert code == 0, err
    assert "faithfulness" in out and "comprehensiveness_aopc" in out and "sufficiency_aopc" in out
    with Store(path, readonly=True) as st:
        s = st.explain_summary(run_id)
    assert [m.metric for m in s["faithfulness"]] == ["comprehensiveness_aopc", "sufficiency_aopc"]
    assert s["faithfulness"][0].value == 0.4 and s["faithfulness"][1].value != s["faithfulness"][1].value  # NaN


# --- JSON -----------------------------------------------------------------------------------------------------


def _validate(doc: dict) -> None:
    schema = json.loads(SCHEMA_FILE.read_text())
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(doc, schema)


def test_json_is_valid_against_the_schema(hf_run, fake_explainer, capsys):
    path, run_id = hf_run
    code, out, err = _run(["explain", run_id, "--top", "2", "--json", "--faithfulness", "--store", str(path)], capsys)
    assert code == 0, err
    doc = json.loads(out)
    _validate(doc)
    assert doc["schema"] == "auditlm.explain/1" and doc["run_id"] == run_id
    assert len(doc["items"]) == 2 * len(METHODS)
    item = doc["items"][0]
    # the fields, plus the feature kind, the granularity and the item's group
    assert set(item) == {"suite", "item_id", "method", "target", "features", "delta", "granularity", "group"}
    assert set(item["features"][0]) == {"text", "start", "end", "attribution", "kind"}
    assert item["granularity"] == "token" and set(item["group"]) == {"axis"}
    assert doc["faithfulness"][1]["value"] is None  # NaN is null: the output is strict JSON
    assert doc["group_share"][0]["group"] == "gender"
    jsonschema = pytest.importorskip("jsonschema")
    bad = dict(doc, items=[dict(item, method="saliency")])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, json.loads(SCHEMA_FILE.read_text()))
    # without --faithfulness the key is absent, and the document is still valid
    code, out, _ = _run(["explain", run_id, "--top", "1", "--json", "--store", str(path)], capsys)
    doc = json.loads(out)
    assert "faithfulness" not in doc
    _validate(doc)


# --- HTML -----------------------------------------------------------------------------------------------------


def test_html_is_self_contained_and_escaped(hf_run, fake_explainer, capsys, tmp_path: Path):
    path, run_id = hf_run
    page_path = tmp_path / "explain.html"
    code, _, err = _run(["explain", run_id, "--top", "2", "--faithfulness", "--html", str(page_path),
                         "--store", str(path)], capsys)
    assert code == 0, err
    page = page_path.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert HOSTILE not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "external resource"
    assert "@import" not in page and "url(" not in page
    spans = re.findall(r'<span class="feat" style="background:([^"]+)" title="([^"]+)" data-attribution="([^"]*)">',
                       page)
    assert len(spans) == 2 * len(METHODS) * 4  # four words per fake text
    colours = {c.split("(")[0] + ("+" if c.startswith("rgba(220") else "-") for c, _, a in spans if float(a or 0)}
    assert colours == {"rgba+", "rgba-"}  # positive red, negative blue
    zero = [c for c, _, a in spans if a and float(a) == 0]
    assert zero and all(c.endswith(",0.000)") for c in zero)
    assert "Faithfulness" in page and "comprehensiveness_aopc" in page and "group_term_share" in page


def test_html_heatmap_normalises_per_item():
    from auditlm.explain.report import to_html

    text = "a b"
    e = Explanation(SUITE, "i", "feature_ablation", Target("preference", 1.0), text,
                    [Feature("a", 0, 1, 100.0), Feature("b", 2, 3, -50.0)])
    f = Explanation(SUITE, "j", "feature_ablation", Target("preference", 1.0), text,
                    [Feature("a", 0, 1, 0.002), Feature("b", 2, 3, 0.001)])
    page = to_html("r", [e, f])
    alphas = re.findall(r"rgba\((\d+),\d+,\d+,([\d.]+)\)\" title", page)
    assert alphas == [("220", "0.850"), ("40", "0.425"), ("220", "0.850"), ("220", "0.425")]


# --- refusals before the model loads --------------------------------------------------------------------------


BAD = {
    "unknown run": (lambda rid, ids: ["explain", "nope"], "unknown run 'nope'"),
    "suite not in run": (lambda rid, ids: ["explain", rid, "--suite", "bias.crows_pairs"],
                         f"(valid: {SUITE})"),
    "item not stored": (lambda rid, ids: ["explain", rid, "--item", "no-such-item"], "item 'no-such-item'"),
    "bad method": (lambda rid, ids: ["explain", rid, "--method", "saliency"], "(valid: feature_ablation, "),
    "item and top": (lambda rid, ids: ["explain", rid, "--item", ids[0], "--top", "2"], "not both"),
    "top below one": (lambda rid, ids: ["explain", rid, "--top", "0"], "at least 1"),
    "bad flag": (lambda rid, ids: ["explain", rid, "--topk", "3"], "no such option --topk"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_input_is_refused_before_the_model_loads(case, hf_run, fake_explainer, capsys, tmp_path):
    path, run_id = hf_run
    argv, expected = BAD[case]
    before = _digest(path)
    html = tmp_path / "x.html"
    code, out, err = _run([*argv(run_id, _item_ids(path, run_id)), "--html", str(html), "--store", str(path)], capsys)
    assert code == 2, (code, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("auditlm: error: ") and expected in lines[0], err
    assert "Traceback" not in err and out == ""
    assert fake_explainer["resolve"] == [] and fake_explainer["explain"] == []
    assert _digest(path) == before and not html.exists()


def test_unexplainable_kind_lists_the_valid_kinds(hf_run, fake_explainer, capsys, monkeypatch):
    path, run_id = hf_run
    monkeypatch.setattr(sys.modules["auditlm.explain.methods"], "explainable_kinds", lambda: ("crows_pairs", "bbq"))
    before = _digest(path)
    for argv, expected in ((["--suite", SUITE], "cannot be explained (explainable kinds: bbq, crows_pairs)"),
                           ([], "has no explainable suite")):
        code, _, err = _run(["explain", run_id, *argv, "--store", str(path)], capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
    assert fake_explainer["resolve"] == [] and _digest(path) == before


def test_a_run_not_on_a_local_hf_model_cannot_be_explained(tmp_path, fake_explainer, capsys):
    path = write_fake_run(tmp_path / "runs.sqlite")  # the fake target: no weights
    with Store(path, readonly=True) as st:
        run_id = st.list_runs()[0].run_id
    before = _digest(path)
    code, _, err = _run(["explain", run_id, "--store", str(path)], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "cannot explain" in err and "has no gradients" in err and "ablation through an API is not offered" in err
    assert fake_explainer["resolve"] == [] and _digest(path) == before


def test_missing_store_is_refused_and_not_created(tmp_path, fake_explainer, capsys):
    path = tmp_path / "none.sqlite"
    code, _, err = _run(["explain", "r1", "--store", str(path)], capsys)
    assert code == 2 and "no run store" in err and not path.exists()


def test_a_different_model_is_refused_and_nothing_stored(hf_run, fake_explainer, capsys, monkeypatch):
    path, run_id = hf_run
    from auditlm.targets import registry

    monkeypatch.setattr(registry, "resolve", lambda spec, **kw: _Loaded("sha256:other"))
    before = _digest(path)
    code, _, err = _run(["explain", run_id, "--top", "1", "--store", str(path)], capsys)
    assert code == 2 and "now loads as revision sha256:other" in err, err
    assert _digest(path) == before


# --- migrations 5 and 6 ---------------------------------------------------------------------------------------


def _downgrade_to_4(path: Path) -> None:
    """What the same store looked like before migration 5 (migrations 1–4 are unchanged, so this is exactly a
    store written by an auditlm of schema 4)."""
    con = sqlite3.connect(path)
    con.executescript("BEGIN; DROP TABLE attributions; DROP TABLE explain_summaries; DROP TABLE signoffs; "
                      "PRAGMA user_version = 4; "
                      "COMMIT;")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()


def test_migration_6_keeps_schema_5_explanations_and_keys_by_granularity_and_group(tmp_path: Path):
    path = tmp_path / "five.sqlite"
    con = sqlite3.connect(path)
    for i, m in enumerate(MIGRATIONS[:5]):
        con.executescript("BEGIN;" + m + f"PRAGMA user_version = {i + 1};COMMIT;")
    con.execute("INSERT INTO explanations VALUES ('r', ?, 'i', 'feature_ablation', 'preference', 0.5, 'x', ?, NULL, "
                "0, 0.1, '{}', '2026-01-01T00:00:00Z')", (SUITE, json.dumps([{"text": "x", "start": 0, "end": 1,
                                                                               "attribution": 0.5, "kind": "token"}])))
    con.commit()
    con.close()
    with Store(path, readonly=True) as st:  # a reader of schema 5 (no granularity column) reads token rows
        assert [e.granularity for e in st.explanations("r")] == ["token"]
    with Store(path) as st:
        assert st.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 7
        old = st.explanations("r")
        assert [(e.item_id, e.granularity, e.target.value) for e in old] == [("i", "token", 0.5)]
        # the same item and method at the other granularity and for two group terms: four rows, none replaced
        more = [Explanation(SUITE, "i", "feature_ablation", Target("preference", 0.1 * k), "x",
                            [Feature("x", 0, 1, 0.1, "group_term")], group={"group": g}, granularity=gran)
                for k, (gran, g) in enumerate([("template", "a"), ("template", "b"), ("token", "a")])]
        st.write_explanations("r", more)
        got = st.explanations("r")
    assert len(got) == 4 and {(e.granularity, e.group.get("group")) for e in got} == {
        ("token", None), ("template", "a"), ("template", "b"), ("token", "a")}


def _dump(path: Path, run_id: str):
    with Store(path, readonly=True) as st:  # as JSON text: NaN metric values compare equal
        return json.dumps(([(r.run_id, r.status, r.config) for r in st.list_runs()], st.run_suites(run_id),
                           [(r.item_id, r.input, r.output, r.score) for r in st.items(run_id, SUITE)],
                           [m.to_dict() for m in st.metrics(run_id)]), sort_keys=True)


def test_migrations_5_and_6_upgrade_a_schema_4_store_in_place(hf_run, fake_explainer, capsys):
    path, run_id = hf_run
    _downgrade_to_4(path)
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == 4 == len(MIGRATIONS) - 3
    con.close()
    before = _digest(path)
    kept = _dump(path, run_id)
    with Store(path, readonly=True) as st:  # readers of the older schema cope with the missing tables
        assert st.explanations(run_id) == [] and st.explain_summary(run_id) == {}
    assert _digest(path) == before  # and never migrate it
    assert _run(["explain", run_id, "--top", "2", "--store", str(path)], capsys)[0] == 0
    con = sqlite3.connect(path)
    assert con.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 7
    assert con.execute("SELECT count(*) FROM attributions").fetchone()[0] == 2 * len(METHODS)
    con.close()
    assert _dump(path, run_id) == kept  # every run, suite, item and metric kept


def test_migrations_1_to_4_are_unchanged_and_5_and_6_apply_to_a_fresh_schema_4_store(tmp_path: Path):
    path = tmp_path / "old.sqlite"
    con = sqlite3.connect(path)
    for i, m in enumerate(MIGRATIONS[:4]):
        con.executescript("BEGIN;" + m + f"PRAGMA user_version = {i + 1};COMMIT;")
    con.close()
    with Store(path) as st:
        assert st.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        st.write_explanations("r", [Explanation(SUITE, "i", "feature_ablation", Target("preference", float("nan")),
                                                "x", [Feature("x", 0, 1, 1.5, "group_term")])])
        got = st.explanations("r")
    assert got[0].target.value != got[0].target.value and got[0].features == [Feature("x", 0, 1, 1.5, "group_term")]


def test_features_and_each_group_reach_the_explainer_and_a_bad_granularity_is_refused(hf_run, fake_explainer,
                                                                                    capsys):
    path, run_id = hf_run
    before = _digest(path)
    code, _, err = _run(["explain", run_id, "--features", "words", "--store", str(path)], capsys)
    assert code == 2 and "token, template" in err and "Traceback" not in err
    assert fake_explainer["resolve"] == [] and _digest(path) == before  # refused before the model loads
    code, _, err = _run(["explain", run_id, "--top", "2", "--features", "template", "--each-group",
                         "--store", str(path)], capsys)
    assert code == 0, err
    assert fake_explainer["explain_kw"][-1] == {"granularity": "template", "each_group": True}
