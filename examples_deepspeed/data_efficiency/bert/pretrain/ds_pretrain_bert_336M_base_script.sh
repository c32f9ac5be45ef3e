#!/bin/bash
# BERT-Large (336M) pretraining on the Pile with DeepSpeed Data Efficiency: curriculum learning (CL) and/or
# random layerwise token dropping (random-LTD). Normally started by ds_pretrain_bert_336M_run.sh (uncomment one
# block there); it takes the same positional arguments as Megatron-DeepSpeed's BERT script:
#
#    1 lr                          2 train_iters_in_million (the token budget is this x 1e6 x 512 x 1024)
#    3 ltd_enabled (true|false)    4 ltd_start (reserved length at step 0)
#    5 ltd_step_in_million (steps to reach seq_len)                        6 dropout (used with random-LTD)
#    7 cl_enabled (true|false)     8 cl_num_metric (1|2)
#    9-18  1st CL metric: name index_to_sample_path index_to_metric_path difficulty_type clustering_type
#                         min_difficulty max_difficulty total_curriculum_step_in_million difficulty_step root_degree
#   19-28  2nd CL metric: the same ten values
#
# Give 2, 6, 18 or 28 arguments. Millions may be written 0.96 or 96e-2. Left out, random-LTD is off
# (start = seq_len, 1M steps) and CL is off (one dummy metric with min = max = seq_len).
#
# What it does: derives the batch/schedule/checkpoint values below, fills ds_config_bert_1clmetric_TEMPLATE.json
# or ds_config_bert_2clmetrics_TEMPLATE.json (by cl_num_metric) into ${OUTPUT_HOME}/ds_config/<job>.json, and
# launches pretrain_bert.py. With CL on, the train split is pinned to the samples mapping that the analysis
# (../ds_analyze_bert_data_map.sh, 5 epochs) built: the CL index files name positions in exactly that mapping.
#
# Environment (all optional):
#   DRY_RUN=1                  write the ds_config, print "ds_config: <path>" and "command: <launch command>",
#                              do not launch
#   LAUNCHER                   deepspeed (default) | torchrun | python (one process)
#   NUM_NODE, NUM_GPUS_PERNODE default: lines of ${HOSTFILE:-/job/hostfile} (or 1); `nvidia-smi -L` count (or 1)
#   HOSTFILE                   passed to the deepspeed launcher as --hostfile
#   PRECISION                  fp16 (default, as upstream) | bf16 | fp32. DeepSpeed has no fp16 on CPU. bf16
#                              runs at ZeRO-1 and accumulates the micro-batch gradients in fp32
#                              (data_types.grad_accum_dtype); fp16/fp32 keep upstream's ZeRO-0
#   MICRO_BATCH_SIZE           samples per GPU per forward/backward (default 16, upstream's 1024 / 64 GPUs). The
#                              global batch stays 1024: each step accumulates 1024 / (micro x GPUs) micro-batches;
#                              with more GPUs than 1024 / micro the micro-batch shrinks to 1024 / GPUs
#   DATA_HOME, DATA_PATH       sentence-level Pile prefix (default ${DATA_HOME}/pile_bert_train_text_sentence)
#   VOCAB_PATH                 BERT WordPiece vocabulary: use the same one as the analysis
#   OUTPUT_HOME                checkpoints, logs, TensorBoard, ds_configs and CL cluster files
#   INDEX_MAP_PREFIX           prefix of the analysis samples mapping (default: DATA_PATH, where the analysis
#                              writes it); ANALYSIS_NUM_EPOCHS (default 5) is part of its name
#   PYTHON                     interpreter for LAUNCHER=python (default python)
set -euo pipefail

die() {
    echo "error: $(basename "${BASH_SOURCE[0]}"): $*" >&2
    exit 2
}
is_int() { [[ "$1" =~ ^[0-9]+$ ]]; }
is_number() { [[ "$1" =~ ^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$ ]]; }
# "0.96" or "96e-2" million -> 960000 (rounded to the nearest integer)
millions() { awk -v x="$1" 'BEGIN { printf "%.0f\n", x * 1000000 }'; }

nargs=$#
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${dir}/../../../.." && pwd)"

case $# in
    2 | 6 | 18 | 28) ;;
    *) die "expected 2, 6, 18 or 28 positional arguments (lr train_iters_in_million [ltd_enabled ltd_start" \
        "ltd_step_in_million dropout [cl_enabled cl_num_metric + 10 values per CL metric]]), got $#" ;;
esac

