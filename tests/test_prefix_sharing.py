"""Shared-prefix scoring (token trees) equals plain per-request scoring on a tiny random Llama."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from auditlm.targets import HFTarget, LoglikelihoodResult
from auditlm.targets.hf import MIN_SHARED_TOKENS

CONTEXT = "The doctor and the nurse were at the hospital in the morning.\n\nQ: Who was kind to the child?\nA:"
ANSWERS = [
    "The doctor",
    "The nurse",
    "Unknown",
    "Cannot be determined",
    "Not enough information",
    "Can't answer",
]
MULTIPLE_CHOICE = [(CONTEXT, " " + a) for a in ANSWERS]

PAIRS = [  # CrowS-like: empty context, a common start, different endings
    ("", "The poor man worked at the office every day and was very tired."),
    ("", "The poor woman worked at the office every day and was very tired."),
    ("", "The man worked at the office every day and was very tired."),
    ("", "The man worked at the office every day and was very happy."),
    ("", "She said that the teacher was very smart."),
    ("", "She said that the teacher was very kind and calm."),
    ("", "Hello"),
    ("", "<s>The woman said hello"),  # continuation starts with BOS
]

LENGTHS = [  # one context, continuations of 1 to 7 tokens; two of them share the whole input
    ("one two three four five six", " seven"),
    ("one two three four five six", " eight"),
    ("one two three four five six", " seven eight"),
    ("one two three four five six", " seven eight nine ten"),
    ("one two three four five six", " seven eight nine ten and then some more"),
]

NESTED = [  # one request's whole input is a prefix of another's, with a context ending inside it
    ("The man worked", " as a doctor in the city"),
    ("The man worked as a doctor", " in the city for ten years"),
    ("The man worked as a doctor in the city", " again"),
    ("The man ", "worked as a teacher"),  # trailing space moves to the continuation
]

LONG = " ".join(["the doctor said that she would come to the hospital in the morning"] * 20)
UNRELATED = [
    ("Why did they go home?", "\nBecause it was late."),
    ("<s>The woman", " said"),
    ("She said  ", " hello"),
    (LONG, " again"),  # left-truncated to the model's 128 positions
    (LONG, " again and again"),
    (LONG, " and again"),
    (LONG, " said"),
    ("The woman worked as a", ""),  # empty continuation
]

ALL = MULTIPLE_CHOICE + PAIRS + LENGTHS + NESTED + UNRELATED


def _pair(model: torch.nn.Module, tokenizer, batch_size: int) -> tuple[HFTarget, HFTarget]:
    shared = HFTarget(model=model, tokenizer=tokenizer, batch_size=batch_size)
    plain = HFTarget(model=model, tokenizer=tokenizer, batch_size=batch_size, prefix_sharing=False)
    return shared, plain


def assert_same(got: list[LoglikelihoodResult], expected: list[LoglikelihoodResult], requests) -> None:
    assert len(got) == len(expected) == len(requests)
    for g, e, r in zip(got, expected, requests, strict=True):
        assert g.logprob == pytest.approx(e.logprob, abs=1e-4), r
        assert (g.n_tokens, g.is_greedy) == (e.n_tokens, e.is_greedy), r


class _Forwards:
    """Records, for every forward call, the input shape and whether a 4D attention mask was passed."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.calls: list[tuple[tuple[int, int], bool]] = []
        self.max_position: list[int] = []
        self._handle = model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        mask = kwargs.get("attention_mask")
        self.calls.append((tuple(ids.shape), mask is not None and mask.ndim == 4))
        pos = kwargs.get("position_ids")
        self.max_position.append(ids.shape[1] - 1 if pos is None else int(pos.max()))

    @property
    def tokens(self) -> int:
        return sum(b * n for (b, n), _ in self.calls)

    def close(self) -> None:
        self._handle.remove()


