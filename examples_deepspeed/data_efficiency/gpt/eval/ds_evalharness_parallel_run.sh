#!/bin/bash
# The zero-shot lm-eval suite of the DeepSpeed Data Efficiency paper (spec §7.4): 16 task groups per checkpoint,
# each one ds_evalharness_1gpu.sh run, one run per free GPU at a time; then ds_evalharness_gather_result.py
# prints the per-task table and the 19-task average (wikitext reported, not averaged).
#
#     CHECKPOINTS="<--save dir> [...]" bash ds_evalharness_parallel_run.sh
#     DRY_RUN=1 ...   prints every run's command (and the gather command) instead
#
# Task groups (lm-eval 0.4 names; lambada_openai is the reference's lambada), batch 32, 0-shot:
#   record | triviaqa | hellaswag | arc_challenge | arc_easy | race | multirc | openbookqa | lambada_openai |
#   webqs | winogrande | piqa | anli_r1,anli_r2,anli_r3 | boolq,copa | rte,wsc | wikitext
# (skipped on purpose, as upstream: qqp prost cb wic mrpc sst wnli pubmedqa logiqa qnli sciq mc_taco mathqa)
#
# Devices: NUM_GPUS (default: torch.cuda.device_count()) or GPU_IDS=0,2,3. A run starts on a device that none
# of this script's runs is using and that nvidia-smi shows at least MIN_FREE_MEMORY percent free (default 99,
# as upstream; 0 skips the check), each device with its own MASTER_PORT (base + slot). Without GPUs
# (NUM_GPUS=0, or none found) the runs go one after another on the CPU with LAUNCHER=python.
# A group whose results JSON already exists is skipped (SKIP_DONE=false reruns it): evaluate.py writes it
# atomically at the end, so an interrupted suite can be restarted. A failed run does not stop the others; the
# script then gathers what finished and exits 1.
#
# Environment: everything ds_evalharness_1gpu.sh reads (RESULT_DIR, BATCH_SIZE, NUM_FEWSHOT, INCLUDE_PATH,
# LIMIT, SEED, EVAL_FP32, ADAPTIVE_SEQ_LEN, LAUNCHER, DS_CONFIG, PYTHON) except CHECKPOINT/TASKS/GPU_ID, plus
#   CHECKPOINTS          space-separated checkpoint directories (default: CHECKPOINT)
#   TASK_GROUPS          space-separated groups, each a comma-separated task list (default: the 16 above)
#   NUM_GPUS GPU_IDS     devices, as above;  MASTER_PORT (29500) the first slot's port
#   MIN_FREE_MEMORY (99) POLL_SECONDS (10)   the free-device check and how often it is repeated
#   SKIP_DONE            true (default) | false
set -euo pipefail

script_name=${RECIPE_NAME:-$(basename "${BASH_SOURCE[0]}")}
unset RECIPE_NAME  # the runs name themselves
die() {
    echo "error: ${script_name}: $*" >&2
    exit 2
}
is_int() { [[ "$1" =~ ^[0-9]+$ ]]; }

dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${dir}/../../../.." && pwd)"
single="${dir}/ds_evalharness_1gpu.sh"
gather="${dir}/ds_evalharness_gather_result.py"
python=${PYTHON:-python}

[ $# -eq 0 ] || die "takes no arguments (set CHECKPOINTS, TASK_GROUPS, RESULT_DIR, ... in the environment)"

default_groups="record triviaqa hellaswag arc_challenge arc_easy race multirc openbookqa lambada_openai webqs"
default_groups+=" winogrande piqa anli_r1,anli_r2,anli_r3 boolq,copa rte,wsc wikitext"
read -r -a groups <<<"${TASK_GROUPS:-${default_groups}}"
read -r -a checkpoints <<<"${CHECKPOINTS:-${CHECKPOINT:-}}"
[ "${#checkpoints[@]}" -ge 1 ] || die "CHECKPOINTS is not set: give the GPT checkpoint directories (pretrain_gpt.py" \
    "--save directories), space-separated"
[ "${#groups[@]}" -ge 1 ] || die "TASK_GROUPS is empty"
for g in "${groups[@]}"; do
    [[ "${g}" =~ ^[A-Za-z0-9_.-]+(,[A-Za-z0-9_.-]+)*$ ]] || die "TASK_GROUPS: '${g}' is not a comma-separated" \
        "list of task names"
done
num_fewshot=${NUM_FEWSHOT:-0}
is_int "${num_fewshot}" || die "NUM_FEWSHOT must be a non-negative integer, got '${num_fewshot}'"
export NUM_FEWSHOT="${num_fewshot}" BATCH_SIZE="${BATCH_SIZE:-32}"
case "${LAUNCHER:-deepspeed}" in deepspeed | python) ;;
    *) die "LAUNCHER must be deepspeed or python, got '${LAUNCHER}'" ;;
