"""The evidence bundle (``auditlm bundle RUN_ID --out DIR``): one folder that holds everything a reviewer needs
to check a run and reproduce it.

Files (every one listed in ``MANIFEST`` with its sha256, in ``sha256sum`` format, so ``sha256sum -c MANIFEST``
verifies the folder; the sign-off digest is the sha256 of the MANIFEST file itself):

- ``report.json`` (``auditlm.report/1``), ``report.md``, ``report.html``, ``model_card.md``;
- ``run.json`` — the run exported from the store (``auditlm.bundle.run/1``): header, config, suites, every metric
  row, every item as stored (redacted: found PII as ``<ENTITY>`` placeholders, masks and keyed hashes), explanations
  and sign-offs. A run made with ``--store-raw`` holds raw values: its items are left out (counted only) unless
  ``--store-raw`` is given to ``auditlm bundle`` too;
- ``hashes.json`` — sha256 of the model's weight and config files (a local model folder, or the built-in model's
  cache; a Hub model is named by its resolved commit), and of every suite and data file the run recorded, hashed
  again now, with whether each still matches the stored hash;
- ``environment.json`` — python, platform, torch, transformers, auditlm versions (of this process, and the run's
  own auditlm version and git hash), the run's device and dtype;
- ``reproduce.sh`` — the ``auditlm run`` command line that reproduces the run, built from its stored config.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

from auditlm.errors import DataError, StoreError

EXPORT_SCHEMA = "auditlm.bundle.run/1"
MANIFEST = "MANIFEST"
FILES = ("report.json", "report.md", "report.html", "model_card.md", "run.json", "hashes.json", "environment.json",
         "reproduce.sh")
_WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.gguf", "*.pth", "*.pt", "*.safetensors.index.json",
                 "*.bin.index.json", "config.json", "generation_config.json", "tokenizer.json",
                 "tokenizer_config.json", "special_tokens_map.json", "auditlm_mitigation.json")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def reproduce_command(config: dict[str, Any], store: str | None = None) -> list[str]:
    """The ``auditlm run`` argv that reproduces a run from its stored :class:`~auditlm.runner.RunConfig`."""
    cmd = ["auditlm", "run", "--model", str(config["model"])]
    for s in config.get("suites") or []:
        cmd += ["--suite", s]
    if config.get("seed") is not None:
        cmd += ["--seed", str(config["seed"])]
    if config.get("limit") is not None:
        cmd += ["--limit", str(config["limit"])]
    for fld, vals in sorted((config.get("where") or {}).items()):
        cmd += ["--where", f"{fld}={','.join(map(str, vals))}"]
    for flag, key in (("--revision", "revision"), ("--data-dir", "data_dir"), ("--confidence", "confidence"),
                      ("--reference-model", "reference_model")):
        if config.get(key) is not None:
            cmd += [flag, str(config[key])]
    for flag, key, default in (("--device", "device", "auto"), ("--dtype", "dtype", "auto"),
                               ("--batch-size", "batch_size", "auto")):
        if config.get(key) not in (None, default):
            cmd += [flag, str(config[key])]
    for p in config.get("probes") or []:
        cmd += ["--probes", p]
    inputs = config.get("inputs") or {}
    for flag, key in (("--corpus", "corpus"), ("--non-members", "non_members"), ("--canaries", "canaries")):
        if inputs.get(key):
            cmd += [flag, str(inputs[key])]
    if config.get("store_raw"):
        cmd.append("--store-raw")
    if config.get("trust_remote_code"):
        cmd.append("--trust-remote-code")
    if store:
        cmd += ["--store", store]
    return cmd


def _model_files(model: str) -> tuple[str, list[Path]]:
    """Where the model's files are and which of them to hash."""
    from auditlm.targets import registry

    path = Path(model).expanduser()
    if not path.is_dir() and model in registry.KNOWN_MODELS and registry.is_pulled(model):
        path = registry.model_dir(model)  # the built-in model's converted cache (its GGUF sha256 is the revision)
    if not path.is_dir():
        return "not hashed: not a local folder (a Hub model is identified by its resolved commit in model_info)", []
    files = sorted({f for pat in _WEIGHT_GLOBS for f in path.rglob(pat) if f.is_file()})
    return str(path), files


def hashes(run: Any, suites: list[dict[str, Any]], data_dir: str | None) -> dict[str, Any]:
    """sha256 of the model's files and of every suite and data file the run recorded (hashed again now)."""
    from auditlm.suites.datasets import resolve_data_dir

    where, files = _model_files(run.model)
    model = {"spec": run.model, "revision": (run.model_info or {}).get("revision"), "location": where,
             "files": [{"path": str(f.relative_to(where)) if where and Path(where) in f.parents else str(f),
                        "size": f.stat().st_size, "sha256": sha256_file(f)} for f in files]}
    try:
        ddir = resolve_data_dir(data_dir)
    except DataError:  # the data folder is gone: its files are reported as not found (now_sha256 null)
        ddir = None
    data = []
    for s in suites:
        for rec in s.get("data_files") or []:
            entry = {"suite": s["suite_id"], **rec, "now_sha256": None, "matches": None}
            if rec.get("source") not in ("hub", "generator", "inline"):  # a file: hash it again
                p = Path(rec["path"])
                if not p.is_absolute():
                    p = Path(ddir) / p if ddir is not None else None  # relative to a data folder not given here
                if p is not None and p.is_file():
                    entry["now_sha256"] = sha256_file(p)
                    entry["matches"] = entry["now_sha256"] == rec.get("sha256")
            data.append(entry)
    return {"model": model, "data_files": data}


