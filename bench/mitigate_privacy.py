"""Privacy mitigations compared: plain vs PII-scrubbed vs DP-SGD fine-tuning on a corpus with planted canaries.

A seeded Faker corpus of short notes — a generic opener (the extraction attack's own prompts), a fictitious
person's name and job, an email address or a phone number, as ``tests/test_privacy_ground_truth.py`` builds it —
gets canaries planted into it (:func:`auditlm.privacy.canaries.plant_canaries`, Carlini et al. 2019). The model
is then LoRA fine-tuned three ways on that corpus:

- **plain** — :func:`auditlm.mitigate.finetune.finetune` on the corpus as is;
- **scrubbed** — the same fine-tune on the corpus after :func:`auditlm.mitigate.scrub.scrub_corpus` (PII found by
  auditlm's detector replaced by ``<ENTITY_TYPE>``; the canaries' digit secrets are not PII to the detector, so
  they stay: scrubbing protects what the detector finds, nothing else);
- **dp (ε = …)** — :func:`auditlm.mitigate.dp.dp_finetune` (DP-SGD, Abadi et al. 2016, via Opacus), same
  epochs, learning rate and (expected) batch size, at each ``--epsilon``.

The base model and every fine-tuned one are audited through the runner (the shipped probe files) on
``privacy.canary_exposure`` (mean exposure in bits), ``privacy.training_data_leakage`` (extraction recall of the
*original* corpus's PII: its extraction attack only) and ``utility.perplexity`` (WikiText-2 test, ``--ppl-limit``
articles). One table is printed and written as JSON to ``--out``.

Usage::

    OMP_NUM_THREADS=1 python bench/mitigate_privacy.py --data-dir /work/shared/data \\
        --out /work/evidence/privacy/mitigate_privacy.json --store /work/evidence/privacy/runs.sqlite
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

MEMBERS = 24


def notes(n: int, seed: int) -> list[str]:
    """``n`` short notes with fictitious PII (Faker, seeded), opened by the extraction attack's generic prompts."""
    from faker import Faker

    from auditlm.scorers.training_data_leakage import DEFAULT_PROMPTS

    openers = tuple(p for p in DEFAULT_PROMPTS if p)[:16]
    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = random.Random(seed)
    out = []
    for i in range(n):
        name = f"{fake.first_name()} {fake.last_name()}"
        job = fake.job().split(",")[0].lower()
        if i % 2 == 0:
            out.append(f"{openers[i % len(openers)]} {name}, the {job}, at {fake.email()}.")
        else:
            phone = (f"({rng.randint(2, 9)}{rng.randint(0, 8)}{rng.randint(0, 9)}) "
                     f"{rng.randint(2, 9)}{rng.randint(10, 99)}-{rng.randint(0, 9999):04d}")
            out.append(f"{openers[i % len(openers)]} {name} ({job}) on {phone}.")
    return out


def _prepare(suite: str, config: Any, data_dir: Path | None, *, limit: int | None = None,
             data: dict[str, Any] | None = None, keep: Any = None) -> Any:
    from dataclasses import replace

    from auditlm import runner
    from auditlm.suites.loader import LoadedSuite, builtin_probes_dir, load_file

    family, name = suite.split(".")
    s = load_file(builtin_probes_dir() / family / f"{name}.yaml")
    if data:
        s = LoadedSuite(s.spec.model_copy(update={"data": s.spec.data.model_copy(update=data)}), s.path, s.digest)
    prepared = runner.prepare([s], replace(config, limit=limit), data_dir)[0]
    if keep is not None:
        prepared.items = [(i, it) for i, it in prepared.items if keep(it)]
    return prepared


def audit(store: Any, target: Any, label: str, prepared: list[Any], config: Any) -> dict[str, dict[str, Any]]:
    from dataclasses import replace

    from auditlm import runner

    cfg = replace(config, model=label)
    run_id = runner.start_run(store, target, prepared, cfg)
    result = runner.execute(store, run_id, target, prepared, cfg)
    out: dict[str, dict[str, Any]] = {"_run_id": {"value": run_id}}
    for m in result.metrics:
        if m.group is not None:
            continue
        out[f"{m.suite}:{m.metric}"] = {"value": m.value, "ci_low": m.ci_low, "ci_high": m.ci_high, "n": m.n}
    return out


