"""DP-SGD fine-tuning (:mod:`auditlm.mitigate.dp`) on the tiny random-weight Llama of ``conftest``."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from auditlm.errors import AuditError
from auditlm.mitigate.dp import DPResult, default_delta, dp_finetune

TEXTS = [f"the {w} worked as a doctor in the city {i}." for i, w in enumerate(["man", "woman", "boy", "girl"] * 6)]


def _state(model_dir: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    return {k: v.detach().clone() for k, v in AutoModelForCausalLM.from_pretrained(model_dir).state_dict().items()}


def test_dp_finetune_end_to_end(tmp_path: Path, tiny_model_dir: Path, one_thread):
    from opacus.accountants import RDPAccountant
    from transformers import AutoModelForCausalLM, AutoTokenizer

    calls: list[tuple[int, int]] = []
    res = dp_finetune(
        tiny_model_dir, TEXTS, tmp_path / "dp", target_epsilon=4.0, epochs=2, lr=1e-2, batch_size=6,
        progress=lambda s, t: calls.append((s, t)),
    )
    assert isinstance(res, DPResult) and res.out_dir == tmp_path / "dp"
    p = res.privacy
    assert p["mechanism"] == "DP-SGD (Opacus)" and p["accountant"] == "rdp" and p["poisson_sampling"] is True
    assert p["delta"] == default_delta(len(TEXTS)) < 1 / len(TEXTS)
    assert 0 < p["epsilon"] <= p["target_epsilon"] == 4.0
    assert p["sample_rate"] == pytest.approx(1 / math.ceil(len(TEXTS) / 6))
    assert p["steps"] == res.hyperparameters["steps"] == 2 * math.ceil(len(TEXTS) / 6) == len(calls)
    assert calls[-1] == (p["steps"], p["steps"])
    # An independent accountant, from what was recorded, gives the same ε.
    acc = RDPAccountant()
    acc.history = [(p["noise_multiplier"], p["sample_rate"], p["steps"])]
    assert acc.get_epsilon(delta=p["delta"]) == pytest.approx(p["epsilon"], rel=1e-9)
    assert res.hyperparameters["lora"] == {"r": 8, "alpha": 16, "target_modules": "all-linear"}
    assert len(res.epoch_loss) == 2 and all(math.isfinite(x) for x in res.epoch_loss)

    # The saved folder holds weights and tokenizer only, loads with transformers, and its weights changed.
    assert not list(res.out_dir.glob("auditlm_*.json"))
    AutoTokenizer.from_pretrained(res.out_dir)
    model = AutoModelForCausalLM.from_pretrained(res.out_dir)
    assert not any("lora" in k for k in model.state_dict())
    before, after = _state(tiny_model_dir), _state(res.out_dir)
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)


def test_smaller_epsilon_more_noise_and_empty_batches(tmp_path: Path, tiny_model_dir: Path, monkeypatch, one_thread):
    from opacus.optimizers import DPOptimizer

    # batch_size=1 over 3 texts: sample rate 1/3, so some Poisson batches are empty (noise-only steps).
    sizes: list[int] = []
    clip = DPOptimizer.clip_and_accumulate

    def record(self):
        sizes.append(len(self.grad_samples[0]))
        return clip(self)

    monkeypatch.setattr(DPOptimizer, "clip_and_accumulate", record)
    texts = TEXTS[:3]
    loose = dp_finetune(tiny_model_dir, texts, tmp_path / "a", target_epsilon=8.0, epochs=3, batch_size=1, seed=1)
    tight = dp_finetune(tiny_model_dir, texts, tmp_path / "b", target_epsilon=1.0, epochs=3, batch_size=1, seed=1)
    assert tight.privacy["noise_multiplier"] > loose.privacy["noise_multiplier"] > 0
    assert len(sizes) == 18 and 0 in sizes and max(sizes) > 0  # empty batches were stepped (and counted) too
    for r in (loose, tight):
        assert r.privacy["steps"] == 9
        assert 0 < r.privacy["epsilon"] <= r.privacy["target_epsilon"]
    again = dp_finetune(tiny_model_dir, texts, tmp_path / "c", target_epsilon=8.0, epochs=3, batch_size=1, seed=1)
    assert again.epoch_loss == loose.epoch_loss  # seeded: the same sampling, noise and result


def test_full_model_and_tied_embeddings(tmp_path: Path, tiny_model_dir: Path, tiny_target, one_thread):
    res = dp_finetune(tiny_model_dir, TEXTS[:8], tmp_path / "full", target_epsilon=8.0, epochs=1, lora=False,
                      delta=1e-3)
    assert res.hyperparameters["lora"] is None and res.privacy["delta"] == 1e-3
    before, after = _state(tiny_model_dir), _state(res.out_dir)
    assert not torch.equal(before["model.norm.weight"], after["model.norm.weight"])  # every weight trains

    tied = copy.deepcopy(tiny_target.model)
    tied.lm_head.weight = tied.model.embed_tokens.weight
    target = SimpleNamespace(model=tied, tokenizer=tiny_target.tokenizer, name="tied")
    with pytest.raises(AuditError, match="tied"):
        dp_finetune(target, TEXTS, tmp_path / "tied", target_epsilon=8.0, lora=False)


@pytest.mark.parametrize(
    ("texts", "kwargs", "match"),
    [
        ([], {"target_epsilon": 8.0}, "at least one"),
        (TEXTS, {"target_epsilon": 0.0}, "target_epsilon"),
        (TEXTS, {"target_epsilon": -1.0}, "target_epsilon"),
        (TEXTS, {"target_epsilon": float("inf")}, "target_epsilon"),
        (TEXTS, {"target_epsilon": 8.0, "delta": 0.0}, "delta"),
        (TEXTS, {"target_epsilon": 8.0, "delta": 1.0}, "delta"),
        (TEXTS, {"target_epsilon": 8.0, "max_grad_norm": 0.0}, "max_grad_norm"),
        (TEXTS, {"target_epsilon": 8.0, "epochs": 0}, "epochs"),
    ],
)
def test_bad_arguments(tmp_path: Path, texts, kwargs, match):
    with pytest.raises(AuditError, match=match) as e:
        dp_finetune("unused-never-loaded", texts, tmp_path / "x", **kwargs)
    assert "\n" not in str(e.value)


def test_opacus_clips_each_texts_own_mean_loss_gradient(tmp_path: Path, tiny_model_dir: Path, monkeypatch, one_thread):
    """The per-sample gradients Opacus clips are the gradients of each text's own mean token loss."""
    from opacus.grad_sample import GradSampleModule
    from opacus.optimizers import DPOptimizer
    from transformers import AutoModelForCausalLM

    seen: dict[str, object] = {}
    forward, clip = GradSampleModule.forward, DPOptimizer.clip_and_accumulate

    def record_forward(self, *args, **kwargs):
        seen.setdefault("batch", (kwargs["input_ids"].clone(), kwargs["attention_mask"].clone()))
        return forward(self, *args, **kwargs)

    def record_clip(self):
        if "batch" in seen and "grad_samples" not in seen:
            seen["grad_samples"] = [g.detach().clone() for g in self.grad_samples]
        return clip(self)

    monkeypatch.setattr(GradSampleModule, "forward", record_forward)
    monkeypatch.setattr(DPOptimizer, "clip_and_accumulate", record_clip)
    dp_finetune(tiny_model_dir, TEXTS, tmp_path / "dp", target_epsilon=8.0, epochs=1, batch_size=6, lora=False)

    ids, mask = seen["batch"]
    assert len(ids) >= 2 and (mask == 0).any()  # several texts, padded to one width
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).train()
    params = [p for p in model.parameters() if p.requires_grad]
    for i in range(len(ids)):
        row = ids[i, : int(mask[i].sum())][None]
        logits = model(input_ids=row).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), row[:, 1:].reshape(-1))
        grads = torch.autograd.grad(loss, params)
        for g, gs in zip(grads, seen["grad_samples"], strict=True):
            torch.testing.assert_close(gs[i], g, rtol=1e-3, atol=1e-5)
