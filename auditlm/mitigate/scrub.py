"""PII scrubbing of a training corpus: find PII with auditlm's detector, rewrite it with presidio-anonymizer.

:func:`scrub_corpus` reads a local corpus (``.txt``: one document per line; ``.jsonl`` / ``.json``: the ``text``
field of each object; ``.csv``: the ``text`` column), finds PII in every document with
:class:`auditlm.privacy.pii.PiiScanner` (the same entities, thresholds and validators as the privacy suites, so a
scrubbed corpus is clean by the measure the audits use), converts the findings to Presidio ``RecognizerResult``
objects and rewrites them with Presidio's ``AnonymizerEngine``, one operator per entity type:

- ``replace`` (the default) — ``<ENTITY_TYPE>``, as :func:`auditlm.privacy.pii.redact` writes it;
- ``mask`` — Presidio's ``mask``: every character of the value (separators too) becomes ``*``, so the length
  survives and nothing else does;
- ``hash`` — ``<ENTITY_TYPE_xxxxxxxxxxxxxxxx>``: the first 16 hex digits of a **keyed** HMAC-SHA256 of the
  normalized value (:func:`auditlm.privacy.pii.keyed_hash`), through Presidio's ``custom`` operator. The same
  value (in any formatting: ``415-555-2671`` and ``(415) 555-2671``) gets the same token across the corpus, so
  co-reference survives. Presidio's own ``hash`` operator is not used: unsalted, a sha256 of a phone or SSN is
  reversed by enumerating the few billion candidates; with its default random salt per entity it is not
  deterministic. The key is ``hash_key`` (at least 16 bytes; the record keeps only its fingerprint) or, when
  none is given, 32 random bytes that are never stored (tokens are then consistent within one scrub only);
- ``redact`` — the value is deleted;
- ``keep`` — the value is left as is (still counted).

The scrubbed corpus keeps the input's format, row order, blank lines and every other field; a document in which
nothing was found is written back byte for byte (``.txt`` and ``.jsonl``; ``.csv`` and ``.json`` files are
re-serialized, with their text values unchanged). Beside it, ``scrub_record.json`` says what was done: the input
and output sha256, auditlm's version, the detector configuration and its digest, the operator per entity type,
counts of findings per entity type and the number of documents changed. Neither the record nor any error message
holds a found value. PII the detector misses stays in the corpus: the detector's recall per entity type
(``auditlm privacy detector-eval``) bounds what scrubbing removes.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from auditlm.errors import DataError, choices

RECORD_FILE = "scrub_record.json"
"""Name of the record written beside the scrubbed corpus."""

RECORD_SCHEMA = "auditlm.scrub/1"

OPERATORS: tuple[str, ...] = ("replace", "mask", "hash", "redact", "keep")
"""Operators an entity type can be given."""

DEFAULT_OPERATOR = "replace"

MASK_CHAR = "*"

_FORMATS = {".txt": "txt", "": "txt", ".jsonl": "jsonl", ".json": "json", ".csv": "csv"}
_BATCH = 64


@dataclass(frozen=True)
class ScrubResult:
    """What :func:`scrub_corpus` did: the output path, the record's path and the record itself."""

    out: Path
    record_path: Path
    record: dict[str, Any]

    @property
    def counts(self) -> dict[str, int]:
        """Findings per entity type (every type scanned, zeros included)."""
        return dict(self.record["counts"])


def parse_operators(specs: Iterable[str]) -> dict[str, str]:
    """``ENTITY=OPERATOR`` strings (``PHONE_NUMBER=mask``) as a mapping; a malformed one is a :class:`DataError`."""
    out: dict[str, str] = {}
    for spec in specs:
        entity, sep, op = spec.partition("=")
        entity, op = entity.strip().upper(), op.strip().lower()
        if not sep or not entity or not op:
            raise DataError(f"--operator {spec!r} is not ENTITY=OPERATOR (operators: {choices(OPERATORS)})")
        out[entity] = op
    return out


def _check_operator(op: str, where: str) -> None:
    if op not in OPERATORS:
        raise DataError(f"unknown operator {op!r} for {where} (valid: {', '.join(OPERATORS)})")


