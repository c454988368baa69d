"""Checking the checker: the synthetic PII set, span matching, P/R/F1 aggregation, and the detector suite."""

from __future__ import annotations

import datetime as dt
import itertools
import math
import random
import re

import pytest

from auditlm import runner
from auditlm.metrics import MetricResult
from auditlm.privacy.detector_eval import (
    _MAKERS,
    ENTITY_TYPES,
    SUITE_ID,
    Span,
    aggregate_scores,
    count_matches,
    evaluate_detector,
    match_spans,
    overlap_ratio,
    score_sentence,
    spans_match,
    synthetic_pii_items,
)
from auditlm.privacy.pii import (
    DEFAULT_ENTITIES,
    PiiFinding,
    PiiScanner,
    dob_valid,
    email_valid,
    iban_valid,
    ip_valid,
    luhn_valid,
    phone_possible,
    ssn_valid,
)
from auditlm.privacy.recognizers import find_dates, parse_date
from auditlm.store import Store
from auditlm.suites.generators import generate, generator_names
from auditlm.suites.loader import discover
from auditlm.targets.fake import FakeTarget


@pytest.fixture(scope="module")
def scanner() -> PiiScanner:
    return PiiScanner()


# ---------------------------------------------------------------------------------------------------------------
# The synthetic set


def test_generator_is_registered_and_deterministic():
    assert "synthetic_pii" in generator_names()
    a = synthetic_pii_items(80, 3)
    assert a == synthetic_pii_items(80, 3) == generate("synthetic_pii", 80, 3)
    assert a != synthetic_pii_items(80, 4)
    assert synthetic_pii_items(30, 3) == a[:30]  # item i depends on (seed, i) only
    assert len({it["id"] for it in a}) == 80
    assert synthetic_pii_items(0, 0) == []


def test_category_mix_and_every_entity_type():
    items = synthetic_pii_items(100, 0)
    cats = [it["category"] for it in items]
    assert (cats.count("pii"), cats.count("no_pii"), cats.count("hard_negative")) == (70, 10, 20)
    assert {s["entity_type"] for it in items for s in it["spans"]} == set(ENTITY_TYPES) == set(DEFAULT_ENTITIES)
    for it in items:
        assert it["source"] == "faker"
        assert bool(it["spans"]) == (it["category"] == "pii")


def test_gold_spans_cover_exactly_the_pii_strings():
    for it in synthetic_pii_items(300, 1):
        text, spans = it["text"], it["spans"]
        assert spans == sorted(spans, key=lambda s: s["start"])
        for s in spans:
            assert text[s["start"] : s["end"]] == s["value"]
            assert s["value"] == s["value"].strip() and s["value"]
            # a span is a whole token sequence: not glued to letters or digits on either side
            assert s["start"] == 0 or not text[s["start"] - 1].isalnum()
            assert s["end"] == len(text) or not text[s["end"]].isalnum()
        for a, b in itertools.pairwise(spans):
            assert a["end"] <= b["start"]


_CHECKS = {
    "PERSON": lambda v: re.fullmatch(r"[A-Z][a-z'’-]+( [A-Z]\.)? [A-Z][A-Za-z'’-]+", v) is not None,
    "EMAIL_ADDRESS": email_valid,
    "PHONE_NUMBER": phone_possible,
    "CREDIT_CARD": luhn_valid,
    "US_SSN": ssn_valid,
    "IBAN_CODE": iban_valid,
    "IP_ADDRESS": ip_valid,
    "LOCATION": lambda v: v[:1].isupper() and not any(ch.isdigit() for ch in v),
    "US_BANK_NUMBER": lambda v: re.fullmatch(r"[1-9][0-9]{7,11}", v) is not None,
    "US_PASSPORT": lambda v: re.fullmatch(r"[A-Z][0-9]{8}|[0-9]{9}", v) is not None,
    "US_DRIVER_LICENSE": lambda v: re.fullmatch(r"[A-Z][0-9]{7}", v) is not None,
    "US_STREET_ADDRESS": lambda v: re.fullmatch(r"[0-9]{3,5} [A-Z].* [A-Za-z.0-9 ,-]+|P\.?O\.? Box [0-9]{1,5}", v)
    is not None,
    "DATE_OF_BIRTH": lambda v: dob_valid(v) and dt.date(1935, 1, 1) <= parse_date(v) <= dt.date(2006, 12, 31),
}


