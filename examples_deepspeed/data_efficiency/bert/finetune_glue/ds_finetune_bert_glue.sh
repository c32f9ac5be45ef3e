#!/bin/bash
# Finetune a pretrained BERT (a pretrain_bert.py checkpoint, e.g. from ../pretrain/) on one GLUE task with one
# seed and one learning rate, with the original BERT finetuning hyperparameters (Devlin et al. 2019, as used by
# the DeepSpeed Data Efficiency paper): seq 512, global batch 32 (micro-batch 8), 3 epochs, linear decay with
# 10 % warmup, weight decay 0.1, fp16, ZeRO 0. ds_finetune_bert_glue_run.sh sweeps tasks x seeds x lrs with it.
#
#     CHECKPOINT=<pretraining --save dir> GLUE_DIR=<dir of {task}/train.tsv, dev.tsv> \
#         bash ds_finetune_bert_glue.sh [TASK [SEED [LR]]]      # DRY_RUN=1 prints the command instead
#
# The run's directory is ${OUTPUT}/${TASK}/seed${SEED}_lr${LR}/: results.json (tasks/main.py --results-path:
# every epoch's dev metrics and the best epoch; ds_finetune_gather_result.py reads these), ds_config.json,
# log.txt and checkpoint/ (--save/--load: an interrupted run resumes). The model shape and the tokenizer come
# from the checkpoint (tasks/main.py reads them there), so no model flags are passed here.
#
# Environment (positional arguments override TASK, SEED and LR):
#   CHECKPOINT           the pretrained checkpoint directory (required)
#   TASK                 MNLI QQP QNLI SST-2 CoLA STS-B MRPC RTE (and RACE, see ../finetune/)
#   SEED (1234)  LR (2e-5)  EPOCHS (3)
#   GLUE_DIR             default ${DATA_HOME}/GlueData (DATA_HOME default /blob/data); train.tsv and dev.tsv per
#                        task, MNLI: dev_matched.tsv and dev_mismatched.tsv (tools/make_glue_suite.py builds a
#                        small offline suite in this layout)
#   RACE_DIR             default ${DATA_HOME}/RACE ({train,dev}/{middle,high}/*.txt), for TASK=RACE
#   TRAIN_DATA VALID_DATA   override the data files (space-separated lists)
#   OUTPUT               default <checkout>/output/data_efficiency/bert_finetune_glue
#   VOCAB_PATH           pass --vocab-file (default: the checkpoint's own vocabulary; tasks/main.py refuses a
#                        vocabulary path that differs from the one the checkpoint was pretrained with)
#   SEQ_LENGTH (512)  GLOBAL_BATCH_SIZE (32)  MICRO_BATCH_SIZE (8, lowered to global/ranks when that is smaller)
#   LR_WARMUP_FRACTION (0.1)  WEIGHT_DECAY (0.1)  LOG_INTERVAL (10)
#   DROPOUT              pass --hidden-dropout/--attention-dropout (default: not passed, Megatron's 0.1)
#   EVAL_INTERVAL        unset: tasks/main.py evaluates the dev files once per epoch, which is what "best epoch"
#                        means in the gather; set, every N iterations instead (upstream passed 100), and the
#                        best of those evaluations is then what the gather reports
#   SAVE_CHECKPOINT      true (default) | false: --save/--load the finetuned model under the run's directory
#                        (BERT-Large with optimizer states is several GB per run)
#   SAVE_INTERVAL        iterations between saves (default: only at the end)
#   PRECISION            fp16 (default) | bf16 | fp32. DeepSpeed has no fp16 on CPU. bf16 runs at ZeRO-1 and
#                        accumulates the micro-batch gradients in fp32 (data_types.grad_accum_dtype in the
#                        template); fp16/fp32 keep ZeRO-0
#   LAUNCHER             deepspeed (default) | torchrun | python (one process)
#   NUM_GPUS             processes for this run (default 1, one node)
#   GPU_IDS              use these devices (e.g. 3 or 0,1): deepspeed --include localhost:IDS, else
#                        CUDA_VISIBLE_DEVICES
#   MASTER_PORT          rendezvous port (several runs on one machine need different ones)
#   DS_CONFIG_TEMPLATE   default ds_config_bert_TEMPLATE.json next to this script
#   PYTHON               interpreter for LAUNCHER=python (default python)
#   DRY_RUN=1            write ds_config.json, print "ds_config: <path>" and "command: <command>", launch nothing
set -euo pipefail

script_name=${RECIPE_NAME:-$(basename "${BASH_SOURCE[0]}")}
die() {
    echo "error: ${script_name}: $*" >&2
    exit 2
}
is_int() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_pos_int() { [[ "$1" =~ ^[0-9]+$ ]] && [ "$1" -ge 1 ]; }
is_number() { [[ "$1" =~ ^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$ ]]; }

dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${dir}/../../../.." && pwd)"

[ $# -le 3 ] || die "expected at most 3 positional arguments (TASK SEED LR), got $#"
task=${1:-${TASK:-}}
seed=${2:-${SEED:-1234}}
lr=${3:-${LR:-2e-5}}

###############################################################################
### Hyperparameters: original BERT finetuning (the paper's Table 9 recipe, as upstream's GLUE script)
epochs=${EPOCHS:-3}
seq_len=${SEQ_LENGTH:-512}
global_batch_size=${GLOBAL_BATCH_SIZE:-32}
micro_batch_size=${MICRO_BATCH_SIZE:-8}
lr_warmup_fraction=${LR_WARMUP_FRACTION:-0.1}
lr_decay_style=linear
weight_decay=${WEIGHT_DECAY:-0.1}
clip_grad=1.0
zero_stage=0
log_interval=${LOG_INTERVAL:-10}
eval_interval=${EVAL_INTERVAL:-}
dropout=${DROPOUT:-}
save_checkpoint=${SAVE_CHECKPOINT:-true}
save_interval=${SAVE_INTERVAL:-}

###############################################################################
### Checks (before anything is written)
glue_tasks="MNLI QQP QNLI SST-2 CoLA STS-B MRPC RTE"
[ -n "${task}" ] || die "no task: set TASK or give it as argument 1 (one of ${glue_tasks} RACE)"
case " ${glue_tasks} RACE " in
    *" ${task} "*) ;;
    *) die "unknown task '${task}' (one of ${glue_tasks} RACE; names are case-sensitive)" ;;
esac
[[ "${seed}" =~ ^[0-9]+$ ]] || die "SEED must be a non-negative integer, got '${seed}'"
is_number "${lr}" || die "LR must be a number such as 2e-5, got '${lr}'"
is_pos_int "${epochs}" || die "EPOCHS must be a positive integer, got '${epochs}'"
is_pos_int "${seq_len}" || die "SEQ_LENGTH must be a positive integer, got '${seq_len}'"
is_pos_int "${global_batch_size}" || die "GLOBAL_BATCH_SIZE must be a positive integer, got '${global_batch_size}'"
is_pos_int "${micro_batch_size}" || die "MICRO_BATCH_SIZE must be a positive integer, got '${micro_batch_size}'"
is_number "${lr_warmup_fraction}" && awk -v f="${lr_warmup_fraction}" 'BEGIN { exit !(f <= 1) }' \
    || die "LR_WARMUP_FRACTION must be a number in [0, 1], got '${lr_warmup_fraction}'"
is_number "${weight_decay}" || die "WEIGHT_DECAY must be a non-negative number, got '${weight_decay}'"
is_pos_int "${log_interval}" || die "LOG_INTERVAL must be a positive integer, got '${log_interval}'"
[ -z "${eval_interval}" ] || is_pos_int "${eval_interval}" || die "EVAL_INTERVAL must be a positive integer," \
    "got '${eval_interval}'"
[ -z "${dropout}" ] || { is_number "${dropout}" && awk -v d="${dropout}" 'BEGIN { exit !(d < 1) }'; } \
    || die "DROPOUT must be a number in [0, 1), got '${dropout}'"
[ -z "${save_interval}" ] || is_pos_int "${save_interval}" || die "SAVE_INTERVAL must be a positive integer," \
    "got '${save_interval}'"
[[ "${save_checkpoint}" == true || "${save_checkpoint}" == false ]] || die "SAVE_CHECKPOINT must be true or" \
    "false, got '${save_checkpoint}'"
checkpoint=${CHECKPOINT:-}
[ -n "${checkpoint}" ] || die "CHECKPOINT is not set: give the pretrained BERT checkpoint directory (the" \
    "--save directory of pretrain_bert.py)"

# Devices and batch geometry: data parallel over NUM_GPUS processes on this node
gpu_ids=${GPU_IDS:-}
if [ -n "${gpu_ids}" ]; then
    [[ "${gpu_ids}" =~ ^[0-9]+(,[0-9]+)*$ ]] || die "GPU_IDS must be a comma-separated list of device ids such as" \
        "0 or 2,3, got '${gpu_ids}'"
    num_ids=$(tr ',' '\n' <<<"${gpu_ids}" | wc -l)
    [ -z "${NUM_GPUS:-}" ] || [ "${NUM_GPUS}" = "${num_ids}" ] || die "NUM_GPUS=${NUM_GPUS} but GPU_IDS" \
        "'${gpu_ids}' names ${num_ids} device(s)"
    num_gpus=${num_ids}
else
    num_gpus=${NUM_GPUS:-1}
