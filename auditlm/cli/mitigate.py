"""``auditlm mitigate …``: mitigations — a transformed corpus (``scrub``), a fine-tuned model (``cda``,
``finetune``, with ``--dp``) or a decoding-time wrapper (``self-debias``) — each optionally re-audited against
its base model (``--audit SUITE``) with the paired comparison of ``auditlm compare``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from auditlm.cli._common import StoreOpt, _open_store, _quiet_libraries, err, out

mitigate_app = typer.Typer(no_args_is_help=True, help="Mitigations: CDA fine-tuning, Self-Debias, PII scrubbing, "
                           "DP fine-tuning; --audit re-audits and compares with the base model.")


def _read_key(path: Path) -> bytes:
    from auditlm.errors import DataError

    try:
        text = path.read_text(encoding="utf-8").strip()
    except OSError as e:
        raise DataError(f"cannot read hash key '{path}': {e.strerror or e}") from None
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise DataError(f"hash key '{path}' is not hex (an auditlm key file: 64 hex digits)") from None
    if len(key) < 16:
        raise DataError(f"hash key '{path}' is shorter than 16 bytes")
    return key


@mitigate_app.command("scrub")
def scrub(
    corpus: Annotated[Path, typer.Argument(help="Training corpus (.txt one document per line, .jsonl, .json, .csv).")],
    out_path: Annotated[Path, typer.Option("--out", help="Scrubbed corpus to write (same format); "
                                           "scrub_record.json is written beside it.")],
    operator: Annotated[list[str] | None, typer.Option(
        "--operator", help="ENTITY=replace|mask|hash|redact|keep (repeatable).")] = None,
    default_operator: Annotated[str, typer.Option(
        "--default-operator", help="Operator for entity types without --operator.")] = "replace",
    entities: Annotated[list[str] | None, typer.Option(
        "--entities", help="Entity types to scrub (repeatable or comma-separated; default: auditlm's list).")] = None,
    text_field: Annotated[str, typer.Option("--text-field", help="Text field of .jsonl/.json/.csv corpora.")] = "text",
    hash_key: Annotated[Path | None, typer.Option(
        "--hash-key", help="Key file (hex) for the hash operator; default: a random key, never stored.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out and its scrub_record.json.")] = False,
) -> None:
    """Rewrite the PII in a training corpus (auditlm's detector, presidio-anonymizer operators per entity type):
    replace (``<ENTITY_TYPE>``), mask (``*`` per character), hash (keyed HMAC-SHA256 token), redact (delete), keep.
    Prints the findings per entity type; values are never printed or recorded."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from auditlm.mitigate.scrub import check_paths, parse_operators, resolve_operators, scrub_corpus
    from auditlm.privacy.pii import DEFAULT_ENTITIES

    wanted = None
    if entities:
        wanted = [e.strip().upper() for spec in entities for e in spec.split(",") if e.strip()]
    ops = parse_operators(operator or [])
    # Cheap checks first, before the detector loads (a few seconds).
    check_paths(corpus, out_path, force=force)
    resolve_operators(tuple(wanted or DEFAULT_ENTITIES), ops, default_operator)
    key = _read_key(hash_key) if hash_key is not None else None

    with err.status("loading the PII detector …"):
        from auditlm.privacy.pii import PiiScanner

        scanner = PiiScanner(wanted) if wanted else PiiScanner()
        scanner._get_engine()  # an unknown entity type fails here, with the valid ones listed
    with Progress(TextColumn("scrubbing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err, transient=True) as progress:
        task = progress.add_task("scrub", total=None)
        result = scrub_corpus(
            corpus, out_path, operators=ops, default_operator=default_operator, text_field=text_field,
            hash_key=key, force=force, scanner=scanner,
            start=lambda n: progress.update(task, total=n),
            progress=lambda k: progress.advance(task, k),
        )
    rec = result.record
    table = Table(title=f"PII scrubbed: {rec['documents_changed']} of {rec['documents']} documents changed",
                  title_justify="left")
    table.add_column("entity type")
    table.add_column("found", justify="right")
    table.add_column("operator")
    for entity, n in rec["counts"].items():
        table.add_row(entity, str(n), rec["operators"][entity]["operator"])
    out.print(table)
    out.print(f"scrubbed corpus: {result.out}")
    out.print(f"scrub record:    {result.record_path}")


# ------------------------------------------------------------------------------------------------ shared options

ModelOpt = Annotated[str | None, typer.Option("--model", "-m", help="Base model: built-in name, local directory or "
                                              "Hub id [default: smollm2-135m-instruct].")]
AuditOpt = Annotated[list[str] | None, typer.Option("--audit", help="After mitigating, audit the base and the new "
                                                    "model with this suite (repeatable) and compare them.")]
WhereOpt = Annotated[list[str] | None, typer.Option("--where", help="With --audit: only items whose group field is "
                                                    "one of the values, e.g. bias_type=gender (repeatable).")]
LimitOpt = Annotated[int | None, typer.Option("--limit", min=1, help="With --audit: seeded subset of N items per "
                                              "suite.")]
BaselineOpt = Annotated[str | None, typer.Option("--baseline-run", help="With --audit: a stored run of the base "
                                                 "model to compare against instead of auditing it again.")]
DataDirOpt = Annotated[str | None, typer.Option("--data-dir", help="Benchmark data folder [env AUDITLM_DATA].")]


def _audit_args(where: list[str] | None, limit: int | None, data_dir: str | None, store: Path | None,
                extra: list[str] | None = None) -> list[str]:
    args: list[str] = []
    for w in where or []:
        args += ["--where", w]
    if limit is not None:
        args += ["--limit", str(limit)]
    if data_dir:
        args += ["--data-dir", data_dir]
    if store is not None:
        args += ["--store", str(store)]
    return args + list(extra or [])


def _audit_run(model: str, suites: list[str], args: list[str], label: str) -> str:
    """``auditlm run`` of ``model`` in a child process (its own model load and progress); returns the run id."""
    import subprocess
    import sys

    cmd = [sys.executable, "-m", "auditlm", "run", "--model", model, "--json"]
    for s in suites:
        cmd += ["--suite", s]
    cmd += args
    from rich.markup import escape

    err.print(escape(f"auditing the {label} model: auditlm run --model {model} " + " ".join(f"--suite {s}" for s in suites)))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if proc.returncode not in (0, 1):  # 1: a --fail-on gate of the run itself failed; the run is stored
        from auditlm.errors import AuditError

        raise AuditError(f"the audit of the {label} model failed (exit {proc.returncode}); its error is above")
    import json

    try:
        return str(json.loads(proc.stdout)["run_id"])
    except (ValueError, KeyError):
        from auditlm.errors import AuditError

        raise AuditError(f"the audit of the {label} model printed no run id") from None


def _audit_and_compare(base: str, new: str, suites: list[str], *, where: list[str] | None, limit: int | None,
                       data_dir: str | None, store: Path | None, baseline_run: str | None,
                       extra: list[str] | None = None, fail_on_regression: list[str] | None = None) -> None:
    """Audit ``base`` (unless ``baseline_run``) and ``new`` with ``suites``, then print ``auditlm compare``."""
    from auditlm.cli.compare import _print
    from auditlm.compare import check_gates, compare_runs, parse_regression_gate

    gates = [parse_regression_gate(g) for g in fail_on_regression or []]
    args = _audit_args(where, limit, data_dir, store, extra)
    run_a = baseline_run or _audit_run(base, suites, args, "base")
    run_b = _audit_run(new, suites, args, "mitigated")
    with _open_store(store, readonly=True) as st:
        res = compare_runs(st, run_a, run_b, suites=suites, gates=gates)
    for w in res.warnings:
        err.print(f"[yellow]warning[/] {w}", highlight=False)
    out.print(f"compare {run_a} (base) → {run_b} (mitigated)")
    _print(res)
    check_gates(res)
    if any(not g.passed for g in res.gates):
        raise typer.Exit(1)


def _check_audit(suites: list[str] | None, probes: list[str] | None = None) -> None:
    """Unknown suites fail before any training (one line, the valid ids)."""
    if not suites:
        return
    from auditlm.suites.loader import discover, select

    select(discover(probes or []), list(suites))


def _read_training_texts(corpus: list[str], fmt: str, text_field: str) -> tuple[list[str], str]:
    """Documents of the corpus files (``lines``/``jsonl``/``csv``: a document per line or row, repeated as often
    as it occurs; ``wikitext``: the detokenised articles of a raw WikiText file) or of ``hf:ORG/NAME[@SPLIT]``
    datasets (their ``text_field`` column), and a description of the source."""
    from auditlm.errors import DataError

    docs: list[str] = []
    for spec in corpus:
        if spec.startswith("hf:"):
            name, _, split = spec[3:].partition("@")
            try:
                from datasets import load_dataset

                ds = load_dataset(name, split=split or "train")
            except Exception as e:
                raise DataError(f"cannot load Hugging Face dataset '{name}': {str(e).splitlines()[0][:200]}") from None
            if text_field not in ds.column_names:
                raise DataError(f"dataset '{name}' has no '{text_field}' column (valid: {', '.join(ds.column_names)})")
            docs += [t for t in ds[text_field] if isinstance(t, str) and t.strip()]
            continue
        path = Path(spec)
        if not path.is_file():
            raise DataError(f"corpus file '{path}' does not exist or is not a file (valid: a .txt/.jsonl/.json/"
                            ".csv file, a raw WikiText file with --format wikitext, or hf:ORG/NAME)")
        kind = fmt
        if kind == "auto":
            with path.open(encoding="utf-8", errors="replace") as fh:
                head = next((ln for ln in fh if ln.strip()), "")
            kind = "wikitext" if head.startswith(" = ") and head.rstrip().endswith(" =") else "lines"
        if kind == "wikitext":
            from auditlm.mitigate.cda import wikitext_documents

            docs += wikitext_documents(path)
        else:
            from auditlm.suites.corpus import read_documents

            try:
                items = read_documents(path, text_field=text_field)
            except ValueError as e:
                raise DataError(f"corpus file '{path}': {e}") from None
            docs += [str(it["text"]) for it in items for _ in range(int(it.get("copies", 1)))]
    if not docs:
        raise DataError(f"the corpus {', '.join(corpus)} holds no text")
    return docs, ", ".join(corpus)


FormatOpt = Annotated[str, typer.Option("--format", help="Corpus files: auto (WikiText when the first line is a "
                                        "' = Title = ' heading, else one document per line/row), lines, wikitext.")]


def _main_process() -> bool:
    """False in the other processes of an ``accelerate launch`` / ``torchrun`` (they train, rank 0 reports)."""
    import os

    return int(os.environ.get("RANK", "0")) == 0


def _train_config(**kw):
    from auditlm.mitigate.train import TrainConfig

    return TrainConfig(**kw)


def _print_trained(res, extra: dict[str, str] | None = None) -> None:
    rec = res.record
    t = rec.get("training", {})
    out.print(f"fine-tuned model: {res.out_dir}")
    out.print(f"  steps {t.get('steps')}, train loss {t.get('train_loss')}, {rec.get('wall_s')} s on "
              f"{t.get('device')}" + (f", resumed from {t['resumed_from']}" if t.get("resumed_from") else ""))
    for k, v in (extra or {}).items():
        out.print(f"  {k}: {v}")
    out.print(f"  record: {res.out_dir / 'auditlm_mitigation.json'}")


def _training_options(epochs, max_steps, lr, batch_size, grad_accum, max_length, seed, lora, lora_r, save_steps,
                      hidden_dropout, attention_dropout, dropout_debias):
    if dropout_debias:
        hidden_dropout = 0.20 if hidden_dropout is None else hidden_dropout
        attention_dropout = 0.15 if attention_dropout is None else attention_dropout
    return _train_config(epochs=epochs, max_steps=max_steps, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
                         max_length=max_length, seed=seed, lora=lora, lora_r=lora_r, save_steps=save_steps,
                         hidden_dropout=hidden_dropout, attention_dropout=attention_dropout)


EpochsOpt = Annotated[float, typer.Option("--epochs", help="Passes over the training texts.")]
MaxStepsOpt = Annotated[int | None, typer.Option("--max-steps", min=1, help="Optimizer steps (overrides --epochs).")]
LrOpt = Annotated[float, typer.Option("--lr", help="Peak learning rate (linear decay).")]
BatchOpt = Annotated[int, typer.Option("--batch-size", min=1, help="Sequences per device per step.")]
AccumOpt = Annotated[int, typer.Option("--grad-accum", min=1, help="Gradient accumulation steps.")]
MaxLenOpt = Annotated[int, typer.Option("--max-length", min=2, help="Tokens per training sequence (longer are cut).")]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, help="Seed of the LoRA init, data order and dropout.")]
LoraOpt = Annotated[bool, typer.Option("--lora/--full", help="Train a LoRA adapter (merged on save) or every weight.")]
LoraROpt = Annotated[int, typer.Option("--lora-r", min=1, help="LoRA rank.")]
SaveOpt = Annotated[int, typer.Option("--save-steps", min=1, help="Checkpoint every N steps under OUT/checkpoints.")]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue from the newest checkpoint under OUT/checkpoints.")]
HidOpt = Annotated[float | None, typer.Option("--hidden-dropout", help="Dropout debiasing: hidden dropout while "
                                              "training (Webster et al. 2020).")]
AttOpt = Annotated[float | None, typer.Option("--attention-dropout", help="Dropout debiasing: attention dropout "
                                              "while training.")]
DropOpt = Annotated[bool, typer.Option("--dropout-debias", help="Dropout debiasing with hidden 0.20 and attention "
                                       "0.15 (each overridable).")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Overwrite a fine-tuned model already in --out.")]


@mitigate_app.command("cda")
def cda(
    corpus: Annotated[list[str], typer.Option("--corpus", help="Training text: a file (repeatable; WikiText raw "
                                              "files are detected) or hf:ORG/NAME[@SPLIT].")],
    out_dir: Annotated[Path, typer.Option("--out", help="Model directory to write (weights, tokenizer, "
                                          "auditlm_mitigation.json; checkpoints/ inside).")],
    model: ModelOpt = None,
    axis: Annotated[str, typer.Option("--axis", help="Word-list axis to swap: gender, race, religion.")] = "gender",
    swap: Annotated[str | None, typer.Option("--swap", help="Exchange only these two groups, 'A,B' "
                                             "[default: rotate every group to the next].")] = None,
    names: Annotated[str, typer.Option("--names", help="Person names: keep, protect (no swap inside a PERSON "
                                       "entity) or swap (gender's name pairs).")] = "keep",
    all_sentences: Annotated[bool, typer.Option("--all-sentences", help="Also train on the sentences with no "
                                                "attribute term [default: only the two-sided pairs].")] = False,
    max_sentences: Annotated[int | None, typer.Option("--max-sentences", min=1, help="Use the corpus's first N "
                                                      "sentences.")] = None,
    fmt: FormatOpt = "auto",
    text_field: Annotated[str, typer.Option("--text-field", help="Text field of .jsonl/.csv corpora and hf: "
                                            "datasets.")] = "text",
    epochs: EpochsOpt = 1.0,
    max_steps: MaxStepsOpt = None,
    lr: LrOpt = 2e-4,
    batch_size: BatchOpt = 8,
    grad_accum: AccumOpt = 1,
    max_length: MaxLenOpt = 128,
    seed: SeedOpt = 0,
    lora: LoraOpt = True,
    lora_r: LoraROpt = 8,
    save_steps: SaveOpt = 100,
    resume: ResumeOpt = False,
    hidden_dropout: HidOpt = None,
    attention_dropout: AttOpt = None,
    dropout_debias: DropOpt = False,
    force: ForceOpt = False,
    audit: AuditOpt = None,
    where: WhereOpt = None,
    limit: LimitOpt = None,
    baseline_run: BaselineOpt = None,
    data_dir: DataDirOpt = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N.")] = "auto",
    store: StoreOpt = None,
) -> None:
    """Counterfactual data augmentation (Zhao et al. 2018; Webster et al. 2020): swap the axis's terms in every
    corpus sentence that has one, fine-tune on the originals plus their counterfactual copies (two-sided), save
    a Hugging Face model directory; with --audit, audit base and new model and compare them."""
    from auditlm.errors import DataError
    from auditlm.mitigate.cda import augment, iter_document_sentences, load_wordlist
    from auditlm.mitigate.train import train
    from auditlm.targets import registry

    if names not in ("keep", "protect", "swap"):
        raise typer.BadParameter(f"'{names}' (valid: keep, protect, swap)", param_hint="--names")
    if fmt not in ("auto", "lines", "wikitext"):
        raise typer.BadParameter(f"'{fmt}' (valid: auto, lines, wikitext)", param_hint="--format")
    wl = load_wordlist(axis)  # an unknown axis fails here, naming the valid ones
    pair = None
    if swap is not None:
        pair = tuple(x.strip() for x in swap.split(","))
        if len(pair) != 2 or not all(p in wl.groups for p in pair):
            raise typer.BadParameter(f"'{swap}' (valid: two of {', '.join(wl.groups)}, e.g. "
                                     f"{wl.groups[0]},{wl.groups[1]})", param_hint="--swap")
    config = _training_options(epochs, max_steps, lr, batch_size, grad_accum, max_length, seed, lora, lora_r,
                               save_steps, hidden_dropout, attention_dropout, dropout_debias)
    config.check()
    _check_audit(audit)
    spec = model or registry.DEFAULT_MODEL
    registry.check_model(spec)
    docs, source = _read_training_texts(corpus, fmt, text_field)
    sentences = list(iter_document_sentences(docs))
    if max_sentences is not None:
        sentences = sentences[:max_sentences]
    with err.status(f"swapping {axis} terms in {len(sentences)} sentences …"):
        result = augment(sentences, axis, swap=pair, names=names)  # type: ignore[arg-type]
    if result.n_changed == 0:
        raise DataError(f"no sentence of the corpus has a {axis} term to swap: CDA would change nothing")
    texts = result.sentences if all_sentences else [
        s for r in result.records if r.changed for s in (r.original, r.counterfactual)]
    summary = result.summary()
    summary["trained_on"] = "all sentences" if all_sentences else "the two-sided pairs only"
    summary["texts"] = len(texts)
    if _main_process():
        out.print(f"CDA ({axis}, word list {result.wordlist_version}): {result.n_changed} of {result.n_sentences} "
                  f"sentences had a term; training on {len(texts)} texts")
        top = ", ".join(f"{k} {v}" for k, v in list(summary["terms"].items())[:8])
        out.print(f"  most swapped: {top}")
    _quiet_libraries()
    with err.status(f"loading model {spec} …"):
        base = registry.resolve(spec, device=device)
    res = train(base, texts, out_dir, config, resume=resume, method="cda", force=force,
                record={"augmentation": summary}, device=device, corpus_source=source)
    if not res.record:  # another process of an `accelerate launch`: rank 0 saves, prints and audits
        return
    _print_trained(res)
    if audit:
        del base
        _audit_and_compare(spec, str(out_dir), list(audit), where=where, limit=limit, data_dir=data_dir,
                           store=store, baseline_run=baseline_run)


@mitigate_app.command("finetune")
def finetune_cmd(
    corpus: Annotated[list[str], typer.Option("--corpus", help="Training text: a file (repeatable) or "
                                              "hf:ORG/NAME[@SPLIT].")],
    out_dir: Annotated[Path, typer.Option("--out", help="Model directory to write.")],
    model: ModelOpt = None,
    fmt: FormatOpt = "auto",
    text_field: Annotated[str, typer.Option("--text-field", help="Text field of .jsonl/.csv corpora.")] = "text",
    dp: Annotated[bool, typer.Option("--dp", help="Differentially private fine-tuning (DP-SGD with Opacus).")] = False,
    target_epsilon: Annotated[float, typer.Option("--target-epsilon", help="With --dp: the privacy budget ε.")] = 8.0,
    delta: Annotated[float | None, typer.Option("--delta", help="With --dp: δ [default: below 1/N].")] = None,
    max_grad_norm: Annotated[float, typer.Option("--max-grad-norm", help="Per-sample clipping norm (--dp) or "
                                                 "the gradient clipping norm.")] = 1.0,
    epochs: EpochsOpt = 3.0,
    max_steps: MaxStepsOpt = None,
    lr: LrOpt = 2e-4,
    batch_size: BatchOpt = 8,
    grad_accum: AccumOpt = 1,
    max_length: MaxLenOpt = 128,
    seed: SeedOpt = 0,
    lora: LoraOpt = True,
    lora_r: LoraROpt = 8,
    save_steps: SaveOpt = 100,
    resume: ResumeOpt = False,
    force: ForceOpt = False,
    audit: AuditOpt = None,
    where: WhereOpt = None,
    limit: LimitOpt = None,
    baseline_run: BaselineOpt = None,
    data_dir: DataDirOpt = None,
    audit_corpus: Annotated[str | None, typer.Option("--audit-corpus", help="With --audit: the corpus the privacy "
                                                     "suites check for leakage (e.g. the unscrubbed one) "
                                                     "[default: --corpus].")] = None,
    canaries: Annotated[str | None, typer.Option("--canaries", help="With --audit: the canary record.")] = None,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N.")] = "auto",
    store: StoreOpt = None,
) -> None:
    """Fine-tune a model on a corpus (e.g. one 'auditlm mitigate scrub' wrote), optionally with DP-SGD (--dp,
    target ε and δ; Opacus); save a Hugging Face model directory; with --audit, audit base and new model and
    compare them."""
    from auditlm.mitigate.train import train, write_record
    from auditlm.targets import registry

    if fmt not in ("auto", "lines", "wikitext"):
        raise typer.BadParameter(f"'{fmt}' (valid: auto, lines, wikitext)", param_hint="--format")
    if dp and not target_epsilon > 0:
        raise typer.BadParameter(f"{target_epsilon} (valid: ε > 0)", param_hint="--target-epsilon")
    if dp and delta is not None and not 0 < delta < 1:
        raise typer.BadParameter(f"{delta} (valid: 0 < δ < 1)", param_hint="--delta")
    config = _train_config(epochs=epochs, max_steps=max_steps, lr=lr, batch_size=batch_size, grad_accum=grad_accum,
                           max_length=max_length, seed=seed, lora=lora, lora_r=lora_r, save_steps=save_steps,
                           max_grad_norm=max_grad_norm)
    config.check()
    _check_audit(audit)
    spec = model or registry.DEFAULT_MODEL
    registry.check_model(spec)
    texts, source = _read_training_texts(corpus, fmt, text_field)
    if _main_process():
            out.print(f"fine-tuning on {len(texts)} documents of {source}"
                      + (f" with DP-SGD (target ε {target_epsilon})" if dp else ""))
    _quiet_libraries()
    with err.status(f"loading model {spec} …"):
        base = registry.resolve(spec, device=device)
    if dp:
        from auditlm.errors import AuditError
        from auditlm.mitigate.train import MITIGATION_FILE, base_model_info, texts_digest

        if resume:
            raise AuditError("--resume is not available with --dp (the privacy accountant's state is not "
                             "checkpointed); start the DP fine-tune afresh")
        if (out_dir / MITIGATION_FILE).exists() and not force:
            raise AuditError(f"{out_dir} already holds a fine-tuned model; pass --force to overwrite it")
        import time
        from datetime import datetime, timezone

        from auditlm.mitigate.dp import dp_finetune

        started = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        with err.status("DP-SGD fine-tuning …"):
            r = dp_finetune(base, texts, out_dir, target_epsilon=target_epsilon, delta=delta,
                            max_grad_norm=max_grad_norm, epochs=max(1, round(epochs)), lr=lr,
                            batch_size=batch_size, max_length=max_length, seed=seed, lora=lora, lora_r=lora_r,
                            device=device)
        wall = time.perf_counter() - t0
        write_record(out_dir, {
            "method": "dp-finetune",
            "base_model": base_model_info(base),
            "corpus": {"source": source, "sha256": texts_digest(texts), "n_texts": len(texts)},
            "privacy": r.privacy,
            "training": {"trainer": "opacus DP-SGD loop", "hyperparameters": r.hyperparameters,
                         "epoch_loss": r.epoch_loss},
            "seed": seed, "started": started.isoformat(timespec="seconds"),
            "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "wall_s": round(wall, 2),
        })
        out.print(f"DP fine-tuned model: {out_dir}")
        out.print(f"  ε spent {r.privacy.get('epsilon'):.3f} (target {target_epsilon}), δ {r.privacy.get('delta'):.3g}, "
                  f"noise multiplier {r.privacy.get('noise_multiplier'):.3f}, {r.privacy.get('steps')} steps, "
                  f"{wall:.1f} s")
    else:
        res = train(base, texts, out_dir, config, resume=resume, method="finetune", force=force, device=device,
                    corpus_source=source)
        if not res.record:  # another process of an `accelerate launch`
            return
        _print_trained(res)
    if audit:
        del base
        extra: list[str] = ["--corpus", audit_corpus or corpus[0]] if (audit_corpus or not corpus[0].startswith(
            "hf:")) else []
        if canaries:
            extra += ["--canaries", canaries]
        _audit_and_compare(spec, str(out_dir), list(audit), where=where, limit=limit, data_dir=data_dir,
                           store=store, baseline_run=baseline_run, extra=extra)


@mitigate_app.command("self-debias")
def self_debias_cmd(
    audit: Annotated[list[str], typer.Option("--audit", help="Audit the base model and its Self-Debias wrapper with "
                                             "this suite (repeatable) and compare them.")],
    model: ModelOpt = None,
    bias_types: Annotated[str | None, typer.Option("--bias-types", help="Comma-separated Self-Debias prefixes to "
                                                   "use [default: all].")] = None,
    where: WhereOpt = None,
    limit: LimitOpt = None,
    baseline_run: BaselineOpt = None,
    data_dir: DataDirOpt = None,
    store: StoreOpt = None,
) -> None:
    """Self-Debias (Schick et al. 2021), a decoding-time mitigation that needs no training: audit the base model
    and ``self-debias:MODEL`` with the same suites and compare them (the wrapper is also usable directly as
    ``auditlm run --model self-debias:MODEL``)."""
    from auditlm.targets import registry

    _check_audit(audit)
    spec = model or registry.DEFAULT_MODEL
    wrapped = f"self-debias[{bias_types}]:{spec}" if bias_types else f"self-debias:{spec}"
    registry.check_model(wrapped)
    _audit_and_compare(spec, wrapped, list(audit), where=where, limit=limit, data_dir=data_dir, store=store,
                       baseline_run=baseline_run)