esac
skip_done=${SKIP_DONE:-true}
[[ "${skip_done}" == true || "${skip_done}" == false ]] || die "SKIP_DONE must be true or false, got '${skip_done}'"
base_port=${MASTER_PORT:-29500}
is_int "${base_port}" && [ "${base_port}" -ge 1 ] && [ "${base_port}" -le 65535 ] || die "MASTER_PORT must be a" \
    "port number, got '${base_port}'"
min_free=${MIN_FREE_MEMORY:-99}
is_int "${min_free}" && [ "${min_free}" -le 100 ] || die "MIN_FREE_MEMORY must be a percentage (0-100), got" \
    "'${min_free}'"
poll=${POLL_SECONDS:-10}
[[ "${poll}" =~ ^[0-9]*\.?[0-9]+$ ]] || die "POLL_SECONDS must be a number of seconds, got '${poll}'"

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
    if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
        IFS=, read -r -a visible <<<"${CUDA_VISIBLE_DEVICES}"
        [ "${num_gpus}" -le "${#visible[@]}" ] || die "NUM_GPUS=${num_gpus} but CUDA_VISIBLE_DEVICES" \
            "'${CUDA_VISIBLE_DEVICES}' shows ${#visible[@]} device(s)"
        slots=("${visible[@]:0:num_gpus}")
    else
        for ((g = 0; g < num_gpus; g++)); do slots+=("${g}"); done
    fi
fi
if [ "${num_gpus}" -eq 0 ]; then
    export LAUNCHER=python
    slots=("cpu")
else
    export LAUNCHER=${LAUNCHER:-deepspeed}
