"""Evaluate a checkpoint of any model family on its validation/test split (``tools/eval_gpt.py``, ``eval_bert.py``).

The checkpoint is loaded by ``megatron.inference.load_for_inference`` (DeepSpeed's layout, ZeRO-3 shards
gathered, random-LTD-trained or not): the flags stored in it give the model shape, tokenizer, data, split,
batch sizes and precision; any flag given on the command line overrides them. The metrics are the family spec's
``forward_step`` ones, averaged by ``megatron.training.loop.evaluate``, the very function pretraining evaluates
with; ``ppl`` is exp of the spec's ``eval_metric`` (``lm loss``).

By default the evaluation is exactly the one pretraining runs: the first --eval-iters global batches of
the split, micro-batch by micro-batch, reporting the mean of the micro-batch metrics, in the training
precision (--eval-fp32 forces fp32). ``--full-split`` goes once over every full micro-batch of one epoch
of the split instead. Prints one summary line; ``--results-path`` also writes it as JSON (atomically).
The model and the batches go to the GPU when there is one (``--device`` chooses), with TF32 fp32 matmuls.
Bad input: one ``error: ...`` line on stderr, exit status 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
import time
from dataclasses import replace
from typing import Any, Sequence

import torch

logger = logging.getLogger("megatron.evaluation")

SPLITS = {"valid": 1, "test": 2}


class EvalError(ValueError):
    """Bad flags or an unreadable checkpoint/data; the message names the file or flag."""


def build_parser(description: str | None = None) -> argparse.ArgumentParser:
    """The command line (Megatron flag names where they exist)."""
    ap = argparse.ArgumentParser(description=description or __doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--load", required=True, help="checkpoint directory written by pretrain_*.py --save")
    ap.add_argument("--load-tag", default=None, help="tag to load instead of the one in `latest`")
    ap.add_argument("--eval-split", choices=["valid", "test", "both"], default="valid", help="split(s) to evaluate")
    ap.add_argument("--data-path", nargs="+", default=None, help="data prefix(es) (default: the training data)")
    ap.add_argument("--split", default=None, help="train/valid/test proportions (default: the training --split)")
    ap.add_argument("--eval-iters", type=int, default=None, help="global batches to evaluate (default: training's)")
    ap.add_argument("--full-split", action="store_true", help="evaluate every full micro-batch of the split once")
    ap.add_argument("--micro-batch-size", type=int, default=None, help="samples per forward (default: training's)")
    ap.add_argument("--global-batch-size", type=int, default=None, help="samples per batch (default: training's)")
    ap.add_argument("--eval-fp32", action="store_true", help="evaluate in fp32 (default: the training precision)")
    ap.add_argument("--device", default=None,
                    help="cpu or cuda[:N] (default: cuda:LOCAL_RANK when CUDA is there, else cpu)")
    ap.add_argument("--tokenizer-type", default=None, help="tokenizer (default: training's)")
    ap.add_argument("--vocab-file", default=None, help="tokenizer vocab (default: training's)")
    ap.add_argument("--merge-file", default=None, help="BPE merges (default: training's)")
    ap.add_argument("--tokenizer-model", default=None, help="SentencePiece model (default: training's)")
    ap.add_argument("--allow-tokenizer-override", action="store_true",
                    help="accept --tokenizer-type/--vocab-file/--merge-file/--tokenizer-model that differ from the "
                         "checkpoint's (refused without it: another tokenizer maps text to other ids)")
    ap.add_argument("--data-cache-path", default=None, help="directory for index-map caches (default: training's)")
    ap.add_argument("--results-path", default=None, help="also write the results as JSON to this file")
    return ap


def eval_device(name: str | None) -> torch.device:
    """--device as a torch.device (default: the accelerator when there is one); EvalError for an unusable one."""
    from megatron.inference import default_device

    if name is None:
        return default_device()
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise EvalError(f"--device {name!r}: expected cpu or cuda[:N]") from None
    if device.type == "cuda" and (not torch.cuda.is_available()
                                  or (device.index or 0) >= torch.cuda.device_count()):
        raise EvalError(f"--device {name}: no such CUDA device here ({torch.cuda.device_count()} visible)")
    if device.type not in ("cpu", "cuda"):
        raise EvalError(f"--device {name!r}: expected cpu or cuda[:N]")
    return device


def evaluate_split(loaded: Any, dataset: Any, config: Any, *, micro_batches: int | None, label: str
                   ) -> dict[str, float]:
    """Mean of the micro-batch losses over `micro_batches` micro-batches (None: every full one) of `dataset`."""
    from megatron.training.loop import evaluate

    spec = loaded.spec
    loader = spec.build_data_loader(dataset, 0, config, rank=0, world=1, dataloader_type="single")
    if loader is None or len(loader) == 0:
        raise EvalError(f"the {label} split has {len(dataset)} samples, fewer than one micro-batch of "
                        f"{config.training.micro_batch_size}")
    count = len(loader) if micro_batches is None else min(micro_batches, len(loader))
    metrics = evaluate(loaded.model, loader, spec.forward_step, config, max_micro_batches=count,
                       progress=f"eval {label}")
    loss = metrics[spec.eval_metric]
    return {**metrics, "ppl": math.exp(min(loss, 50.0)), "micro_batches": count,
            "samples": count * config.training.micro_batch_size}


def atomic_write_json(path: str, data: Any) -> None:
    """Write JSON to `path` through a temp file in the same directory and os.replace."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def _check_tokenizer_override(cli: argparse.Namespace, overrides: dict[str, Any]) -> None:
    """Refuse tokenizer flags that differ from the checkpoint's, unless --allow-tokenizer-override."""
    from megatron.inference import resolve_checkpoint
    from megatron.training.run_identity import read_client, tokenizer_differences

    keys = ("tokenizer_type", "vocab_file", "merge_file", "tokenizer_model")
    if cli.allow_tokenizer_override or all(overrides[k] is None for k in keys):
        return
    tag, _ = resolve_checkpoint(cli.load, cli.load_tag)
    client = read_client(cli.load, tag)
    if client is None:
        return  # load_for_inference reports the unreadable checkpoint
    diffs = tokenizer_differences(client, {k: overrides[k] for k in keys})
    if diffs:
        raise EvalError(f"--load {cli.load}: the tokenizer differs from the checkpoint's ({'; '.join(diffs)}); "
                        "pass --allow-tokenizer-override if you mean it")


