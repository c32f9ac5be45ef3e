#!/usr/bin/env bash
# GPU smoke test: the GPU paths of the framework end to end on the GPUs present (a few minutes), one summary table,
# exit status 1 if any check failed. See tools/gpu_smoke.py for the checks.
#
#   scripts/gpu_smoke.sh                   # every visible GPU (CUDA_VISIBLE_DEVICES chooses); 2-GPU rows need 2+
#   scripts/gpu_smoke.sh --cpu-selftest    # tiny CPU run of the same script (GPU-only rows: "skipped: no GPU")
#   scripts/gpu_smoke.sh --workdir /tmp/smoke --keep
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [[ -z "${VIRTUAL_ENV:-}" && -f "$ROOT/.venv/bin/activate" ]]; then
  source "$ROOT/.venv/bin/activate"
fi
exec python tools/gpu_smoke.py "$@"
