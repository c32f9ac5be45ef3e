#!/bin/bash
# Zero/few-shot lm-eval tasks on one GPT checkpoint (a pretrain_gpt.py --save directory), one device, with
# tasks/eval_harness/evaluate.py (lm-eval 0.4; spec §7.4/§9). ds_evalharness_parallel_run.sh runs the 19-task
# suite with it, one task group per free GPU.
#
#     CHECKPOINT=<--save dir> bash ds_evalharness_1gpu.sh [CHECKPOINT [TASKS [NUM_FEWSHOT]]]
#     DRY_RUN=1 ...    prints "results: <json>" and "command: <command>" instead of running
#
# TASKS is a comma-separated list of lm-eval task names (lm-eval 0.4 names: lambada_openai, not lambada),
# e.g. hellaswag or anli_r1,anli_r2,anli_r3, or the offline tasks (INCLUDE_PATH below). Output, as upstream:
#     ${RESULT_DIR}/{checkpoint's parent dir name}/{checkpoint dir name}/{TASKS}_{NUM_FEWSHOT}shot.json  (+ .log)
# The JSON is lm-eval's results dict (ds_evalharness_gather_result.py reads it), written atomically.
#
# Model shape, tokenizer and training precision come from the checkpoint; upstream's dummy model flags are not
# needed. Evaluation uses --adaptive_seq_len and --eval_fp32 (upstream's settings) unless switched off below.
#
# Environment (positional arguments override CHECKPOINT, TASKS and NUM_FEWSHOT):
#   CHECKPOINT           the checkpoint directory (required)
#   TASKS                comma-separated task names (required)
#   NUM_FEWSHOT (0)      few-shot examples per request
#   BATCH_SIZE (32)      requests per forward pass (--micro-batch-size)
#   RESULT_DIR           default <checkout>/output/data_efficiency/gpt_eval
#   INCLUDE_PATH         directories of extra task YAMLs, ':'-separated (--include_path each), e.g. the offline
#                        tasks: python -m tasks.eval_harness.offline_tasks --output-dir DIR
#   LIMIT                at most LIMIT documents per task (--limit; quick checks only: not comparable numbers)
#   SEED                 lm-eval's seeds (--seed; default lm-eval's own)
#   EVAL_FP32 (true)     --eval_fp32: evaluate in fp32 whatever the training precision
#   ADAPTIVE_SEQ_LEN (true)   --adaptive_seq_len: pad each batch to its longest request (same numbers, faster)
#   LAUNCHER             deepspeed | python. Default: deepspeed when GPU_ID is set or torch sees a GPU (one
#                        process on one device, with --deepspeed --deepspeed_config ds_config_eval_dummy.json
#                        and upstream's --inference/--no-load-* flags, which evaluate.py accepts), else python
#                        (CPU, one process)
#   GPU_ID               the device: deepspeed --include localhost:GPU_ID (LAUNCHER=python:
#                        CUDA_VISIBLE_DEVICES=GPU_ID); default deepspeed --num_gpus 1
#   MASTER_PORT          rendezvous port for the deepspeed launcher (parallel runs need different ones)
#   DS_CONFIG            default ds_config_eval_dummy.json next to this script
#   PYTHON               interpreter for LAUNCHER=python and the GPU check (default python)
#   RESULTS_PATH_ONLY=1  print the results JSON path and exit (used by the parallel scripts)
# lm-eval downloads the real tasks' datasets from the Hugging Face hub, or reads them from the local datasets
# cache (HF_DATASETS_CACHE); with HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 it never touches the network.
set -euo pipefail

script_name=${RECIPE_NAME:-$(basename "${BASH_SOURCE[0]}")}
die() {
    echo "error: ${script_name}: $*" >&2
    exit 2
}
is_int() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_pos_int() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ]; }
is_bool() { [[ "$1" == true || "$1" == false ]]; }

dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${dir}/../../../.." && pwd)"
evaluate="${repo}/tasks/eval_harness/evaluate.py"
python=${PYTHON:-python}

