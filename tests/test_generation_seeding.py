"""Sampled generations are seeded per prompt: the same text whatever the batch size, order, out-of-memory
back-off or resume, through HFTarget and through the runner end to end."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch
import yaml

from auditlm import runner
from auditlm.errors import TargetError
from auditlm.metrics import stable_seed
from auditlm.store import Store
from auditlm.suites.loader import LoadedSuite, builtin_probes_dir
from auditlm.suites.spec import SuiteSpec
from auditlm.targets import FakeTarget, GenerationParams, HFTarget
from auditlm.targets.base import prompt_seeds
from auditlm.targets.hf import _PerRowSampler

PROMPTS = [
    "The woman worked as a",
    "Hello",
    "Why did the man go to the hospital in the morning?",
    "One two",
    "The doctor said that",
    "My friend is a very",
    "The teacher asked the student",
    "They went home because",
    "The old man and the young girl",
    "Every morning the nurse",
]
SAMPLED = GenerationParams(max_new_tokens=12, temperature=1.0, top_p=0.9, seed=5)
SEEDS = [stable_seed("test", i) for i in range(len(PROMPTS))]


def test_sampler_draws_from_the_warped_distribution() -> None:
    """A constructed case with a known answer: probabilities .5/.3/.15/.05, top-p .9 drops the last token and
    renormalises the rest (transformers' TopPLogitsWarper); temperature 2 flattens to p ** (1/2)."""
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    n = 40_000
    scores = p.log().repeat(n, 1)
    sampler = _PerRowSampler(list(range(n)), temperature=1.0, top_p=0.9)
    out = sampler(torch.zeros((n, 1), dtype=torch.long), scores)
    assert torch.isinf(out).sum(dim=-1).eq(3).all()  # exactly one token left per row
    freq = torch.bincount(out.argmax(dim=-1), minlength=4).double() / n
    expected = torch.tensor([0.5, 0.3, 0.15, 0.0], dtype=torch.float64) / 0.95
    assert freq[3] == 0
    assert torch.allclose(freq, expected, atol=0.01)

    hot = _PerRowSampler(list(range(n)), temperature=2.0, top_p=1.0)
    freq = torch.bincount(hot(torch.zeros((n, 1), dtype=torch.long), scores).argmax(-1), minlength=4).double() / n
    flat = p.double().sqrt() / p.double().sqrt().sum()
    assert torch.allclose(freq, flat, atol=0.01)

    # A row's draw depends on its seed alone, not on the rows around it.
    alone = [_PerRowSampler([s], 1.0, 0.9)(torch.zeros((1, 1), dtype=torch.long), scores[:1]).argmax() for s in range(50)]
    together = sampler.__class__(list(range(50)), 1.0, 0.9)(torch.zeros((50, 1), dtype=torch.long), scores[:50])
    assert [int(t) for t in alone] == together.argmax(-1).tolist()


@pytest.fixture(scope="module")
def by_one(tiny_model_dir: Path) -> list[str]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # the tiny model runs fastest on one thread (see the one_thread fixture)
    try:
        return HFTarget(str(tiny_model_dir), batch_size=1).generate(PROMPTS, SAMPLED, seeds=SEEDS)
    finally:
        torch.set_num_threads(before)


def test_sampled_text_is_independent_of_batch_size_and_order(tiny_model_dir: Path, by_one: list[str], one_thread) -> None:
    eight = HFTarget(str(tiny_model_dir), batch_size=8)
    assert eight.generate(PROMPTS, SAMPLED, seeds=SEEDS) == by_one
    order = list(range(len(PROMPTS)))
    random.Random(1).shuffle(order)
    shuffled = HFTarget(str(tiny_model_dir), batch_size=3).generate(
        [PROMPTS[i] for i in order], SAMPLED, seeds=[SEEDS[i] for i in order]
    )
    assert shuffled == [by_one[i] for i in order]
    # Draws are not all alike: different prompts differ, and other seeds give other texts.
    assert len(set(by_one)) == len(PROMPTS) and all(by_one)
    other = eight.generate(PROMPTS, SAMPLED, seeds=[s + 1 for s in SEEDS])
    assert sum(a != b for a, b in zip(other, by_one, strict=True)) >= 8
    # The same prompt twice with two seeds is two draws; with one seed, one.
    twice = eight.generate([PROMPTS[0]] * 3, SAMPLED, seeds=[SEEDS[0], SEEDS[0] + 1, SEEDS[0]])
    assert twice[0] == twice[2] == by_one[0] and twice[1] != twice[0]


def test_sampled_text_survives_an_out_of_memory_back_off(tiny_model_dir: Path, by_one: list[str], one_thread) -> None:
    target = HFTarget(str(tiny_model_dir), batch_size="auto", max_batch_size=8)
    forwards = {"n": 0}

    def pre_hook(module, args, kwargs):
        forwards["n"] += 1
        if forwards["n"] == 4:  # mid-way through the first batch's generation: some draws already made
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = target.model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    try:
        assert target.generate(PROMPTS, SAMPLED, seeds=SEEDS) == by_one
    finally:
        handle.remove()
    assert forwards["n"] > 4 and target.batch_size == 4


def test_greedy_ignores_seeds_and_default_seeds_follow_the_prompt(tiny_model_dir: Path, by_one: list[str], one_thread) -> None:
    target = HFTarget(str(tiny_model_dir), batch_size=4)
    greedy = GenerationParams(max_new_tokens=12)
    assert target.generate(PROMPTS, greedy, seeds=SEEDS) == target.generate(PROMPTS, greedy)
    # Without seeds each prompt gets stable_seed(params.seed, "prompt", prompt): the same draw in any company.
    alone = HFTarget(str(tiny_model_dir), batch_size=1).generate(PROMPTS[:3], SAMPLED)
    assert target.generate(PROMPTS, SAMPLED)[:3] == alone
    assert target.generate(PROMPTS[:3], SAMPLED, seeds=prompt_seeds(PROMPTS[:3], SAMPLED)) == alone


def test_seeds_must_match_the_prompts(tiny_target: HFTarget) -> None:
    with pytest.raises(TargetError, match="2 seeds for 3 prompts"):
        tiny_target.generate(PROMPTS[:3], SAMPLED, seeds=[1, 2])
    with pytest.raises(TargetError, match="non-negative integers"):
        FakeTarget().generate(["a"], SAMPLED, seeds=[-1])


def test_fake_target_responder_may_take_the_seed() -> None:
    fake = FakeTarget(responder=lambda prompt, seed: f" {prompt}:{seed}")
    assert fake.generate(["a", "b"], SAMPLED, seeds=[3, 4]) == [" a:3", " b:4"]
    assert fake.gen_seeds == [3, 4]
    assert FakeTarget(responder=str.upper).generate(["a"], SAMPLED) == ["A"]


# ---------------------------------------------------------------------------------------------- runner


def _honest_suite(k: int = 4) -> LoadedSuite:
    raw = yaml.safe_load((builtin_probes_dir() / "bias" / "honest.yaml").read_text())
    raw["options"]["k"] = k
    raw["generation"].update(temperature=1.0, top_p=0.9, max_new_tokens=12)
    return LoadedSuite(SuiteSpec.model_validate(raw), builtin_probes_dir() / "bias" / "honest.yaml", "x")


ITEMS = [
    {"id": f"t{i}", "prompt": p, "set": "binary", "category": "female", "identity": "woman", "raw": f"r{i}"}
    for i, p in enumerate(PROMPTS[:6])
]


@pytest.fixture(autouse=True)
def _lexicon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """bias.honest needs a HurtLex file; a one-lemma lexicon stands in (the draws, not the scores, are tested)."""
    lex = tmp_path / "hurtlex.tsv"
    lex.write_text("lemma\tcategory\tlevel\nidiot\tdmc\tconservative\n")
    monkeypatch.setenv("AUDITLM_HURTLEX", str(lex))


def _completions(store: Store, run_id: str, suite_id: str) -> dict[str, list[str]]:
    return {r.item_id: r.output["completions"] for r in store.items(run_id, suite_id)}


class StopAfter:
    """Delegates to ``inner`` and raises KeyboardInterrupt on generate call number ``n`` (a killed run)."""

    def __init__(self, inner, n: int) -> None:
        self.inner, self.name, self.n, self.calls, self.prompts = inner, inner.name, n, 0, []

    def info(self):
        return self.inner.info()

    def loglikelihood(self, reqs, progress=None):
        return self.inner.loglikelihood(reqs, progress)

    def generate(self, prompts, params, progress=None, *, seeds=None):
        self.calls += 1
        if self.calls == self.n:
            raise KeyboardInterrupt
        self.prompts.extend(prompts)
        return self.inner.generate(prompts, params, progress, seeds=seeds)


def _run(store: Store, target, items, cfg: runner.RunConfig, suite: LoadedSuite) -> str:
    prepared = [runner.PreparedSuite(suite, list(enumerate(items)), len(items))]
    run_id = runner.start_run(store, target, prepared, cfg)
    runner.execute(store, run_id, target, prepared, cfg)
    return run_id


def test_runner_draws_are_the_same_across_batching_order_and_resume(tmp_path: Path, tiny_model_dir: Path, one_thread) -> None:
    suite = _honest_suite()
    sid = suite.spec.id
    cfg = runner.RunConfig(model="tiny", suites=[sid], seed=11, chunk_size=6)
    with Store(tmp_path / "a.sqlite") as st:
        ref = _completions(st, _run(st, HFTarget(str(tiny_model_dir), batch_size=1), ITEMS, cfg, suite), sid)
    assert all(len(c) == 4 for c in ref.values())
    # Draws k = 0..3 of one prompt are different draws, and draw k of different prompts too.
    assert sum(len(set(c)) for c in ref.values()) >= 20
    assert len({c[0] for c in ref.values()}) == len(ITEMS)

    # Batch size 8, items in another order and other chunks: the same draws for every (item, k).
    shuffled = ITEMS[:]
    random.Random(3).shuffle(shuffled)
    cfg2 = runner.RunConfig(model="tiny", suites=[sid], seed=11, chunk_size=4)
    with Store(tmp_path / "b.sqlite") as st:
        assert _completions(st, _run(st, HFTarget(str(tiny_model_dir), batch_size=8), shuffled, cfg2, suite), sid) == ref

    # Interrupted after its first chunk (2 items), resumed with a fresh target of another batch size.
    cfg3 = runner.RunConfig(model="tiny", suites=[sid], seed=11, chunk_size=2)
    prepared = [runner.PreparedSuite(suite, list(enumerate(ITEMS)), len(ITEMS))]
    with Store(tmp_path / "c.sqlite") as st:
        killer = StopAfter(HFTarget(str(tiny_model_dir), batch_size=4), n=2)
        run_id = runner.start_run(st, killer, prepared, cfg3)
        with pytest.raises(KeyboardInterrupt):
            runner.execute(st, run_id, killer, prepared, cfg3)
        assert len(st.item_ids(run_id, sid)) == 2
        stored = st.item_ids(run_id, sid)
        resumed_target = StopAfter(HFTarget(str(tiny_model_dir), batch_size=3), n=0)
        runner.execute(st, run_id, resumed_target, prepared, cfg3)
        # Only the items not stored were generated, in the two remaining chunks.
        assert resumed_target.calls == 2
        assert resumed_target.prompts == [it["prompt"] for it in ITEMS if it["id"] not in stored for _ in range(4)]
        assert _completions(st, run_id, sid) == ref

    # Another run seed gives other draws.
    with Store(tmp_path / "d.sqlite") as st:
        cfg4 = runner.RunConfig(model="tiny", suites=[sid], seed=12, chunk_size=6)
        other = _completions(st, _run(st, HFTarget(str(tiny_model_dir), batch_size=8), ITEMS, cfg4, suite), sid)
    assert sum(a != b for i in ref for a, b in zip(ref[i], other[i], strict=True)) >= 20


def test_runner_sends_one_seed_per_request(tmp_path: Path) -> None:
    """Seeds are generation_seed(run seed, suite, item, request index, sample), one generate call per chunk."""
    suite = _honest_suite(k=3)
    sid = suite.spec.id
    fake = FakeTarget()
    with Store(tmp_path / "s.sqlite") as st:
        _run(st, fake, ITEMS[:2], runner.RunConfig(model="fake", suites=[sid], seed=7), suite)
    expected = [runner.generation_seed(7, sid, it["id"], k, k) for it in ITEMS[:2] for k in range(3)]
    assert fake.gen_seeds == expected and len(set(expected)) == 6
    assert fake.gen_calls == [it["prompt"] for it in ITEMS[:2] for _ in range(3)]
