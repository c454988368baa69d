"""Fine-tuning for mitigations with the transformers ``Trainer``: full or LoRA, checkpoints and resume,
dropout debiasing, and the ``auditlm_mitigation.json`` record a later ``auditlm run --model DIR`` stores.

:func:`train` fine-tunes a causal LM on a list of texts (next-token prediction; each text one sequence:
BOS, the text, EOS, as :mod:`auditlm.mitigate.finetune` does) with ``transformers.Trainer`` — so it runs
unchanged under ``accelerate launch`` (data-parallel over processes or GPUs; the Trainer reads the launcher's
environment) and takes the Trainer's checkpointing, resume and mixed precision instead of re-writing them.

* **Full or LoRA** (Hu et al. 2022, "LoRA: Low-Rank Adaptation of Large Language Models", ICLR; via ``peft``,
  adapters on every linear layer), merged back into the weights before saving, so the result is a plain
  Hugging Face model directory.
* **Checkpoints and resume**: every ``save_steps`` optimizer steps under ``OUT/checkpoints/checkpoint-N``
  (weights or adapter, optimizer, scheduler, RNG states; the Trainer's format). ``resume=True`` continues from
  the newest checkpoint and ends with the same weights an uninterrupted run gives (the Trainer restores the
  RNG states and skips the batches already seen); ``OUT/checkpoints/auditlm_train_state.json`` holds the
  corpus digest and settings, and a resume with a different corpus or settings is refused.
* **Dropout debiasing** (Webster et al. 2020, "Measuring and Reducing Gendered Correlations in Pre-trained
  Models", arXiv:2010.06032, Sec. 4: raise dropout during further pre-training so the model relies less on
  gendered correlations): ``hidden_dropout``/``attention_dropout`` set the model config's dropout fields where
  it has them (GPT-2's ``resid_pdrop``/``attn_pdrop``, BERT's ``hidden_dropout_prob``…). Llama-family configs
  have only ``attention_dropout``; for them hidden dropout is applied, during training only, to the output of
  every attention output projection (``o_proj``) and MLP down projection (``down_proj``) before it joins the
  residual stream — where BERT and GPT-2 put their hidden dropout. The saved model's config keeps the base
  model's dropout values, so inference is unchanged.

The record (:data:`MITIGATION_FILE`, schema :data:`MITIGATION_SCHEMA`) holds the base model and its
revision, the corpus digest, the method's own details (CDA's word-list version and swap counts, DP's ε),
the hyper-parameters, seed, time and library versions.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from auditlm.errors import AuditError

#: Written next to the weights by every auditlm mitigation; ``auditlm run --model DIR`` stores it with the run.
MITIGATION_FILE = "auditlm_mitigation.json"
MITIGATION_SCHEMA = "auditlm.mitigation/1"
CHECKPOINT_DIR = "checkpoints"
STATE_FILE = "auditlm_train_state.json"

#: Config fields that hold hidden-state (residual / FFN output) dropout, by model family.
HIDDEN_DROPOUT_FIELDS = ("hidden_dropout_prob", "resid_pdrop", "hidden_dropout", "dropout")
#: Config fields that hold attention-probability dropout.
ATTENTION_DROPOUT_FIELDS = ("attention_probs_dropout_prob", "attn_pdrop", "attention_dropout")
#: Modules whose output is a sublayer's contribution to the residual stream (Llama, Mistral, Qwen, SmolLM…).
SUBLAYER_OUTPUTS = ("o_proj", "down_proj")


@dataclass
class TrainConfig:
    """Hyper-parameters of :func:`train` (stored in the record)."""

    epochs: float = 1.0
    #: Stop after this many optimizer steps (overrides ``epochs``; the schedule is laid out for it).
    max_steps: int | None = None
    lr: float = 1e-4
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 128
    seed: int = 0
    lora: bool = True
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    weight_decay: float = 0.0
    warmup_steps: int = 0
    scheduler: str = "linear"
    max_grad_norm: float = 1.0
    #: Dropout debiasing (Webster et al. 2020): hidden and attention dropout during training; None: the model's.
    hidden_dropout: float | None = None
    attention_dropout: float | None = None
    save_steps: int = 100
    save_total_limit: int | None = 2
    logging_steps: int = 10

    def check(self) -> None:
        """Raise :class:`AuditError` (one line, the valid range) for an impossible setting."""
        bad = []
        if not self.epochs > 0:
            bad.append(f"epochs {self.epochs} (valid: > 0)")
        if self.max_steps is not None and self.max_steps < 1:
            bad.append(f"max_steps {self.max_steps} (valid: ≥ 1)")
        if not self.lr > 0:
            bad.append(f"lr {self.lr} (valid: > 0)")
        for name in ("batch_size", "grad_accum", "lora_r", "save_steps", "logging_steps"):
            if getattr(self, name) < 1:
                bad.append(f"{name} {getattr(self, name)} (valid: ≥ 1)")
        if self.max_length < 2:
            bad.append(f"max_length {self.max_length} (valid: ≥ 2)")
        for name in ("hidden_dropout", "attention_dropout", "lora_dropout"):
            v = getattr(self, name)
            if v is not None and not 0.0 <= v < 1.0:
                bad.append(f"{name} {v} (valid: 0 ≤ p < 1)")
        if self.scheduler not in ("linear", "constant", "cosine", "constant_with_warmup"):
            bad.append(f"scheduler {self.scheduler!r} (valid: linear, constant, cosine, constant_with_warmup)")
        if bad:
            raise AuditError("fine-tuning settings: " + "; ".join(bad))


@dataclass
class TrainResult:
    """What :func:`train` wrote and measured."""

    out_dir: Path
    record: dict[str, Any]
    steps: int
    train_loss: float | None
    resumed_from: str | None = None
    log: list[dict[str, Any]] = field(default_factory=list)


def texts_digest(texts: Sequence[str]) -> str:
    """sha256 over the training texts in order (record separator between them)."""
    return hashlib.sha256("\x1e".join(texts).encode("utf-8")).hexdigest()


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in ("auditlm", "torch", "transformers", "peft", "accelerate", "opacus"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def base_model_info(model: Any) -> dict[str, Any]:
    """The base model's spec and provenance (``Target.info()``: revision or weights sha256, dtype, device)."""
    info = dict(model.info()) if hasattr(model, "info") else {"model": str(model)}
    info.pop("mitigation", None)
    return info


