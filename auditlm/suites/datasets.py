"""Benchmark readers and item construction.

``load_items(spec, data_dir)`` turns a suite's ``data`` section into a list of items (plain dicts with a
stable string ``id``); :func:`read_suite_data` also returns what they were read from
(:mod:`auditlm.suites.provenance`). Readers take the original file format from a local path and, for users
with Hub access, a Hugging Face dataset id (``data.hub_id``, or a run input written ``hf:ORG/NAME``).

A reader is ``fn(path, *, files)`` (``fn(path, data_spec, *, files)`` with ``takes_spec``) and opens every
file through ``files`` (a :class:`~auditlm.suites.provenance.FilesRead`), so the run records each file's
sha256; ``files`` defaults to a throwaway recorder for direct calls.
"""

from __future__ import annotations

import csv
import itertools
import os
import string
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from auditlm.errors import DataError, choices
from auditlm.suites.provenance import DATA_SOURCE, DataRecord, FilesRead, json_record
from auditlm.suites.spec import DataSpec, SuiteSpec, TemplateData

Item = dict[str, Any]
#: ``fn(path, *, files)``; readers registered with ``takes_spec`` are ``fn(path, data_spec, *, files)``.
Reader = Callable[..., list[Item]]
#: A run input naming a Hugging Face dataset: ``--corpus hf:ORG/NAME``.
HUB_PREFIX = "hf:"
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
    "auditlm.suites.wikitext",
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


@dataclass
class SuiteData:
    """A suite's items and the records of what they were read from, in reading order."""

    items: list[Item]
    records: list[DataRecord] = field(default_factory=list)


def load_items(
    spec: SuiteSpec, data_dir: Path | None, *, inputs: dict[str, str] | None = None, seed: int = 0
) -> list[Item]:
    """Items of a suite, in a stable order, each with a unique string ``id`` (see :func:`read_suite_data`)."""
    return read_suite_data(spec, data_dir, inputs=inputs, seed=seed).items


def read_suite_data(
    spec: SuiteSpec, data_dir: Path | None, *, inputs: dict[str, str] | None = None, seed: int = 0
) -> SuiteData:
    """Items of a suite, in a stable order, each with a unique string ``id``, and what they were read from.

    ``inputs`` fill ``{name}`` placeholders in ``data.path`` (``--corpus`` …); ``seed`` seeds generators.
    With ``data.sources``, each source's ``fields`` are defaults: a row's own field (its ``member`` label)
    wins, and one text labelled differently by two sources is a :class:`DataError`.
    """
    d = spec.data
    records: list[DataRecord] = []
    if d.items is not None:
        items = [dict(it, id=str(it.get("id", i))) for i, it in enumerate(d.items)]
        records.append(json_record("inline", "data.items", items))
    elif d.templates is not None:
        items = _expand_templates(d.templates)
        records.append(json_record("inline", "data.templates", items))
    elif d.generator is not None:
        from auditlm.suites.generators import generate

        items = [dict(it, id=str(it.get("id", i))) for i, it in enumerate(generate(d.generator, d.size, seed))]
        records.append(json_record("generator", f"{d.generator}(size={d.size}, seed={seed})", items))
    elif d.sources:
        items = _read_sources(spec, inputs or {}, records)
    elif spec.run_inputs:
        items = _read_input(spec, d.path or "", inputs or {}, records)
    else:
        items = _read(spec, data_dir, records)
    ids = [it["id"] for it in items]
    if len(set(ids)) != len(ids):
        raise DataError(f"suite {spec.id}: item ids are not unique")
    for f in spec.group_fields:
        missing = [it["id"] for it in items if f not in it]
        if missing:
            raise DataError(f"suite {spec.id}: group field '{f}' missing from item {missing[0]}")
    unit = spec.metrics.resample_by
    if unit is not None:
        missing = [it["id"] for it in items if unit not in it]
        if missing:
            fields = choices(k for k in (items[0] if items else {}) if k != "id")
            raise DataError(f"suite {spec.id}: metrics.resample_by field '{unit}' missing from item {missing[0]} "
                            f"(item fields: {fields})")
    return SuiteData(items, records)


def _shape(text: str, n: int = 12) -> str:
    """A hint of how a text starts that reveals none of it: letters become x/X, digits 9."""
    out = "".join("X" if c.isupper() else "x" if c.isalpha() else "9" if c.isdigit() else c for c in text[:n])
    return out + ("…" if len(text) > n else "")


def _read_sources(spec: SuiteSpec, inputs: dict[str, str], records: list[DataRecord]) -> list[Item]:
    """Items of every ``data.sources`` entry; source ``fields`` fill in what a row does not say itself."""
    from auditlm.suites.corpus import doc_id

    d = spec.data
    assert d.sources is not None
    labels = sorted({k for src in d.sources for k in src.fields})
    seen: dict[str, tuple[str, Item]] = {}
    items: list[Item] = []
    for k, src in enumerate(d.sources):
        for it in _read_input(spec, src.path, inputs, records):
            item = {**src.fields, **it, "id": f"{k}:{it['id']}"}
            text = it.get("text")
            if labels and isinstance(text, str):
                key = doc_id(text)
                if key in seen:
                    where, other = seen[key]
                    diff = [f for f in labels if other.get(f) != item.get(f)]
                    if diff:
                        f = diff[0]
                        raise DataError(
                            f"suite {spec.id}: document {key} ({len(text)} chars, starts '{_shape(text)}') is "
                            f"{f}={other.get(f)} in {where} but {f}={item.get(f)} in {_input_name(src.path)}; "
                            "a text cannot be both, remove it from one of them"
                        )
                else:
                    seen[key] = (_input_name(src.path), item)
            items.append(item)
    return items


