"""Unit tests for the training-data leakage suites: exposure, Min-K%, zlib, AUC/TPR, extraction precision and
recall, the corpus and canary readers, and that nothing raw is stored unless the run asks for it."""

from __future__ import annotations

import json
import math
import sqlite3
import zlib
from pathlib import Path

import numpy as np
import pytest

import auditlm.scorers.membership_inference as mia
import auditlm.scorers.training_data_leakage as tdl
import auditlm.suites.corpus as corpus
from auditlm import runner
from auditlm.errors import DataError
from auditlm.privacy.canaries import (
    all_secrets,
    exact_rank,
    exposure_from_rank,
    index_to_secret,
    load_record,
    plant_canaries,
    sample_secrets,
    skewnorm_exposure,
    space_size,
)
from auditlm.store import Store
from auditlm.suites.loader import LoadedSuite, builtin_probes_dir, load_file
from auditlm.targets.base import LoglikelihoodResult
from auditlm.targets.fake import FakeTarget

PROBES = builtin_probes_dir() / "privacy"
SUFFIX = ".yaml"


def suite(name: str) -> LoadedSuite:
    return load_file(PROBES / f"{name}{SUFFIX}")


def prepare(
    s: LoadedSuite, inputs: dict[str, str], **cfg
) -> tuple[runner.RunConfig, list[runner.PreparedSuite]]:
    """Prepare a suite whose data path is a run input (``{corpus}`` …), through the runner as the CLI does."""
    config = runner.RunConfig(model="m", suites=[s.spec.id], inputs=inputs, **cfg)
    return config, runner.prepare([s], config, None)


def run(store: Store, target, prepared, config, reference=None):
    run_id = runner.start_run(store, target, prepared, config)
    return run_id, runner.execute(store, run_id, target, prepared, config, reference=reference)


# --- exposure --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "canary, others, rank",
    [
        (1.0, [2.0, 3.0, 4.0], 1),
        (3.0, [1.0, 2.0, 4.0], 3),
        (5.0, [1.0, 2.0, 4.0], 4),
        (2.0, [2.0, 3.0], 2),  # a tie ranks before the canary
        (2.0, [], 1),
    ],
)
def test_exact_rank(canary, others, rank):
    assert exact_rank(canary, others) == rank


@pytest.mark.parametrize(
    "rank, space, expected", [(1, 1024, 10.0), (1024, 1024, 0.0), (2, 8, 2.0), (3, 1000, math.log2(1000 / 3))]
)
def test_exposure_from_rank(rank, space, expected):
    assert exposure_from_rank(rank, space) == pytest.approx(expected)


@pytest.mark.parametrize("rank, space", [(0, 10), (11, 10)])
def test_exposure_rejects_impossible_rank(rank, space):
    with pytest.raises(ValueError):
        exposure_from_rank(rank, space)


@pytest.mark.parametrize("skew", [2.0, -2.0])
@pytest.mark.parametrize("true_rank, tolerance", [(1, 1.0), (20, 1.5), (400, 0.5), (5000, 0.25)])
def test_skewnorm_estimate_close_to_exact(skew, true_rank, tolerance):
    """On log-perplexities of a whole space of 20,000 secrets, the estimate from 1,000 sampled candidates
    agrees with the exact exposure: closely inside the sample's range, within 1.5 bits in the far tail
    that the fit extrapolates to (0.1% of the space, 10 bits)."""
    from scipy import stats

    space = 20_000
    x = np.sort(stats.skewnorm.rvs(skew, loc=60, scale=6, size=space, random_state=7))
    canary, others = x[true_rank - 1], np.delete(x, true_rank - 1)
    exact = exposure_from_rank(exact_rank(canary, others), space)
    sample = np.random.default_rng(1).choice(others, size=1000, replace=False)
    assert skewnorm_exposure(canary, sample, space) == pytest.approx(exact, abs=tolerance)