@pytest.mark.parametrize("batch_size", [1, 2, 4, 64])
@pytest.mark.parametrize(
    "requests",
    [MULTIPLE_CHOICE, PAIRS, LENGTHS, NESTED, UNRELATED, ALL],
    ids=["multiple_choice", "pairs", "lengths", "nested", "unrelated", "all"],
)
def test_shared_prefixes_equal_plain_path(tiny_target: HFTarget, requests, batch_size: int) -> None:
    shared, plain = _pair(tiny_target.model, tiny_target.tokenizer, batch_size)
    assert_same(shared.loglikelihood(requests), plain.loglikelihood(requests), requests)


def test_order_and_duplicates_are_preserved(tiny_target: HFTarget) -> None:
    shared, plain = _pair(tiny_target.model, tiny_target.tokenizer, 4)
    requests = list(reversed(ALL)) + ALL[::3] + [MULTIPLE_CHOICE[2]] * 3
    done: list[int] = []
    got = shared.loglikelihood(requests, progress=done.append)
    assert sum(done) == len(requests)
    assert_same(got, plain.loglikelihood(requests), requests)
    assert got[-1] == got[-2] == got[-3] == shared.loglikelihood([MULTIPLE_CHOICE[2]])[0]


def _distinct_prefixes(inputs: list[list[int]]) -> int:
    """The size of the token trie over ``inputs``: how many tokens a forward pass per trie node computes."""
    return len({tuple(x[: i + 1]) for x in inputs for i in range(len(x))})


def test_shared_tokens_are_computed_once(tiny_target: HFTarget) -> None:
    shared, plain = _pair(tiny_target.model, tiny_target.tokenizer, 64)
    inputs = shared._model_inputs([shared._encode_request(*r) for r in MULTIPLE_CHOICE])
    fw = _Forwards(tiny_target.model)
    try:
        shared.loglikelihood(MULTIPLE_CHOICE)
        shared_calls = list(fw.calls)
        fw.calls.clear()
        plain.loglikelihood(MULTIPLE_CHOICE)
        plain_calls = list(fw.calls)
    finally:
        fw.close()
    # One row holds the context once and every answer after it; the plain path repeats the context per answer.
    assert shared_calls == [((1, _distinct_prefixes(inputs)), True)]
    assert plain_calls == [((len(ANSWERS), max(map(len, inputs))), False)]
    assert _distinct_prefixes(inputs) * 3 < sum(map(len, inputs))


def test_short_common_prefixes_are_not_merged(tiny_target: HFTarget) -> None:
    tok = tiny_target.tokenizer
    requests = [("The woman worked as a", " nurse"), ("The man worked as a", " doctor")]
    shared_len = 0
    a, b = (tok(c + x).input_ids for c, x in requests)
    while a[shared_len] == b[shared_len]:
        shared_len += 1
    assert shared_len < MIN_SHARED_TOKENS
    fw = _Forwards(tiny_target.model)
    try:
        tiny_target.loglikelihood(requests)
    finally:
        fw.close()
    assert [shape[0] for shape, _ in fw.calls] == [2]


def test_memoised_and_split_across_calls(tiny_target: HFTarget) -> None:
    shared, plain = _pair(tiny_target.model, tiny_target.tokenizer, 4)
    first = shared.loglikelihood(MULTIPLE_CHOICE[:3])
    fw = _Forwards(tiny_target.model)
    try:
        assert shared.loglikelihood(MULTIPLE_CHOICE[:3]) == first
        assert fw.calls == []
        rest = shared.loglikelihood(MULTIPLE_CHOICE)
    finally:
        fw.close()
    assert rest[:3] == first
    assert len(fw.calls) == 1
    assert_same(rest, plain.loglikelihood(MULTIPLE_CHOICE), MULTIPLE_CHOICE)


def test_out_of_memory_backoff_on_token_trees(tiny_target: HFTarget) -> None:
    def pre_hook(module, args, kwargs):
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        if ids.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")

    handle = tiny_target.model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        auto = HFTarget(model=tiny_target.model, tokenizer=tiny_target.tokenizer, max_batch_size=16)
        done: list[int] = []
        got = auto.loglikelihood(ALL, progress=done.append)
        assert auto.batch_size == 2 and sum(done) == len(ALL)
    finally:
        handle.remove()
    plain = HFTarget(model=tiny_target.model, tokenizer=tiny_target.tokenizer, prefix_sharing=False)
    assert_same(got, plain.loglikelihood(ALL), ALL)


