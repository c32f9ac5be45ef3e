#!/bin/bash
# The BERT-Large (336M) pretraining setups of the DeepSpeed Data Efficiency paper (Pile, 2M-iteration baseline =
# 1049B tokens). Every block below is one setup. Uncomment exactly one block (remove the "# " in front of its
# lines; the CL + random-LTD 1049B block is the one active as shipped) and run:
#
#     bash ds_pretrain_bert_336M_run.sh            # DRY_RUN=1 prints the command instead
#
# The environment variables of ds_pretrain_bert_336M_base_script.sh apply (DRY_RUN, LAUNCHER, NUM_NODE,
# NUM_GPUS_PERNODE, PRECISION, MICRO_BATCH_SIZE, DATA_HOME, ...), plus ANALYSIS_PATH: the --save directory of the
# data analysis (../ds_analyze_bert_data_{map,reduce}.sh, which default to the same directory).
#
# Learning rate: scaled with the inverse data fraction (100 % 1e-4, 67 % 1.5e-4, 50 % 2e-4). Budgets are given
# as baseline iterations in millions (2 / 1.34 / 1) and turned into tokens (x 512 x 1024) by the base script:
# with random-LTD a "token" is compute-equivalent, and CL truncation shortens early steps, so both take more
# steps than the baseline for the same budget. Blocks with a "voc" / "seqlen_vocab_rarity" / "seqlen" metric
# need the analysis first (map + reduce with METRIC=total_vocab_freq, then with that metric; 5 epochs).
# seqlen_truncate needs no analysis. Both CL and random-LTD run without pipeline parallelism.
set -euo pipefail
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${dir}/../../../.." && pwd)"
base="${dir}/ds_pretrain_bert_336M_base_script.sh"

active=$(grep -c '^[[:space:]]*run_base ' "${BASH_SOURCE[0]}" || true)
if [ "${active}" -ne 1 ]; then
    echo "error: $(basename "${BASH_SOURCE[0]}"): uncomment exactly one block (found ${active} active)" >&2
    exit 2
fi
run_base() { bash "${base}" "$@"; }

## Curriculum metrics (10 positional values each; curriculum steps in millions):
##   voc              vocabulary rarity by percentile 5 -> 100, square-root pacing (root 2), step 1
##   seqlen_truncate  sequence length 128 -> 512 in steps of 8, linear pacing; cuts each batch, no analysis
## Both metrics of a block share the same number of curriculum steps.
analysis_path=${ANALYSIS_PATH:-${repo}/output/data_efficiency/analysis_pile_bert_5epoch}
index_prefix() { echo "${analysis_path}/$1/$1_index_to_$2"; }  # index_prefix METRIC sample|metric|...
cl_args=()
add_voc() {  # add_voc CURRICULUM_STEPS_IN_MILLION [unmerged]
    # Percentile selection reads rows in order, so the merged and the plain index pick the same samples;
    # the merged one has fewer, larger rows.
    local sample=sample_percentile_merged
    [ "${2:-}" != unmerged ] || sample=sample
    cl_args+=(voc "$(index_prefix vocab_rarity "${sample}")" "$(index_prefix vocab_rarity metric)" percentile
        schedule_based 5 100 "$1" 1 2)
}
add_truncate() {  # add_truncate CURRICULUM_STEPS_IN_MILLION
    cl_args+=(seqlen_truncate dummy dummy value single_cluster 128 512 "$1" 8 1)
}
no_ltd=(false 512 1 0.1)  # random-LTD off: reserved length = full length from step 0

###############################################################################
### Baselines: Megatron-LM's BERT-Large hyperparameters, linear decay over the token budget.
## Baseline, 1049B tokens (100%):
# run_base 1e-4 2
###############################################################################
## Baseline, 703B tokens (67%):
# run_base 1.5e-4 1.34
###############################################################################
## Baseline, 524B tokens (50%):
# run_base 2e-4 1
###############################################################################
### CL + random-LTD: the composed setup of the paper (random-LTD with dropout 0.1).
## CL (voc + seqlen_truncate) + random-LTD, 1049B tokens (100%):
lr=1e-4; iters=2; ltd_start=128; ltd_steps=2; dropout=0.1; cl_steps=0.96
add_voc ${cl_steps}; add_truncate ${cl_steps}
run_base ${lr} ${iters} true ${ltd_start} ${ltd_steps} ${dropout} true 2 "${cl_args[@]}"
###############################################################################
## CL (voc + seqlen_truncate) + random-LTD, 524B tokens (50%):
# lr=2e-4; iters=1; ltd_start=128; ltd_steps=1; dropout=0.1; cl_steps=0.48
# add_voc ${cl_steps}; add_truncate ${cl_steps}
# run_base ${lr} ${iters} true ${ltd_start} ${ltd_steps} ${dropout} true 2 "${cl_args[@]}"
###############################################################################
### random-LTD alone: reserved length 128 -> 512 in steps of 16 on layers 1..22, dropout 0.1.
## random-LTD, 1049B tokens (100%):
# run_base 1e-4 2 true 128 2 0.1
###############################################################################
## random-LTD, 703B tokens (67%):
# run_base 1.5e-4 1.34 true 128 1.34 0.1
###############################################################################
## random-LTD, 524B tokens (50%):
# run_base 2e-4 1 true 128 1 0.1
###############################################################################
### Curriculum learning alone.
## CL voc + seqlen_truncate, 524B tokens (50%):
# add_voc 0.48; add_truncate 0.48
# run_base 2e-4 1 "${no_ltd[@]}" true 2 "${cl_args[@]}"
###############################################################################
## CL voc + seqlen_truncate, 703B tokens (67%):
# add_voc 0.64; add_truncate 0.64
# run_base 1.5e-4 1.34 "${no_ltd[@]}" true 2 "${cl_args[@]}"
###############################################################################
## CL voc + seqlen_truncate, 1049B tokens (100%):
# add_voc 0.96 unmerged; add_truncate 0.96  # upstream's block reads the unmerged index here
# run_base 1e-4 2 "${no_ltd[@]}" true 2 "${cl_args[@]}"
###############################################################################
## CL seqlen_vocab_rarity ("seqlen reorder" + voc), 1049B tokens (100%):
# cl_args=(seqlenvocabrarity "$(index_prefix seqlen_vocab_rarity sample_percentile_merged)"
#     "$(index_prefix seqlen_vocab_rarity metric)" percentile schedule_based 5 100 0.96 1 2)
# run_base 1e-4 2 "${no_ltd[@]}" true 1 "${cl_args[@]}"
###############################################################################
## CL voc only, 1049B tokens (100%):
# add_voc 0.96
# run_base 1e-4 2 "${no_ltd[@]}" true 1 "${cl_args[@]}"
###############################################################################
## CL seqlen_truncate only, 1049B tokens (100%):
# add_truncate 0.96
# run_base 1e-4 2 "${no_ltd[@]}" true 1 "${cl_args[@]}"
###############################################################################
## CL "seqlen reorder" (metric seqlen, single_cluster), 1049B tokens (100%):
### As upstream: with single_cluster the sampler reorders nothing, so this runs like the baseline plus BERT's
### dynamic padding trim (which every BERT run has). Use schedule_based to really order the samples by length.
# cl_args=(seqlen "$(index_prefix seqlen sample_percentile_merged)" "$(index_prefix seqlen metric)" percentile
#     single_cluster 5 100 0.96 8 2)
# run_base 1e-4 2 "${no_ltd[@]}" true 1 "${cl_args[@]}"
###############################################################################