def test_skewnorm_exposure_is_clipped():
    x = np.random.default_rng(0).normal(50, 1, size=500)
    assert skewnorm_exposure(0.0, x, 1000) == pytest.approx(math.log2(1000))
    assert skewnorm_exposure(100.0, x, 1000) == pytest.approx(0.0, abs=1e-6)


def test_secret_space():
    assert space_size("01", 3) == 8
    assert list(all_secrets("01", 3)) == ["000", "001", "010", "011", "100", "101", "110", "111"]
    assert index_to_secret(7, "0123456789", 3) == "007"
    got = sample_secrets("0123456789", 3, 50, seed=3, exclude=["007", "123"])
    assert len(set(got)) == 50 and "007" not in got and "123" not in got
    assert got == sample_secrets("0123456789", 3, 50, seed=3, exclude=["007", "123"])
    big = sample_secrets("0123456789", 12, 20, seed=1)
    assert len(set(big)) == 20 and all(len(s) == 12 for s in big)
    with pytest.raises(ValueError):
        sample_secrets("01", 2, 4, seed=0, exclude=["00"])


@pytest.mark.parametrize("suffix", [".txt", ".jsonl", ".csv"])
def test_plant_canaries(tmp_path: Path, suffix: str):
    docs = [f"Document number {w} is here." for w in ("one", "two", "three", "four", "five")]
    src = tmp_path / f"corpus{suffix}"
    if suffix == ".txt":
        src.write_text("\n".join(docs[:2]) + "\n\n" + "\n".join(docs[2:]) + "\n")
    elif suffix == ".jsonl":
        src.write_text("".join(json.dumps({"text": d, "source": "x"}) + "\n" for d in docs))
    else:
        src.write_text("text,source\n" + "".join(f"{d},x\n" for d in docs))
    planted = plant_canaries(src, tmp_path / "out", n_canaries=2, secret_length=4, repeats=3, seed=5)
    rec = load_record(planted.record)
    assert rec["space_size"] == 10_000 and rec["log2_space"] == pytest.approx(math.log2(10_000))
    texts = [d["text"] for d in corpus.read_documents(planted.corpus)]
    got = corpus.read_documents(planted.corpus)
    assert [d["text"] for d in got if "secret" not in d["text"]] == docs  # corpus order kept
    for c in rec["canaries"]:
        assert c["text"] == f"My secret code is {c['secret']}."
        assert sorted(c["positions"]) == c["positions"] and len(c["positions"]) == 3
        assert next(d for d in got if d["text"] == c["text"])["copies"] == 3
    assert len(texts) == len(docs) + 2
    again = plant_canaries(src, tmp_path / "again", n_canaries=2, secret_length=4, repeats=3, seed=5)
    assert again.canaries == planted.canaries
    items = corpus.read_canaries(planted.record)
    assert [it["id"] for it in items] == ["canary-0", "canary-1"]
    assert sorted(items[0]["planted"]) == sorted(c["secret"] for c in rec["canaries"])


def test_plant_canaries_rejects_bad_input(tmp_path: Path):
    src = tmp_path / "c.txt"
    src.write_text("a\n")
    with pytest.raises(DataError):
        plant_canaries(src, tmp_path / "o", template="no placeholder")
    with pytest.raises(DataError):
        plant_canaries(src, tmp_path, n_canaries=1)  # would overwrite the corpus
    with pytest.raises(DataError):
        plant_canaries(src, tmp_path / "o", n_canaries=11, secret_length=1)


# --- membership-inference signals --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "logprobs, k, expected",
    [
        ([-1, -2, -3, -4, -5], 0.2, -5.0),
        ([-1, -2, -3, -4, -5], 0.4, -4.5),
        ([-5, -1, -4, -2, -3], 0.4, -4.5),  # order does not matter
        ([-1, -2, -3], 0.1, -3.0),  # at least one token
        ([-1, -2, -3, -4], 1.0, -2.5),  # k = 100%: the mean
    ],
)
def test_min_k_prob(logprobs, k, expected):
    assert mia.min_k_prob(logprobs, k) == pytest.approx(expected)


