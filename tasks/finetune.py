"""Finetuning a pretrained BERT on GLUE (8 tasks) and RACE: the classification family specs and the results file.

Two family specs over the one training core (``megatron.training.pretrain``):

* ``CLASSIFICATION_SPEC`` (GLUE): ``Classification`` head on the pooled [CLS]; cross-entropy, or MSE for STS-B;
  the BERT batch layout trims padding from every training micro-batch.
* ``MULTIPLE_CHOICE_SPEC`` (RACE): one score per (article, question + option) pair, cross-entropy over the 4.

The task flags (``--task``, ``--train-data``, ``--valid-data``, ``--pretrained-checkpoint``, ``--epochs``,
``--results-path``) come with the spec (``add_finetune_args``); ``complete_args`` takes the model shape and the
tokenizer from the pretrained checkpoint, and sets ``--train-iters`` = epochs x (train examples // global batch)
and the evaluation interval to one epoch. Evaluation scores every example of every ``--valid-data`` file exactly
once, across data-parallel ranks, and reports the task's metrics (``tasks.metrics``); ``--results-path`` gets a
JSON with every evaluation and the best epoch (format in tasks/README.md), rewritten atomically after each.
The training loss is reported as ``lm loss``, the name Megatron's finetuning log uses.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
from typing import Any

import torch
import torch.nn.functional as F

from megatron.config import ConfigError, RunConfig
from megatron.data_efficiency.seqlen import BERT_LAYOUT, UNCUT_LAYOUT
from megatron.model import bert_flops_per_token
from megatron.model.classification import Classification, load_pretrained_bert
from megatron.training.spec import Batch, ModelSpec
from tasks.metrics import HEADLINE, task_metrics

logger = logging.getLogger("megatron.training")

TASKS = ("MNLI", "QQP", "QNLI", "SST-2", "CoLA", "STS-B", "MRPC", "RTE", "RACE")
MODEL_FLAGS = ("num_layers", "hidden_size", "num_attention_heads", "ffn_hidden_size", "max_position_embeddings",
               "position_embedding_type", "use_rotary_position_embeddings", "rope_theta",
               "make_vocab_size_divisible_by", "layernorm_epsilon", "tokenizer_type", "vocab_file", "merge_file",
               "tokenizer_model", "vocab_extra_ids")
"""Flags taken from the pretrained checkpoint (model shape and tokenizer); given differently, they are an error."""


def add_finetune_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Megatron's finetuning flags."""
    g = parser.add_argument_group("finetuning")
    g.add_argument("--task", default=None, choices=list(TASKS), help="GLUE task or RACE.")
    g.add_argument("--train-data", nargs="+", default=None, help="Training file(s) (GLUE .tsv; RACE directories).")
    g.add_argument("--valid-data", nargs="*", default=None,
                   help="Dev file(s), each scored separately (MNLI: dev_matched.tsv dev_mismatched.tsv).")
    g.add_argument("--pretrained-checkpoint", default=None,
                   help="Checkpoint directory of pretrain_bert.py; its model shape and tokenizer are used.")
    g.add_argument("--epochs", type=int, default=None, help="Passes over the training data.")
    g.add_argument("--results-path", default=None,
                   help="JSON file: every evaluation's metrics per dev file, and the best epoch.")
    return parser


def _parser_defaults() -> dict[str, Any]:
    from megatron.arguments import parse_args

    return vars(parse_args([], add_finetune_args))


def _stored_args(checkpoint: str) -> dict[str, Any]:
    """The flags stored in a checkpoint (read without loading its tensors into memory)."""
    from megatron.inference import MODEL_STATES_FILES, resolve_checkpoint

    _, path = resolve_checkpoint(checkpoint)
    for name in MODEL_STATES_FILES:
        file = os.path.join(path, name)
        if os.path.isfile(file):
            try:
                client = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
            except Exception as e:  # noqa: BLE001 - a corrupt file is one line
                raise ConfigError(f"--pretrained-checkpoint {checkpoint}: cannot read {file} ({type(e).__name__})")
            if client.get("model_family", "bert") != "bert":
                raise ConfigError(f"--pretrained-checkpoint {checkpoint}: a {client['model_family']} checkpoint; "
                                  "finetuning needs one written by pretrain_bert.py")
            return dict(client.get("args") or {})
    raise ConfigError(f"--pretrained-checkpoint {checkpoint}: no model states file in {path}")


