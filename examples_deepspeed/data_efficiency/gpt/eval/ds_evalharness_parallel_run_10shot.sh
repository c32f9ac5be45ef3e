#!/bin/bash
# The 10-shot lm-eval suite of the DeepSpeed Data Efficiency paper (spec §7.4): ds_evalharness_parallel_run.sh
# with num_fewshot 10 and batch 16, without wikitext, and anli_r3 in a group of its own (its 10-shot contexts
# are the longest):
#   record | triviaqa | hellaswag | arc_challenge | arc_easy | race | multirc | openbookqa | lambada_openai |
#   webqs | winogrande | piqa | anli_r1,anli_r2 | anli_r3 | boolq,copa | rte,wsc
#
#     CHECKPOINTS="<--save dir> [...]" bash ds_evalharness_parallel_run_10shot.sh     # DRY_RUN=1: print only
#
# Results: ${RESULT_DIR}/{ckpt_parent}/{ckpt}/{tasks}_10shot.json, then gpt_eval_10shot.md from the gather.
# Environment: as ds_evalharness_parallel_run.sh; NUM_FEWSHOT, BATCH_SIZE and TASK_GROUPS override the above.
set -euo pipefail
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
groups="record triviaqa hellaswag arc_challenge arc_easy race multirc openbookqa lambada_openai webqs"
groups+=" winogrande piqa anli_r1,anli_r2 anli_r3 boolq,copa rte,wsc"
NUM_FEWSHOT=${NUM_FEWSHOT:-10} BATCH_SIZE=${BATCH_SIZE:-16} TASK_GROUPS=${TASK_GROUPS:-${groups}} \
    RECIPE_NAME=$(basename "${BASH_SOURCE[0]}") exec bash "${dir}/ds_evalharness_parallel_run.sh" "$@"
