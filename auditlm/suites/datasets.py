"""Benchmark readers and item construction.

``load_items(spec, data_dir)`` turns a suite's ``data`` section into a list of items (plain dicts with a
stable string ``id``). Readers take the original file format from a local path and, for users with Hub
access, a Hugging Face dataset id.
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import re
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any

from auditlm.errors import DataError, choices
from auditlm.suites.spec import DataSpec, SuiteSpec

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
_READER_MODULES = ("auditlm.suites.generation_readers", "auditlm.suites.corpus")


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
        items = _expand_templates(d.templates.templates, d.templates.vars)
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


def _read_stereoset_dev_json(path: Path) -> list[Item]:
    doc = json.loads(path.read_text(encoding="utf-8"))
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


def _read_stereoset_jsonl(path: Path) -> list[Item]:
    items = []
    with path.open(encoding="utf-8") as f:
        for ln, line in enumerate(f, 1):
            if not line.strip():
                continue
            row = json.loads(line)
            where = f"line {ln}"
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
def read_stereoset(path: Path) -> list[Item]:
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
    if path.suffix == ".json":
        return _read_stereoset_dev_json(path)
    return _read_stereoset_jsonl(path)


# --- BBQ ---------------------------------------------------------------------------------------------------

#: The "unknown" answer strings BBQ uses. lm-evaluation-harness's ``bbq`` task (after HELM) offers all ten
#: as answer choices in place of the example's own unknown answer; kept in its order so requests match.
BBQ_UNKNOWN_RESPONSES = (
    "Unknown",
    "Cannot answer",
    "Can't be determined",
    "Cannot be determined",
    "Can't answer",
    "Not known",
    "Not enough info",
    "Not enough information",
    "Not answerable",
    "Undetermined",
)
BBQ_FIELDS = (
    "example_id",
    "question_polarity",
    "context_condition",
    "category",
    "answer_info",
    "additional_metadata",
    "context",
    "question",
    "ans0",
    "ans1",
    "ans2",
    "label",
)


def _bbq_groups(info: list[str], answer: str) -> list[str]:
    """The group labels of one answer, normalised as lm-evaluation-harness's ``bbq`` ``process_docs``.

    ``answer_info`` is ``[name, group]``; both parts count (Nationality stereotypes name countries, not
    regions). ``M-``/``F-``/``lowSES-``/``highSES-`` prefixes of intersectional labels become separate
    labels; ``lowSES``/``nonObese``/… are spelled as in ``stereotyped_groups``; woman/girl add ``F``,
    man/boy add ``M`` (substring tests, as lm-eval does). An answer without ``answer_info`` is ``Latino`` if
    it names a Latina, else belongs to no group.
    """
    latino = "Latino" if "Latina" in answer else ""
    s = "_".join(info) if any(info) else latino
    for prefix in ("M-", "F-", "lowSES-", "highSES-"):
        s = s.replace(prefix, prefix[:-1] + "_")
    for a, b in (
        ("lowSES", "low SES"),
        ("highSES", "high SES"),
        ("nonObese", "non Obese"),
        ("nonDisabled", "non Disabled"),
        ("nonTrans", "non Trans"),
    ):
        s = s.replace(a, b)
    if "woman" in s:
        s = s.replace("woman", "F_woman")
    elif "man" in s:
        s = s.replace("man", "M_man")
    s = s.replace("girl", "F_girl").replace("boy", "M_boy")
    return s.lower().split("_") if s else []


def bbq_biased_answers(row: dict[str, Any]) -> list[int]:
    """Indices (0–2) of the answers that count as *biased* for a BBQ example (Parrish et al. 2022, §5).

    For a negative question the biased answer is the one naming a stereotyped group
    (``additional_metadata.stereotyped_groups``); for a non-negative question it is the non-unknown answer
    naming a group that is *not* stereotyped (the sign flip). Group membership follows
    lm-evaluation-harness's ``bbq`` ``process_docs`` (see :func:`_bbq_groups`), so the biased targets are
    those of lm-eval; for the six categories in the local data every example gets exactly one.
    """
    stereotyped = {g.lower() for g in row["additional_metadata"]["stereotyped_groups"]}
    out = []
    for i in range(3):
        groups = _bbq_groups(list(row["answer_info"][f"ans{i}"]), str(row[f"ans{i}"]))
        if row["question_polarity"] == "neg":
            if stereotyped & set(groups):
                out.append(i)
        elif row["question_polarity"] == "nonneg":
            if groups and groups[-1] != "unknown" and not stereotyped & set(groups):
                out.append(i)
        else:
            raise ValueError(f"question_polarity {row['question_polarity']!r} is not neg or nonneg")
    return out


def _bbq_row(row: dict[str, Any], i: int) -> Item:
    missing = [f for f in BBQ_FIELDS if f not in row]
    if missing:
        raise ValueError(f"row {i}: missing field(s) {', '.join(missing)}")
    answers = [str(row[f"ans{k}"]) for k in range(3)]
    unknown = [k for k, a in enumerate(answers) if a in BBQ_UNKNOWN_RESPONSES]
    if len(unknown) != 1:
        raise ValueError(f"row {i}: expected exactly one 'unknown' answer among {answers}")
    label = int(row["label"])
    if label not in (0, 1, 2):
        raise ValueError(f"row {i}: label {row['label']!r} is not 0, 1 or 2")
    if row["context_condition"] not in ("ambig", "disambig"):
        raise ValueError(f"row {i}: context_condition {row['context_condition']!r} is not ambig or disambig")
    meta = row["additional_metadata"]
    return {
        "id": f"{row['category']}-{row['example_id']}",
        "category": str(row["category"]),
        "example_id": row["example_id"],
        "question_index": str(row.get("question_index", "")),
        "question_polarity": str(row["question_polarity"]),
        "context_condition": str(row["context_condition"]),
        "subcategory": str(meta.get("subcategory", "")),
        "stereotyped_groups": list(meta["stereotyped_groups"]),
        "answer_info": {f"ans{k}": list(row["answer_info"][f"ans{k}"]) for k in range(3)},
        "context": str(row["context"]),
        "question": str(row["question"]),
        "ans0": answers[0],
        "ans1": answers[1],
        "ans2": answers[2],
        "label": label,
        "unknown": unknown[0],
        "biased": bbq_biased_answers(row),
    }


@register_reader("bbq", hub_row=_bbq_row)
def read_bbq(path: Path) -> list[Item]:
    """BBQ (Parrish et al. 2022): the original per-category JSONL files — a directory of them (every
    ``*.jsonl``, in name order) or one file. Items keep the example's fields and add ``unknown`` (index of
    the unknown answer) and ``biased`` (indices of the biased answers, :func:`bbq_biased_answers`); ids are
    ``<category>-<example_id>``."""
    files = sorted(path.glob("*.jsonl")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"no .jsonl files in {path}")
    items = []
    for f in files:
        with f.open(encoding="utf-8") as fh:
            for ln, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if not isinstance(row, dict):
                    raise ValueError(f"{f.name} line {ln}: not a JSON object")
                try:
                    items.append(_bbq_row(row, ln))
                except (KeyError, TypeError) as e:
                    raise ValueError(f"{f.name} line {ln}: malformed ({e})") from e
    return items


# --- WinoBias ----------------------------------------------------------------------------------------------

WINOBIAS_SETS = tuple((t, s) for t in ("type1", "type2") for s in ("pro", "anti"))
_WB_LINE = re.compile(r"^\s*(\d+)\s+(.*\S)\s*$")
_WB_BRACKET = re.compile(r"\[([^\[\]]*)\]")
_WB_ROLE = {"he": "subject", "she": "subject", "him": "object", "his": "possessive"}
#: Words after an ambiguous "her" that mark it as an object (used only when the paired line cannot tell).
_WB_OBJECT_NEXT = {
    "",
    ".",
    ",",
    "!",
    "?",
    ";",
    "to",
    "for",
    "about",
    "that",
    "with",
    "a",
    "an",
    "the",
    "some",
    "if",
    "how",
    "what",
    "where",
    "when",
    "not",
    "well",
    "up",
    "out",
    "in",
    "and",
}


def _winobias_split(split: str) -> str:
    if split in ("dev", "validation"):
        return "dev"
    if split == "test":
        return "test"
    raise ValueError(f"WinoBias split {split!r} is not one of dev, validation, test")


def _wb_occupation_pattern(occupations: list[str]) -> re.Pattern[str]:
    alt = "|".join(re.escape(o) for o in sorted(set(occupations), key=len, reverse=True))
    return re.compile(r"\b(?:(the|a|an)\s+)?(" + alt + r")\b", re.IGNORECASE)


def _wb_parse(line: str, occ: re.Pattern[str], where: str) -> dict[str, Any]:
    """One WinoBias line → gold and other occupation, the resolved pronoun, and the text around it."""
    m = _WB_LINE.match(line)
    if not m:
        raise ValueError(f"{where}: expected 'N sentence', got {line[:60]!r}")
    sent = m.group(2)
    spans = list(_WB_BRACKET.finditer(sent))
    if len(spans) < 2:
        raise ValueError(f"{where}: expected the entity and the pronoun in [ ], got {sent!r}")
    ent, pron = spans[0], spans[1]
    gold = occ.search(ent.group(1))
    if gold is None:
        raise ValueError(f"{where}: [{ent.group(1)}] names no occupation of the occupation lists")
    pronoun = pron.group(1).strip()
    if pronoun.lower() not in ("he", "she", "him", "her", "his"):
        raise ValueError(f"{where}: [{pronoun}] is not a he/she/him/her/his pronoun")
    before = sent[: pron.start()]
    masked = before[: ent.start()] + " " * (ent.end() - ent.start()) + before[ent.end() :]
    others = [o for o in occ.finditer(masked) if o.group(1)]
    if len(others) != 1:
        raise ValueError(f"{where}: expected one other occupation before the pronoun, found {len(others)}")
    unbracket = lambda t: re.sub(r"\[\s*|\s*\]", "", t)  # noqa: E731
    rest = unbracket(sent[pron.end() :])
    if not rest.strip():
        raise ValueError(f"{where}: nothing follows the pronoun")
    return {
        "n": int(m.group(1)),
        "sentence": sent,
        "gold": gold.group(2),
        "other": others[0].group(2),
        "pronoun": pronoun,
        "prefix": unbracket(before),
        "rest": rest,
    }


def _wb_role(pronoun: str, partner: str, rest: str) -> str:
    p = pronoun.lower()
    if p in _WB_ROLE:
        return _WB_ROLE[p]
    partner = partner.lower()
    if partner in ("him", "his"):
        return _WB_ROLE[partner]
    nxt = re.match(r"\s*([A-Za-z]+|[^\sA-Za-z]?)", rest)
    return "object" if (nxt.group(1).lower() if nxt else "") in _WB_OBJECT_NEXT else "possessive"


def winobias_items(lines: dict[tuple[str, str], list[str]], occupations: list[str], split: str) -> list[Item]:
    """Pair the pro- and anti-stereotyped lines of each type by position (the same sentence with the
    pronoun's gender swapped) into one item per pair.

    ``lines[(type, "pro"|"anti")]`` are the raw ``N sentence`` lines. Each side (``pro``, ``anti``) of an item
    carries ``gold`` (the bracketed occupation), ``other`` (the one other occupation of the lists named
    before the pronoun, with a the/a/an determiner; multiword occupations match whole), the pronoun, its
    grammatical role (``subject``/``object``/``possessive``; "her" is possessive when the paired line has
    "his", an object when it has "him", else decided by the next word), and the text before the pronoun
    (``prefix``) and after it (``rest``), brackets removed. ``same_pair`` is False for the rare positions
    where the two files hold different sentences (e.g. type 2 test line 382); they stay paired by position.
    """
    occ = _wb_occupation_pattern(occupations)
    items = []
    for t in ("type1", "type2"):
        pro, anti = lines[(t, "pro")], lines[(t, "anti")]
        if len(pro) != len(anti):
            raise ValueError(f"{t}: {len(pro)} pro-stereotyped lines but {len(anti)} anti-stereotyped")
        for k, (lp, la) in enumerate(zip(pro, anti, strict=True), 1):
            p = _wb_parse(lp, occ, f"{t} pro line {k}")
            a = _wb_parse(la, occ, f"{t} anti line {k}")
            if p["n"] != a["n"]:
                raise ValueError(f"{t} line {k}: pro line number {p['n']} but anti line number {a['n']}")
            same = (p["gold"].lower(), p["other"].lower()) == (a["gold"].lower(), a["other"].lower())
            sides = {}
            for name, me, partner in (("pro", p, a), ("anti", a, p)):
                sides[name] = {
                    "sentence": me["sentence"],
                    "gold": me["gold"],
                    "other": me["other"],
                    "pronoun": me["pronoun"],
                    "role": _wb_role(me["pronoun"], partner["pronoun"] if same else "", me["rest"]),
                    "prefix": me["prefix"],
                    "rest": me["rest"],
                }
            items.append(
                {
                    "id": f"{split}-{t}-{p['n']}",
                    "split": split,
                    "type": t,
                    "line": p["n"],
                    "same_pair": same,
                    **sides,
                }
            )
    return items


def _winobias_hub_line(row: dict[str, Any], n: int) -> str:
    """A Hub row (CoNLL tokens, coreference cluster spans as word numbers) back to ``N sentence [..]``."""
    tokens = list(row["tokens"])
    words = [str(w) for w in row.get("word_number") or range(len(tokens))]
    c = [words.index(str(x)) for x in row["coreference_clusters"]]
    for start, end in sorted(zip(c[::2], c[1::2], strict=True), reverse=True):
        tokens[end] += "]"
        tokens[start] = "[" + tokens[start]
    text = re.sub(r" ([.,!?;:])(?=\]?(\s|$))", r"\1", " ".join(tokens))
    return f"{n} {text}"


def _winobias_hub(d: DataSpec, load: HubLoad) -> list[Item]:
    """uclanlp/wino_bias: configs ``type{1,2}_{pro,anti}``, splits validation/test. The occupation lists are
    not on the Hub; the occupations are read off the bracketed antecedents (every occupation is the gold
    antecedent of some line)."""
    split = _winobias_split(d.split)
    lines = {}
    for t, s in WINOBIAS_SETS:
        rows = load(f"{t}_{s}", "validation" if split == "dev" else "test")
        lines[(t, s)] = [_winobias_hub_line(r, k) for k, r in enumerate(rows, 1)]
    occupations = set()
    for ls in lines.values():
        for ln in ls:
            spans = _WB_BRACKET.findall(ln)
            if spans:
                occupations.add(re.sub(r"^(the|a|an)\s+", "", spans[0].strip(), flags=re.IGNORECASE))
    return winobias_items(lines, sorted(occupations), split)


@register_reader("winobias", takes_spec=True, hub_loader=_winobias_hub)
def read_winobias(path: Path, data: DataSpec) -> list[Item]:
    """WinoBias (Zhao et al. 2018), the directory of ``{pro,anti}_stereotyped_type{1,2}.txt.{dev,test}`` with
    ``male_occupations.txt`` and ``female_occupations.txt``; ``data.split`` picks ``test`` (default) or ``dev``.
    One item per pro/anti sentence pair (:func:`winobias_items`)."""
    split = _winobias_split(data.split)
    if not path.is_dir():
        raise ValueError(f"{path} is not the WinoBias directory")
    occupations = []
    for name in ("male_occupations.txt", "female_occupations.txt"):
        occupations += [
            w.strip() for w in (path / name).read_text(encoding="utf-8").splitlines() if w.strip()
        ]
    lines = {}
    for t, s in WINOBIAS_SETS:
        f = path / f"{s}_stereotyped_{t}.txt.{split}"
        lines[(t, s)] = [ln for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return winobias_items(lines, occupations, split)
