"""Evidence bundles and sign-offs: every listed file, a MANIFEST whose hashes verify, the reproduce command, sign-offs
stored with the run and shown in the report, bad inputs exit 2 with nothing stored, and no raw PII in a privacy
run's report or bundle unless the run (and the bundle) were --store-raw."""

from __future__ import annotations

import hashlib
import io
import json
import shlex
import sqlite3
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest

from auditlm import runner
from auditlm.report import build_report
from auditlm.report.bundle import FILES, MANIFEST, reproduce_command, write_bundle
from auditlm.report.html import render_html
from auditlm.report.markdown import render_markdown
from auditlm.report.signoff import report_digest
from auditlm.store import MIGRATIONS, SCHEMA_VERSION, Store
from auditlm.suites.loader import discover, select
from auditlm.targets.fake import FakeTarget

SUITE = "bias.counterfactual_templates"
#: What the fake model says in the privacy run (fictitious values the detector finds).
PLANTED = ["alice.wonder@example.org", "415-555-0199", "Alice Wonderland"]


def _cli(argv: list[str]) -> tuple[int, str, str]:
    from auditlm.cli import main

    o, e = io.StringIO(), io.StringIO()
    code = 0
    with redirect_stdout(o), redirect_stderr(e):
        try:
            main(argv)
        except SystemExit as x:
            code = x.code
    return code, o.getvalue(), e.getvalue()


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def _dump(store: Path) -> str:
    """Everything stored except sign-offs, as text."""
    con = sqlite3.connect(f"file:{store}?mode=ro", uri=True)
    try:
        return json.dumps({t: con.execute(f"SELECT * FROM {t} ORDER BY rowid").fetchall()
                           for t in ("runs", "run_suites", "items", "metrics", "meta")}, default=str)
    finally:
        con.close()


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir: Path, tmp_path_factory) -> tuple[Path, str]:
    store = tmp_path_factory.mktemp("bundle") / "runs.sqlite"
    code, out, err = _cli(["run", "--model", str(tiny_model_dir), "--suite", SUITE, "--limit", "8", "--seed", "3",
                           "--store", str(store), "--json"])
    assert code == 0, err
    return store, json.loads(out)["run_id"]


