#!/usr/bin/env bash
# GLUE CPU quickstart: finetune the BERT quickstart's checkpoint on two tasks of the offline GLUE-format suite,
# two seeds each, then gather the table (median_high +- stdev over seeds, the GLUE score of the tasks present).
#
#   (a) the pretrained checkpoint: runs/quickstart_bert/checkpoint (made by quickstart_bert_cpu.sh, run first
#       when missing; CHECKPOINT=... uses another one)
#   (b) the GLUE-format suite from shipped text (tools/make_glue_suite.py; GLUE_DIR=... uses a real glue_data/)
#   (c) tasks/main.py for each task x seed, results in ${OUT}/{task}/seed{S}_lr{LR}/results.json
#   (d) ds_finetune_gather_result.py prints the table
#
# Settings from the environment: TASKS ("SST-2 MRPC"), SEEDS ("1234 1235"), LR (5e-4), EPOCHS (2), TRAIN_SIZE
# (1000), MICRO_BATCH (16), GLOBAL_BATCH (32), OUT (runs/quickstart_glue). Finished runs are skipped on re-run
# (their results.json is complete); FRESH=1 redoes them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../../.." && pwd)"
cd "$ROOT"
if [ -z "${PYTHON:-}" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

OUT="${OUT:-runs/quickstart_glue}"
CHECKPOINT="${CHECKPOINT:-runs/quickstart_bert/checkpoint}"
TASKS="${TASKS:-SST-2 MRPC}"
SEEDS="${SEEDS:-1234 1235}"
LR="${LR:-5e-4}"
EPOCHS="${EPOCHS:-2}"
TRAIN_SIZE="${TRAIN_SIZE:-1000}"
MICRO_BATCH="${MICRO_BATCH:-16}"
GLOBAL_BATCH="${GLOBAL_BATCH:-32}"
HERE="examples_deepspeed/data_efficiency/bert/finetune_glue"

STEP="setup"
START=$(date +%s)
trap 'rc=$?; echo "quickstart_glue: FAILED in step ${STEP} (exit status ${rc}); see the messages above" >&2; exit ${rc}' ERR
step() { STEP="$1"; echo; echo "==== quickstart_glue step $1 ($(( $(date +%s) - START )) s elapsed)"; }
mkdir -p "$OUT"

step "(a) pretrained checkpoint"
if [ -f "$CHECKPOINT/latest" ]; then
    echo "using $CHECKPOINT ($(cat "$CHECKPOINT/latest"))"
elif [ "$CHECKPOINT" = "runs/quickstart_bert/checkpoint" ]; then
    bash examples_deepspeed/data_efficiency/quickstart_bert_cpu.sh
else
    echo "quickstart_glue: no checkpoint in CHECKPOINT=$CHECKPOINT" >&2; exit 2
fi

step "(b) GLUE-format data"
if [ -n "${GLUE_DIR:-}" ]; then
    echo "using GLUE_DIR=$GLUE_DIR"
else
    GLUE_DIR="$OUT/glue_data"
    if [ -f "$GLUE_DIR/make_glue_suite.json" ] && [ "$(cat "$GLUE_DIR/.train_size" 2>/dev/null)" = "$TRAIN_SIZE" ]; then
        echo "up to date: $GLUE_DIR"
    else
        "$PYTHON" tools/make_glue_suite.py --output-dir "$GLUE_DIR" --train-size "$TRAIN_SIZE" --dev-size 200 \
            --test-size 50
        echo "$TRAIN_SIZE" > "$GLUE_DIR/.train_size"
    fi
fi

step "(c) finetune"
for TASK in $TASKS; do
    VALID="$GLUE_DIR/$TASK/dev.tsv"
    [ "$TASK" = "MNLI" ] && VALID="$GLUE_DIR/MNLI/dev_matched.tsv $GLUE_DIR/MNLI/dev_mismatched.tsv"
    for SEED in $SEEDS; do
        RUN="$OUT/$TASK/seed${SEED}_lr${LR}"
        if [ "${FRESH:-0}" != "1" ] && [ -f "$RUN/results.json" ] && "$PYTHON" -c 'import json, sys
d = json.load(open(sys.argv[1])); sys.exit(0 if len(d["evaluations"]) >= d["epochs_planned"] else 1)' "$RUN/results.json"; then
            echo "done: $RUN"
            continue
        fi
        rm -rf "$RUN"
        mkdir -p "$RUN"
        echo "-- $TASK seed $SEED lr $LR"
        # shellcheck disable=SC2086
        "$PYTHON" tasks/main.py --task "$TASK" --train-data "$GLUE_DIR/$TASK/train.tsv" --valid-data $VALID \
            --pretrained-checkpoint "$CHECKPOINT" --epochs "$EPOCHS" --seq-length 128 \
            --micro-batch-size "$MICRO_BATCH" --global-batch-size "$GLOBAL_BATCH" --lr "$LR" \
            --lr-warmup-fraction 0.1 --lr-decay-style linear --weight-decay 0.01 --clip-grad 1.0 \
            --hidden-dropout 0.1 --attention-dropout 0.1 --seed "$SEED" --num-workers 0 --log-interval 20 \
            --results-path "$RUN/results.json" > "$RUN/log.txt" 2>&1 \
            || { tail -20 "$RUN/log.txt" >&2; exit 1; }
        grep "validation loss at the end" "$RUN/log.txt" || true
    done
done

step "(d) gather"
"$PYTHON" "$HERE/ds_finetune_gather_result.py" "$OUT" --output "$OUT/glue_table.md"
echo
echo "==== quickstart_glue done in $(( $(date +%s) - START )) s (table: $OUT/glue_table.md)"
