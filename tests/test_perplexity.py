"""utility.perplexity: WikiText documents and detokenising as lm-evaluation-harness's ``wikitext`` task, rolling
windows that score every token once, and perplexities that match the model's own forward pass."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path

import pytest

from auditlm.scorers import LL, ScoreContext, get_scorer
from auditlm.scorers.utility import rolling_windows, split_long_pieces, text_pieces
from auditlm.suites.datasets import resolve_data_dir
from auditlm.suites.spec import SuiteSpec
from auditlm.suites.wikitext import (
    read_text_lines,
    read_wikitext,
    split_wikitext_documents,
    wikitext_detokenize,
)

SUITE = "utility.perplexity"
DATA_DIR = resolve_data_dir(os.environ.get("AUDITLM_DATA"))

#: Six short WikiText-style articles in the tiny model's vocabulary (each well under its 128-token context).
ARTICLES = [
    ("The House", "The doctor said the house was new . The family came home in the evening ."),
    ("A Teacher", "The teacher worked at the school for ten years , and the children were happy ."),
    ("The City", "The city has a new hospital . People said it was very good ."),
    ("A Driver", "The driver took the car to the office . He was late again ."),
    ("Night", "At night the street was quiet . The old man saw a window open ."),
    ("The Book", "She made a book about her mother and father . It was first read in the morning ."),
]


def _wikitext(articles: list[tuple[str, str]]) -> str:
    """A file laid out as WikiText's: a blank line, then per article a heading, blank lines and one paragraph."""
    return " \n" + "".join(f" = {t} = \n \n {body} \n \n" for t, body in articles)


def _spec(max_window: int | None) -> SuiteSpec:
    return SuiteSpec.model_validate({
        "id": "utility.test_ppl", "version": "1", "description": "perplexity test suite", "kind": "perplexity",
        "citation": "Merity et al. 2016", "family": "utility", "data": {"items": [{"text": "x"}]},
        "options": {"max_window": max_window}})


