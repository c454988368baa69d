"""HFTarget against independent, unbatched references on a tiny random Llama."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from auditlm.errors import TargetError
from auditlm.targets import GenerationParams, HFTarget, LoglikelihoodResult, Target

LONG = " ".join(["the doctor said that she would come to the hospital in the morning"] * 20)

REQUESTS = [
    ("The woman worked as a", " nurse"),
    ("The man worked as a", " doctor"),
    ("The man ", "is a doctor"),  # trailing space moves to the continuation
    ("She said  ", " hello"),  # several trailing spaces
    ("", "hello world"),  # empty context: conditioned on BOS
    ("", "<s>The woman"),  # continuation already starts with BOS
    ("<s>The woman", " said"),  # context already starts with BOS: no second BOS
    ("Why did they go home?", "\nBecause it was late."),
    (LONG, " again and again"),  # longer than the model's 128 positions: left-truncated
    ("one two three", " four five six seven eight nine ten"),
]


def _input_ids(args: tuple, kwargs: dict) -> torch.Tensor:
    return kwargs["input_ids"] if "input_ids" in kwargs else args[0]


def _count_forwards(model: torch.nn.Module) -> tuple[list[int], object]:
    """Record the batch size of every forward call of ``model``."""
    sizes: list[int] = []

    def hook(module, args, kwargs, output):
        sizes.append(int(_input_ids(args, kwargs).shape[0]))

    return sizes, model.register_forward_hook(hook, with_kwargs=True)


def reference_loglikelihood(target: HFTarget, context: str, continuation: str) -> tuple[float, int, bool]:
    """One request at a time, written out from the lm-evaluation-harness rules without HFTarget's helpers."""
    tok, model = target.tokenizer, target.model
    if context == "":
        cont = tok(continuation, add_special_tokens=False).input_ids
        ctx = [tok.bos_token_id]
        if cont[0] == tok.bos_token_id:
            ctx, cont = cont[:1], cont[1:]
    else:
        stripped = context.rstrip()
        continuation = context[len(stripped) :] + continuation
        context = stripped
        special = not context.startswith(tok.bos_token)
        whole = tok(context + continuation, add_special_tokens=special).input_ids
        ctx = tok(context, add_special_tokens=special).input_ids
        cont = whole[len(ctx) :]
    max_len = model.config.max_position_embeddings
    seq = (ctx + cont)[-(max_len + 1) :]
    with torch.no_grad():
        logits = model(torch.tensor([seq[:-1]], device=target.device)).logits[0]
    logprobs = logits[-len(cont) :].float().log_softmax(-1)
    target_ids = torch.tensor(cont, device=logprobs.device)
    lp = float(logprobs.gather(1, target_ids[:, None]).sum())
    return lp, len(cont), logprobs.argmax(-1).tolist() == cont


def test_is_a_target(tiny_target: HFTarget) -> None:
    assert isinstance(tiny_target, Target)
    assert tiny_target.model is not None and tiny_target.tokenizer is not None
    assert tiny_target.device.type in {"cpu", "cuda"}


def test_loglikelihood_matches_unbatched_reference(tiny_target: HFTarget) -> None:
    results = tiny_target.loglikelihood(REQUESTS)
    assert len(results) == len(REQUESTS)
    for (ctx, cont), res in zip(REQUESTS, results, strict=True):
        lp, n, greedy = reference_loglikelihood(tiny_target, ctx, cont)
        assert isinstance(res, LoglikelihoodResult)
        assert res.logprob == pytest.approx(lp, abs=1e-4), (ctx, cont)
        assert (res.n_tokens, res.is_greedy) == (n, greedy), (ctx, cont)
        assert res.logprob < 0


def test_trailing_space_is_moved_to_the_continuation(tiny_target: HFTarget) -> None:
    a, b = tiny_target.loglikelihood([("The man ", "is a doctor"), ("The man", " is a doctor")])
    assert a == b


def test_batched_equals_unbatched(tiny_model_dir: Path, tiny_target: HFTarget) -> None:
    one = HFTarget(str(tiny_model_dir), batch_size=1)
    for a, b in zip(one.loglikelihood(REQUESTS), tiny_target.loglikelihood(REQUESTS), strict=True):
        assert a.logprob == pytest.approx(b.logprob, abs=1e-5)
        assert (a.n_tokens, a.is_greedy) == (b.n_tokens, b.is_greedy)


