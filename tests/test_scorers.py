import pytest

from auditlm.errors import GateError
from auditlm.metrics import MetricResult
from auditlm.report import parse_gate
from auditlm.scorers import ItemRecord, ScoreContext, get_scorer
from auditlm.stats import TestResult, holm
from auditlm.suites.loader import discover
from auditlm.targets.base import LoglikelihoodResult


@pytest.fixture(scope="module")
def suites():
    return discover()


def _ll(x):
    return LoglikelihoodResult(x, 3, False)


@pytest.mark.parametrize(
    "ll_more, ll_less, stereotype, diff",
    [(-10.0, -12.0, 1.0, 2.0), (-12.0, -10.0, 0.0, 2.0), (-5.0, -5.0, 0.0, 0.0), (-1.5, -1.25, 0.0, 0.25)],
)
def test_crows_item_formula(suites, ll_more, ll_less, stereotype, diff):
    sc = get_scorer(suites["bias.crows_pairs"].spec)
    item = {"id": "0", "sent_more": "a", "sent_less": "b", "bias_type": "age", "stereo_antistereo": "stereo"}
    [r] = sc.requests(item)[:1]
    assert (r.context, r.continuation) == ("", "a")
    [s] = sc.score_batch([item], [[_ll(ll_more), _ll(ll_less)]], ScoreContext())
    assert s.score["stereotype"] == stereotype
    assert s.score["likelihood_diff"] == pytest.approx(diff)


def test_crows_aggregate_hand_computed(suites):
    sc = get_scorer(suites["bias.crows_pairs"].spec)
    recs = [
        ItemRecord("0", {"bias_type": "age"}, None, {"stereotype": 1.0, "likelihood_diff": 2.0}),
        ItemRecord("1", {"bias_type": "age"}, None, {"stereotype": 0.0, "likelihood_diff": 1.0}),
        ItemRecord("2", {"bias_type": "gender"}, None, {"stereotype": 1.0, "likelihood_diff": 0.5}),
    ]
    res = {(m.metric, m.group): m for m in sc.aggregate(recs, seed=0)}
    assert res[("pct_stereotype", None)].value == pytest.approx(2 / 3)
    assert res[("pct_stereotype", "age")].value == pytest.approx(0.5)
    assert res[("pct_stereotype", "gender")].n == 1
    assert res[("likelihood_diff", None)].value == pytest.approx(3.5 / 3)


def test_counterfactual_delta_and_relative(suites):
    sc = get_scorer(suites["bias.counterfactual_templates"].spec)
    item = {"id": "x", "template": "the {group} was {attribute}.", "axis": "gender", "attribute_pair": "kind|cruel"}
    reqs = sc.requests(item)
    texts = [r.continuation for r in reqs]
    assert texts == ["The man was cruel.", "The man was kind.", "The woman was cruel.", "The woman was kind."]
    # man: neg -3, pos -1 → Δ=-2 ; woman: neg -2, pos -3 → Δ=+1 ; mean -0.5
    [s] = sc.score_batch([item], [[_ll(-3), _ll(-1), _ll(-2), _ll(-3)]], ScoreContext())
    assert s.score["delta"] == {"man": -2.0, "woman": 1.0}
    assert s.score["relative"] == {"man": -1.5, "woman": 1.5}


def test_holm():
    def t(p):
        return TestResult("x", p, 30, 1e-9, 0.05)

    assert [x.p_holm for x in holm([t(0.01), t(0.04), t(0.03)], "f")] == pytest.approx([0.03, 0.06, 0.06])
    assert [x.p_holm for x in holm([t(0.5)], "f")] == [0.5]
    assert [x.significant for x in holm([t(0.01), t(0.04), t(0.03)], "f")] == [True, False, False]
    # a family none of whose tests can start Holm's step-down is underpowered as a whole
    weak = [TestResult("w", 0.03125, 6, 0.03125, 0.05), TestResult("w", 0.03125, 6, 0.03125, 0.05)]
    assert all(x.underpowered and not x.significant for x in holm(weak, "f"))


@pytest.mark.parametrize(
    "expr, ok",
    [
        ("bias.crows_pairs.pct_stereotype>0.60", True),
        ("bias.crows_pairs.pct_stereotype[gender] >= .5", True),
        ("bias.crows_pairs.pct_stereotype[bias_type=gender] >= .5", True),
        ("bias.crows_pairs.pct_stereotype[=gender]>0.5", False),
        ("bias.crows_pairs.likelihood_diff<1e-3", True),
        ("bias.crows_pairs.pct_stereotype>>0.6", False),
        ("bias.crows_pairs.pct_stereotype", False),
        ("crows>0.5", False),
        ("privacy.other.rate>0.1", False),
    ],
)
def test_gate_parse(expr, ok):
    if ok:
        g = parse_gate(expr, ["bias.crows_pairs"])
        assert g.suite == "bias.crows_pairs"
    else:
        with pytest.raises(GateError):
            parse_gate(expr, ["bias.crows_pairs"])


def test_gate_check():
    ms = [MetricResult("bias.crows_pairs", "pct_stereotype", 0.62, 0.6, 0.64, 100),
          MetricResult("bias.crows_pairs", "pct_stereotype", 0.4, 0.3, 0.5, 10, "age", "bias_type")]
    assert parse_gate("bias.crows_pairs.pct_stereotype>0.6", ["bias.crows_pairs"]).check(ms) == (False, 0.62)
    assert parse_gate("bias.crows_pairs.pct_stereotype[age]>0.6", ["bias.crows_pairs"]).check(ms) == (True, 0.4)
    with pytest.raises(GateError, match="valid"):
        parse_gate("bias.crows_pairs.nope>0.6", ["bias.crows_pairs"]).check(ms)


def test_gate_field_selects_and_ambiguous_group_is_an_error():
    ms = [MetricResult("bias.honest", "honest_score", 0.1, 0.0, 0.2, 50, "queer", "category"),
          MetricResult("bias.honest", "honest_score", 0.3, 0.1, 0.5, 20, "queer", "identity")]
    g = parse_gate("bias.honest.honest_score[identity=queer]>0.2", ["bias.honest"])
    assert (g.field, g.group) == ("identity", "queer") and g.check(ms) == (False, 0.3)
    assert parse_gate("bias.honest.honest_score[category=queer]>0.2", ["bias.honest"]).check(ms) == (True, 0.1)
    with pytest.raises(GateError, match=r"ambiguous.*category=queer.*identity=queer"):
        parse_gate("bias.honest.honest_score[queer]>0.2", ["bias.honest"]).check(ms)
    with pytest.raises(GateError, match="nothing"):
        parse_gate("bias.honest.honest_score[set=queer]>0.2", ["bias.honest"]).check(ms)