def _count_examples(task: str, paths: list[str]) -> int:
    if task == "RACE":
        from tasks.race.data import read_race

        return sum(len(read_race(p)) for p in paths)
    from tasks.glue.data import read_glue

    total = 0
    for path in paths:
        examples, is_test = read_glue(task, path)
        if is_test:
            raise ConfigError(f"--train-data {path}: a {task} test file (no labels); give the train file")
        total += len(examples)
    return total


def complete_args(args: argparse.Namespace) -> None:
    """Model shape/tokenizer from --pretrained-checkpoint; --train-iters from --epochs; one evaluation per epoch."""
    from megatron.training.initialize import world_size_from_env

    for flag in ("task", "train_data", "epochs"):
        if getattr(args, flag) is None:
            raise ConfigError(f"--{flag.replace('_', '-')} is required for finetuning")
    if args.epochs < 1:
        raise ConfigError(f"--epochs must be >= 1, got {args.epochs}")
    defaults = _parser_defaults()
    if args.pretrained_checkpoint:
        stored = _stored_args(args.pretrained_checkpoint)
        for key in MODEL_FLAGS:
            if key not in stored:
                continue
            given = getattr(args, key)
            if given is None or given == defaults.get(key):
                setattr(args, key, stored[key])
            elif given != stored[key]:
                raise ConfigError(f"--{key.replace('_', '-')} {given} differs from {stored[key]} of "
                                  f"--pretrained-checkpoint {args.pretrained_checkpoint}")
    elif not args.load:
        logger.warning("finetuning %s from a random initialization: no --pretrained-checkpoint", args.task)
    if args.tokenizer_type is None:
        args.tokenizer_type = "BertWordPieceLowerCase"
    if args.micro_batch_size is None:
        return  # validate_args names it
    n = _count_examples(args.task, list(args.train_data))
    gbs = args.global_batch_size or args.micro_batch_size * world_size_from_env()
    per_epoch = n // gbs
    if per_epoch < 1:
        raise ConfigError(f"--train-data has {n} {args.task} examples, fewer than one global batch of {gbs}")
    if args.train_iters is None and args.train_samples is None and args.train_tokens is None:
        args.train_iters = args.epochs * per_epoch
    if args.eval_interval == defaults["eval_interval"]:
        args.eval_interval = per_epoch
    if args.dataloader_type is None:
        args.dataloader_type = "cyclic"  # reshuffled every epoch, resumes exactly


# ----------------------------------------------------------------------------------------------------------------
# model, batch, loss
# ----------------------------------------------------------------------------------------------------------------
def _task(config: RunConfig) -> str:
    return str(config.extra["task"])


def num_outputs(task: str) -> int:
    """Classes of a task (1 for STS-B regression; RACE scores each of its 4 options with one output)."""
    if task == "RACE":
        return 1
    from tasks.glue.data import num_outputs as glue_outputs

    return glue_outputs(task)


def model_provider(config: RunConfig) -> torch.nn.Module:
    """Classification (or multiple-choice) model, with the pretrained BERT's weights when one is given."""
    task = _task(config)
    model = Classification(config.model, num_outputs(task), multiple_choice=task == "RACE")
    checkpoint = config.extra.get("pretrained_checkpoint")
    if checkpoint:
        from megatron.inference import load_for_inference

        pretrained = load_for_inference(checkpoint, dtype=torch.float32)
        shape = ("num_layers", "hidden_size", "num_attention_heads", "ffn_size", "padded_vocab_size",
                 "max_position_embeddings", "position_embedding_type")
        differ = [k for k in shape if getattr(pretrained.config.model, k) != getattr(config.model, k)]
        if differ:
            raise ConfigError(f"--pretrained-checkpoint {checkpoint}: its {', '.join(differ)} differ from this run's")
        missing = load_pretrained_bert(model, pretrained.model.state_dict())
        logger.info("finetuning from %s (iteration %d)%s", pretrained.path, pretrained.iteration,
                    "; it has no pooler (trained without the binary head): the pooler starts fresh" if missing else "")
    return model


