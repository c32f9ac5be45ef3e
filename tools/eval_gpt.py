"""Evaluate a GPT checkpoint written by pretrain_gpt.py with a plain GPTModel: loss and perplexity.

    python tools/eval_gpt.py --load runs/quickstart/checkpoint [--eval-split valid|test|both] \\
        [--data-path other_text_document --split 0,100,0] [--eval-iters 50 | --full-split] \\
        [--results-path eval.json] [--device cuda:0]

The flags stored in the checkpoint give the model shape, tokenizer, data, split, batch sizes and precision; any
flag given here overrides them. By default the evaluation is exactly the one pretraining runs (the first
--eval-iters global batches of the split, in the training precision; --eval-fp32 forces fp32); --full-split goes
once over every full micro-batch of the split. The model runs on the GPU when there is one (--device chooses).
Prints one summary line; --results-path also writes JSON.
Bad input: one ``error: ...`` line on stderr, exit status 2. The work is done by ``megatron.evaluation``.
"""
from __future__ import annotations

import os
import sys
from typing import Any, Sequence

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.path.pardir)))  # run from a checkout

from megatron import evaluation  # noqa: E402

EvalError = evaluation.EvalError


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Evaluate as the command line says; returns the results dict (also printed / written)."""
    return evaluation.run(argv, prog="eval_gpt", family="gpt", description=__doc__)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: 0 on success, 2 with one `error:` line on bad input."""
    return evaluation.main(argv, prog="eval_gpt", family="gpt", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
