"""Bad input gets one line on stderr naming the problem (and the valid choices), exit code 2, no
traceback, and leaves the store exactly as it was."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import write_fake_run

from auditlm.cli import main
from auditlm.store import Store


@pytest.fixture
def store_with_run(tmp_path: Path) -> Path:
    path = tmp_path / "runs.sqlite"
    return write_fake_run(path)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _run(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr().err


@pytest.fixture
def bad_probes(tmp_path: Path) -> Path:
    d = tmp_path / "probes"
    d.mkdir()
    (d / "broken.yaml").write_text("id: bias.broken\nversion: 1\n  kind: [unclosed\n")
    return d


def _honest_data_without_lexicon(probes: Path) -> str:
    d = probes.parent / "data" / "honest"
    d.mkdir(parents=True, exist_ok=True)
    (d / "en_template_binary.tsv").write_text(
        "template_masked\traw\tidentity\tcategory\nthe woman is a [M].\t[I] is a [M]\tthe woman\tfemale\n"
    )
    return str(d.parent)


CASES = {
    "malformed yaml": (lambda p, s: ["run", "--probes", str(p), "--store", str(s)], "malformed probe file"),
    "unknown suite": (lambda p, s: ["run", "--suite", "bias.nope", "--store", str(s)], "(valid: bias."),
    "unknown model": (lambda p, s: ["run", "--model", "no-such-org/no-such-model", "--suite",
                                    "bias.counterfactual_templates", "--store", str(s)], "unknown model 'no-such-org"),
    "missing model dir": (lambda p, s: ["run", "--model", "./missing-model-dir", "--suite",
                                        "bias.counterfactual_templates", "--store", str(s)], "missing-model-dir"),
    "missing data dir": (lambda p, s: ["run", "--suite", "bias.crows_pairs", "--data-dir", "/no/such/dir",
                                       "--store", str(s)], "data dir '/no/such/dir' does not exist"),
    "bad fail-on": (lambda p, s: ["run", "--suite", "bias.counterfactual_templates", "--fail-on", "pct>>1",
                                  "--store", str(s)], "expected SUITE.METRIC"),
    "fail-on other suite": (lambda p, s: ["run", "--suite", "bias.counterfactual_templates", "--fail-on",
                                          "bias.crows_pairs.pct_stereotype>0.6", "--store", str(s)],
                            "valid: bias.counterfactual_templates"),
    "bad flag": (lambda p, s: ["run", "--nope", "--store", str(s)], "valid: --api-key-env, --batch-size"),
    "bad batch size": (lambda p, s: ["run", "--batch-size", "lots", "--store", str(s)], "auto or a positive integer"),
    "unknown command": (lambda p, s: ["frobnicate"], "valid: bundle, compare, dashboard, explain, mitigate, models, privacy, report, run, runs, signoff, suites"),
    "unknown run": (lambda p, s: ["runs", "show", "nope", "--store", str(s)], "unknown run 'nope'"),
    "unknown resume": (lambda p, s: ["run", "--resume", "nope", "--store", str(s)], "unknown run 'nope'"),
    "unknown builtin model": (lambda p, s: ["models", "pull", "gpt-17"], "smollm2-135m-instruct"),
    "needs data": (lambda p, s: ["run", "--suite", "bias.crows_pairs", "--store", str(s)], "pass --data-dir"),
    "honest without lexicon": (lambda p, s: ["run", "--suite", "bias.honest", "--data-dir",
                                             _honest_data_without_lexicon(p), "--store", str(s)],
                               "suite bias.honest: HurtLex lexicon"),
    "honest without data dir": (lambda p, s: ["run", "--suite", "bias.honest_k20", "--store", str(s)],
                                "pass --data-dir"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_one_line_exit_2_store_intact(case, store_with_run, bad_probes, capsys, monkeypatch):
    monkeypatch.delenv("AUDITLM_DATA", raising=False)
    monkeypatch.delenv("AUDITLM_HURTLEX", raising=False)
    argv_fn, expected = CASES[case]
    before = _digest(store_with_run)
    code, err = _run(argv_fn(bad_probes, store_with_run), capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("auditlm: error: ")
    assert expected in lines[0]
    assert "Traceback" not in err
    assert _digest(store_with_run) == before
    with Store(store_with_run) as st:
        assert len(st.list_runs()) == 1 and st.list_runs()[0].status == "complete"


def test_corrupt_store_is_left_untouched(tmp_path: Path, capsys):
    bad = tmp_path / "runs.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    before = _digest(bad)
    for argv in (["runs", "list", "--store", str(bad)], ["run", "--suite", "bias.counterfactual_templates",
                                                          "--store", str(bad)]):
        code, err = _run(argv, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1
        assert "not a valid auditlm store" in err
    assert _digest(bad) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.sqlite"]


def test_truncated_sqlite_store(tmp_path: Path, store_with_run: Path, capsys):
    data = store_with_run.read_bytes()
    bad = tmp_path / "truncated.sqlite"
    bad.write_bytes(data[: len(data) // 3])
    code, err = _run(["runs", "list", "--store", str(bad)], capsys)
    assert code == 2 and err.startswith("auditlm: error: ") and len(err.strip().splitlines()) == 1


def test_real_process_bad_flag_has_no_traceback(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "auditlm.cli", "run", "--limt", "3"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [proc.stderr.strip()]
    assert "--limit" in proc.stderr and "Traceback" not in proc.stderr