def test_min_k_prob_needs_tokens():
    with pytest.raises(ValueError):
        mia.min_k_prob([], 0.2)


@pytest.mark.parametrize(
    "results, expected",
    [
        (
            [LoglikelihoodResult(-2.0, 1, False), LoglikelihoodResult(-6.0, 3, False)],
            [-2.0, -2.0, -2.0, -2.0],
        ),
        ([LoglikelihoodResult(-1.0, 2, False), LoglikelihoodResult(0.0, 0, True)], [-0.5, -0.5]),
    ],
)
def test_word_token_logprobs(results, expected):
    assert mia.word_token_logprobs(results) == pytest.approx(expected)


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Dear Norma Fisher", [("", "Dear"), ("Dear", " Norma"), ("Dear Norma", " Fisher")]),
        ("a  b\nc", [("", "a"), ("a", "  b"), ("a  b", "\nc")]),
        ("one", [("", "one")]),
    ],
)
def test_word_requests(text, expected):
    got = mia.word_requests(text)
    assert got == expected
    assert "".join(x for _, x in got) == text


def test_word_requests_sum_to_the_text(tiny_target):
    """On a BPE model the words' log-likelihoods add up to the whole text's, so Min-K% sees real tokens."""
    text = "The doctor said her phone number is seven two one."
    full = tiny_target.loglikelihood([("", text)])[0]
    words = tiny_target.loglikelihood(mia.word_requests(text))
    assert sum(r.logprob for r in words) == pytest.approx(full.logprob, abs=1e-3)
    assert sum(r.n_tokens for r in words) == full.n_tokens


@pytest.mark.parametrize("text", ["hello hello hello hello hello hello", "x7Qp2 Lm9z Wv3k Jr8s Tn1d"])
def test_zlib_ratio(text):
    assert mia.zlib_entropy(text) == len(zlib.compress(text.encode()))
    assert mia.zlib_ratio(2.0, text) == pytest.approx(2.0 / len(zlib.compress(text.encode())))


def test_zlib_entropy_is_lower_for_repetitive_text():
    assert mia.zlib_entropy("abc " * 20) < mia.zlib_entropy(
        "".join(chr(65 + (i * 7) % 26) for i in range(80))
    )


@pytest.mark.parametrize(
    "scores, labels, auc, tpr",
    [
        ([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0], 1.0, 1.0),
        ([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0], 0.0, 0.0),
        ([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0], 0.5, 0.0),
        ([0.9, 0.3, 0.8, 0.1, 0.4], [1, 1, 0, 0, 0], 2 / 3, 0.5),
    ],
)
def test_auc_and_tpr_at_fpr(scores, labels, auc, tpr):
    assert mia.roc_auc(scores, labels) == pytest.approx(auc)
    assert mia.tpr_at_fpr(scores, labels, 0.01) == pytest.approx(tpr)


@pytest.mark.parametrize("fpr", [0.01, 0.05, 0.2, 0.5])
def test_stats_auc_and_tpr_match_sklearn(fpr):
    """The statistics layer's AUC and TPR (used for the metric rows) equal sklearn's on tied data."""
    from auditlm import stats

    rng = np.random.default_rng(0)
    for _ in range(20):
        n1, n0 = rng.integers(3, 40, size=2)
        pos = np.round(rng.normal(0.5, 1, size=n1), 1)  # rounding makes ties
        neg = np.round(rng.normal(0.0, 1, size=n0), 1)
        s, y = np.concatenate([pos, neg]), np.r_[np.ones(n1), np.zeros(n0)].astype(bool)
        assert stats.auc(s, y).value == pytest.approx(mia.roc_auc(s, y))
        assert stats.tpr_at_fpr(s, y, fpr).value == pytest.approx(mia.tpr_at_fpr(s, y, fpr))


