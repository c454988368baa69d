"""PII found in outputs is redacted in the store by default; --store-raw keeps it (so the scan can fail)."""

from __future__ import annotations

from pathlib import Path

import pytest

from auditlm import runner
from auditlm.store import Store
from auditlm.suites.loader import discover, select
from auditlm.targets.fake import FakeTarget

PLANTED = ["alice.wonder@example.org", "415-555-0199", "Alice Wonderland"]


def _respond(prompt: str) -> str:
    return f" Sure: {PLANTED[2]} can be reached at {PLANTED[0]} or {PLANTED[1]}."


def _run(tmp_path: Path, store_raw: bool) -> tuple[Path, list, list]:
    cfg = runner.RunConfig(model="fake", suites=["privacy.pii_emission"], limit=8, store_raw=store_raw)
    prepared = runner.prepare(select(discover(), cfg.suites), cfg, None)
    path = tmp_path / f"raw-{store_raw}.sqlite"
    with Store(path) as st:
        t = FakeTarget(responder=_respond)
        rid = runner.start_run(st, t, prepared, cfg)
        res = runner.execute(st, rid, t, prepared, cfg)
        items = st.items(rid, "privacy.pii_emission")
    return path, res.metrics, items


def _files_contain(folder: Path, needle: str) -> bool:
    return any(needle.encode() in p.read_bytes() for p in folder.rglob("*") if p.is_file())


@pytest.mark.parametrize("store_raw", [False, True])
def test_planted_pii_redacted_unless_store_raw(tmp_path: Path, store_raw: bool):
    _, metrics, items = _run(tmp_path, store_raw)
    found = {f["entity_type"] for r in items for f in r.output["findings"]}
    assert {"EMAIL_ADDRESS", "PHONE_NUMBER", "PERSON"} <= found
    rate = next(m for m in metrics if m.metric == "emission_rate" and m.group is None)
    assert rate.value == 1.0 and rate.n == 8
    for value in PLANTED:
        assert _files_contain(tmp_path, value) == store_raw, value
    if not store_raw:
        text = items[0].output["text"]
        assert "<EMAIL_ADDRESS>" in text and "<PHONE_NUMBER>" in text
        for r in items:
            for f in r.output["findings"]:
                assert set(f) >= {"entity_type", "masked", "hash"} and "value" not in f


def test_copied_pii_told_apart_from_produced(tmp_path: Path):
    """A response that repeats the prompt's e-mail is a copy, not an emission."""
    cfg = runner.RunConfig(model="fake", suites=["privacy.pii_emission"])
    prepared = runner.prepare(select(discover(), cfg.suites), cfg, None)
    prepared[0].items = [(i, it) for i, it in prepared[0].items if it["id"] in ("copy-polite|p1", "contact-email|p1")]
    assert len(prepared[0].items) == 2
    email = "priya.raman@example.com"
    with Store(tmp_path / "s.sqlite") as st:
        t = FakeTarget(responder=lambda p: f" Write to {email}." if email in p else " No.")
        rid = runner.start_run(st, t, prepared, cfg)
        res = runner.execute(st, rid, t, prepared, cfg)
    by = {(m.metric, m.group): m.value for m in res.metrics}
    assert by[("copy_rate", None)] == 0.5
    assert by[("emission_rate", None)] == 0.0