def forward_step(batch: Batch, model: Any, config: RunConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Logits of the micro-batch; cross-entropy (MSE for STS-B) against ``label``, reported as ``lm loss``."""
    device = getattr(model, "device", None) or next(model.parameters()).device
    text = batch["text"].to(device=device, dtype=torch.long)
    types = batch["types"].to(device=device, dtype=torch.long)
    padding = batch["padding_mask"].to(device=device, dtype=torch.long)
    logits = model(text, padding, tokentype_ids=types)  # [b, classes] or [b, 4]
    if _task(config) == "STS-B":
        loss = F.mse_loss(logits.float().reshape(-1), batch["label"].to(device).float().reshape(-1))
    else:
        loss = F.cross_entropy(logits.float(), batch["label"].to(device=device, dtype=torch.long).reshape(-1))
    return loss, {"lm loss": loss.detach()}


# ----------------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------------
def _dataset(task: str, paths: list[str], tokenizer: Any, seq_length: int) -> Any:
    if task == "RACE":
        from tasks.race.data import RaceDataset

        return RaceDataset(paths, tokenizer, seq_length)
    from tasks.glue.data import GlueDataset

    return GlueDataset(task, paths, tokenizer, seq_length)


def build_datasets(config: RunConfig, tokenizer: Any) -> tuple[Any, Any, Any]:
    """(train over all --train-data files, [one dataset per --valid-data file] or None, None)."""
    task, seq = _task(config), config.training.seq_length
    train = _dataset(task, list(config.extra["train_data"]), tokenizer, seq)
    valid_paths = list(config.extra.get("valid_data") or [])
    valid = [_dataset(task, [path], tokenizer, seq) for path in valid_paths] or None
    return train, valid, None


def validate_data(config: RunConfig, tokenizer: Any) -> None:
    """The data files exist; the tokenizer is a BERT one."""
    for flag in ("train_data", "valid_data"):
        for path in config.extra.get(flag) or []:
            if not os.path.exists(path):
                raise ConfigError(f"--{flag.replace('_', '-')} {path}: not found")
    for name in ("cls", "sep", "pad"):
        if getattr(tokenizer, name, None) is None:
            raise ConfigError(f"--tokenizer-type {type(tokenizer).__name__} has no [{name.upper()}] token; "
                              "finetuning needs a BERT WordPiece tokenizer")


# ----------------------------------------------------------------------------------------------------------------
# evaluation: every dev example once, across ranks
# ----------------------------------------------------------------------------------------------------------------
def _world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def predict(model: Any, dataset: Any, config: RunConfig) -> tuple[list, list]:
    """(predictions, labels) of every example of `dataset`, in dataset order, on every rank.

    Rank r scores examples r, r + W, ...; the shards are padded to equal length (the padding is scored and
    dropped) so that every rank runs the same number of forward passes (ZeRO-3 gathers weights collectively).
    """
    from megatron.data.data_samplers import collate_samples
    from megatron.training.rng import fork_rng

    rank, world = _world()
    n, mbs = len(dataset), config.training.micro_batch_size
    per_rank = math.ceil(n / world)
    mine = [min(i, n - 1) for i in range(rank, per_rank * world, world)]
    regression = _task(config) == "STS-B"
    preds: list = []
    labels: list = []
    inner = getattr(model, "module", model)
    was_training = inner.training
    model.eval()
    try:
        with torch.no_grad(), fork_rng():
            for start in range(0, len(mine), mbs):
                batch = collate_samples([dataset[i] for i in mine[start:start + mbs]])
                device = getattr(model, "device", None) or next(model.parameters()).device
                logits = model(batch["text"].to(device), batch["padding_mask"].to(device),
                               tokentype_ids=batch["types"].to(device)).float()
                preds += (logits.reshape(-1).tolist() if regression else logits.argmax(dim=-1).tolist())
                labels += batch["label"].reshape(-1).tolist()
    finally:
        model.train(was_training)
    gathered = [(mine, preds, labels)]
    if world > 1:
        gathered = [None] * world  # type: ignore[list-item]
        torch.distributed.all_gather_object(gathered, (mine, preds, labels))
    by_index: dict[int, tuple[Any, Any]] = {}
    for indices, p, y in gathered:
        for i, pi, yi in zip(indices, p, y):
            by_index.setdefault(i, (pi, yi))
    if sorted(by_index) != list(range(n)):
        raise RuntimeError(f"evaluation scored {len(by_index)} of {n} examples")
    return [by_index[i][0] for i in range(n)], [by_index[i][1] for i in range(n)]


def _dev_name(dataset: Any, index: int) -> str:
    return str(getattr(dataset, "dataset_name", f"dev{index}"))


def evaluate(model: Any, datasets: Any, config: RunConfig, state: Any) -> dict[str, float]:
    """Metrics of every dev file and overall (all files' predictions together); writes --results-path (rank 0)."""
    task = _task(config)
    datasets = list(datasets) if isinstance(datasets, (list, tuple)) else [datasets]
    per_file: dict[str, dict[str, float]] = {}
    all_preds: list = []
    all_labels: list = []
    for i, dataset in enumerate(datasets):
        preds, labels = predict(model, dataset, config)
        per_file[_dev_name(dataset, i)] = task_metrics(task, preds, labels)
        all_preds += preds
        all_labels += labels
    overall = task_metrics(task, all_preds, all_labels)
    if _world()[0] == 0 and config.extra.get("results_path"):
        write_results(config, state.iteration, per_file, overall)
    report = {k: float(v) for k, v in overall.items() if k not in ("correct", "total")}
    if len(per_file) > 1:
        headline = HEADLINE[task]
        report.update({f"{name} {headline}": float(m[headline]) for name, m in per_file.items()})
    return report


def write_results(config: RunConfig, iteration: int, per_file: dict[str, dict[str, float]],
                  overall: dict[str, float]) -> dict[str, Any]:
    """Add this evaluation to the --results-path JSON (evaluations at or after `iteration` from an earlier,
    interrupted run are replaced), recompute the best epoch, write atomically; returns the document."""
    from megatron.evaluation import atomic_write_json

    path = str(config.extra["results_path"])
    task = _task(config)
    epochs = int(config.extra["epochs"])
    per_epoch = max(1, (config.training.train_iters or 0) // epochs)
    doc: dict[str, Any] = {}
    if os.path.isfile(path):
        try:
            with open(path, encoding="utf-8") as f:
                doc = json.load(f)
        except (OSError, json.JSONDecodeError):
            logger.warning("%s: unreadable, starting a new results file", path)
            doc = {}
        if doc.get("task") != task:
            doc = {}
    evaluations = [e for e in doc.get("evaluations", []) if int(e.get("iteration", 0)) < iteration]
    evaluations.append({"epoch": round(iteration / per_epoch, 3) if iteration % per_epoch else iteration // per_epoch,
                        "iteration": iteration, "dev": per_file, "overall": overall})
    headline = HEADLINE[task]
    best = max(range(len(evaluations)), key=lambda i: (evaluations[i]["overall"][headline], -i))
    doc = {"task": task, "seed": config.training.seed, "lr": config.optimizer.lr, "epochs_planned": epochs,
           "pretrained_checkpoint": config.extra.get("pretrained_checkpoint"), "metric": headline,
           "evaluations": evaluations, "best_epoch": evaluations[best]["epoch"], "best": evaluations[best]["overall"]}
    atomic_write_json(path, doc)
    return doc


_COMMON = dict(build_model=model_provider, forward_step=forward_step, build_datasets=build_datasets,
               flops_per_token=bert_flops_per_token, validate_data=validate_data, evaluate=evaluate,
               extra_args=add_finetune_args, complete_args=complete_args)

CLASSIFICATION_SPEC = ModelSpec(name="classification", batch_layout=BERT_LAYOUT, **_COMMON)
"""GLUE: a class (or a score, STS-B) per [CLS] a [SEP] b [SEP] input."""
MULTIPLE_CHOICE_SPEC = ModelSpec(name="multiple_choice", batch_layout=UNCUT_LAYOUT, **_COMMON)
"""RACE: one score per option, cross-entropy over the options."""


def spec_for_task(task: str) -> ModelSpec:
    """The family spec a task trains with."""
    return MULTIPLE_CHOICE_SPEC if task == "RACE" else CLASSIFICATION_SPEC
