"""Reader for WinoBias (Zhao et al., NAACL 2018): the pro/anti type 1/2 files with the occupation lists, or the
Hub dataset."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from auditlm.suites.datasets import HubLoad, Item, register_reader
from auditlm.suites.provenance import FilesRead
from auditlm.suites.spec import DataSpec

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
def read_winobias(path: Path, data: DataSpec, *, files: FilesRead | None = None) -> list[Item]:
    """WinoBias (Zhao et al. 2018), the directory of ``{pro,anti}_stereotyped_type{1,2}.txt.{dev,test}`` with
    ``male_occupations.txt`` and ``female_occupations.txt``; ``data.split`` picks ``test`` (default) or ``dev``.
    One item per pro/anti sentence pair (:func:`winobias_items`)."""
    split = _winobias_split(data.split)
    if not path.is_dir():
        raise ValueError(f"{path} is not the WinoBias directory")
    files = files or FilesRead()
    occupations = []
    for name in ("male_occupations.txt", "female_occupations.txt"):
        occupations += [
            w.strip() for w in files.read_text(path / name).splitlines() if w.strip()
        ]
    lines = {}
    for t, s in WINOBIAS_SETS:
        f = path / f"{s}_stereotyped_{t}.txt.{split}"
        lines[(t, s)] = [ln for ln in files.read_text(f).splitlines() if ln.strip()]
    return winobias_items(lines, occupations, split)
