#!/usr/bin/env bash
# CPU quickstart: curriculum learning (vocabulary rarity + sequence-length truncation) composed with random-LTD,
# on the bundled corpus, in a few minutes on 2 cores. Run by `bash scripts/quickstart.sh` (which sets up .venv).
#
#   (a) preprocess data/corpus/python_docs.jsonl.gz with the bundled GPT-2-format BPE       (skipped if up to date)
#   (b) analyze the train split: total_vocab_freq, then vocab_rarity (seq 128, 1 exact epoch) (skipped if up to date)
#   (c) write a DeepSpeed JSON (CL voc 1->100 fixed_root 2 + seqlen_truncate 16->128; random-LTD 32->128 on the
#       middle layers) and pretrain a tiny GPT (4 layers, hidden 128, bf16) with --train-tokens, saving a checkpoint
#   (d) evaluate the checkpoint with tools/eval_gpt.py in a plain GPTModel: validation loss / perplexity
#   (e) draw the metric histograms and schedules with tools/plot_curriculum.py
#   (f) zero-shot evaluation with lm-eval on offline tasks over held-out corpus text (tasks/eval_harness): rolling
#       perplexity, LAMBADA-style last word, multiple-choice continuation (ZEROSHOT_DOCS items each; 0 skips)
#
# Everything goes under ${OUT:-runs/quickstart}. Re-running is safe: finished steps are skipped and training
# resumes from (or, when complete, reuses) the checkpoint; FRESH=1 retrains from scratch. Settings below can be
# overridden from the environment (TRAIN_TOKENS, MICRO_BATCH, GLOBAL_BATCH, LR, CL_STEPS, LTD_STEPS, ...).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"
# Idle OpenMP threads sleep instead of spinning: on a busy (shared) machine spinning threads of 2-thread kernels
# slow training down several-fold; on an idle one the cost is small. Export OMP_WAIT_POLICY=ACTIVE to change it.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

OUT="${OUT:-runs/quickstart}"
CORPUS="${CORPUS:-data/corpus/python_docs.jsonl.gz}"
TOKENIZER_DIR="${TOKENIZER_DIR:-data/tokenizers/gpt2-bpe}"
SEQ=128
SEED="${SEED:-1234}"
SPLIT="949,50,1"
NUM_LAYERS=4
HIDDEN=128
HEADS=4
MICRO_BATCH="${MICRO_BATCH:-16}"
GLOBAL_BATCH="${GLOBAL_BATCH:-32}"
TRAIN_TOKENS="${TRAIN_TOKENS:-1000000}"   # compute-equivalent tokens (spec §3.6): more raw data is read
LR="${LR:-1e-3}"
CL_STEPS="${CL_STEPS:-100}"               # curriculum steps for voc 1->100 and seqlen 16->128
LTD_STEPS="${LTD_STEPS:-160}"             # optimizer steps for the random-LTD reserved length 32->128

VOCAB="$TOKENIZER_DIR/vocab.json"
MERGES="$TOKENIZER_DIR/merges.txt"
DATA="$OUT/data/python_docs_text_document"
ANALYSIS="$OUT/analysis"
MAPS="${DATA}_train_indexmap_exact1ep_${SEQ}sl_${SEED}s"
DS_CONFIG="$OUT/ds_config.json"
CKPT="$OUT/checkpoint"
EVAL_JSON="$OUT/eval.json"
PLOT="$OUT/curriculum.png"
ZEROSHOT_DOCS="${ZEROSHOT_DOCS:-12}"
ZEROSHOT_TASKS="corpus_perplexity,corpus_lastword,corpus_choice"
ZEROSHOT_JSON="$OUT/zeroshot.json"
TOKENIZER_FLAGS=(--tokenizer-type GPT2BPETokenizer --vocab-file "$VOCAB" --merge-file "$MERGES")

STEP="setup"
START=$(date +%s)
trap 'rc=$?; echo "quickstart: FAILED in step ${STEP} (exit status ${rc}); see the messages above" >&2; exit ${rc}' ERR
step() { STEP="$1"; echo; echo "==== quickstart step $1 ($(( $(date +%s) - START )) s elapsed)"; }
newer() { # newer TARGET SOURCE...: TARGET exists and is newer than every SOURCE
    local target="$1"; shift
    [ -e "$target" ] || return 1
    for src in "$@"; do [ "$target" -nt "$src" ] || return 1; done
}
mkdir -p "$OUT/data"

