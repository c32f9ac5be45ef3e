#!/bin/bash
# GPT-3 1.3B pretraining on the Pile with DeepSpeed Data Efficiency: curriculum learning (CL) and/or
# random layerwise token dropping (random-LTD). Normally started by ds_pretrain_gpt_1.3B_dense_run.sh
# (uncomment one block there); it can also be called directly with the same positional arguments as
# Megatron-DeepSpeed's script:
#
#    1 lr                          2 train_tokens_in_billion
#    3 ltd_enabled (true|false)    4 ltd_start (reserved length at step 0)   5 ltd_step (steps to reach seq_len)
#    6 cl_enabled (true|false)     7 cl_num_metric (1|2)
#    8-17  1st CL metric: name index_to_sample_path index_to_metric_path difficulty_type clustering_type
#                         min_difficulty max_difficulty total_curriculum_step difficulty_step root_degree
#   18-27  2nd CL metric: the same ten values
#
# Give 2, 5, 17 or 27 arguments. Left out, random-LTD is off (start = seq_len, 1 step) and CL is off
# (one dummy metric with min = max = seq_len).
#
# What it does: derives the batch/schedule/checkpoint values below, fills ds_config_gpt_1clmetric_TEMPLATE.json
# or ds_config_gpt_2clmetrics_TEMPLATE.json (by cl_num_metric) into ${OUTPUT_HOME}/ds_config/<job>.json, and
# launches pretrain_gpt.py. With CL on, the train sample order is pinned to the index maps that the analysis
# (../ds_analyze_gpt_data_map.sh) built, because the CL index files refer to those sample positions.
#
# Environment (all optional):
#   DRY_RUN=1                  write the ds_config, print "ds_config: <path>" and "command: <launch command>",
#                              do not launch
#   LAUNCHER                   deepspeed (default) | torchrun | python (one process)
#   NUM_NODE, NUM_GPUS_PERNODE default: lines of ${HOSTFILE:-/job/hostfile} (or 1); `nvidia-smi -L` count (or 1)
#   HOSTFILE                   passed to the deepspeed launcher as --hostfile
#   PRECISION                  fp16 (default, as upstream) | bf16 | fp32. DeepSpeed has no fp16 on CPU. bf16
#                              accumulates the micro-batch gradients in fp32 (ZeRO-1, data_types.grad_accum_dtype)
#   MICRO_BATCH_SIZE           samples per GPU per forward/backward (default 8; lower it if a GPU runs out of
#                              memory, raise it if there is room). The global batch stays the recipe's: each step
#                              accumulates global / (micro x GPUs) micro-batches; with more GPUs than
#                              global / micro the micro-batch shrinks to global / GPUs
#   DATA_HOME, DATA_PATH       tokenized Pile prefix (default ${DATA_HOME}/pile_text_document)
#   VOCAB_PATH, MERGE_PATH     GPT-2 BPE files: use the same ones as the analysis
#   OUTPUT_HOME                checkpoints, logs, TensorBoard, ds_configs and CL cluster files
#   INDEX_MAP_PREFIX           prefix of the analysis index maps (default: DATA_PATH, where the analysis
#                              writes them); ANALYSIS_NUM_EPOCHS (default 1) is part of their names
#   PYTHON                     interpreter for LAUNCHER=python (default python)
set -euo pipefail

die() {
    echo "error: $(basename "${BASH_SOURCE[0]}"): $*" >&2
    exit 2
}
is_int() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_number() { [[ "$1" =~ ^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$ ]]; }

nargs=$#
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${dir}/../../../.." && pwd)"

case $# in
    2 | 5 | 17 | 27) ;;
    *) die "expected 2, 5, 17 or 27 positional arguments (lr train_tokens_in_billion [ltd_enabled ltd_start" \
        "ltd_step [cl_enabled cl_num_metric + 10 values per CL metric]]), got $#" ;;
esac