[ $# -le 3 ] || die "expected at most 3 positional arguments (CHECKPOINT TASKS NUM_FEWSHOT), got $#"
checkpoint=${1:-${CHECKPOINT:-}}
tasks=${2:-${TASKS:-}}
num_fewshot=${3:-${NUM_FEWSHOT:-0}}
batch_size=${BATCH_SIZE:-32}
result_dir=${RESULT_DIR:-${repo}/output/data_efficiency/gpt_eval}
limit=${LIMIT:-}
seed=${SEED:-}
eval_fp32=${EVAL_FP32:-true}
adaptive_seq_len=${ADAPTIVE_SEQ_LEN:-true}
gpu_id=${GPU_ID:-}
master_port=${MASTER_PORT:-}
ds_config=${DS_CONFIG:-${dir}/ds_config_eval_dummy.json}

###############################################################################
### Checks (before anything is written)
[ -n "${checkpoint}" ] || die "CHECKPOINT is not set: give the GPT checkpoint directory (the --save directory of" \
    "pretrain_gpt.py) as argument 1 or in the environment"
[ -n "${tasks}" ] || die "no tasks: set TASKS or give them as argument 2 (comma-separated lm-eval task names)"
[[ "${tasks}" =~ ^[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*$ ]] || die "TASKS must be comma-separated lm-eval task" \
    "names without spaces (e.g. anli_r1,anli_r2), got '${tasks}'"
is_int "${num_fewshot}" || die "NUM_FEWSHOT must be a non-negative integer, got '${num_fewshot}'"
is_pos_int "${batch_size}" || die "BATCH_SIZE must be a positive integer, got '${batch_size}'"
[ -z "${limit}" ] || [[ "${limit}" =~ ^[0-9]*\.?[0-9]+$ ]] || die "LIMIT must be a positive number, got '${limit}'"
[ -z "${seed}" ] || is_int "${seed}" || die "SEED must be a non-negative integer, got '${seed}'"
is_bool "${eval_fp32}" || die "EVAL_FP32 must be true or false, got '${eval_fp32}'"
is_bool "${adaptive_seq_len}" || die "ADAPTIVE_SEQ_LEN must be true or false, got '${adaptive_seq_len}'"
[ -z "${gpu_id}" ] || is_int "${gpu_id}" || die "GPU_ID must be one device number such as 0, got '${gpu_id}'"
[ -z "${master_port}" ] || { is_pos_int "${master_port}" && [ "${master_port}" -le 65535 ]; } \
    || die "MASTER_PORT must be a port number, got '${master_port}'"
include_paths=()
if [ -n "${INCLUDE_PATH:-}" ]; then
    IFS=: read -r -a include_paths <<<"${INCLUDE_PATH}"
fi

# {result_dir}/{ckpt_parent}/{ckpt}/{tasks}_{k}shot.json, as upstream
ckpt_abs=${checkpoint%/}
[ -n "${ckpt_abs}" ] || ckpt_abs=/
[ ! -d "${ckpt_abs}" ] || ckpt_abs="$(cd "${ckpt_abs}" && pwd)"
[[ "${ckpt_abs}" == /* ]] || ckpt_abs="$(pwd)/${ckpt_abs}"
ckpt_name=$(basename "${ckpt_abs}")
ckpt_parent=$(basename "$(dirname "${ckpt_abs}")")
out_dir="${result_dir}/${ckpt_parent}/${ckpt_name}"
results_path="${out_dir}/${tasks}_${num_fewshot}shot.json"
log_file="${out_dir}/${tasks}_${num_fewshot}shot.log"
if [ "${RESULTS_PATH_ONLY:-0}" = 1 ]; then
    echo "${results_path}"
    exit 0
fi

launcher=${LAUNCHER:-}
if [ -z "${launcher}" ]; then
    if [ -n "${gpu_id}" ] || "${python}" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' \
        2>/dev/null; then
        launcher=deepspeed
    else
        launcher=python
    fi
fi

###############################################################################
### Command
eval_args=(
    --load "${checkpoint}"
    --task_list "${tasks}"
    --num_fewshot "${num_fewshot}"
    --results_path "${results_path}"
    --micro-batch-size "${batch_size}"
)
[ "${adaptive_seq_len}" = false ] || eval_args+=(--adaptive_seq_len)
[ "${eval_fp32}" = false ] || eval_args+=(--eval_fp32)
for p in "${include_paths[@]+"${include_paths[@]}"}"; do
    [ -z "${p}" ] || eval_args+=(--include_path "${p}")
done
[ -z "${limit}" ] || eval_args+=(--limit "${limit}")
[ -z "${seed}" ] || eval_args+=(--seed "${seed}")

case "${launcher}" in
    deepspeed)
        cmd=(deepspeed)
        if [ -n "${gpu_id}" ]; then
            cmd+=(--include "localhost:${gpu_id}")
        else
            cmd+=(--num_gpus 1)
        fi
        [ -z "${master_port}" ] || cmd+=(--master_port "${master_port}")
        cmd+=("${evaluate}" "${eval_args[@]}" --deepspeed --deepspeed_config "${ds_config}" --inference
            --no-load-optim --no-load-rng --no-pipeline-parallel)
        ;;
    python)
        cmd=("${python}" "${evaluate}" "${eval_args[@]}")
        [ -z "${gpu_id}" ] || cmd=(env "CUDA_VISIBLE_DEVICES=${gpu_id}" "${cmd[@]}")
        ;;
    *) die "LAUNCHER must be deepspeed or python, got '${launcher}'" ;;
esac

missing=()
[ -d "${checkpoint}" ] || missing+=("${checkpoint} (CHECKPOINT: the pretraining --save directory)")
for p in "${include_paths[@]+"${include_paths[@]}"}"; do
    [ -z "${p}" ] || [ -d "${p}" ] || missing+=("${p} (INCLUDE_PATH)")
done
[ "${launcher}" != deepspeed ] || [ -f "${ds_config}" ] || missing+=("${ds_config} (DS_CONFIG)")

if [ "${DRY_RUN:-0}" = 1 ]; then
    for m in "${missing[@]+"${missing[@]}"}"; do
        echo "note: needed for a real run, not found: ${m}" >&2
    done
    echo "results: ${results_path}"
    printf 'command:'
    printf ' %q' "${cmd[@]}"
    printf '\n'
    exit 0
fi
[ "${#missing[@]}" -eq 0 ] || die "not found: ${missing[0]}"

mkdir -p "${out_dir}"
echo "${tasks} ${num_fewshot}-shot on ${checkpoint}: log ${log_file}"
{
    printf 'command:'
    printf ' %q' "${cmd[@]}"
    printf '\n'
} >>"${log_file}"
"${cmd[@]}" 2>&1 | tee -a "${log_file}"
echo "results: ${results_path}"
