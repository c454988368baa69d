"""Presidio recognizers auditlm adds to the predefined ones: US street addresses and dates of birth.

Presidio ships no recognizer for either. ``US_STREET_ADDRESS`` is a :class:`~presidio_analyzer.PatternRecognizer`
over the street-line grammar of USPS Publication 28 (house number, optional pre-direction, street name, a USPS
street suffix from Appendix C1, optional post-direction and secondary unit such as ``Apt 4B`` or ``Suite 300``,
optionally followed by ``City, ST 12345``), plus PO boxes; Presidio's lemma-based context words ("address",
"live", "ship" …) raise its score, and so does spaCy naming a person or place inside the match. ``DATE_OF_BIRTH`` is a calendar date (ISO, numeric month/day/year, or with
the month's name) that only counts next to birth context — "born", "birth" (so "date of birth", "birthday",
"birthdate"), "DOB", "b." — in the same sentence. Presidio's ``DATE_TIME`` (spaCy's DATE label) fires on every
"today" and year and stays out of the default entities; a date with birth context is personal data.

The birth context is checked on the raw text (:meth:`DateOfBirthRecognizer.enhance_using_context`, Presidio's hook
for recognizer-specific context) rather than by Presidio's lemma matcher: spaCy lemmatizes "born" to "bear", and
that matcher only looks at the five words before a match ("1987-03-04 (date of birth)" puts them after).

The module also holds the value helpers the scanner uses for these types: :func:`parse_date` (one calendar date
from the text of a match), :func:`normalize_date` (ISO ``YYYY-MM-DD``) and :func:`normalize_address` (case-folded,
punctuation dropped, USPS standard abbreviations for suffixes, directions and unit designators).

References: USPS Publication 28, *Postal Addressing Standards* (2015), Appendix B (state abbreviations) and C
(street suffixes C1, secondary unit designators C2). Presidio: https://microsoft.github.io/presidio/ (custom
recognizers, context enhancement).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from presidio_analyzer import RecognizerResult

US_STREET_ADDRESS = "US_STREET_ADDRESS"
DATE_OF_BIRTH = "DATE_OF_BIRTH"

# ---------------------------------------------------------------------------------------------------------------
# USPS Publication 28 vocabulary

#: Street suffixes people write most often (USPS C1 primary name → standard abbreviation); a street line that
#: ends in one of these scores higher than one ending in a rarer suffix.
COMMON_SUFFIXES: dict[str, str] = {
    "alley": "aly", "avenue": "ave", "boulevard": "blvd", "circle": "cir", "court": "ct", "drive": "dr",
    "expressway": "expy", "freeway": "fwy", "highway": "hwy", "lane": "ln", "parkway": "pkwy", "place": "pl",
    "plaza": "plz", "road": "rd", "square": "sq", "street": "st", "terrace": "ter", "trail": "trl",
    "turnpike": "tpke", "way": "way",
}
#: The rest of USPS Appendix C1 (primary names → standard abbreviations). Many are ordinary words ("Park",
#: "View", "Green"), so a street line ending in one needs a context word to be reported.
OTHER_SUFFIXES: dict[str, str] = {
    "anex": "anx", "arcade": "arc", "bayou": "byu", "beach": "bch", "bend": "bnd", "bluff": "blf",
    "bluffs": "blfs", "bottom": "btm", "branch": "br", "bridge": "brg", "brook": "brk", "brooks": "brks",
    "burg": "bg", "burgs": "bgs", "bypass": "byp", "camp": "cp", "canyon": "cyn", "cape": "cpe",
    "causeway": "cswy", "center": "ctr", "centers": "ctrs", "circles": "cirs", "cliff": "clf", "cliffs": "clfs",
    "club": "clb", "common": "cmn", "commons": "cmns", "corner": "cor", "corners": "cors", "course": "crse",
    "courts": "cts", "cove": "cv", "coves": "cvs", "creek": "crk", "crescent": "cres", "crest": "crst",
    "crossing": "xing", "crossroad": "xrd", "crossroads": "xrds", "curve": "curv", "dale": "dl", "dam": "dm",
    "divide": "dv", "drives": "drs", "estate": "est", "estates": "ests", "extension": "ext",
    "extensions": "exts", "fall": "fall", "falls": "fls", "ferry": "fry", "field": "fld", "fields": "flds",
    "flat": "flt", "flats": "flts", "ford": "frd", "fords": "frds", "forest": "frst", "forge": "frg",
    "forges": "frgs", "fork": "frk", "forks": "frks", "fort": "ft", "garden": "gdn", "gardens": "gdns",
    "gateway": "gtwy", "glen": "gln", "glens": "glns", "green": "grn", "greens": "grns", "grove": "grv",
    "groves": "grvs", "harbor": "hbr", "harbors": "hbrs", "haven": "hvn", "heights": "hts", "hill": "hl",
    "hills": "hls", "hollow": "holw", "inlet": "inlt", "island": "is", "islands": "iss", "isle": "isle",
    "junction": "jct", "junctions": "jcts", "key": "ky", "keys": "kys", "knoll": "knl", "knolls": "knls",
    "lake": "lk", "lakes": "lks", "land": "land", "landing": "lndg", "light": "lgt", "lights": "lgts",
    "loaf": "lf", "lock": "lck", "locks": "lcks", "lodge": "ldg", "loop": "loop", "mall": "mall",
    "manor": "mnr", "manors": "mnrs", "meadow": "mdw", "meadows": "mdws", "mews": "mews", "mill": "ml",
    "mills": "mls", "mission": "msn", "motorway": "mtwy", "mount": "mt", "mountain": "mtn",
    "mountains": "mtns", "neck": "nck", "orchard": "orch", "oval": "oval", "overpass": "opas", "park": "park",
    "parks": "park", "parkways": "pkwy", "pass": "pass", "passage": "psge", "path": "path", "pike": "pike",
    "pine": "pne", "pines": "pnes", "plain": "pln", "plains": "plns", "point": "pt", "points": "pts",
    "port": "prt", "ports": "prts", "prairie": "pr", "radial": "radl", "ramp": "ramp", "ranch": "rnch",
    "rapid": "rpd", "rapids": "rpds", "rest": "rst", "ridge": "rdg", "ridges": "rdgs", "river": "riv",
    "roads": "rds", "route": "rte", "row": "row", "rue": "rue", "run": "run", "shoal": "shl", "shoals": "shls",
    "shore": "shr", "shores": "shrs", "skyway": "skwy", "spring": "spg", "springs": "spgs", "spur": "spur",
    "spurs": "spur", "squares": "sqs", "station": "sta", "stravenue": "stra", "stream": "strm",
    "streets": "sts", "summit": "smt", "throughway": "trwy", "trace": "trce", "track": "trak",
    "trafficway": "trfy", "trailer": "trlr", "tunnel": "tunl", "underpass": "upas", "union": "un",
    "unions": "uns", "valley": "vly", "valleys": "vlys", "viaduct": "via", "view": "vw", "views": "vws",
    "village": "vlg", "villages": "vlgs", "ville": "vl", "vista": "vis", "walk": "walk", "walks": "walk",
    "wall": "wall", "ways": "ways", "well": "wl", "wells": "wls",
}
#: Abbreviations of the common suffixes that also stand alone as suffixes ("St", "Ave.", "Blvd").
_COMMON_ABBREVIATIONS = ("aly", "ave", "av", "blvd", "cir", "ct", "dr", "expy", "fwy", "hwy", "ln", "pkwy",
                         "pl", "plz", "rd", "sq", "st", "ter", "trl", "tpke")
_DIRECTIONS: dict[str, str] = {
    "north": "n", "south": "s", "east": "e", "west": "w",
    "northeast": "ne", "northwest": "nw", "southeast": "se", "southwest": "sw",
}
#: USPS Appendix C2 secondary unit designators (→ standard abbreviation).
_UNITS: dict[str, str] = {
    "apartment": "apt", "apt": "apt", "suite": "ste", "ste": "ste", "unit": "unit", "floor": "fl", "fl": "fl",
    "room": "rm", "rm": "rm", "building": "bldg", "bldg": "bldg", "department": "dept", "dept": "dept",
}
#: USPS Appendix B: states, DC, territories and military "states".
STATE_CODES = (
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL", "IN", "IA", "KS", "KY", "LA",
    "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM", "NY", "NC", "ND", "OH", "OK", "OR",
    "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA", "WV", "WI", "WY", "AS", "GU", "MP", "PR", "VI", "FM",
    "MH", "PW", "AA", "AE", "AP",
)
STATE_NAMES = (
    "Alabama", "Alaska", "Arizona", "Arkansas", "California", "Colorado", "Connecticut", "Delaware", "Florida",
    "Georgia", "Hawaii", "Idaho", "Illinois", "Indiana", "Iowa", "Kansas", "Kentucky", "Louisiana", "Maine",
    "Maryland", "Massachusetts", "Michigan", "Minnesota", "Mississippi", "Missouri", "Montana", "Nebraska",
    "Nevada", "New Hampshire", "New Jersey", "New Mexico", "New York", "North Carolina", "North Dakota", "Ohio",
    "Oklahoma", "Oregon", "Pennsylvania", "Rhode Island", "South Carolina", "South Dakota", "Tennessee", "Texas",
    "Utah", "Vermont", "Virginia", "Washington", "West Virginia", "Wisconsin", "Wyoming", "District of Columbia",
    "Puerto Rico", "Guam",
)


def _word_variants(words: Sequence[str], *, lower: bool) -> str:
    """An alternation of ``Title``, ``UPPER`` (and, with ``lower``, ``lower``) spellings, longest first."""
    forms = {v for w in words for v in (w.capitalize(), w.upper(), *((w,) if lower else ()))}
    return "|".join(sorted(forms, key=lambda s: (-len(s), s)))


_COMMON_SUFFIX_RE = (
    rf"(?:{_word_variants(tuple(COMMON_SUFFIXES), lower=True)}"
    rf"|(?:{_word_variants(_COMMON_ABBREVIATIONS, lower=False)})\.?)"
)
_OTHER_SUFFIX_RE = rf"(?:{_word_variants(tuple(OTHER_SUFFIXES), lower=True)})"
_DIRECTION_RE = (
    rf"(?:{_word_variants(tuple(_DIRECTIONS), lower=False)}|(?:N|S|E|W|NE|NW|SE|SW)\.?)"
)
_HOUSE_NUMBER = r"(?<![\w$£€.,/:-])\d{1,6}(?:-?[A-Z](?![a-z]))?"
_NAME_WORD = r"(?:[A-Z][A-Za-z'’.-]*|\d{1,3}(?:st|nd|rd|th))"
_STREET_NAME = rf"{_NAME_WORD}(?:[ \t]+{_NAME_WORD}){{0,3}}"
_UNIT = (
    r"(?:,?[ \t]+(?:(?:" + _word_variants(tuple(_UNITS), lower=True) + r")\.?[ \t]*#?|#)[ \t]*"
    r"[A-Za-z0-9][A-Za-z0-9-]{0,5}(?![\w-]))"
)
_CITY = r"[A-Z][A-Za-z.'’-]+(?:[ \t]+[A-Z][A-Za-z.'’-]+){0,3}"
_STATE = "(?:" + "|".join(sorted(STATE_CODES + STATE_NAMES, key=lambda s: (-len(s), s))) + ")"
_ZIP = r"\d{5}(?:-\d{4})?"
_TAIL = rf"(?:,?\s+{_CITY},[ \t]*{_STATE}(?:[ \t]+{_ZIP})?(?![\w-]))"


def _street_line(suffix: str) -> str:
    return (
        rf"{_HOUSE_NUMBER}[ \t]+(?:{_DIRECTION_RE}[ \t]+)?{_STREET_NAME}[ \t]+{suffix}(?![\w'’-])"
        rf"(?:[ \t]+{_DIRECTION_RE}(?![\w'’-]))?{_UNIT}?"
    )


_PO_BOX = r"(?<![\w-])(?:(?:P\.?[ \t]?O\.?|PO|Post[ \t]+Office)[ \t]+Box|BOX)[ \t]+\d{1,6}(?![\w-])"

# ---------------------------------------------------------------------------------------------------------------
# Dates

_MONTHS: dict[str, int] = {
    "january": 1, "february": 2, "march": 3, "april": 4, "may": 5, "june": 6, "july": 7, "august": 8,
    "september": 9, "october": 10, "november": 11, "december": 12,
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "sept": 9, "oct": 10,
    "nov": 11, "dec": 12,
}
_MONTH_RE = "(?:" + _word_variants(tuple(_MONTHS), lower=True) + r")\.?"
_DAY = r"(?:0?[1-9]|[12]\d|3[01])"
_ORD = r"(?:st|nd|rd|th)?"
_YEAR4 = r"(?:18|19|20)\d{2}"
_DATE_PATTERNS: tuple[tuple[str, str], ...] = (
    ("iso", rf"(?<![\w./-]){_YEAR4}([-/.])(?:0?[1-9]|1[0-2])\1{_DAY}(?![\w/-]|\.\d)"),
    ("numeric", rf"(?<![\w./-]){_DAY}([-/.]){_DAY}\1(?:{_YEAR4}|\d{{2}})(?![\w/-]|\.\d)"),
    ("month_day_year", rf"(?<![\w-]){_MONTH_RE}[ \t]+{_DAY}{_ORD},?[ \t]+{_YEAR4}(?![\w-])"),
    ("day_month_year", rf"(?<![\w-]){_DAY}{_ORD}[ \t]+(?:of[ \t]+)?{_MONTH_RE},?[ \t]+{_YEAR4}(?![\w-])"),
)
_DATE_RES = tuple(re.compile(p) for _, p in _DATE_PATTERNS)
_TWO_DIGIT_PIVOT = 30
"""A two-digit year ``yy`` is read as ``20yy`` below this, else ``19yy`` (fixed, so that a value's normal form and
hash do not change with the calendar)."""

#: Words that make a date a date of birth (case-insensitive, whole words; "birth" covers "date of birth").
_BIRTH_WORDS = re.compile(r"(?i)(?<![\w.])(?:born|birth(?:days?|dates?)?|d\.?o\.?b\.?)(?!\w)")
_BIRTH_ABBREV = re.compile(r"(?<![\w.])b\.\s*$")
_CONTEXT_BEFORE = 48
_CONTEXT_AFTER = 24
_SENTENCE_END = re.compile(r"[.!?;]\s+(?=[A-Z\"'(])|\n")


def _full_year(part: str) -> int:
    y = int(part)
    if len(part) == 2:
        return 2000 + y if y < _TWO_DIGIT_PIVOT else 1900 + y
    return y


def parse_date(text: str) -> dt.date | None:
    """The calendar date written in ``text`` (a shape :func:`find_dates` finds), or ``None``.

    Numeric dates are read month first (US), or day first when the first number cannot be a month
    (``25/12/1990``); two-digit years use a fixed pivot (``00``–``29`` → 20xx, else 19xx). A date that does not
    exist (``02/30/1990``) is ``None``.
    """
    s = text.strip()
    try:
        if re.fullmatch(r"\d{4}[-/.]\d{1,2}[-/.]\d{1,2}", s):
            y, m, d = (int(p) for p in re.split(r"[-/.]", s))
            return dt.date(y, m, d)
        if re.fullmatch(r"\d{1,2}[-/.]\d{1,2}[-/.](?:\d{4}|\d{2})", s):
            a, b, year = re.split(r"[-/.]", s)
            first, second, y = int(a), int(b), _full_year(year)
            if first <= 12:
                try:
                    return dt.date(y, first, second)
                except ValueError:
                    pass
            return dt.date(y, second, first)
        words = re.findall(r"[A-Za-z]+|\d+", s)
        month = next((_MONTHS[w.lower()] for w in words if w.lower() in _MONTHS), None)
        numbers = [w for w in words if w.isdigit()]
        if month is None or len(numbers) != 2:
            return None
        day, year = (numbers if len(numbers[1]) == 4 else numbers[::-1])
        return dt.date(int(year), month, int(day))
    except ValueError:
        return None


def find_dates(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of every date-shaped substring of ``text`` (birth context or not), without overlaps
    (the longest wins), in text order."""
    spans = sorted({m.span() for rx in _DATE_RES for m in rx.finditer(text)}, key=lambda s: (s[0], -s[1]))
    kept: list[tuple[int, int]] = []
    for start, end in spans:
        if not kept or start >= kept[-1][1]:
            kept.append((start, end))
    return kept


