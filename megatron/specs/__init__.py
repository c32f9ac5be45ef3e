"""Model-family specs (``megatron.training.spec.ModelSpec``) by name: the families the entry points train.

Checkpoints record their family's name, so ``megatron.inference.load_for_inference`` picks the same spec.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from megatron.training.spec import ModelSpec

FAMILIES = {"gpt": "megatron.specs.gpt:GPT_SPEC", "bert": "megatron.specs.bert:BERT_SPEC",
            "classification": "tasks.finetune:CLASSIFICATION_SPEC",
            "multiple_choice": "tasks.finetune:MULTIPLE_CHOICE_SPEC"}
"""Family name -> "module:attribute" of its spec (imported on first use)."""
LEGACY_FAMILY = "gpt"
"""Family of checkpoints written before ``model_family`` was recorded (only pretrain_gpt.py wrote them)."""


def get_spec(name: str) -> ModelSpec:
    """The spec of a model family; ValueError naming the known ones for an unknown name."""
    import importlib

    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known: {', '.join(sorted(FAMILIES))}")
    module, attr = FAMILIES[name].split(":")
    return getattr(importlib.import_module(module), attr)


def __getattr__(name: str):  # `from megatron.specs import GPT_SPEC, BERT_SPEC`
    if name in ("GPT_SPEC", "BERT_SPEC"):
        return get_spec(name[:-len("_SPEC")].lower())
    raise AttributeError(f"module 'megatron.specs' has no attribute {name!r}")
