"""Exit codes: a bug is exit 3 with one line naming its crash log (never 1, which only a failed gate gives);
an interruption outside any run is 130 with one line."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from auditlm import runner
from auditlm.cli import main
from auditlm.store import Store
from auditlm.suites.loader import discover, select
from auditlm.targets.fake import FakeTarget

SECRET_PHONE, SECRET_MAIL = "415-555-0123", "alice.smith@example.com"


@pytest.fixture
def store(tmp_path: Path) -> Path:
    cfg = runner.RunConfig(model="fake", suites=["bias.counterfactual_templates"], limit=2, chunk_size=2)
    prepared = runner.prepare(select(discover(), cfg.suites), cfg, None)
    path = tmp_path / "runs.sqlite"
    with Store(path) as st:
        rid = runner.start_run(st, FakeTarget(), prepared, cfg)
        runner.execute(st, rid, FakeTarget(), prepared, cfg)
    return path


def _exit(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code, capsys.readouterr().err


def test_internal_error_is_exit_3_with_a_crash_log(tmp_path: Path, store: Path, monkeypatch, capsys):
    home = tmp_path / "home"
    monkeypatch.setenv("AUDITLM_HOME", str(home))

    def broken(self):
        raise RuntimeError(f"index out of step for {SECRET_MAIL} (call {SECRET_PHONE})")

    monkeypatch.setattr(Store, "list_runs", broken)
    before = store.read_bytes()
    code, err = _exit(["runs", "list", "--store", str(store)], capsys)
    assert code == 3
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    line = lines[0]
    assert line.startswith("auditlm: internal error: RuntimeError: index out of step for ")
    assert SECRET_MAIL not in line and SECRET_PHONE not in line  # redacted like a stored error
    logs = list((home / "logs").glob("crash-*.log"))
    assert len(logs) == 1
    log = logs[0]
    assert line.endswith(f"(traceback in {log})")
    assert log.name.startswith("crash-") and log.name.endswith(f"-{os.getpid()}.log")
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    text = log.read_text()
    assert "Traceback (most recent call last):" in text and "in broken" in text and "runs.py" in text
    assert "RuntimeError: index out of step for" in text
    assert SECRET_MAIL not in text and SECRET_PHONE not in text
    assert "command: auditlm runs\n" in text and str(store) not in text  # arguments may name private files
    assert store.read_bytes() == before


def test_internal_error_without_a_writable_home_still_one_line(tmp_path: Path, store: Path, monkeypatch, capsys):
    blocker = tmp_path / "home"
    blocker.write_text("")  # AUDITLM_HOME is a file: no crash log can be written
    monkeypatch.setenv("AUDITLM_HOME", str(blocker))
    monkeypatch.setattr(Store, "list_runs", lambda self: 1 / 0)
    code, err = _exit(["runs", "list", "--store", str(store)], capsys)
    assert code == 3
    (line,) = err.strip().splitlines()
    assert line.startswith("auditlm: internal error: ZeroDivisionError: division by zero (no crash log: ")


def test_keyboard_interrupt_outside_a_run_is_130(store: Path, monkeypatch, capsys):
    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Store, "list_runs", interrupted)
    code, err = _exit(["runs", "list", "--store", str(store)], capsys)
    assert code == 130
    assert err.strip().splitlines() == ["auditlm: interrupted (no run had started)"]


def test_failed_gate_is_the_only_exit_1(tmp_path: Path, monkeypatch, capsys):
    """A gate that fails exits 1; the same command with a crash in it exits 3."""
    monkeypatch.setattr("auditlm.targets.registry.resolve", lambda *a, **k: FakeTarget())
    monkeypatch.setattr("auditlm.targets.registry.check_model", lambda *a, **k: None)
    monkeypatch.setenv("AUDITLM_HOME", str(tmp_path / "home"))
    argv = ["run", "--model", "fake", "--suite", "bias.counterfactual_templates", "--limit", "4",
            "--store", str(tmp_path / "runs.sqlite"), "--fail-on", "bias.counterfactual_templates.negativity_spread>=0"]
    code, err = _exit(argv, capsys)
    assert code == 1, err

    def crash(*a, **k):
        raise ValueError("not a gate")

    monkeypatch.setattr("auditlm.runner.execute", crash)
    code, err = _exit(argv, capsys)
    assert code == 3 and err.strip().splitlines()[-1].startswith("auditlm: internal error: ValueError: not a gate")


def test_broken_pipe_is_quiet(tmp_path: Path, store: Path):
    """``auditlm runs list | head -0``: stdout's reader is gone; exit 141, no traceback, no crash log."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "AUDITLM_HOME": str(tmp_path / "home")}
    script = ("import os, sys\n"
              "r, w = os.pipe(); os.close(r); os.dup2(w, 1)  # a pipe nobody reads any more\n"
              "from auditlm.cli import main\n"
              "main(sys.argv[1:])\n")
    proc = subprocess.run([sys.executable, "-c", script, "runs", "list", "--store", str(store), "--json"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 141, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert not (tmp_path / "home" / "logs").exists()
