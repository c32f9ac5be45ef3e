#!/bin/bash
# The GLUE finetuning sweep of the DeepSpeed Data Efficiency paper: every task x seed x learning rate with
# ds_finetune_bert_glue.sh (original BERT hyperparameters, 3 epochs), then ds_finetune_gather_result.py, which
# reports per task the best lr's median_high +- stdev over the seeds and the 9-number GLUE score.
#
#     CHECKPOINT=<pretraining --save dir> GLUE_DIR=<GlueData dir> bash ds_finetune_bert_glue_run.sh
#     DRY_RUN=1 ...   prints every run's command (and the gather command) instead
#
#   tasks  RTE MRPC STS-B CoLA SST-2 QNLI QQP MNLI     seeds  1234 1235 1236 1237 1238
#   lrs    2e-5 3e-5 4e-5 5e-5                         = 160 runs of one device each
#
# Devices: NUM_GPUS (default: python -c 'import torch; print(torch.cuda.device_count())'). With several
# devices, one run per device at a time (GPU_IDS=<id>, MASTER_PORT=<base + slot>), runs dealt round-robin; with
# one device, or none (CPU: LAUNCHER=python and PRECISION=fp32 unless set), the runs go one after another.
# GPU_IDS=2,3 restricts the sweep to those devices. Each run writes ${OUTPUT}/{task}/seed{S}_lr{LR}/ (log.txt
# holds its output). A run whose results.json already holds all its epochs is skipped (SKIP_DONE=false reruns
# it), so an interrupted sweep can be restarted. A failed run does not stop the others; the sweep then gathers
# what finished and exits 1.
#
# Environment: everything ds_finetune_bert_glue.sh reads (CHECKPOINT, GLUE_DIR, OUTPUT, EPOCHS, PRECISION,
# LAUNCHER, SAVE_CHECKPOINT, ...) except TASK/SEED/LR, plus
#   TASKS SEEDS LRS      space-separated lists replacing the defaults above
#   NUM_GPUS GPU_IDS     devices, as above;  MASTER_PORT (29500) the first run slot's port
#   SKIP_DONE            true (default) | false
#   PYTHON               interpreter for the device count, the gather and LAUNCHER=python (default python)
set -euo pipefail

script_name=$(basename "${BASH_SOURCE[0]}")
die() {
    echo "error: ${script_name}: $*" >&2
    exit 2
}
is_int() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_number() { [[ "$1" =~ ^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$ ]]; }

dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${dir}/../../../.." && pwd)"
single="${dir}/ds_finetune_bert_glue.sh"
gather="${dir}/ds_finetune_gather_result.py"
python=${PYTHON:-python}

[ $# -eq 0 ] || die "takes no arguments (set CHECKPOINT, GLUE_DIR, OUTPUT, TASKS, SEEDS, LRS in the environment)"

read -r -a tasks <<<"${TASKS:-RTE MRPC STS-B CoLA SST-2 QNLI QQP MNLI}"
read -r -a seeds <<<"${SEEDS:-1234 1235 1236 1237 1238}"
read -r -a lrs <<<"${LRS:-2e-5 3e-5 4e-5 5e-5}"
[ "${#tasks[@]}" -ge 1 ] && [ "${#seeds[@]}" -ge 1 ] && [ "${#lrs[@]}" -ge 1 ] || die "TASKS, SEEDS and LRS must" \
    "each name at least one value"
for t in "${tasks[@]}"; do
    case " MNLI QQP QNLI SST-2 CoLA STS-B MRPC RTE " in
        *" ${t} "*) ;;
        *) die "TASKS: unknown GLUE task '${t}' (MNLI QQP QNLI SST-2 CoLA STS-B MRPC RTE)" ;;
    esac
