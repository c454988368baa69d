"""Leak scan: every file an audit writes is searched for the PII a (fake) model emitted.

A fake target answers every ``privacy.pii_emission`` prompt with known PII. The run goes through the runner (the
CLI's ``run`` needs a real model) into a store in a scratch folder; the folder also receives a DEBUG log of the
``auditlm`` loggers, the ``auditlm.run/1`` JSON summary saved to a file, and the captured stdout/stderr of
``auditlm runs show`` / ``runs show --json`` / ``runs list``. Then every byte of every file there (the store
with its ``-wal`` / ``-shm`` files while it is open, and again after it is closed) is searched for the planted
values and their normalized forms. Without ``--store-raw`` none may be found; with it they are (so the scan can
fail). Redaction works by detection, so the planted values are ones the detector finds: a value it missed would
be stored — and this test would say so.

The same run includes ``privacy.pii_detector``, whose items are Faker-made fake PII stored as they are. Those
values are allow-listed explicitly, and a Presidio scan of every string the run wrote must find no PII outside
that allow-list (masked renderings such as ``•••-•••-••••`` and ``<ENTITY>`` placeholders aside).
"""

from __future__ import annotations

import io
import json
import logging
import re
import sqlite3
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from auditlm import runner
from auditlm.cli import main
from auditlm.privacy.pii import PiiScanner, normalize
from auditlm.report import summary
from auditlm.store import Store
from auditlm.suites.generators import generate
from auditlm.suites.loader import discover
from auditlm.targets.fake import FakeTarget

EMISSION, DETECTOR = "privacy.pii_emission", "privacy.pii_detector"
#: What the fake model says, by entity type (fictitious values, all found by the detector).
PLANTED = {
    "PERSON": "Dorothy Vance",
    "EMAIL_ADDRESS": "dorothy.vance@example.net",
    "PHONE_NUMBER": "(646) 555-0187",
    "CREDIT_CARD": "4539 1488 0343 6467",
    "US_SSN": "536-22-8714",
    "IBAN_CODE": "DE89 3704 0044 0532 0130 00",
    "IP_ADDRESS": "203.0.113.77",
}
DETECTOR_ITEMS = 40
_MASK_CHARS = ("•", "*")
_PLACEHOLDER = re.compile(r"^<[A-Z_]+>$")


def _respond(prompt: str) -> str:
    p = PLANTED
    return (f" Sure: {p['PERSON']} can be reached at {p['EMAIL_ADDRESS']} or {p['PHONE_NUMBER']}. Card "
            f"{p['CREDIT_CARD']}, SSN {p['US_SSN']}, IBAN {p['IBAN_CODE']}, server {p['IP_ADDRESS']}.")


@dataclass
class Audit:
    folder: Path
    run_id: str
    needles: dict[str, str]  # needle -> where it comes from
    allow_texts: list[str]  # the synthetic (Faker-made) sentences of privacy.pii_detector
    allow_values: list[str]
    open_scan: dict[str, list[str]]  # needle -> files that held it while the store was open
    wal_bytes: int


@pytest.fixture(scope="module")
def scanner() -> PiiScanner:
    return PiiScanner()


def _needles(values: dict[str, str]) -> dict[str, str]:
    """Each value, and its normalized form (digits only for numbers, case-folded text): any of them stored
    means the value is recoverable."""
    out = {}
    for etype, value in values.items():
        out[value] = etype
        out[normalize(value, etype)] = f"{etype} (normalized)"
    return {k: v for k, v in out.items() if len(k) >= 6}


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _grep(folder: Path, needles: dict[str, str]) -> dict[str, list[str]]:
    """Needle -> names of the files whose bytes contain it (case-insensitive)."""
    blobs = {p.name: p.read_bytes().lower() for p in _files(folder)}
    return {n: [name for name, b in blobs.items() if n.lower().encode() in b] for n in needles}


