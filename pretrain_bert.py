"""Pretrain a BERT model (masked LM + sentence-order prediction) on the DeepSpeed engine, Megatron-DeepSpeed flags.

    python pretrain_bert.py --num-layers 2 --hidden-size 64 --num-attention-heads 4 --seq-length 128 \\
        --micro-batch-size 4 --global-batch-size 8 --train-iters 100 --lr 1e-4 \\
        --data-path data/my-corpus_text_sentence --vocab-file vocab.txt --tokenizer-type BertWordPieceLowerCase

The data is sentence-level (`tools/preprocess_data.py --split-sentences`). BERT flags: --mask-prob,
--short-seq-prob, --bert-no-binary-head, --masking-style. Runs as one process on CPU, or under
`torchrun --nproc_per_node N` / `deepspeed --num_gpus N`. Curriculum learning (`seqlen_truncate`, analyzer
metrics such as `seqlen_vocab_rarity`) and random-LTD (`model_type: encoder`) are switched on exactly as for GPT
(see examples_deepspeed/data_efficiency/bert/). The family spec is `megatron/specs/bert.py`.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run from a checkout

from megatron.cli import pretrain_from_argv, run_cli  # noqa: E402
from megatron.specs.bert import BERT_SPEC  # noqa: E402
from megatron.specs.bert import (forward_step, model_provider,  # noqa: E402,F401  (Megatron's names, importable here)
                                 train_valid_test_datasets_provider)
from megatron.training.loop import TrainResult  # noqa: E402


def main(argv: list[str] | None = None) -> TrainResult:
    """Entry point: pretrain BERT (BertWordPieceLowerCase is the default tokenizer)."""
    return pretrain_from_argv(BERT_SPEC, argv)


if __name__ == "__main__":
    run_cli(main)