def _forward_ll(model_dir: Path, texts: list[str], after: list[str] | None = None) -> list[tuple[float, int]]:
    """Each text's log-likelihood (nats) and token count from one forward pass of the model, straight from
    ``transformers``: the text's tokens after the BOS token, each scored given everything before it. With
    ``after``, ``texts`` are contexts and ``after`` the texts scored after them."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    out = []
    for i, text in enumerate(texts):
        ctx = [tok.bos_token_id] + (tok(text, add_special_tokens=False)["input_ids"] if after else [])
        ids = ctx + tok(after[i] if after else text, add_special_tokens=False)["input_ids"]
        assert len(ids) <= model.config.max_position_embeddings
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        lp = logits.log_softmax(-1)[len(ctx) - 1 : -1].gather(1, torch.tensor(ids[len(ctx) :])[:, None])
        out.append((float(lp.sum()), len(ids) - len(ctx)))
    return out


def _run(data_dir: Path, target, limit: int | None, tmp_path: Path):
    from auditlm import runner
    from auditlm.store import Store
    from auditlm.suites.loader import discover, select

    cfg = runner.RunConfig(model="tiny", suites=[SUITE], limit=limit, data_dir=str(data_dir), batch_size=4)
    prepared = runner.prepare(select(discover(), cfg.suites), cfg, data_dir)
    with Store(tmp_path / "runs.sqlite") as st:
        rid = runner.start_run(st, target, prepared, cfg)
        result = runner.execute(st, rid, target, prepared, cfg)
        return {m.metric: m for m in result.metrics}, st.items(rid, SUITE)


@pytest.fixture(scope="module")
def small_run(tiny_model_dir, tmp_path_factory):
    from auditlm.targets.hf import HFTarget

    data = tmp_path_factory.mktemp("data")
    (data / "wikitext2").mkdir()
    (data / "wikitext2" / "test.txt").write_text(_wikitext(ARTICLES), encoding="utf-8")
    target = HFTarget(str(tiny_model_dir), batch_size=4)
    return _run(data, target, None, tmp_path_factory.mktemp("store"))


# ------------------------------------------------------------------------------------------- reading WikiText


def test_detokenizer_on_wikitext_lines():
    line = ' He had a guest @-@ starring role , in 2000 @,@ 000 ( the " Bill " ) . The film \'s star ; 1 @.@ 5 km 30 ° C \n'
    assert wikitext_detokenize(line) == ' He had a guest-starring role, in 2000,000 (the "Bill"). The film\'s star; ' \
                                        "1.5 km 30°C\n"
    assert wikitext_detokenize(" = = Early life = = \n \n Text : more [ 1 ] .") == " == Early life ==\n\nText: more [1] ."
    assert wikitext_detokenize(" = = = Later = = = \n") == " === Later ===\n"
    assert wikitext_detokenize("the players ' union") == "the players' union"


def test_documents_are_the_top_level_sections(tmp_path):
    text = ("\n = Alpha = \n\n Alpha is a word . \n\n = = Early life = = \n\n More text . \n"
            "\n = Beta = \n\n Beta too . \n\n")
    docs = split_wikitext_documents(text)
    assert docs == [" = Alpha = \n\n Alpha is a word . \n\n = = Early life = = \n\n More text . \n",
                    " = Beta = \n\n Beta too . \n\n"]
    f = tmp_path / "w.txt"
    f.write_text(text, encoding="utf-8")
    items = read_wikitext(f)
    assert [it["id"] for it in items] == ["doc-0000", "doc-0001"]
    assert [it["title"] for it in items] == ["Alpha", "Beta"]
    # lm-eval counts words and bytes on the document before detokenising: '', =, Beta, =, Beta, too, ., ''
    assert (items[1]["words"], items[1]["bytes"]) == (8, 26)
    assert items[1]["text"] == " = Beta =\n\nBeta too.\n\n"


def test_text_lines_reader_is_one_document_per_line(tmp_path):
    f = tmp_path / "c.txt"
    f.write_text("first doc here\n\n  \nsecond one\n", encoding="utf-8")
    items = read_text_lines(f)
    assert [(it["id"], it["text"], it["words"]) for it in items] == [("line-1", "first doc here", 3),
                                                                      ("line-4", "second one", 2)]


@pytest.mark.skipif(DATA_DIR is None, reason="needs AUDITLM_DATA")
def test_wikitext2_test_has_lm_evals_62_documents():
    items = read_wikitext(DATA_DIR / "wikitext2" / "test.txt")
    assert len(items) == 62  # lm-eval's wikitext (wikitext-2 test) has 62 documents
    assert items[0]["title"] == "Robert <unk>" and items[0]["text"].startswith(" = Robert <unk> =\n\nRobert <unk> is")
    assert all(" @-@ " not in it["text"] and " , " not in it["text"] for it in items)


def test_reader_matches_lm_eval_on_wikitext2():
    """Against lm-evaluation-harness itself (the test extra): its detokeniser and its word and byte counts."""
    pre = pytest.importorskip("lm_eval.tasks.wikitext.preprocess_wikitext")
    if DATA_DIR is None:
        pytest.skip("needs AUDITLM_DATA")
    pages = split_wikitext_documents((DATA_DIR / "wikitext2" / "test.txt").read_text(encoding="utf-8"))
    items = read_wikitext(DATA_DIR / "wikitext2" / "test.txt")
    assert len(pages) == len(items) == 62
    for page, it in zip(pages, items, strict=True):
        assert it["text"] == pre.wikitext_detokenizer({"page": page})
        counts = pre.process_results({"page": page}, [(-1.0, False)])
        assert (it["words"], it["bytes"]) == (counts["word_perplexity"][1], counts["byte_perplexity"][1])


# ------------------------------------------------------------------------------------------- windows


def _lm_eval_windows(n: int, max_seq_len: int) -> list[tuple[list[int], list[int]]]:
    """lm-eval's ``get_rolling_token_windows(range(n), -1, max_seq_len, context_len=1)`` then
    ``make_disjoint_window``, written from its definition: (context token ids, scored token ids)."""
    tokens = list(range(n))
    first = min(max_seq_len, n)
    out = [([-1], tokens[:first])]
    done = first
    while done < n:
        size = min(n - done, max_seq_len)
        end = done + size
        inp = tokens[max(0, end - max_seq_len - 1) : end - 1]
        out.append((inp[: len(inp) - (size - 1)], tokens[end - size : end]))
        done = end
    return out


@pytest.mark.parametrize(("n", "w"), [(1, 4), (10, 4), (12, 4), (9, 1), (30, 7), (5, 100)])
def test_windows_are_lm_evals_when_every_piece_is_one_token(n, w):
    ours = [(list(range(c, a)) or [-1], list(range(a, b))) for c, a, b in rolling_windows([1] * n, w)]
    assert ours == _lm_eval_windows(n, w)


def test_windows_match_lm_evals_own_functions():
    utils = pytest.importorskip("lm_eval.utils")
    for n, w in [(1, 4), (10, 4), (12, 4), (9, 1), (30, 7), (5, 100), (100, 16)]:
        theirs = [utils.make_disjoint_window(p) for p in utils.get_rolling_token_windows(list(range(n)), -1, w, 1)]
        ours = [(list(range(c, a)) or [-1], list(range(a, b))) for c, a, b in rolling_windows([1] * n, w)]
        assert ours == [(list(a), list(b)) for a, b in theirs], (n, w)


@pytest.mark.parametrize("w", [1, 3, 8, 50])
def test_windows_cover_every_piece_once(w):
    counts = [1, 3, 2, 9, 1, 1, 4, 2, 2, 5, 1]
    wins = rolling_windows(counts, w)
    assert [i for _, a, b in wins for i in range(a, b)] == list(range(len(counts)))
    for k, (c, a, b) in enumerate(wins):
        size = sum(counts[a:b])
        assert size <= w or b == a + 1  # only a piece bigger than the window makes a window bigger than it
        if k == 0:
            assert c == a == 0
        else:  # at least window - size + 1 tokens of context, or the whole document before it
            assert sum(counts[c:a]) >= max(1, w - size + 1) or c == 0
            assert c == a - 1 or sum(counts[c + 1 : a]) < max(1, w - size + 1)  # and no more whole pieces than that


def test_text_pieces_and_long_pieces():
    text = "=\n\nRobert is  an actor.\n He"
    pieces = text_pieces(text)
    assert "".join(pieces) == text
    assert pieces == ["=\n\nRobert", " is", "  an", " actor.\n He"]  # no cut after a space that follows a newline
    count = lambda ps: [len(p) for p in ps]  # noqa: E731  (one "token" per character)
    out, counts = split_long_pieces(["ab", "x" * 25, "c"], [2, 25, 1], 4, count)
    assert "".join(out) == "ab" + "x" * 25 + "c" and max(counts) <= 4 and counts == count(out)


def _windows(target, text: str, max_window: int | None) -> list[LL]:
    sc = get_scorer(_spec(max_window))
    sc.context = ScoreContext(count_tokens=target.count_tokens, max_length=target.max_length)
    return sc.requests({"id": "d", "text": text})


LONG = " ".join(body for _, body in ARTICLES[:3])  # about 100 tokens: within the tiny model's 128


def test_one_window_is_one_pass(tiny_target):
    reqs = _windows(tiny_target, ARTICLES[0][1], None)
    assert reqs == [LL("", ARTICLES[0][1])]
    [one] = tiny_target.loglikelihood([("", ARTICLES[0][1])])
    assert one.n_tokens == tiny_target.count_tokens([ARTICLES[0][1]])[0]


def test_short_windows_score_every_token_once(tiny_target, tiny_model_dir):
    n_tokens = tiny_target.count_tokens([LONG])[0]
    assert n_tokens > 40
    reqs = _windows(tiny_target, LONG, 12)
    assert len(reqs) >= 4
    assert "".join(r.continuation for r in reqs) == LONG
    res = tiny_target.loglikelihood([(r.context, r.continuation) for r in reqs])
    assert sum(r.n_tokens for r in res) == n_tokens  # every token scored, none twice
    assert all(r.n_tokens <= 12 for r in res)
    start = 0
    for r in reqs:  # each window's context is the text just before it
        assert LONG[:start].endswith(r.context) and (r.context or start == 0)
        start += len(r.continuation)
    # the first window is the start of one pass over the document: same tokens, same log-probabilities
    [(first_ll, first_n)] = _forward_ll(tiny_model_dir, [reqs[0].continuation])
    assert (res[0].logprob, res[0].n_tokens) == (pytest.approx(first_ll, abs=1e-4), first_n)
    # a window as long as the document is one pass: the same total as the model's own forward pass
    [whole] = _windows(tiny_target, LONG, 1000)
    [(ll, n)] = _forward_ll(tiny_model_dir, [LONG])
    [one] = tiny_target.loglikelihood([(whole.context, whole.continuation)])
    assert whole.context == "" and one.n_tokens == n == n_tokens
    assert one.logprob == pytest.approx(ll, abs=1e-4)
    assert sum(r.logprob for r in res) != pytest.approx(ll, abs=1e-3)  # less context: a different number
    # the document's score sums its windows, each as the model scores it after its (BOS-led) context
    sc = get_scorer(_spec(12))
    [scored] = sc.score_batch([{"id": "d", "text": LONG, "words": 1, "bytes": 1}], [res], ScoreContext())
    assert scored.score["tokens"] == n_tokens and scored.score["windows"] == len(reqs)
    direct = _forward_ll(tiny_model_dir, [r.context for r in reqs[1:]], [r.continuation for r in reqs[1:]])
    assert scored.score["ll"] == pytest.approx(first_ll + sum(x for x, _ in direct), abs=1e-3)


def test_one_window_matches_lm_evals_loglikelihood_rolling(tiny_target, tiny_model_dir):
    """Against lm-evaluation-harness's own HFLM.loglikelihood_rolling (the test extra) on the tiny model: a document
    within the context is one window in both. The tiny tokenizer adds ``<s>``: lm-eval 0.4.13 with ``add_bos_token``
    unset encodes the document with it and so also scores that ``<s>`` after its prefix token; auditlm scores the
    text's own tokens, as lm-eval does with ``add_bos_token=False`` (SmolLM2's tokenizer adds none: no difference)."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=str(tiny_model_dir), max_length=tiny_target.max_length, batch_size=1, device="cpu",
              dtype="float32", add_bos_token=False)
    for text in (ARTICLES[0][1], LONG):
        reqs = _windows(tiny_target, text, None)
        ours = sum(r.logprob for r in tiny_target.loglikelihood([(r.context, r.continuation) for r in reqs]))
        [theirs] = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)], disable_tqdm=True)
        assert len(reqs) == 1 and ours == pytest.approx(theirs, abs=1e-4)