def _embedding_rows(model: Any) -> int | None:
    """Rows of the model's word-embedding table (the ids it can look up), None if it has none by that name."""
    for name, module in model.named_modules():
        if name.split(".")[-1] == "word_embeddings" and isinstance(module, torch.nn.Embedding):
            return int(module.num_embeddings)
    return None


def _check_ids_fit_embedding(loaded: Any) -> None:
    """The spec checks the data's ids against the configured padded vocab; the weights loaded may have fewer rows
    (an old checkpoint, a tokenizer override): check against those too, so an id past them is one error line
    instead of an IndexError deep in the forward."""
    from megatron.data.validation import check_token_ids, data_prefixes

    rows = _embedding_rows(loaded.model)
    if rows is None or rows >= loaded.config.model.padded_vocab_size or not loaded.config.data.data_path:
        return
    check_token_ids(data_prefixes(loaded.config.data.data_path), rows)


def run(argv: Sequence[str] | None = None, *, prog: str = "evaluate", family: str | None = None,
        description: str | None = None) -> dict[str, Any]:
    """Evaluate as the command line says; returns the results dict (also printed / written).

    ``family`` (e.g. "gpt"): refuse checkpoints of another family (tools named after one).
    """
    cli = build_parser(description).parse_args(argv)
    from megatron.inference import load_for_inference

    if cli.eval_iters is not None and cli.eval_iters < 1:
        raise EvalError(f"--eval-iters must be >= 1, got {cli.eval_iters}")
    torch.manual_seed(0)
    overrides = {"data_path": cli.data_path, "split": cli.split, "eval_iters": cli.eval_iters,
                 "micro_batch_size": cli.micro_batch_size, "global_batch_size": cli.global_batch_size,
                 "tokenizer_type": cli.tokenizer_type, "vocab_file": cli.vocab_file, "merge_file": cli.merge_file,
                 "tokenizer_model": cli.tokenizer_model, "data_cache_path": cli.data_cache_path}
    _check_tokenizer_override(cli, overrides)
    loaded = load_for_inference(cli.load, overrides, tag=cli.load_tag, dtype=torch.float32 if cli.eval_fp32 else None,
                                device=eval_device(cli.device))
    config, spec = loaded.config, loaded.spec
    if family is not None and spec.name != family:
        raise EvalError(f"--load {cli.load}: a {spec.name} checkpoint; {prog} evaluates {family} checkpoints")
    spec.validate_data(config, loaded.tokenizer)
    _check_ids_fit_embedding(loaded)
    t, d = config.training, config.data
    wanted = ["valid", "test"] if cli.eval_split == "both" else [cli.eval_split]
    n = 1 if cli.full_split else t.eval_iters * t.global_batch_size  # 1 sample = one epoch of the split
    counts = (1, n if "valid" in wanted else 0, n if "test" in wanted else 0)
    data_config = replace(config, data=replace(d, train_valid_test_num_samples=counts))
    datasets = spec.build_datasets(data_config, loaded.tokenizer)
    micro_batches = None if cli.full_split else t.eval_iters * t.num_micro_batches
    results: dict[str, Any] = {"checkpoint": loaded.path, "iteration": loaded.iteration,
                               "consumed_train_tokens": loaded.consumed_train_tokens,
                               "precision": str(loaded.dtype).replace("torch.", ""), "seq_length": t.seq_length}
    empty = [name for name in wanted if datasets[SPLITS[name]] is None or len(datasets[SPLITS[name]]) == 0]
    if empty and (len(empty) == len(wanted) or cli.eval_split != "both"):
        raise EvalError(f"the {' and '.join(empty)} split of {' '.join(d.data_path)} is empty with --split {d.split} "
                        "(give --split, e.g. 0,100,0 to evaluate a whole file as validation data)")
    wanted = [name for name in wanted if name not in empty]  # --eval-split both: skip an empty split
    start = time.time()
    for name in wanted:
        results[name] = evaluate_split(loaded, datasets[SPLITS[name]], config, micro_batches=micro_batches,
                                       label=name)
    results["seconds"] = round(time.time() - start, 3)
    metric = spec.eval_metric
    parts = []
    for name in wanted:
        r = results[name]
        others = "".join(f" {key} {r[key]:.4f}" for key in sorted(r)
                         if key not in (metric, "ppl", "micro_batches", "samples"))
        parts.append(f"{name} loss {r[metric]:.4f} ppl {r['ppl']:.2f}{others} ({r['samples']} samples)")
    print(f"{prog}: {loaded.tag} (iteration {results['iteration']}, {results['precision']}) | " + " | ".join(parts),
          flush=True)
    if cli.results_path:
        atomic_write_json(cli.results_path, results)
    return results


def main(argv: Sequence[str] | None = None, *, prog: str = "evaluate", family: str | None = None,
         description: str | None = None) -> int:
    """CLI entry: 0 on success, 2 with one `error:` line on bad input."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        run(argv, prog=prog, family=family, description=description)
    except ValueError as e:  # EvalError, ConfigError, dataset/tokenizer errors: all user input
        sys.stderr.write(f"error: {e}\n")
        return 2
    return 0