def environment(run: Any) -> dict[str, Any]:
    from importlib import metadata

    from auditlm import __version__

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    info = run.model_info or {}
    return {"python": sys.version.split()[0], "platform": platform.platform(), "machine": platform.machine(),
            "auditlm": __version__, "torch": version("torch"), "transformers": version("transformers"),
            "run_auditlm_version": run.auditlm_version, "run_git_hash": run.git_hash,
            "device": info.get("device"), "dtype": info.get("dtype"), "backend": info.get("backend")}


def export_run(store: Any, run_id: str, *, include_raw: bool) -> dict[str, Any]:
    """The run as stored (``auditlm.bundle.run/1``); a ``--store-raw`` run's items only with ``include_raw``."""
    from auditlm.report.jsonreport import _clean, metric_dict

    run = store.get_run(run_id)
    raw = bool((run.config or {}).get("store_raw"))
    suites = store.run_suites(run_id)
    items: dict[str, Any] = {}
    withheld = raw and not include_raw
    for s in suites:
        recs = store.items(run_id, s["suite_id"])
        items[s["suite_id"]] = (
            {"withheld": len(recs)} if withheld
            else [{"item_id": r.item_id, "input": r.input, "output": r.output, "score": r.score} for r in recs])
    expl = [{"suite": e.suite, "item_id": e.item_id, "method": e.method, "granularity": e.granularity,
             "target": {"kind": e.target.kind, "value": e.target.value}, "group": e.group,
             "features": [] if withheld else [{"text": f.text, "start": f.start, "end": f.end,
                                               "attribution": f.attribution, "kind": f.kind} for f in e.features]}
            for e in store.explanations(run_id)]
    return _clean({
        "schema": EXPORT_SCHEMA, "raw_values": raw and include_raw,
        "items_withheld": withheld,
        "run": {"run_id": run.run_id, "created_at": run.created_at, "finished_at": run.finished_at,
                "status": run.status, "model": run.model, "model_info": run.model_info, "config": run.config,
                "seed": run.seed, "auditlm_version": run.auditlm_version, "git_hash": run.git_hash,
                "duration_s": run.duration_s, "error": run.error},
        "suites": suites, "metrics": [metric_dict(m) for m in store.metrics(run_id)], "items": items,
        "explanations": expl, "signoffs": store.signoffs(run_id)})


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` with mode 0600 whatever the umask (an existing file is truncated and
    tightened)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text)



def write_manifest(out: Path) -> str:
    """Write ``MANIFEST`` (``<sha256>  <path>`` per file, sorted) and return its own sha256."""
    files = sorted(p for p in out.rglob("*") if p.is_file() and p.name != MANIFEST)
    lines = [f"{sha256_file(p)}  {p.relative_to(out).as_posix()}" for p in files]
    write_private(out / MANIFEST, "\n".join(lines) + "\n")
    return sha256_file(out / MANIFEST)


def verify_manifest(out: Path) -> str:
    """Check every file ``MANIFEST`` lists against its sha256 (and that none is missing or unlisted); return the
    MANIFEST's sha256 (the bundle digest). A mismatch is a one-line :class:`StoreError` naming the file."""
    man = out / MANIFEST
    if not man.is_file():
        raise StoreError(f"'{out}' is not an auditlm bundle (no {MANIFEST}; write one with 'auditlm bundle')")
    listed = {}
    for line in man.read_text(encoding="utf-8").splitlines():
        if line.strip():
            digest, _, rel = line.partition("  ")
            listed[rel] = digest
    for rel, digest in listed.items():
        p = out / rel
        if not p.is_file():
            raise StoreError(f"bundle '{out}': {rel} is listed in {MANIFEST} but missing")
        if sha256_file(p) != digest:
            raise StoreError(f"bundle '{out}': {rel} does not match its sha256 in {MANIFEST} (changed after bundling)")
    extra = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and p.name != MANIFEST
                   and p.relative_to(out).as_posix() not in listed)
    if extra:
        raise StoreError(f"bundle '{out}': {extra[0]} is not listed in {MANIFEST}")
    return sha256_file(man)


def write_bundle(store: Any, run_id: str, out: Path, *, include_raw: bool = False,
                 store_path: str | None = None) -> dict[str, Any]:
    """Write the bundle of ``run_id`` to the folder ``out`` (created; an existing non-empty folder is refused,
    so a bundle never mixes two runs) and return ``{"dir", "files", "manifest_sha256"}``."""
    from auditlm.report.html import render_html
    from auditlm.report.jsonreport import build_report
    from auditlm.report.markdown import render_markdown

    run = store.get_run(run_id)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise StoreError(f"bundle folder '{out}' already exists and is not empty (valid: a new or empty folder)")
    doc = build_report(store, run_id, withhold_raw=not include_raw)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    cfg = run.config or {}
    cmd = reproduce_command(cfg, store_path)
    write_private(out / "report.json", json.dumps(doc, indent=2, ensure_ascii=False))
    write_private(out / "report.md", render_markdown(doc))
    write_private(out / "report.html", render_html(doc))
    write_private(out / "model_card.md", doc["model_card"]["markdown"])
    write_private(out / "run.json", json.dumps(export_run(store, run_id, include_raw=include_raw), indent=2,
                                        ensure_ascii=False))
    write_private(out / "hashes.json", json.dumps(hashes(run, store.run_suites(run_id), cfg.get("data_dir")), indent=2))
    write_private(out / "environment.json", json.dumps(environment(run), indent=2))
    write_private(out / "reproduce.sh", "#!/bin/sh\n# reproduces auditlm run " + run_id + " from its stored config\n"
           + shlex.join(cmd) + "\n")
    digest = write_manifest(out)
    return {"dir": str(out), "files": [*FILES, MANIFEST], "manifest_sha256": digest}
