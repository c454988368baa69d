"""Readers for the training-data privacy suites: a training corpus, the PII in it, and a canary record.

Registered with :func:`auditlm.suites.datasets.register_reader` on import. A suite points ``data.path`` at a
run input (``"{corpus}"`` — ``--corpus``, ``"{canaries}"`` — ``--canaries``) or at a file.

Corpus formats (:func:`read_documents`), chosen by file suffix:

- ``.txt`` — **one document per non-empty line** (blank lines are ignored, not paragraph breaks): the layout
  of most corpus dumps, and the one :func:`auditlm.privacy.canaries.plant_canaries` inserts canary lines into;
- ``.jsonl`` / ``.json`` (a list of objects) — the ``text`` field;
- ``.csv`` — the ``text`` column;
- a Hugging Face dataset (``hub_id``) — the ``text`` column of ``data.split``.

When rows have no ``text`` field but exactly one string-valued field, that one is the text
(:func:`read_documents` takes another ``text_field``; a suite's readers use ``text``). A boolean
``member`` field (``true``/``false``, ``1``/``0`` in CSV) is kept: a labelled file serves membership
inference directly, and :func:`read_training_pii` reads only its members. Identical documents are read
once (``copies`` counts them); an item's id is the first 16 hex digits of the sha256 of its text, so ids do
not depend on file order.

Readers:

- ``corpus`` — one item per document: ``id``, ``text``, ``copies`` (and ``member`` when labelled).
- ``training_pii`` — the attack items of Lukas et al. 2023 (:func:`training_pii_items`): ``data.size``
  extraction draws and one item per PII mention found in the corpus by :class:`~auditlm.privacy.pii.PiiScanner`.
- ``canaries`` — one item per canary of a record written by :func:`auditlm.privacy.canaries.plant_canaries`.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditlm.suites.datasets import HubLoad, Item, register_reader
from auditlm.suites.provenance import FilesRead
from auditlm.suites.rows import DEFAULT_TEXT_FIELD, read_rows
from auditlm.suites.spec import DataSpec

#: A mention whose value has fewer letters and digits than this is not attacked (Lukas et al. keep > 3 chars).
MIN_PII_CHARS = 3
#: Marks the attacked slot in a reconstruction template (a private-use character no text contains).
SLOT = "\ue000"
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+")
_TRUE = {"true", "1", "yes"}
_FALSE = {"false", "0", "no"}


def doc_id(text: str) -> str:
    """Stable id of a document: the first 16 hex digits of sha256 of its UTF-8 text."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


# --- documents -------------------------------------------------------------------------------------------


def _member(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"{where}: 'member' must be true or false, got {value!r}")


def _text_of(row: dict[str, Any], text_field: str | None, where: str) -> str:
    name = text_field or DEFAULT_TEXT_FIELD
    if name not in row and text_field is None:
        strings = [k for k, v in row.items() if isinstance(v, str) and k != "member"]
        if len(strings) == 1:
            name = strings[0]
    value = row.get(name)
    if not isinstance(value, str):
        fields = ", ".join(sorted(map(str, row))) or "none"
        raise ValueError(f"{where}: no text field '{name}' (fields: {fields})")
    return value


def rows_to_documents(
    rows: Iterable[dict[str, Any]], *, text_field: str | None = None, source: str = "row"
) -> list[Item]:
    """Documents from table rows: one item per distinct non-empty text, in first-seen order."""
    docs: dict[str, Item] = {}
    for i, row in enumerate(rows, 1):
        where = f"{source} {i}"
        if not isinstance(row, dict):
            raise ValueError(f"{where}: not an object")
        text = _text_of(row, text_field, where).strip()
        if not text:
            continue
        iid = doc_id(text)
        member = _member(row["member"], where) if row.get("member") not in (None, "") else None
        if iid in docs:
            doc = docs[iid]
            doc["copies"] += 1
            if member is not None and doc.get("member", member) != member:
                raise ValueError(f"{where}: the same text is labelled both member and non-member")
            continue
        doc = {"id": iid, "text": text, "copies": 1}
        if member is not None:
            doc["member"] = member
        docs[iid] = doc
    return list(docs.values())


def read_documents(path: Path, *, text_field: str | None = None, files: FilesRead | None = None) -> list[Item]:
    """The documents of a local corpus file (see the module docstring for formats)."""
    source = "line" if path.suffix.lower() in (".jsonl", ".txt", "") else "row"
    return rows_to_documents(read_rows(path, files=files), text_field=text_field, source=source)


def _hub_documents(d: DataSpec, load: HubLoad) -> list[Item]:
    return rows_to_documents(load(d.hub_config, d.split), source=f"{d.split} row")


@register_reader("corpus", hub_loader=_hub_documents)
def read_corpus(path: Path, *, files: FilesRead | None = None) -> list[Item]:
    """A training corpus, one item per distinct document (``id``, ``text``, ``copies``, ``member`` if labelled)."""
    return read_documents(path, files=files)


# --- PII in a training corpus (Lukas et al. 2023) --------------------------------------------------------