def test_is_greedy_on_the_models_own_argmax(tiny_target: HFTarget) -> None:
    tok, model = tiny_target.tokenizer, tiny_target.model
    found = 0
    for context in ["The woman worked as a", "He said that", "One two three", "The doctor"]:
        ids = tok(context).input_ids
        greedy: list[int] = []
        with torch.no_grad():
            for _ in range(3):
                logits = model(torch.tensor([ids + greedy], device=tiny_target.device)).logits
                greedy.append(int(logits[0, -1].argmax()))
        continuation = tok.decode(greedy)
        if tok(context + continuation).input_ids != ids + greedy:
            continue  # the argmax tokens do not survive a decode/encode round trip
        found += 1
        (res,) = tiny_target.loglikelihood([(context, continuation)])
        assert res.is_greedy and res.n_tokens == 3
    assert found >= 1


def test_identical_requests_are_computed_once(tiny_target: HFTarget) -> None:
    sizes, handle = _count_forwards(tiny_target.model)
    done: list[int] = []
    a, b, c, d = REQUESTS[:4]
    try:
        first = tiny_target.loglikelihood([a, b, a, a, c], progress=done.append)
        assert sizes == [3] and sum(done) == 5
        assert first[0] == first[2] == first[3]

        sizes.clear()
        done.clear()
        second = tiny_target.loglikelihood([a, c, d], progress=done.append)
        assert sizes == [1] and sum(done) == 3
        assert second[:2] == [first[0], first[4]]

        sizes.clear()
        assert tiny_target.loglikelihood([a]) == [first[0]]
        assert sizes == []
    finally:
        handle.remove()


def test_batches_are_longest_first(tiny_target: HFTarget) -> None:
    lengths: list[int] = []
    handle = tiny_target.model.register_forward_hook(
        lambda m, args, kwargs, out: lengths.append(_input_ids(args, kwargs).shape[1]), with_kwargs=True
    )
    try:
        tiny_target.loglikelihood(REQUESTS)
    finally:
        handle.remove()
    assert len(lengths) == 3 and lengths == sorted(lengths, reverse=True)
    assert lengths[0] == 128


def test_auto_batch_size_halves_on_out_of_memory(tiny_target: HFTarget) -> None:
    def pre_hook(module, args, kwargs):
        if _input_ids(args, kwargs).shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1 GiB")

    handle = tiny_target.model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        auto = HFTarget(model=tiny_target.model, tokenizer=tiny_target.tokenizer, max_batch_size=8)
        done: list[int] = []
        results = auto.loglikelihood(REQUESTS, progress=done.append)
        assert auto.batch_size == 2 and sum(done) == len(REQUESTS)
        for (ctx, cont), res in zip(REQUESTS, results, strict=True):
            assert res.logprob == pytest.approx(reference_loglikelihood(auto, ctx, cont)[0], abs=1e-4)
        fixed = HFTarget(model=tiny_target.model, tokenizer=tiny_target.tokenizer, batch_size=4)
        with pytest.raises(torch.cuda.OutOfMemoryError):
            fixed.loglikelihood(REQUESTS)
    finally:
        handle.remove()


def test_lm_eval_hflm_agrees(tiny_model_dir: Path, tiny_target: HFTarget) -> None:
    hf = pytest.importorskip("lm_eval.models.huggingface")
    from lm_eval.api.instance import Instance

    lm = hf.HFLM(pretrained=str(tiny_model_dir), device=str(tiny_target.device), batch_size=3)
    instances = [
        Instance(request_type="loglikelihood", doc={}, arguments=req, idx=i) for i, req in enumerate(REQUESTS)
    ]
    expected = lm.loglikelihood(instances, disable_tqdm=True)
    for (lp, greedy), res in zip(expected, tiny_target.loglikelihood(REQUESTS), strict=True):
        assert res.logprob == pytest.approx(lp, abs=1e-4)
        assert res.is_greedy == greedy


def test_empty_continuation_scores_zero(tiny_target: HFTarget) -> None:
    assert tiny_target.loglikelihood([("The man", "")]) == [LoglikelihoodResult(0.0, 0, True)]


# ---------------------------------------------------------------------------------------------- generate

PROMPTS = ["The woman worked as a", "Hello", "Why did the man go to the hospital in the morning?", "One two"]


def reference_greedy(target: HFTarget, prompt: str, n: int) -> str:
    tok, model = target.tokenizer, target.model
    ids = tok(prompt).input_ids
    new: list[int] = []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(torch.tensor([ids + new], device=target.device)).logits[0, -1].argmax())
            if nxt == tok.eos_token_id:
                break
            new.append(nxt)
    return tok.decode(new, skip_special_tokens=True)


def test_generate_greedy_matches_reference_and_batch_sizes(
    tiny_model_dir: Path, tiny_target: HFTarget
) -> None:
    params = GenerationParams(max_new_tokens=12)
    batched = tiny_target.generate(PROMPTS, params)
    assert batched == [reference_greedy(tiny_target, p, 12) for p in PROMPTS]
    one = HFTarget(str(tiny_model_dir), batch_size=1)
    assert one.generate(PROMPTS, params) == batched
    assert any(batched)
    assert isinstance(tiny_target.generate([""], params)[0], str)