def _run_audit(folder: Path, store_raw: bool, scanner: PiiScanner) -> Audit:
    folder.mkdir()
    suites = discover()
    cfg = runner.RunConfig(model="fake", suites=[EMISSION, DETECTOR], limit=10, seed=0, store_raw=store_raw)
    prepared = runner.prepare([suites[EMISSION]], cfg, None)
    # The detector suite's items are built directly: the first DETECTOR_ITEMS of its generator (a prefix of
    # the full set), so the allow-list below is exactly what the run stores.
    det_items = generate("synthetic_pii", DETECTOR_ITEMS, cfg.seed)
    prepared.append(runner.PreparedSuite(suites[DETECTOR], list(enumerate(det_items)), DETECTOR_ITEMS))
    allow_texts = [it["text"] for it in det_items]
    allow_values = [s["value"] for it in det_items for s in it["spans"]]

    prompts = [it["prompt"] for _, it in prepared[0].items]
    prompt_pii = {f.text: f.entity_type for fs in scanner.scan(prompts) for f in fs}
    assert "prompt_contains_pii" in {it["category"] for _, it in prepared[0].items}
    assert prompt_pii, "the selected prompts should contain PII of their own"
    needles = _needles(PLANTED) | {
        k: f"prompt {v}" for k, v in _needles({t: e for t, e in ((v, k) for k, v in prompt_pii.items())}).items()
    }
    # An allow-listed Faker value that happens to equal a needle would make the byte scan ambiguous.
    needles = {n: w for n, w in needles.items() if not any(n.lower() in t.lower() for t in allow_texts)}
    assert set(PLANTED.values()) <= set(needles)

    log_handler = logging.FileHandler(folder / "auditlm.log", encoding="utf-8")
    log_handler.setLevel(logging.DEBUG)
    log_handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    auditlm_logger = logging.getLogger("auditlm")
    old_level = auditlm_logger.level
    auditlm_logger.setLevel(logging.DEBUG)
    auditlm_logger.addHandler(log_handler)
    root = logging.getLogger()
    root.addHandler(log_handler)  # anything else that logs at INFO or above (root's level) is captured too
    store_path = folder / "runs.sqlite"
    run_out, run_err = io.StringIO(), io.StringIO()
    try:
        with Store(store_path) as st, redirect_stdout(run_out), redirect_stderr(run_err):
            target = FakeTarget(responder=_respond)
            run_id = runner.start_run(st, target, prepared, cfg)
            result = runner.execute(st, run_id, target, prepared, cfg)
            assert not target.ll_calls and len(target.gen_calls) == len(prepared[0].items)  # detector: no model
            (folder / "summary.json").write_text(
                json.dumps(summary(st.get_run(run_id), result.suites, result.metrics), indent=2), encoding="utf-8"
            )
            wal = folder / "runs.sqlite-wal"
            wal_bytes = wal.stat().st_size if wal.exists() else 0
            open_scan = _grep(folder, needles)
    finally:
        root.removeHandler(log_handler)
        auditlm_logger.removeHandler(log_handler)
        auditlm_logger.setLevel(old_level)
        log_handler.close()
    (folder / "run.stdout.txt").write_text(run_out.getvalue(), encoding="utf-8")
    (folder / "run.stderr.txt").write_text(run_err.getvalue(), encoding="utf-8")
    for name, argv in (("runs_show", ["runs", "show", run_id]), ("runs_show_json", ["runs", "show", run_id, "--json"]),
                       ("runs_list", ["runs", "list"])):
        cli_out, cli_err = io.StringIO(), io.StringIO()
        with redirect_stdout(cli_out), redirect_stderr(cli_err):
            main([*argv, "--store", str(store_path)])
        (folder / f"{name}.stdout.txt").write_text(cli_out.getvalue(), encoding="utf-8")
        (folder / f"{name}.stderr.txt").write_text(cli_err.getvalue(), encoding="utf-8")
        assert cli_out.getvalue().strip()
    return Audit(folder, run_id, needles, allow_texts, allow_values, open_scan, wal_bytes)


@pytest.fixture(scope="module", params=[False, True], ids=["redacted", "store_raw"])
def audit(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, scanner: PiiScanner) -> Audit:
    """One audit per mode (module-scoped: a run scans ~60 texts); its stdout/stderr go to files."""
    folder = tmp_path_factory.mktemp("audit") / ("raw" if request.param else "redacted")
    return _run_audit(folder, request.param, scanner)


def test_the_scan_covers_every_kind_of_file(audit: Audit):
    names = {p.name for p in _files(audit.folder)}
    assert {"runs.sqlite", "auditlm.log", "summary.json", "runs_show.stdout.txt", "runs_show_json.stdout.txt",
            "runs_list.stdout.txt"} <= names
    assert audit.wal_bytes > 0, "the open store's -wal file was scanned while it held the run"
    show = (audit.folder / "runs_show.stdout.txt").read_text(encoding="utf-8")
    assert EMISSION in show and DETECTOR in show  # both suites' figures in the one table


def test_planted_pii_is_nowhere_unless_store_raw(audit: Audit):
    raw = audit.folder.name == "raw"
    after_close = _grep(audit.folder, audit.needles)
    if raw:
        for value in PLANTED.values():
            assert "runs.sqlite" in after_close[value] or "runs.sqlite" in audit.open_scan[value], value
        return
    leaks = {n: (audit.needles[n], sorted(set(audit.open_scan[n]) | set(after_close[n])))
             for n in audit.needles if audit.open_scan[n] or after_close[n]}
    assert leaks == {}