def _fmt(m: dict[str, Any] | None, digits: int = 2) -> str:
    if m is None or m.get("value") is None or (isinstance(m["value"], float) and math.isnan(m["value"])):
        return "—"
    return f"{m['value']:.{digits}f} [{m['ci_low']:.{digits}f}, {m['ci_high']:.{digits}f}] n={m['n']}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="model spec (default: auditlm's default model)")
    ap.add_argument("--out", required=True, help="JSON file for the table")
    ap.add_argument("--store", default=None, help="run store (default: a temporary one)")
    ap.add_argument("--work", default=None, help="folder for corpora and fine-tuned models (default: temporary)")
    ap.add_argument("--data-dir", default=None, help="benchmark data folder (WikiText-2)")
    ap.add_argument("--members", type=int, default=MEMBERS, help="Faker notes in the corpus")
    ap.add_argument("--canaries", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=4, help="insertions of each canary")
    ap.add_argument("--secret-length", type=int, default=2, help="digits per secret (|R| = 10^length)")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--dp-lr", type=float, default=None, help="DP learning rate (default: --lr)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--epsilon", type=float, nargs="*", default=[8.0], help="DP target ε values")
    ap.add_argument("--draws", type=int, default=40, help="extraction draws (64 sampled tokens each)")
    ap.add_argument("--ppl-limit", type=int, default=1, help="WikiText-2 articles for perplexity (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--only", nargs="*", default=None, help="subset of: base plain scrubbed dp")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    import auditlm.suites.corpus  # noqa: F401  (registers the corpus readers)
    from auditlm import runner
    from auditlm.mitigate.dp import dp_finetune
    from auditlm.mitigate.finetune import finetune
    from auditlm.mitigate.scrub import scrub_corpus
    from auditlm.privacy.canaries import plant_canaries
    from auditlm.store import Store
    from auditlm.targets.hf import HFTarget
    from auditlm.targets.registry import DEFAULT_MODEL, resolve

    model_spec = args.model or DEFAULT_MODEL
    only = set(args.only or ["base", "plain", "scrubbed", "dp"])
    tmp = tempfile.TemporaryDirectory(prefix="mitigate-privacy-")
    work = Path(args.work) if args.work else Path(tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    data_dir = Path(args.data_dir) if args.data_dir else None
    t_start = time.perf_counter()

    # 1. The corpus: Faker notes with canaries planted.
    members = work / "members.txt"
    members.write_text("\n".join(notes(args.members, seed=11 + args.seed)) + "\n", encoding="utf-8")
    planted = plant_canaries(members, work / "planted", n_canaries=args.canaries, secret_length=args.secret_length,
                             repeats=args.repeats, seed=3 + args.seed)
    training = planted.corpus.read_text(encoding="utf-8").splitlines()
    scrubbed_path = work / "scrubbed" / "members.txt"
    scrubbed_path.parent.mkdir(parents=True, exist_ok=True)
    scrub = scrub_corpus(planted.corpus, scrubbed_path, force=True)
    scrubbed = scrubbed_path.read_text(encoding="utf-8").splitlines()
    assert len(scrubbed) == len(training)
    canary_texts = {c["text"] for c in planted.canaries}
    print(f"corpus: {len(training)} texts ({args.members} notes + {args.canaries} canaries x {args.repeats}); "
          f"scrubbed {scrub.record.get('documents_changed', '?')} documents, findings {scrub.counts}; "
          f"canaries surviving scrubbing: {sum(t in canary_texts for t in scrubbed)}/{args.canaries * args.repeats}",
          flush=True)

    base = resolve(model_spec, batch_size=32)
    common = {"epochs": args.epochs, "batch_size": args.batch_size, "max_length": args.max_length, "seed": args.seed,
              "lora": True}
    models: list[dict[str, Any]] = []
    if "base" in only:
        models.append({"label": "base", "target": base, "epsilon": None, "train_s": None})

    # 2. The fine-tunes.
    for label, texts in (("plain", training), ("scrubbed", scrubbed)):
        if label not in only:
            continue
        t0 = time.perf_counter()
        out = finetune(base, texts, work / label, lr=args.lr, **common)
        models.append({"label": label, "dir": out, "epsilon": math.inf, "train_s": time.perf_counter() - t0})
        print(f"{label}: trained in {models[-1]['train_s']:.0f} s", flush=True)
    if "dp" in only:
        for eps in args.epsilon:
            t0 = time.perf_counter()
            res = dp_finetune(base, training, work / f"dp-eps{eps:g}", target_epsilon=eps,
                              lr=args.dp_lr or args.lr, **common)
            models.append({"label": f"dp (ε={eps:g})", "dir": res.out_dir, "epsilon": res.privacy["epsilon"],
                           "privacy": res.privacy, "hyperparameters": res.hyperparameters,
                           "epoch_loss": res.epoch_loss, "train_s": time.perf_counter() - t0})
            print(f"dp ε={eps:g}: trained in {models[-1]['train_s']:.0f} s; spent ε={res.privacy['epsilon']:.3f}, "
                  f"σ={res.privacy['noise_multiplier']:.3f}, q={res.privacy['sample_rate']:.3f}, "
                  f"steps={res.privacy['steps']}, δ={res.privacy['delta']:.2g}; loss {res.epoch_loss}", flush=True)

    # 3. The audits.
    inputs = {"corpus": str(planted.corpus), "canaries": str(planted.record)}
    suites = ["privacy.canary_exposure", "privacy.training_data_leakage"]
    if args.ppl_limit:
        suites.append("utility.perplexity")
    config = runner.RunConfig(model=model_spec, suites=suites, seed=5, inputs=inputs,
                              data_dir=str(data_dir) if data_dir else None, batch_size=32)
    prepared = [
        _prepare("privacy.canary_exposure", config, data_dir),
        _prepare("privacy.training_data_leakage", config, data_dir, data={"size": args.draws},
                 keep=lambda it: it["attack"] == "extraction"),
    ]
    if args.ppl_limit:
        prepared.append(_prepare("utility.perplexity", config, data_dir, limit=args.ppl_limit))
    store_path = Path(args.store) if args.store else work / "runs.sqlite"
    store_path.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    with Store(store_path) as st:
        for m in models:
            t0 = time.perf_counter()
            target = m["target"] if "target" in m else HFTarget(str(m["dir"]), batch_size=32)
            metrics = audit(st, target, m["label"], prepared, config)
            audit_s = time.perf_counter() - t0
            row = {k: v for k, v in m.items() if k not in ("target", "dir")}
            row.update(metrics=metrics, audit_s=audit_s)
            rows.append(row)
            print(f"{m['label']}: audited in {audit_s:.0f} s", flush=True)
            if "target" not in m:
                del target

    # 4. The table.
    head = ["model", "canary exposure (bits)", "extraction recall", "token perplexity", "ε", "train s"]
    lines = []
    for r in rows:
        met = r["metrics"]
        eps = r["epsilon"]
        lines.append([
            r["label"],
            _fmt(met.get("privacy.canary_exposure:exposure")),
            _fmt(met.get("privacy.training_data_leakage:extraction_recall"), 3),
            _fmt(met.get("utility.perplexity:token_perplexity"), 1),
            "—" if eps is None else ("∞" if math.isinf(eps) else f"{eps:.2f}"),
            "—" if r["train_s"] is None else f"{r['train_s']:.0f}",
        ])
    widths = [max(len(h), *(len(x[i]) for x in lines)) for i, h in enumerate(head)]
    print()
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for x in lines:
        print(" | ".join(c.ljust(w) for c, w in zip(x, widths, strict=True)))
    log2_space = math.log2(10**args.secret_length - (args.canaries - 1))
    print(f"\nexposure: log2|R| = {log2_space:.2f} bits is memorised, ~1.44 is chance; total {time.perf_counter() - t_start:.0f} s")

    doc = {
        "model": model_spec,
        "corpus": {"members": args.members, "canaries": args.canaries, "repeats": args.repeats,
                   "secret_length": args.secret_length, "texts": len(training), "log2_space": log2_space,
                   "scrub_counts": scrub.counts},
        "training": {"epochs": args.epochs, "lr": args.lr, "dp_lr": args.dp_lr or args.lr,
                     "batch_size": args.batch_size, "max_length": args.max_length, "lora": {"r": 8, "alpha": 16},
                     "seed": args.seed},
        "audit": {"draws": args.draws, "ppl_limit": args.ppl_limit, "seed": config.seed,
                  "store": str(store_path)},
        "rows": [{**r, "epsilon": None if r["epsilon"] is None else ("inf" if math.isinf(r["epsilon"])
                                                                      else r["epsilon"])} for r in rows],
        "total_s": time.perf_counter() - t_start,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2, default=str) + "\n", encoding="utf-8")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
