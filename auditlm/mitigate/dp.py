"""Differentially private fine-tuning: DP-SGD (Abadi et al. 2016) through Opacus.

:func:`dp_finetune` is :func:`auditlm.mitigate.finetune.finetune`'s loop made differentially private with
DP-SGD — Abadi, Chu, Goodfellow, McMahan, Mironov, Talwar, Zhang, "Deep Learning with Differential Privacy"
(CCS 2016) — as implemented by Opacus — Yousefpour et al., "Opacus: User-Friendly Differential Privacy Library
in PyTorch" (arXiv:2109.12298, 2021). Every step it

1. draws a batch by **Poisson sampling**: each training text is in the batch independently with probability
   ``q`` (the *sample rate*, ``1 / ceil(N / batch_size)``, so the *expected* batch size is about
   ``batch_size``; a batch may be empty, and then the step is noise only, still counted by the accountant);
2. computes each text's own gradient of its loss (the mean next-token loss over that text's tokens — never a
   token mean over the whole batch, which would let long texts weigh more and couple the texts together);
3. **clips** every per-text gradient to L2 norm ``max_grad_norm`` (``C``), so no single text moves the model by
   more than ``C``;
4. sums the clipped gradients, adds Gaussian noise ``N(0, σ²C²)`` (``σ`` is the *noise multiplier*), divides by
   the expected batch size and takes an AdamW step.

**What ε and δ mean.** The trained weights are (ε, δ)-differentially private with respect to adding or removing
any one training text: for every set ``S`` of outcomes, ``Pr[M(D) ∈ S] ≤ e^ε · Pr[M(D') ∈ S] + δ`` for corpora
``D``, ``D'`` that differ in one text. Small ε (≤ 1) is a strong guarantee; ε = 8 is the loose but common
setting for language models, still enough to bound how much a single text (a canary, a person's record) can
be memorised. δ is the probability mass where the bound may fail and must be well below ``1 / N``, or
releasing one whole text at random would satisfy the definition. The *unit* of privacy is one training text
(one line of the corpus): a secret repeated in ``k`` texts is protected only at group level, roughly ``k·ε``.

**Choices.** ``σ`` is chosen by Opacus's ``make_private_with_epsilon`` so that the target ε is reached after
``epochs`` epochs at sample rate ``q``; ε actually spent is computed by the accountant after training.
The accountant is Rényi DP (Mironov 2017, "Rényi Differential Privacy", CSF; the subsampled-Gaussian analysis
of Mironov, Talwar, Zhang 2019): it is the analysis of Abadi et al.'s moments accountant, a deterministic
closed-form upper bound that anyone can recompute from ``(σ, q, steps, δ)`` with any RDP implementation.
Opacus's default PRV accountant (Gopi et al. 2021) is tighter (a smaller ε for the same noise) but numerical,
with an error tolerance; we prefer the bound that is conservative and exactly reproducible. The default
``δ = 1 / (10 · N)`` for ``N`` training texts, capped at ``1e-5`` — below ``1/N`` as the definition needs, and
the 1e-5 of common practice for larger corpora.

With ``lora=True`` (the default) only a LoRA adapter on every linear layer trains and the rest of the model is
frozen, which is how DP fine-tuning of large models is usually done — Yu et al., "Differentially Private
Fine-tuning of Language Models" (ICLR 2022): fewer trainable parameters means less total noise for the same
ε. The adapter is merged into the weights before saving, so the result loads with plain ``transformers``.
``lora=False`` trains every weight; models whose input embedding and output head share one tensor (tied
embeddings, e.g. SmolLM2) are refused, because a shared weight gets two per-sample gradient contributions
that Opacus's hooks do not add up.

The noise, the Poisson sampling and the LoRA initialisation draw from torch's global generator, seeded with
``seed``; Opacus's ``secure_mode`` (a cryptographic generator) is off, as it is for experiments.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from auditlm.errors import AuditError
from auditlm.mitigate.finetune import _encode, _load, _lora, _pad_id

MECHANISM = "DP-SGD (Opacus)"
ACCOUNTANT = "rdp"


@dataclass(frozen=True)
class DPResult:
    """What :func:`dp_finetune` did: where it saved the model, how it trained, and the privacy it spent."""

    out_dir: Path
    hyperparameters: dict[str, Any]
    privacy: dict[str, Any]
    epoch_loss: list[float]


def default_delta(n_texts: int) -> float:
    """``min(1e-5, 1 / (10 · n_texts))``: well below ``1 / N``, and the usual 1e-5 for larger corpora."""
    return min(1e-5, 1.0 / (10.0 * max(int(n_texts), 1)))


def _tied(model: Any) -> bool:
    try:
        inp, out = model.get_input_embeddings(), model.get_output_embeddings()
    except Exception:  # a model without the accessors has nothing to tie
        return False
    if inp is None or out is None:
        return False
    return inp.weight is out.weight or inp.weight.data_ptr() == out.weight.data_ptr()


def _check(texts: Sequence[str], target_epsilon: float, delta: float | None, max_grad_norm: float, epochs: int,
           lr: float, batch_size: int, max_length: int) -> None:
    if not texts:
        raise AuditError("dp_finetune needs at least one training text")
    if not (isinstance(target_epsilon, int | float) and math.isfinite(target_epsilon) and target_epsilon > 0):
        raise AuditError(f"target_epsilon must be a finite number > 0, not {target_epsilon!r}")
    if delta is not None and not (isinstance(delta, int | float) and 0 < delta < 1):
        raise AuditError(f"delta must be in (0, 1), not {delta!r}")
    if not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
        raise AuditError(f"max_grad_norm must be > 0, not {max_grad_norm!r}")
    if epochs < 1 or batch_size < 1 or max_length < 2 or not lr > 0:
        raise AuditError("dp_finetune needs epochs ≥ 1, batch_size ≥ 1, max_length ≥ 2 and lr > 0")


def dp_finetune(
    model_dir_or_target: Any,
    texts: Sequence[str],
    out_dir: str | Path,
    *,
    target_epsilon: float,
    delta: float | None = None,
    max_grad_norm: float = 1.0,
    epochs: int = 3,
    lr: float = 1e-3,
    batch_size: int = 8,
    max_length: int = 128,
    seed: int = 0,
    lora: bool = True,
    lora_r: int = 8,
    lora_alpha: int = 16,
    device: str = "auto",
    dtype: str = "auto",
    progress: Callable[[int, int], None] | None = None,
) -> DPResult:
    """Fine-tune a causal LM on ``texts`` with DP-SGD at ``(target_epsilon, delta)`` and save it to ``out_dir``.

    ``model_dir_or_target`` is a model spec or a loaded target, as for
    :func:`~auditlm.mitigate.finetune.finetune` (a loaded target's model is copied, never changed). Each text
    is one training example (BOS, the text, EOS, truncated to ``max_length`` tokens) and the unit of privacy.
    ``batch_size`` is the *expected* Poisson batch size. ``delta`` defaults to :func:`default_delta`.
    ``progress(step, total_steps)`` is called after every step. Only the weights and the tokenizer are written
    to ``out_dir``; the returned :class:`DPResult` holds the hyperparameters, the privacy spent and the mean
    per-text loss of each epoch.
    """
    texts = [str(t) for t in texts]
    _check(texts, target_epsilon, delta, max_grad_norm, epochs, lr, batch_size, max_length)
    delta = float(delta) if delta is not None else default_delta(len(texts))

    import opacus
    import torch
    from opacus import PrivacyEngine
    from opacus.validators.errors import UnsupportedModuleError
    from torch.utils.data import DataLoader, TensorDataset

    out = Path(out_dir)
    model, tokenizer, _ = _load(model_dir_or_target, device, dtype)
    if not lora and _tied(model):
        raise AuditError(
            "dp_finetune with lora=False cannot train a model with tied input/output embeddings "
            "(Opacus's per-sample gradients do not add up a shared weight); use lora=True"
        )
    if lora:
        model = _lora(model, lora_r, lora_alpha, seed)
    dev = next(model.parameters()).device
    pad = _pad_id(tokenizer)
    encoded = _encode(tokenizer, texts, max_length)

    torch.manual_seed(seed)
    params = [p for p in model.parameters() if p.requires_grad]
    if lora:
        # A frozen float16/bfloat16 base is fine, but the trained adapter and its noise are kept in float32.
        for p in params:
            p.data = p.data.float()
    optim = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    n = len(encoded)
    model.train()
    loader = DataLoader(TensorDataset(torch.arange(n)), batch_size=min(batch_size, n))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*Secure RNG turned off.*")
        warnings.filterwarnings("ignore", message=".*Optimal order is the (largest|smallest) alpha.*")
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        engine = PrivacyEngine(accountant=ACCOUNTANT)
        try:
            gs_model, dp_optim, dp_loader = engine.make_private_with_epsilon(
                module=model,
                optimizer=optim,
                data_loader=loader,
                target_epsilon=float(target_epsilon),
                target_delta=delta,
                epochs=epochs,
                max_grad_norm=float(max_grad_norm),
                poisson_sampling=True,
                loss_reduction="mean",
                grad_sample_mode="hooks",
            )
        except (NotImplementedError, ValueError, UnsupportedModuleError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise AuditError(f"Opacus cannot make this model private: {first}") from e
    sample_rate = float(getattr(dp_loader, "sample_rate", 1.0 / len(loader)))
    noise_multiplier = float(dp_optim.noise_multiplier)
    total_steps = epochs * len(dp_loader)

    gs_model.train()
    epoch_loss: list[float] = []
    steps = 0
    for _ in range(epochs):
        total, count = 0.0, 0
        for (idx,) in dp_loader:
            dp_optim.zero_grad(set_to_none=True)
            rows = [encoded[i] for i in idx.tolist()]
            if not rows:
                # An empty Poisson batch: DP-SGD still takes the step (noise only), and the accountant counts it.
                for p in params:
                    p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
            else:
                width = max(len(x) for x in rows)
                ids = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for b, x in enumerate(rows):
                    ids[b, : len(x)] = torch.tensor(x)
                    mask[b, : len(x)] = 1
                ids, mask = ids.to(dev), mask.to(dev)
                logits = gs_model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
                target = ids[:, 1:]
                tmask = mask[:, 1:].float()
                tok = torch.nn.functional.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none"
                ).view_as(tmask)
                per_text = (tok * tmask).sum(1) / tmask.sum(1).clamp(min=1.0)
                loss = per_text.mean()  # "mean" reduction: Opacus rescales to each text's own gradient
                with warnings.catch_warnings():
                    # the embedding's backward hook fires with no input gradient (token ids): expected, harmless
                    warnings.filterwarnings("ignore", message=".*Full backward hook is firing.*")
                    loss.backward()
                total += float(per_text.detach().sum())
                count += len(rows)
            dp_optim.step()
            steps += 1
            if progress is not None:
                progress(steps, total_steps)
        epoch_loss.append(total / count if count else float("nan"))

    epsilon = float(engine.accountant.get_epsilon(delta=delta))
    if hasattr(gs_model, "cleanup"):
        gs_model.cleanup()  # remove Opacus's hooks and per-sample attributes before saving
    model.eval()
    for p in model.parameters():
        p.grad = None
        if hasattr(p, "grad_sample"):
            p.grad_sample = None
        if hasattr(p, "summed_grad"):
            p.summed_grad = None
    if lora:
        model = model.merge_and_unload()

    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    hyperparameters = {
        "epochs": epochs,
        "lr": lr,
        "batch_size": batch_size,
        "max_length": max_length,
        "seed": seed,
        "lora": {"r": lora_r, "alpha": lora_alpha, "target_modules": "all-linear"} if lora else None,
        "max_grad_norm": float(max_grad_norm),
        "steps": steps,
    }
    privacy = {
        "mechanism": MECHANISM,
        "accountant": ACCOUNTANT,
        "target_epsilon": float(target_epsilon),
        "epsilon": epsilon,
        "delta": delta,
        "noise_multiplier": noise_multiplier,
        "sample_rate": sample_rate,
        "steps": steps,
        "poisson_sampling": True,
        "opacus_version": opacus.__version__,
    }
    return DPResult(out, hyperparameters, privacy, [round(x, 6) if math.isfinite(x) else x for x in epoch_loss])
