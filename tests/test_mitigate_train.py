"""The Trainer-based mitigation fine-tune: runs end to end, resumes to the same weights, dropout debiasing,
and the record a later run stores."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from auditlm.errors import AuditError
from auditlm.mitigate.train import MITIGATION_FILE, TrainConfig, apply_dropout, stop_after, train

TEXTS = [f"The {w} walked to the market and bought {n} apples." for w in ("man", "woman", "doctor", "nurse")
         for n in ("two", "three", "five")] * 2


def _weights(d: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(d / "model.safetensors"))


def _cfg(**kw) -> TrainConfig:
    base = dict(max_steps=6, batch_size=4, lr=1e-3, save_steps=2, logging_steps=1, lora=False, seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_full_finetune_writes_a_loadable_model_and_record(tiny_target, tmp_path, one_thread):
    from auditlm.targets.hf import HFTarget

    before = {k: v.clone() for k, v in tiny_target.model.state_dict().items()}
    res = train(tiny_target, TEXTS, tmp_path / "out", _cfg(), method="cda", record={"augmentation": {"x": 1}},
                corpus_source="inline")
    assert res.steps == 6
    # the base target is copied, never changed
    assert all((before[k] == v).all() for k, v in tiny_target.model.state_dict().items())
    after = _weights(res.out_dir)
    assert any(not (before[k] == after[k]).all() for k in after)
    rec = json.loads((res.out_dir / MITIGATION_FILE).read_text())
    assert rec["schema"] == "auditlm.mitigation/1" and rec["method"] == "cda"
    assert rec["base_model"]["revision"] == tiny_target.info()["revision"]
    assert rec["corpus"]["n_texts"] == len(TEXTS) and len(rec["corpus"]["sha256"]) == 64
    assert rec["training"]["steps"] == 6 and rec["training"]["trainer"] == "transformers.Trainer"
    assert rec["augmentation"] == {"x": 1} and rec["versions"]["transformers"]
    losses = [x["loss"] for x in rec["training"]["loss_log"]]
    assert len(losses) == 6 and losses[-1] < losses[0]  # lr 1e-3 on a 24-text corpus: it learns
    # the new model loads with plain transformers and its runs carry the record
    tuned = HFTarget(str(res.out_dir))
    assert tuned.info()["mitigation"]["corpus"]["sha256"] == rec["corpus"]["sha256"]
    assert "mitigation" not in tiny_target.info()


def test_lora_finetune_merges_into_plain_weights(tiny_target, tmp_path):
    res = train(tiny_target, TEXTS, tmp_path / "lora", _cfg(lora=True, lr=5e-3, max_steps=4))
    w = _weights(res.out_dir)
    assert not any("lora" in k for k in w)
    assert set(w) == set(tiny_target.model.state_dict())
    assert res.record["training"]["lora"]["r"] == 8


@pytest.mark.parametrize("lora", [False, True])
def test_resume_from_a_checkpoint_gives_the_same_final_weights(tiny_target, tmp_path, lora, one_thread):
    # hidden dropout makes the RNG state matter: resuming must restore it, not just the weights
    cfg = dict(hidden_dropout=0.2, attention_dropout=0.1, lora=lora, lr=5e-3 if lora else 1e-3)
    whole = train(tiny_target, TEXTS, tmp_path / "whole", _cfg(**cfg))
    cut = tmp_path / "cut"
    part = train(tiny_target, TEXTS, cut, _cfg(**cfg), callbacks=[stop_after(4)])
    assert part.steps == 4 and (cut / "checkpoints" / "checkpoint-4").is_dir()
    w_part = _weights(cut)
    resumed = train(tiny_target, TEXTS, cut, _cfg(**cfg), resume=True)
    assert resumed.resumed_from and resumed.resumed_from.endswith("checkpoint-4") and resumed.steps == 6
    a, b = _weights(whole.out_dir), _weights(cut)
    assert set(a) == set(b)
    for k in a:
        assert (a[k] - b[k]).abs().max() <= 1e-6, k
    assert any((w_part[k] - b[k]).abs().max() > 1e-6 for k in a)  # the resumed steps did change the weights
    assert resumed.record["training"]["resumed_from"] == "checkpoint-4"


def test_resume_refuses_a_different_corpus_or_settings(tiny_target, tmp_path):
    out = tmp_path / "r"
    train(tiny_target, TEXTS, out, _cfg(), callbacks=[stop_after(2)])
    with pytest.raises(AuditError, match="corpus_sha256"):
        train(tiny_target, TEXTS[:-1], out, _cfg(), resume=True)
    with pytest.raises(AuditError, match=r"config\.lr"):
        train(tiny_target, TEXTS, out, _cfg(lr=2e-3), resume=True)
    with pytest.raises(AuditError, match="no checkpoint"):
        train(tiny_target, TEXTS, tmp_path / "empty", _cfg(), resume=True)
    with pytest.raises(AuditError, match="already holds"):
        train(tiny_target, TEXTS, out, _cfg())


def test_bad_settings_are_one_line_errors(tiny_target, tmp_path):
    with pytest.raises(AuditError, match=r"lr 0 \(valid: > 0\)"):
        train(tiny_target, TEXTS, tmp_path / "x", _cfg(lr=0))
    with pytest.raises(AuditError, match=r"hidden_dropout 1\.5"):
        train(tiny_target, TEXTS, tmp_path / "x", _cfg(hidden_dropout=1.5))
    with pytest.raises(AuditError, match="at least one"):
        train(tiny_target, [], tmp_path / "x", _cfg())


def test_dropout_debias_is_training_only_and_not_saved(tiny_target, tmp_path):
    import copy

    import torch

    model = copy.deepcopy(tiny_target.model)
    desc, handles = apply_dropout(model, hidden=0.5, attention=0.3)
    assert desc["attention"]["via"] == ["config.attention_dropout"]
    assert "o_proj" in desc["hidden"]["via"] and desc["hidden"]["modules"] == 4  # 2 layers x (o_proj, down_proj)
    ids = torch.tensor([[1, 5, 9, 12, 7, 30]])
    model.train()
    torch.manual_seed(0)
    a = model(ids).logits
    b = model(ids).logits
    assert (a - b).abs().max() > 1e-4  # dropout is on while training
    model.eval()
    assert torch.equal(model(ids).logits, model(ids).logits)
    for h in handles:
        h.remove()
    assert torch.allclose(model(ids).logits, tiny_target.model(ids).logits, atol=1e-6)
    res = train(tiny_target, TEXTS, tmp_path / "d", _cfg(hidden_dropout=0.2, attention_dropout=0.2, max_steps=2))
    saved = json.loads((res.out_dir / "config.json").read_text())
    assert saved["attention_dropout"] == tiny_target.model.config.attention_dropout
    assert res.record["training"]["dropout_debias"]["hidden"]["p"] == 0.2