@pytest.mark.parametrize("entity_type", ENTITY_TYPES)
def test_every_made_value_is_well_formed(entity_type: str):
    from faker import Faker

    fake, rng = Faker("en_US"), random.Random(7)
    fake.seed_instance(7)
    formats = set()
    for _ in range(60):
        value, fmt = _MAKERS[entity_type](fake, rng)
        assert _CHECKS[entity_type](value), (entity_type, value)
        formats.add(fmt)
    assert formats


@pytest.mark.parametrize(
    "value, entity_type, expected",
    [  # the gold values a reader would expect: checksums hold, hard negatives would fail them
        ("4539 1488 0343 6467", "CREDIT_CARD", True),
        ("4539 1488 0343 6468", "CREDIT_CARD", False),
        ("DE89 3704 0044 0532 0130 00", "IBAN_CODE", True),
        ("DE89 3704 0044 0532 0130 01", "IBAN_CODE", False),
        ("536-22-8714", "US_SSN", True),
        ("10.0.19045.2965", "IP_ADDRESS", False),
    ],
)
def test_validators_separate_gold_from_hard_negatives(value: str, entity_type: str, expected: bool):
    assert _CHECKS[entity_type](value) is expected


def test_hard_negatives_hold_no_valid_card_or_ip():
    for it in synthetic_pii_items(300, 2):
        if it["category"] != "hard_negative":
            continue
        for m in re.finditer(r"\d[\d .-]{10,}\d", it["text"]):
            assert not (luhn_valid(m.group()) and len(re.sub(r"\D", "", m.group())) == 16), it["text"]
        if it["template"] == "build_number":
            assert not ip_valid(it["text"].split()[1])


@pytest.mark.parametrize(
    "kind, check",
    [  # the new hard negatives hold what they claim to: the near-miss, without the part that would make it PII
        ("street_name", lambda t: not re.search(r"\d+ ", t)),  # "5th Avenue", but no house number
        ("release_date", lambda t: find_dates(t) and not re.search(r"(?i)born|birth|dob", t)),
        ("birthday_no_date", lambda t: "birthday" in t and not find_dates(t)),
        ("highway", lambda t: re.search(r"Highway \d+", t) is not None),
    ],
)
def test_new_hard_negatives(kind, check):
    texts = [it["text"] for it in synthetic_pii_items(1500, 0) if it["template"] == kind]
    assert texts
    for t in texts:
        assert check(t), t


def test_address_and_date_of_birth_formats_all_occur():
    items = synthetic_pii_items(1500, 0)
    formats = {(s["entity_type"], s["format"]) for it in items for s in it["spans"]}
    assert {f for t, f in formats if t == "US_STREET_ADDRESS"} == {
        "faker_street", "with_city_state_zip", "abbreviated", "directional", "po_box"}
    assert {f for t, f in formats if t == "DATE_OF_BIRTH"} == {
        "iso", "us_slash", "month_day_year", "month_abbrev", "day_month_year", "dotted"}


# ---------------------------------------------------------------------------------------------------------------
# Span matching


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ((0, 10), (0, 10), 1.0),
        ((0, 10), (2, 10), 0.8),
        ((0, 12), (0, 5), 5 / 12),  # "Maria" for "Maria Garcia"
        ((0, 10), (10, 20), 0.0),  # adjacent
        ((0, 10), (20, 30), 0.0),
        ((0, 4), (0, 40), 0.1),  # a sentence-long prediction
        ((3, 3), (3, 3), 0.0),
    ],
)
def test_overlap_ratio(a, b, expected):
    assert overlap_ratio(Span("X", *a), Span("X", *b)) == pytest.approx(expected)
    assert overlap_ratio(Span("X", *b), Span("X", *a)) == pytest.approx(expected)


