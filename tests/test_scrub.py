"""``auditlm mitigate scrub``: PII in a training corpus is rewritten, everything else is left byte for byte.

The corpus is made with Faker (fictitious values only), each document from a template with known planted values,
so every assertion compares against what was planted, not against what the scrubber reports. What is asserted:

- *Pattern and checksum types* (email, phone, card, SSN, IP): every planted value is gone from the output and the
  record counts exactly the planted number. The templates give each value its context word and the formats are
  ones Presidio's recognizers cover (Visa/Amex/Discover cards: Presidio's card pattern does not cover 2-series
  Mastercard BINs, so those are left out), so the detector's recall on them is 1 and anything less is a failure.
- *Names* (spaCy NER): recall is below 1 (a name can be missed or found only in part), so the test asserts what
  scrubbing can promise: every name the scanner finds in full in the input is gone from the output, at least
  three quarters of planted names are found in full (a floor that fails if NER stops working, well under the
  detector's measured recall), and the counts equal an independent scan of the input.
- Re-scanning the scrubbed corpus finds no PII at all; documents without PII are byte-identical.
"""

from __future__ import annotations

import csv
import hashlib
import json
import random
import re
from collections import Counter
from pathlib import Path

import pytest
from conftest import run_cli

from auditlm.mitigate.scrub import RECORD_FILE, hash_token, scrub_corpus
from auditlm.privacy.detector_eval import detector_digest
from auditlm.privacy.pii import PiiScanner, normalize

TEMPLATES: dict[str, tuple[str, ...]] = {
    "EMAIL_ADDRESS": ("Please write to {v} about the invoice.", "Her work email is {v} if you need it."),
    "PHONE_NUMBER": ("You can reach the office by phone at {v} after nine.", "Call my cell phone number {v} tomorrow."),
    "CREDIT_CARD": ("Charge the credit card {v} for the order.", "The card number {v} was declined twice."),
    "US_SSN": ("Her social security number is {v} on the form.", "SSN {v} was entered on the tax return."),
    "IP_ADDRESS": ("The login came from IP address {v} last night.", "Block the server at IP {v} in the firewall."),
    "PERSON": ("Yesterday {v} signed the lease for the apartment.", "The award went to {v} at the ceremony."),
}
STRONG = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IP_ADDRESS")
CLEAN = (
    "The committee meets every Tuesday to review the budget.",
    "Rain is expected over the weekend, so bring an umbrella.",
    "The recipe needs two cups of flour and a pinch of salt.",
    "Our team shipped the new release after three weeks of testing.",
    "The library closes early on public holidays.",
    "Most of the seedlings survived the cold night.",
    "The report was finished before the deadline.",
    "Please keep the kitchen clean after lunch.",
)
PER_TYPE = 5
_AREA = ("212", "312", "415", "617", "206", "303", "512", "404")


def _value(etype: str, fake, rng: random.Random) -> str:
    if etype == "EMAIL_ADDRESS":
        return fake.email()
    if etype == "PHONE_NUMBER":
        a, b, c = rng.choice(_AREA), str(rng.randint(201, 989)), f"{rng.randint(0, 9999):04d}"
        return rng.choice((f"({a}) {b}-{c}", f"{a}-{b}-{c}", f"{a}.{b}.{c}"))
    if etype == "CREDIT_CARD":
        return fake.credit_card_number(card_type=rng.choice(("visa", "amex", "discover")))
    if etype == "US_SSN":
        return fake.ssn()
    if etype == "IP_ADDRESS":
        return fake.ipv4_public()
    return fake.name()


def _make_docs(seed: int = 7) -> list[dict]:
    """Documents ``{text, template, planted: [(type, value)]}``: single-type, two mixed, one repeating an earlier
    email (for the hash operator's determinism) and the clean ones, shuffled (seeded)."""
    from faker import Faker

    fake = Faker("en_US")
    fake.seed_instance(seed)
    rng = random.Random(seed)
    docs = []
    for etype, templates in TEMPLATES.items():
        for i in range(PER_TYPE):
            v = _value(etype, fake, rng)
            t = templates[i % len(templates)]
            docs.append({"text": t.format(v=v), "template": t, "planted": [(etype, v)]})
    for _ in range(2):
        e, p = _value("EMAIL_ADDRESS", fake, rng), _value("PHONE_NUMBER", fake, rng)
        docs.append({"text": f"Send the signed copy to {e} or call the phone number {p} with questions.",
                     "template": None, "planted": [("EMAIL_ADDRESS", e), ("PHONE_NUMBER", p)]})
    first_email = next(d for d in docs if d["planted"][0][0] == "EMAIL_ADDRESS")["planted"][0][1]
    t = "Forward the contract to {v} before Friday."
    docs.append({"text": t.format(v=first_email), "template": t, "planted": [("EMAIL_ADDRESS", first_email)]})
    docs += [{"text": c, "template": None, "planted": []} for c in CLEAN]
    rng.shuffle(docs)
    return docs