def test_fake_pii_of_the_detector_suite_is_stored_as_is(audit: Audit):
    with Store(audit.folder / "runs.sqlite") as st:
        items = st.items(audit.run_id, DETECTOR)
        metrics = [m for m in st.metrics(audit.run_id) if m.suite == DETECTOR]
    assert [r.input["text"] for r in items] == audit.allow_texts
    assert all(r.input["source"] == "faker" for r in items)
    assert any(m.metric == "recall" and m.group is None for m in metrics)
    stored = (audit.folder / "runs.sqlite").read_bytes() + _wal(audit.folder)
    assert any(v.encode() in stored for v in audit.allow_values)


def _wal(folder: Path) -> bytes:
    p = folder / "runs.sqlite-wal"
    return p.read_bytes() if p.exists() else b""


def _leaves(obj: Any) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _leaves(v)
    elif isinstance(obj, list | tuple):
        for v in obj:
            yield from _leaves(v)


def _maybe_json(text: str) -> Any:
    try:
        return json.loads(text)
    except (json.JSONDecodeError, ValueError):
        return text


def _strings_written(folder: Path) -> set[str]:
    """Every string the run wrote: each cell of each table of the store (JSON cells walked to their string
    leaves), the JSON summary's leaves, and each line of the log and the captured output."""
    out: set[str] = set()
    conn = sqlite3.connect(f"file:{folder / 'runs.sqlite'}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for t in tables:
            for row in conn.execute(f'SELECT * FROM "{t}"'):
                for cell in row:
                    if isinstance(cell, str):
                        out.update(_leaves(_maybe_json(cell)))
    finally:
        conn.close()
    for p in _files(folder):
        if p.suffix in (".txt", ".log"):
            out.update(line for line in p.read_text(encoding="utf-8").splitlines())
        elif p.suffix == ".json":
            out.update(_leaves(json.loads(p.read_text(encoding="utf-8"))))
    return {s for s in out if s.strip()}


_NAME = re.compile(r"[A-Z][a-z]+\.?(?:[ '-]+[A-Z][a-z]*\.?)*")


def _plausible(f, text: str) -> bool:
    """Whether a finding in ``text`` could be personal data at all: a value that passes its type's validator
    (Luhn, mod-97, ``phonenumbers`` …) and is not the fraction part of a decimal number, or for names and
    places (no validator) capitalized words. Scanning a store's JSON and a rich table with Presidio otherwise
    reports table borders, ids like ``spii-00037``, ``null``, and floats: a duration such as
    ``3.4759690559999399`` holds a Luhn-valid 16-digit "card" one time in ten."""
    if re.search(r"\d\.$", text[: f.start]):
        return False
    if f.validated is not None:
        return f.validated
    if f.entity_type in ("PERSON", "LOCATION"):
        return bool(_NAME.fullmatch(f.text.strip()))
    return any(ch.isdigit() for ch in f.text)


def test_only_allow_listed_fake_pii_appears(audit: Audit, scanner: PiiScanner):
    strings = sorted(_strings_written(audit.folder))
    allowed = [t.lower() for t in audit.allow_texts]
    # Strings that are (part of) a synthetic sentence are allow-listed; scan everything else.
    to_scan = [s for s in strings if not any(s.lower() in t for t in allowed)]
    unexpected = set()
    for s, findings in zip(to_scan, scanner.scan(to_scan), strict=True):
        for f in findings:
            if any(ch in f.text for ch in _MASK_CHARS) or _PLACEHOLDER.match(f.text):
                continue  # a masked rendering or a placeholder, by design
            if not _plausible(f, s):
                continue  # detector noise on machine text (run ids, table borders, floats)
            if any(f.text.lower() in t for t in allowed):
                continue  # Faker-made value of privacy.pii_detector (e.g. inside a table row or summary)
            unexpected.add((f.entity_type, f.text))
    if audit.folder.name == "raw":  # the same scan finds what --store-raw keeps on purpose
        assert set(PLANTED.items()) <= unexpected
    else:
        assert unexpected == set()


def test_a_scan_logged_at_debug_holds_no_pii(tmp_path: Path, scanner: PiiScanner):
    log = tmp_path / "debug.log"
    handler = logging.FileHandler(log, encoding="utf-8")
    handler.setLevel(logging.DEBUG)
    root = logging.getLogger()
    old_level = root.level
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    try:
        assert {f.entity_type for f in scanner.scan_one(_respond(""))} == set(PLANTED)
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)
        handler.close()
    assert _grep(tmp_path, _needles(PLANTED)) == {n: [] for n in _needles(PLANTED)}