###############################################################################
### Model: GPT-3 1.3B. Other GPT-3 sizes (layers / hidden / heads / global batch / paper lr / init std),
### uncomment one line to switch; init_std follows sqrt(1/(3*hidden)). lr itself is argument 1.
seq_len=2048
# model_size=0.125; num_layers=12; hidden_size=768; num_attn_heads=12; global_batch_size=256;  init_std=0.02   # lr 6.0e-4
# model_size=0.35;  num_layers=24; hidden_size=1024;  num_attn_heads=16; global_batch_size=256;  init_std=0.018  # lr 3.0e-4
# model_size=0.76;  num_layers=24; hidden_size=1536;  num_attn_heads=16; global_batch_size=256;  init_std=0.015  # lr 2.5e-4
model_size=1.3;     num_layers=24; hidden_size=2048;  num_attn_heads=16; global_batch_size=512;  init_std=0.013  # lr 2.0e-4
# model_size=2.7;   num_layers=32; hidden_size=2560;  num_attn_heads=32; global_batch_size=512;  init_std=0.011  # lr 1.6e-4
# model_size=6.7;   num_layers=32; hidden_size=4096;  num_attn_heads=32; global_batch_size=1024; init_std=0.009  # lr 1.2e-4
# model_size=13;    num_layers=40; hidden_size=5120;  num_attn_heads=40; global_batch_size=1024; init_std=0.008  # lr 1.0e-4
# model_size=175;   num_layers=96; hidden_size=12288; num_attn_heads=96; global_batch_size=1536; init_std=0.005  # lr 0.6e-4
min_lr=1.0e-6

###############################################################################
### Positional arguments
lr=$1
train_tokens_in_billion=$2
ltd_enabled=${3:-false}
ltd_start=${4:-${seq_len}}
ltd_step=${5:-1}
cl_enabled=${6:-false}
cl_num_metric=${7:-1}
cl_1st_metric=${8:-dummy}
cl_1st_index_to_sample_path=${9:-dummy}
cl_1st_index_to_metric_path=${10:-dummy}
cl_1st_difficulty_type=${11:-value}
cl_1st_clustering_type=${12:-single_cluster}
cl_1st_min=${13:-${seq_len}}
cl_1st_max=${14:-${seq_len}}
cl_1st_total_step=${15:-1}
cl_1st_difficulty_step=${16:-1}
cl_1st_root=${17:-1}
cl_2nd_metric=${18:-dummy}
cl_2nd_index_to_sample_path=${19:-dummy}
cl_2nd_index_to_metric_path=${20:-dummy}
cl_2nd_difficulty_type=${21:-value}
cl_2nd_clustering_type=${22:-single_cluster}
cl_2nd_min=${23:-${seq_len}}
cl_2nd_max=${24:-${seq_len}}
cl_2nd_total_step=${25:-1}
cl_2nd_difficulty_step=${26:-1}
cl_2nd_root=${27:-1}

is_number "${lr}" || die "argument 1 (lr) must be a number such as 2.0e-4, got '${lr}'"
is_int "${train_tokens_in_billion}" || die "argument 2 (train_tokens_in_billion) must be an integer, got" \
    "'${train_tokens_in_billion}'"
for pair in "3 ltd_enabled ${ltd_enabled}" "6 cl_enabled ${cl_enabled}"; do
    set -- ${pair}
    [[ "$3" == true || "$3" == false ]] || die "argument $1 ($2) must be true or false, got '$3'"
done
for pair in "4 ltd_start ${ltd_start}" "5 ltd_step ${ltd_step}" "13 cl_1st_min ${cl_1st_min}" \
    "14 cl_1st_max ${cl_1st_max}" "15 cl_1st_total_step ${cl_1st_total_step}" \
    "16 cl_1st_difficulty_step ${cl_1st_difficulty_step}" "23 cl_2nd_min ${cl_2nd_min}" \
    "24 cl_2nd_max ${cl_2nd_max}" "25 cl_2nd_total_step ${cl_2nd_total_step}" \
    "26 cl_2nd_difficulty_step ${cl_2nd_difficulty_step}"; do
    set -- ${pair}
    is_int "$3" || die "argument $1 ($2) must be a non-negative integer, got '$3'"
done
is_number "${cl_1st_root}" || die "argument 17 (cl_1st_root) must be a number, got '${cl_1st_root}'"
is_number "${cl_2nd_root}" || die "argument 27 (cl_2nd_root) must be a number, got '${cl_2nd_root}'"
case "${cl_num_metric}" in
    1) template="${dir}/ds_config_gpt_1clmetric_TEMPLATE.json"
       [ "${nargs}" -ne 27 ] || die "27 arguments give two CL metrics, but argument 7 (cl_num_metric) is 1" ;;
    2) template="${dir}/ds_config_gpt_2clmetrics_TEMPLATE.json"
       [ "${nargs}" -eq 27 ] || die "argument 7 (cl_num_metric) is 2: give 27 arguments (10 per CL metric)," \
           "got ${nargs}" ;;
    *) die "argument 7 (cl_num_metric) must be 1 or 2, got '${cl_num_metric}'" ;;