@pytest.mark.parametrize(
    "gold, pred, rule, expected",
    [
        (("PHONE_NUMBER", 10, 25), ("PHONE_NUMBER", 10, 25), "exact", True),
        (("PHONE_NUMBER", 10, 25), ("PHONE_NUMBER", 13, 25), "exact", False),  # "+1 " dropped
        (("PHONE_NUMBER", 10, 25), ("PHONE_NUMBER", 13, 25), "overlap", True),
        (("PERSON", 0, 12), ("PERSON", 0, 5), "overlap", False),  # first name only
        (("PERSON", 0, 12), ("PERSON", 0, 6), "overlap", True),  # exactly half
        (("PERSON", 0, 12), ("LOCATION", 0, 12), "overlap", False),  # wrong type
        (("PERSON", 0, 12), ("LOCATION", 0, 12), "exact", False),
        (("US_SSN", 5, 16), ("US_SSN", 16, 27), "overlap", False),
    ],
)
def test_spans_match(gold, pred, rule, expected):
    assert spans_match(Span(*gold), Span(*pred), rule) is expected


def test_unknown_rule():
    with pytest.raises(ValueError, match="exact"):
        spans_match(Span("X", 0, 1), Span("X", 0, 1), "fuzzy")


G_NAME, G_PHONE = ("PERSON", 0, 12), ("PHONE_NUMBER", 20, 34)


@pytest.mark.parametrize(
    "gold, pred, rule, expected",
    [
        ([G_NAME, G_PHONE], [G_NAME, G_PHONE], "overlap", {"PERSON": [1, 0, 0], "PHONE_NUMBER": [1, 0, 0]}),
        ([G_NAME, G_PHONE], [], "overlap", {"PERSON": [0, 0, 1], "PHONE_NUMBER": [0, 0, 1]}),  # nothing found
        ([], [("US_SSN", 3, 14)], "overlap", {"US_SSN": [0, 1, 0]}),  # false positive on a negative
        ([], [], "overlap", {}),
        ([G_NAME], [("LOCATION", 0, 12)], "overlap", {"LOCATION": [0, 1, 0], "PERSON": [0, 0, 1]}),
        ([G_PHONE], [("PHONE_NUMBER", 23, 34)], "overlap", {"PHONE_NUMBER": [1, 0, 0]}),
        ([G_PHONE], [("PHONE_NUMBER", 23, 34)], "exact", {"PHONE_NUMBER": [0, 1, 1]}),
        # two predictions on one gold span: one is a duplicate, i.e. a false positive
        ([G_NAME], [("PERSON", 0, 12), ("PERSON", 0, 8)], "overlap", {"PERSON": [1, 1, 0]}),
        # one prediction over two gold spans: it can only count once
        ([("PERSON", 0, 5), ("PERSON", 6, 11)], [("PERSON", 0, 12)], "overlap", {"PERSON": [0, 1, 2]}),
        ([("PERSON", 0, 8), ("PERSON", 9, 12)], [("PERSON", 0, 12)], "overlap", {"PERSON": [1, 0, 1]}),
    ],
)
def test_count_matches(gold, pred, rule, expected):
    assert count_matches(gold, pred, rule) == expected


def test_matching_is_one_to_one_and_prefers_the_best_overlap():
    gold = [("PERSON", 0, 10), ("PERSON", 0, 9)]
    pred = [("PERSON", 0, 9)]
    m = match_spans(gold, pred, "overlap")
    assert m.pairs == ((1, 0),) and m.unmatched_gold == (0,) and m.unmatched_pred == ()


def test_spans_of_findings_and_dicts():
    f = PiiFinding("EMAIL_ADDRESS", 4, 20, 1.0, "x" * 16)
    assert Span.of(f) == Span.of({"entity_type": "EMAIL_ADDRESS", "start": 4, "end": 20}) == Span.of(
        ("EMAIL_ADDRESS", 4, 20)
    )


# ---------------------------------------------------------------------------------------------------------------
# Aggregation on hand-made predictions


def _rows(rows: list[MetricResult]) -> dict[tuple[str, str | None], MetricResult]:
    return {(m.metric, m.group): m for m in rows}