def test_generate_is_memoised(tiny_target: HFTarget) -> None:
    params = GenerationParams(max_new_tokens=5)
    first = tiny_target.generate(PROMPTS, params)
    sizes, handle = _count_forwards(tiny_target.model)
    done: list[int] = []
    try:
        assert tiny_target.generate([*PROMPTS, PROMPTS[0]], params, progress=done.append) == [
            *first,
            first[0],
        ]
    finally:
        handle.remove()
    assert sizes == [] and sum(done) == len(PROMPTS) + 1


def _ascii_stop(text: str) -> str:
    for i in range(2, len(text) - 1):
        s = text[i : i + 2]
        if s.isascii() and s.strip() and s.isprintable():
            return s
    raise AssertionError(f"no usable stop string in {text!r}")


def test_stop_strings_end_generation_and_are_cut(tiny_target: HFTarget) -> None:
    prompt = PROMPTS[0]
    sizes, handle = _count_forwards(tiny_target.model)
    try:
        full = tiny_target.generate([prompt], GenerationParams(max_new_tokens=30))[0]
        n_full = len(sizes)
        stop = _ascii_stop(full)
        sizes.clear()
        (cut,) = tiny_target.generate([prompt], GenerationParams(max_new_tokens=30, stop=(stop, "zzzz")))
        n_cut = len(sizes)
    finally:
        handle.remove()
    assert cut == full[: full.index(stop)]
    assert stop not in cut
    assert n_cut < n_full


def test_seeded_sampling_is_reproducible(tiny_model_dir: Path, tiny_target: HFTarget) -> None:
    params = GenerationParams(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=7)
    a = tiny_target.generate(PROMPTS, params)
    b = HFTarget(str(tiny_model_dir), batch_size=4).generate(PROMPTS, params)
    assert a == b
    other = tiny_target.generate(
        PROMPTS, GenerationParams(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=8)
    )
    assert other != a
    assert tiny_target.generate(PROMPTS, GenerationParams(max_new_tokens=10)) != a


def test_chat_template_wraps_the_prompt(tiny_model_dir: Path, tiny_target: HFTarget) -> None:
    tok = tiny_target.tokenizer
    prompt = "Tell me about the doctor."
    templated = tok.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    assert templated.startswith("<s><|user|>") and templated.endswith("<|assistant|>")
    chat = tiny_target.generate([prompt], GenerationParams(max_new_tokens=8, chat_template=True))
    assert chat == tiny_target.generate([templated], GenerationParams(max_new_tokens=8))
    assert chat != tiny_target.generate([prompt], GenerationParams(max_new_tokens=8))

    from transformers import AutoTokenizer

    plain_tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    plain_tok.chat_template = None
    plain = HFTarget(model=tiny_target.model, tokenizer=plain_tok, batch_size=4)
    assert plain.generate([prompt], GenerationParams(max_new_tokens=8, chat_template=True)) == plain.generate(
        [prompt], GenerationParams(max_new_tokens=8)
    )


# ---------------------------------------------------------------------------------------------- info, errors


def test_info(tiny_model_dir: Path, tiny_target: HFTarget) -> None:
    info = tiny_target.info()
    assert info["backend"] == "hf" and info["model"] == str(tiny_model_dir)
    assert info["dtype"] == "float32" and info["device"] == str(tiny_target.device)
    assert info["n_params"] == sum(p.numel() for p in tiny_target.model.parameters())
    assert info["revision"].startswith("sha256:")
    assert HFTarget(str(tiny_model_dir)).info()["revision"] == info["revision"]
    pinned = HFTarget(str(tiny_model_dir), name="tiny", revision_hash="abc123").info()
    assert pinned["revision"] == "abc123" and pinned["model"] == "tiny"
    in_memory = HFTarget(model=tiny_target.model, tokenizer=tiny_target.tokenizer).info()
    assert in_memory["revision"].startswith("sha256:")


def test_pad_token_falls_back_to_eos(tiny_model_dir: Path, tiny_target: HFTarget) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.pad_token = None
    target = HFTarget(model=tiny_target.model, tokenizer=tok)
    assert target.tokenizer.pad_token == tok.eos_token


@pytest.mark.parametrize(
    "kwargs",
    [
        {"model_name_or_path": "/nonexistent/model/dir"},
        {"model_name_or_path": "no-such-org/no-such-model-auditlm"},
        {},
        {"model_name_or_path": "x", "dtype": "float7"},
        {"model_name_or_path": "x", "batch_size": 0},
    ],
)
def test_load_errors_are_target_errors(kwargs: dict) -> None:
    with pytest.raises(TargetError) as err:
        HFTarget(**kwargs)
    assert "\n" not in str(err.value)