# ---------------------------------------------------------------------------------------------------------------
step "(a) preprocess"
if newer "$DATA.idx" "$CORPUS" "$VOCAB" "$MERGES" && newer "$DATA.bin" "$CORPUS"; then
    echo "up to date: $DATA.bin/.idx"
else
    "$PYTHON" tools/preprocess_data.py --input "$CORPUS" --output-prefix "$OUT/data/python_docs" \
        "${TOKENIZER_FLAGS[@]}" --append-eod --workers 2
fi

# ---------------------------------------------------------------------------------------------------------------
step "(b) analyze"
ANALYSIS_STAMP="$ANALYSIS/.done-seq${SEQ}-seed${SEED}-split${SPLIT//,/_}"
if newer "$ANALYSIS_STAMP" "$DATA.bin" "$DATA.idx" && [ -f "${MAPS}_shuffle_idx.npy" ]; then
    echo "up to date: $ANALYSIS"
else
    rm -rf "$ANALYSIS"
    # the train split exactly as pretraining builds it (1 exact epoch): writes the pinned index maps too
    "$PYTHON" examples_deepspeed/data_efficiency/analyze_data.py \
        --analyzing-task map_reduce --analyzing-data-type GPT \
        --analyzing-metric total_vocab_freq vocab_rarity --analyzing-num-threads 1 \
        --data-path "$DATA" --data-impl mmap "${TOKENIZER_FLAGS[@]}" --split "$SPLIT" --seed "$SEED" \
        --seq-length "$SEQ" --max-position-embeddings "$SEQ" --num-layers 1 --hidden-size 1 \
        --num-attention-heads 1 --micro-batch-size 1 --global-batch-size 1000 \
        --train-data-exact-num-epochs 1 --return-data-index --save "$ANALYSIS"
    touch "$ANALYSIS_STAMP"
fi

