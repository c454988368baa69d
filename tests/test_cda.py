"""Counterfactual data augmentation: word lists, swaps (case, plurals, possessives, her/his), corpora."""

from __future__ import annotations

import difflib
import importlib.util
import os
import re
from pathlib import Path

import pytest

from auditlm.errors import AuditError, DataError
from auditlm.mitigate import cda
from auditlm.mitigate.cda import (
    AXES,
    WORDLIST_VERSION,
    CounterfactualSwapper,
    augment,
    load_wordlist,
    match_case,
    split_sentences,
    wikitext_detokenize,
    wikitext_documents,
    wikitext_sentences,
)

DATA = Path(os.environ.get("AUDITLM_DATA", "/work/shared/data"))
WIKITEXT = DATA / "wikitext2" / "valid.txt"
WINOBIAS_SWAPS = DATA / "winobias" / "generalized_swaps.txt"


@pytest.fixture(scope="module")
def gender() -> CounterfactualSwapper:
    return CounterfactualSwapper("gender")


# ------------------------------------------------------------------------------------------- word lists


@pytest.mark.parametrize("axis", AXES)
def test_shipped_wordlists_are_versioned_and_one_to_one(axis: str) -> None:
    wl = load_wordlist(axis)
    assert wl.axis == axis and wl.version == WORDLIST_VERSION
    keys = [cda._norm(t) for t in wl.terms()]
    assert len(keys) == len(set(keys)), "a term appears twice"
    for row in wl.rows:
        assert set(row) == set(wl.groups)
    # every alias resolves to a listed term, and every term resolves to its own row and group
    for i, row in enumerate(wl.rows):
        for g, term in row.items():
            assert wl.lookup(term.upper()) == (i, g)
    for alias in wl.aliases:
        assert wl.lookup(alias) is not None


def test_wordlists_are_package_data() -> None:
    from importlib import resources

    names = {p.name for p in resources.files("auditlm.mitigate").joinpath("wordlists").iterdir()}
    assert {f"{a}.yaml" for a in AXES} <= names


def test_gender_list_size_and_pronouns_resolved_in_code() -> None:
    wl = load_wordlist("gender")
    assert len(wl.rows) >= 100
    assert wl.groups == ("male", "female")
    assert not {"her", "his", "him", "hers"} & {cda._norm(t) for t in wl.terms()}


def _reference_pairs() -> list[tuple[str, str]]:
    pairs = []
    for line in WINOBIAS_SWAPS.read_text(encoding="utf-8").splitlines():
        parts = line.split()
        if len(parts) == 2:
            pairs.append((parts[0].lower().rstrip("."), parts[1].lower().rstrip(".")))
    return pairs


# Words of the WinoBias generalized swap list (Zhao et al. 2018) that auditlm's list leaves out, and why.
REFERENCE_OMITTED = {
    "miss": "mostly the verb ('I miss you')",
    "chick": "slang; also a young bird",
    "chicks": "slang; also young birds",
    "dude": "slang, and its only counterpart in the reference is 'chick'",
    "dudes": "as 'dude'",
    "mentleman": "a typo for 'gentleman' in the reference",
}
# Reference swaps auditlm makes differently, and why.
REFERENCE_DISAGREES = {
    ("chairwomen", "chairman"): "reference typo: the plural's counterpart is 'chairmen'",
    ("guy", "girl"): "ours is guy <-> gal (the reference itself maps gal -> guy)",
    ("guys", "girls"): "ours is guys <-> gals, as guy <-> gal",
    ("sir", "ma'am"): "ours is sir <-> madam; ma'am is an alias of madam (so ma'am -> sir, as the reference)",
}
# Static (context-free) reading of the tagged pronouns, as the reference lists them.
STATIC_PRONOUNS = {"his": "her", "him": "her", "hers": "his", "her": "his"}


def _static_swap(word: str) -> str | None:
    wl = load_wordlist("gender")
    if word in STATIC_PRONOUNS:
        return STATIC_PRONOUNS[word]
    found = wl.lookup(word)
    if found is None:
        return None
    row, group = found
    return cda._norm(wl.rows[row]["female" if group == "male" else "male"])


