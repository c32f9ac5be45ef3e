#!/usr/bin/env python
"""Tabulate the runs of ds_finetune_bert_{mnli,qqp,race}.sh: median_high +- stdev over seeds at the best lr (x100).

The same gather as ../finetune_glue/ds_finetune_gather_result.py (loaded from there), restricted to MNLI
(MNLI-m, MNLI-mm), QQP and RACE (overall, plus RACE-middle and RACE-high), without the GLUE score:

    python ds_finetune_gather_result.py OUTPUT_DIR [--output table.md] [--json [summary.json]] [--all-lrs]
"""
from __future__ import annotations

import importlib.util
import os
import sys

TASKS = ("MNLI", "QQP", "RACE")
_GLUE_GATHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "finetune_glue",
                            "ds_finetune_gather_result.py")


def load_glue_gather():
    """The GLUE gather module (a file, not a package: loaded by path under its own module name)."""
    spec = importlib.util.spec_from_file_location("ds_finetune_glue_gather_result", _GLUE_GATHER)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module through sys.modules
    spec.loader.exec_module(module)
    return module


def main(argv=None) -> int:
    """The GLUE gather's CLI for TASKS, without the 9-number GLUE score."""
    return load_glue_gather().main(argv, tasks=TASKS, glue_score=False, prog=os.path.basename(__file__),
                                   description=__doc__.split("\n\n")[0])


if __name__ == "__main__":
    sys.exit(main())