# ---------------------------------------------------------------------------------------------------------------
step "(c) pretrain"
cat > "$DS_CONFIG.tmp" <<EOF
{
  "train_batch_size": ${GLOBAL_BATCH},
  "train_micro_batch_size_per_gpu": ${MICRO_BATCH},
  "steps_per_print": 1000000,
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
          "voc": {
            "index_to_sample_path": "${ANALYSIS}/vocab_rarity/vocab_rarity_index_to_sample_percentile_merged",
            "index_to_metric_path": "${ANALYSIS}/vocab_rarity/vocab_rarity_index_to_metric",
            "difficulty_type": "percentile",
            "clustering_type": "schedule_based",
            "min_difficulty": 1,
            "max_difficulty": 100,
            "schedule_type": "fixed_root",
            "schedule_config": {"total_curriculum_step": ${CL_STEPS}, "difficulty_step": 1, "root_degree": 2}
          },
          "seqlen_truncate": {
            "index_to_sample_path": "dummy",
            "index_to_metric_path": "dummy",
            "difficulty_type": "value",
            "clustering_type": "single_cluster",
            "min_difficulty": 16,
            "max_difficulty": ${SEQ},
            "schedule_type": "fixed_linear",
            "schedule_config": {"total_curriculum_step": ${CL_STEPS}, "difficulty_step": 8}
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
        "model_type": "decoder",
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
"$PYTHON" pretrain_gpt.py \
    --num-layers "$NUM_LAYERS" --hidden-size "$HIDDEN" --num-attention-heads "$HEADS" \
    --seq-length "$SEQ" --max-position-embeddings "$SEQ" \
    --micro-batch-size "$MICRO_BATCH" --global-batch-size "$GLOBAL_BATCH" --bf16 --zero-stage 1 \
    --train-tokens "$TRAIN_TOKENS" --lr "$LR" --min-lr 1e-5 --lr-decay-style cosine \
    --lr-warmup-tokens $(( TRAIN_TOKENS / 20 )) --lr-decay-tokens "$TRAIN_TOKENS" \
    --weight-decay 0.1 --adam-beta1 0.9 --adam-beta2 0.95 --clip-grad 1.0 \
    --attention-dropout 0.0 --hidden-dropout 0.0 --init-method-std 0.02 \
    --data-path "$DATA" --data-impl mmap --split "$SPLIT" --seed "$SEED" "${TOKENIZER_FLAGS[@]}" \
    --train-data-exact-num-epochs 1 --train-doc-idx-path "${MAPS}_doc_idx.npy" \
    --train-sample-idx-path "${MAPS}_sample_idx.npy" --train-shuffle-idx-path "${MAPS}_shuffle_idx.npy" \
    --num-workers 0 --log-interval 25 --eval-interval 100000 --eval-iters 4 \
    --save "$CKPT" --load "$CKPT" --save-interval 100 --override-opt_param-scheduler \
    --tensorboard-dir "$OUT/tensorboard" --log-validation-ppl-to-tensorboard \
    --deepspeed --deepspeed_config "$DS_CONFIG" --no-pipeline-parallel \
    --data-efficiency-curriculum-learning --random-ltd

# ---------------------------------------------------------------------------------------------------------------
step "(d) evaluate"
"$PYTHON" tools/eval_gpt.py --load "$CKPT" --eval-split valid --full-split --results-path "$EVAL_JSON"

# ---------------------------------------------------------------------------------------------------------------
step "(e) plot"
"$PYTHON" tools/plot_curriculum.py --analysis-dir "$ANALYSIS" --metrics vocab_rarity total_vocab_freq \
    --deepspeed-config "$DS_CONFIG" --steps "$(cat "$CKPT/latest_checkpointed_iteration.txt")" --output "$PLOT"

# ---------------------------------------------------------------------------------------------------------------
step "(f) zero-shot (lm-eval, offline tasks)"
if [ "$ZEROSHOT_DOCS" -gt 0 ]; then
    export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1 HF_DATASETS_CACHE="$OUT/hf_datasets_cache"
    "$PYTHON" -m tasks.eval_harness.offline_tasks --output-dir "$OUT/offline_tasks" --num-docs "$ZEROSHOT_DOCS" \
        --corpus "$CORPUS" --split "$SPLIT" --seed "$SEED"
    "$PYTHON" tasks/eval_harness/evaluate.py --load "$CKPT" --task_list "$ZEROSHOT_TASKS" --num_fewshot 0 \
        --include_path "$OUT/offline_tasks" --adaptive_seq_len --micro-batch-size 16 --bootstrap_iters 0 \
        --results_path "$ZEROSHOT_JSON"
else
    echo "skipped (ZEROSHOT_DOCS=0)"
fi

# ---------------------------------------------------------------------------------------------------------------
STEP="summary"
read -r ITER TOKENS PPL LOSS < <("$PYTHON" -c 'import json, sys
r = json.load(open(sys.argv[1]))
print(r["iteration"], r["consumed_train_tokens"], "%.2f" % r["valid"]["ppl"], "%.4f" % r["valid"]["lm loss"])' \
    "$EVAL_JSON")
echo
echo "==== quickstart done in $(( $(date +%s) - START )) s"
echo "  data (.bin/.idx)    $DATA"
echo "  analysis            $ANALYSIS"
echo "  DeepSpeed config    $DS_CONFIG"
echo "  checkpoint          $CKPT (iteration $ITER)"
echo "  TensorBoard         $OUT/tensorboard"
echo "  curriculum picture  $PLOT"
echo "  trained tokens      $TOKENS (compute-equivalent, budget $TRAIN_TOKENS)"
echo "  validation          loss $LOSS | perplexity $PPL (plain GPTModel, full validation split; $EVAL_JSON)"
if [ "$ZEROSHOT_DOCS" -gt 0 ]; then
    "$PYTHON" -c 'import json, sys
r = json.load(open(sys.argv[1]))["results"]
p, w, c = r["corpus_perplexity"], r["corpus_lastword"], r["corpus_choice"]
print("  zero-shot (lm-eval) word perplexity %.1f | last-word acc %.3f | choice acc_norm %.3f  (%s)"
      % (p["word_perplexity,none"], w["acc,none"], c["acc_norm,none"], sys.argv[1]))' "$ZEROSHOT_JSON"
fi
