"""Benchmark readers and item construction.

``load_items(spec, data_dir)`` turns a suite's ``data`` section into a list of items (plain dicts with a
stable string ``id``). Readers take the original file format from a local path and, for users with Hub
access, a Hugging Face dataset id.
"""

from __future__ import annotations

import csv
import itertools
import os
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

from auditlm.errors import DataError, choices
from auditlm.suites.spec import DataSpec, SuiteSpec

Item = dict[str, Any]
Reader = Callable[[Path], list[Item]]
HubReader = Callable[[DataSpec], list[Item]]

_READERS: dict[str, Reader] = {}
_HUB_ROW_MAPPERS: dict[str, Callable[[dict[str, Any], int], Item]] = {}
#: Modules whose import registers more readers (kept out of this file so each family owns its readers).
_READER_MODULES = ("auditlm.suites.generation_readers",)


def _load_reader_modules() -> None:
    import importlib

    for m in _READER_MODULES:
        try:
            importlib.import_module(m)
        except ModuleNotFoundError as e:
            if e.name != m:
                raise


def register_reader(name: str, hub_row: Callable[[dict[str, Any], int], Item] | None = None):
    """Register a local-file reader (and optionally how to map one Hub dataset row to an item)."""

    def deco(fn: Reader) -> Reader:
        _READERS[name] = fn
        if hub_row is not None:
            _HUB_ROW_MAPPERS[name] = hub_row
        return fn

    return deco


def reader_names() -> list[str]:
    """Every registered reader."""
    _load_reader_modules()
    return sorted(_READERS)


def resolve_data_dir(data_dir: str | Path | None) -> Path | None:
    """``--data-dir`` if given, else ``AUDITLM_DATA``; a directory that does not exist is an error."""
    raw = data_dir if data_dir not in (None, "") else os.environ.get("AUDITLM_DATA") or None
    if raw is None:
        return None
    p = Path(raw).expanduser()
    if not p.is_dir():
        raise DataError(
            f"data dir '{raw}' does not exist (set --data-dir or AUDITLM_DATA to a benchmark data folder)"
        )
    return p


def has_local_data(spec: SuiteSpec, data_dir: Path | None) -> bool:
    """Whether a data-backed suite can run without the Hub."""
    d = spec.data
    if d.reader is None:
        return True
    if d.path is None:
        return False
    p = Path(d.path)
    return p.is_absolute() or data_dir is not None


def load_items(spec: SuiteSpec, data_dir: Path | None) -> list[Item]:
    """Items of a suite, in a stable order, each with a unique string ``id``."""
    d = spec.data
    if d.items is not None:
        items = [dict(it, id=str(it.get("id", i))) for i, it in enumerate(d.items)]
    elif d.templates is not None:
        items = _expand_templates(d.templates.templates, d.templates.vars)
    else:
        items = _read(spec, data_dir)
    ids = [it["id"] for it in items]
    if len(set(ids)) != len(ids):
        raise DataError(f"suite {spec.id}: item ids are not unique")
    for f in spec.group_fields:
        missing = [it["id"] for it in items if f not in it]
        if missing:
            raise DataError(f"suite {spec.id}: group field '{f}' missing from item {missing[0]}")
    return items


def _expand_templates(templates: list[str], vars: dict[str, list[str]]) -> list[Item]:
    names = sorted(vars)
    items: list[Item] = []
    for t_id, template in enumerate(templates):
        fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
        for combo in itertools.product(*(vars[n] for n in names)):
            values = dict(zip(names, combo, strict=True))
            text = template
            for k in fields & set(values):
                text = text.replace("{" + k + "}", values[k])
            key = "|".join([f"t{t_id}", *combo])
            items.append({"id": key, "template_id": t_id, "template": text, **values})
    return items


def _read(spec: SuiteSpec, data_dir: Path | None) -> list[Item]:
    d = spec.data
    assert d.reader is not None
    _load_reader_modules()
    if d.reader not in _READERS:
        raise DataError(f"suite {spec.id}: unknown reader '{d.reader}' (valid: {choices(_READERS)})")
    if d.path is not None:
        p = Path(d.path)
        if not p.is_absolute():
            if data_dir is None:
                if d.hub_id is not None:
                    return _read_hub(spec)
                raise DataError(
                    f"suite {spec.id} needs benchmark data: pass --data-dir or set AUDITLM_DATA "
                    f"(expects {d.path} inside it)"
                )
            p = data_dir / p
        if not p.exists():
            raise DataError(f"suite {spec.id}: data file '{p}' not found")
        try:
            return _READERS[d.reader](p)
        except (KeyError, ValueError, csv.Error, UnicodeDecodeError) as e:
            raise DataError(f"suite {spec.id}: cannot read '{p}' as {d.reader}: {e}") from e
    return _read_hub(spec)


def _read_hub(spec: SuiteSpec) -> list[Item]:
    d = spec.data
    mapper = _HUB_ROW_MAPPERS.get(d.reader or "")
    if mapper is None or d.hub_id is None:
        raise DataError(f"suite {spec.id}: reader '{d.reader}' has no Hugging Face dataset mapping")
    try:
        import datasets

        ds = datasets.load_dataset(d.hub_id, d.hub_config, split=d.split)
    except Exception as e:  # datasets raises many unrelated types for "not reachable" / "not found"
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(
            f"suite {spec.id}: cannot load Hugging Face dataset '{d.hub_id}' ({first}); "
            "pass --data-dir with a local copy instead"
        ) from e
    return [mapper(dict(row), i) for i, row in enumerate(ds)]


# --- CrowS-Pairs -----------------------------------------------------------------------------------------

CROWS_FIELDS = ("sent_more", "sent_less", "stereo_antistereo", "bias_type")


def _crows_row(row: dict[str, Any], i: int) -> Item:
    missing = [f for f in CROWS_FIELDS if f not in row]
    if missing:
        raise ValueError(f"missing column(s) {', '.join(missing)}")
    rid = row.get("") or row.get("Unnamed: 0") or row.get("id") or i
    return {"id": str(rid), **{f: str(row[f]) for f in CROWS_FIELDS}}


@register_reader("crows_pairs", hub_row=_crows_row)
def read_crows_pairs(path: Path) -> list[Item]:
    """``crows_pairs_anonymized.csv`` (Nangia et al. 2020): one row per sentence pair."""
    with path.open(newline="", encoding="utf-8") as f:
        return [_crows_row(row, i) for i, row in enumerate(csv.DictReader(f))]