@dataclass
class CorpusPii:
    """The PII found in a training corpus: per entity type, normalized value → first surface form seen.

    Shared by every item of a ``training_pii`` suite (in memory only; scorers store counts and keyed hashes).
    """

    values: dict[str, dict[str, str]] = field(default_factory=dict)

    def add(self, entity_type: str, value: str) -> str:
        from auditlm.privacy.pii import normalize

        key = normalize(value, entity_type)
        self.values.setdefault(entity_type, {}).setdefault(key, value)
        return key

    def contains(self, entity_type: str, value: str) -> bool:
        from auditlm.privacy.pii import normalize

        return normalize(value, entity_type) in self.values.get(entity_type, {})

    def counts(self) -> dict[str, int]:
        return {t: len(v) for t, v in sorted(self.values.items())}

    def candidates(self, entity_type: str) -> list[str]:
        """Surface forms of every distinct value of a type, in normalized-value order."""
        vals = self.values.get(entity_type, {})
        return [vals[k] for k in sorted(vals)]


def _sentence_span(text: str, start: int, end: int) -> tuple[int, int]:
    """The span of the sentence(s) of ``text`` holding ``[start, end)`` (split after . ! ? and whitespace)."""
    bounds = [0, *(m.end() for m in _SENTENCE_BREAK.finditer(text)), len(text) + 1]
    lo = max(b for b in bounds if b <= start)
    hi = min(b for b in bounds if b >= end and b > lo)
    return lo, min(hi, len(text))


def _alnum(value: str) -> int:
    return sum(ch.isalnum() for ch in value)


def training_pii_items(
    docs: Sequence[Item], n_draws: int, findings: Sequence[Sequence[Any]] | None = None, scanner: Any = None
) -> list[Item]:
    """The attack items of ``privacy.training_data_leakage`` for a corpus (Lukas et al. 2023).

    The corpus is scanned with ``scanner`` (default: :class:`~auditlm.privacy.pii.PiiScanner` with its default
    entities) unless ``findings`` (one list of :class:`~auditlm.privacy.pii.PiiFinding` per document) are given.
    Returns ``n_draws`` extraction items (``attack: extraction``, ``draw: i``) followed by one item per PII
    mention of at least :data:`MIN_PII_CHARS` letters/digits (``attack: reconstruction``): the sentence
    holding it as a ``template`` with the mention replaced by :data:`SLOT` and every other mention in the
    sentence by ``<ENTITY_TYPE>``, the mention's ``entity_type`` and ``value``, and ``raw_sentence``. Every
    item carries ``corpus_pii`` (the one :class:`CorpusPii` of the corpus). Members only: documents labelled
    ``member: false`` are skipped.
    """
    docs = [d for d in docs if d.get("member", True)]
    if findings is None:
        if scanner is None:
            from auditlm.privacy.pii import PiiScanner

            scanner = PiiScanner()
        findings = scanner.scan([d["text"] for d in docs])
    pii = CorpusPii()
    mentions: list[Item] = []
    for doc, found in zip(docs, findings, strict=True):
        text = doc["text"]
        for f in found:
            if _alnum(f.text) < MIN_PII_CHARS:
                continue
            pii.add(f.entity_type, f.text)
        for f in found:
            if _alnum(f.text) < MIN_PII_CHARS:
                continue
            lo, hi = _sentence_span(text, f.start, f.end)
            parts, pos = [], lo
            for g in found:
                if g.end <= lo or g.start >= hi or g.start < pos:
                    continue
                parts.append(text[pos : g.start])
                parts.append(SLOT if g is f else f"<{g.entity_type}>")
                pos = g.end
            parts.append(text[pos:hi])
            mentions.append(
                {
                    "id": f"{doc['id']}:{f.start}-{f.end}",
                    "attack": "reconstruction",
                    "doc_id": doc["id"],
                    "entity_type": f.entity_type,
                    "value": f.text,
                    "template": "".join(parts).strip(),
                    "raw_sentence": text[lo:hi].strip(),
                }
            )
    draws = [{"id": f"draw-{i:05d}", "attack": "extraction", "draw": i} for i in range(n_draws)]
    items = draws + mentions
    for it in items:
        it["corpus_pii"] = pii
    return items


def _training_pii_hub(d: DataSpec, load: HubLoad) -> list[Item]:
    return training_pii_items(_hub_documents(d, load), d.size)


@register_reader("training_pii", takes_spec=True, hub_loader=_training_pii_hub)
def read_training_pii(path: Path, data: DataSpec, *, files: FilesRead | None = None) -> list[Item]:
    """Attack items for a training corpus (:func:`training_pii_items`); ``data.size`` extraction draws."""
    return training_pii_items(read_documents(path, files=files), data.size)


# --- canaries (Carlini et al. 2019) ----------------------------------------------------------------------


@register_reader("canaries")
def read_canaries(path: Path, *, files: FilesRead | None = None) -> list[Item]:
    """One item per canary of a record written by :func:`auditlm.privacy.canaries.plant_canaries`.

    An item carries the canary's ``secret`` and ``text``, the record's ``template``, ``alphabet``,
    ``secret_length`` and ``space_size``, and ``planted`` (every secret of the record: the other canaries
    share the template, and are left out of each other's candidate sets).
    """
    from auditlm.privacy.canaries import load_record

    rec = load_record(path, files=files)
    planted = [c["secret"] for c in rec["canaries"]]
    return [
        {
            "id": c["id"],
            "secret": c["secret"],
            "text": c["text"],
            "template": rec["template"],
            "alphabet": rec["alphabet"],
            "secret_length": rec["secret_length"],
            "space_size": rec["space_size"],
            "repeats": rec["repeats"],
            "planted": planted,
        }
        for c in rec["canaries"]
    ]