###############################################################################
### Model: BERT-Large, as in the Megatron-LM paper. Other sizes (layers / hidden / heads / init std), uncomment
### one line to switch; init_std follows sqrt(1/(3*hidden)) for the larger ones. lr itself is argument 1.
seq_len=512
global_batch_size=1024
# model_size=0.11;  num_layers=12; hidden_size=768;  num_attn_heads=12; init_std=0.02   # BERT-Base shape
model_size=0.336;   num_layers=24; hidden_size=1024; num_attn_heads=16; init_std=0.02   # BERT-Large
# model_size=1.3;   num_layers=24; hidden_size=2048; num_attn_heads=32; init_std=0.013
# model_size=3.9;   num_layers=48; hidden_size=2560; num_attn_heads=40; init_std=0.011  # NaN loss on the Pile upstream
min_lr=1.0e-5
# The BERT samples mapping (megatron/data/bert_dataset.py) depends on this; the analysis uses the same default.
short_seq_prob=0.1

###############################################################################
### Positional arguments
lr=$1
train_iters_in_million=$2
ltd_enabled=${3:-false}
ltd_start=${4:-${seq_len}}
ltd_step_in_million=${5:-1}
dropout=${6:-0.1}
cl_enabled=${7:-false}
cl_num_metric=${8:-1}
cl_1st_metric=${9:-dummy}
cl_1st_index_to_sample_path=${10:-dummy}
cl_1st_index_to_metric_path=${11:-dummy}
cl_1st_difficulty_type=${12:-value}
cl_1st_clustering_type=${13:-single_cluster}
cl_1st_min=${14:-${seq_len}}
cl_1st_max=${15:-${seq_len}}
cl_1st_total_step_in_million=${16:-1}
cl_1st_difficulty_step=${17:-1}
cl_1st_root=${18:-1}
cl_2nd_metric=${19:-dummy}
cl_2nd_index_to_sample_path=${20:-dummy}
cl_2nd_index_to_metric_path=${21:-dummy}
cl_2nd_difficulty_type=${22:-value}
cl_2nd_clustering_type=${23:-single_cluster}
cl_2nd_min=${24:-${seq_len}}
cl_2nd_max=${25:-${seq_len}}
cl_2nd_total_step_in_million=${26:-1}
cl_2nd_difficulty_step=${27:-1}
cl_2nd_root=${28:-1}

is_number "${lr}" || die "argument 1 (lr) must be a number such as 1e-4, got '${lr}'"
for pair in "2 train_iters_in_million ${train_iters_in_million}" "5 ltd_step_in_million ${ltd_step_in_million}" \
    "16 cl_1st_total_step_in_million ${cl_1st_total_step_in_million}" \
    "26 cl_2nd_total_step_in_million ${cl_2nd_total_step_in_million}"; do
    set -- ${pair}
    is_number "$3" && [ "$(millions "$3")" -ge 1 ] || die "argument $1 ($2) must be a positive number of" \
        "millions such as 2, 1.34 or 96e-2, got '$3'"
done
for pair in "3 ltd_enabled ${ltd_enabled}" "7 cl_enabled ${cl_enabled}"; do
    set -- ${pair}
    [[ "$3" == true || "$3" == false ]] || die "argument $1 ($2) must be true or false, got '$3'"
done
is_number "${dropout}" && awk -v d="${dropout}" 'BEGIN { exit !(d <= 1) }' || die "argument 6 (dropout) must be a" \
    "number in [0, 1], got '${dropout}'"
for pair in "4 ltd_start ${ltd_start}" "14 cl_1st_min ${cl_1st_min}" "15 cl_1st_max ${cl_1st_max}" \
    "17 cl_1st_difficulty_step ${cl_1st_difficulty_step}" "24 cl_2nd_min ${cl_2nd_min}" \
    "25 cl_2nd_max ${cl_2nd_max}" "27 cl_2nd_difficulty_step ${cl_2nd_difficulty_step}"; do
    set -- ${pair}
    is_int "$3" || die "argument $1 ($2) must be a non-negative integer, got '$3'"
done
is_number "${cl_1st_root}" || die "argument 18 (cl_1st_root) must be a number, got '${cl_1st_root}'"
is_number "${cl_2nd_root}" || die "argument 28 (cl_2nd_root) must be a number, got '${cl_2nd_root}'"
case "${cl_num_metric}" in
    1) template="${dir}/ds_config_bert_1clmetric_TEMPLATE.json"
       [ "${nargs}" -ne 28 ] || die "28 arguments give two CL metrics, but argument 8 (cl_num_metric) is 1" ;;
    2) template="${dir}/ds_config_bert_2clmetrics_TEMPLATE.json"
       [ "${nargs}" -eq 28 ] || die "argument 8 (cl_num_metric) is 2: give 28 arguments (10 per CL metric)," \
           "got ${nargs}" ;;
    *) die "argument 8 (cl_num_metric) must be 1 or 2, got '${cl_num_metric}'" ;;