@pytest.fixture(scope="module")
def docs() -> list[dict]:
    return _make_docs()


@pytest.fixture(scope="module")
def scanner() -> PiiScanner:
    return PiiScanner()


@pytest.fixture(scope="module")
def input_scan(docs, scanner) -> list[list]:
    """An independent scan of the input documents (the same detector the scrubber uses)."""
    return scanner.scan([d["text"] for d in docs])


def _planted(docs, etype: str | None = None) -> list[str]:
    return [v for d in docs for t, v in d["planted"] if etype is None or t == etype]


def _write_txt(path: Path, docs) -> list[str]:
    """One document per line, with a blank line after the third: returns the file's lines."""
    lines = [d["text"] for d in docs]
    lines.insert(3, "")
    path.write_text("".join(ln + "\n" for ln in lines), encoding="utf-8")
    return lines


@pytest.fixture(scope="module")
def scrubbed(tmp_path_factory, docs, scanner):
    """The txt corpus scrubbed with the default operator (replace)."""
    d = tmp_path_factory.mktemp("scrub_txt")
    src = d / "corpus.txt"
    lines = _write_txt(src, docs)
    result = scrub_corpus(src, d / "scrubbed.txt", scanner=scanner)
    out_lines = result.out.read_text(encoding="utf-8").split("\n")[:-1]
    return src, lines, result, out_lines


def _doc_lines(lines: list[str]) -> list[str]:
    return [ln for ln in lines if ln]


# --- what is removed -------------------------------------------------------------------------------------


def test_every_planted_pattern_value_is_gone(scrubbed, docs) -> None:
    out_lines = scrubbed[3]
    text = "\n".join(out_lines)
    for etype in STRONG:
        values = _planted(docs, etype)
        assert len(values) >= PER_TYPE
        left = [v for v in values if v in text]
        assert not left, f"{len(left)} planted {etype} value(s) survived scrubbing"
        # also in any other formatting: the digits of a phone/card/SSN do not survive either
        if etype in ("PHONE_NUMBER", "CREDIT_CARD", "US_SSN"):
            digits = re.sub(r"\D", "", text)
            assert not [v for v in values if normalize(v, etype) in digits]


def test_names_found_in_the_input_are_gone(scrubbed, docs, input_scan) -> None:
    _, _, _, out_lines = scrubbed
    text = "\n".join(out_lines)
    names = _planted(docs, "PERSON")
    found = {f.text for fs in input_scan for f in fs if f.entity_type == "PERSON"}
    found_in_full = [n for n in names if n in found]
    assert len(found_in_full) >= 0.75 * len(names), "spaCy NER finds too few planted names"
    assert not [n for n in found_in_full if n in text]


def test_rescan_of_scrubbed_corpus_finds_nothing(scrubbed, scanner) -> None:
    _, _, _, out_lines = scrubbed
    again = scanner.scan(_doc_lines(out_lines))
    assert [f.entity_type for fs in again for f in fs] == []


def test_documents_without_pii_are_byte_identical(scrubbed, docs, input_scan) -> None:
    src, lines, result, out_lines = scrubbed
    assert len(out_lines) == len(lines) and out_lines[3] == ""
    text_lines = [ln for ln in out_lines if ln]
    assert len(text_lines) == len(docs)
    raw = src.read_bytes().split(b"\n")
    out_raw = result.out.read_bytes().split(b"\n")
    raw_docs = [r for r in raw if r]
    out_docs = [r for r in out_raw if r]
    for d, found, before, after in zip(docs, input_scan, raw_docs, out_docs, strict=True):
        if not d["planted"]:
            assert after == before
        if found:
            assert after != before
    assert sum(1 for fs in input_scan if fs) == result.record["documents_changed"]
    assert sum(1 for d in docs if d["planted"]) == result.record["documents_changed"]


