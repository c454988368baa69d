"""``auditlm compare``: paired comparison of two stored runs, built through the Store API with known item scores
(metrics computed by each suite's own aggregate), so every expected change is known exactly."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from auditlm.compare import SCHEMA, compare_runs, parse_regression_gate
from auditlm.errors import GateError, StoreError, SuiteSpecError
from auditlm.scorers import ItemRecord, get_scorer
from auditlm.store import Store
from auditlm.suites.loader import discover

CROWS, BBQ, WINO, PII = "bias.crows_pairs", "bias.bbq", "bias.winobias", "privacy.pii_emission"


@pytest.fixture(scope="module")
def suites():
    return discover()


def _scorer(suites, sid):
    return get_scorer(suites[sid].spec)


def store_run(st: Store, suites, run_id: str, sid: str, rows: list[tuple[str, dict, dict]], *, model: str = "fake",
              version: str | None = None, digest: str = "d0") -> None:
    """A complete run of ``sid`` holding ``rows`` (item id, input, score), its metrics from the suite's aggregate."""
    spec = suites[sid].spec
    st.create_run(run_id=run_id, model=model, model_info={}, config={"model": model, "suites": [sid]}, seed=0,
                  auditlm_version="test", git_hash=None)
    st.upsert_suite(run_id, sid, version=version or spec.version, digest=digest, position=0, n_items=len(rows),
                    status="complete")
    st.write_items(run_id, sid, [(iid, i, inp, {}, sc) for i, (iid, inp, sc) in enumerate(rows)])
    st.replace_metrics(run_id, sid, _scorer(suites, sid).aggregate(st.items(run_id, sid), seed=0))
    st.set_run_status(run_id, "complete")


def crows_row(i: int, stereo: bool, diff: float, bias_type: str) -> tuple[str, dict, dict]:
    lm, ll = (-10.0, -10.0 - diff) if stereo else (-10.0 - diff, -10.0)
    inp = {"id": f"p{i}", "sent_more": f"more {i}", "sent_less": f"less {i}", "bias_type": bias_type}
    return f"p{i}", inp, {"ll_more": lm, "ll_less": ll, "stereotype": float(lm > ll), "likelihood_diff": abs(lm - ll)}


def crows_runs(n: int, *, flip_down: set[int] = frozenset(), flip_up: set[int] = frozenset(), seed: int = 0):
    """A's pairs (half stereotyped, bias types alternating) and B's, with ``flip_down`` pairs turned from
    stereotyped to not and ``flip_up`` pairs the other way."""
    rng = np.random.default_rng(seed)
    a, b = [], []
    for i in range(n):
        bt = ("gender", "race")[i % 2]
        st = i % 4 < 2
        d = float(rng.uniform(0.1, 3.0))
        a.append(crows_row(i, st, d, bt))
        st_b = (False if i in flip_down else st) if st else (i in flip_up)
        b.append(crows_row(i, st_b, d, bt))
    return a, b


def _row(res, metric: str, group: str | None = None):
    return next(m for m in res.metrics if m.metric == metric and m.group == group)


# --- item values reproduce the stored metrics ----------------------------------------------------------------


def _records(rows) -> list[ItemRecord]:
    return [ItemRecord(i, inp, {}, sc) for i, inp, sc in rows]


def _check_item_values(scorer, records, metrics, expect_paired: set[str]):
    """Every overall row named in item_values, and every group row whose field is an item field, is the mean of
    the item values (NaN = left out) over its records."""
    vals = scorer.item_values(records)
    assert set(vals) == expect_paired and set(scorer.item_values([])) == expect_paired
    checked = 0
    for m in metrics:
        if m.metric not in vals:
            continue
        v = vals[m.metric]
        if m.group is None:
            mask = np.ones(len(records), bool)
        elif all(m.group_field in r.input for r in records):
            mask = np.array([str(r.input[m.group_field]) == m.group for r in records])
        else:
            continue
        sel = v[mask & np.isfinite(v)]
        assert sel.mean() == pytest.approx(m.value, abs=1e-12), (m.metric, m.group)
        checked += 1
    return checked


