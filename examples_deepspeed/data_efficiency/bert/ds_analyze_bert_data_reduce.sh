#!/bin/bash
# Curriculum-learning data analysis for BERT-Large pretraining data: REDUCE stage (run once, after every map
# worker finished). It reads only the map outputs under save_path and writes save_path/{metric}/:
# {metric}_sample_to_metric, _index_to_sample, _index_to_metric, _index_to_sample_percentile_merged
# (or {metric}_metric_value for total_vocab_freq). Use the same workers/threads as the map stage.
# Every setting can also be given as an environment variable of the same name in capitals.
set -euo pipefail
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${dir}/../../.." && pwd)"

num_workers=${NUM_WORKERS:-1}
num_threads=${NUM_THREADS:-40}
num_threads_reduce=${NUM_THREADS_REDUCE:-40}

num_epochs=${NUM_EPOCHS:-5}
seq_len=${SEQ_LEN:-512}
batch_size=${BATCH_SIZE:-10000}
split=${SPLIT:-949,50,1}
seed=${SEED:-1234}

metric=${METRIC:-total_vocab_freq}
# metric='vocab_rarity' # needs the reduced total_vocab_freq result in the same save_path
# metric='seqlen_vocab_rarity' # also needs total_vocab_freq: sorts by seqlen first, rarity breaks ties
# metric='seqlen'

data_home=${DATA_HOME:-/blob/data/the_pile_public_merged_nopreprocessing}
data_path=${DATA_PATH:-${data_home}/pile_bert_train_text_sentence}
vocab_path=${VOCAB_PATH:-${repo}/data/tokenizers/bert-wordpiece/vocab.txt}
save_path=${SAVE_PATH:-${repo}/output/data_efficiency/analysis_pile_bert_${num_epochs}epoch}
log_dir=${LOG_DIR:-${save_path}/logs}
python_bin=${PYTHON:-python}

jobname="bert-pile-analyzing-${metric}-${num_epochs}epoch-reduce"
mkdir -p "${log_dir}"

options=" \
    --analyzing-task reduce \
    --analyzing-data-type BERT \
    --analyzing-metric ${metric} \
    --analyzing-num-workers ${num_workers} \
    --analyzing-num-threads ${num_threads} \
    --analyzing-num-threads-reduce ${num_threads_reduce} \
    --vocab-file ${vocab_path} \
    --data-path ${data_path} \
    --data-impl mmap \
    --tokenizer-type BertWordPieceLowerCase \
    --micro-batch-size 1 \
    --global-batch-size ${batch_size} \
    --seq-length ${seq_len} \
    --max-position-embeddings ${seq_len} \
    --num-layers 1 \
    --hidden-size 1 \
    --num-attention-heads 1 \
    --split ${split} \
    --seed ${seed} \
    --distributed-backend gloo \
    --train-data-exact-num-epochs ${num_epochs} \
    --return-data-index \
    --save-interval 1 \
    --save ${save_path}"

${python_bin} "${dir}/../analyze_data.py" ${options} 2>&1 | tee "${log_dir}/${jobname}.log"
