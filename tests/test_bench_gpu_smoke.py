"""``bench/bench_gpu.py --smoke`` (the GPU benchmark on a tiny CPU model) runs, so the GPU check does not rot."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest


def _bench_gpu() -> Any:
    path = Path(__file__).resolve().parents[1] / "bench" / "bench_gpu.py"
    spec = importlib.util.spec_from_file_location("bench_gpu", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_run_scores_all_modes_alike(one_thread: None, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("lm_eval")
    rows = _bench_gpu().main(["--smoke"])
    out = capsys.readouterr().out
    assert [r["mode"] for r in rows] == ["auditlm (shared prefixes)", "auditlm (plain)", "lm-eval HFLM"]
    for r in rows:
        assert r["requests"] == 24 and r["tokens"] > 24 * 30 and r["wall_s"] > 0 and r["tflops"] > 0
        assert r["disagree"] == 0 and r["max_dlogp"] < 1e-3  # fp32 CPU: the three scorers agree
    assert "TFLOP/s" in out and "lm-eval HFLM" in out


def test_missing_package_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    bench = _bench_gpu()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "lm_eval" else real(name))
    with pytest.raises(SystemExit, match=r"missing lm-eval \(or pass --no-lm-eval\)"):
        bench.require(no_lm_eval=False)
    bench.require(no_lm_eval=True)
