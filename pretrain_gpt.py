"""Pretrain a GPT model on the DeepSpeed engine (Megatron-DeepSpeed's `pretrain_gpt.py` flags).

    python pretrain_gpt.py --num-layers 2 --hidden-size 64 --num-attention-heads 4 --seq-length 128 \\
        --micro-batch-size 4 --global-batch-size 8 --train-iters 100 --lr 1e-3 \\
        --data-path data/my-corpus_text_document --vocab-file vocab.json --merge-file merges.txt

Runs as one process on CPU, or under `torchrun --nproc_per_node N` / `deepspeed --num_gpus N`.
Data efficiency as in Megatron-DeepSpeed: `--data-efficiency-curriculum-learning` and/or `--random-ltd` with the
matching `data_efficiency` block of `--deepspeed_config` (see examples_deepspeed/data_efficiency/).
The model, batch, loss, datasets and curriculum post-process are the GPT family spec, `megatron/specs/gpt.py`.
"""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run from a checkout

from megatron.cli import pretrain_from_argv, run_cli  # noqa: E402
from megatron.specs.gpt import GPT_SPEC  # noqa: E402
from megatron.specs.gpt import (forward_step, model_provider,  # noqa: E402,F401  (Megatron's names, importable here)
                                train_valid_test_datasets_provider)
from megatron.training.loop import TrainResult  # noqa: E402


def main(argv: list[str] | None = None) -> TrainResult:
    """Entry point: pretrain GPT (GPT-2 BPE is the default tokenizer)."""
    return pretrain_from_argv(GPT_SPEC, argv)


if __name__ == "__main__":
    run_cli(main)
