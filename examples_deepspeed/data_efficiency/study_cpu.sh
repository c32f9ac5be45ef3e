#!/usr/bin/env bash
# The data-efficiency study on CPU (issue 12): baseline 100/67/50 %, CL (vocab rarity + seqlen_truncate) 100 %,
# random-LTD 100 %, CL + random-LTD 100/50 %, and the 100 % baseline with two more seeds; each run trained with
# pretrain_gpt.py, evaluated on the whole held-out split (tools/eval_gpt.py) and on the offline zero-shot tasks;
# the report goes to docs/data_efficiency_study.md (+ .json, PNGs).  About 50 minutes on 2 idle cores.
#
#   bash examples_deepspeed/data_efficiency/study_cpu.sh                  # the whole study (resumable), with the
#                                                                         # LR sweep 0.0015,0.003,0.006 first
#   bash examples_deepspeed/data_efficiency/study_cpu.sh --tiny           # seconds-long check, report in STUDY_DIR
#   bash examples_deepspeed/data_efficiency/study_cpu.sh --cases baseline_100 cl_ltd_50
#   bash examples_deepspeed/data_efficiency/study_cpu.sh --report-only    # rewrite the report from finished runs
#   bash examples_deepspeed/data_efficiency/study_cpu.sh --lr-sweep 0.0015,0.003,0.006   # LR sweep first (lrsweep_<lr>:
#       the 100 % baseline at sweep_budget_fraction = 50 % of the budget per LR; report section "Choice of the peak
#       LR"); it may be added to an existing STUDY_DIR.  STUDY_ARGS (e.g. STUDY_ARGS="--lr-sweep 0.0015,0.003")
#       replaces the default sweep flags (STUDY_ARGS="" runs no sweep).
#
# STUDY_DIR (default runs/data_efficiency_study; runs/data_efficiency_study_tiny with --tiny) holds the data and
# the runs.  Interrupted (Ctrl-C, kill), it continues where it stopped when run again.  The corpus comes from the
# Debian packages linux-doc-6.1 and python3.11-doc (apt-get download, no root) unless they are installed.
# Other flags go to tools/data_efficiency_study.py (--help lists them; --set KEY=VALUE changes the model/budget).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"
# Idle OpenMP threads sleep instead of spinning (much faster on a shared machine); OMP_WAIT_POLICY=ACTIVE changes it.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
if [ -z "${STUDY_DIR:-}" ]; then
    STUDY_DIR=runs/data_efficiency_study
    for arg in "$@"; do [ "$arg" = "--tiny" ] && STUDY_DIR=runs/data_efficiency_study_tiny; done
fi
# shellcheck disable=SC2086  # STUDY_ARGS is a list of flags
if [ -z "${STUDY_ARGS+set}" ]; then  # the full study checks its peak LR with a half-budget sweep (~8 min)
    STUDY_ARGS="--lr-sweep 0.0015,0.003,0.006"
    for arg in "$@"; do case "$arg" in --tiny|--report-only|--cases|--lr-sweep*) STUDY_ARGS="";; esac; done
fi
exec "$PYTHON" tools/data_efficiency_study.py --study-dir "$STUDY_DIR" ${STUDY_ARGS} "$@"