def test_replace_writes_the_entity_type(scrubbed, docs) -> None:
    _, _, _, out_lines = scrubbed
    by_text = dict(zip([d["text"] for d in docs], _doc_lines(out_lines), strict=True))
    for d in docs:
        etype = d["planted"][0][0] if len(d["planted"]) == 1 else None
        if d["template"] and etype in STRONG:
            assert by_text[d["text"]] == d["template"].format(v=f"<{etype}>")


def test_counts_match_the_planted_values(scrubbed, docs, input_scan) -> None:
    _, _, result, _ = scrubbed
    counts = result.counts
    for etype in STRONG:
        assert counts[etype] == len(_planted(docs, etype)), etype
    independent = Counter(f.entity_type for fs in input_scan for f in fs)
    assert {k: v for k, v in counts.items() if v} == dict(independent)
    assert counts["PERSON"] >= 0.75 * len(_planted(docs, "PERSON"))
    assert result.record["findings"] == sum(independent.values())
    assert result.record["documents"] == len(docs)


# --- the record ------------------------------------------------------------------------------------------


def test_record_holds_digests_and_config_but_no_value(scrubbed, docs, scanner) -> None:
    src, _, result, _ = scrubbed
    path = result.record_path
    assert path == result.out.parent / RECORD_FILE
    text = path.read_text(encoding="utf-8")
    for etype, v in [(t, v) for d in docs for t, v in d["planted"]]:
        assert v not in text, f"a planted {etype} value is in the record"
    rec = json.loads(text)
    assert rec["input"]["sha256"] == hashlib.sha256(src.read_bytes()).hexdigest()
    assert rec["output"]["sha256"] == hashlib.sha256(result.out.read_bytes()).hexdigest()
    assert rec["detector_digest"] == detector_digest(scanner.config())
    assert rec["auditlm_version"]
    assert set(rec["operators"]) == set(scanner.entities)
    assert {o["operator"] for o in rec["operators"].values()} == {"replace"}
    assert (path.stat().st_mode & 0o777) == 0o600 and (result.out.stat().st_mode & 0o777) == 0o600


def test_record_digits_hold_no_number(scrubbed, docs) -> None:
    """No planted phone, card or SSN appears in the record even as a digit run (digests are hex, and a
    16-digit run inside one would be a coincidence of about 1e-16 per position)."""
    _, _, result, _ = scrubbed
    runs = re.findall(r"\d{9,}", result.record_path.read_text(encoding="utf-8"))
    for etype in ("PHONE_NUMBER", "CREDIT_CARD", "US_SSN"):
        for v in _planted(docs, etype):
            assert not [r for r in runs if normalize(v, etype) in r]


# --- operators -------------------------------------------------------------------------------------------


def _single(docs, etype):
    return [(d, d["planted"][0][1]) for d in docs
            if d["template"] and len(d["planted"]) == 1 and d["planted"][0][0] == etype]


