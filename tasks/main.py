"""Finetune a BERT checkpoint of pretrain_bert.py on a GLUE task or RACE (Megatron-DeepSpeed's tasks/main.py flags).

    python tasks/main.py --task MRPC --train-data glue_data/MRPC/train.tsv --valid-data glue_data/MRPC/dev.tsv \\
        --pretrained-checkpoint runs/quickstart_bert/checkpoint --epochs 3 --seq-length 128 \\
        --micro-batch-size 16 --global-batch-size 32 --lr 2e-5 --lr-warmup-fraction 0.1 --lr-decay-style linear \\
        --weight-decay 0.01 --seed 1234 --results-path out/MRPC/seed1234_lr2e-5/results.json

The model shape and tokenizer come from --pretrained-checkpoint; --train-iters is epochs x (examples // global
batch); every epoch ends with an evaluation of every --valid-data file (each example scored once, across ranks),
printed and written to --results-path. --save/--load checkpoint and resume exactly, as pretraining does. Runs as
`python`, under `torchrun --nproc_per_node N` or the `deepspeed` launcher. The family specs are tasks/finetune.py.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.path.pardir)))  # run from a checkout

from megatron.cli import pretrain_from_argv, run_cli  # noqa: E402
from megatron.training.loop import TrainResult  # noqa: E402
from tasks.finetune import TASKS, spec_for_task  # noqa: E402


def main(argv: list[str] | None = None) -> TrainResult:
    """Pick the spec of --task (classification, or multiple choice for RACE), then train as pretraining does."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--task", default=None)  # the full parser checks the value and reports it in one line
    known, _ = pre.parse_known_args(argv)
    return pretrain_from_argv(spec_for_task(known.task if known.task in TASKS else "MNLI"), argv)


if __name__ == "__main__":
    run_cli(main)