def test_item_values_crows(suites):
    a, _ = crows_runs(14)
    recs = _records(a)
    sc = _scorer(suites, CROWS)
    assert _check_item_values(sc, recs, sc.aggregate(recs, seed=0), {"pct_stereotype", "likelihood_diff"}) == 6


def test_item_values_crows_tie_is_not_stereotyped(suites):
    """A tie (ll_more == ll_less) counts 0, as the scorer's strict ``>``."""
    _, inp, _ = crows_row(0, True, 1.0, "gender")
    score = {"ll_more": -5.0, "ll_less": -5.0, "stereotype": 0.0, "likelihood_diff": 0.0}
    sc = _scorer(suites, CROWS)
    assert sc.item_values([ItemRecord("p0", inp, {}, score)])["pct_stereotype"].tolist() == [0.0]
    assert sc.aggregate([ItemRecord("p0", inp, {}, score)], seed=0)[0].value == 0.0


def bbq_rows(n: int, wrong: set[int] = frozenset()) -> list[tuple[str, dict, dict]]:
    rows = []
    for i in range(n):
        inp = {"id": f"q{i}", "category": ("age", "gender")[i % 2], "context_condition": ("ambig", "disambig")[(i // 2) % 2],
               "template": f"t{i // 4}", "context": "c", "question": "q", "ans0": "a", "ans1": "b", "ans2": "u",
               "unknown": 2, "label": 2 if (i // 2) % 2 == 0 else 0, "biased": [0]}
        correct = float(i % 3 != 0 and i not in wrong)
        rows.append((f"q{i}", inp, {"pred": 0, "answer": 0, "correct": correct, "biased": float(i % 10 == 0),
                                    "non_unknown": float(i % 2 == 0)}))
    return rows


def test_item_values_bbq(suites):
    recs = _records(bbq_rows(24))
    sc = _scorer(suites, BBQ)
    metrics = sc.aggregate(recs, seed=0)
    # overall and per category, for accuracy, accuracy_amb, accuracy_disamb
    assert _check_item_values(sc, recs, metrics, {"accuracy", "accuracy_amb", "accuracy_disamb"}) == 9


def wino_rows(n: int, pro_wrong: set[int] = frozenset()) -> list[tuple[str, dict, dict]]:
    rows = []
    for i in range(n):
        pro, anti = float(i not in pro_wrong and i % 5 != 0), float(i % 3 == 0)
        ll = {"pro_gold": -1.0, "pro_other": -2.0 if pro else -0.5, "anti_gold": -1.0,
              "anti_other": -2.0 if anti else -0.5}
        inp = {"id": f"w{i}", "type": ("type1", "type2")[i % 2], "pro": {}, "anti": {}}
        rows.append((f"w{i}", inp, {"pro": pro, "anti": anti, "ll": ll}))
    return rows


def test_item_values_winobias_pair_mean_is_line_accuracy(suites):
    recs = _records(wino_rows(15))
    sc = _scorer(suites, WINO)
    metrics = sc.aggregate(recs, seed=0)
    # accuracy overall (set/stereotype rows are not item fields); the gaps are means over pairs, overall and
    # per type (3 rows each)
    assert _check_item_values(sc, recs, metrics, {"accuracy", "pro_anti_gap", "margin_gap"}) == 7


def pii_rows(n: int, leak: set[int] = frozenset()) -> list[tuple[str, dict, dict]]:
    rows = []
    for i in range(n):
        produced = ["EMAIL_ADDRESS"] if (i % 4 == 0 or i in leak) else []
        rows.append((f"x{i}", {"id": f"x{i}", "prompt": "p", "category": ("contact", "finance")[i % 2],
                               "template": f"t{i // 3}", "entity": "EMAIL_ADDRESS"},
                     {"produced": produced, "copied": ["PERSON"] if i % 5 == 0 else [],
                      "produced_validated": produced if i % 8 == 0 else [], "detector": "x"}))
    return rows


def test_item_values_pii(suites):
    recs = _records(pii_rows(24))
    sc = _scorer(suites, PII)
    metrics = sc.aggregate(recs, seed=0)
    # emission_rate overall + 2 categories, copy_rate, validated_emission_rate
    assert _check_item_values(sc, recs, metrics, {"emission_rate", "copy_rate", "validated_emission_rate"}) == 5


def test_item_values_mismatch_is_not_paired(suites, tmp_path: Path, monkeypatch):
    """Item values that do not reproduce the stored number are refused, not compared."""
    a, b = crows_runs(12)
    with Store(tmp_path / "s.sqlite") as st:
        store_run(st, suites, "A", CROWS, a)
        store_run(st, suites, "B", CROWS, b)
        from auditlm.scorers.bias import CrowsPairsScorer

        orig = CrowsPairsScorer.item_values
        monkeypatch.setattr(CrowsPairsScorer, "item_values",
                            lambda self, recs: {k: v * 0.5 for k, v in orig(self, recs).items()})
        res = compare_runs(st, "A", "B")
    m = _row(res, "pct_stereotype")
    assert not m.paired and "do not reproduce" in m.reason


# --- known changes ----------------------------------------------------------------------------------------


def test_k_flips_delta_interval_and_mcnemar(suites, tmp_path: Path):
    from scipy.stats import binomtest
    from statsmodels.stats.multitest import multipletests

    n, down, up = 40, {0, 4, 8, 12, 16, 20}, {2, 3}  # 6 stereotyped pairs flip down, 2 flip up
    a, b = crows_runs(n, flip_down=down, flip_up=up)
    with Store(tmp_path / "s.sqlite") as st:
        store_run(st, suites, "A", CROWS, a)
        store_run(st, suites, "B", CROWS, b)
        res = compare_runs(st, "A", "B")
    m = _row(res, "pct_stereotype")
    assert m.paired and m.n_shared == n and m.binary
    assert m.delta == pytest.approx((len(up) - len(down)) / n, abs=1e-15)
    assert m.ci_low <= m.delta <= m.ci_high
    assert m.test.p == pytest.approx(binomtest(len(up), len(up) + len(down), 0.5).pvalue, rel=1e-12)
    # per group: gender pairs are the even ids
    g = _row(res, "pct_stereotype", "gender")
    d_g, u_g = sum(i % 2 == 0 for i in down), sum(i % 2 == 0 for i in up)
    assert g.delta == pytest.approx((u_g - d_g) / (n / 2), abs=1e-15)
    assert g.test.p == pytest.approx(binomtest(u_g, u_g + d_g, 0.5).pvalue, rel=1e-12)
    # likelihood_diff is unchanged by the flips (same |difference|): an exact zero
    ld = _row(res, "likelihood_diff")
    assert ld.paired and ld.delta == 0.0 and not ld.binary and ld.test.name == "wilcoxon"
    # Holm across every paired row, against statsmodels directly
    paired = [x for x in res.metrics if x.paired]
    ref = multipletests([x.test.p for x in paired], method="holm")[1]
    for x, r in zip(paired, ref, strict=True):
        assert x.test.p_holm == pytest.approx(r) and x.test.p_holm >= x.test.p
        assert x.test.family_size == len(paired)


def test_identical_runs(suites, tmp_path: Path):
    a, _ = crows_runs(20)
    with Store(tmp_path / "s.sqlite") as st:
        store_run(st, suites, "A", CROWS, a)
        store_run(st, suites, "B", CROWS, a, model="other-model")
        res = compare_runs(st, "A", "B", gates=[parse_regression_gate(f"{CROWS}.pct_stereotype:0")])
    for m in res.metrics:
        assert m.paired and m.delta == 0.0 and m.test.p == 1.0 and m.verdict == "no change"
    ld = _row(res, "likelihood_diff")
    assert (ld.ci_low, ld.ci_high) == (0.0, 0.0) and "degenerate" in ld.note
    # interior ideal: every resample has both runs at the same distance from 0.5 — worsening 0, bound 0
    (g,) = res.gates
    assert g.worsening == 0.0 and g.upper == 0.0 and g.passed
    assert res.items[CROWS].shared == 20 and res.items[CROWS].only_a == res.items[CROWS].only_b == 0
    assert not res.warnings


def test_items_only_in_one_run(suites, tmp_path: Path):
    a, b = crows_runs(20, flip_down={0})
    b = [*b[3:], crows_row(100, True, 1.0, "gender"), crows_row(101, True, 1.0, "race")]
    with Store(tmp_path / "s.sqlite") as st:
        store_run(st, suites, "A", CROWS, a)
        store_run(st, suites, "B", CROWS, b)
        res = compare_runs(st, "A", "B")
    it = res.items[CROWS]
    assert (it.shared, it.only_a, it.only_b) == (17, 3, 2)
    m = _row(res, "pct_stereotype")
    shared_a = [float(sc["stereotype"]) for i, _, sc in a[3:]]
    shared_b = [float(sc["stereotype"]) for i, _, sc in b[:17]]
    assert m.n_shared == 17 and m.a_shared == pytest.approx(np.mean(shared_a)) and m.b_shared == pytest.approx(np.mean(shared_b))
    assert m.a.value == pytest.approx(np.mean([sc["stereotype"] for _, _, sc in a]))
    assert m.delta == pytest.approx(m.b_shared - m.a_shared)


def test_clustered_suite_pairs_by_template(suites, tmp_path: Path):
    """BBQ resamples templates: the interval rests on templates and the test is Wilcoxon on template means."""
    wrong = {1, 2, 5, 7, 10, 11, 13, 14, 17, 19, 22, 23}
    with Store(tmp_path / "s.sqlite") as st:
        store_run(st, suites, "A", BBQ, bbq_rows(48))
        store_run(st, suites, "B", BBQ, bbq_rows(48, wrong=wrong))
        res = compare_runs(st, "A", "B")
    m = _row(res, "accuracy")
    a, b = bbq_rows(48), bbq_rows(48, wrong=wrong)
    lost = sum(x[2]["correct"] - y[2]["correct"] for x, y in zip(a, b, strict=True))
    assert m.paired and m.unit == "template" and m.n_units == 12 and m.test.name == "wilcoxon"
    assert m.delta == pytest.approx(-lost / 48)
    assert m.ci_low <= m.delta <= m.ci_high
    amb = _row(res, "accuracy_amb")
    assert amb.paired and amb.n_shared == 24
    # bias scores are not means of an item value: compared on the stored numbers, unpaired
    bs = _row(res, "disamb_bias_score")
    assert not bs.paired and bs.reason and bs.delta == pytest.approx(bs.b.value - bs.a.value)
    assert bs.verdict == "not paired"


# --- gates -------------------------------------------------------------------------------------------------


def test_gate_boundary_ideal_accuracy(suites, tmp_path: Path):
    """Accuracy (ideal 1, every item value <= 1): the worsening is −Δ, bounded by the paired interval."""
    from auditlm import stats

    wrong = set(range(1, 60, 5))  # 12 pro lines turned wrong where they were right
    a, b = wino_rows(60), wino_rows(60, pro_wrong=wrong)
    with Store(tmp_path / "s.sqlite") as st:
        store_run(st, suites, "A", WINO, a)
        store_run(st, suites, "B", WINO, b)
        res = compare_runs(st, "A", "B", gates=[parse_regression_gate(f"{WINO}.accuracy:0.5"),
                                                parse_regression_gate(f"{WINO}.accuracy:0.001")])
    m = _row(res, "accuracy")
    lost = sum(x[2]["pro"] - y[2]["pro"] for x, y in zip(a, b, strict=True)) / 2
    assert m.delta == pytest.approx(-lost / 60)
    loose, tight = res.gates
    assert loose.worsening == pytest.approx(lost / 60) and loose.passed and not tight.passed
    # the one-sided 95% bound is the upper end of the two-sided 90% interval of −Δ, wider than the point
    ref = stats.mean(m._x - m._y, confidence=0.90, n_resamples=2000, random_state=0)
    assert loose.upper > loose.worsening and loose.upper == pytest.approx(ref.high, rel=0.1)


def test_gate_interior_ideal_direction(suites, tmp_path: Path):
    """pct_stereotype (ideal 0.5): A at 0.5; B moving to 0.8 is worse, whichever side."""
    n = 40
    a, _ = crows_runs(n)
    up = {i for i in range(n) if i % 4 >= 2 and i < 24}  # 12 unstereotyped pairs become stereotyped
    _, b = crows_runs(n, flip_up=up)
    with Store(tmp_path / "s.sqlite") as st:
        store_run(st, suites, "A", CROWS, a)
        store_run(st, suites, "B", CROWS, b)
        res = compare_runs(st, "A", "B", gates=[parse_regression_gate(f"{CROWS}.pct_stereotype:0.05")])
        rev = compare_runs(st, "B", "A", gates=[parse_regression_gate(f"{CROWS}.pct_stereotype:0.05")])
    (g,) = res.gates
    assert g.worsening == pytest.approx(0.3) and g.upper >= g.worsening and not g.passed
    assert _row(res, "pct_stereotype").verdict == "worse"
    (r,) = rev.gates  # going back to 0.5 is an improvement: worsening −0.3, passes
    assert r.worsening == pytest.approx(-0.3) and r.upper < 0.05 and r.passed
    assert _row(rev, "pct_stereotype").verdict == "better"


def test_parse_regression_gate():
    g = parse_regression_gate("bias.crows_pairs.pct_stereotype[bias_type=race]:0.02")
    assert (g.path, g.group_field, g.group, g.margin) == ("bias.crows_pairs.pct_stereotype", "bias_type", "race", 0.02)
    for bad in ("bias.crows_pairs.pct_stereotype", "bias.crows_pairs.pct_stereotype:-0.1", "x:0.1",
                "bias.crows_pairs.pct_stereotype:abc", "bias.crows_pairs.pct_stereotype[]:0.1"):
        with pytest.raises(GateError):
            parse_regression_gate(bad)


def test_bad_input_errors(suites, tmp_path: Path):
    a, b = crows_runs(8)
    with Store(tmp_path / "s.sqlite") as st:
        store_run(st, suites, "A", CROWS, a)
        store_run(st, suites, "B", CROWS, b)
        store_run(st, suites, "W", WINO, wino_rows(6))
        with pytest.raises(GateError, match=r"valid: .*pct_stereotype"):
            compare_runs(st, "A", "B", gates=[parse_regression_gate(f"{CROWS}.nope:0.1")])
        with pytest.raises(GateError, match="no ideal"):
            compare_runs(st, "A", "B", gates=[parse_regression_gate(f"{CROWS}.likelihood_diff:0.1")])
        with pytest.raises(GateError, match="names no suite both runs have"):
            compare_runs(st, "A", "B", gates=[parse_regression_gate("bias.bbq.accuracy:0.1")])
        with pytest.raises(SuiteSpecError, match=r"valid: bias\.crows_pairs"):
            compare_runs(st, "A", "B", suites=["bias.bbq"])
        with pytest.raises(StoreError, match="share no suite"):
            compare_runs(st, "A", "W")
        with pytest.raises(StoreError, match="unknown run"):
            compare_runs(st, "A", "nope")


def test_warns_on_different_suite_version_and_digest(suites, tmp_path: Path):
    a, _ = crows_runs(8)
    with Store(tmp_path / "s.sqlite") as st:
        store_run(st, suites, "A", CROWS, a)
        store_run(st, suites, "B", CROWS, a, version="0.9", digest="d1")
        res = compare_runs(st, "A", "B")
    text = " ".join(res.warnings)
    assert "suite version" in text and "items digest" in text


def test_metrics_in_one_run_only_are_listed(suites, tmp_path: Path):
    a, b = crows_runs(12)
    b = [*b, crows_row(50, True, 1.0, "age"), crows_row(51, False, 1.0, "age")]
    with Store(tmp_path / "s.sqlite") as st:
        store_run(st, suites, "A", CROWS, a)
        store_run(st, suites, "B", CROWS, b)
        res = compare_runs(st, "A", "B")
    assert not res.metrics_only_a
    assert {(m, g) for _, m, _, g in res.metrics_only_b} == {("pct_stereotype", "age"), ("likelihood_diff", "age")}


# --- runs made by the runner (fake target, no model) ---------------------------------------------------------


def test_runner_runs_without_item_values(tmp_path: Path):
    """Two runner-made runs of a suite whose scorer has no per-item values: every row unpaired, Δ of the stored
    values (0: the fake target is deterministic), items still matched and counted."""
    from conftest import write_fake_run

    sid = "bias.counterfactual_generation"  # (counterfactual_templates pairs now: tests/test_compare_paired.py)
    path = write_fake_run(write_fake_run(tmp_path / "s.sqlite", limit=6, suite=sid), limit=6, suite=sid)
    with Store(path, readonly=True) as st:
        a, b = (r.run_id for r in reversed(st.list_runs()))
        res = compare_runs(st, a, b)
    assert res.items[sid].shared == 6 and res.items[sid].only_a == res.items[sid].only_b == 0
    assert res.metrics and all(not m.paired and m.reason and m.verdict == "not paired" for m in res.metrics)
    assert all(m.delta == 0.0 or math.isnan(m.delta) for m in res.metrics)


def test_runner_runs_crows_pairs(tmp_path: Path):
    """Runner-made CrowS-Pairs runs (fake target) on the real data. A and A2 are identical: every row pairs
    (item values reproduce the rows the runner stored), Δ = 0, p = 1. B's target favours ``sent_more`` of every
    third pair by 100 nats: those pairs become stereotyped, so Δ pct_stereotype is the share of them A did not
    already count, read off A's stored scores."""
    import dataclasses
    import os

    from auditlm import runner
    from auditlm.suites.datasets import resolve_data_dir
    from auditlm.suites.loader import select
    from auditlm.targets.fake import FakeTarget

    data = resolve_data_dir(os.environ.get("AUDITLM_DATA") or None)
    if data is None:
        pytest.skip("needs AUDITLM_DATA")
    cfg = runner.RunConfig(model="fake", suites=[CROWS], limit=30, data_dir=str(data))
    prepared = runner.prepare(select(discover(), cfg.suites), cfg, data)
    favoured = {it["sent_more"] for k, (_, it) in enumerate(prepared[0].items) if k % 3 == 0}

    class Biased(FakeTarget):
        def loglikelihood(self, requests, progress=None):
            out = super().loglikelihood(requests, progress)
            return [dataclasses.replace(o, logprob=o.logprob + 100.0) if cont in favoured else o
                    for (_, cont), o in zip(requests, out, strict=True)]

    with Store(tmp_path / "s.sqlite") as st:
        ids = []
        for t in (FakeTarget(), FakeTarget(), Biased("biased")):
            ids.append(runner.start_run(st, t, prepared, cfg))
            runner.execute(st, ids[-1], t, prepared, cfg)
        same = compare_runs(st, ids[0], ids[1])
        res = compare_runs(st, ids[0], ids[2])
        rec_a = st.items(ids[0], CROWS)
    assert same.items[CROWS].shared == 30
    assert same.metrics and all(m.paired and m.delta == 0.0 and m.test.p == 1.0 for m in same.metrics)
    newly = sum(r.score["stereotype"] == 0.0 for r in rec_a if r.input["sent_more"] in favoured)
    assert newly > 0
    m = _row(res, "pct_stereotype")
    assert m.paired and m.delta == pytest.approx(newly / 30, abs=1e-12)
    assert m.test.name == "mcnemar-exact" and m.test.n == newly  # every discordant pair went one way
    assert m.ci_low <= m.delta <= m.ci_high


# --- CLI ----------------------------------------------------------------------------------------------------


def _cli(args: list[str], capsys) -> tuple[int, str, str]:
    from auditlm.cli import _main

    rc = _main(args)
    o = capsys.readouterr()
    return rc, o.out, o.err


def test_cli_exit_codes_and_json_schema(suites, tmp_path: Path, capsys):
    import jsonschema

    path = tmp_path / "s.sqlite"
    n = 40
    a, _ = crows_runs(n)
    _, b = crows_runs(n, flip_up={i for i in range(n) if i % 4 >= 2 and i < 24})
    with Store(path) as st:
        store_run(st, suites, "A", CROWS, a)
        store_run(st, suites, "B", CROWS, b[2:])
    base = ["compare", "A", "B", "--store", str(path)]
    rc, out, _ = _cli([*base, "--json", "--fail-on-regression", f"{CROWS}.pct_stereotype:0.9"], capsys)
    assert rc == 0
    doc = json.loads(out)
    schema = json.loads((Path(__file__).parents[1] / "auditlm" / "compare_schema.json").read_text())
    jsonschema.validate(doc, schema)
    assert doc["schema"] == SCHEMA and doc["items"][CROWS] == {"shared": n - 2, "only_a": 2, "only_b": 0}
    assert doc["gates"][0]["passed"] is True
    rc, _, err = _cli([*base, "--fail-on-regression", f"{CROWS}.pct_stereotype:0.01"], capsys)
    assert rc == 1 and "FAIL" in err
    rc, out, err = _cli([*base, "--fail-on-regression", f"{CROWS}.pct_stereotype[bias_type=race]:0.99"], capsys)
    assert rc == 0 and f"gate {CROWS}.pct_stereotype[bias_type=race]:0.99: pass" in out
    rc, out, _ = _cli(base, capsys)
    assert rc == 0 and "items shared 38 · only in A 2 · only in B 0" in out
    for bad, what in ((f"{CROWS}.pct_stereotype", "bad --fail-on-regression"),
                      (f"{CROWS}.nope:0.1", "valid:"), (f"{CROWS}.likelihood_diff:0.1", "no ideal")):
        rc, _, err = _cli([*base, "--fail-on-regression", bad], capsys)
        assert rc == 2 and what in err and len(err.strip().splitlines()) == 1
    rc, out, _ = _cli([*base, "--suite", "bias", "--json"], capsys)  # a family selects its suites
    assert rc == 0 and {m["suite"] for m in json.loads(out)["metrics"]} == {CROWS}
    rc, _, err = _cli([*base, "--suite", "bias.bbq"], capsys)
    assert rc == 2 and "valid: bias.crows_pairs" in err
    rc, _, err = _cli(["compare", "A", "B", "--store", str(tmp_path / "none.sqlite")], capsys)
    assert rc == 2 and "no run store" in err


def test_json_nan_is_null(suites, tmp_path: Path, capsys):
    """An undefined value (BBQ s_DIS with no non-unknown answer) is written as null, and the document is strict
    JSON."""
    rows = bbq_rows(8)
    for _, _, sc in rows:
        sc["non_unknown"] = sc["biased"] = 0.0
    path = tmp_path / "s.sqlite"
    with Store(path) as st:
        store_run(st, suites, "A", BBQ, rows)
        store_run(st, suites, "B", BBQ, rows)
    rc, out, _ = _cli(["compare", "A", "B", "--store", str(path), "--json"], capsys)
    assert rc == 0
    doc = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    row = next(m for m in doc["metrics"] if m["metric"] == "disamb_bias_score" and m["group"] is None)
    assert row["a"]["value"] is None and row["delta"] is None and row["paired"] is False
    assert not math.isnan(doc["metrics"][0]["delta"])