@pytest.mark.skipif(not WINOBIAS_SWAPS.is_file(), reason="WinoBias data not present (set AUDITLM_DATA)")
def test_gender_list_covers_and_agrees_with_winobias_reference() -> None:
    ref = _reference_pairs()
    assert len(ref) > 90
    wl = load_wordlist("gender")
    ours = {cda._norm(f) for f in wl.detectable()}
    ref_words = {w for p in ref for w in p}
    missing = ref_words - ours - set(REFERENCE_OMITTED)
    assert not missing, f"reference words neither in our list nor documented as omitted: {sorted(missing)}"
    disagree = {
        (a, b): _static_swap(a)
        for a, b in ref
        if a not in REFERENCE_OMITTED and b not in REFERENCE_OMITTED and _static_swap(a) != b
    }
    assert set(disagree) == set(REFERENCE_DISAGREES), disagree
    shared = len(ref_words & ours) / len(ref_words)
    additions = sorted(ours - ref_words)
    print(f"\nreference words covered: {shared:.0%}; our additions: {len(additions)} words")
    assert shared >= 0.9


def test_malformed_wordlist_is_a_one_line_data_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("axis: x\nversion: 1\ngroups: [a, b]\npairs:\n  - [king, queen]\n  - [queen, king]\n")
    with pytest.raises(DataError, match="appears more than once"):
        load_wordlist(str(bad))
    bad.write_text("axis: x\nversion: 1\ngroups: [a, b]\npairs:\n  - [he, she]\naliases:\n  kin: nope\n")
    with pytest.raises(DataError, match="not a term"):
        load_wordlist(str(bad))


def test_custom_wordlist_path(tmp_path: Path) -> None:
    f = tmp_path / "colour.yaml"
    f.write_text("axis: colour\nversion: 7\ngroups: [a, b, c]\nrows:\n  - {a: red, b: green, c: blue}\n")
    res = augment(["Red, green and BLUE."], str(f))
    assert res.sentences == ["Red, green and BLUE.", "Green, blue and RED."]


def test_bad_arguments_are_audit_errors() -> None:
    with pytest.raises(AuditError, match="unknown CDA axis"):
        augment(["x"], axis="age")
    with pytest.raises(AuditError, match="two different"):
        augment(["x"], axis="religion", swap=("christian", "pagan"))
    with pytest.raises(AuditError, match="to itself"):
        augment(["x"], axis="religion", shift=5)
    with pytest.raises(AuditError, match="names list"):
        augment(["x"], axis="religion", names="swap")
    with pytest.raises(DataError, match="does not exist"):
        cda.read_text_lines("/nonexistent/corpus.txt")


# -------------------------------------------------------------------------------------------- swapping

GENDER_CASES = [
    # case
    ("He is here.", "She is here."),
    ("HE IS HERE.", "SHE IS HERE."),
    ("he is here.", "she is here."),
    ("The King and the queen.", "The Queen and the king."),
    # plurals and possessives
    ("The men and the kings left.", "The women and the queens left."),
    ("The man's hat and the men's room.", "The woman's hat and the women's room."),
    ("The kings' crowns.", "The queens' crowns."),
    ("His car is red.", "Her car is red."),
    # both readings of her
    ("I gave her her book.", "I gave him his book."),
    ("Her own mother told her so.", "His own father told him so."),
    ("She gave it to her.", "He gave it to him."),
    # his standing alone, hers, him
    ("The book is his.", "The book is hers."),
    ("That car is his, not hers.", "That car is hers, not his."),
    ("He told her that the idea was his.", "She told him that the idea was hers."),
    ("I saw him with his friends.", "I saw her with her friends."),
    ("She blamed herself.", "He blamed himself."),
    ("He is a friend of his.", "She is a friend of hers."),
    ("Each student brought his or her book.", "Each student brought her or his book."),
    ('He was praised for his "exceptional" skill.', 'She was praised for her "exceptional" skill.'),
    ("He was fired for his expressing views.", "She was fired for her expressing views."),
    # word boundaries: no swap inside other words
    (
        "The manager from Manchester said the theme was there.",
        "The manager from Manchester said the theme was there.",
    ),
    ("Shepherds and heroic themes.", "Shepherds and heroic themes."),
    ("The step-father and the ex-husband.", "The step-mother and the ex-wife."),
    # titles with their full stop, aliases one-way
    ("Mr. Smith met Mrs. Jones.", "Mrs. Smith met Mr. Jones."),
    ("Ms. Jones thanked the lord.", "Mr. Jones thanked the lady."),
    # names are left alone by default
    ("John said he left.", "John said she left."),
    # no term
    ("It rained all day in the city.", "It rained all day in the city."),
]


