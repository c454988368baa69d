"""Default model load: GGUF conversion (cold) vs the safetensors cache (warm), measured in one run.

Usage: ``python bench/bench_model_load.py`` (uses a temporary AUDITLM_HOME; needs PyPI for the wheel).
"""

from __future__ import annotations

import os
import tempfile
import time


def main() -> None:
    with tempfile.TemporaryDirectory() as home:
        os.environ["AUDITLM_HOME"] = home
        from auditlm.targets.registry import DEFAULT_MODEL, resolve

        t0 = time.perf_counter()
        resolve(DEFAULT_MODEL)
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        resolve(DEFAULT_MODEL)
        warm = time.perf_counter() - t0
    print(f"cold (download + GGUF convert + cache): {cold:.2f} s")
    print(f"warm (from safetensors cache):          {warm:.2f} s")
    print(f"ratio cold/warm: {cold / warm:.1f}x")


if __name__ == "__main__":
    main()