def _flags(template: str) -> str:
    """The flag(s) of the run inputs a data path is built from (``{corpus}`` → ``--corpus``), or ``""``."""
    names = [f for _, f, _, _ in string.Formatter().parse(template) if f]
    return "/".join("--" + n.replace("_", "-") for n in names)


def _input_name(template: str) -> str:
    """How an error names a data path: the flag of its run input (``--corpus``), else the path."""
    return _flags(template) or f"'{template}'"


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


def _read_file(spec: SuiteSpec, p: Path, files: FilesRead) -> list[Item]:
    d = spec.data
    assert d.reader is not None
    try:
        if d.reader in _SPEC_READERS:
            return _READERS[d.reader](p, d, files=files)
        return _READERS[d.reader](p, files=files)
    except UnicodeDecodeError as e:
        bad = e.object[e.start : e.start + 1].hex() if isinstance(e.object, bytes) else "?"
        raise DataError(f"suite {spec.id}: data file '{files.last or p}' is not UTF-8 text (byte 0x{bad}); "
                        "save it as UTF-8") from e
    except OSError as e:
        from auditlm.suites.loader import os_problem

        where = e.filename if e.filename is not None else (files.last or p)
        raise DataError(f"suite {spec.id}: cannot read '{where}' as {d.reader}: {os_problem(e)}") from e
    except RecursionError as e:
        raise DataError(f"suite {spec.id}: cannot read '{files.last or p}' as {d.reader}: its JSON is nested too "
                        "deeply") from e
    except (KeyError, ValueError, csv.Error) as e:
        where = files.last if files.last is not None and files.last != p else None
        inside = f" ({where.name})" if where is not None and where.name not in str(e) else ""
        raise DataError(f"suite {spec.id}: cannot read '{p}' as {d.reader}{inside}: {e}") from e


def _check_reader(spec: SuiteSpec) -> None:
    _load_reader_modules()
    if spec.data.reader not in _READERS:
        raise DataError(f"suite {spec.id}: unknown reader '{spec.data.reader}' (valid: {choices(_READERS)})")


def _read_input(spec: SuiteSpec, template: str, inputs: dict[str, str], records: list[DataRecord]) -> list[Item]:
    """Read a path built from run inputs (``{corpus}`` → ``--corpus``): a local file or directory, or a
    Hugging Face dataset when written ``hf:ORG/NAME``. A local path that does not exist is an error, never a
    Hub id (a typo must not audit some public dataset)."""
    missing = [k for k in spec.run_inputs if k not in inputs]
    if missing:
        flags = ", ".join("--" + k.replace("_", "-") for k in missing)
        raise DataError(f"suite {spec.id} needs {flags}")
    _check_reader(spec)
    raw = template.format(**inputs)
    source = _flags(template) or "input"
    if raw.startswith(HUB_PREFIX):
        hub_id = raw[len(HUB_PREFIX) :].strip()
        if not hub_id:
            raise DataError(f"suite {spec.id}: {_input_name(template)} '{raw}' names no dataset (write hf:ORG/NAME)")
        return _read_hub(spec, records, hub_id=hub_id)
    p = Path(raw).expanduser()
    if not p.exists():
        reader = spec.data.reader or ""
        hint = f" (for a Hugging Face dataset write {HUB_PREFIX}ORG/NAME)" if reader in _HUB_ROW_MAPPERS or (
            reader in _HUB_LOADERS) else ""
        raise DataError(f"suite {spec.id}: {_input_name(template)} '{raw}' not found{hint}")
    files = FilesRead(root=p, label=raw, source=source)
    items = _read_file(spec, p, files)
    records.extend(files.records)
    return items


def _read(spec: SuiteSpec, data_dir: Path | None, records: list[DataRecord]) -> list[Item]:
    d = spec.data
    assert d.reader is not None
    _check_reader(spec)
    if d.path is not None:
        p = Path(d.path)
        if not p.is_absolute():
            if data_dir is None:
                if d.hub_id is not None:
                    return _read_hub(spec, records)
                raise DataError(
                    f"suite {spec.id} needs benchmark data: pass --data-dir or set AUDITLM_DATA "
                    f"(expects {d.path} inside it)"
                )
            files = FilesRead(root=data_dir, source=DATA_SOURCE)
            p = data_dir / p
        else:
            files = FilesRead(root=p, label=d.path, source=DATA_SOURCE)
        if not p.exists():
            raise DataError(f"suite {spec.id}: data file '{p}' not found")
        items = _read_file(spec, p, files)
        records.extend(files.records)
        return items
    return _read_hub(spec, records)


def _read_hub(spec: SuiteSpec, records: list[DataRecord], hub_id: str | None = None) -> list[Item]:
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
        rows = [dict(row) for row in ds]
        where = f"{HUB_PREFIX}{hub_id}" + (f":{config}" if config else "") + f"/{split}"
        records.append(json_record("hub", where, rows))
        return rows

    try:
        if loader is not None:
            return loader(d, load)
        assert mapper is not None
        return [mapper(row, i) for i, row in enumerate(load(d.hub_config, d.split))]
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise DataError(
            f"suite {spec.id}: cannot read Hugging Face dataset '{hub_id}' as {d.reader}: {e}"
        ) from e