# --- extraction precision and recall ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "draws, train, precision, recall",
    [
        ([{"a", "b"}, {"c"}], {"a", "c", "d"}, 2 / 3, 2 / 3),
        ([{"a"}, {"a"}, set()], {"a", "b"}, 1.0, 0.5),  # repeats count once
        ([{"x"}], {"a"}, 0.0, 0.0),
        ([set()], {"a"}, math.nan, 0.0),
        ([{"a"}], set(), 1.0 * 0, math.nan),
    ],
)
def test_extraction_precision_recall(draws, train, precision, recall):
    p, r = tdl.extraction_precision_recall(draws, train)
    assert p == pytest.approx(precision, nan_ok=True) and r == pytest.approx(recall, nan_ok=True)


def _by(rows, metric, group=None):
    return next(m for m in rows if m.metric == metric and m.group == group)


def test_extraction_metrics_per_type_and_reference():
    draws = [
        [("PERSON", "p1", True), ("EMAIL_ADDRESS", "e9", False)],
        [("PERSON", "p1", True), ("PERSON", "p2", True)],
        [("EMAIL_ADDRESS", "e1", True)],
        [],
    ]
    ref = [[("PERSON", "p1", True)], [], [("PERSON", "p7", False)], []]
    n_train = {"PERSON": 4, "EMAIL_ADDRESS": 2}
    rows = tdl.extraction_metrics("s", draws, n_train, reference=ref)
    assert _by(rows, "extraction_recall").value == pytest.approx(3 / 6)
    assert _by(rows, "extraction_recall").n == 6
    assert _by(rows, "extraction_precision").value == pytest.approx(3 / 4)
    assert _by(rows, "extraction_recall", "PERSON").value == pytest.approx(2 / 4)
    assert _by(rows, "extraction_precision", "EMAIL_ADDRESS").value == pytest.approx(1 / 2)
    assert _by(rows, "extraction_recall_excl_reference").value == pytest.approx(
        2 / 6
    )  # p1 is also the base's
    assert _by(rows, "extraction_precision_excl_reference").value == pytest.approx(2 / 3)
    assert _by(rows, "extraction_recall_also_reference").value == pytest.approx(1 / 6)
    assert _by(rows, "reference_extraction_recall").value == pytest.approx(1 / 6)
    for m in rows:
        assert m.ci_low <= m.value + 1e-9 <= m.ci_high + 2e-9 and m.extra["draws"] == 4
        assert m.extra["ci"]["method"] == "clopper-pearson"


def test_extraction_rows_with_zero_denominator_are_reported_undefined():
    rows = tdl.extraction_metrics("s", [[], []], {"PERSON": 3})
    prec = _by(rows, "extraction_precision")
    assert math.isnan(prec.value) and prec.n == 0 and "no PII produced" in prec.extra["note"]
    rec = _by(rows, "extraction_recall")
    assert rec.value == 0.0 and rec.n == 3 and rec.ci_high > 0


# --- readers ----------------------------------------------------------------------------------------------


def test_corpus_reader_formats(tmp_path: Path):
    (tmp_path / "a.txt").write_text("first doc\n\n  second doc  \nfirst doc\n")
    (tmp_path / "b.jsonl").write_text('{"text": "x y", "member": true}\n\n{"text": "z", "member": false}\n')
    (tmp_path / "c.csv").write_text("body,member\nhello there,1\nbye,0\n")
    (tmp_path / "d.json").write_text('[{"content": "only string field"}]')
    a = corpus.read_corpus(tmp_path / "a.txt")
    assert [(d["text"], d["copies"]) for d in a] == [("first doc", 2), ("second doc", 1)]
    assert a[0]["id"] == corpus.doc_id("first doc") and len(a[0]["id"]) == 16
    assert [(d["text"], d["member"]) for d in corpus.read_corpus(tmp_path / "b.jsonl")] == [
        ("x y", True),
        ("z", False),
    ]
    assert [d["member"] for d in corpus.read_corpus(tmp_path / "c.csv")] == [True, False]
    assert corpus.read_documents(tmp_path / "c.csv", text_field="body")[0]["text"] == "hello there"
    assert corpus.read_corpus(tmp_path / "d.json")[0]["text"] == "only string field"


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"body": "a", "title": "b"}\n', "no text field"),
        ('{"text": "a", "member": "maybe"}\n', "member"),
        ('{"text": "a", "member": true}\n{"text": "a", "member": false}\n', "both member"),
        ("{not json\n", "invalid JSON"),
    ],
)
def test_corpus_reader_errors(tmp_path: Path, content: str, message: str):
    p = tmp_path / "bad.jsonl"
    p.write_text(content)
    with pytest.raises(ValueError, match=message):
        corpus.read_corpus(p)