def test_operators_mask_hash_redact_keep(tmp_path, docs, scanner) -> None:
    src = tmp_path / "corpus.txt"
    _write_txt(src, docs)
    key = bytes(range(32))
    ops = {"PHONE_NUMBER": "mask", "EMAIL_ADDRESS": "hash", "US_SSN": "redact", "IP_ADDRESS": "keep"}
    res = scrub_corpus(src, tmp_path / "a.txt", operators=ops, hash_key=key, scanner=scanner)
    out = dict(zip([d["text"] for d in docs], _doc_lines(res.out.read_text().split("\n")), strict=True))

    for d, v in _single(docs, "PHONE_NUMBER"):  # mask: same length, every character masked
        assert out[d["text"]] == d["template"].format(v="*" * len(v))
    tokens: dict[str, set[str]] = {}
    for d, v in _single(docs, "EMAIL_ADDRESS"):  # hash: keyed, deterministic, never the value
        tok = hash_token(v, "EMAIL_ADDRESS", key)
        assert re.fullmatch(r"<EMAIL_ADDRESS_[0-9a-f]{16}>", tok) and v not in tok
        assert out[d["text"]] == d["template"].format(v=tok)
        tokens.setdefault(v, set()).add(tok)
    assert any(len(_) == 1 for _ in tokens.values())  # the repeated email: one token for both documents
    counts = Counter(v for _, v in _single(docs, "EMAIL_ADDRESS"))
    assert max(counts.values()) == 2
    assert len({t for ts in tokens.values() for t in ts}) == len(tokens)  # distinct values, distinct tokens
    for d, _v in _single(docs, "US_SSN"):  # redact: deleted
        assert out[d["text"]] == d["template"].format(v="")
    for d, _v in _single(docs, "IP_ADDRESS"):  # keep: left as is, still counted
        assert out[d["text"]] == d["text"]
    assert res.counts["IP_ADDRESS"] == len(_planted(docs, "IP_ADDRESS"))
    rec = res.record
    assert rec["operators"]["EMAIL_ADDRESS"]["operator"] == "hash"
    assert "fingerprint" in rec["operators"]["EMAIL_ADDRESS"]["key"] and key.hex() not in json.dumps(rec)

    again = scrub_corpus(src, tmp_path / "b.txt", operators=ops, hash_key=key, scanner=scanner, force=True)
    assert again.out.read_bytes() == res.out.read_bytes()
    ephemeral = scrub_corpus(src, tmp_path / "c.txt", operators=ops, scanner=scanner, force=True)
    assert ephemeral.out.read_bytes() != res.out.read_bytes()
    assert rec["operators"]["EMAIL_ADDRESS"]["key"] != ephemeral.record["operators"]["EMAIL_ADDRESS"]["key"]


def test_hash_token_is_keyed_and_normalized() -> None:
    k1, k2 = b"k" * 32, b"j" * 32
    assert hash_token("415-732-1234", "PHONE_NUMBER", k1) == hash_token("(415) 732 1234", "PHONE_NUMBER", k1)
    assert hash_token("415-732-1234", "PHONE_NUMBER", k1) != hash_token("415-732-1234", "PHONE_NUMBER", k2)
    assert hash_token("415-732-1234", "PHONE_NUMBER", k1) != hash_token("415-732-1235", "PHONE_NUMBER", k1)


# --- formats ---------------------------------------------------------------------------------------------


def test_jsonl_keeps_fields_and_untouched_lines(tmp_path, docs, scanner) -> None:
    src = tmp_path / "corpus.jsonl"
    # compact separators: a re-serialized line would differ from its original
    raw_lines = [json.dumps({"id": i, "text": d["text"], "member": True}, separators=(",", ":")) + "\n"
                 for i, d in enumerate(docs)]
    src.write_text("".join(raw_lines), encoding="utf-8")
    res = scrub_corpus(src, tmp_path / "out.jsonl", scanner=scanner)
    out_lines = res.out.read_text(encoding="utf-8").splitlines(keepends=True)
    assert len(out_lines) == len(raw_lines)
    for d, before, after in zip(docs, raw_lines, out_lines, strict=True):
        obj = json.loads(after)
        assert set(obj) == {"id", "text", "member"} and obj["member"] is True
        if not d["planted"]:
            assert after == before
        for etype, v in d["planted"]:
            if etype in STRONG:
                assert v not in obj["text"]


def test_csv_keeps_columns_and_clean_texts(tmp_path, docs, scanner) -> None:
    src = tmp_path / "corpus.csv"
    with src.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["source", "text"])
        w.writeheader()
        w.writerows({"source": f"s{i}", "text": d["text"]} for i, d in enumerate(docs))
    res = scrub_corpus(src, tmp_path / "out.csv", scanner=scanner)
    with res.out.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        assert reader.fieldnames == ["source", "text"]
        rows = list(reader)
    assert [r["source"] for r in rows] == [f"s{i}" for i in range(len(docs))]
    for d, row in zip(docs, rows, strict=True):
        if not d["planted"]:
            assert row["text"] == d["text"]
        for etype, v in d["planted"]:
            if etype in STRONG:
                assert v not in row["text"]
    assert res.record["input"]["format"] == "csv"


# --- command line ----------------------------------------------------------------------------------------


def _cli(argv: list[str], capsys) -> tuple[int, str, str]:
    return run_cli(argv, capsys)


