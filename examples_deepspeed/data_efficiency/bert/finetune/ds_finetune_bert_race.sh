#!/bin/bash
# Finetune a pretrained BERT on RACE (train: middle + high; dev middle and high scored separately).
# The older finetuning recipe of the DeepSpeed Data Efficiency examples, with the Megatron-LM BERT paper's
# settings (Shoeybi et al. 2019): global batch 32, lr 2e-5, 3 epochs, linear decay with warmup fraction 0.06,
# seq 512, weight decay 0.1, fp16, ZeRO 0. ../finetune_glue/ is the recommended recipe (upstream found RACE
# unstable and these MNLI/QQP epoch counts excessive); this one is kept to reproduce the older numbers.
#
#     CHECKPOINT=<pretraining --save dir> bash ds_finetune_bert_race.sh      # DRY_RUN=1 prints the command instead
#
# Everything is done by ../finetune_glue/ds_finetune_bert_glue.sh (read its header for the environment:
# CHECKPOINT, RACE_DIR, OUTPUT, SEED, LAUNCHER, PRECISION, DRY_RUN, ...); this script only sets this task's
# defaults, each of which the environment may override. NUM_GPUS defaults to every visible GPU (nvidia-smi -L).
# Results: ${OUTPUT}/RACE/seed${SEED}_lr${LR}/results.json (OUTPUT default
# <checkout>/output/data_efficiency/bert_finetune); ds_finetune_gather_result.py tabulates them.
set -euo pipefail
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${dir}/../../../.." && pwd)"
if [ $# -ne 0 ]; then
    echo "error: $(basename "${BASH_SOURCE[0]}"): takes no arguments (set SEED, LR, CHECKPOINT, ... in the" \
        "environment)" >&2
    exit 2
fi
if [ -z "${NUM_GPUS:-}" ] && [ -z "${GPU_IDS:-}" ]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        NUM_GPUS=$(nvidia-smi -L | grep -c '^GPU')
    fi
    [ "${NUM_GPUS:-0}" -ge 1 ] 2>/dev/null || NUM_GPUS=1
    export NUM_GPUS
fi
export TASK=RACE
export GLOBAL_BATCH_SIZE=${GLOBAL_BATCH_SIZE:-32}
export MICRO_BATCH_SIZE=${MICRO_BATCH_SIZE:-4}
export LR=${LR:-2e-5}
export EPOCHS=${EPOCHS:-3}
export LR_WARMUP_FRACTION=${LR_WARMUP_FRACTION:-0.06}
export SEQ_LENGTH=${SEQ_LENGTH:-512}
export WEIGHT_DECAY=${WEIGHT_DECAY:-0.1}
export OUTPUT=${OUTPUT:-${repo}/output/data_efficiency/bert_finetune}
export DS_CONFIG_TEMPLATE=${DS_CONFIG_TEMPLATE:-${dir}/ds_config_bert_TEMPLATE.json}
export RECIPE_NAME=$(basename "${BASH_SOURCE[0]}")
exec bash "${dir}/../finetune_glue/ds_finetune_bert_glue.sh"
