"""Evaluate a BERT checkpoint written by pretrain_bert.py with a plain BertModel: MLM/SOP loss and accuracy.

    python tools/eval_bert.py --load runs/quickstart_bert/checkpoint [--eval-split valid|test|both] \\
        [--data-path other_text_sentence --split 0,100,0] [--eval-iters 50 | --full-split] \\
        [--results-path eval.json]

The flags stored in the checkpoint give the model shape, tokenizer, data, split, batch sizes and precision; any
flag given here overrides them. By default the evaluation is exactly the one pretraining runs (the first
--eval-iters global batches of the split, in the training precision; --eval-fp32 forces fp32); --full-split goes
once over every full micro-batch of the split. Reports lm loss (masked positions), its ppl, sop loss, and
the MLM and SOP accuracies. Prints one summary line; --results-path also writes JSON.
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
    return evaluation.run(argv, prog="eval_bert", family="bert", description=__doc__)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: 0 on success, 2 with one `error:` line on bad input."""
    return evaluation.main(argv, prog="eval_bert", family="bert", description=__doc__)


if __name__ == "__main__":
    sys.exit(main())