def test_cli_scrub_prints_counts_and_no_value(tmp_path, docs, capsys) -> None:
    src = tmp_path / "corpus.txt"
    _write_txt(src, docs)
    dest = tmp_path / "scrubbed.txt"
    code, out, err = _cli(["mitigate", "scrub", str(src), "--out", str(dest),
                           "--operator", "IP_ADDRESS=mask", "--entities", "EMAIL_ADDRESS,IP_ADDRESS"], capsys)
    assert code == 0, err
    rec = json.loads((tmp_path / RECORD_FILE).read_text())
    assert rec["counts"] == {"EMAIL_ADDRESS": len(_planted(docs, "EMAIL_ADDRESS")),
                             "IP_ADDRESS": len(_planted(docs, "IP_ADDRESS"))}
    assert re.search(rf"EMAIL_ADDRESS\s+│?\s*{rec['counts']['EMAIL_ADDRESS']}\b", out)
    assert re.search(r"IP_ADDRESS\s+│?\s*\d+\s+│?\s*mask", out)
    text = dest.read_text()
    for v in _planted(docs):
        assert v not in out and v not in err
    for v in _planted(docs, "EMAIL_ADDRESS") + _planted(docs, "IP_ADDRESS"):
        assert v not in text
    # not among --entities: left alone
    assert all(v in text for t in ("US_SSN", "PHONE_NUMBER", "CREDIT_CARD") for v in _planted(docs, t))


@pytest.mark.parametrize(
    "case, expect",
    [
        ("missing corpus", "not found"),
        ("unknown entity", "PERSON"),
        ("bad operator", "valid: replace, mask, hash, redact, keep"),
        ("bad default operator", "valid: replace, mask, hash, redact, keep"),
        ("malformed operator", "ENTITY=OPERATOR"),
        ("operator for unscanned entity", "not scanned"),
        ("output exists", "--force"),
        ("output is input", "is the corpus itself"),
    ],
)
def test_cli_bad_input_is_one_line_exit_2(tmp_path, capsys, case, expect) -> None:
    src = tmp_path / "corpus.txt"
    src.write_text("Please write to someone@example.com about it.\nNothing here.\n")
    dest = tmp_path / "out.txt"
    args = {
        "missing corpus": [str(tmp_path / "nope.txt"), "--out", str(dest)],
        "unknown entity": [str(src), "--out", str(dest), "--entities", "FOO_BAR"],
        "bad operator": [str(src), "--out", str(dest), "--operator", "PHONE_NUMBER=shred"],
        "bad default operator": [str(src), "--out", str(dest), "--default-operator", "shred"],
        "malformed operator": [str(src), "--out", str(dest), "--operator", "PHONE_NUMBER"],
        "operator for unscanned entity": [str(src), "--out", str(dest), "--entities", "EMAIL_ADDRESS",
                                          "--operator", "PHONE_NUMBER=mask"],
        "output exists": [str(src), "--out", str(dest)],
        "output is input": [str(src), "--out", str(src), "--force"],
    }[case]
    if case == "output exists":
        dest.write_text("old\n")
    before = src.read_bytes()
    code, _, err = _cli(["mitigate", "scrub", *args], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("auditlm: error:") and expect in lines[0], err
    assert "someone@example.com" not in err
    assert src.read_bytes() == before
    assert not (tmp_path / RECORD_FILE).exists()
    if case != "output exists":
        assert not dest.exists()
    else:
        assert dest.read_text() == "old\n"


def test_cli_hash_key_file(tmp_path, capsys) -> None:
    """``--hash-key`` (an auditlm key file: hex) keys the hash operator; a key that is not hex is exit 2."""
    src = tmp_path / "corpus.txt"
    email = "dana.whitfield@example.org"
    src.write_text(f"Please write to {email} about the invoice.\n")
    key = bytes(range(100, 132))
    (tmp_path / "k.key").write_text(key.hex() + "\n")
    (tmp_path / "bad.key").write_text("not hex\n")
    code, _, err = _cli(["mitigate", "scrub", str(src), "--out", str(tmp_path / "o.txt"), "--hash-key",
                         str(tmp_path / "bad.key"), "--default-operator", "hash"], capsys)
    assert code == 2 and "not hex" in err and not (tmp_path / "o.txt").exists()
    code, _, err = _cli(["mitigate", "scrub", str(src), "--out", str(tmp_path / "o.txt"), "--hash-key",
                         str(tmp_path / "k.key"), "--default-operator", "hash"], capsys)
    assert code == 0, err
    assert (tmp_path / "o.txt").read_text() == (
        f"Please write to {hash_token(email, 'EMAIL_ADDRESS', key)} about the invoice.\n")