@pytest.mark.parametrize(("sentence", "expected"), GENDER_CASES)
def test_gender_swap_table(gender: CounterfactualSwapper, sentence: str, expected: str) -> None:
    assert gender.swap(sentence) == expected


def test_swap_is_an_involution_on_unambiguous_sentences(gender: CounterfactualSwapper) -> None:
    for s in ["The man's wife and her sons.", "He met the queen's nephews.", "I gave her her book."]:
        assert gender.swap(gender.swap(s)) == s


@pytest.mark.parametrize(
    ("word", "tag", "dep", "next_tag", "expected"),
    [
        ("her", "PRP$", "poss", "NN", "his"),
        ("her", "PRP", "dative", "PRP$", "him"),
        ("her", "PRP$", "poss", ".", "him"),  # a determiner with nothing to determine: a tagger slip
        ("her", "PRP$", "pobj", "IN", "him"),
        ("her", "PRP", "dobj", None, "him"),
        ("his", "PRP$", "poss", "NN", "her"),
        ("his", "PRP$", "poss", "IN", "her"),  # "his against-type role"
        ("his", "PRP$", "attr", None, "hers"),  # "was it his"
        ("his", "PRP$", "poss", ",", "hers"),  # "his, not hers"
        ("his", "PRP", "attr", "TO", "hers"),  # "it is his to keep"
        ("his", "PRP$", "nsubj", "VBD", "hers"),  # "his was the best"
        ("his", "PRP$", "nsubj", "VBG", "her"),  # "his expressing views"
        ("HIM", "", "", None, "her"),
        ("hers", "NNS", "attr", None, "his"),
    ],
)
def test_resolve_pronoun(word: str, tag: str, dep: str, next_tag: str | None, expected: str) -> None:
    assert cda.resolve_pronoun(word, tag, dep, next_tag) == expected


def test_match_case() -> None:
    assert match_case("HE", "she") == "SHE"
    assert match_case("He", "she") == "She"
    assert match_case("he", "she") == "she"
    assert match_case("bible", "Quran") == "Quran"
    assert match_case("Black People", "white people") == "White People"
    assert match_case("church", "Bhagavad Gita") == "Bhagavad Gita"


def test_tagger_runs_only_on_sentences_with_her_or_his() -> None:
    sw = CounterfactualSwapper("gender")
    sw.swap_many(["He left.", "The men ran.", "Nothing here.", "Hermit and this."])
    assert sw.n_tagged == 0
    sw.swap_many(["I saw her.", "His dog.", "He left."])
    assert sw.n_tagged == 2


def test_names_rule() -> None:
    keep = CounterfactualSwapper("gender")
    protect = CounterfactualSwapper("gender", names="protect")
    swap = CounterfactualSwapper("gender", names="swap")
    s = "Martin Luther King met the king."
    # keep: names are not looked at, so a name that is also a term is swapped
    assert keep.swap(s) == "Martin Luther Queen met the queen."
    # protect: a term inside a PERSON entity stays
    res = augment([s], names="protect")
    assert res.counterfactuals == ["Martin Luther King met the queen."] and res.n_protected == 1
    assert protect.swap("John met his sister.") == "John met her brother."
    # swap: listed given names inside a PERSON entity are swapped, others and non-entities stay
    assert swap.swap("John met his sister.") == "Mary met her brother."
    assert swap.swap("Mark my words, he said.") == "Mark my words, she said."


