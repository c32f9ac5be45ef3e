"""Zero/few-shot evaluation of GPT checkpoints with the lm-evaluation-harness 0.4 API.

``tasks/eval_harness/evaluate.py`` holds ``MegatronLM``, an ``lm_eval.api.model.LM`` registered under the name
``megatron``, and the command line (``python tasks/eval_harness/evaluate.py --load DIR --task_list ...``).
Importing this package stays cheap: lm-eval is imported only when ``MegatronLM`` (or ``evaluate``) is used.
"""
from __future__ import annotations

from typing import Any

__all__ = ["MegatronLM"]


def __getattr__(name: str) -> Any:
    if name == "MegatronLM":
        from tasks.eval_harness.evaluate import MegatronLM

        return MegatronLM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
