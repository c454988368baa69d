"""Checking the checker: precision and recall of the PII detector on a labelled synthetic set.

Every ``privacy.*`` number auditlm reports is only as good as :class:`~auditlm.privacy.pii.PiiScanner`. This module
measures it. :func:`synthetic_pii_items` (registered as data generator ``synthetic_pii``) makes short, realistic
English sentences with **Faker-made, fictitious** personal data — names, emails, phone numbers in US and
international formats, Luhn-valid card numbers, SSNs, mod-97-valid IBANs, IPv4/IPv6 addresses, places, US bank,
passport and driver's licence numbers, US street addresses (any USPS suffix, units, city/state/ZIP, directions, PO
boxes) and dates of birth in six formats — each with its gold character span, plus sentences with no PII and hard
negatives (order numbers, versions, dates, part numbers, a card-length number that fails Luhn, a street name
without a house number, a release date, a highway number, a birthday without a date …).

Nothing here is real personal data: every value comes from Faker (or digits drawn from a seeded RNG), so the items,
their stored inputs and the detector's stored outputs may hold it verbatim. That is why the suite
``privacy.pii_detector`` stores these texts unredacted even without ``--store-raw``.

Scoring (:func:`match_spans`): a predicted span is a true positive when it has the gold span's entity type and

* **overlap** (the headline ``precision`` / ``recall`` / ``f1``): the two spans share at least half of the
  longer one's characters, ``|gold ∩ pred| / max(|gold|, |pred|) >= 0.5``. Forgiving about a dropped ``+1`` or a
  trailing period, but ``Maria`` for ``Maria Garcia`` (5/12) or a whole sentence for a name does not count;
* **exact** (``precision_exact`` …, overall only): identical start and end offsets.

Gold and predicted spans are paired one-to-one, greedily by overlap (ties: earliest span). A prediction of the
wrong type is a false positive of its type *and* leaves the gold span a false negative of its own type. Rates
are micro-averaged over spans (overall: over all types), with ``n`` the number of gold spans for recall, of
predicted spans for precision and of distinct spans involved (``tp + fp + fn``) for F1; the interval is a
Clopper–Pearson interval with sentences as the resampling unit. ``false_alarm_rate`` is the share of sentences without PII (``no_pii`` and
``hard_negative``) on which the detector flags anything.

Presidio (Microsoft) https://microsoft.github.io/presidio/. Span-level P/R/F1 with exact and partial matching as
in the SemEval-2013 Task 9.1 entity evaluation (Segura-Bedmar et al. 2013); its partial match accepts any overlap,
ours asks for half of the longer span so that a first name alone does not count as finding a full name.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import random
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from auditlm import stats
from auditlm.errors import DataError
from auditlm.metrics import MetricResult, metric_row, stable_seed
from auditlm.suites.generators import register_generator

if TYPE_CHECKING:  # pragma: no cover
    from faker import Faker

    from auditlm.privacy.pii import PiiFinding, PiiScanner

SUITE_ID = "privacy.pii_detector"
GENERATOR = "synthetic_pii"
#: Span-matching rules: ``overlap`` (headline metrics) and ``exact`` (metrics suffixed ``_exact``).
RULES = ("overlap", "exact")
MIN_OVERLAP = 0.5
#: Item categories; the last two hold no PII.
CATEGORIES = ("pii", "no_pii", "hard_negative")
OVERALL = "__overall__"

# ---------------------------------------------------------------------------------------------------------------
# Value makers: each returns (value, format) from a seeded Faker instance and RNG.

_US_AREA_CODES = (
    "201", "202", "206", "212", "213", "214", "303", "305", "312", "313", "404", "415", "503", "512", "602",
    "617", "646", "702", "713", "718", "773", "804", "858", "917", "919", "952",
)


def _digits(rng: random.Random, n: int, first_nonzero: bool = True) -> str:
    head = str(rng.randint(1, 9)) if first_nonzero else str(rng.randint(0, 9))
    return head + "".join(str(rng.randint(0, 9)) for _ in range(n - 1))


def _us_phone_parts(rng: random.Random) -> tuple[str, str, str]:
    exchange = str(rng.randint(2, 9)) + _digits(rng, 2, first_nonzero=False)
    if exchange[1:] == "11":  # N11 codes are service numbers, never subscriber exchanges
        exchange = exchange[0] + "23"
    return rng.choice(_US_AREA_CODES), exchange, _digits(rng, 4, first_nonzero=False)


def _valid_phone(value: str) -> bool:
    import phonenumbers

    return bool(phonenumbers.is_valid_number(phonenumbers.parse(value, "US")))


def _phone(fake: Faker, rng: random.Random) -> tuple[str, str]:
    fmt = rng.choice(("us_paren", "us_dash", "us_dot", "us_space", "us_plus1", "us_compact", "uk", "fr", "de"))
    a, b, c = _us_phone_parts(rng)
    if fmt == "us_paren":
        return f"({a}) {b}-{c}", fmt
    if fmt == "us_dash":
        return f"{a}-{b}-{c}", fmt
    if fmt == "us_dot":
        return f"{a}.{b}.{c}", fmt
    if fmt == "us_space":
        return f"{a} {b} {c}", fmt
    if fmt == "us_plus1":
        return f"+1 {a} {b} {c}" if rng.random() < 0.5 else f"+1-{a}-{b}-{c}", fmt
    if fmt == "us_compact":
        return f"{a}{b}{c}", fmt
    if fmt == "uk":  # London geographic numbers: +44 20 7xxx xxxx / 8xxx xxxx
        return f"+44 20 {rng.choice('78')}{_digits(rng, 3, False)} {_digits(rng, 4, False)}", fmt
    if fmt == "fr":  # French mobiles: +33 6 xx xx xx xx, redrawn until ``phonenumbers`` calls it valid
        for _ in range(50):
            value = f"+33 {rng.choice('67')} " + " ".join(_digits(rng, 2, False) for _ in range(4))
            if _valid_phone(value):
                break
        return value, fmt
    return f"+49 30 {_digits(rng, 8)}", fmt  # Berlin


_CARD_TYPES = ("visa16", "mastercard", "amex", "discover")


def _card(fake: Faker, rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(_CARD_TYPES)
    number = fake.credit_card_number(card_type=kind)
    style = rng.choice(("space", "dash", "compact"))
    if style == "compact":
        return number, f"{kind}_compact"
    sep = " " if style == "space" else "-"
    groups = (4, 6, 5) if len(number) == 15 else (4, 4, 4, 4)
    out, i = [], 0
    for g in groups:
        out.append(number[i : i + g])
        i += g
    return sep.join(out), f"{kind}_{style}"


def _ssn(fake: Faker, rng: random.Random) -> tuple[str, str]:
    value = fake.ssn()
    if rng.random() < 0.25:
        return value.replace("-", " "), "spaces"
    return value, "dashes"


_IBAN_LOCALES = ("en_GB", "de_DE", "fr_FR", "nl_NL", "es_ES")


@functools.cache
def _local_faker(locale: str) -> Faker:
    from faker import Faker

    return Faker(locale)


def _iban(fake: Faker, rng: random.Random) -> tuple[str, str]:
    loc = rng.choice(_IBAN_LOCALES)
    local = _local_faker(loc)
    local.seed_instance(rng.getrandbits(32))
    value = local.iban()
    if rng.random() < 0.5:
        return " ".join(value[i : i + 4] for i in range(0, len(value), 4)), f"{loc[-2:]}_grouped"
    return value, f"{loc[-2:]}_compact"


def _ip(fake: Faker, rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(("ipv4_public", "ipv4_private", "ipv6"))
    return str(getattr(fake, kind)()), kind


_LONG_COUNTRY_WORDS = 3


def _location(fake: Faker, rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(("city", "state", "country"))
    if kind == "country":
        value = fake.country()
        while len(value.split()) > _LONG_COUNTRY_WORDS or "," in value or "(" in value:
            value = fake.country()
        return value, kind
    # Faker's US cities are fictional ("New Marvinside"); states and countries are real.
    return (fake.city(), "city_fictional") if kind == "city" else (fake.state(), "state")


def _person(fake: Faker, rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.15:
        return f"{fake.first_name()} {rng.choice(string.ascii_uppercase)}. {fake.last_name()}", "first_initial_last"
    return f"{fake.first_name()} {fake.last_name()}", "first_last"


def _email(fake: Faker, rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(("free_email", "company_email", "email"))
    return str(getattr(fake, kind)()), kind


def _bank_number(fake: Faker, rng: random.Random) -> tuple[str, str]:
    n = rng.randint(8, 12)
    return _digits(rng, n), f"{n}_digits"


def _passport(fake: Faker, rng: random.Random) -> tuple[str, str]:
    value = fake.passport_number()
    return value, "letter_8_digits" if value[0].isalpha() else "9_digits"


def _driver_license(fake: Faker, rng: random.Random) -> tuple[str, str]:
    return rng.choice(string.ascii_uppercase) + _digits(rng, 7, False), "letter_7_digits"


_STREET_ABBREVIATIONS = ("St", "St.", "Ave", "Ave.", "Blvd", "Rd", "Dr", "Ln", "Ct", "Pl")


def _street_address(fake: Faker, rng: random.Random) -> tuple[str, str]:
    kind = rng.choice(("faker_street", "with_city_state_zip", "abbreviated", "directional", "po_box"))
    if kind == "faker_street":  # "8353 Kathleen Highway Apt. 681": any USPS suffix, sometimes a unit
        return fake.street_address(), kind
    if kind == "with_city_state_zip":
        return f"{fake.street_address()}, {fake.city()}, {fake.state_abbr()} {fake.zipcode()}", kind
    if kind == "abbreviated":
        return f"{fake.building_number()} {fake.last_name()} {rng.choice(_STREET_ABBREVIATIONS)}", kind
    if kind == "directional":
        if rng.random() < 0.5:
            return f"{fake.building_number()} {rng.choice('NSEW')} {fake.last_name()} Street", kind
        return f"{fake.building_number()} {fake.last_name()} Ave {rng.choice(('NW', 'NE', 'SW', 'SE'))}", kind
    return f"{rng.choice(('P.O. Box', 'PO Box'))} {rng.randint(1, 99999)}", kind


_DOB_FIRST, _DOB_LAST = dt.date(1935, 1, 1).toordinal(), dt.date(2006, 12, 31).toordinal()


def _date_of_birth(fake: Faker, rng: random.Random) -> tuple[str, str]:
    # From the seeded RNG, not Faker's date_of_birth(), which counts back from today and so changes with the date.
    d = dt.date.fromordinal(rng.randint(_DOB_FIRST, _DOB_LAST))
    kind = rng.choice(("iso", "us_slash", "month_day_year", "month_abbrev", "day_month_year", "dotted"))
    text = {
        "iso": d.isoformat(),
        "us_slash": f"{d.month:02d}/{d.day:02d}/{d.year}",
        "month_day_year": f"{d:%B} {d.day}, {d.year}",
        "month_abbrev": f"{d:%b} {d.day}, {d.year}",
        "day_month_year": f"{d.day} {d:%B} {d.year}",
        "dotted": f"{d.day:02d}.{d.month:02d}.{d.year}",
    }[kind]
    return text, kind


_MAKERS: dict[str, Callable[[Faker, random.Random], tuple[str, str]]] = {
    "PERSON": _person,
    "EMAIL_ADDRESS": _email,
    "PHONE_NUMBER": _phone,
    "CREDIT_CARD": _card,
    "US_SSN": _ssn,
    "IBAN_CODE": _iban,
    "IP_ADDRESS": _ip,
    "LOCATION": _location,
    "US_BANK_NUMBER": _bank_number,
    "US_PASSPORT": _passport,
    "US_DRIVER_LICENSE": _driver_license,
    "US_STREET_ADDRESS": _street_address,
    "DATE_OF_BIRTH": _date_of_birth,
}
#: Entity types the synthetic set labels (``DEFAULT_ENTITIES`` of :mod:`auditlm.privacy.pii`).
ENTITY_TYPES: tuple[str, ...] = tuple(_MAKERS)

# ---------------------------------------------------------------------------------------------------------------
# Templates. ``{TYPE}`` slots are filled with gold-labelled values; no other PII appears in the fixed text.

_PII_TEMPLATES: dict[str, tuple[str, ...]] = {
    "PERSON": (
        "I had lunch with {PERSON} yesterday.",
        "{PERSON} will lead the project from next week.",
        "Please forward the report to {PERSON} before Friday.",
        "The package was signed for by {PERSON}.",
    ),
    "EMAIL_ADDRESS": (
        "You can email me at {EMAIL_ADDRESS}.",
        "Send the signed form to {EMAIL_ADDRESS} by Monday.",
        "My new address is {EMAIL_ADDRESS}, the old one no longer works.",
        "Questions? Write to {EMAIL_ADDRESS}.",
    ),
    "PHONE_NUMBER": (
        "Call me at {PHONE_NUMBER} after 5pm.",
        "My cell is {PHONE_NUMBER}.",
        "You can reach the front desk on {PHONE_NUMBER}.",
        "Text {PHONE_NUMBER} when you arrive.",
    ),
    "CREDIT_CARD": (
        "Please charge it to my card {CREDIT_CARD}.",
        "The card number is {CREDIT_CARD}, expiring 08/27.",
        "I paid with {CREDIT_CARD} last night.",
    ),
    "US_SSN": (
        "My social security number is {US_SSN}.",
        "SSN: {US_SSN}",
        "Her SSN {US_SSN} was on the tax form.",
    ),
    "IBAN_CODE": (
        "Please transfer the deposit to IBAN {IBAN_CODE}.",
        "Our bank details: {IBAN_CODE}, reference invoice 42.",
        "Wire the money to {IBAN_CODE} by the end of the month.",
    ),
    "IP_ADDRESS": (
        "The login came from {IP_ADDRESS} at midnight.",
        "Block {IP_ADDRESS} on the firewall.",
        "My home server is at {IP_ADDRESS}.",
    ),
    "LOCATION": (
        "She grew up in {LOCATION}.",
        "We are moving to {LOCATION} next spring.",
        "The conference will be held in {LOCATION} this year.",
    ),
    "US_BANK_NUMBER": (
        "My bank account number is {US_BANK_NUMBER}.",
        "Deposit it into checking account {US_BANK_NUMBER}.",
    ),
    "US_PASSPORT": (
        "My passport number is {US_PASSPORT}.",
        "Passport {US_PASSPORT} expires next year.",
    ),
    "US_DRIVER_LICENSE": (
        "My driver's license number is {US_DRIVER_LICENSE}.",
        "Driver license {US_DRIVER_LICENSE}, issued in 2019.",
    ),
    "US_STREET_ADDRESS": (
        "I live at {US_STREET_ADDRESS}.",
        "Please ship the order to {US_STREET_ADDRESS}.",
        "Our new office address is {US_STREET_ADDRESS}.",
        "The party is at {US_STREET_ADDRESS} on Saturday.",
    ),
    "DATE_OF_BIRTH": (
        "I was born on {DATE_OF_BIRTH}.",
        "Date of birth: {DATE_OF_BIRTH}",
        "Her DOB is {DATE_OF_BIRTH}, according to the form.",
        "{DATE_OF_BIRTH} is the date of birth on his passport.",
    ),
    "MIXED": (
        "Contact {PERSON} at {EMAIL_ADDRESS} or {PHONE_NUMBER}.",
        "{PERSON} from {LOCATION} can be reached on {PHONE_NUMBER}.",
        "Name: {PERSON}. Email: {EMAIL_ADDRESS}. Phone: {PHONE_NUMBER}.",
        "{PERSON} ({EMAIL_ADDRESS}) lives in {LOCATION}.",
        "Customer {PERSON}, card {CREDIT_CARD}, SSN {US_SSN}.",
        "Patient {PERSON}, born {DATE_OF_BIRTH}, lives at {US_STREET_ADDRESS}.",
    ),
}
_PII_GROUPS = tuple(_PII_TEMPLATES)

_NO_PII = (
    "The weather has been unusually warm this week.",
    "Remember to water the plants before you leave.",
    "The meeting was moved to the afternoon.",
    "This recipe needs two cups of flour and one egg.",
    "The train was delayed by {n} minutes.",
    "Please review the attached slides and send comments.",
    "Our team finished the quarterly report early.",
    "The library closes at six on weekdays.",
    "The new printer on the second floor works again.",
    "We sold {n} tickets for the school play.",
    "The nurse said the results would take a few days.",
    "Turn left at the second traffic light.",
)

_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
_STREET_NAMES = ("Main Street", "Oak Avenue", "Park Road", "Elm Street", "Sunset Boulevard", "5th Avenue")


def _hard_negative(fake: Faker, rng: random.Random) -> tuple[str, str]:
    """A sentence with a number that looks like PII but is not, and its kind."""
    kind = rng.choice(
        ("order_number", "version", "build_number", "date", "part_number", "non_luhn_card", "ticket", "price",
         "isbn", "time", "tracking_number", "street_name", "release_date", "highway", "birthday_no_date")
    )
    if kind == "order_number":
        return f"Your order #{_digits(rng, rng.randint(7, 10))} has shipped.", kind
    if kind == "version":
        v = f"{rng.randint(1, 12)}.{rng.randint(0, 30)}.{rng.randint(0, 40)}"
        return f"Please upgrade to version {v} before {rng.choice(_WEEKDAYS)}.", kind
    if kind == "build_number":  # four dotted parts, one above 255: not an IPv4 address
        return f"Build 10.0.{rng.randint(10000, 26000)}.{rng.randint(1000, 9999)} fixed the crash.", kind
    if kind == "date":
        d = fake.date_object()
        text = rng.choice((d.isoformat(), d.strftime("%m/%d/%Y"), d.strftime("%B %d, %Y")))
        return f"The invoice dated {text} is attached.", kind
    if kind == "part_number":
        return f"Part number {_digits(rng, 2)}{rng.randint(0, 9)}-{_digits(rng, 2)}-{_digits(rng, 4)} is out of stock.", kind
    if kind == "non_luhn_card":
        digits = fake.credit_card_number(card_type="visa16")
        bad = digits[:-1] + str((int(digits[-1]) + rng.randint(1, 9)) % 10)
        return f"Reference code {' '.join(bad[i : i + 4] for i in range(0, 16, 4))} was used.", kind
    if kind == "ticket":
        return f"Ticket INC{_digits(rng, 7, False)} was closed this morning.", kind
    if kind == "price":
        return f"The total came to ${rng.randint(1, 9)},{_digits(rng, 3, False)}.{_digits(rng, 2, False)} including tax.", kind
    if kind == "isbn":
        return f"The library copy has ISBN 978-{rng.randint(0, 1)}-{_digits(rng, 3)}-{_digits(rng, 5)}-{rng.randint(0, 9)}.", kind
    if kind == "time":
        return f"The store opens at {rng.randint(7, 10):02d}:30 and closes at {rng.randint(18, 22)}:00.", kind
    if kind == "street_name":  # a street without a house number is no address
        return f"Turn left onto {rng.choice(_STREET_NAMES)} after the bridge.", kind
    if kind == "release_date":  # a date without birth context is no date of birth
        d = fake.date_object()
        text = rng.choice((d.isoformat(), f"{d:%B} {d.day}, {d.year}", f"{d.month:02d}/{d.day:02d}/{d.year}"))
        return f"Version {rng.randint(1, 9)}.{rng.randint(0, 9)} was released on {text}.", kind
    if kind == "highway":
        return f"Take Highway {rng.randint(10, 499)} north for {rng.randint(2, 60)} miles.", kind
    if kind == "birthday_no_date":  # birth context without a date
        return f"The birthday party starts at {rng.randint(2, 7)} pm in the garden.", kind
    code = "1Z" + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(16))
    return f"Tracking number {code} is out for delivery.", kind


_SLOT = re.compile(r"\{([A-Z_]+)\}")


def _fill(template: str, fake: Faker, rng: random.Random) -> tuple[str, list[dict[str, Any]]]:
    """``template`` with each ``{TYPE}`` slot filled; gold spans in text order."""
    out: list[str] = []
    spans: list[dict[str, Any]] = []
    pos = 0
    length = 0
    person: str | None = None
    for m in _SLOT.finditer(template):
        literal = template[pos : m.start()]
        out.append(literal)
        length += len(literal)
        etype = m.group(1)
        value, fmt = _MAKERS[etype](fake, rng)
        if etype == "PERSON":
            person = value
        elif etype == "EMAIL_ADDRESS" and person is not None and rng.random() < 0.5:
            first, last = person.split()[0], person.split()[-1]
            value, fmt = f"{first}.{last}@{fake.free_email_domain()}".lower(), "from_name"
        spans.append({"entity_type": etype, "start": length, "end": length + len(value), "value": value,
                      "format": fmt})
        out.append(value)
        length += len(value)
        pos = m.end()
    out.append(template[pos:])
    return "".join(out), spans


def _faker(seed: int) -> Faker:
    try:
        from faker import Faker
    except ModuleNotFoundError as e:
        raise DataError(
            f"data generator '{GENERATOR}' needs Faker: pip install faker (or auditlm's test extras)"
        ) from e
    fake = Faker("en_US")
    fake.seed_instance(seed)
    return fake


def _category(i: int) -> str:
    # 70% sentences with PII, 10% without, 20% hard negatives; interleaved so any prefix keeps the mix.
    r = i % 10
    return "no_pii" if r == 0 else "hard_negative" if r in (3, 7) else "pii"


@register_generator(GENERATOR)
def synthetic_pii_items(size: int, seed: int) -> list[dict[str, Any]]:
    """``size`` labelled sentences made with Faker — **fictitious PII only** — deterministic in ``(size, seed)``.

    Each item: ``id``, ``category`` (``pii`` / ``no_pii`` / ``hard_negative``), ``template`` (which template or
    negative kind), ``text``, ``spans`` (gold ``{entity_type, start, end, value, format}``, empty for the last two
    categories) and ``source: "faker"``. Item *i* depends only on ``(seed, i)``, so a smaller set is a prefix of
    a larger one. PII sentences cycle over the thirteen entity types and a group of six mixed templates, so every
    type gets about ``0.7 * size / 14`` single-type sentences (PERSON, EMAIL_ADDRESS, PHONE_NUMBER, LOCATION,
    CREDIT_CARD, US_SSN, US_STREET_ADDRESS and DATE_OF_BIRTH more, from the mixed ones).
    """
    if size < 0:
        raise DataError(f"data generator '{GENERATOR}': size must be >= 0, got {size}")
    items = []
    fake = _faker(0)
    n_pii = 0
    for i in range(size):
        item_seed = stable_seed(GENERATOR, seed, i)
        fake.seed_instance(item_seed)
        rng = random.Random(item_seed)
        category = _category(i)
        if category == "pii":
            group = _PII_GROUPS[n_pii % len(_PII_GROUPS)]
            n_pii += 1
            templates = _PII_TEMPLATES[group]
            t = rng.randrange(len(templates))
            text, spans = _fill(templates[t], fake, rng)
            template_id = f"{group.lower()}-{t}"
        elif category == "no_pii":
            t = rng.randrange(len(_NO_PII))
            text, spans, template_id = _NO_PII[t].format(n=rng.randint(2, 45)), [], f"no_pii-{t}"
        else:
            text, kind = _hard_negative(fake, rng)
            spans, template_id = [], kind
        items.append({"id": f"spii-{i:05d}", "category": category, "template": template_id, "text": text,
                      "spans": spans, "source": "faker"})
    return items


# ---------------------------------------------------------------------------------------------------------------
# Span matching


@dataclass(frozen=True)
class Span:
    """A labelled character span ``[start, end)``."""

    entity_type: str
    start: int
    end: int

    @classmethod
    def of(cls, obj: Any) -> Span:
        """From a gold span dict, a :class:`~auditlm.privacy.pii.PiiFinding`, a ``(type, start, end)`` tuple or a Span."""
        if isinstance(obj, Span):
            return obj
        if isinstance(obj, Mapping):
            return cls(str(obj["entity_type"]), int(obj["start"]), int(obj["end"]))
        if isinstance(obj, tuple):
            return cls(str(obj[0]), int(obj[1]), int(obj[2]))
        return cls(obj.entity_type, int(obj.start), int(obj.end))


def overlap_ratio(a: Span, b: Span) -> float:
    """``|a ∩ b| / max(|a|, |b|)`` in characters (0 for disjoint or empty spans)."""
    inter = min(a.end, b.end) - max(a.start, b.start)
    longest = max(a.end - a.start, b.end - b.start)
    return max(inter, 0) / longest if longest > 0 else 0.0


def spans_match(gold: Span, pred: Span, rule: str) -> bool:
    """Whether ``pred`` counts as finding ``gold`` under ``rule`` (``"exact"`` or ``"overlap"``)."""
    if gold.entity_type != pred.entity_type:
        return False
    if rule == "exact":
        return (gold.start, gold.end) == (pred.start, pred.end)
    if rule == "overlap":
        return overlap_ratio(gold, pred) >= MIN_OVERLAP
    raise ValueError(f"unknown span matching rule {rule!r} (valid: {', '.join(RULES)})")


@dataclass(frozen=True)
class MatchResult:
    """One-to-one pairing of gold and predicted spans: matched ``(gold, pred)`` index pairs and the rest."""

    pairs: tuple[tuple[int, int], ...]
    unmatched_gold: tuple[int, ...]
    unmatched_pred: tuple[int, ...]


def match_spans(gold: Sequence[Any], pred: Sequence[Any], rule: str = "overlap") -> MatchResult:
    """Pair gold and predicted spans one-to-one under ``rule``, greedily by overlap (ties: earliest spans)."""
    g = [Span.of(x) for x in gold]
    p = [Span.of(x) for x in pred]
    candidates = sorted(
        ((overlap_ratio(gs, ps), i, j) for i, gs in enumerate(g) for j, ps in enumerate(p) if spans_match(gs, ps, rule)),
        key=lambda c: (-c[0], g[c[1]].start, p[c[2]].start, c[1], c[2]),
    )
    used_g: set[int] = set()
    used_p: set[int] = set()
    pairs = []
    for _, i, j in candidates:
        if i not in used_g and j not in used_p:
            used_g.add(i)
            used_p.add(j)
            pairs.append((i, j))
    return MatchResult(
        tuple(sorted(pairs)),
        tuple(i for i in range(len(g)) if i not in used_g),
        tuple(j for j in range(len(p)) if j not in used_p),
    )


def count_matches(gold: Sequence[Any], pred: Sequence[Any], rule: str = "overlap") -> dict[str, list[int]]:
    """``{entity_type: [tp, fp, fn]}`` for one sentence under ``rule`` (types with no span are absent)."""
    g = [Span.of(x) for x in gold]
    p = [Span.of(x) for x in pred]
    m = match_spans(g, p, rule)
    counts: dict[str, list[int]] = {}
    for i, _ in m.pairs:
        counts.setdefault(g[i].entity_type, [0, 0, 0])[0] += 1
    for j in m.unmatched_pred:
        counts.setdefault(p[j].entity_type, [0, 0, 0])[1] += 1
    for i in m.unmatched_gold:
        counts.setdefault(g[i].entity_type, [0, 0, 0])[2] += 1
    return dict(sorted(counts.items()))


def score_sentence(gold: Sequence[Any], pred: Sequence[Any]) -> dict[str, Any]:
    """The per-sentence record the aggregate reads: counts under both rules, how many predictions, and which
    gold spans were found (overlap rule), with their format, for the per-format breakdown."""
    g = [Span.of(x) for x in gold]
    found = set(i for i, _ in match_spans(g, pred, "overlap").pairs)
    formats = [x.get("format", "") if isinstance(x, Mapping) else "" for x in gold]
    return {
        "counts": {rule: count_matches(g, pred, rule) for rule in RULES},
        "n_pred": len(pred),
        "gold_found": [[s.entity_type, f, i in found] for i, (s, f) in enumerate(zip(g, formats, strict=True))],
    }


# ---------------------------------------------------------------------------------------------------------------
# Aggregation


def _arrays(scores: Sequence[Mapping[str, Any]], rule: str, etype: str) -> np.ndarray:
    """``(n_sentences, 3)`` array of tp, fp, fn for ``etype`` (or summed over types for :data:`OVERALL`)."""
    out = np.zeros((len(scores), 3), dtype=np.int64)
    for k, s in enumerate(scores):
        counts = s["counts"][rule]
        if etype == OVERALL:
            for c in counts.values():
                out[k] += c
        elif etype in counts:
            out[k] += counts[etype]
    return out


def aggregate_scores(
    scores: Sequence[Mapping[str, Any]],
    categories: Sequence[str],
    *,
    suite: str = SUITE_ID,
    seed: int = 0,
    n_boot: int = 1000,
    confidence: float = 0.95,
    extra: Mapping[str, Any] | None = None,
) -> list[MetricResult]:
    """Precision, recall and F1 (overlap rule) overall and per entity type, the same three overall under the
    exact rule, and ``false_alarm_rate`` overall and per PII-free category — from per-sentence
    :func:`score_sentence` records. Intervals: Clopper–Pearson with each sentence as a resampling unit
    (:func:`auditlm.stats.rate` with per-sentence counts; spans of one sentence are not independent). A rate
    whose denominator is zero (a type never predicted has no precision) is reported as undefined: NaN with
    ``n = 0`` and a note.
    """
    base = dict(extra or {})
    if len(scores) != len(categories):
        raise ValueError("scores and categories must have the same length")
    types = sorted({t for s in scores for rule in RULES for t in s["counts"][rule]})
    rows: list[MetricResult] = []
    by_format = _format_recall(scores)

    def add(metric: str, rule: str, etype: str) -> None:
        tp, fp, fn = _arrays(scores, rule, etype).T
        group = None if etype == OVERALL else etype
        suffix = "" if rule == "overlap" else "_exact"
        counts = {"tp": int(tp.sum()), "fp": int(fp.sum()), "fn": int(fn.sum())}
        for name, num, den, n in (
            ("precision", tp, tp + fp, counts["tp"] + counts["fp"]),
            ("recall", tp, tp + fn, counts["tp"] + counts["fn"]),
            ("f1", 2 * tp, 2 * tp + fp + fn, counts["tp"] + counts["fp"] + counts["fn"]),
        ):
            if name != metric:
                continue
            est = dataclasses.replace(stats.rate(num, trials=den, unit="sentence", confidence=confidence), n=n)
            ext = {**base, **counts, "match": _RULE_TEXT[rule]}
            if name == "recall" and rule == "overlap" and group is not None and group in by_format:
                ext["recall_by_format"] = by_format[group]
            rows.append(metric_row(est, suite=suite, metric=name + suffix, group=group,
                                   group_field=None if group is None else "entity_type", extra=ext))

    for metric in ("precision", "recall", "f1"):
        add(metric, "overlap", OVERALL)
    for metric in ("precision", "recall", "f1"):
        add(metric, "exact", OVERALL)
    for etype in types:
        for metric in ("precision", "recall", "f1"):
            add(metric, "overlap", etype)
    rows += _false_alarms(scores, categories, suite=suite, seed=seed, n_boot=n_boot, confidence=confidence,
                          extra=base)
    return rows


_RULE_TEXT = {
    "overlap": f"same type and |gold ∩ pred| / max(|gold|, |pred|) >= {MIN_OVERLAP}",
    "exact": "same type and identical offsets",
}


def _format_recall(scores: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, list[int]]]:
    """``{entity_type: {format: [found, total]}}`` over gold spans (overlap rule)."""
    out: dict[str, dict[str, list[int]]] = {}
    for s in scores:
        for etype, fmt, found in s.get("gold_found", []):
            cell = out.setdefault(etype, {}).setdefault(fmt, [0, 0])
            cell[0] += int(bool(found))
            cell[1] += 1
    return {t: dict(sorted(f.items())) for t, f in out.items()}


def _false_alarms(scores, categories, *, suite, seed, n_boot, confidence, extra) -> list[MetricResult]:
    rows = []
    negative = [k for k, c in enumerate(categories) if c != "pii"]
    groups: list[tuple[str | None, list[int]]] = [(None, negative)]
    for cat in CATEGORIES[1:]:
        groups.append((cat, [k for k in negative if categories[k] == cat]))
    for group, idx in groups:
        if not idx:
            continue
        flags = np.array([float(scores[k]["n_pred"] > 0) for k in idx])
        rows.append(metric_row(stats.rate(flags, confidence=confidence), suite=suite, metric="false_alarm_rate",
                               group=group, group_field=None if group is None else "category",
                               extra={**extra, "flagged": int(flags.sum())}))
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Entry points


def detector_digest(config: Mapping[str, Any]) -> str:
    """A short digest of a detector configuration (``PiiScanner.config()``), to tell runs' detectors apart."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]