fi
num_slots=${#slots[@]}
[ "${LAUNCHER}" != python ] || export PYTHON="${python}"
unset CHECKPOINT TASKS GPU_ID

result_dir=${RESULT_DIR:-${repo}/output/data_efficiency/gpt_eval}
export RESULT_DIR="${result_dir}"

job_ckpt=()
job_group=()
for c in "${checkpoints[@]}"; do
    for g in "${groups[@]}"; do
        job_ckpt+=("${c}")
        job_group+=("${g}")
    done
done
num_jobs=${#job_ckpt[@]}

if [ "${DRY_RUN:-0}" != 1 ]; then
    for c in "${checkpoints[@]}"; do
        [ -d "${c}" ] || die "not found: ${c} (CHECKPOINTS: pretrain_gpt.py --save directories)"
    done
fi

# run directories of the checkpoints, for the gather
run_dirs=()
for c in "${checkpoints[@]}"; do
    # also checks every setting the runs read (one error line naming this script)
    path=$(RECIPE_NAME="${script_name}" RESULTS_PATH_ONLY=1 bash "${single}" "${c}" "${groups[0]}") || exit 2
    run_dirs+=("$(dirname "${path}")")
done
mapfile -t run_dirs < <(printf '%s\n' "${run_dirs[@]}" | awk '!seen[$0]++')

device_free() {  # device_free ID: nvidia-smi shows at least MIN_FREE_MEMORY percent of its memory free
    [ "${min_free}" -gt 0 ] && command -v nvidia-smi >/dev/null 2>&1 || return 0
    local used total
    IFS=', ' read -r used total < <(nvidia-smi --query-gpu=memory.used,memory.total --format=csv,noheader,nounits \
        -i "$1" 2>/dev/null) || return 0
    is_int "${used}" && is_int "${total}" && [ "${total}" -gt 0 ] || return 0
    [ $(((total - used) * 100)) -ge $((min_free * total)) ]
}

job_env() {  # job_env JOB SLOT: the environment of one run
    local env_job=(CHECKPOINT="${job_ckpt[$1]}" TASKS="${job_group[$1]}")
    if [ "${num_gpus}" -gt 0 ]; then
        env_job+=(GPU_ID="${slots[$2]}" MASTER_PORT=$((base_port + $2)))
    fi
    printf '%s\n' "${env_job[@]}"
}

describe() {  # describe JOB [SLOT]
    local where="${job_group[$1]} ${num_fewshot}-shot (${job_ckpt[$1]})"
    [ "${num_gpus}" -eq 0 ] || [ -z "${2:-}" ] || where+=" on device ${slots[$2]}"
    echo "${where}"
}

is_done() {  # is_done JOB: its results JSON exists
    [ "${skip_done}" = true ] || return 1
    local path
    path=$(CHECKPOINT="${job_ckpt[$1]}" TASKS="${job_group[$1]}" RESULTS_PATH_ONLY=1 bash "${single}")
    [ -s "${path}" ]
}

# start_job JOB SLOT: run it in the background; its pid goes to slot_pid[SLOT], its stderr to slot_err[SLOT]
slot_pid=()
slot_job=()
slot_err=()
start_job() {
    local envs
    mapfile -t envs < <(job_env "$1" "$2")
    slot_err[$2]=$(mktemp)
    echo "start: $(describe "$1" "$2")"
    env "${envs[@]}" bash "${single}" >/dev/null 2>"${slot_err[$2]}" &
    slot_pid[$2]=$!
    slot_job[$2]=$1
}

# finish_job SLOT: wait for it, print done/FAILED; returns 1 when it failed
finish_job() {
    local slot=$1 job=${slot_job[$1]} status=0
    wait "${slot_pid[slot]}" || status=$?
    local err=${slot_err[slot]}
    slot_pid[slot]=""
    if [ "${status}" -eq 0 ]; then
        echo "done: $(describe "${job}" "${slot}")"
        rm -f "${err}"
        return 0
    fi
    local path log why
    path=$(CHECKPOINT="${job_ckpt[job]}" TASKS="${job_group[job]}" RESULTS_PATH_ONLY=1 bash "${single}")
    log="${path%.json}.log"
    why=$(grep -m1 '^error: ' "${err}" || true)
    [ -n "${why}" ] || [ ! -f "${log}" ] || why="$(grep '^error: ' "${log}" | tail -n1 || true)"
    echo "FAILED (exit ${status}): $(describe "${job}" "${slot}"): ${why:+${why}; }see ${log}" >&2
    rm -f "${err}"
    return 1
}

echo "gpt eval: ${#checkpoints[@]} checkpoint(s) x ${#groups[@]} task groups = ${num_jobs} runs, ${num_fewshot}-shot," \
    "on $([ "${num_gpus}" -eq 0 ] && echo "CPU" || echo "${num_slots} device(s)"), results under ${result_dir}"
gather_cmd=("${python}" "${gather}" "${run_dirs[@]}" --num_fewshot "${num_fewshot}"
    --output "${result_dir}/gpt_eval_${num_fewshot}shot.md")

fails=0
if [ "${DRY_RUN:-0}" = 1 ]; then
    for ((j = 0; j < num_jobs; j++)); do  # dealt round-robin to the devices
        slot=$((j % num_slots))
        if is_done "${j}"; then
            echo "skip: $(describe "${j}"): results exist"
            continue
        fi
        echo "run: $(describe "${j}" "${slot}")"
        mapfile -t envs < <(job_env "${j}" "${slot}")
        env "${envs[@]}" bash "${single}"
    done
    printf 'gather:'
    printf ' %q' "${gather_cmd[@]}"
    printf '\n'
    exit 0
fi

next=0
running=0
while :; do
    for ((s = 0; s < num_slots; s++)); do  # collect finished runs
        pid=${slot_pid[s]:-}
        if [ -n "${pid}" ] && ! kill -0 "${pid}" 2>/dev/null; then
            finish_job "${s}" || fails=$((fails + 1))
            running=$((running - 1))
        fi
    done
    for ((s = 0; s < num_slots; s++)); do  # start runs on idle, free devices
        while [ "${next}" -lt "${num_jobs}" ] && is_done "${next}"; do
            echo "skip: $(describe "${next}"): results exist"
            next=$((next + 1))
        done
        [ "${next}" -lt "${num_jobs}" ] || break
        [ -z "${slot_pid[s]:-}" ] || continue
        [ "${num_gpus}" -eq 0 ] || device_free "${slots[s]}" || continue
        start_job "${next}" "${s}"
        next=$((next + 1))
        running=$((running + 1))
    done
    [ "${next}" -lt "${num_jobs}" ] || [ "${running}" -gt 0 ] || break
    if [ "${num_gpus}" -eq 0 ] || [ "${next}" -ge "${num_jobs}" ]; then
        # sequential on the CPU, or nothing left to start: just wait for a run to end
        for ((s = 0; s < num_slots; s++)); do
            if [ -n "${slot_pid[s]:-}" ]; then
                finish_job "${s}" || fails=$((fails + 1))
                running=$((running - 1))
                break
            fi
        done
    else
        sleep "${poll}"
    fi
done

gather_status=0
"${gather_cmd[@]}" || gather_status=$?
if [ "${fails}" -gt 0 ]; then
    echo "error: ${script_name}: ${fails} run(s) failed (FAILED lines above); the table covers the others" >&2
    exit 1
fi
exit "${gather_status}"