fi
is_pos_int "${num_gpus}" || die "NUM_GPUS must be a positive integer (processes for this run), got '${num_gpus}'"
[ $((global_batch_size % num_gpus)) -eq 0 ] || die "global batch ${global_batch_size} is not divisible by the" \
    "${num_gpus} data-parallel ranks (NUM_GPUS)"
per_rank=$((global_batch_size / num_gpus))
[ "${micro_batch_size}" -le "${per_rank}" ] || micro_batch_size=${per_rank}
[ $((per_rank % micro_batch_size)) -eq 0 ] || die "the ${per_rank} samples per rank of a step (global batch" \
    "${global_batch_size} / ${num_gpus} ranks) are not a multiple of MICRO_BATCH_SIZE ${micro_batch_size}"
master_port=${MASTER_PORT:-}
[ -z "${master_port}" ] || { is_pos_int "${master_port}" && [ "${master_port}" -le 65535 ]; } \
    || die "MASTER_PORT must be a port number, got '${master_port}'"

precision=${PRECISION:-fp16}
# Gradients are summed over the micro-batches in grad_accum_dtype: fp32 for bf16, which DeepSpeed does at ZeRO-1
# only (at ZeRO-0 it would sum in bf16); the model's own dtype otherwise (DeepSpeed keeps no fp32 sum for fp16).
case "${precision}" in
    fp16) fp16_enabled=true; bf16_enabled=false; precision_flags=(--fp16); grad_accum_dtype=fp16 ;;
    bf16) fp16_enabled=false; bf16_enabled=true; precision_flags=(--bf16); grad_accum_dtype=fp32; zero_stage=1 ;;
    fp32) fp16_enabled=false; bf16_enabled=false; precision_flags=(); grad_accum_dtype=fp32 ;;
    *) die "PRECISION must be fp16, bf16 or fp32, got '${precision}'" ;;
esac
prescale_grad=true
[ "${zero_stage}" -eq 0 ] || prescale_grad=false

device_env=()
[ -z "${gpu_ids}" ] || device_env+=("CUDA_VISIBLE_DEVICES=${gpu_ids}")
case "${LAUNCHER:-deepspeed}" in
    deepspeed)
        launcher=(deepspeed)
        if [ -n "${gpu_ids}" ]; then
            launcher+=(--include "localhost:${gpu_ids}")
        else
            launcher+=(--num_gpus "${num_gpus}")
        fi
        [ -z "${master_port}" ] || launcher+=(--master_port "${master_port}")
        ;;
    torchrun)
        launcher=(torchrun --nproc_per_node "${num_gpus}")
        [ -z "${master_port}" ] || launcher+=(--master_port "${master_port}")
        [ "${#device_env[@]}" -eq 0 ] || launcher=(env "${device_env[@]}" "${launcher[@]}")
        ;;
    python)
        [ "${num_gpus}" -eq 1 ] || die "LAUNCHER=python runs one process, but NUM_GPUS is ${num_gpus}; use" \
            "LAUNCHER=deepspeed or torchrun"
        [ -z "${master_port}" ] || device_env+=("MASTER_PORT=${master_port}")
        launcher=("${PYTHON:-python}")
        [ "${#device_env[@]}" -eq 0 ] || launcher=(env "${device_env[@]}" "${launcher[@]}")
        ;;
    *) die "LAUNCHER must be deepspeed, torchrun or python, got '${LAUNCHER}'" ;;
esac

template=${DS_CONFIG_TEMPLATE:-${dir}/ds_config_bert_TEMPLATE.json}
[ -f "${template}" ] || die "DeepSpeed config template ${template} not found"

###############################################################################
### Data and paths
data_home=${DATA_HOME:-/blob/data}
if [ "${task}" = RACE ]; then
    race_dir=${RACE_DIR:-${data_home}/RACE}
    default_train="${race_dir}/train/middle ${race_dir}/train/high"
    default_valid="${race_dir}/dev/middle ${race_dir}/dev/high"  # scored separately: RACE-middle, RACE-high
else
    glue_dir=${GLUE_DIR:-${data_home}/GlueData}
    default_train="${glue_dir}/${task}/train.tsv"
    if [ "${task}" = MNLI ]; then
        default_valid="${glue_dir}/MNLI/dev_matched.tsv ${glue_dir}/MNLI/dev_mismatched.tsv"
    else
        default_valid="${glue_dir}/${task}/dev.tsv"
    fi
fi
read -r -a train_data <<<"${TRAIN_DATA:-${default_train}}"
read -r -a valid_data <<<"${VALID_DATA:-${default_valid}}"
[ "${#train_data[@]}" -ge 1 ] || die "TRAIN_DATA is empty"
[ "${#valid_data[@]}" -ge 1 ] || die "VALID_DATA is empty"