def test_augment_counts() -> None:
    sents = ["He is a king.", "It rained.", "I gave her her book.", "The men and the man."]
    res = augment(sents)
    assert res.sentences == [
        "He is a king.",
        "She is a queen.",
        "It rained.",
        "I gave her her book.",
        "I gave him his book.",
        "The men and the man.",
        "The women and the woman.",
    ]
    assert (res.n_sentences, res.n_changed, res.n_unchanged) == (4, 3, 1)
    assert res.term_counts == {"he": 1, "king": 1, "her": 2, "men": 1, "man": 1}
    assert res.replacement_counts[("her", "him")] == 1 and res.replacement_counts[("her", "his")] == 1
    assert res.group_counts == {"male": 4, "female": 2}
    summary = res.summary()
    assert summary["sentences_out"] == 7 and summary["wordlist_version"] == WORDLIST_VERSION


def test_religion_rotation_and_pair_swap() -> None:
    sents = [
        "The Christian priest read the Bible in the church.",
        "Muslims pray in a mosque during Ramadan.",
        "A Hindu temple and the Bhagavad Gita.",
        "The Koran was read.",
        "The weather was fine.",
    ]
    rot = augment(sents, axis="religion")
    assert rot.mapping == {
        "christian": "muslim",
        "muslim": "jewish",
        "jewish": "hindu",
        "hindu": "buddhist",
        "buddhist": "christian",
    }
    assert rot.counterfactuals == [
        "The Muslim imam read the Quran in the mosque.",
        "Jews pray in a synagogue during Passover.",
        "A Buddhist pagoda and the Tripitaka.",
        "The Torah was read.",
    ]
    pair = augment(sents, axis="religion", swap=("christian", "muslim"))
    assert pair.counterfactuals == [
        "The Muslim imam read the Quran in the mosque.",
        "Christians pray in a church during Easter.",
        "The Bible was read.",
    ]
    # the Hindu sentence has a religion term but none of the swapped pair: kept once
    assert pair.n_unchanged == 2 and pair.group_counts == {"christian": 4, "muslim": 4}
    # shift=2 rotates two steps
    assert augment(["A church."], axis="religion", shift=2).counterfactuals == ["A synagogue."]


def test_race_swaps() -> None:
    sents = [
        "Black people and white men live in the Asian community.",
        "African-American students met African Americans.",
        "The white meat of the Black Sea.",
        "Caucasian women and Latinos.",
    ]
    res = augment(sents, axis="race")
    assert res.counterfactuals == [
        "White people and Asian men live in the Hispanic community.",
        "White students met White Americans.",
        "Asian women and Arabs.",
    ]
    assert res.records[2].changed is False  # bare colour words are not race terms
    pair = augment(["The black community and the white community."], axis="race", swap=("black", "white"))
    assert pair.counterfactuals == ["The white community and the black community."]


# --------------------------------------------------------------------------------------------- corpora


def test_wikitext_detokenize_constructed_lines() -> None:
    assert wikitext_detokenize(" = = Description = = \n") == " == Description ==\n"
    assert (
        wikitext_detokenize(
            " weigh 0 @.@ 7 – 2 @.@ 2 kg ( 1 @.@ 5 lb ) , and the north @-@ eastern 20 @,@ 000 \n"
        )
        == " weigh 0.7 – 2.2 kg (1.5 lb), and the north-eastern 20,000\n"
    )
    assert (
        wikitext_detokenize(
            " known as \" lobster red \" on cooking . The women 's and the girls ' coach ; a : b ! c ? d . \n"
        )
        == " known as \"lobster red\" on cooking. The women's and the girls' coach; a: b! c? d.\n"
    )
    assert wikitext_detokenize("at 5 ° C \n the next") == "at 5°C\nthe next"