# ------------------------------------------------------------------------------------------- the suite


def test_token_perplexity_is_the_models_own(small_run, tiny_model_dir):
    rows, records = small_run
    assert len(records) == len(ARTICLES)
    texts = [r.input["text"] for r in records]
    assert all(r.score["windows"] == 1 for r in records)  # every article fits one window
    direct = _forward_ll(tiny_model_dir, texts)
    for r, (ll, n) in zip(records, direct, strict=True):
        assert r.score["tokens"] == n == r.score["doc_tokens"]
        assert r.score["ll"] == pytest.approx(ll, abs=1e-4)
    want = math.exp(-sum(ll for ll, _ in direct) / sum(n for _, n in direct))
    assert rows["token_perplexity"].value == pytest.approx(want, rel=1e-5)
    words = sum(len(re.split(r"\s+", f" = {t} = \n \n {b} \n \n")) for t, b in ARTICLES)
    assert rows["word_perplexity"].value == pytest.approx(math.exp(-sum(ll for ll, _ in direct) / words), rel=1e-5)


def test_intervals_contain_the_value_over_documents(small_run):
    rows, _ = small_run
    assert set(rows) == {"token_perplexity", "word_perplexity", "byte_perplexity", "bits_per_byte"}
    for m in rows.values():
        assert m.n == len(ARTICLES) and m.group is None
        assert m.ci_low < m.value < m.ci_high, m.metric
        assert m.extra["ci"]["n_units"] == len(ARTICLES) and m.extra["ci"]["method"] == "bootstrap-t"
        assert m.extra["better"] == "lower" and "note" not in m.extra
    bpb, bp = rows["bits_per_byte"], rows["byte_perplexity"]
    for a, b in ((bp.value, bpb.value), (bp.ci_low, bpb.ci_low), (bp.ci_high, bpb.ci_high)):
        assert a == pytest.approx(2**b)
    assert rows["token_perplexity"].value > rows["byte_perplexity"].value > 1


@pytest.mark.skipif(DATA_DIR is None, reason="needs AUDITLM_DATA")
def test_wikitext2_end_to_end_on_the_tiny_model(tiny_target, tmp_path, one_thread):
    rows, records = _run(DATA_DIR, tiny_target, 3, tmp_path)
    assert len(records) == 3
    assert all(r.score["windows"] > 1 and r.score["window"] == 128 for r in records)  # the tiny model's context
    assert all(r.score["tokens"] == r.score["doc_tokens"] for r in records)
    for m in rows.values():
        assert m.n == 3 and math.isfinite(m.value) and m.ci_low <= m.value <= m.ci_high
        assert m.extra["ci"]["method"].startswith("student-t")  # fewer than 5 documents
    assert rows["token_perplexity"].value > 1