def normalize_date(value: str) -> str:
    """ISO ``YYYY-MM-DD`` of a date (``March 4, 1987``, ``03/04/1987`` and ``1987-03-04`` are one value);
    text that is no calendar date is case-folded with whitespace collapsed."""
    d = parse_date(value)
    return d.isoformat() if d is not None else " ".join(value.split()).casefold()


def dob_valid(value: str, today: dt.date | None = None) -> bool:
    """Whether ``value`` is a real calendar date from 1900-01-01 up to ``today`` — a plausible date of birth of a
    living person (a date in the future, or a historical figure's, is not)."""
    d = parse_date(value)
    return d is not None and dt.date(1900, 1, 1) <= d <= (today or dt.date.today())


_ABBREVIATE = {**COMMON_SUFFIXES, **OTHER_SUFFIXES, **_DIRECTIONS, **_UNITS, "av": "ave"}


def normalize_address(value: str) -> str:
    """Canonical form of a street address for matching and hashing: case-folded, ``.``, ``,`` and ``#`` dropped,
    whitespace collapsed, and USPS standard abbreviations for street suffixes, directions and unit designators
    (``42 Elm Street, Apt. 4`` and ``42 elm st apt 4`` are one value)."""
    words = re.sub(r"[,#]", " ", value.casefold().replace(".", "")).split()
    return " ".join(_ABBREVIATE.get(w, w) for w in words)