def resolve_operators(
    entities: Sequence[str], operators: Mapping[str, str] | None, default_operator: str
) -> dict[str, str]:
    """The operator of every scanned entity type: ``operators[entity]``, else ``default_operator``.

    Raises :class:`DataError` for an unknown operator, or an operator given for an entity type not scanned.
    """
    _check_operator(default_operator, "--default-operator")
    operators = dict(operators or {})
    for entity, op in operators.items():
        _check_operator(op, entity)
        if entity not in entities:
            raise DataError(
                f"operator given for {entity}, which is not scanned (entities: {choices(entities, 60)})"
            )
    return {e: operators.get(e, default_operator) for e in entities}


def hash_token(value: str, entity_type: str, key: bytes) -> str:
    """What the ``hash`` operator writes for ``value``: ``<ENTITY_TYPE_`` 16 hex digits of a keyed HMAC-SHA256 of
    the normalized value ``>`` (:func:`auditlm.privacy.pii.keyed_hash`)."""
    from auditlm.privacy.pii import keyed_hash

    return f"<{entity_type}_{keyed_hash(value, entity_type, key)}>"


def operator_configs(operators: Mapping[str, str], key: bytes) -> dict[str, Any]:
    """Presidio ``OperatorConfig`` per entity type for ``operators`` (see the module docstring)."""
    from presidio_anonymizer.entities import OperatorConfig

    configs: dict[str, Any] = {}
    for entity, op in operators.items():
        if op == "replace":
            configs[entity] = OperatorConfig("replace", {"new_value": f"<{entity}>"})
        elif op == "mask":
            # chars_to_mask is clipped to the value's length by Presidio: the whole value is masked.
            configs[entity] = OperatorConfig(
                "mask", {"masking_char": MASK_CHAR, "chars_to_mask": 10**9, "from_end": False}
            )
        elif op == "hash":
            configs[entity] = OperatorConfig(
                "custom", {"lambda": lambda text, _e=entity: hash_token(text, _e, key)}
            )
        elif op == "redact":
            configs[entity] = OperatorConfig("redact", {})
        elif op == "keep":
            configs[entity] = OperatorConfig("keep", {})
        else:  # pragma: no cover - resolve_operators rejects it first
            _check_operator(op, entity)
    return configs


def _describe_operator(op: str, key_fingerprint: str | None) -> dict[str, Any]:
    if op == "replace":
        return {"operator": "replace", "new_value": "<ENTITY_TYPE>"}
    if op == "mask":
        return {"operator": "mask", "masking_char": MASK_CHAR, "chars_to_mask": "all"}
    if op == "hash":
        return {"operator": "hash", "algorithm": "hmac-sha256 of the normalized value, 16 hex digits",
                "presidio_operator": "custom",
                "key": f"fingerprint {key_fingerprint}" if key_fingerprint else "ephemeral (random, not stored)"}
    return {"operator": op}