def test_corpus_hub_loader():
    from auditlm.suites.spec import DataSpec

    d = DataSpec(reader="corpus", hub_id="org/data", split="train")
    rows = [{"text": "a b"}, {"text": "c"}, {"text": "a b"}]
    got = corpus._hub_documents(d, lambda config, split: rows if split == "train" else [])
    assert [(x["text"], x["copies"]) for x in got] == [("a b", 2), ("c", 1)]


class _F:
    """A stand-in PiiFinding for reader tests (no spaCy needed)."""

    def __init__(self, text: str, doc: str, etype: str):
        self.entity_type, self.text = etype, text
        self.start = doc.index(text)
        self.end = self.start + len(text)


def test_training_pii_items_mask_the_target_and_other_pii():
    docs = [
        {"id": "d1", "text": "Hello. Ann Lee works at ann@x.org today. Bye."},
        {"id": "d2", "text": "Bo Li said hi.", "member": False},
        {"id": "d3", "text": "Call Al Gore."},
    ]
    f1 = [_F("Ann Lee", docs[0]["text"], "PERSON"), _F("ann@x.org", docs[0]["text"], "EMAIL_ADDRESS")]
    f3 = [_F("Al Gore", docs[2]["text"], "PERSON")]
    items = corpus.training_pii_items(docs, 3, findings=[f1, f3])
    assert [it["attack"] for it in items] == ["extraction"] * 3 + ["reconstruction"] * 3
    rec = {it["value"]: it for it in items if it["attack"] == "reconstruction"}
    assert rec["Ann Lee"]["template"] == f"{corpus.SLOT} works at <EMAIL_ADDRESS> today."
    assert rec["ann@x.org"]["template"] == f"<PERSON> works at {corpus.SLOT} today."
    assert rec["Al Gore"]["template"] == f"Call {corpus.SLOT}."
    pii = items[0]["corpus_pii"]
    assert pii.counts() == {"EMAIL_ADDRESS": 1, "PERSON": 2}  # the non-member's name is not training PII
    assert all(it["corpus_pii"] is pii for it in items)


# --- suites through the runner; nothing raw stored ---------------------------------------------------------

_FIRST = ["Ann", "Bob", "Cara", "Dan", "Eve", "Finn", "Gail", "Hugo", "Iris", "Jon", "Kira", "Leo"]
_LAST = [
    "Fisher",
    "Garcia",
    "Okafor",
    "Lindqvist",
    "Moreau",
    "Tanaka",
    "Novak",
    "Haddad",
    "Rossi",
    "Silva",
    "Kowalski",
    "Brennan",
]


def _pii_corpus(tmp_path: Path) -> tuple[Path, list[str]]:
    docs, values = [], []
    for i, (f, la) in enumerate(zip(_FIRST, _LAST, strict=True)):
        name, email = f"{f} {la}", f"{f.lower()}.{la.lower()}@gmail.com"
        docs.append(f"{name} signed the lease for flat {i + 2} and can be reached at {email}.")
        values += [name, email]
    p = tmp_path / "corpus.txt"
    p.write_text("\n".join(docs) + "\n")
    return p, values