# ---------------------------------------------------------------------------------------------------------------
# Recognizers


def _street_address_class() -> type:
    import regex
    from presidio_analyzer import Pattern, PatternRecognizer

    class UsStreetAddressRecognizer(PatternRecognizer):
        """``US_STREET_ADDRESS``: a USPS-style street line or PO box (see :func:`us_street_address_recognizer`)."""

        SCORE_WITH_NAMED_PLACE = 0.9
        CONTEXT = ("address", "live", "reside", "ship", "deliver", "mail", "send", "home", "house", "office",
                   "locate", "move", "visit", "stay", "street")

        def __init__(self, supported_language: str = "en") -> None:
            super().__init__(
                supported_entity=US_STREET_ADDRESS,
                name="UsStreetAddressRecognizer",
                supported_language=supported_language,
                patterns=[
                    Pattern("street with city and state",
                            _street_line(f"(?:{_COMMON_SUFFIX_RE}|{_OTHER_SUFFIX_RE})") + _TAIL, 0.9),
                    Pattern("PO box with city and state", _PO_BOX + _TAIL, 0.9),
                    Pattern("street line (common suffix)", _street_line(_COMMON_SUFFIX_RE), 0.65),
                    Pattern("street line (other USPS suffix)", _street_line(_OTHER_SUFFIX_RE), 0.55),
                    Pattern("PO box", _PO_BOX, 0.65),
                ],
                context=list(self.CONTEXT),
                global_regex_flags=regex.DOTALL | regex.MULTILINE,
            )

        def enhance_using_context(
            self,
            text: str,
            raw_recognizer_results: list[RecognizerResult],
            other_raw_recognizer_results: list[RecognizerResult],
            nlp_artifacts: Any,
            context: list[str] | None = None,
        ) -> list[RecognizerResult]:
            named = [r for r in other_raw_recognizer_results if r.entity_type in ("LOCATION", "PERSON")]
            for r in raw_recognizer_results:
                if any(r.start <= n.start and n.end <= r.end for n in named):
                    r.score = max(r.score, self.SCORE_WITH_NAMED_PLACE)
            return raw_recognizer_results

    return UsStreetAddressRecognizer