esac
[ -f "${template}" ] || die "template ${template} not found"

###############################################################################
### Token budget and learning-rate schedule (by tokens: random-LTD and CL change tokens per step)
train_tokens=$((train_tokens_in_billion * 1000000000))
# Sample/iteration budgets only need to be "large enough": --train-tokens ends the run.
train_samples=$((300 * 1000000000 * 2 / seq_len))
# 3000M warmup tokens (GPT-3 used 375M with batch-size warmup, which is not used here).
lr_warmup_tokens_in_million=3000
lr_warmup_tokens=$((lr_warmup_tokens_in_million * 1000000))
lr_decay_tokens_in_billion=${train_tokens_in_billion}
lr_decay_tokens=${train_tokens}
lr_decay_style=cosine

###############################################################################
### Parallelism and batch: data parallel only (CL and random-LTD need pipeline parallelism off)
mp_size=1
pp_size=1
hostfile=${HOSTFILE:-/job/hostfile}
if [ -n "${NUM_GPUS_PERNODE:-}" ]; then
    num_gpus_pernode=${NUM_GPUS_PERNODE}
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    num_gpus_pernode=$(nvidia-smi -L | grep -c '^GPU')
else
    num_gpus_pernode=1
fi
if [ -n "${NUM_NODE:-}" ]; then
    num_node=${NUM_NODE}
elif [ -f "${hostfile}" ]; then
    num_node=$(grep -cv '^[[:space:]]*\(#\|$\)' "${hostfile}")
else
    num_node=1
fi
is_int "${num_gpus_pernode}" && [ "${num_gpus_pernode}" -ge 1 ] || die "NUM_GPUS_PERNODE must be >= 1, got" \
    "'${num_gpus_pernode}'"
is_int "${num_node}" && [ "${num_node}" -ge 1 ] || die "NUM_NODE must be >= 1, got '${num_node}'"
num_gpus=$((num_node * num_gpus_pernode))
dp_size=$((num_gpus / mp_size / pp_size))
# The recipe's global batch on any number of GPUs: each rank takes global_batch / dp samples per step, in
# micro-batches of MICRO_BATCH_SIZE (gradient accumulation over global_batch / (micro x dp) of them).
[ $((global_batch_size % dp_size)) -eq 0 ] || die "global batch ${global_batch_size} is not divisible by" \
    "the ${dp_size} data-parallel ranks (NUM_NODE x NUM_GPUS_PERNODE)"
per_rank=$((global_batch_size / dp_size))
batch_size=${MICRO_BATCH_SIZE:-8}
is_int "${batch_size}" && [ "${batch_size}" -ge 1 ] || die "MICRO_BATCH_SIZE must be a positive integer, got" \
    "'${batch_size}'"
[ "${batch_size}" -le "${per_rank}" ] || batch_size=${per_rank}
[ $((per_rank % batch_size)) -eq 0 ] || die "the ${per_rank} samples per rank of a step (global batch" \
    "${global_batch_size} / ${dp_size} ranks) are not a multiple of MICRO_BATCH_SIZE ${batch_size}"

###############################################################################
### Optimizer, precision, ZeRO, misc
zero_stage=1
clip_grad=1.0
prescale_grad=true
[ "${zero_stage}" -eq 0 ] || prescale_grad=false
precision=${PRECISION:-fp16}
# Gradients are summed over the micro-batches in this dtype: fp32 for bf16 (DeepSpeed does that at ZeRO-1 only),
# the model's own dtype otherwise (DeepSpeed keeps no fp32 accumulation for fp16).
case "${precision}" in
    fp16) fp16_enabled=true; bf16_enabled=false; precision_flags=(--fp16); grad_accum_dtype=fp16 ;;
    bf16) fp16_enabled=false; bf16_enabled=true; precision_flags=(--bf16); grad_accum_dtype=fp32 ;;
    fp32) fp16_enabled=false; bf16_enabled=false; precision_flags=(); grad_accum_dtype=fp32 ;;
    *) die "PRECISION must be fp16, bf16 or fp32, got '${precision}'" ;;