def test_bundle_has_every_file_and_a_manifest_that_verifies(tiny_run, tiny_model_dir: Path, tmp_path: Path):
    store, rid = tiny_run
    out = tmp_path / "bundle"
    code, stdout, err = _cli(["bundle", rid, "--out", str(out), "--store", str(store)])
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in out.iterdir())
    assert names == sorted([*FILES, MANIFEST])
    lines = (out / MANIFEST).read_text().splitlines()
    listed = dict(reversed(line.split("  ", 1)) for line in lines)
    assert sorted(listed) == sorted(FILES)
    for rel, digest in listed.items():
        assert _sha(out / rel) == digest, rel
    assert _sha(out / MANIFEST) in stdout
    report = json.loads((out / "report.json").read_text())
    assert report["schema"] == "auditlm.report/1" and report["run"]["run_id"] == rid
    assert (out / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert "## Bias, Risks, and Limitations" in (out / "model_card.md").read_text()
    run = json.loads((out / "run.json").read_text())
    assert run["schema"] == "auditlm.bundle.run/1" and run["items_withheld"] is False
    with Store(store, readonly=True) as st:
        assert len(run["items"][SUITE]) == len(st.items(rid, SUITE)) == 8
        assert len(run["metrics"]) == len(st.metrics(rid))
    hashes = json.loads((out / "hashes.json").read_text())
    weights = {f["path"]: f["sha256"] for f in hashes["model"]["files"]}
    assert weights["model.safetensors"] == _sha(tiny_model_dir / "model.safetensors")
    assert "config.json" in weights
    probe = next(d for d in hashes["data_files"] if d["source"] == "suite")
    assert probe["matches"] is True and probe["now_sha256"] == probe["sha256"]
    env = json.loads((out / "environment.json").read_text())
    assert {"python", "torch", "transformers", "auditlm", "device", "dtype"} <= set(env)
    assert env["device"] == "cpu" and env["dtype"] == "float32" and env["torch"]
    cmd = shlex.split((out / "reproduce.sh").read_text().splitlines()[-1])
    assert cmd[:4] == ["auditlm", "run", "--model", str(tiny_model_dir)]
    assert "--suite" in cmd and SUITE in cmd and cmd[cmd.index("--limit") + 1] == "8"
    assert cmd[cmd.index("--seed") + 1] == "3"
    # a second bundle into the same folder is refused
    code, _, err = _cli(["bundle", rid, "--out", str(out), "--store", str(store)])
    assert code == 2 and "already exists and is not empty" in err


def test_reproduce_command_from_a_stored_config():
    cfg = runner.RunConfig(model="m", suites=["bias.crows_pairs"], seed=7, limit=50, data_dir="D",
                           where={"bias_type": ["gender", "race"]}, dtype="bfloat16", store_raw=True,
                           inputs={"corpus": "train.txt"}).to_dict()
    assert shlex.join(reproduce_command(cfg)) == (
        "auditlm run --model m --suite bias.crows_pairs --seed 7 --limit 50 --where bias_type=gender,race "
        "--data-dir D --dtype bfloat16 --corpus train.txt --store-raw")


def test_signoff_is_stored_and_shown_in_the_report(tiny_run, tmp_path: Path):
    store, rid = tiny_run
    out = tmp_path / "b"
    assert _cli(["bundle", rid, "--out", str(out), "--store", str(store)])[0] == 0
    before = _dump(store)
    code, stdout, err = _cli(["signoff", rid, "--reviewer", "Grace H", "--decision", "conditional", "--note",
                              "ship after the religion axis is re-run at full size", "--bundle", str(out),
                              "--store", str(store)])
    assert code == 0, err
    code, _, err = _cli(["signoff", rid, "--reviewer", "Alan T", "--decision", "approve", "--store", str(store)])
    assert code == 0, err
    assert _dump(store) == before  # nothing but the sign-offs changed
    with Store(store, readonly=True) as st:
        rows = st.signoffs(rid)
        doc = build_report(st, rid)
        fresh = report_digest(build_report(st, rid, read_data=False))
    assert [r["reviewer"] for r in rows] == ["Grace H", "Alan T"]  # oldest first
    assert set(rows[0]) == {"reviewer", "decision", "note", "bundle_sha256", "created_at"}
    assert rows[0]["decision"] == "conditional" and rows[0]["bundle_sha256"] == _sha(out / MANIFEST)
    assert rows[0]["bundle_sha256"] in stdout
    # without --bundle: the digest of the report JSON (stable for a stored run, sign-offs aside)
    assert rows[1]["bundle_sha256"] == fresh
    assert doc["signoffs"] == rows
    md, page = render_markdown(doc), render_html(doc)
    for text in (md, page):
        assert "Grace H" in text and "conditional" in text and rows[0]["bundle_sha256"] in text
        assert "ship after the religion axis" in text


def test_signoff_bad_inputs_exit_2_and_store_nothing(tiny_run, tmp_path: Path):
    store, rid = tiny_run
    out = tmp_path / "b"
    assert _cli(["bundle", rid, "--out", str(out), "--store", str(store)])[0] == 0
    with Store(store, readonly=True) as st:
        n = len(st.signoffs(rid))
    before = _dump(store)
    tampered = tmp_path / "t"
    assert _cli(["bundle", rid, "--out", str(tampered), "--store", str(store)])[0] == 0
    (tampered / "report.md").write_text("# nothing to see\n")
    cases = [
        (["signoff", rid, "--reviewer", "x", "--decision", "maybe"], "valid: approve, reject, conditional"),
        (["signoff", "no-such-run", "--reviewer", "x", "--decision", "approve"], "unknown run 'no-such-run'"),
        (["signoff", rid, "--reviewer", "  ", "--decision", "approve"], "needs a reviewer name"),
        (["signoff", rid, "--reviewer", "x", "--decision", "approve", "--bundle", str(tampered)],
         "report.md does not match its sha256"),
        (["signoff", rid, "--reviewer", "x", "--decision", "approve", "--bundle", str(tmp_path)],
         "is not an auditlm bundle"),
        (["signoff", rid, "--decision", "approve"], "--reviewer"),
    ]
    for argv, needle in cases:
        code, _, err = _cli([*argv, "--store", str(store)])
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, (argv, err)
    with Store(store, readonly=True) as st:
        assert len(st.signoffs(rid)) == n
    assert _dump(store) == before


def test_signoffs_migration_and_readers(tmp_path: Path):
    path = tmp_path / "six.sqlite"
    con = sqlite3.connect(path)
    for i, m in enumerate(MIGRATIONS[:6]):
        con.executescript("BEGIN;" + m + f"PRAGMA user_version = {i + 1};COMMIT;")
    con.execute("INSERT INTO runs (run_id, created_at, status, model, model_info, config, seed, auditlm_version) "
                "VALUES ('r', '2026-01-01T00:00:00+00:00', 'complete', 'm', '{}', '{}', 0, '0')")
    con.commit()
    con.close()
    with Store(path, readonly=True) as st:  # a reader of schema 6 sees no sign-offs and migrates nothing
        assert st.signoffs("r") == []
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 6
    with Store(path) as st:
        assert st.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 7
        row = st.add_signoff("r", reviewer="R", decision="reject", note=None, bundle_sha256=None)
        with pytest.raises(Exception, match="valid: approve, reject, conditional"):
            st.add_signoff("r", reviewer="R", decision="yes", note=None, bundle_sha256=None)
        with pytest.raises(Exception, match="unknown run"):
            st.add_signoff("nope", reviewer="R", decision="approve", note=None, bundle_sha256=None)
    with Store(path, readonly=True) as st:
        assert st.signoffs("r") == [row]
    con = sqlite3.connect(path)
    with pytest.raises(sqlite3.IntegrityError):  # the table itself refuses other decisions
        con.execute("INSERT INTO signoffs VALUES ('r', 'x', 'maybe', NULL, NULL, 'now')")
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.commit()
    con.close()
    for ro in (True, False):
        with pytest.raises(Exception, match="newer than this auditlm"):
            Store(path, readonly=ro)


# --- PII: stored (redacted) values only ---------------------------------------------------------------------


def _respond(prompt: str) -> str:
    return f" Sure: {PLANTED[2]} can be reached at {PLANTED[0]} or {PLANTED[1]}."


def _privacy_run(folder: Path, store_raw: bool) -> tuple[Path, str]:
    cfg = runner.RunConfig(model="fake", suites=["privacy.pii_emission"], limit=8, store_raw=store_raw)
    prepared = runner.prepare(select(discover(), cfg.suites), cfg, None)
    path = folder / "runs.sqlite"
    with Store(path) as st:
        t = FakeTarget(responder=_respond)
        rid = runner.start_run(st, t, prepared, cfg)
        runner.execute(st, rid, t, prepared, cfg)
    return path, rid


def _holding(folder: Path, needles: list[str]) -> dict[str, list[str]]:
    files = [p for p in folder.rglob("*") if p.is_file()]
    return {n: [p.name for p in files if n.lower().encode() in p.read_bytes().lower()] for n in needles}


@pytest.mark.parametrize("store_raw", [False, True], ids=["redacted", "store_raw"])
def test_privacy_report_and_bundle_hold_no_raw_pii(tmp_path: Path, store_raw: bool):
    path, rid = _privacy_run(tmp_path, store_raw)
    out = tmp_path / "out"
    out.mkdir()
    with Store(path, readonly=True) as st:
        doc = build_report(st, rid)
        (out / "report.md").write_text(render_markdown(doc))
        (out / "report.html").write_text(render_html(doc))
        (out / "report.json").write_text(json.dumps(doc))
        write_bundle(st, rid, out / "bundle")  # without --store-raw
    v = doc["summary"][0]
    assert v["suite"] == "privacy.pii_emission" and v["label"] == "leakage detected"
    worst = doc["suites"][0]["worst_items"]
    assert worst and all(w["output"] for w in worst)
    found = _holding(out, PLANTED)
    if not store_raw:
        assert found == {n: [] for n in PLANTED}
        assert "<EMAIL_ADDRESS>" in worst[0]["output"]
        return
    # a --store-raw run: the report shows the stored (raw) values and says so at the top ...
    assert doc["raw_values"] is True
    assert all(set(found[n]) == {"report.md", "report.html", "report.json"} for n in PLANTED), found
    assert "RAW VALUES" in render_markdown(doc).split("## Summary")[0]
    assert "RAW VALUES" in render_html(doc).split("<h2>Summary")[0]
    # ... and its bundle withholds the items unless --store-raw is given again
    run = json.loads((out / "bundle" / "run.json").read_text())
    assert run["items_withheld"] is True and run["items"]["privacy.pii_emission"] == {"withheld": 8}
    raw_bundle = tmp_path / "raw-bundle"
    code, _, err = _cli(["bundle", rid, "--out", str(raw_bundle), "--store-raw", "--store", str(path)])
    assert code == 0, err
    assert all(_holding(raw_bundle, PLANTED)[n] for n in PLANTED)
