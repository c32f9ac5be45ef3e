#!/usr/bin/env bash
# BERT CPU quickstart: curriculum learning (seqlen_vocab_rarity from the offline analyzer) composed with random-LTD
# in encoder mode, on the bundled corpus, in a few minutes on 2 cores. Set up .venv first (bash scripts/run_tests.sh
# or bash scripts/quickstart.sh do), or set PYTHON.
#
#   (a) preprocess data/corpus/python_docs.jsonl.gz sentence by sentence with the bundled WordPiece vocab
#   (b) analyze the BERT train split over EPOCHS exact epochs (BERT samples differ per epoch): total_vocab_freq,
#       then seqlen_vocab_rarity (seq 128); this also writes the pinned samples mapping        (skipped if done)
#   (c) write a DeepSpeed JSON (CL seqlen_vocab_rarity percentile 1->100, fixed_root 2; random-LTD 32->128 on the
#       middle layers, model_type encoder) and pretrain a tiny BERT (4 layers, hidden 128, MLM + SOP) with
#       --train-tokens, saving a checkpoint (the GLUE finetuning path starts from it)
#   (d) evaluate the checkpoint with tools/eval_bert.py in a plain BertModel: MLM/SOP loss and accuracy
#
# Everything goes under ${OUT:-runs/quickstart_bert}. Re-running is safe: finished steps are skipped and training
# resumes from (or reuses) the checkpoint; FRESH=1 retrains. Settings can be overridden from the environment
# (TRAIN_TOKENS, EPOCHS, MICRO_BATCH, GLOBAL_BATCH, LR, CL_STEPS, LTD_STEPS, CORPUS, VOCAB).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

OUT="${OUT:-runs/quickstart_bert}"
CORPUS="${CORPUS:-data/corpus/python_docs.jsonl.gz}"
VOCAB="${VOCAB:-data/tokenizers/bert-wordpiece/vocab.txt}"
SEQ=128
SEED="${SEED:-1234}"
SPLIT="949,50,1"
EPOCHS="${EPOCHS:-2}"                     # exact epochs analyzed and trained over (upstream analyzes 5)
NUM_LAYERS=4
HIDDEN=128
HEADS=4
MICRO_BATCH="${MICRO_BATCH:-16}"
GLOBAL_BATCH="${GLOBAL_BATCH:-32}"
TRAIN_TOKENS="${TRAIN_TOKENS:-600000}"    # compute-equivalent tokens (spec §3.6)
LR="${LR:-1e-3}"
CL_STEPS="${CL_STEPS:-60}"                # curriculum steps for seqlen_vocab_rarity percentile 1->100
LTD_STEPS="${LTD_STEPS:-100}"             # optimizer steps for the random-LTD reserved length 32->128

NAME="$(basename "$CORPUS" | sed 's/\..*//')"
DATA="$OUT/data/${NAME}_text_sentence"
ANALYSIS="$OUT/analysis"
DS_CONFIG="$OUT/ds_config.json"
CKPT="$OUT/checkpoint"
EVAL_JSON="$OUT/eval.json"
TOKENIZER_FLAGS=(--tokenizer-type BertWordPieceLowerCase --vocab-file "$VOCAB")
# the samples mapping of EPOCHS exact epochs, written by the analysis and pinned for training (Megatron's name)
MAPPING="${DATA}_train_indexmap_exact${EPOCHS}ep_$(( SEQ - 3 ))msl_0.10ssp_${SEED}s.npy"

STEP="setup"
START=$(date +%s)
trap 'rc=$?; echo "quickstart_bert: FAILED in step ${STEP} (exit status ${rc}); see the messages above" >&2; exit ${rc}' ERR
step() { STEP="$1"; echo; echo "==== quickstart_bert step $1 ($(( $(date +%s) - START )) s elapsed)"; }
newer() { # newer TARGET SOURCE...: TARGET exists and is newer than every SOURCE
    local target="$1"; shift
    [ -e "$target" ] || return 1
    for src in "$@"; do [ "$target" -nt "$src" ] || return 1; done
}
mkdir -p "$OUT/data"

# ---------------------------------------------------------------------------------------------------------------
step "(a) preprocess (sentence-split, WordPiece)"
if newer "$DATA.idx" "$CORPUS" "$VOCAB" && newer "$DATA.bin" "$CORPUS"; then
    echo "up to date: $DATA.bin/.idx"
else
    "$PYTHON" tools/preprocess_data.py --input "$CORPUS" --output-prefix "$OUT/data/$NAME" \
        "${TOKENIZER_FLAGS[@]}" --split-sentences --workers 2
fi

# ---------------------------------------------------------------------------------------------------------------
step "(b) analyze (${EPOCHS} exact epochs)"
ANALYSIS_STAMP="$ANALYSIS/.done-seq${SEQ}-seed${SEED}-ep${EPOCHS}-split${SPLIT//,/_}"
if newer "$ANALYSIS_STAMP" "$DATA.bin" "$DATA.idx" && [ -f "$MAPPING" ]; then
    echo "up to date: $ANALYSIS"
else
    rm -rf "$ANALYSIS"
    "$PYTHON" examples_deepspeed/data_efficiency/analyze_data.py \
        --analyzing-task map_reduce --analyzing-data-type BERT \
        --analyzing-metric total_vocab_freq seqlen_vocab_rarity --analyzing-num-threads 1 \
        --data-path "$DATA" --data-impl mmap "${TOKENIZER_FLAGS[@]}" --split "$SPLIT" --seed "$SEED" \
        --seq-length "$SEQ" --max-position-embeddings "$SEQ" --num-layers 1 --hidden-size 1 \
        --num-attention-heads 1 --micro-batch-size 1 --global-batch-size 1000 \
        --train-data-exact-num-epochs "$EPOCHS" --return-data-index --save "$ANALYSIS"
    touch "$ANALYSIS_STAMP"
