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
from auditlm.suites.spec import DataSpec, SuiteSpec, TemplateData

Item = dict[str, Any]
Reader = Callable[[Path], list[Item]]
HubReader = Callable[[DataSpec], list[Item]]
#: ``load(config, split)``: the rows of one Hugging Face dataset config and split.
HubLoad = Callable[[str | None, str], list[dict[str, Any]]]
#: Builds a suite's items from one or more Hub configs/splits (for benchmarks split across configs).
HubLoader = Callable[[DataSpec, HubLoad], list[Item]]

_READERS: dict[str, Reader] = {}
_HUB_ROW_MAPPERS: dict[str, Callable[[dict[str, Any], int], Item]] = {}
_HUB_LOADERS: dict[str, HubLoader] = {}
#: Readers that also take the suite's :class:`DataSpec` (e.g. to honour ``data.split`` locally).
_SPEC_READERS: set[str] = set()
#: Modules whose import registers more readers (kept out of this file so each family owns its readers).
_READER_MODULES = (
    "auditlm.suites.crows_pairs",
    "auditlm.suites.stereoset",
    "auditlm.suites.bbq",
    "auditlm.suites.winobias",
    "auditlm.suites.bold",
    "auditlm.suites.honest",
    "auditlm.suites.corpus",
)


def _load_reader_modules() -> None:
    import importlib

    for m in _READER_MODULES:
        importlib.import_module(m)


def register_reader(
    name: str,
    hub_row: Callable[[dict[str, Any], int], Item] | None = None,
    *,
    hub_loader: HubLoader | None = None,
    takes_spec: bool = False,
):
    """Register a local-file reader (and optionally how to map one Hub dataset row to an item).

    ``hub_loader`` replaces the row mapper for benchmarks spread over several Hub configs; it receives the
    suite's data section and ``load(config, split)``. With ``takes_spec`` the reader is called as
    ``fn(path, data_spec)`` (so a local reader can honour ``data.split``).
    """

    def deco(fn: Reader) -> Reader:
        _READERS[name] = fn
        if hub_row is not None:
            _HUB_ROW_MAPPERS[name] = hub_row
        if hub_loader is not None:
            _HUB_LOADERS[name] = hub_loader
        if takes_spec:
            _SPEC_READERS.add(name)
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
    if d.reader is None or spec.run_inputs:
        return True
    if d.path is None:
        return False
    p = Path(d.path)
    return p.is_absolute() or data_dir is not None


def load_items(
    spec: SuiteSpec, data_dir: Path | None, *, inputs: dict[str, str] | None = None, seed: int = 0
) -> list[Item]:
    """Items of a suite, in a stable order, each with a unique string ``id``.

    ``inputs`` fill ``{name}`` placeholders in ``data.path`` (``--corpus`` …); ``seed`` seeds generators.
    """
    d = spec.data
    if d.items is not None:
        items = [dict(it, id=str(it.get("id", i))) for i, it in enumerate(d.items)]
    elif d.templates is not None:
        items = _expand_templates(d.templates)
    elif d.generator is not None:
        from auditlm.suites.generators import generate

        items = [dict(it, id=str(it.get("id", i))) for i, it in enumerate(generate(d.generator, d.size, seed))]
    elif d.sources:
        items = []
        for k, src in enumerate(d.sources):
            for it in _read_input(spec, src.path, inputs or {}):
                items.append({**it, **src.fields, "id": f"{k}:{it['id']}"})
    elif spec.run_inputs:
        items = _read_input(spec, d.path or "", inputs or {})
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


def _fill(text: str, values: dict[str, str | dict[str, str]]) -> str:
    """``text`` with ``{var}`` / ``{var.key}`` placeholders of known vars filled (others left for the scorer)."""
    for f in {f for _, f, _, _ in string.Formatter().parse(text) if f}:
        var, _, key = f.partition(".")
        if var not in values:
            continue
        value = values[var]
        text = text.replace("{" + f + "}", value[key] if isinstance(value, dict) else value)
    return text