def us_street_address_recognizer(supported_language: str = "en") -> Any:
    """A ``US_STREET_ADDRESS`` recognizer (a :class:`~presidio_analyzer.PatternRecognizer` subclass).

    Patterns and scores: a street line or PO box followed by ``City, ST`` (ZIP optional), 0.9; a street line ending
    in a common suffix (Street, Ave, Blvd, Road, Lane …) or a bare PO box, 0.65; a street line ending in any other
    USPS suffix ("Park", "View", "Ports" …), 0.55. Two kinds of evidence raise a score: Presidio's context words
    (+0.35 for one among the five words before the match: address, live, reside, ship, deliver, mail, send, home,
    house, office, locate, move, visit, stay, street), and spaCy naming a person or place inside the match (0.9:
    in "42 Elm St." spaCy sees the place "Elm St.", in "577 Andrew Lights" a person; the house number in front
    makes either an address — Presidio's recognizer-level hook for related entities). The scanner's threshold for
    this type is 0.6 (:data:`~auditlm.privacy.pii.DEFAULT_ENTITY_THRESHOLDS`), so a line with a rare suffix needs
    one of the two; and a raised score beats spaCy's fixed 0.85 when the scanner resolves overlaps.
    """
    return _street_address_class()(supported_language=supported_language)