done
for s in "${seeds[@]}"; do is_int "${s}" || die "SEEDS: '${s}' is not a non-negative integer"; done
for l in "${lrs[@]}"; do is_number "${l}" || die "LRS: '${l}' is not a number such as 2e-5"; done
[ -n "${CHECKPOINT:-}" ] || die "CHECKPOINT is not set: give the pretrained BERT checkpoint directory (the" \
    "--save directory of pretrain_bert.py)"
case "${LAUNCHER:-deepspeed}" in deepspeed | torchrun | python) ;;
    *) die "LAUNCHER must be deepspeed, torchrun or python, got '${LAUNCHER}'" ;;
esac
case "${PRECISION:-fp16}" in fp16 | bf16 | fp32) ;;
    *) die "PRECISION must be fp16, bf16 or fp32, got '${PRECISION}'" ;;
esac
skip_done=${SKIP_DONE:-true}
[[ "${skip_done}" == true || "${skip_done}" == false ]] || die "SKIP_DONE must be true or false, got '${skip_done}'"
base_port=${MASTER_PORT:-29500}
is_int "${base_port}" && [ "${base_port}" -ge 1 ] && [ "${base_port}" -le 65535 ] || die "MASTER_PORT must be a" \
    "port number, got '${base_port}'"

# Devices: one run slot per device
if [ -n "${GPU_IDS:-}" ]; then
    [[ "${GPU_IDS}" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "GPU_IDS must be a comma-separated list of device ids such" \
        "as 0,1,2,3, got '${GPU_IDS}'"
    IFS=, read -r -a slots <<<"${GPU_IDS}"
    [ -z "${NUM_GPUS:-}" ] || [ "${NUM_GPUS}" = "${#slots[@]}" ] || die "NUM_GPUS=${NUM_GPUS} but GPU_IDS" \
        "'${GPU_IDS}' names ${#slots[@]} device(s)"
    num_gpus=${#slots[@]}
else
    if [ -n "${NUM_GPUS:-}" ]; then
        num_gpus=${NUM_GPUS}
    else
        num_gpus=$("${python}" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null) \
            || die "cannot count the devices with ${python} -c 'import torch; ...'; set NUM_GPUS (0 for CPU)"
    fi
    is_int "${num_gpus}" || die "NUM_GPUS must be a non-negative integer (0 = CPU), got '${num_gpus}'"
    slots=()
    if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then  # device numbers as the launchers see them: the visible ones
        IFS=, read -r -a visible <<<"${CUDA_VISIBLE_DEVICES}"
        [ "${num_gpus}" -le "${#visible[@]}" ] || die "NUM_GPUS=${num_gpus} but CUDA_VISIBLE_DEVICES" \
            "'${CUDA_VISIBLE_DEVICES}' shows ${#visible[@]} device(s)"
        slots=("${visible[@]:0:num_gpus}")
    else
        for ((g = 0; g < num_gpus; g++)); do slots+=("${g}"); done
    fi
    if [ "${num_gpus}" -gt 1 ]; then
        for g in "${slots[@]}"; do
            is_int "${g}" || die "CUDA_VISIBLE_DEVICES holds '${g}', not a device number; set GPU_IDS"
        done
    fi
fi
pin_device=true  # GPU_IDS per run; one device that nobody named: leave the choice to the launcher
[ -n "${GPU_IDS:-}" ] || [ "${num_gpus}" -gt 1 ] || pin_device=false
num_slots=${#slots[@]}
if [ "${num_gpus}" -eq 0 ]; then
    export LAUNCHER=${LAUNCHER:-python} PRECISION=${PRECISION:-fp32}
    num_slots=1
fi
[ "${LAUNCHER:-deepspeed}" != python ] || export PYTHON="${python}"
export NUM_GPUS=1  # every run uses one device (or one CPU process)
unset TASK SEED LR GPU_IDS

output=${OUTPUT:-${repo}/output/data_efficiency/bert_finetune_glue}
export OUTPUT="${output}"

jobs=()
for t in "${tasks[@]}"; do
    for s in "${seeds[@]}"; do
        for l in "${lrs[@]}"; do jobs+=("${t} ${s} ${l}"); done
    done
done

# done_run RESULTS_JSON: its evaluations cover all planned epochs
done_run() {
    [ -f "$1" ] && "${python}" - "$1" <<'EOF' 2>/dev/null
import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if len(d.get("evaluations", [])) >= int(d["epochs_planned"]) else 1)
EOF
}

# run_slot SLOT: the jobs dealt to this slot, one after another; prints one line per run
run_slot() {
    local slot=$1 j t s l status
    local failed=0
    for ((j = slot; j < ${#jobs[@]}; j += num_slots)); do
        read -r t s l <<<"${jobs[j]}"
        local where="${t} seed ${s} lr ${l}"
        local env_slot=()
        if [ "${num_gpus}" -gt 0 ] && [ "${pin_device}" = true ]; then
            env_slot+=(GPU_IDS="${slots[slot]}")
            [ "${num_slots}" -eq 1 ] || where+=" (device ${slots[slot]})"
        fi
        [ "${num_slots}" -eq 1 ] && [ -z "${MASTER_PORT:-}" ] || env_slot+=(MASTER_PORT=$((base_port + slot)))
        if [ "${skip_done}" = true ] && done_run "${output}/${t}/seed${s}_lr${l}/results.json"; then
            echo "skip: ${where}: results.json complete"
            continue
        fi
        if [ "${DRY_RUN:-0}" = 1 ]; then
            echo "run: ${where}"
            env "${env_slot[@]+"${env_slot[@]}"}" bash "${single}" "${t}" "${s}" "${l}"
            continue
        fi
        echo "start: ${where}"
        local log="${output}/${t}/seed${s}_lr${l}/log.txt" err
        err=$(mktemp)
        status=0
        # the run's output goes to its log.txt; the launcher script's own error line (if any) is kept here
        env "${env_slot[@]+"${env_slot[@]}"}" bash "${single}" "${t}" "${s}" "${l}" >/dev/null 2>"${err}" \
            || status=$?
        if [ "${status}" -eq 0 ]; then
            echo "done: ${where}"
        else
            local why
            why=$(grep -m1 '^error: ' "${err}" || true)
            [ -n "${why}" ] || [ ! -f "${log}" ] || why="$(grep '^error: ' "${log}" | tail -n1 || true)"
            why="${why:+${why}; }see ${log}"
            echo "FAILED (exit ${status}): ${where}: ${why}" >&2
            failed=$((failed + 1))
        fi
        rm -f "${err}"
    done
    return $((failed > 0))
}

echo "sweep: ${#tasks[@]} tasks x ${#seeds[@]} seeds x ${#lrs[@]} lrs = ${#jobs[@]} runs on" \
    "$([ "${num_gpus}" -eq 0 ] && echo "CPU" || echo "${num_slots} device(s)"), output ${output}"
gather_cmd=("${python}" "${gather}" "${output}" --output "${output}/glue_results.md" --json)
if [ "${DRY_RUN:-0}" = 1 ] || [ "${num_slots}" -eq 1 ]; then
    fails=0
    for ((slot = 0; slot < num_slots; slot++)); do
        run_slot "${slot}" || fails=$((fails + 1))
    done
else
    mkdir -p "${output}"
    pids=()
    for ((slot = 0; slot < num_slots; slot++)); do
        run_slot "${slot}" &
        pids+=($!)
    done
    fails=0
    for pid in "${pids[@]}"; do wait "${pid}" || fails=$((fails + 1)); done
fi
if [ "${DRY_RUN:-0}" = 1 ]; then
    printf 'gather:'
    printf ' %q' "${gather_cmd[@]}"
    printf '\n'
    exit 0
fi
gather_status=0
"${gather_cmd[@]}" || gather_status=$?
if [ "${fails}" -gt 0 ]; then
    echo "error: ${script_name}: some runs failed (FAILED lines above); the table covers the others" >&2
    exit 1
fi
exit "${gather_status}"