def _stored_text(path: Path) -> str:
    con = sqlite3.connect(path)
    try:
        rows = con.execute("SELECT * FROM items").fetchall()
    finally:
        con.close()
    return json.dumps([[str(x) for x in r] for r in rows])


@pytest.mark.parametrize("store_raw", [False, True])
def test_training_data_leakage_stores_no_raw_pii(tmp_path: Path, store_raw: bool):
    path, values = _pii_corpus(tmp_path)
    docs = path.read_text().splitlines()
    target = FakeTarget(responder=lambda p: " " + docs[len(p) % len(docs)])  # regurgitates training docs
    s = suite("training_data_leakage")
    s = LoadedSuite(
        s.spec.model_copy(update={"data": s.spec.data.model_copy(update={"size": 40})}), s.path, s.digest
    )
    config, prepared = prepare(s, {"corpus": str(path)}, store_raw=store_raw, seed=2)
    items = [it for _, it in prepared[0].items]
    assert sum(it["attack"] == "extraction" for it in items) == s.spec.data.size
    with Store(tmp_path / "runs.sqlite") as st:
        run_id, result = run(st, target, prepared, config, reference=FakeTarget("ref"))
        records = st.items(run_id, s.spec.id)
    stored = _stored_text(tmp_path / "runs.sqlite")
    leaked = [v for v in values if v in stored]
    assert (leaked == []) if not store_raw else (len(leaked) == len(values))
    names = {m.metric for m in result.metrics}
    assert {
        "extraction_recall",
        "extraction_precision",
        "reconstruction_accuracy",
        "inference_accuracy",
        "extraction_recall_excl_reference",
        "reference_reconstruction_accuracy",
    } <= names
    ext = [r for r in records if r.input["attack"] == "extraction"]
    found = [f for r in ext for f in r.output["main"]["findings"]]
    assert found and all(f["training_pii"] for f in found if f["entity_type"] == "EMAIL_ADDRESS")
    assert _by(result.metrics, "extraction_recall", "EMAIL_ADDRESS").value > 0
    for m in result.metrics:
        assert m.n > 0 and m.ci_low <= m.ci_high


def test_canary_and_membership_suites_store_nothing_raw(tmp_path: Path):
    path, _ = _pii_corpus(tmp_path)
    planted = plant_canaries(path, tmp_path / "planted", n_canaries=2, secret_length=2, repeats=2, seed=1)
    secrets = [c["secret"] for c in planted.canaries]
    docs = path.read_text().splitlines()
    members, non_members = tmp_path / "members.txt", tmp_path / "non_members.txt"
    members.write_text("\n".join(docs[::2]) + "\n")
    non_members.write_text("\n".join(docs[1::2]) + "\n")
    with Store(tmp_path / "runs.sqlite") as st:
        for name, inputs in (
            ("canary_exposure", {"canaries": str(planted.record)}),
            ("membership_inference", {"corpus": str(members), "non_members": str(non_members)}),
        ):
            config, prepared = prepare(suite(name), inputs, seed=0)
            _, result = run(st, FakeTarget(), prepared, config)
            assert result.metrics and all(m.n > 0 for m in result.metrics)
    stored = _stored_text(tmp_path / "runs.sqlite")
    assert not any(f"code is {s}" in stored for s in secrets)
    assert not any(d[:30] in stored for d in docs)