esac
# Launcher (checked before anything is written)
case "${LAUNCHER:-deepspeed}" in
    deepspeed)
        launcher=(deepspeed --num_nodes "${num_node}" --num_gpus "${num_gpus_pernode}")
        [ -z "${HOSTFILE:-}" ] || launcher+=(--hostfile "${HOSTFILE}")
        ;;
    torchrun) launcher=(torchrun --nnodes "${num_node}" --nproc_per_node "${num_gpus_pernode}") ;;
    python)
        [ "${num_gpus}" -eq 1 ] || die "LAUNCHER=python runs one process, but NUM_NODE x NUM_GPUS_PERNODE is" \
            "${num_gpus}; use LAUNCHER=deepspeed or torchrun"
        launcher=("${PYTHON:-python}")
        ;;
    *) die "LAUNCHER must be deepspeed, torchrun or python, got '${LAUNCHER}'" ;;
esac

activation_checkpoint=true
log_interval=100
eval_iters=10
eval_interval=100
num_save=100
estimated_train_iter=$((train_tokens / seq_len / global_batch_size))
save_interval=$((estimated_train_iter / num_save))
[ "${save_interval}" -ge 1 ] || save_interval=1
exit_duration=30000000  # minutes: effectively never
seed=1234
num_workers=0

###############################################################################
### random-LTD: every layer but the first and the last drops tokens
ltd_total_layers=${num_layers}
ltd_layer_num=$((num_layers - 2))
ltd_layer_ids="[$(seq -s ', ' 1 "${ltd_layer_num}")]"
de_enabled=false
if [ "${ltd_enabled}" = true ] || [ "${cl_enabled}" = true ]; then
    de_enabled=true
fi

###############################################################################
### Paths
data_home=${DATA_HOME:-/blob/data/the_pile_public_merged_nopreprocessing}
data_path=${DATA_PATH:-${data_home}/pile_text_document}
vocab_path=${VOCAB_PATH:-${repo}/data/tokenizers/gpt2-bpe/vocab.json}
merge_path=${MERGE_PATH:-${repo}/data/tokenizers/gpt2-bpe/merges.txt}
output_home=${OUTPUT_HOME:-${repo}/output/data_efficiency/gpt_pretrain}
# Index maps written by the analysis (megatron/data/gpt_dataset.py names them
# {prefix}_train_indexmap_exact{E}ep_{seq}sl_{seed}s_{doc,sample,shuffle}_idx.npy).
index_map_prefix=${INDEX_MAP_PREFIX:-${data_path}}
analysis_num_epochs=${ANALYSIS_NUM_EPOCHS:-1}
index_map_base="${index_map_prefix}_train_indexmap_exact${analysis_num_epochs}ep_${seq_len}sl_${seed}s"

jobname="gpt_${model_size}B_tok${train_tokens_in_billion}B_lr${lr}_min${min_lr}_w${lr_warmup_tokens_in_million}M"
jobname+="_d${lr_decay_tokens_in_billion}B_${lr_decay_style}_gbs${global_batch_size}_mbs${batch_size}_g${num_gpus}"
[ "${zero_stage}" -eq 0 ] || jobname+="_z${zero_stage}"
jobname+="_seed${seed}"
[ "${ltd_enabled}" = false ] || jobname+="_ltd_${ltd_start}_${ltd_step}"
if [ "${cl_enabled}" = true ]; then
    jobname+="_cl_${cl_1st_metric}_${cl_1st_min}_${cl_1st_max}_${cl_1st_total_step}_${cl_1st_root}"
    if [ "${cl_num_metric}" -eq 2 ]; then
        jobname+="_cl2_${cl_2nd_metric}_${cl_2nd_min}_${cl_2nd_max}_${cl_2nd_total_step}_${cl_2nd_root}"
    fi
fi
host="${HOSTNAME:-$(hostname)}"
current_time=$(date "+%Y.%m.%d_%H.%M.%S")
checkpoint_path="${output_home}/checkpoint/${jobname}"
tensorboard_path="${output_home}/tensorboard/${jobname}_${host}_${current_time}"
log_file="${output_home}/log/${jobname}_${host}_${current_time}.log"
data_cluster_path="${output_home}/data_cluster/${jobname}"
config_json="${output_home}/ds_config/${jobname}.json"