def _hand_made():
    # (category, gold, predictions)
    return [
        ("pii", [G_NAME, G_PHONE], [G_NAME, ("PHONE_NUMBER", 23, 34)]),  # phone found without its "+1 "
        ("pii", [G_NAME], []),  # name missed
        ("pii", [("EMAIL_ADDRESS", 5, 25)], [("EMAIL_ADDRESS", 5, 25)]),
        ("pii", [("PERSON", 3, 9)], [("LOCATION", 3, 9)]),  # found as the wrong type
        ("no_pii", [], []),
        ("hard_negative", [], [("US_SSN", 12, 23)]),  # a part number taken for an SSN
        ("hard_negative", [], []),
    ]


def test_aggregate_hand_made():
    data = _hand_made()
    scores = [score_sentence(g, p) for _, g, p in data]
    rows = _rows(aggregate_scores(scores, [c for c, _, _ in data], seed=0, n_boot=500))
    # overlap rule: tp = name, phone, email = 3; fp = LOCATION, US_SSN = 2; fn = name, PERSON(3,9) = 2
    assert rows[("precision", None)].value == pytest.approx(3 / 5) and rows[("precision", None)].n == 5
    assert rows[("recall", None)].value == pytest.approx(3 / 5) and rows[("recall", None)].n == 5
    assert rows[("f1", None)].value == pytest.approx(6 / 10) and rows[("f1", None)].n == 7
    assert rows[("recall", None)].extra.items() >= {"tp": 3, "fp": 2, "fn": 2}.items()
    # exact rule: the phone is a miss and a false positive
    assert rows[("precision_exact", None)].value == pytest.approx(2 / 5)
    assert rows[("recall_exact", None)].value == pytest.approx(2 / 5)
    # per type
    assert rows[("recall", "PERSON")].value == pytest.approx(1 / 3) and rows[("recall", "PERSON")].n == 3
    assert rows[("precision", "PERSON")].value == 1.0 and rows[("precision", "PERSON")].n == 1
    assert rows[("precision", "US_SSN")].value == 0.0 and rows[("precision", "US_SSN")].n == 1
    # no gold SSN: recall is 0/0, reported as undefined with a note (a gate on it fails with that reason)
    assert math.isnan(rows[("recall", "US_SSN")].value) and rows[("recall", "US_SSN")].n == 0
    assert "0/0" in rows[("recall", "US_SSN")].extra["note"]
    assert math.isnan(rows[("recall", "LOCATION")].value) and rows[("precision", "LOCATION")].value == 0.0
    assert rows[("recall", "PERSON")].group_field == "entity_type"
    # false alarms: 1 of 3 PII-free sentences; by category
    assert rows[("false_alarm_rate", None)].value == pytest.approx(1 / 3) and rows[("false_alarm_rate", None)].n == 3
    assert rows[("false_alarm_rate", "hard_negative")].value == 0.5
    assert rows[("false_alarm_rate", "no_pii")].value == 0.0
    for m in rows.values():
        assert m.extra.get("small_n") is True
        if m.n == 0:
            continue
        assert not math.isnan(m.value) and m.ci_low <= m.value + 1e-12 <= m.ci_high + 2e-12
        assert m.ci_low < m.ci_high  # Clopper–Pearson: never zero-width, even at 0 or 1
    # deterministic: the same intervals every time
    again = _rows(aggregate_scores(scores, [c for c, _, _ in data], seed=0, n_boot=500))
    assert list(again) == list(rows)
    flat = [x for m in rows.values() for x in (m.ci_low, m.ci_high)]
    assert [x for m in again.values() for x in (m.ci_low, m.ci_high)] == pytest.approx(flat, nan_ok=True)


def test_aggregate_with_no_predictions_at_all():
    data = _hand_made()
    scores = [score_sentence(g, []) for _, g, _ in data]
    rows = _rows(aggregate_scores(scores, [c for c, _, _ in data], seed=0, n_boot=200))
    assert math.isnan(rows[("precision", None)].value) and rows[("precision", None)].n == 0
    assert ("f1", None) in rows
    assert rows[("recall", None)].value == 0.0 and rows[("recall", None)].n == 5
    assert rows[("f1", None)].value == 0.0
    assert rows[("false_alarm_rate", None)].value == 0.0


