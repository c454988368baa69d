"""Reader for StereoSet (Nadeem et al., ACL-IJCNLP 2021): the original ``dev.json``, the flat JSONL copy, or the Hub
dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from auditlm.suites.datasets import HubLoad, Item, register_reader
from auditlm.suites.provenance import FilesRead
from auditlm.suites.rows import json_line
from auditlm.suites.spec import DataSpec


def _text(row: dict[str, Any], field: str, where: str) -> str:
    v = row.get(field)
    if not isinstance(v, str) or not v.strip():
        raise ValueError(f"{where}: field '{field}' is missing or empty")
    return v


# --- StereoSet -------------------------------------------------------------------------------------------

STEREOSET_TYPES = ("intrasentence", "intersentence")
STEREOSET_LABELS = ("stereotype", "anti-stereotype", "unrelated")
#: The Hub dataset's ``gold_label`` class names, in class-index order.
_STEREOSET_HUB_LABELS = ("anti-stereotype", "stereotype", "unrelated")


def _stereoset_item(
    iid: str, kind: str, target: str, bias_type: str, context: str, sents: dict[str, str], where: str
) -> Item:
    if kind not in STEREOSET_TYPES:
        raise ValueError(f"{where}: type {kind!r} is not one of {', '.join(STEREOSET_TYPES)}")
    for label in STEREOSET_LABELS:
        if not isinstance(sents.get(label), str) or not sents[label].strip():
            raise ValueError(f"{where}: no '{label}' sentence")
    if not target.strip() or not bias_type.strip():
        raise ValueError(f"{where}: empty target or bias_type")
    return {
        "id": iid,
        "type": kind,
        "target": target,
        "bias_type": bias_type,
        "context": context,
        "stereotype": sents["stereotype"],
        "anti_stereotype": sents["anti-stereotype"],
        "unrelated": sents["unrelated"],
    }


def _stereoset_example(ex: dict[str, Any], kind: str, where: str) -> Item:
    """One example of the original ``dev.json`` (or a Hub row): sentences carry a ``gold_label``."""
    s = ex.get("sentences")
    if isinstance(s, dict):  # Hub layout: columns of parallel lists
        pairs = list(zip(s.get("sentence", []), s.get("gold_label", []), strict=False))
    elif isinstance(s, list):
        pairs = [(x.get("sentence"), x.get("gold_label")) for x in s if isinstance(x, dict)]
    else:
        raise ValueError(f"{where}: no sentences")
    sents: dict[str, str] = {}
    for text, label in pairs:
        if isinstance(label, int) and not isinstance(label, bool) and 0 <= label < len(_STEREOSET_HUB_LABELS):
            label = _STEREOSET_HUB_LABELS[label]
        if label in sents:
            raise ValueError(f"{where}: two '{label}' sentences")
        sents[str(label)] = text
    return _stereoset_item(
        str(ex.get("id") or where),
        kind,
        _text(ex, "target", where),
        _text(ex, "bias_type", where),
        _text(ex, "context", where),
        sents,
        where,
    )


def _read_stereoset_dev_json(path: Path, files: FilesRead) -> list[Item]:
    doc = json.loads(files.read_text(path))
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, dict) or not any(k in data for k in STEREOSET_TYPES):
        raise ValueError(
            "expected the StereoSet dev.json layout {data: {intrasentence: [...], intersentence: [...]}}"
        )
    items = []
    for kind in STEREOSET_TYPES:
        for i, ex in enumerate(data.get(kind, [])):
            if not isinstance(ex, dict):
                raise ValueError(f"{kind} example {i} is not an object")
            items.append(_stereoset_example(ex, kind, f"{kind} example {i}"))
    return items


def _read_stereoset_jsonl(path: Path, files: FilesRead) -> list[Item]:
    items = []
    with files.open_text(path) as f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"line {ln}"
            row = json_line(line, where)
            if not isinstance(row, dict):
                raise ValueError(f"{where}: not a JSON object")
            kind = _text(row, "type", where)
            sents = {label: row.get(label) for label in STEREOSET_LABELS}
            items.append(
                _stereoset_item(
                    f"{kind[:5]}-{ln:04d}",
                    kind,
                    _text(row, "target", where),
                    _text(row, "bias_type", where),
                    _text(row, "context", where),
                    sents,
                    where,  # type: ignore[arg-type]
                )
            )
    return items


def _stereoset_hub(d: DataSpec, load: HubLoad) -> list[Item]:
    kinds = [d.hub_config] if d.hub_config else list(STEREOSET_TYPES)
    items = []
    for kind in kinds:
        for i, row in enumerate(load(kind, d.split)):
            items.append(_stereoset_example(row, str(kind), f"{kind} row {i}"))
    return items


@register_reader("stereoset", hub_loader=_stereoset_hub)
def read_stereoset(path: Path, *, files: FilesRead | None = None) -> list[Item]:
    """StereoSet (Nadeem et al. 2021): one item per example (a context and its stereotype, anti-stereotype
    and unrelated sentence), intrasentence and intersentence.

    Reads the original ``dev.json`` (``{"data": {"intrasentence": [...], "intersentence": [...]}}`` with
    ``gold_label`` per sentence; a directory holding it works too) or the flat JSONL copy with fields
    ``type, target, bias_type, context, stereotype, anti-stereotype, unrelated``. Items carry ``type``,
    ``target``, ``bias_type``, ``context``, ``stereotype``, ``anti_stereotype`` and ``unrelated``.
    """
    if path.is_dir():
        found = sorted(path.glob("dev.json")) or sorted(path.glob("*.jsonl"))
        if len(found) != 1:
            raise ValueError(f"expected dev.json or exactly one .jsonl file in {path}")
        path = found[0]
    files = files or FilesRead()
    if path.suffix == ".json":
        return _read_stereoset_dev_json(path, files)
    return _read_stereoset_jsonl(path, files)
