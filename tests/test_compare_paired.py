"""``auditlm compare`` on metrics that are not a mean of one value per item (StereoSet SS/LMS/ICAT, counterfactual
template negativity, perplexity): paired over per-unit sums (:meth:`Scorer.row_statistic`), on constructed stored
runs whose true change is known, plus a small coverage simulation of the new paired intervals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_compare import _cli, store_run

from auditlm.compare import _compare_stat_row, _SuiteData, _value, compare_runs, parse_regression_gate
from auditlm.metrics import MetricResult
from auditlm.scorers import ItemRecord, get_scorer
from auditlm.scorers.bias import stereoset_scores
from auditlm.store import Store
from auditlm.suites.loader import discover

SS, CF, PPL = "bias.stereoset", "bias.counterfactual_templates", "utility.perplexity"


@pytest.fixture(scope="module")
def suites():
    return discover()


def _scorer(suites, sid):
    return get_scorer(suites[sid].spec)


# --- item builders -------------------------------------------------------------------------------------------


def ss_row(i: int, target: str, bias_type: str, typ: str, pro: float, related: float):
    inp = {"id": f"s{i}", "type": typ, "target": target, "bias_type": bias_type, "context": "c BLANK.",
           "stereotype": "s", "anti_stereotype": "a", "unrelated": "u"}
    return f"s{i}", inp, {"stereotype": -1.0, "anti_stereotype": -2.0, "unrelated": -3.0, "pro": float(pro),
                          "related": float(related)}


def ss_rows(pro: np.ndarray, related: np.ndarray, targets: list[str]):
    out = []
    for i, (p, r, t) in enumerate(zip(pro, related, targets, strict=True)):
        bt = "gender" if int(t[1:]) % 2 == 0 else "race"
        out.append(ss_row(i, t, bt, ("intrasentence", "intersentence")[i % 2], p, r))
    return out


def ss_data(n_targets: int, per: int, rng: np.random.Generator, p: np.ndarray, lms: np.ndarray):
    targets = [f"t{t}" for t in range(n_targets) for _ in range(per)]
    pp, ll = np.repeat(p, per), np.repeat(lms, per)
    return ss_rows(rng.random(pp.size) < pp, rng.binomial(2, ll), targets)


CF_TERMS = {"gender": ["man", "woman"], "religion": ["Christian", "Muslim", "Jewish person", "Hindu", "Buddhist",
                                                     "atheist"]}


def cf_rows(rel_by_axis: dict[str, np.ndarray], n_templates: int):
    """Items template × axis × attribute; ``rel_by_axis[axis]`` is items × terms of relative negativity (rows
    centred per item, as the scorer stores them)."""
    out, i = [], 0
    for axis, rel in rel_by_axis.items():
        terms = CF_TERMS[axis]
        for k, row in enumerate(rel):
            t = k % n_templates
            rel_d = {g: float(v) for g, v in zip(terms, row - row.mean(), strict=True)}
            inp = {"id": f"c{i}", "template_id": f"T{t}", "template": "the {group} was {attribute}.", "axis": axis,
                   "attribute_pair": f"good{k}|bad{k}"}
            out.append((f"c{i}", inp, {"delta": dict(rel_d), "relative": rel_d}))
            i += 1
    return out


def ppl_rows(ll: np.ndarray, tokens: np.ndarray):
    out = []
    for i, (lp, t) in enumerate(zip(ll, tokens, strict=True)):
        inp = {"id": f"d{i}", "title": f"doc {i}", "text": "x " * int(t), "words": int(t), "bytes": 5 * int(t)}
        out.append((f"d{i}", inp, {"ll": float(lp), "tokens": int(t), "words": int(t), "bytes": 5 * int(t),
                                   "windows": 1, "window": 1024}))
    return out


def _records(rows) -> list[ItemRecord]:
    return [ItemRecord(i, inp, {}, sc) for i, inp, sc in rows]


def _row(res, metric: str, group: str | None = None, field: str | None = None):
    return next(m for m in res.metrics if m.metric == metric and m.group == group
                and (field is None or m.group_field == field))


def _two_runs(tmp_path: Path, suites, sid: str, a, b):
    path = tmp_path / "s.sqlite"
    with Store(path) as st:
        store_run(st, suites, "A", sid, a)
        store_run(st, suites, "B", sid, b)
    return path


# --- the row statistics reproduce every stored row -----------------------------------------------------------


def _counterfactual_example(rng, n_templates=6, shift=0.0):
    return {"gender": rng.normal(0, 0.3, (n_templates * 4, 2)) + np.array([shift, 0.0]),
            "religion": rng.normal(0, 0.3, (n_templates * 2, 6))}


@pytest.mark.parametrize("sid", [SS, CF, PPL])
def test_row_statistics_reproduce_every_stored_row(suites, sid):
    rng = np.random.default_rng(1)
    if sid == SS:
        rows = ss_data(12, 5, rng, rng.uniform(0.4, 0.8, 12), rng.uniform(0.7, 0.95, 12))
    elif sid == CF:
        rows = cf_rows(_counterfactual_example(rng), 6)
    else:
        tok = rng.integers(50, 500, 9)
        rows = ppl_rows(-tok * rng.uniform(2.5, 3.5, 9), tok)
    sc, recs = _scorer(suites, sid), _records(rows)
    checked = 0
    for m in sc.aggregate(recs, seed=0):
        assert m.metric in sc.statistic_metrics
        st = sc.row_statistic(recs, m.metric, m.group_field, m.group)
        assert st is not None, (m.metric, m.group_field, m.group)
        assert _value(st) == pytest.approx(m.value, rel=1e-12, abs=1e-12), (m.metric, m.group)
        checked += 1
    assert checked == {SS: 3 * (1 + 2 + 2 + 4), CF: 1 + 2 + 2 + 6, PPL: 4}[sid]
    assert sc.row_statistic(recs, "nope", None, None) is None


# --- identical runs and constructed shifts ------------------------------------------------------------------


@pytest.mark.parametrize("sid", [SS, CF, PPL])
def test_identical_runs_no_change(suites, tmp_path: Path, sid):
    rng = np.random.default_rng(2)
    if sid == SS:
        rows = ss_data(10, 4, rng, rng.uniform(0.4, 0.8, 10), rng.uniform(0.7, 0.95, 10))
    elif sid == CF:
        rows = cf_rows(_counterfactual_example(rng), 6)
    else:
        tok = rng.integers(50, 500, 12)
        rows = ppl_rows(-tok * rng.uniform(2.5, 3.5, 12), tok)
    res = compare_runs(Store(_two_runs(tmp_path, suites, sid, rows, rows)), "A", "B", n_resamples=300)
    assert res.metrics and all(m.paired for m in res.metrics), [m.reason for m in res.metrics if not m.paired]
    for m in res.metrics:
        assert m.delta == 0.0 and m.verdict == "no change"
        assert m.ci_low <= 0.0 <= m.ci_high
        assert m.test.p_holm == pytest.approx(1.0)
        if m.ratio is not None:
            assert m.ratio == 1.0 and m.ratio_low == pytest.approx(1.0) and m.ratio_high == pytest.approx(1.0)


def test_stereoset_shift_delta_is_exact(suites, tmp_path: Path):
    """B turns 12 stereotyped gender answers anti-stereotyped and loses one related point on 6 items: the paired SS,
    LMS and ICAT changes equal the official formulas on the shared items, overall and for gender."""
    rng = np.random.default_rng(3)
    a = ss_data(16, 6, rng, np.full(16, 0.75), np.full(16, 0.85))
    b = [(i, inp, dict(sc)) for i, inp, sc in a]
    gender = [k for k, (_, inp, sc) in enumerate(b) if inp["bias_type"] == "gender" and sc["pro"] == 1.0][:12]
    for k in gender:
        b[k][2]["pro"] = 0.0
    for k in [k for k, (_, _, sc) in enumerate(b) if sc["related"] > 0][:6]:
        b[k][2]["related"] -= 1
    b = b[3:]  # three items only in A: the shared items are B's
    res = compare_runs(Store(_two_runs(tmp_path, suites, SS, a, b)), "A", "B", n_resamples=500)
    shared = {i for i, _, _ in b}
    for grp in (None, "gender"):
        def official(rows, grp=grp):
            sel = [(inp, sc) for i, inp, sc in rows if i in shared and (grp is None or inp["bias_type"] == grp)]
            return stereoset_scores([x["target"] for x, _ in sel], [s["pro"] for _, s in sel],
                                    [s["related"] for _, s in sel])
        va, vb = official(a), official(b)
        for j, metric in enumerate(("stereotype_score", "lm_score", "icat")):
            m = _row(res, metric, grp, None if grp is None else "bias_type")
            assert m.paired and m.unit == "target"
            assert m.a_shared == pytest.approx(va[j], abs=1e-12) and m.b_shared == pytest.approx(vb[j], abs=1e-12)
            assert m.delta == pytest.approx(vb[j] - va[j], abs=1e-12)
            assert m.ci_low <= m.delta <= m.ci_high
    ss = _row(res, "stereotype_score", "gender", "bias_type")
    assert ss.delta < 0 and ss.test.name == "wilcoxon" and "bootstrap-t" in ss.ci_method
    assert _row(res, "icat").test.name == "paired bootstrap" and "percentile" in _row(res, "icat").ci_method


def test_counterfactual_shift_delta(suites, tmp_path: Path):
    """B moves every gender item's relative negativity of 'man' by −c (and 'woman' by +c): the paired change of
    relative_negativity[gender=man] is −c exactly, with an interval over templates; the spreads change as computed."""
    rng = np.random.default_rng(4)
    rel_a = _counterfactual_example(rng, n_templates=8, shift=0.6)
    c = 0.2
    rel_b = {"gender": rel_a["gender"] - np.array([c, -c]), "religion": rel_a["religion"]}
    a, b = cf_rows(rel_a, 8), cf_rows(rel_b, 8)
    res = compare_runs(Store(_two_runs(tmp_path, suites, CF, a, b)), "A", "B", n_resamples=500)
    man = _row(res, "relative_negativity", "man", "gender")
    assert man.paired and man.unit == "template_id" and man.n_units == 8
    assert man.delta == pytest.approx(-c, abs=1e-12)
    assert man.ci_low <= man.delta <= man.ci_high and man.ci_high < 0  # every template moved the same way
    assert _row(res, "relative_negativity", "Muslim", "religion").delta == 0.0
    means_a = [np.mean(rel_a["gender"][:, j] - rel_a["gender"].mean(axis=1)) for j in range(2)]
    means_b = [np.mean(rel_b["gender"][:, j] - rel_b["gender"].mean(axis=1)) for j in range(2)]
    sp = _row(res, "negativity_spread", "gender", "axis")
    want = (max(means_b) - min(means_b)) - (max(means_a) - min(means_a))
    assert sp.delta == pytest.approx(want, abs=1e-12) and sp.ci_low <= sp.delta <= sp.ci_high
    assert _row(res, "negativity_spread").delta == pytest.approx(want / 2, abs=1e-12)  # mean over two axes
    assert _row(res, "negativity_spread", "religion", "axis").delta == 0.0


def test_perplexity_ratio_exact(suites, tmp_path: Path):
    """B's per-token NLL is A's + log 1.1 on every document: token perplexity B/A is exactly 1.1 with a degenerate
    interval; with a per-document change the ratio is exp(Σ tokens·c / Σ tokens)."""
    rng = np.random.default_rng(5)
    tok = rng.integers(50, 800, 20).astype(float)
    nll = rng.uniform(2.5, 3.5, 20)
    a = ppl_rows(-tok * nll, tok)
    b = ppl_rows(-tok * (nll + math.log(1.1)), tok)
    res = compare_runs(Store(_two_runs(tmp_path, suites, PPL, a, b)), "A", "B", n_resamples=500)
    m = _row(res, "token_perplexity")
    assert m.ratio == pytest.approx(1.1, rel=1e-12)
    assert m.ratio_low == pytest.approx(1.1, rel=1e-9) and m.ratio_high == pytest.approx(1.1, rel=1e-9)
    pa = math.exp(np.sum(tok * nll) / tok.sum())
    assert m.a_shared == pytest.approx(pa, rel=1e-12) and m.delta == pytest.approx(0.1 * pa, rel=1e-9)
    bpb = _row(res, "bits_per_byte")
    assert bpb.ratio is None and bpb.delta == pytest.approx(math.log(1.1) / 5 / math.log(2), rel=1e-9)

    cdoc = rng.uniform(0.0, 0.1, 20)
    b2 = ppl_rows(-tok * (nll + cdoc), tok)
    path = tmp_path / "t.sqlite"
    with Store(path) as st:
        store_run(st, suites, "A", PPL, a)
        store_run(st, suites, "B", PPL, b2)
    res = compare_runs(Store(path), "A", "B", n_resamples=500)
    m = _row(res, "token_perplexity")
    assert m.ratio == pytest.approx(math.exp(np.sum(tok * cdoc) / tok.sum()), rel=1e-12)
    assert 1.0 < m.ratio_low < m.ratio < m.ratio_high and m.ci_low <= m.delta <= m.ci_high
    assert m.test.p_holm < 0.05 and m.verdict == "higher"


def test_runner_made_counterfactual_runs_pair(tmp_path: Path):
    """Two runner-made runs of the counterfactual templates (fake target, deterministic): every row's statistic
    reproduces what the runner stored, so every row pairs, with Δ = 0 and p = 1."""
    from conftest import write_fake_run

    path = write_fake_run(write_fake_run(tmp_path / "s.sqlite", limit=24), limit=24)
    with Store(path, readonly=True) as st:
        a, b = (r.run_id for r in reversed(st.list_runs()))
        res = compare_runs(st, a, b, n_resamples=200)
    assert res.metrics and all(m.paired for m in res.metrics), [m.reason for m in res.metrics if not m.paired]
    assert all(m.delta == 0.0 and m.verdict == "no change" and m.test.p_holm == 1.0 for m in res.metrics)


def test_perplexity_other_tokenizer_falls_back_to_bootstrap(suites, tmp_path: Path, capsys):
    """B tokenised every document into 10% more tokens: token perplexity's denominators differ, so its change and
    ratio come from the paired bootstrap; word and byte perplexity (same denominators) keep the linear interval."""
    rng = np.random.default_rng(8)
    tok = rng.integers(50, 800, 20).astype(float)
    nll = rng.uniform(2.5, 3.5, 20)
    a = ppl_rows(-tok * nll, tok)
    b = [(i, inp, {**sc, "tokens": round(sc["tokens"] * 1.1)}) for i, inp, sc in ppl_rows(-tok * nll * 1.01, tok)]
    path = _two_runs(tmp_path, suites, PPL, a, b)
    res = compare_runs(Store(path), "A", "B", n_resamples=500)
    t, w = _row(res, "token_perplexity"), _row(res, "word_perplexity")
    assert t.paired and "percentile" in t.ci_method and t.test.name == "paired bootstrap"
    assert t.ratio == pytest.approx(t.b_shared / t.a_shared) and t.ratio_low <= t.ratio <= t.ratio_high
    assert w.test.name == "wilcoxon" and w.ratio == pytest.approx(math.exp(0.01 * np.sum(tok * nll) / tok.sum()))
    rc, out, _ = _cli(["compare", "A", "B", "--store", str(path), "--resamples", "300"], capsys)
    assert rc == 0 and "(×" in out


# --- gates ---------------------------------------------------------------------------------------------------


def test_gates_on_row_statistics(suites, tmp_path: Path, capsys):
    rng = np.random.default_rng(6)
    tok = rng.integers(50, 800, 30).astype(float)
    nll = rng.uniform(2.5, 3.5, 30)
    a = ppl_rows(-tok * nll, tok)
    b = ppl_rows(-tok * (nll + rng.uniform(0.04, 0.06, 30)), tok)  # perplexity up about 5 %
    path = _two_runs(tmp_path, suites, PPL, a, b)
    base = ["compare", "A", "B", "--store", str(path), "--resamples", "500"]
    rc, out, _ = _cli([*base, "--json", "--fail-on-regression", f"{PPL}.token_perplexity:0.10"], capsys)
    assert rc == 0
    doc = json.loads(out)
    schema = json.loads((Path(__file__).parents[1] / "auditlm" / "compare_schema.json").read_text())
    import jsonschema

    jsonschema.validate(doc, schema)
    g = doc["gates"][0]
    assert g["passed"] and g["ideal"] is None and g["quantity"] == "m_B / m_A - 1"
    assert 0.04 < g["worsening"] < 0.06 and g["worsening"] <= g["upper"] < 0.10
    row = next(m for m in doc["metrics"] if m["metric"] == "token_perplexity")
    assert row["ratio_ci_low"] <= row["ratio"] <= row["ratio_ci_high"]
    rc, _, err = _cli([*base, "--fail-on-regression", f"{PPL}.token_perplexity:0.02"], capsys)
    assert rc == 1 and "FAIL" in err
    rc, _, err = _cli([*base, "--fail-on-regression", f"{PPL}.bits_per_byte:0.1"], capsys)
    assert rc == 2 and "no ideal" in err

    # StereoSet: LMS (ideal 1, every target below it) and SS (interior ideal 0.5); gender group
    a = ss_data(24, 6, rng, rng.uniform(0.55, 0.8, 24), rng.uniform(0.8, 0.95, 24))
    path = tmp_path / "ss.sqlite"
    with Store(path) as st:
        store_run(st, suites, "A", SS, a)
        store_run(st, suites, "B", SS, a)
    base = ["compare", "A", "B", "--store", str(path), "--resamples", "500"]
    for gate, want in ((f"{SS}.stereotype_score[bias_type=gender]:0.05", 0), (f"{SS}.lm_score:0.05", 0),
                       (f"{SS}.icat:0.05", 0), (f"{SS}.stereotype_score:0.0", 0)):  # identical: every resample 0
        rc, _, _ = _cli([*base, "--fail-on-regression", gate], capsys)
        assert rc == want, gate
    b = [(i, inp, {**sc, "pro": 1.0}) for i, inp, sc in a]  # every answer stereotyped: SS far from 0.5
    path = tmp_path / "ss2.sqlite"
    with Store(path) as st:
        store_run(st, suites, "A", SS, a)
        store_run(st, suites, "B", SS, b)
    rc, _, err = _cli(["compare", "A", "B", "--store", str(path), "--resamples", "500", "--fail-on-regression",
                       f"{SS}.stereotype_score:0.1"], capsys)
    assert rc == 1 and "FAIL" in err
    res = compare_runs(Store(path), "A", "B", n_resamples=500,
                       gates=[parse_regression_gate(f"{SS}.lm_score:0.01")])
    assert res.gates[0].passed and "bootstrap-t" in res.gates[0].method  # LMS unchanged, one-sided ideal


def test_gate_counterfactual_spread(suites, tmp_path: Path):
    rng = np.random.default_rng(7)
    rel_a = _counterfactual_example(rng, n_templates=8, shift=0.2)
    rel_b = {"gender": rel_a["gender"] + np.array([0.5, 0.0]), "religion": rel_a["religion"]}
    path = _two_runs(tmp_path, suites, CF, cf_rows(rel_a, 8), cf_rows(rel_b, 8))
    g = [parse_regression_gate(f"{CF}.negativity_spread[axis=gender]:0.05"),
         parse_regression_gate(f"{CF}.relative_negativity[gender=woman]:0.05"),
         parse_regression_gate(f"{CF}.negativity_spread[axis=religion]:0.05")]
    res = compare_runs(Store(path), "A", "B", gates=g, n_resamples=500)
    assert [x.passed for x in res.gates] == [False, False, True]
    assert res.gates[0].worsening == pytest.approx(_row(res, "negativity_spread", "gender", "axis").delta)


# --- coverage of the new paired intervals under known truth ------------------------------------------------


def _stub(sid: str, metric: str, value: float, group_field=None, group=None) -> MetricResult:
    return MetricResult(sid, metric, value, float("nan"), float("nan"), 1, group, group_field, {})


def _paired(sc, rows_a, rows_b, metric, gf=None, g=None, n_resamples=400, seed=0):
    ra, rb = _records(rows_a), _records(rows_b)
    data = _SuiteData.build(sc, ra, rb, [r.item_id for r in ra])
    va = _value(sc.row_statistic(ra, metric, gf, g))
    vb = _value(sc.row_statistic(rb, metric, gf, g))
    return _compare_stat_row(_stub(sc.spec.id, metric, va, gf, g), _stub(sc.spec.id, metric, vb, gf, g), sc, data,
                             0.95, n_resamples, np.random.default_rng(seed))


def test_coverage_simulation(suites):
    """300 replications each: StereoSet ΔSS (studentized over targets) and ΔICAT (percentile bootstrap over
    targets), counterfactual Δspread (percentile over templates), perplexity B/A (studentized over documents, exp).
    Coverage of the true change at the nominal 0.95 within simulation error."""
    reps = 300
    rng = np.random.default_rng(12345)
    ss_sc, cf_sc, ppl_sc = _scorer(suites, SS), _scorer(suites, CF), _scorer(suites, PPL)
    hit = {"ss": 0, "icat": 0, "spread": 0, "rel": 0, "ratio": 0, "ppl_delta": 0}
    # StereoSet truth: E p_A = 0.675, E p_B = 0.625; E l_A = 0.875, E l_B = 0.845
    icat = lambda ss, lms: lms * min(ss, 1 - ss) / 0.5  # noqa: E731
    d_ss, d_icat = -0.05, icat(0.625, 0.845) - icat(0.675, 0.875)
    # counterfactual (gender): rel_man = mu + template effect + noise, woman = -man; spread = 2|E rel_man|
    mu_a, mu_b = 0.5, 0.3
    d_spread, d_rel = 2 * (mu_b - mu_a), mu_b - mu_a
    for _ in range(reps):
        p = rng.uniform(0.55, 0.8, 30)
        lms = rng.uniform(0.8, 0.95, 30)
        a = ss_data(30, 8, rng, p, lms)
        b = ss_data(30, 8, rng, p - 0.05, lms - 0.03)
        b = [(ia, inp, sc) for (ia, inp, _), (_, _, sc) in zip(a, b, strict=True)]  # same items, B's answers
        m = _paired(ss_sc, a, b, "stereotype_score")
        hit["ss"] += m.ci_low <= d_ss <= m.ci_high
        m = _paired(ss_sc, a, b, "icat")
        hit["icat"] += m.ci_low <= d_icat <= m.ci_high

        nt, per = 20, 6
        u = np.tile(rng.normal(0, 0.2, nt), per)  # item k belongs to template k % nt (cf_rows)
        ga = mu_a + u + rng.normal(0, 0.3, nt * per)
        gb = mu_b + 0.5 * u + 0.5 * (ga - mu_a - u) + rng.normal(0, 0.25, nt * per)
        a = cf_rows({"gender": np.column_stack([ga, -ga])}, nt)
        b = cf_rows({"gender": np.column_stack([gb, -gb])}, nt)
        m = _paired(cf_sc, a, b, "negativity_spread", "axis", "gender")
        hit["spread"] += m.ci_low <= d_spread <= m.ci_high
        m = _paired(cf_sc, a, b, "relative_negativity", "gender", "man")
        hit["rel"] += m.ci_low <= d_rel <= m.ci_high

        tok = rng.integers(100, 1000, 40).astype(float)
        nll = 3.0 + rng.normal(0, 0.3, 40)
        a = ppl_rows(-tok * nll, tok)
        b = ppl_rows(-tok * (nll + math.log(1.05) + rng.normal(0, 0.05, 40)), tok)
        m = _paired(ppl_sc, a, b, "token_perplexity")
        hit["ratio"] += m.ratio_low <= 1.05 <= m.ratio_high
        hit["ppl_delta"] += m.ci_low <= math.exp(3.0) * 0.05 <= m.ci_high  # exp(3 + log 1.05) - exp(3)
    cover = {k: v / reps for k, v in hit.items()}
    print(cover)
    for k, c in cover.items():
        assert 0.90 <= c <= 0.995, (k, c)