def test_aggregate_perfect_detector_gets_one_sided_not_zero_width_intervals():
    """17/17 used to print [1.000, 1.000]; a perfect detector's rows sit at 1 (0 for false alarms) with an interval
    that reaches down (up) as far as the number of sentences allows."""
    items = synthetic_pii_items(40, 0)
    scores = [score_sentence(it["spans"], it["spans"]) for it in items]
    rows = aggregate_scores(scores, [it["category"] for it in items], seed=0, n_boot=200)
    for m in rows:
        if m.metric == "false_alarm_rate":
            assert m.value == 0.0 and m.ci_low == 0.0 < m.ci_high, m
        else:
            assert m.value == 1.0 and m.ci_high == 1.0 > m.ci_low, m


def test_recall_by_format_in_extra():
    items = synthetic_pii_items(60, 0)
    scores = [score_sentence(it["spans"], []) for it in items]
    rows = _rows(aggregate_scores(scores, [it["category"] for it in items], seed=0, n_boot=200))
    by_fmt = rows[("recall", "PHONE_NUMBER")].extra["recall_by_format"]
    gold_phones = sum(s["entity_type"] == "PHONE_NUMBER" for it in items for s in it["spans"])
    assert sum(total for _, total in by_fmt.values()) == gold_phones
    assert all(found == 0 for found, _ in by_fmt.values())


# ---------------------------------------------------------------------------------------------------------------
# End to end


@pytest.fixture(scope="module")
def detector_rows(scanner: PiiScanner) -> list[MetricResult]:
    return evaluate_detector(size=60, seed=0, scanner=scanner)


def test_evaluate_detector_end_to_end(detector_rows: list[MetricResult]):
    rows = _rows(detector_rows)
    items = synthetic_pii_items(60, 0)
    gold = {}
    for it in items:
        for s in it["spans"]:
            gold[s["entity_type"]] = gold.get(s["entity_type"], 0) + 1
    assert all(m.suite == SUITE_ID for m in detector_rows)
    for etype, n in gold.items():
        assert rows[("recall", etype)].n == n, etype
    assert rows[("recall", None)].n == sum(gold.values())
    for m in detector_rows:
        assert m.n > 0 and 0.0 <= m.value <= 1.0
        assert m.ci_low <= m.value + 1e-9 and m.value <= m.ci_high + 1e-9
        assert m.extra["detector"]["entities"] == list(DEFAULT_ENTITIES)
        assert m.extra["generator"] == "synthetic_pii" and m.extra["faker_version"]
    # sanity, not a benchmark: Presidio finds most of this PII and flags few PII-free sentences
    assert rows[("recall", None)].value > 0.7 and rows[("precision", None)].value > 0.7
    assert rows[("recall", "EMAIL_ADDRESS")].value >= 0.9
    assert rows[("false_alarm_rate", "no_pii")].value <= 0.2
    assert rows[("precision_exact", None)].value <= rows[("precision", None)].value


def test_suite_run_stores_the_same_figures_and_calls_no_model(
    detector_rows: list[MetricResult], scanner: PiiScanner, tmp_path
):
    suite = discover()[SUITE_ID]
    assert suite.spec.kind == "pii_detector_eval" and suite.spec.default and suite.spec.data.generator
    cfg = runner.RunConfig(model="fake", suites=[SUITE_ID], seed=0)
    items = generate(suite.spec.data.generator, 60, cfg.seed)
    prepared = [runner.PreparedSuite(suite, list(enumerate(items)), len(items))]
    target = FakeTarget()
    with Store(tmp_path / "runs.sqlite") as st:
        rid = runner.start_run(st, target, prepared, cfg)
        result = runner.execute(st, rid, target, prepared, cfg)
        stored = st.items(rid, SUITE_ID)
    assert target.ll_calls == [] and target.gen_calls == []
    assert stored[0].input == items[0]  # fictitious (Faker-made) PII is stored as it is
    assert {"predicted"} <= set(stored[0].output)
    assert result.metrics == detector_rows
