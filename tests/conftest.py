"""Shared fixtures: a tiny random-weight Llama with a trained BPE tokenizer, and offline Hub access."""

from __future__ import annotations

import os
from pathlib import Path

# huggingface_hub reads HF_HUB_OFFLINE once, at import: set it before anything imports transformers.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

_VOCABULARY = """
the a an and or but if then so because while when where who what which how why this that these those
man woman boy girl person people doctor nurse engineer teacher lawyer pilot cook cleaner secretary
manager scientist artist farmer driver student worker parent mother father son daughter friend
he she they him her them his hers their we you i me my our your it its
is was are were be been being has have had do does did will would can could should may might must
work worked works working as at in on of to for with from by about into over under after before
good bad kind smart strong weak rich poor young old new happy sad angry calm quiet loud fast slow
house city school hospital office street car book table door window water food money time day
night year week morning evening home family child children name number phone email address
said says told asked went goes came come made make took take saw see knew know thought think
very really always never often sometimes usually also only just still even again too here there
one two three four five six seven eight nine ten first second last next other same different
"""

CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def _corpus() -> list[str]:
    import random

    rng = random.Random(0)
    words = _VOCABULARY.split()
    lines = [" ".join(words[i : i + 12]) for i in range(0, len(words), 12)]
    for _ in range(400):
        n = rng.randint(4, 14)
        sent = " ".join(rng.choice(words) for _ in range(n))
        lines.append(sent.capitalize() + rng.choice([".", "!", "?", ",", "."]))
    return lines


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random-weight ``LlamaForCausalLM`` and a ~500-token byte-level BPE tokenizer, saved to disk.

    The tokenizer prepends ``<s>`` (like Llama's), pads with ``<pad>`` and has a chat template.
    """
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>", "<|user|>", "<|assistant|>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos)]
    )
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        additional_special_tokens=["<|user|>", "<|assistant|>"],
    )
    hf_tok.chat_template = CHAT_TEMPLATE

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(hf_tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        initializer_range=0.4,
        bos_token_id=hf_tok.bos_token_id,
        eos_token_id=hf_tok.eos_token_id,
        pad_token_id=hf_tok.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    hf_tok.save_pretrained(out)
    return out


@pytest.fixture
def tiny_target(tiny_model_dir: Path):
    """A fresh :class:`~auditlm.targets.hf.HFTarget` over the tiny model (CPU, batch size 4)."""
    from auditlm.targets.hf import HFTarget

    return HFTarget(str(tiny_model_dir), batch_size=4)


@pytest.fixture(scope="session", autouse=True)
def _store_keys(tmp_path_factory: pytest.TempPathFactory):
    """Store keys made by tests go to a scratch folder, not the user's ``$AUDITLM_HOME/keys``."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AUDITLM_KEYS", str(tmp_path_factory.mktemp("keys")))
        yield


@pytest.fixture(autouse=True)
def _hub_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test reaches the Hugging Face Hub."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    try:
        import huggingface_hub.constants as hub_constants
    except ImportError:
        return
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def one_thread():
    """The tiny model trains and runs fastest on one torch thread (two threads on a busy 2-core machine are far
    slower)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_fake_run(path: Path, limit: int = 8, suite: str = "bias.counterfactual_templates") -> Path:
    """A store at ``path`` holding one complete run of ``suite`` (``limit`` items) on the fake target."""
    from auditlm import runner
    from auditlm.store import Store
    from auditlm.suites.loader import discover, select
    from auditlm.targets.fake import FakeTarget

    cfg = runner.RunConfig(model="fake", suites=[suite], limit=limit)
    prepared = runner.prepare(select(discover(), cfg.suites), cfg, None)
    with Store(path) as st:
        t = FakeTarget()
        runner.execute(st, runner.start_run(st, t, prepared, cfg), t, prepared, cfg)
    return path


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run ``auditlm ARGV`` in-process: ``(exit code, stdout, stderr)``."""
    from auditlm.cli import main

    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    cap = capsys.readouterr()
    return code, cap.out, cap.err