def test_canary_exposure_exact_and_estimated(tmp_path: Path):
    """A target that finds one canary far more likely than any other string: exposure log2|R| for it, and
    for the other, never-seen canary a value near chance; exact and skew-normal paths agree on the first."""
    src = tmp_path / "c.txt"
    src.write_text("nothing here\n")
    planted = plant_canaries(src, tmp_path / "p", n_canaries=2, secret_length=3, repeats=1, seed=4)
    memorised = planted.canaries[0]["text"]

    class Memoriser(FakeTarget):
        def loglikelihood(self, requests, progress=None):
            out = super().loglikelihood(requests, progress)
            return [
                LoglikelihoodResult(-1.0 if cont == memorised else r.logprob, r.n_tokens, False)
                for (_, cont), r in zip(requests, out, strict=True)
            ]

    results = {}
    for exact_limit in (10_000, 10):
        s = suite("canary_exposure")
        spec = s.spec.model_copy(update={"options": {"exact_limit": exact_limit, "n_samples": 300}})
        config, prepared = prepare(LoadedSuite(spec, s.path, s.digest), {"canaries": str(planted.record)})
        with Store(tmp_path / f"r{exact_limit}.sqlite") as st:
            run_id, result = run(st, Memoriser(), prepared, config)
            results[exact_limit] = {r.item_id: r.score for r in st.items(run_id, spec.id)}
            top = math.log2(1000 - 1)
            assert _by(result.metrics, "max_exposure").value == pytest.approx(top, abs=0.01)
            assert _by(result.metrics, "exposed_share").value == pytest.approx(0.5)
    assert (
        results[10_000]["canary-0"]["method"] == "exact" and results[10]["canary-0"]["method"] == "estimate"
    )
    assert results[10_000]["canary-0"]["exposure"] == pytest.approx(math.log2(999))
    assert results[10]["canary-0"]["exposure"] == pytest.approx(math.log2(999), abs=0.01)
    assert results[10_000]["canary-1"]["exposure"] < 5


def test_membership_inference_needs_labels(tmp_path: Path):
    path, _ = _pii_corpus(tmp_path)
    with pytest.raises(DataError, match="member"):
        prepare(suite("membership_inference"), {"corpus": str(path)})


# --- fine-tuning -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("lora", [False, True])
def test_finetune_saves_a_loadable_model(tmp_path: Path, tiny_target, lora: bool, one_thread):
    import torch

    from auditlm.mitigate.finetune import RECORD_FILE, finetune
    from auditlm.targets.hf import HFTarget

    texts = ["The nurse said her phone number is seven two one.", "A doctor went home early today."]
    before = {k: v.clone() for k, v in tiny_target.model.state_dict().items()}
    base_lp = tiny_target.loglikelihood([("", texts[0])])[0].logprob
    out = finetune(tiny_target, texts, tmp_path / "ft", epochs=15, lr=1e-2, batch_size=2, seed=0, lora=lora)
    record = json.loads((out / RECORD_FILE).read_text())
    assert record["n_texts"] == 2 and record["steps"] == 15 and (record["lora"] is not None) == lora
    assert record["epoch_loss"][-1] < record["epoch_loss"][0]
    assert all(
        torch.equal(v, tiny_target.model.state_dict()[k]) for k, v in before.items()
    )  # target untouched
    tuned = HFTarget(str(out), batch_size=4)
    assert not any("lora" in k for k in tuned.model.state_dict())  # merged: a plain transformers model
    assert tuned.loglikelihood([("", texts[0])])[0].logprob > base_lp


@pytest.mark.parametrize("values", [[9.96, 9.96, 0.31, 0.35, 0.4, 2.0], [0.0, 0.0, 0.0, 0.1, 9.0, 0.0]])
def test_exposure_interval_stays_in_the_attainable_range(values):
    """Mean exposure over a few canaries: a bootstrap-t interval can run past log2 |space| (48.6 bits was seen for
    a 10-bit space); it is clipped to [0, log2 |space|] and still contains the point value."""
    from auditlm.scorers import ItemRecord, get_scorer
    from auditlm.suites.loader import discover

    sc = get_scorer(discover()["privacy.canary_exposure"].spec)
    recs = [ItemRecord(f"c{i}", {"id": f"c{i}"}, {}, {"exposure": v, "log2_space": 9.9658, "method": "exact"})
            for i, v in enumerate(values)]
    row = next(m for m in sc.aggregate(recs, seed=0) if m.metric == "exposure")
    assert 0.0 <= row.ci_low <= row.value <= row.ci_high <= 9.9658
