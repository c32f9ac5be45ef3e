#!/bin/bash
# The GPT-3 1.3B pretraining setups of the DeepSpeed Data Efficiency paper (Pile, 300B-token baseline).
# Every block below is one setup. Uncomment exactly one block (remove the "# " in front of its lines; the
# CL + random-LTD 300B block is the one active as shipped) and run:
#
#     bash ds_pretrain_gpt_1.3B_dense_run.sh            # DRY_RUN=1 prints the command instead
#
# The environment variables of ds_pretrain_gpt_1.3B_dense_base_script.sh apply (DRY_RUN, LAUNCHER, NUM_NODE,
# NUM_GPUS_PERNODE, PRECISION, MICRO_BATCH_SIZE, DATA_HOME, ...), plus ANALYSIS_PATH: the --save directory of the
# data analysis (../ds_analyze_gpt_data_{map,reduce}.sh, which default to the same directory).
#
# Learning rate: scaled with the inverse data fraction (100 % 2e-4, 67 % 3e-4, 50 % 4e-4), which the Data
# Efficiency paper found better; the random-LTD paper itself kept 2e-4. Budgets are in tokens (--train-tokens):
# with random-LTD a "token" is compute-equivalent, so more steps and raw samples are consumed.
# Blocks with a "voc" metric need the analysis first: map + reduce with METRIC=total_vocab_freq, then with
# METRIC=vocab_rarity. seqlen_truncate / seqlen_reshape need no analysis. Both CL and random-LTD run without
# pipeline parallelism.
set -euo pipefail
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${dir}/../../../.." && pwd)"
base="${dir}/ds_pretrain_gpt_1.3B_dense_base_script.sh"

active=$(grep -c '^[[:space:]]*run_base ' "${BASH_SOURCE[0]}" || true)
if [ "${active}" -ne 1 ]; then
    echo "error: $(basename "${BASH_SOURCE[0]}"): uncomment exactly one block (found ${active} active)" >&2
    exit 2
fi
run_base() { bash "${base}" "$@"; }

## Curriculum metrics (10 positional values each): "voc" = vocabulary rarity by percentile 1 -> 100,
## square-root pacing (root 2); seqlen_truncate / seqlen_reshape = sequence length 80 -> 2048 in steps of 8,
## linear pacing. Both metrics of a block share the same number of curriculum steps.
analysis_path=${ANALYSIS_PATH:-${repo}/output/data_efficiency/analysis_pile_gpt_1epoch}
voc_index_to_sample="${analysis_path}/vocab_rarity/vocab_rarity_index_to_sample_percentile_merged"
voc_index_to_metric="${analysis_path}/vocab_rarity/vocab_rarity_index_to_metric"
cl_args=()
add_voc() {  # add_voc TOTAL_CURRICULUM_STEPS
    cl_args+=(voc "${voc_index_to_sample}" "${voc_index_to_metric}" percentile schedule_based 1 100 "$1" 1 2)
}
add_seqlen() {  # add_seqlen seqlen_truncate|seqlen_reshape TOTAL_CURRICULUM_STEPS
    cl_args+=("$1" dummy dummy value single_cluster 80 2048 "$2" 8 1)
}
no_ltd=(false 2048 1)  # random-LTD off: reserved length = full length from step 0

###############################################################################
### Baselines: GPT-3 hyperparameters without batch-size warmup, token-based cosine schedule.
## Baseline, 300B tokens (100%):
# run_base 2.0e-4 300
###############################################################################
## Baseline, 200B tokens (67%):
# run_base 3.0e-4 200
###############################################################################
## Baseline, 150B tokens (50%):
# run_base 4.0e-4 150
###############################################################################
### CL + random-LTD: the best composed setup of the paper.
## CL (voc + seqlen_truncate) + random-LTD, 300B tokens (100%):
lr=2.0e-4; tokens=300; ltd_start=128; ltd_step=200000; cl_step=110000
add_voc ${cl_step}; add_seqlen seqlen_truncate ${cl_step}
run_base ${lr} ${tokens} true ${ltd_start} ${ltd_step} true 2 "${cl_args[@]}"
###############################################################################
## CL (voc + seqlen_truncate) + random-LTD, 150B tokens (50%):
# lr=4.0e-4; tokens=150; ltd_start=128; ltd_step=100000; cl_step=55000
# add_voc ${cl_step}; add_seqlen seqlen_truncate ${cl_step}
# run_base ${lr} ${tokens} true ${ltd_start} ${ltd_step} true 2 "${cl_args[@]}"
###############################################################################
### random-LTD alone: reserved length 128 -> 2048 in steps of 16 on layers 1..22.
## random-LTD, 300B tokens (100%):
# run_base 2.0e-4 300 true 128 200000
###############################################################################
## random-LTD, 200B tokens (67%):
# run_base 3.0e-4 200 true 128 133333
###############################################################################
## random-LTD, 150B tokens (50%):
# run_base 4.0e-4 150 true 128 100000
###############################################################################
### Curriculum learning alone.
## CL voc + seqlen_truncate, 300B tokens (100%):
# lr=2.0e-4; tokens=300; cl_step=110000
# add_voc ${cl_step}; add_seqlen seqlen_truncate ${cl_step}
# run_base ${lr} ${tokens} "${no_ltd[@]}" true 2 "${cl_args[@]}"
###############################################################################
## CL voc + seqlen_truncate, 200B tokens (67%):
# lr=3.0e-4; tokens=200; cl_step=73000
# add_voc ${cl_step}; add_seqlen seqlen_truncate ${cl_step}
# run_base ${lr} ${tokens} "${no_ltd[@]}" true 2 "${cl_args[@]}"
###############################################################################
## CL voc + seqlen_truncate, 150B tokens (50%):
# lr=4.0e-4; tokens=150; cl_step=55000
# add_voc ${cl_step}; add_seqlen seqlen_truncate ${cl_step}
# run_base ${lr} ${tokens} "${no_ltd[@]}" true 2 "${cl_args[@]}"
###############################################################################
## CL voc + seqlen_reshape, 300B tokens (100%):
# lr=2.0e-4; tokens=300; cl_step=110000
# add_voc ${cl_step}; add_seqlen seqlen_reshape ${cl_step}
# run_base ${lr} ${tokens} "${no_ltd[@]}" true 2 "${cl_args[@]}"
###############################################################################
## CL voc only, 300B tokens (100%):
# add_voc 110000
# run_base 2.0e-4 300 "${no_ltd[@]}" true 1 "${cl_args[@]}"
###############################################################################
## CL seqlen_truncate only, 300B tokens (100%):
# add_seqlen seqlen_truncate 110000
# run_base 2.0e-4 300 "${no_ltd[@]}" true 1 "${cl_args[@]}"
###############################################################################
## CL seqlen_reshape only, 300B tokens (100%):
# add_seqlen seqlen_reshape 110000
# run_base 2.0e-4 300 "${no_ltd[@]}" true 1 "${cl_args[@]}"
###############################################################################