def _harness_detokenizer():
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("lm-eval not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "tasks" / "wikitext" / "preprocess_wikitext.py"
    if not path.is_file():
        pytest.skip("lm-eval has no wikitext preprocessing module")
    mod_spec = importlib.util.spec_from_file_location("_lm_eval_preprocess_wikitext", path)
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod.wikitext_detokenizer


@pytest.mark.skipif(not WIKITEXT.is_file(), reason="WikiText-2 not present (set AUDITLM_DATA)")
def test_wikitext_detokenize_matches_lm_eval_harness() -> None:
    harness = _harness_detokenizer()
    raw = WIKITEXT.read_text(encoding="utf-8").splitlines(keepends=True)[:400]
    docs = wikitext_documents(WIKITEXT, max_lines=400)
    assert len(docs) >= 1
    assert wikitext_detokenize("".join(raw)) == harness({"page": "".join(raw)})
    assert "@-@" not in "".join(docs) and " , " not in "".join(docs)


def test_split_sentences() -> None:
    assert split_sentences("H. gammarus is big. Mr. Smith saw it! Did he? Yes.") == [
        "H. gammarus is big.",
        "Mr. Smith saw it!",
        "Did he?",
        "Yes.",
    ]
    assert split_sentences('He said "go." Then 5 left.') == ['He said "go."', "Then 5 left."]


def test_read_text_lines(tmp_path: Path) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("He left.\n\n  She came.  \n", encoding="utf-8")
    b.write_text("The end.\n", encoding="utf-8")
    assert cda.read_text_lines([a, b]) == ["He left.", "She came.", "The end."]


def _words(s: str) -> list[str]:
    return re.findall(r"\w+", s.lower())


@pytest.mark.skipif(not WIKITEXT.is_file(), reason="WikiText-2 not present (set AUDITLM_DATA)")
def test_wikitext_augmentation_is_consistent() -> None:
    sents = wikitext_sentences(WIKITEXT, max_lines=200)
    assert len(sents) > 100
    assert not any(s.startswith("=") for s in sents)
    res = augment(sents, axis="gender")
    # originals kept, in order, each followed by its copy when changed
    assert [r.original for r in res.records] == sents
    assert len(res.sentences) == len(sents) + res.n_changed
    assert res.n_changed + res.n_unchanged == len(sents)
    assert res.n_changed > 0 and res.n_unchanged > 0
    it = iter(res.sentences)
    for r in res.records:
        assert next(it) == r.original
        if r.changed:
            assert next(it) == r.counterfactual

    wl = load_wordlist("gender")
    vocabulary = {w for t in wl.detectable() for w in _words(t)}
    single = {cda._norm(t) for t in wl.detectable() if re.fullmatch(r"\w+", cda._norm(t))}
    # independent count: every listed single-word term in the originals was swapped exactly once
    expected = sum(1 for s in sents for w in _words(s) if w in single)
    assert sum(res.term_counts.values()) == expected
    for r in res.records:
        if not r.changed:
            assert not set(_words(r.original)) & single, r.original
            continue
        a, b = _words(r.original), _words(r.counterfactual)
        assert len(a) == len(b)
        for tag, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
            if tag != "equal":
                assert set(a[i1:i2]) <= vocabulary and set(b[j1:j2]) <= vocabulary, (
                    r.original,
                    r.counterfactual,
                )
        # outside the swapped spans the text is identical
        rebuilt, pos = "", 0
        for e in r.edits:
            assert r.original[e.start : e.end] == e.source
            rebuilt += r.original[pos : e.start] + e.replacement
            pos = e.end
        assert rebuilt + r.original[pos:] == r.counterfactual


def test_protect_entities() -> None:
    s = "His mother played for the Lady Norse."
    assert augment([s]).counterfactuals == ["Her father played for the Gentleman Norse."]
    res = augment([s], protect_entities=("ORG",))
    assert res.counterfactuals == ["Her father played for the Lady Norse."] and res.n_protected == 1
    # religion words are NORP entities themselves: protecting ORG leaves them swappable
    assert augment(
        ["The Muslim imam spoke."], axis="religion", protect_entities=("ORG",)
    ).counterfactuals == ["The Jewish rabbi spoke."]