esac
[ -f "${template}" ] || die "template ${template} not found"
ltd_step=$(millions "${ltd_step_in_million}")
cl_1st_total_step=$(millions "${cl_1st_total_step_in_million}")
cl_2nd_total_step=$(millions "${cl_2nd_total_step_in_million}")

###############################################################################
### Token budget and learning-rate schedule. Megatron-LM trained 2M iterations; here the run ends on tokens
### (--train-tokens), because CL and random-LTD change the tokens of a step. --train-iters only has to be
### large enough for the samples mapping.
train_iters_exact=$(millions "${train_iters_in_million}")
train_tokens=$((train_iters_exact * seq_len * global_batch_size))
train_tokens_in_billion=$(awk -v t="${train_tokens}" 'BEGIN { printf "%.0f\n", t / 1e9 }')
train_iters=4000000
# Warmup stays iteration-based (Megatron-LM's 10000 iterations); decay is linear over the token budget.
lr_warmup_iters=10000
lr_decay_tokens_in_billion=${train_tokens_in_billion}
lr_decay_tokens=${train_tokens}
lr_decay_style=linear

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
batch_size=${MICRO_BATCH_SIZE:-16}
is_int "${batch_size}" && [ "${batch_size}" -ge 1 ] || die "MICRO_BATCH_SIZE must be a positive integer, got" \
    "'${batch_size}'"
[ "${batch_size}" -le "${per_rank}" ] || batch_size=${per_rank}
[ $((per_rank % batch_size)) -eq 0 ] || die "the ${per_rank} samples per rank of a step (global batch" \
    "${global_batch_size} / ${dp_size} ranks) are not a multiple of MICRO_BATCH_SIZE ${batch_size}"

###############################################################################
### Optimizer, precision, ZeRO, misc
zero_stage=0
clip_grad=1.0
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

# BERT-Large at seq 512 fits without recomputation; switch on to trade speed for memory.
activation_checkpoint=false
log_optimizer_state=true
log_interval=100
eval_iters=10
eval_interval=1000
num_save=100
estimated_train_iter=$((train_tokens / seq_len / global_batch_size))
save_interval=$((estimated_train_iter / num_save))
[ "${save_interval}" -ge 1 ] || save_interval=1
exit_duration=30000000  # minutes: effectively never
seed=1234
# BERT samples are built on the fly (masking), so loading needs workers: 4 was the best on 64 GPUs upstream.
num_workers=4

###############################################################################
### random-LTD: every layer but the first and the last drops tokens (encoder: the padding mask is gathered)
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
data_path=${DATA_PATH:-${data_home}/pile_bert_train_text_sentence}
vocab_path=${VOCAB_PATH:-${repo}/data/tokenizers/bert-wordpiece/vocab.txt}
output_home=${OUTPUT_HOME:-${repo}/output/data_efficiency/bert_pretrain}
# The samples mapping the analysis built (megatron/data/bert_dataset.py names it
# {prefix}_train_indexmap_exact{E}ep_{seq-3}msl_{short_seq_prob:.2f}ssp_{seed}s.npy).
index_map_prefix=${INDEX_MAP_PREFIX:-${data_path}}
analysis_num_epochs=${ANALYSIS_NUM_EPOCHS:-5}
is_int "${analysis_num_epochs}" && [ "${analysis_num_epochs}" -ge 1 ] || die "ANALYSIS_NUM_EPOCHS must be >= 1," \
    "got '${analysis_num_epochs}'"
ssp=$(awk -v p="${short_seq_prob}" 'BEGIN { printf "%.2f", p }')
train_idx_path="${index_map_prefix}_train_indexmap_exact${analysis_num_epochs}ep"
train_idx_path+="_$((seq_len - 3))msl_${ssp}ssp_${seed}s.npy"