# --- corpus I/O ------------------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class _Corpus:
    """A corpus file as units to write back: each unit is raw text (written as is) or a document to scrub."""

    def __init__(self, path: Path, text_field: str) -> None:
        self.path = path
        self.text_field = text_field
        self.fmt = _FORMATS.get(path.suffix.lower(), "txt")
        self.fieldnames: list[str] | None = None
        self.rows: list[Any] = []  # txt/jsonl: raw lines (with ends); json/csv: row dicts
        self.texts: list[str] = []  # the documents' texts
        self.where: list[int] = []  # the row index of each document
        try:
            self._read()
        except UnicodeDecodeError as e:
            raise DataError(f"cannot read corpus '{path}': not UTF-8 text (byte {e.start})") from None
        except csv.Error as e:
            raise DataError(f"cannot read corpus '{path}': {e}") from None

    def _read(self) -> None:
        from auditlm.suites.rows import json_line

        raw = self.path.read_text(encoding="utf-8") if self.fmt in ("txt", "jsonl") else None
        if self.fmt == "txt":
            self.rows = raw.splitlines(keepends=True)
            for i, line in enumerate(self.rows):
                body = line.rstrip("\r\n")
                if body.strip():
                    self.texts.append(body)
                    self.where.append(i)
        elif self.fmt == "jsonl":
            self.rows = raw.splitlines(keepends=True)
            for i, line in enumerate(self.rows):
                if not line.strip():
                    continue
                try:
                    obj = json_line(line, f"line {i + 1}")
                except ValueError as e:
                    raise DataError(f"corpus '{self.path}': {e}") from None
                self._add(obj, i, f"line {i + 1}")
        elif self.fmt == "json":
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as e:
                raise DataError(f"corpus '{self.path}': invalid JSON ({e.msg}, line {e.lineno})") from None
            if not isinstance(data, list):
                raise DataError(f"corpus '{self.path}': a .json corpus must be a list of objects")
            self.rows = data
            for i, obj in enumerate(data):
                self._add(obj, i, f"item {i + 1}")
        else:
            with self.path.open(encoding="utf-8", newline="") as f:
                reader = csv.DictReader(f)
                self.fieldnames = list(reader.fieldnames or [])
                if self.text_field not in self.fieldnames:
                    raise DataError(f"corpus '{self.path}' has no '{self.text_field}' column "
                                    f"(columns: {', '.join(self.fieldnames) or 'none'})")
                self.rows = list(reader)
            for i, row in enumerate(self.rows):
                if (row.get(self.text_field) or "").strip():
                    self.texts.append(row[self.text_field])
                    self.where.append(i)

    def _add(self, obj: Any, i: int, where: str) -> None:
        if not isinstance(obj, dict):
            raise DataError(f"corpus '{self.path}', {where}: not an object")
        value = obj.get(self.text_field)
        if not isinstance(value, str):
            fields = ", ".join(sorted(map(str, obj))) or "none"
            raise DataError(f"corpus '{self.path}', {where}: no text field '{self.text_field}' (fields: {fields})")
        if value.strip():
            self.texts.append(value)
            self.where.append(i)

    def render(self, new_texts: Sequence[str]) -> str:
        """The corpus file with each document's text replaced by ``new_texts`` (same order as ``texts``)."""
        rows = list(self.rows)
        for i, old, new in zip(self.where, self.texts, new_texts, strict=True):
            if new == old:
                continue
            if self.fmt == "txt":
                line = rows[i]
                rows[i] = new + line[len(line.rstrip("\r\n")):]
            elif self.fmt == "jsonl":
                line = rows[i]
                obj = json.loads(line)
                obj[self.text_field] = new
                rows[i] = json.dumps(obj, ensure_ascii=False) + line[len(line.rstrip("\r\n")):]
            else:
                rows[i] = {**rows[i], self.text_field: new}
        if self.fmt in ("txt", "jsonl"):
            return "".join(rows)
        if self.fmt == "json":
            return json.dumps(rows, ensure_ascii=False, indent=1) + "\n"
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=self.fieldnames or [], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        return buf.getvalue()


# --- scrubbing -------------------------------------------------------------------------------------------


def scrub_texts(
    texts: Sequence[str],
    scanner: Any,
    operators: Mapping[str, str],
    key: bytes,
    *,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[str], Counter[str]]:
    """Scrub each text: ``(new texts, findings per entity type)``. ``operators`` maps every entity type the
    scanner reports to one of :data:`OPERATORS`; ``progress`` is called with the number of texts done per batch."""
    from presidio_analyzer import RecognizerResult
    from presidio_anonymizer import AnonymizerEngine

    engine = AnonymizerEngine()
    configs = operator_configs(operators, key)
    counts: Counter[str] = Counter()
    out: list[str] = []
    for lo in range(0, len(texts), _BATCH):
        batch = list(texts[lo : lo + _BATCH])
        for text, findings in zip(batch, scanner.scan(batch), strict=True):
            if not findings:
                out.append(text)
                continue
            counts.update(f.entity_type for f in findings)
            results = [RecognizerResult(f.entity_type, f.start, f.end, f.score) for f in findings]
            with _quiet_anonymizer():  # its DEBUG records describe each entity operated on
                out.append(engine.anonymize(text=text, analyzer_results=results, operators=configs).text)
        if progress is not None:
            progress(len(batch))
    return out, counts


@contextlib.contextmanager
def _quiet_anonymizer() -> Iterator[None]:
    logger = logging.getLogger("presidio-anonymizer")
    quiet = _BelowWarning()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING


def check_paths(corpus: str | Path, out: str | Path, *, force: bool = False) -> tuple[Path, Path, Path]:
    """``(corpus, out, record path)``, or a :class:`DataError`: a missing corpus, an output equal to the corpus,
    an output or record that exists (without ``force``), an output folder that does not exist."""
    src, dest = Path(corpus), Path(out)
    if not src.is_file():
        raise DataError(f"corpus '{src}' not found")
    if dest.exists() and dest.resolve() == src.resolve():
        raise DataError(f"--out '{dest}' is the corpus itself (scrubbing writes a new file)")
    if dest.is_dir():
        raise DataError(f"--out '{dest}' is a directory (give a file name)")
    record = dest.parent / RECORD_FILE
    if record.resolve() == src.resolve():
        raise DataError(f"the record '{record}' would overwrite the corpus")
    if not dest.parent.is_dir():
        raise DataError(f"output folder '{dest.parent}' does not exist")
    if not force:
        for p in (dest, record):
            if p.exists():
                raise DataError(f"'{p}' exists (pass --force to overwrite it)")
    return src, dest, record


def scrub_corpus(
    corpus: str | Path,
    out: str | Path,
    *,
    operators: Mapping[str, str] | None = None,
    default_operator: str = DEFAULT_OPERATOR,
    entities: Sequence[str] | None = None,
    text_field: str = "text",
    hash_key: bytes | None = None,
    force: bool = False,
    scanner: Any = None,
    progress: Callable[[int], None] | None = None,
    start: Callable[[int], None] | None = None,
) -> ScrubResult:
    """Write ``out``, the corpus with its PII rewritten, and ``scrub_record.json`` beside it (both mode 0600).

    ``entities`` defaults to :data:`auditlm.privacy.pii.DEFAULT_ENTITIES`; ``operators`` maps entity types to one
    of :data:`OPERATORS` (the rest get ``default_operator``); ``hash_key`` keys the ``hash`` operator (random and
    unstored when ``None``). ``scanner`` replaces the default :class:`~auditlm.privacy.pii.PiiScanner` (its
    entities then win). ``start`` is called once with the number of documents, ``progress`` with the number done
    per batch. Raises :class:`~auditlm.errors.DataError` (never quoting corpus text) for bad input.
    """
    from auditlm import __version__
    from auditlm.privacy.detector_eval import detector_digest
    from auditlm.privacy.keys import fingerprint, write_private
    from auditlm.privacy.pii import DEFAULT_ENTITIES, PiiScanner

    t0 = time.monotonic()
    started = datetime.now(timezone.utc)
    src, dest, record_path = check_paths(corpus, out, force=force)
    if scanner is None:
        wanted = tuple(dict.fromkeys(e.strip().upper() for e in (entities or DEFAULT_ENTITIES)))
    else:
        wanted = tuple(scanner.entities)
    ops = resolve_operators(wanted, operators, default_operator)
    if scanner is None:
        scanner = PiiScanner(wanted)
        scanner._get_engine()  # unknown entity types fail here, with the valid ones listed
    if hash_key is not None and len(hash_key) < 16:
        raise DataError("a hash key needs at least 16 bytes")
    key = hash_key if hash_key is not None else secrets.token_bytes(32)
    key_fp = fingerprint(hash_key) if hash_key is not None else None

    input_digest = _sha256_file(src)
    doc = _Corpus(src, text_field)
    if start is not None:
        start(len(doc.texts))
    new_texts, counts = scrub_texts(doc.texts, scanner, ops, key, progress=progress)
    rendered = doc.render(new_texts)
    write_private(dest, rendered)
    config = scanner.config()
    record = {
        "schema": RECORD_SCHEMA,
        "auditlm_version": __version__,
        "presidio_anonymizer_version": _dist_version("presidio-anonymizer"),
        "input": {"path": str(src), "sha256": input_digest, "format": doc.fmt, "text_field": text_field},
        "output": {"path": str(dest), "sha256": hashlib.sha256(rendered.encode("utf-8")).hexdigest()},
        "detector": config,
        "detector_digest": detector_digest(config),
        "operators": {e: _describe_operator(op, key_fp) for e, op in ops.items()},
        "counts": {e: counts.get(e, 0) for e in scanner.entities},
        "findings": sum(counts.values()),
        "documents": len(doc.texts),
        "documents_changed": sum(a != b for a, b in zip(doc.texts, new_texts, strict=True)),
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(time.monotonic() - t0, 3),
    }
    write_private(record_path, json.dumps(record, indent=2, ensure_ascii=False) + "\n")
    return ScrubResult(dest, record_path, record)


def _dist_version(name: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None