def test_eager_attention_takes_an_additive_mask(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert model.config._attn_implementation == "eager"
    shared, plain = _pair(model, tok, 4)
    fw = _Forwards(model)
    try:
        got = shared.loglikelihood(ALL)
    finally:
        fw.close()
    assert all(is_4d for _, is_4d in fw.calls)
    assert_same(got, plain.loglikelihood(ALL), ALL)


def test_inputs_beyond_a_sliding_window_take_the_plain_path(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model.config.sliding_window = 12  # routing only: this Llama never slides
    shared, plain = _pair(model, tok, 64)
    fw = _Forwards(model)
    try:
        got = shared.loglikelihood(ALL)
    finally:
        fw.close()
    assert_same(got, plain.loglikelihood(ALL), ALL)
    kinds = [is_4d for _, is_4d in fw.calls]
    assert sorted(kinds) == [False, True]
    tree_call, plain_call = kinds.index(True), kinds.index(False)
    assert fw.max_position[tree_call] < 12 < fw.max_position[plain_call]


def test_models_without_tree_attention_use_the_plain_path(tiny_target: HFTarget, monkeypatch) -> None:
    monkeypatch.setattr(type(tiny_target.model), "_supports_attention_backend", False)
    shared, plain = _pair(tiny_target.model, tiny_target.tokenizer, 4)
    fw = _Forwards(tiny_target.model)
    try:
        got = shared.loglikelihood(ALL)
    finally:
        fw.close()
    assert fw.calls and not any(is_4d for _, is_4d in fw.calls)
    assert_same(got, plain.loglikelihood(ALL), ALL)


@pytest.mark.parametrize(
    "requests",
    [MULTIPLE_CHOICE, PAIRS[2:4], LENGTHS, NESTED],
    ids=["multiple_choice", "pair", "lengths", "nested"],
)
def test_token_tree_layout(tiny_target: HFTarget, requests) -> None:
    """Inputs sharing a prefix become one pre-order tree; each node sees exactly its ancestors and itself."""
    encoded = [tiny_target._encode_request(*r) for r in requests]
    inputs = tiny_target._model_inputs(encoded)
    (tree,) = tiny_target._token_trees(encoded)
    assert sorted(i for i, _, _ in tree.members) == list(range(len(requests)))
    assert len(tree.tokens) == _distinct_prefixes(inputs)
    vis = tree.visibility()
    for i, nodes, cont in tree.members:
        # Walking the path back from its last node through parents gives back the request's input tokens.
        path = [nodes[-1]]
        while tree.parent[path[-1]] >= 0:
            path.append(tree.parent[path[-1]])
        path.reverse()
        assert [tree.tokens[n] for n in path] == inputs[i]
        assert [tree.depth[n] for n in path] == list(range(len(inputs[i])))
        assert nodes == path[len(path) - len(cont) :]
        last = path[-1]
        assert vis[last].nonzero().flatten().tolist() == path


def test_batches_of_wide_trees_are_capped_by_mask_size(tiny_target: HFTarget, monkeypatch) -> None:
    import auditlm.targets.hf as hf

    monkeypatch.setattr(hf, "_MASK_ELEMENTS", 2 * 40 * 40)
    shared, plain = _pair(tiny_target.model, tiny_target.tokenizer, 64)
    fw = _Forwards(tiny_target.model)
    try:
        got = shared.loglikelihood(ALL)
    finally:
        fw.close()
    for (rows, width), _ in fw.calls:
        assert rows == 1 or rows * width * width <= 2 * 40 * 40
    assert any(rows > 1 for (rows, _), _ in fw.calls)
    assert_same(got, plain.loglikelihood(ALL), ALL)