jobname="bert_${model_size}B_tok${train_tokens_in_billion}B_lr${lr}_min${min_lr}_w${lr_warmup_iters}"
jobname+="_d${lr_decay_tokens_in_billion}B_${lr_decay_style}_gbs${global_batch_size}_mbs${batch_size}_g${num_gpus}"
[ "${zero_stage}" -eq 0 ] || jobname+="_z${zero_stage}"
jobname+="_seed${seed}"
[ "${ltd_enabled}" = false ] || jobname+="_ltd_${ltd_start}_${ltd_step_in_million}M_drop${dropout}"
if [ "${cl_enabled}" = true ]; then
    jobname+="_cl_${cl_1st_metric}_${cl_1st_min}_${cl_1st_max}_${cl_1st_total_step_in_million}M_${cl_1st_root}"
    if [ "${cl_num_metric}" -eq 2 ]; then
        jobname+="_cl2_${cl_2nd_metric}_${cl_2nd_min}_${cl_2nd_max}_${cl_2nd_total_step_in_million}M_${cl_2nd_root}"
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
    for pair in NAME:metric SAMPLE_PATH:index_to_sample_path METRIC_PATH:index_to_metric_path \
        DIFF_TYPE:difficulty_type CLUSTER_TYPE:clustering_type MIN:min MAX:max TOTAL_STEP:total_step \
        DIFF_STEP:difficulty_step ROOT:root; do
        var="${p}_${pair#*:}"
        add_sub "CONFIG_CL${n}_${pair%%:*}" "${!var}"
    done
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
    --adam-beta2 0.999
    --tensor-model-parallel-size "${mp_size}"
    --init-method-std "${init_std}"
    --lr-decay-tokens "${lr_decay_tokens}"
    --lr-warmup-iters "${lr_warmup_iters}"
    --micro-batch-size "${batch_size}"
    --exit-duration-in-mins "${exit_duration}"
    --global-batch-size "${global_batch_size}"
    --num-layers "${num_layers}"
    --hidden-size "${hidden_size}"
    --num-attention-heads "${num_attn_heads}"
    --seq-length "${seq_len}"
    --max-position-embeddings "${seq_len}"
    --train-tokens "${train_tokens}"
    --train-iters "${train_iters}"
    --lr "${lr}"
    --min-lr "${min_lr}"
    --lr-decay-style "${lr_decay_style}"
    --split 949,50,1
    --short-seq-prob "${short_seq_prob}"
    --log-interval "${log_interval}"
    --eval-interval "${eval_interval}"
    --eval-iters "${eval_iters}"
    --save-interval "${save_interval}"
    --weight-decay 1e-2
    --clip-grad "${clip_grad}"
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
[ "${log_optimizer_state}" = false ] || megatron_options+=(--log-optimizer-states-to-tensorboard)
# Upstream notes random-LTD with zero dropout can finetune better on some tasks; its blocks keep 0.1.
[ "${ltd_enabled}" = false ] || megatron_options+=(--attention-dropout "${dropout}" --hidden-dropout "${dropout}"
    --random-ltd)
if [ "${cl_enabled}" = true ]; then
    megatron_options+=(
        --data-efficiency-curriculum-learning
        --train-data-exact-num-epochs "${analysis_num_epochs}"
        --train-idx-path "${train_idx_path}"
    )
fi
data_options=(
    --vocab-file "${vocab_path}"
    --data-path "${data_path}"
    --data-impl mmap
    --tokenizer-type BertWordPieceLowerCase
)
deepspeed_options=(
    --deepspeed
    --deepspeed_config "${config_json}"
    --zero-stage "${zero_stage}"
    --pipeline-model-parallel-size "${pp_size}"
    --no-pipeline-parallel
)
[ "${activation_checkpoint}" = false ] || deepspeed_options+=(--deepspeed-activation-checkpointing)

cmd=("${launcher[@]}" "${repo}/pretrain_bert.py" "${megatron_options[@]}" "${data_options[@]}"
    "${deepspeed_options[@]}")

###############################################################################
### Files a real run needs (the analysis writes the CL ones)
missing=()
for f in "${data_path}.bin" "${data_path}.idx"; do
    [ -f "${f}" ] || missing+=("${f} (sentence-level data: tools/preprocess_data.py --split-sentences)")
done
if [ "${cl_enabled}" = true ]; then
    hint="samples mapping: written by ../ds_analyze_bert_data_map.sh with NUM_EPOCHS=${analysis_num_epochs}"
    [ -f "${train_idx_path}" ] || missing+=("${train_idx_path} (${hint})")
    for n in 1 2; do
        [ "${n}" -le "${cl_num_metric}" ] || continue
        [ "${n}" -eq 1 ] && p=cl_1st || p=cl_2nd
        ctype_var="${p}_clustering_type"; dtype_var="${p}_difficulty_type"
        sample_var="${p}_index_to_sample_path"; metric_var="${p}_index_to_metric_path"
        [ "${!ctype_var}" = schedule_based ] || continue
        paths=("${!sample_var}")
        [ "${!dtype_var}" != value ] || paths+=("${!metric_var}")
        for f in "${paths[@]}"; do
            # the analysis writes {save}/{metric}/{metric}_index_to_*: the directory names the analysis metric
            metric_name=$(basename "$(dirname "${f}")")
            hint="CL index: run ../ds_analyze_bert_data_map.sh and ../ds_analyze_bert_data_reduce.sh, first with"
            hint+=" METRIC=total_vocab_freq, then METRIC=${metric_name}"
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
