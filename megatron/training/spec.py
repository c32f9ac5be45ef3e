"""ModelSpec: what differs between model families, bundled once (in the spirit of torchtitan's TrainSpec).

``pretrain(spec, config, tokenizer)``, the loop, evaluation, checkpoint loading and the data-efficiency seam
take a spec and never name a family. GPT (``megatron.specs.gpt``), BERT and finetuning classifiers are specs;
a new family is a new spec, not edits across the loop::

    MY_SPEC = ModelSpec(name="my-family", build_model=..., forward_step=..., build_datasets=...,
                        flops_per_token=..., batch_layout=GPT_LAYOUT)
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch

from megatron.config import RunConfig, TransformerConfig
from megatron.data_efficiency.seqlen import BatchLayout, DataPostProcess

Batch = dict[str, torch.Tensor]
ForwardStep = Callable[[Batch, Any, RunConfig], "tuple[torch.Tensor, dict[str, torch.Tensor]]"]
"""``forward_step(batch, model, config) -> (loss to backprop, {name: detached scalar to report})``; ``model`` is the
DeepSpeed engine in training and a plain ``nn.Module`` in evaluation/inference."""
DatasetsBuilder = Callable[[RunConfig, Any], "tuple[Any, Any, Any]"]
"""``build_datasets(config, tokenizer) -> (train, valid, test)`` map-style datasets (None for an empty split)."""
DataLoaderBuilder = Callable[..., Any]
"""``build_data_loader(dataset, consumed_samples, config, *, rank, world, dataloader_type) -> DataLoader | None``."""
EvaluateFn = Callable[[Any, Any, RunConfig, Any], "dict[str, float]"]
"""``evaluate(model, dataset, config, state) -> metrics``: a family's own evaluation of a split (e.g. every dev example
exactly once, metrics over all predictions), replacing the average over the first --eval-iters batches."""


def no_data_checks(config: RunConfig, tokenizer: Any) -> None:
    """A family whose datasets need no checks before they are built."""


def pretraining_data_loader(dataset: Any, consumed_samples: int, config: RunConfig, *, rank: int, world: int,
                            dataloader_type: str | None = None) -> Any:
    """Megatron's pretraining loader ("single" in order from ``consumed_samples``, or "cyclic" reshuffled)."""
    from megatron.data.data_samplers import build_pretraining_data_loader

    if dataset is None or len(dataset) == 0:
        return None
    return build_pretraining_data_loader(
        dataset, consumed_samples, config.training.micro_batch_size, rank, world,
        dataloader_type=dataloader_type or config.data.dataloader_type, num_workers=config.data.num_workers,
        drop_last=True, seed=config.data.seed)


@dataclass(frozen=True)
class ModelSpec:
    """One model family: how to build, feed, score, count and check it."""

    name: str
    """Family name, stored in checkpoints (``model_family``) so that loading picks the same spec."""
    build_model: Callable[[RunConfig], torch.nn.Module]
    """``build_model(config) -> nn.Module`` from ``config.model`` (random-LTD wraps its layers afterwards)."""
    forward_step: ForwardStep
    """One micro-batch: unpack the batch, run the model, return (loss, reported metrics)."""
    build_datasets: DatasetsBuilder
    """Train/valid/test datasets from ``config.data`` (sample counts in ``train_valid_test_num_samples``)."""
    flops_per_token: Callable[[TransformerConfig, int], float]
    """Training FLOPs per token at a sequence length (forward + backward), for the TFLOPs of the log line."""
    batch_layout: BatchLayout
    """How the sequence-length curriculum cuts this family's micro-batches (``megatron.data_efficiency.seqlen``)."""
    validate_data: Callable[[RunConfig, Any], None] = no_data_checks
    """``validate_data(config, tokenizer)``: ConfigError naming the flag/file for unusable data, before any run."""
    data_post_process: DataPostProcess | None = None
    """Entry-point hook on every training micro-batch; None uses ``batch_layout.make_post_process``."""
    build_data_loader: DataLoaderBuilder = pretraining_data_loader
    """DataLoader of one split for this rank (the curriculum sampler replaces it for the train split)."""
    evaluate: EvaluateFn | None = None
    """The family's own evaluation of the validation/test split (None: ``loop.evaluate`` over --eval-iters)."""
    args_defaults: Mapping[str, Any] = field(default_factory=dict)
    """Defaults for flags the user left unset, e.g. ``{"tokenizer_type": "GPT2BPETokenizer"}``."""
    extra_args: Callable[[argparse.ArgumentParser], argparse.ArgumentParser] | None = None
    """Adds the family's own flags to the parser; their values arrive in ``config.extra``."""
    complete_args: Callable[[argparse.Namespace], None] | None = None
    """Derives flags from others before they are checked (e.g. --train-iters from --epochs and the data size);
    raises ConfigError for bad input."""
    eval_metric: str = "lm loss"
    """The reported metric evaluation tools summarise (perplexity is exp of it for language models)."""