def _has_birth_context(text: str, start: int, end: int) -> bool:
    before = text[max(0, start - _CONTEXT_BEFORE) : start]
    cuts = list(_SENTENCE_END.finditer(before))
    if cuts:
        before = before[cuts[-1].end() :]
    after = text[end : end + _CONTEXT_AFTER]
    cut = _SENTENCE_END.search(after)
    if cut:
        after = after[: cut.start()]
    return bool(_BIRTH_WORDS.search(before) or _BIRTH_ABBREV.search(before) or _BIRTH_WORDS.search(after))


def _date_of_birth_class() -> type:
    import regex
    from presidio_analyzer import Pattern, PatternRecognizer, RecognizerResult

    class DateOfBirthRecognizer(PatternRecognizer):
        """``DATE_OF_BIRTH``: a calendar date with birth context in the same sentence (see the module docstring).

        Every date matches at 0.05, below any threshold; :meth:`enhance_using_context` lifts a date to
        :attr:`SCORE_WITH_CONTEXT` when a birth word is within 48 characters before it or 24 after it, in the
        same sentence. Dates that do not exist (``02/30/1990``) are dropped.
        """

        SCORE_WITH_CONTEXT = 0.9

        def __init__(self, supported_language: str = "en") -> None:
            super().__init__(
                supported_entity=DATE_OF_BIRTH,
                name="DateOfBirthRecognizer",
                supported_language=supported_language,
                patterns=[Pattern(name, rx, 0.05) for name, rx in _DATE_PATTERNS],
                context=None,  # our own context check below; Presidio's lemma matcher would not see "born"
                global_regex_flags=regex.DOTALL | regex.MULTILINE,
            )

        def invalidate_result(self, pattern_text: str) -> bool:
            return parse_date(pattern_text) is None

        def enhance_using_context(
            self,
            text: str,
            raw_recognizer_results: list[RecognizerResult],
            other_raw_recognizer_results: list[RecognizerResult],
            nlp_artifacts: Any,
            context: list[str] | None = None,
        ) -> list[RecognizerResult]:
            for r in raw_recognizer_results:
                if _has_birth_context(text, r.start, r.end):
                    r.score = max(r.score, self.SCORE_WITH_CONTEXT)
                    r.recognition_metadata[RecognizerResult.IS_SCORE_ENHANCED_BY_CONTEXT_KEY] = True
            return raw_recognizer_results

    return DateOfBirthRecognizer


def date_of_birth_recognizer(supported_language: str = "en") -> Any:
    """A ``DATE_OF_BIRTH`` recognizer (a :class:`~presidio_analyzer.PatternRecognizer` subclass, built lazily so
    that importing this module does not import Presidio)."""
    return _date_of_birth_class()(supported_language=supported_language)


def auditlm_recognizers(supported_language: str = "en") -> list[Any]:
    """The recognizers auditlm adds to Presidio's predefined ones."""
    return [us_street_address_recognizer(supported_language), date_of_birth_recognizer(supported_language)]