fi

# ---------------------------------------------------------------------------------------------------------------
step "(c) pretrain"
cat > "$DS_CONFIG.tmp" <<EOF
{
  "train_batch_size": ${GLOBAL_BATCH},
  "train_micro_batch_size_per_gpu": ${MICRO_BATCH},
  "gradient_clipping": 1.0,
  "bf16": {"enabled": true},
  "zero_optimization": {"stage": 1},
  "data_types": {"grad_accum_dtype": "fp32"},
  "data_efficiency": {
    "enabled": true,
    "seed": ${SEED},
    "data_sampling": {
      "enabled": true,
      "num_workers": 0,
      "curriculum_learning": {
        "enabled": true,
        "data_cluster_path": "${OUT}/data_cluster",
        "curriculum_metrics": {
          "seqlen_vocab_rarity": {
            "index_to_sample_path": "${ANALYSIS}/seqlen_vocab_rarity/seqlen_vocab_rarity_index_to_sample_percentile_merged",
            "index_to_metric_path": "${ANALYSIS}/seqlen_vocab_rarity/seqlen_vocab_rarity_index_to_metric",
            "difficulty_type": "percentile",
            "clustering_type": "schedule_based",
            "min_difficulty": 1,
            "max_difficulty": 100,
            "schedule_type": "fixed_root",
            "schedule_config": {"total_curriculum_step": ${CL_STEPS}, "difficulty_step": 1, "root_degree": 2}
          }
        }
      }
    },
    "data_routing": {
      "enabled": true,
      "random_ltd": {
        "enabled": true,
        "total_layer_num": ${NUM_LAYERS},
        "random_ltd_layer_num": 2,
        "random_ltd_layer_id": [1, 2],
        "model_mask_name": "attention_mask",
        "model_type": "encoder",
        "hidden_state_order": "batch_seq_dim",
        "random_ltd_schedule": {
          "min_value": 32,
          "max_value": ${SEQ},
          "schedule_type": "fixed_linear",
          "schedule_config": {"require_steps": ${LTD_STEPS}, "seq_per_step": 16}
        }
      }
    }
  }
}
EOF
mv "$DS_CONFIG.tmp" "$DS_CONFIG"
if [ "${FRESH:-0}" = "1" ]; then rm -rf "$CKPT" "$OUT/tensorboard" "$OUT/data_cluster"; fi
if [ -f "$CKPT/latest" ]; then
    echo "resuming from $CKPT ($(cat "$CKPT/latest")); a finished run is reused as is (FRESH=1 retrains)"
fi
"$PYTHON" pretrain_bert.py \
    --num-layers "$NUM_LAYERS" --hidden-size "$HIDDEN" --num-attention-heads "$HEADS" \
    --seq-length "$SEQ" --max-position-embeddings "$SEQ" \
    --micro-batch-size "$MICRO_BATCH" --global-batch-size "$GLOBAL_BATCH" --bf16 --zero-stage 1 \
    --train-tokens "$TRAIN_TOKENS" --lr "$LR" --min-lr 1e-5 --lr-decay-style linear \
    --lr-warmup-tokens $(( TRAIN_TOKENS / 20 )) --lr-decay-tokens "$TRAIN_TOKENS" \
    --weight-decay 0.01 --clip-grad 1.0 --attention-dropout 0.1 --hidden-dropout 0.1 \
    --mask-prob 0.15 --short-seq-prob 0.1 \
    --data-path "$DATA" --data-impl mmap --split "$SPLIT" --seed "$SEED" "${TOKENIZER_FLAGS[@]}" \
    --train-data-exact-num-epochs "$EPOCHS" --train-idx-path "$MAPPING" \
    --num-workers 0 --log-interval 20 --eval-interval 100000 --eval-iters 4 \
    --save "$CKPT" --load "$CKPT" --save-interval 100 --override-opt_param-scheduler \
    --tensorboard-dir "$OUT/tensorboard" \
    --deepspeed --deepspeed_config "$DS_CONFIG" --no-pipeline-parallel \
    --data-efficiency-curriculum-learning --random-ltd

# ---------------------------------------------------------------------------------------------------------------
step "(d) evaluate"
"$PYTHON" tools/eval_bert.py --load "$CKPT" --eval-split valid --full-split --results-path "$EVAL_JSON"

# ---------------------------------------------------------------------------------------------------------------
STEP="summary"
read -r ITER TOKENS LM SOP MLMACC SOPACC < <("$PYTHON" -c 'import json, sys
r = json.load(open(sys.argv[1])); v = r["valid"]
print(r["iteration"], r["consumed_train_tokens"], "%.4f" % v["lm loss"], "%.4f" % v["sop loss"],
      "%.3f" % v["mlm accuracy"], "%.3f" % v["sop accuracy"])' "$EVAL_JSON")
echo
echo "==== quickstart_bert done in $(( $(date +%s) - START )) s"
echo "  data (.bin/.idx)    $DATA"
echo "  analysis            $ANALYSIS"
echo "  DeepSpeed config    $DS_CONFIG"
echo "  checkpoint          $CKPT (iteration $ITER)"
echo "  TensorBoard         $OUT/tensorboard"
echo "  trained tokens      $TOKENS (compute-equivalent, budget $TRAIN_TOKENS)"
echo "  validation          MLM loss $LM (accuracy $MLMACC) | SOP loss $SOP (accuracy $SOPACC) (plain BertModel; $EVAL_JSON)"