output=${OUTPUT:-${repo}/output/data_efficiency/bert_finetune_glue}
run_dir="${output}/${task}/seed${seed}_lr${lr}"
results_path="${run_dir}/results.json"
config_json="${run_dir}/ds_config.json"
checkpoint_path="${run_dir}/checkpoint"
log_file="${run_dir}/log.txt"

###############################################################################
### Command
megatron_options=(
    --task "${task}"
    --train-data "${train_data[@]}"
    --valid-data "${valid_data[@]}"
    --pretrained-checkpoint "${checkpoint}"
    --epochs "${epochs}"
    --seq-length "${seq_len}"
    --micro-batch-size "${micro_batch_size}"
    --global-batch-size "${global_batch_size}"
    --lr "${lr}"
    --lr-warmup-fraction "${lr_warmup_fraction}"
    --lr-decay-style "${lr_decay_style}"
    --weight-decay "${weight_decay}"
    --clip-grad "${clip_grad}"
    --adam-beta1 0.9
    --adam-beta2 0.999
    --seed "${seed}"
    --log-interval "${log_interval}"
    --tokenizer-type BertWordPieceLowerCase
    --results-path "${results_path}"
    "${precision_flags[@]}"
)
[ -z "${VOCAB_PATH:-}" ] || megatron_options+=(--vocab-file "${VOCAB_PATH}")
[ -z "${eval_interval}" ] || megatron_options+=(--eval-interval "${eval_interval}")
[ -z "${dropout}" ] || megatron_options+=(--hidden-dropout "${dropout}" --attention-dropout "${dropout}")
if [ "${save_checkpoint}" = true ]; then
    megatron_options+=(--save "${checkpoint_path}" --load "${checkpoint_path}")
    [ -z "${save_interval}" ] || megatron_options+=(--save-interval "${save_interval}")
fi
deepspeed_options=(
    --deepspeed
    --deepspeed_config "${config_json}"
    --zero-stage "${zero_stage}"
    --no-pipeline-parallel
)
cmd=("${launcher[@]}" "${repo}/tasks/main.py" "${megatron_options[@]}" "${deepspeed_options[@]}")

missing=()
[ -d "${checkpoint}" ] || missing+=("${checkpoint} (CHECKPOINT: the pretraining --save directory)")
for f in "${train_data[@]}" "${valid_data[@]}"; do
    [ -e "${f}" ] || missing+=("${f}")
done
[ -z "${VOCAB_PATH:-}" ] || [ -f "${VOCAB_PATH}" ] || missing+=("${VOCAB_PATH} (VOCAB_PATH)")
if [ "${DRY_RUN:-0}" != 1 ] && [ "${#missing[@]}" -gt 0 ]; then
    die "not found: ${missing[0]}"
fi

###############################################################################
### DeepSpeed config: fill the template (atomically)
sed_escape() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }
subs=()
add_sub() { subs+=(-e "s|\\b$1\\b|$(sed_escape "$2")|g"); }
add_sub CONFIG_BATCH_SIZE "${global_batch_size}"
add_sub CONFIG_MBSIZE "${micro_batch_size}"
add_sub CONFIG_LOG_INTERVAL "${log_interval}"
add_sub CONFIG_ZERO_STAGE "${zero_stage}"
add_sub CONFIG_CLIP_GRAD "${clip_grad}"
add_sub CONFIG_PRESCALE_GRAD "${prescale_grad}"
add_sub CONFIG_FP16_ENABLED "${fp16_enabled}"
add_sub CONFIG_BF16_ENABLED "${bf16_enabled}"
add_sub CONFIG_GRAD_ACCUM_DTYPE "\"${grad_accum_dtype}\""
mkdir -p "${run_dir}"
tmp_json=$(mktemp "${config_json}.XXXXXX")
trap 'rm -f "${tmp_json}"' EXIT
sed "${subs[@]}" "${template}" >"${tmp_json}"
left=$(grep -o 'CONFIG_[A-Z0-9_]*' "${tmp_json}" | sort -u | tr '\n' ' ' || true)
[ -z "${left}" ] || die "${template}: placeholders left unfilled: ${left}"
chmod 644 "${tmp_json}"
mv -f "${tmp_json}" "${config_json}"
trap - EXIT

if [ "${DRY_RUN:-0}" = 1 ]; then
    for m in "${missing[@]+"${missing[@]}"}"; do
        echo "note: needed for a real run, not found: ${m}" >&2
    done
    echo "ds_config: ${config_json}"
    printf 'command:'
    printf ' %q' "${cmd[@]}"
    printf '\n'
    exit 0
fi
echo "${task} seed ${seed} lr ${lr}: log ${log_file}"
{
    printf 'command:'
    printf ' %q' "${cmd[@]}"
    printf '\n'
} >>"${log_file}"
"${cmd[@]}" 2>&1 | tee -a "${log_file}"