###############################################################################
### The DeepSpeed config: fill the template (atomically: temp file in the same directory, then rename)
sed_escape() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }
subs=()
add_sub() { subs+=(-e "s|\\b$1\\b|$(sed_escape "$2")|g"); }
add_sub CONFIG_BATCH_SIZE "${global_batch_size}"
add_sub CONFIG_MBSIZE "${batch_size}"
add_sub CONFIG_LOG_INTERVAL "${log_interval}"
add_sub CONFIG_ZERO_STAGE "${zero_stage}"
add_sub CONFIG_CLIP_GRAD "${clip_grad}"
add_sub CONFIG_PRESCALE_GRAD "${prescale_grad}"
add_sub CONFIG_FP16_ENABLED "${fp16_enabled}"
add_sub CONFIG_BF16_ENABLED "${bf16_enabled}"
add_sub CONFIG_GRAD_ACCUM_DTYPE "\"${grad_accum_dtype}\""
add_sub CONFIG_DE_ENABLED "${de_enabled}"
add_sub CONFIG_SEED "${seed}"
add_sub CONFIG_LTD_ENABLED "${ltd_enabled}"
add_sub CONFIG_LTD_TOTAL_LAYERS "${ltd_total_layers}"
add_sub CONFIG_LTD_LAYER_NUM "${ltd_layer_num}"
add_sub CONFIG_LTD_LAYER_IDS "${ltd_layer_ids}"
add_sub CONFIG_LTD_MIN "${ltd_start}"
add_sub CONFIG_LTD_MAX "${seq_len}"
add_sub CONFIG_LTD_STEP "${ltd_step}"
add_sub CONFIG_CL_ENABLED "${cl_enabled}"
add_sub CONFIG_NUM_WORKERS "${num_workers}"
add_sub CONFIG_CL_CLUSTER_PATH "${data_cluster_path}"
for n in 1 2; do
    [ "${n}" -eq 1 ] && p=cl_1st || p=cl_2nd
    name_var="${p}_metric"; sample_var="${p}_index_to_sample_path"; metric_var="${p}_index_to_metric_path"
    dtype_var="${p}_difficulty_type"; ctype_var="${p}_clustering_type"; min_var="${p}_min"; max_var="${p}_max"
    total_var="${p}_total_step"; dstep_var="${p}_difficulty_step"; root_var="${p}_root"
    add_sub "CONFIG_CL${n}_NAME" "${!name_var}"
    add_sub "CONFIG_CL${n}_SAMPLE_PATH" "${!sample_var}"
    add_sub "CONFIG_CL${n}_METRIC_PATH" "${!metric_var}"
    add_sub "CONFIG_CL${n}_DIFF_TYPE" "${!dtype_var}"
    add_sub "CONFIG_CL${n}_CLUSTER_TYPE" "${!ctype_var}"
    add_sub "CONFIG_CL${n}_MIN" "${!min_var}"
    add_sub "CONFIG_CL${n}_MAX" "${!max_var}"
    add_sub "CONFIG_CL${n}_TOTAL_STEP" "${!total_var}"
    add_sub "CONFIG_CL${n}_DIFF_STEP" "${!dstep_var}"
    add_sub "CONFIG_CL${n}_ROOT" "${!root_var}"
done
mkdir -p "$(dirname "${config_json}")"
tmp_json=$(mktemp "${config_json}.XXXXXX")
trap 'rm -f "${tmp_json}"' EXIT
sed "${subs[@]}" "${template}" >"${tmp_json}"
left=$(grep -o 'CONFIG_[A-Z0-9_]*' "${tmp_json}" | sort -u | tr '\n' ' ' || true)
[ -z "${left}" ] || die "${template}: placeholders left unfilled: ${left}"
chmod 644 "${tmp_json}"
mv -f "${tmp_json}" "${config_json}"
trap - EXIT