def _expand_templates(data: TemplateData) -> list[Item]:
    names = sorted(data.vars)
    items: list[Item] = []
    for t_id, template in enumerate(data.templates):
        for combo in itertools.product(*(data.values_for(template, n) for n in names)):
            values = dict(zip(names, combo, strict=True))
            fields = {n: v["id"] if isinstance(v, dict) else v for n, v in values.items()}
            if isinstance(template, dict):
                filled = {k: _fill(v, values) for k, v in template.items() if isinstance(v, str)}
                key = "|".join([template["template"], *fields.values()])
                items.append({"id": key, "template_id": t_id, **filled, "template": template["template"], **fields})
            else:
                key = "|".join([f"t{t_id}", *fields.values()])
                items.append({"id": key, "template_id": t_id, "template": _fill(template, values), **fields})
    return items


def _read_file(spec: SuiteSpec, p: Path) -> list[Item]:
    d = spec.data
    assert d.reader is not None
    try:
        if d.reader in _SPEC_READERS:
            return _READERS[d.reader](p, d)  # type: ignore[call-arg]
        return _READERS[d.reader](p)
    except (KeyError, ValueError, csv.Error, UnicodeDecodeError) as e:
        raise DataError(f"suite {spec.id}: cannot read '{p}' as {d.reader}: {e}") from e


def _check_reader(spec: SuiteSpec) -> None:
    _load_reader_modules()
    if spec.data.reader not in _READERS:
        raise DataError(f"suite {spec.id}: unknown reader '{spec.data.reader}' (valid: {choices(_READERS)})")


def _read_input(spec: SuiteSpec, template: str, inputs: dict[str, str]) -> list[Item]:
    """Read a path built from run inputs (``{corpus}`` → ``--corpus``): a local file, else a Hub dataset id."""
    missing = [k for k in spec.run_inputs if k not in inputs]
    if missing:
        flags = ", ".join("--" + k.replace("_", "-") for k in missing)
        raise DataError(f"suite {spec.id} needs {flags}")
    _check_reader(spec)
    raw = template.format(**inputs)
    p = Path(raw).expanduser()
    if p.exists():
        return _read_file(spec, p)
    reader = spec.data.reader or ""
    if raw.startswith((".", "/", "~")) or (reader not in _HUB_ROW_MAPPERS and reader not in _HUB_LOADERS):
        raise DataError(f"suite {spec.id}: '{raw}' not found")
    return _read_hub(spec, hub_id=raw)


def _read(spec: SuiteSpec, data_dir: Path | None) -> list[Item]:
    d = spec.data
    assert d.reader is not None
    _check_reader(spec)
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
        return _read_file(spec, p)
    return _read_hub(spec)


def _read_hub(spec: SuiteSpec, hub_id: str | None = None) -> list[Item]:
    d = spec.data
    mapper = _HUB_ROW_MAPPERS.get(d.reader or "")
    loader = _HUB_LOADERS.get(d.reader or "")
    hub_id = hub_id or d.hub_id
    if (mapper is None and loader is None) or hub_id is None:
        raise DataError(f"suite {spec.id}: reader '{d.reader}' has no Hugging Face dataset mapping")

    def load(config: str | None, split: str) -> list[dict[str, Any]]:
        try:
            import datasets

            ds = datasets.load_dataset(hub_id, config, split=split)
        except Exception as e:  # datasets raises many unrelated types for "not reachable" / "not found"
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise DataError(
                f"suite {spec.id}: cannot load Hugging Face dataset '{hub_id}' ({first}); "
                "pass --data-dir with a local copy instead"
            ) from e
        return [dict(row) for row in ds]

    try:
        if loader is not None:
            return loader(d, load)
        assert mapper is not None
        return [mapper(row, i) for i, row in enumerate(load(d.hub_config, d.split))]
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise DataError(
            f"suite {spec.id}: cannot read Hugging Face dataset '{hub_id}' as {d.reader}: {e}"
        ) from e
