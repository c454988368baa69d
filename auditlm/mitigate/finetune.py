"""A small, real causal-LM fine-tune that saves a loadable model directory.

:func:`finetune` trains next-token prediction on a list of texts — every weight (``lora=False``) or a LoRA
adapter on every linear layer (Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models", ICLR;
via ``peft``), merged back into the weights before saving so that the result loads with plain
``transformers``. Each text is one training sequence: BOS (when the tokenizer has one), the text, EOS, the
way documents are separated in pre-training, so a model sampled from BOS reproduces whole training documents
once it has memorised them. It is deliberately plain — AdamW at a constant learning rate, gradient clipping
at 1.0, a seeded shuffle per epoch, float32 on the CPU — so that a test can make a model that provably saw
its training texts in seconds, and mitigations (scrubbing, augmentation, DP) have one loop to build on.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from auditlm.errors import AuditError, TargetError

#: Written next to the weights: what the model was fine-tuned on and how (texts only as a digest).
RECORD_FILE = "auditlm_finetune.json"


def _load(model: Any, device: str, dtype: str) -> tuple[Any, Any, str]:
    """``(model, tokenizer, name)``: a private copy of a loaded target's model, or a model spec resolved."""
    if hasattr(model, "model") and hasattr(model, "tokenizer"):
        return copy.deepcopy(model.model), model.tokenizer, str(getattr(model, "name", "model"))
    if isinstance(model, str | Path):
        from auditlm.targets.registry import resolve

        target = resolve(str(model), device=device, dtype=dtype)
        if not hasattr(target, "model"):
            raise TargetError(f"cannot fine-tune {model!r}: it is not a local transformers model")
        return target.model, target.tokenizer, str(model)  # type: ignore[attr-defined]
    raise TypeError(f"finetune() takes a model spec or a loaded HF target, not {type(model).__name__}")


def _encode(tokenizer: Any, texts: Sequence[str], max_length: int) -> list[list[int]]:
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    out = []
    for t in texts:
        ids = list(tokenizer(t, add_special_tokens=True)["input_ids"])
        if bos is not None and (not ids or ids[0] != bos):
            ids = [bos, *ids]
        if eos is not None:
            ids.append(eos)
        out.append(ids[:max_length])
    return out


def _pad_id(tokenizer: Any) -> int:
    """The id that pads a training batch: the tokenizer's pad token, else EOS, else 0 (padding is masked out)."""
    if tokenizer.pad_token_id is not None:
        return int(tokenizer.pad_token_id)
    return int(tokenizer.eos_token_id) if tokenizer.eos_token_id is not None else 0


def _lora(model: Any, r: int, alpha: int, seed: int) -> Any:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as e:  # pragma: no cover - peft is a dependency
        raise AuditError("LoRA fine-tuning needs peft: pip install peft") from e
    import torch

    torch.manual_seed(seed)
    config = LoraConfig(
        r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"
    )
    return get_peft_model(model, config)


def finetune(
    model_dir_or_target: Any,
    texts: Sequence[str],
    out_dir: str | Path,
    *,
    epochs: int = 3,
    lr: float = 5e-5,
    batch_size: int = 8,
    max_length: int = 256,
    seed: int = 0,
    lora: bool = False,
    lora_r: int = 8,
    lora_alpha: int = 16,
    weight_decay: float = 0.0,
    device: str = "auto",
    dtype: str = "auto",
) -> Path:
    """Fine-tune a causal LM on ``texts`` and save it (weights, tokenizer, :data:`RECORD_FILE`) to ``out_dir``.

    ``model_dir_or_target`` is any model spec :func:`auditlm.targets.registry.resolve` takes (a local
    directory, a Hub id, a built-in name) or a loaded target exposing ``.model`` and ``.tokenizer`` (an
    :class:`~auditlm.targets.hf.HFTarget`), whose model is copied, never changed. Returns ``out_dir``.
    """
    import torch

    texts = [str(t) for t in texts]
    if not texts:
        raise AuditError("finetune needs at least one training text")
    if epochs < 1 or batch_size < 1 or max_length < 2 or not lr > 0:
        raise AuditError("finetune needs epochs ≥ 1, batch_size ≥ 1, max_length ≥ 2 and lr > 0")
    out = Path(out_dir)
    model, tokenizer, base_name = _load(model_dir_or_target, device, dtype)
    if lora:
        model = _lora(model, lora_r, lora_alpha, seed)
    dev = next(model.parameters()).device
    pad = _pad_id(tokenizer)
    encoded = _encode(tokenizer, texts, max_length)

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    model.train()
    epoch_loss: list[float] = []
    steps = 0
    for _ in range(epochs):
        order = torch.randperm(len(encoded), generator=gen).tolist()
        total, n_tok = 0.0, 0
        for start in range(0, len(order), batch_size):
            batch = [encoded[i] for i in order[start : start + batch_size]]
            width = max(len(x) for x in batch)
            ids = torch.full((len(batch), width), pad, dtype=torch.long)
            mask = torch.zeros((len(batch), width), dtype=torch.long)
            for b, x in enumerate(batch):
                ids[b, : len(x)] = torch.tensor(x)
                mask[b, : len(x)] = 1
            labels = ids.masked_fill(mask == 0, -100)
            loss = model(input_ids=ids.to(dev), attention_mask=mask.to(dev), labels=labels.to(dev)).loss
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optim.step()
            steps += 1
            k = int(mask[:, 1:].sum())
            total += float(loss.detach()) * k
            n_tok += k
        epoch_loss.append(total / max(n_tok, 1))
    model.eval()
    if lora:
        model = model.merge_and_unload()

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    digest = hashlib.sha256("\x1e".join(texts).encode("utf-8")).hexdigest()
    record = {
        "base_model": base_name,
        "n_texts": len(texts),
        "texts_sha256": digest,
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "max_length": max_length,
        "seed": seed,
        "lora": {"r": lora_r, "alpha": lora_alpha, "target_modules": "all-linear"} if lora else None,
        "weight_decay": weight_decay,
        "steps": steps,
        "epoch_loss": [round(x, 6) if math.isfinite(x) else None for x in epoch_loss],
    }
    (out / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return out