###############################################################################
### Megatron / DeepSpeed flags
megatron_options=(
    --override-opt_param-scheduler
    --adam-beta1 0.9
    --adam-beta2 0.95
    --tensor-model-parallel-size "${mp_size}"
    --init-method-std "${init_std}"
    --lr-decay-tokens "${lr_decay_tokens}"
    --lr-warmup-tokens "${lr_warmup_tokens}"
    --micro-batch-size "${batch_size}"
    --exit-duration-in-mins "${exit_duration}"
    --global-batch-size "${global_batch_size}"
    --num-layers "${num_layers}"
    --hidden-size "${hidden_size}"
    --num-attention-heads "${num_attn_heads}"
    --seq-length "${seq_len}"
    --max-position-embeddings "${seq_len}"
    --train-tokens "${train_tokens}"
    --train-samples "${train_samples}"
    --lr "${lr}"
    --min-lr "${min_lr}"
    --lr-decay-style "${lr_decay_style}"
    --split 949,50,1
    --log-interval "${log_interval}"
    --eval-interval "${eval_interval}"
    --eval-iters "${eval_iters}"
    --save-interval "${save_interval}"
    --weight-decay 0.1
    --clip-grad "${clip_grad}"
    --hysteresis 2
    --num-workers "${num_workers}"
    --seed "${seed}"
    --load "${checkpoint_path}"
    --save "${checkpoint_path}"
    --tensorboard-queue-size 1
    --log-timers-to-tensorboard
    --log-batch-size-to-tensorboard
    --log-validation-ppl-to-tensorboard
    --tensorboard-dir "${tensorboard_path}"
    "${precision_flags[@]}"
)
[ "${activation_checkpoint}" = false ] || megatron_options+=(--checkpoint-activations)
[ "${ltd_enabled}" = false ] || megatron_options+=(--random-ltd)
if [ "${cl_enabled}" = true ]; then
    megatron_options+=(
        --data-efficiency-curriculum-learning
        --train-doc-idx-path "${index_map_base}_doc_idx.npy"
        --train-sample-idx-path "${index_map_base}_sample_idx.npy"
        --train-shuffle-idx-path "${index_map_base}_shuffle_idx.npy"
    )
fi
data_options=(
    --vocab-file "${vocab_path}"
    --merge-file "${merge_path}"
    --data-path "${data_path}"
    --data-impl mmap
    --tokenizer-type GPT2BPETokenizer
)
deepspeed_options=(
    --deepspeed
    --deepspeed_config "${config_json}"
    --zero-stage "${zero_stage}"
    --pipeline-model-parallel-size "${pp_size}"
    --no-pipeline-parallel
)
[ "${activation_checkpoint}" = false ] || deepspeed_options+=(--deepspeed-activation-checkpointing)

cmd=("${launcher[@]}" "${repo}/pretrain_gpt.py" "${megatron_options[@]}" "${data_options[@]}"
    "${deepspeed_options[@]}")

###############################################################################
### Files a real run needs (the analysis writes the CL ones)
missing=()
for f in "${data_path}.bin" "${data_path}.idx"; do
    [ -f "${f}" ] || missing+=("${f} (tokenized data: tools/preprocess_data.py)")
done
if [ "${cl_enabled}" = true ]; then
    for f in "${index_map_base}_doc_idx.npy" "${index_map_base}_sample_idx.npy" "${index_map_base}_shuffle_idx.npy"; do
        [ -f "${f}" ] || missing+=("${f} (index map: written by ../ds_analyze_gpt_data_map.sh)")
    done
    for n in 1 2; do
        [ "${n}" -le "${cl_num_metric}" ] || continue
        [ "${n}" -eq 1 ] && p=cl_1st || p=cl_2nd
        ctype_var="${p}_clustering_type"; dtype_var="${p}_difficulty_type"
        sample_var="${p}_index_to_sample_path"; metric_var="${p}_index_to_metric_path"
        [ "${!ctype_var}" = schedule_based ] || continue
        paths=("${!sample_var}")
        [ "${!dtype_var}" != value ] || paths+=("${!metric_var}")
        for f in "${paths[@]}"; do
            hint="CL index: run ../ds_analyze_gpt_data_map.sh and ../ds_analyze_gpt_data_reduce.sh, first with"
            hint+=" METRIC=total_vocab_freq, then METRIC=vocab_rarity"
            [ -f "${f}.idx" ] || missing+=("${f}.bin/.idx (${hint})")
        done
    done
fi

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
if [ "${#missing[@]}" -gt 0 ]; then
    die "not found: ${missing[0]}"
fi
mkdir -p "${checkpoint_path}" "${tensorboard_path}" "$(dirname "${log_file}")"
[ "${cl_enabled}" = false ] || mkdir -p "${data_cluster_path}"
echo "ds_config: ${config_json}" | tee -a "${log_file}"
echo "log: ${log_file}"
"${cmd[@]}" 2>&1 | tee -a "${log_file}"
