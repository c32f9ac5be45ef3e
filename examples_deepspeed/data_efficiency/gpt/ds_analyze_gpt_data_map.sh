#!/bin/bash
# Curriculum-learning data analysis for GPT-3 pretraining data: MAP stage.
# Order: map + reduce with metric=total_vocab_freq, then map + reduce with metric=vocab_rarity.
# With several workers (nodes), run this script on each: `bash ds_analyze_gpt_data_map.sh <worker_id>`,
# then the reduce script once. A killed map thread can be re-run alone: set specific_threads below.
# Every setting can also be given as an environment variable of the same name in capitals.
set -euo pipefail
dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${dir}/../../.." && pwd)"

## Resources: workers (nodes) and map threads per worker (GPT: threads, at most one per core; BERT: processes).
num_workers=${NUM_WORKERS:-1}
num_threads=${NUM_THREADS:-40}
worker_id=${1:-${WORKER_ID:-0}}
specific_threads=${SPECIFIC_THREADS:-}  # e.g. "3 5": re-run only these map threads of this worker

## Same number of epochs, split, seq length and seed as pretraining: the index refers to its samples.
num_epochs=${NUM_EPOCHS:-1}
seq_len=${SEQ_LEN:-2048}
batch_size=${BATCH_SIZE:-10000}
split=${SPLIT:-949,50,1}
seed=${SEED:-1234}

metric=${METRIC:-total_vocab_freq}
# metric='vocab_rarity' # needs the reduced total_vocab_freq result in the same save_path

## Paths: the tokenized Pile (tools/preprocess_data.py output prefix) and the output directory.
data_home=${DATA_HOME:-/blob/data/the_pile_public_merged_nopreprocessing}
data_path=${DATA_PATH:-${data_home}/pile_text_document}
vocab_path=${VOCAB_PATH:-${repo}/data/tokenizers/gpt2-bpe/vocab.json}
merge_path=${MERGE_PATH:-${repo}/data/tokenizers/gpt2-bpe/merges.txt}
save_path=${SAVE_PATH:-${repo}/output/data_efficiency/analysis_pile_gpt_${num_epochs}epoch}
log_dir=${LOG_DIR:-${save_path}/logs}
python_bin=${PYTHON:-python}

jobname="gpt-pile-analyzing-${metric}-${num_epochs}epoch-map-worker${worker_id}"
mkdir -p "${log_dir}"

# A dummy 1-layer model config: only the dataset/tokenizer flags matter for the analysis.
options=" \
    --analyzing-task map \
    --analyzing-data-type GPT \
    --analyzing-metric ${metric} \
    --analyzing-num-workers ${num_workers} \
    --analyzing-worker-id ${worker_id} \
    --analyzing-num-threads ${num_threads} \
    --vocab-file ${vocab_path} \
    --merge-file ${merge_path} \
    --data-path ${data_path} \
    --data-impl mmap \
    --tokenizer-type GPT2BPETokenizer \
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
if [ -n "${specific_threads}" ]; then
    options="${options} --analyzing-specific-threads ${specific_threads}"
fi

${python_bin} "${dir}/../analyze_data.py" ${options} 2>&1 | tee "${log_dir}/${jobname}.log"