def write_record(out_dir: str | Path, record: dict[str, Any]) -> Path:
    """Write :data:`MITIGATION_FILE` into ``out_dir`` (schema and versions added) and return its path."""
    rec = {"schema": MITIGATION_SCHEMA, **record}
    rec.setdefault("versions", _versions())
    path = Path(out_dir) / MITIGATION_FILE
    path.write_text(json.dumps(rec, indent=2, default=str) + "\n", encoding="utf-8")
    return path


def read_record(model_dir: str | Path) -> dict[str, Any] | None:
    """The mitigation record of a model directory, or None when it has none (or it is unreadable)."""
    path = Path(model_dir) / MITIGATION_FILE
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return rec if isinstance(rec, dict) else None


# ------------------------------------------------------------------------------------------------ data


class _Sequences:
    """A map-style dataset of token-id lists (what the Trainer's sampler indexes)."""

    def __init__(self, encoded: list[list[int]]) -> None:
        self.encoded = encoded

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return {"input_ids": self.encoded[i]}


class _Collate:
    """Right-pads a batch; labels are the inputs with padding masked out (-100)."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, Any]:
        import torch

        width = max(len(r["input_ids"]) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for b, r in enumerate(rows):
            x = r["input_ids"]
            ids[b, : len(x)] = torch.tensor(x, dtype=torch.long)
            mask[b, : len(x)] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": ids.masked_fill(mask == 0, -100)}


# ------------------------------------------------------------------------------------------------ dropout


def apply_dropout(model: Any, hidden: float | None, attention: float | None) -> tuple[dict[str, Any], list[Any]]:
    """Set training-time dropout for dropout debiasing; returns ``(description, hook handles)``.

    Config fields are set on the model's config (and every submodule that caches the value, e.g. Llama's
    attention ``attention_dropout``); hidden dropout on a config without such a field is a forward hook on
    each :data:`SUBLAYER_OUTPUTS` module that drops during training only. Call ``h.remove()`` on the
    handles and restore the config before saving (:func:`train` does)."""
    import torch.nn.functional as F

    desc: dict[str, Any] = {}
    handles: list[Any] = []
    config = model.config
    if attention is not None:
        fields = [f for f in ATTENTION_DROPOUT_FIELDS if isinstance(getattr(config, f, None), float | int)]
        if not fields:
            raise AuditError(f"--attention-dropout: the {type(config).__name__} has no attention dropout setting "
                             f"(valid for configs with one of: {', '.join(ATTENTION_DROPOUT_FIELDS)})")
        for f in fields:
            setattr(config, f, float(attention))
        for m in model.modules():  # modules copy the value at construction (LlamaAttention.attention_dropout)
            for f in fields:
                if m is not model and isinstance(getattr(m, f, None), float | int) and not isinstance(
                        getattr(m, f), bool):
                    setattr(m, f, float(attention))
            if hasattr(m, "attn_dropout") and hasattr(m.attn_dropout, "p"):
                m.attn_dropout.p = float(attention)
        desc["attention"] = {"p": float(attention), "via": [f"config.{f}" for f in fields]}
    if hidden is not None:
        fields = [f for f in HIDDEN_DROPOUT_FIELDS if isinstance(getattr(config, f, None), float | int)]
        if fields:
            import torch

            for f in fields:
                setattr(config, f, float(hidden))
            n = 0
            for name, m in model.named_modules():
                if isinstance(m, torch.nn.Dropout) and "attn" not in name.rsplit(".", 1)[-1]:
                    m.p = float(hidden)
                    n += 1
            desc["hidden"] = {"p": float(hidden), "via": [f"config.{f}" for f in fields], "modules": n}
        else:
            p = float(hidden)

            def hook(module: Any, _inputs: Any, output: Any) -> Any:
                return F.dropout(output, p=p, training=module.training) if p > 0 else output

            names = []
            for name, m in model.named_modules():
                if name.rsplit(".", 1)[-1] in SUBLAYER_OUTPUTS:
                    handles.append(m.register_forward_hook(hook))
                    names.append(name.rsplit(".", 1)[-1])
            if not handles:
                raise AuditError(f"--hidden-dropout: the {type(config).__name__} has no hidden dropout setting and "
                                 f"no {' or '.join(SUBLAYER_OUTPUTS)} modules to drop on")
            desc["hidden"] = {"p": p, "via": "forward hooks on " + ", ".join(sorted(set(names))),
                              "modules": len(handles)}
    return desc, handles


# ------------------------------------------------------------------------------------------------ train


def _state(config: TrainConfig, digest: str, base: dict[str, Any]) -> dict[str, Any]:
    cfg = asdict(config)
    for k in ("save_steps", "save_total_limit", "logging_steps"):
        cfg.pop(k)
    return {"corpus_sha256": digest, "base_revision": base.get("revision"), "config": cfg}


def _check_resume(ckpt_root: Path, state: dict[str, Any]) -> None:
    path = ckpt_root / STATE_FILE
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        raise AuditError(f"cannot resume: {path} is missing or unreadable (not an auditlm fine-tune's "
                         "checkpoints)") from None
    differ = sorted(
        [k for k in ("corpus_sha256", "base_revision") if stored.get(k) != state.get(k)]
        + [f"config.{k}" for k, v in state["config"].items() if stored.get("config", {}).get(k) != v]
    )
    if differ:
        raise AuditError(f"cannot resume: the checkpoints were made with a different {', '.join(differ)}; "
                         "resume with the same corpus and settings, or start afresh in a new --out")


def train(
    model: Any,
    texts: Sequence[str],
    out_dir: str | Path,
    config: TrainConfig | None = None,
    *,
    resume: bool | str = False,
    method: str = "finetune",
    record: dict[str, Any] | None = None,
    device: str = "auto",
    dtype: str = "auto",
    force: bool = False,
    callbacks: Sequence[Any] = (),
    corpus_source: str | None = None,
) -> TrainResult:
    """Fine-tune ``model`` on ``texts`` with the transformers Trainer and save a Hugging Face model directory.

    ``model`` is a model spec (:func:`auditlm.targets.registry.resolve`) or a loaded
    :class:`~auditlm.targets.hf.HFTarget`, which is copied, never changed. ``out_dir`` receives the weights,
    the tokenizer and :data:`MITIGATION_FILE` (``method``, the base model, the corpus digest, ``record``'s
    method-specific entries, the hyper-parameters, seed and times); its ``checkpoints`` folder holds the
    Trainer checkpoints. ``resume=True`` continues from the newest checkpoint there (or from the checkpoint
    folder given). A finished model already in ``out_dir`` is refused unless ``force``.
    ``callbacks`` are passed to the Trainer (a test stops training early through one).
    """
    import torch
    from transformers import Trainer, TrainingArguments
    from transformers.trainer_utils import get_last_checkpoint

    from auditlm.mitigate.finetune import _encode, _load, _lora, _pad_id

    config = config or TrainConfig()
    config.check()
    texts = [str(t) for t in texts]
    if not texts:
        raise AuditError("fine-tuning needs at least one training text")
    out = Path(out_dir)
    ckpt_root = out / CHECKPOINT_DIR
    if (out / MITIGATION_FILE).exists() and not force and not resume:
        raise AuditError(f"{out} already holds a fine-tuned model; pass --force to overwrite it, or --resume")
    if isinstance(model, str | Path):
        from auditlm.targets.registry import resolve

        model = resolve(str(model), device=device, dtype=dtype)
    base = base_model_info(model)
    loaded, tokenizer, _ = _load(model, device, dtype)
    digest = texts_digest(texts)
    state = _state(config, digest, base)
    checkpoint: str | None = None
    if resume:
        if isinstance(resume, str):
            checkpoint = resume
            if not Path(checkpoint).is_dir():
                raise AuditError(f"cannot resume: checkpoint {checkpoint} is not a folder")
        else:
            checkpoint = get_last_checkpoint(str(ckpt_root)) if ckpt_root.is_dir() else None
            if checkpoint is None:
                raise AuditError(f"cannot resume: no checkpoint under {ckpt_root} (valid: a folder a previous "
                                 "fine-tune with --save-steps wrote)")
        _check_resume(ckpt_root, state)
    ckpt_root.mkdir(parents=True, exist_ok=True)
    if not resume:
        (ckpt_root / STATE_FILE).write_text(json.dumps(state, indent=2) + "\n", encoding="utf-8")

    torch.manual_seed(config.seed)
    cfg_before = {f: getattr(loaded.config, f) for f in HIDDEN_DROPOUT_FIELDS + ATTENTION_DROPOUT_FIELDS
                  if hasattr(loaded.config, f)}
    dropout_desc, handles = apply_dropout(loaded, config.hidden_dropout, config.attention_dropout)
    if config.lora:
        loaded = _lora(loaded, config.lora_r, config.lora_alpha, config.seed)
        if config.lora_dropout:
            for m in loaded.modules():
                if hasattr(m, "lora_dropout") and isinstance(m.lora_dropout, torch.nn.ModuleDict):
                    for k in m.lora_dropout:
                        m.lora_dropout[k] = torch.nn.Dropout(config.lora_dropout)
    pad = _pad_id(tokenizer)
    encoded = _encode(tokenizer, texts, config.max_length)
    n_tokens = sum(len(x) for x in encoded)

    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    args = TrainingArguments(
        output_dir=str(ckpt_root),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        learning_rate=config.lr,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        weight_decay=config.weight_decay,
        warmup_steps=config.warmup_steps,
        lr_scheduler_type=config.scheduler,
        max_grad_norm=config.max_grad_norm,
        seed=config.seed,
        data_seed=config.seed,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=config.save_total_limit,
        logging_steps=config.logging_steps,
        report_to="none",
        use_cpu=on_cpu,
        dataloader_num_workers=0,
        remove_unused_columns=False,
        disable_tqdm=False,
        bf16=(not on_cpu) and next(loaded.parameters()).dtype == torch.bfloat16,
    )
    trainer = Trainer(model=loaded, args=args, train_dataset=_Sequences(encoded), data_collator=_Collate(pad),
                      callbacks=list(callbacks))
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=checkpoint)
    wall = time.perf_counter() - t0
    for h in handles:
        h.remove()
    steps = int(trainer.state.global_step)
    log = [dict(x) for x in trainer.state.log_history]
    stopped_early = trainer.state.max_steps and steps < trainer.state.max_steps
    trained = trainer.model
    if not trainer.is_world_process_zero():  # under accelerate launch only rank 0 writes the model
        return TrainResult(out, {}, steps, None, checkpoint, log)
    trained = trainer.accelerator.unwrap_model(trained)
    if config.lora:
        trained = trained.merge_and_unload()
    trained.eval()
    for f, v in cfg_before.items():  # the saved config keeps the base model's dropout: inference unchanged
        setattr(trained.config, f, v)
    out.mkdir(parents=True, exist_ok=True)
    trained.save_pretrained(out)
    tokenizer.save_pretrained(out)
    loss = output.training_loss if output is not None else None
    hyper = asdict(config)
    rec = {
        "method": method,
        "base_model": base,
        "corpus": {"source": corpus_source, "sha256": digest, "n_texts": len(texts), "n_tokens": n_tokens},
        **(record or {}),
        "training": {
            "trainer": "transformers.Trainer",
            "hyperparameters": hyper,
            "lora": {"r": config.lora_r, "alpha": config.lora_alpha, "dropout": config.lora_dropout,
                     "target_modules": "all-linear", "merged": True} if config.lora else None,
            "dropout_debias": dropout_desc or None,
            "steps": steps,
            "planned_steps": int(trainer.state.max_steps),
            "stopped_early": bool(stopped_early),
            "train_loss": round(loss, 6) if loss is not None and math.isfinite(loss) else None,
            "loss_log": [{"step": x["step"], "loss": round(x["loss"], 6)} for x in log if "loss" in x],
            "resumed_from": Path(checkpoint).name if checkpoint else None,
            "world_size": int(os.environ.get("WORLD_SIZE", "1")),
            "device": str(trainer.args.device),
        },
        "seed": config.seed,
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "wall_s": round(wall, 2),
    }
    write_record(out, rec)
    return TrainResult(out, rec, steps, loss, checkpoint, log)


def stop_after(step: int) -> Any:
    """A Trainer callback that stops training after optimizer step ``step`` (after its checkpoint is saved)
    — how a test interrupts a fine-tune to check that resuming ends with the same weights."""
    from transformers import TrainerCallback

    class _Stop(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> Any:
            if state.global_step >= step:
                control.should_training_stop = True
                control.should_save = True
            return control

    return _Stop()


ProgressFn = Callable[[int, int], None]
