#!/usr/bin/env bash
# The GPU check (issue 12): environment, the gpu tests, and the log-likelihood benchmark on random-weight
# Llama-3.2-1B and Llama-3.1-8B shapes. Built for one H200 without network: nothing is downloaded, models and
# tokenizer are made on the machine. Needs torch with CUDA, transformers, tokenizers and pytest preinstalled
# (lm-eval too, for the HFLM comparison; without it the benchmark drops that scorer and says so).
#
#   bash bench/gpu_check.sh          # from the repo root; under 8 minutes (every step has a timeout)
#
# Log: $OUT/gpu_check.log when $OUT is set, else ${TMPDIR:-/tmp}/gpu_check.log. Data: $AUDITLM_DATA, else ./shared/data
# or ../shared/data if present (CrowS-Pairs for the bf16 test; synthetic pairs otherwise).
# Exit status: 0 all passed; 1 a gpu test failed; 2 a requirement is missing; 3 only a benchmark step failed.
# GPU_CHECK_DRY=1: a CPU dry run of this script (tests with AUDITLM_GPU_TEST_DEVICE=cpu, benchmark --smoke).
# Knobs: PYTHON, GPU_CHECK_ITEMS_1B (default 1000), GPU_CHECK_ITEMS_8B (default 400), AUDITLM_GPU_TEST_PAIRS.
set -u
cd "$(dirname "$0")/.." || exit 2
LOG="${OUT:+$OUT/gpu_check.log}"
LOG="${LOG:-${TMPDIR:-/tmp}/gpu_check.log}"
mkdir -p "$(dirname "$LOG")"
: >"$LOG"
exec > >(tee -a "$LOG") 2>&1

PY="${PYTHON:-$(command -v python || command -v python3)}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
if [ -z "${AUDITLM_DATA:-}" ]; then
  for d in shared/data ../shared/data; do [ -d "$d/crows_pairs" ] && export AUDITLM_DATA="$PWD/$d" && break; done
fi
start=$(date +%s)
step() { echo; echo "=== $* ($(($(date +%s) - start)) s)"; }

step "environment"
date -u
timeout 30 nvidia-smi || echo "nvidia-smi: not available"
if ! timeout 120 "$PY" - <<'EOF'
import importlib.util, sys
need = {"torch": "torch (with CUDA)", "transformers": "transformers", "tokenizers": "tokenizers", "pytest": "pytest"}
missing = [label for mod, label in need.items() if importlib.util.find_spec(mod) is None]
if missing:
    sys.exit(f"gpu_check: missing {', '.join(missing)}; preinstall them (this machine has no network)")
import torch, transformers, tokenizers
print(f"python {sys.version.split()[0]}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"transformers {transformers.__version__}, tokenizers {tokenizers.__version__}")
try:
    import lm_eval
    print(f"lm-eval {getattr(lm_eval, '__version__', '?')}")
except ImportError:
    print("lm-eval: NOT INSTALLED (the benchmark runs without the HFLM scorer)")
import os
if not torch.cuda.is_available() and os.environ.get("GPU_CHECK_DRY") == "1":
    sys.exit(print("GPU_CHECK_DRY=1: no CUDA, dry run on the CPU"))
if not torch.cuda.is_available():
    sys.exit("gpu_check: torch.cuda.is_available() is False (a CPU-only torch, or no visible GPU)")
p = torch.cuda.get_device_properties(0)
print(f"device 0: {p.name}, {p.total_memory / 2**30:.0f} GiB, capability {p.major}.{p.minor}, "
      f"{torch.cuda.device_count()} visible")
EOF
then
  echo "gpu_check: requirements not met (see above)"; exit 2
fi
LM_EVAL_FLAG=""
"$PY" -c "import lm_eval" 2>/dev/null || LM_EVAL_FLAG="--no-lm-eval"
BENCH_1B=(--model 1b --items "${GPU_CHECK_ITEMS_1B:-1000}")
BENCH_8B=(--model 8b --items "${GPU_CHECK_ITEMS_8B:-400}")
if [ "${GPU_CHECK_DRY:-}" = 1 ]; then
  export AUDITLM_GPU_TEST_DEVICE=cpu; BENCH_1B=(--smoke); BENCH_8B=(--smoke)
fi
echo "AUDITLM_DATA=${AUDITLM_DATA:-<unset: synthetic CrowS-Pairs-shaped pairs>}"

step "gpu tests: pytest -m gpu tests/test_gpu.py"
timeout -k 10 170 "$PY" -m pytest -m gpu -q -s -rs -p no:cacheprovider tests/test_gpu.py
tests_rc=$?
[ "$tests_rc" -eq 124 ] && echo "gpu tests: TIMED OUT after 170 s"

bench_rc=0
step "benchmark: random-weight Llama-3.2-1B shape, bf16"
timeout -k 10 120 "$PY" bench/bench_gpu.py "${BENCH_1B[@]}" $LM_EVAL_FLAG \
  || { bench_rc=$?; echo "bench 1b: FAILED (rc $bench_rc)"; }
step "benchmark: random-weight Llama-3.1-8B shape, bf16"
timeout -k 10 150 "$PY" bench/bench_gpu.py "${BENCH_8B[@]}" $LM_EVAL_FLAG \
  || { bench_rc=$?; echo "bench 8b: FAILED (rc $bench_rc)"; }

step "done"
echo "gpu tests rc=$tests_rc, benchmark rc=$bench_rc; log: $LOG"
if [ "$tests_rc" -ne 0 ]; then exit 1; fi
if [ "$bench_rc" -ne 0 ]; then exit 3; fi
exit 0