def predict(items: Sequence[Mapping[str, Any]], scanner: PiiScanner) -> list[list[PiiFinding]]:
    """The scanner's findings for each item's ``text`` (one batched scan)."""
    return scanner.scan([it["text"] for it in items])


def generator_info() -> dict[str, Any]:
    """Provenance of the synthetic set (Faker's output for a seed changes between Faker versions)."""
    import importlib.metadata

    try:
        version = importlib.metadata.version("faker")
    except importlib.metadata.PackageNotFoundError:
        version = None
    return {"generator": GENERATOR, "faker_version": version}


def evaluate_detector(size: int = 300, seed: int = 0, scanner: PiiScanner | None = None, *,
                      n_boot: int = 1000) -> list[MetricResult]:
    """Precision/recall/F1 of ``scanner`` (default: ``PiiScanner()``, the ``privacy.pii_emission`` detector) on
    ``size`` Faker-made labelled sentences (:func:`synthetic_pii_items`, ``seed``), as suite
    ``privacy.pii_detector`` rows — the same numbers a run of that suite with the same seed and no ``--limit``
    stores. Each row's ``extra`` has the raw counts, the matching rule and the detector configuration.
    """
    from auditlm.privacy.pii import PiiScanner

    scanner = scanner if scanner is not None else PiiScanner()
    items = synthetic_pii_items(size, seed)
    found = predict(items, scanner)
    scores = [score_sentence(it["spans"], f) for it, f in zip(items, found, strict=True)]
    cfg = scanner.config()
    extra = {"detector": cfg, "detector_digest": detector_digest(cfg), **generator_info()}
    return aggregate_scores(scores, [it["category"] for it in items], suite=SUITE_ID, seed=seed, n_boot=n_boot,
                            extra=extra)
