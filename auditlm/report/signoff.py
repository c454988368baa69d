"""Sign-off (``auditlm signoff RUN_ID --reviewer NAME --decision approve|reject|conditional --note TEXT``): a
reviewer's decision stored with the run (table ``signoffs``, schema 7: who, when, decision, note, and the sha256 of
the evidence the decision rests on), shown in every report and on the dashboard's Run page.

The evidence digest is the sha256 of the bundle's ``MANIFEST`` (``--bundle DIR``; every file is verified against
it first, so a changed bundle cannot be signed), else of the report JSON built now (canonical: sorted keys, no
whitespace, without its ``generated_at`` time and its ``signoffs``, so the same stored run gives the same digest).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from auditlm.errors import StoreError
from auditlm.store import DECISIONS


def report_digest(doc: dict[str, Any]) -> str:
    """sha256 of a report document's canonical JSON, leaving out when it was generated and its sign-offs."""
    body = {k: v for k, v in doc.items() if k not in ("generated_at", "signoffs")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                     ensure_ascii=False).encode("utf-8")).hexdigest()


def evidence_digest(store: Any, run_id: str, bundle: Path | None = None) -> str:
    """The digest a sign-off records: the verified bundle's MANIFEST sha256, else the report JSON's."""
    from auditlm.report.bundle import verify_manifest
    from auditlm.report.jsonreport import build_report

    if bundle is not None:
        run_json = bundle / "run.json"
        digest = verify_manifest(bundle)
        try:
            bundled = json.loads(run_json.read_text(encoding="utf-8"))["run"]["run_id"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StoreError(f"bundle '{bundle}': run.json is unreadable ({e})") from e
        if bundled != run_id:
            raise StoreError(f"bundle '{bundle}' is of run {bundled}, not {run_id}")
        return digest
    return report_digest(build_report(store, run_id, read_data=False))


def check_inputs(reviewer: str, decision: str) -> None:
    """A decision not in :data:`~auditlm.store.DECISIONS` or a blank reviewer is a one-line :class:`StoreError`
    naming the valid choices."""
    if decision not in DECISIONS:
        raise StoreError(f"unknown decision '{decision}' (valid: {', '.join(DECISIONS)})")
    if not reviewer or not reviewer.strip():
        raise StoreError("a sign-off needs a reviewer name (--reviewer NAME)")


def sign_off(store: Any, run_id: str, *, reviewer: str, decision: str, note: str | None,
             bundle: Path | None = None) -> dict[str, Any]:
    """Check the inputs, compute the evidence digest and store the sign-off (``store`` open for writing); returns
    the stored row. Bad input (:func:`check_inputs`, an unknown run, a bundle that does not verify or is another
    run's) is a one-line :class:`StoreError` and nothing is stored."""
    check_inputs(reviewer, decision)
    store.get_run(run_id)
    digest = evidence_digest(store, run_id, bundle)
    return store.add_signoff(run_id, reviewer=reviewer, decision=decision, note=note, bundle_sha256=digest)
