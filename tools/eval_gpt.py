"""Evaluate a GPT checkpoint written by pretrain_gpt.py with a plain GPTModel: loss and perplexity.

    python tools/eval_gpt.py --load runs/quickstart/checkpoint [--eval-split valid|test|both] \\
        [--data-path other_text_document --split 0,100,0] [--eval-iters 50 | --full-split] \\
        [--results-path eval.json]

The checkpoint is DeepSpeed's layout (``latest`` → ``global_step{N}/mp_rank_00_model_states.pt``; ZeRO-3
shards are gathered with DeepSpeed's zero_to_fp32). The flags stored in it (the args snapshot) give the
model shape, tokenizer, data, split, batch sizes and precision; any flag given here overrides them. A
random-LTD-trained checkpoint has no wrapper keys, so it loads into the plain model.

By default the evaluation is exactly the one pretraining runs: the first --eval-iters global batches of
the split, micro-batch by micro-batch, reporting the mean of the micro-batch losses, in the training
precision (--eval-fp32 forces fp32). ``--full-split`` goes once over every full micro-batch of one epoch
of the split instead. Prints one summary line; ``--results-path`` also writes it as JSON (atomically).
Bad input: one ``error: ...`` line on stderr, exit status 2.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import math
import os
import sys
import time
from typing import Any, Sequence

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), os.path.pardir))
sys.path.insert(0, REPO)  # run from a checkout

import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

logger = logging.getLogger("eval_gpt")

SPLITS = {"valid": 1, "test": 2}
# Training-only settings neutralised before the snapshot is turned into a config (eval needs none of them).
_TRAINING_ONLY = {
    "deepspeed_config": None, "deepspeed": False, "load": None, "save": None, "load_tag": None,
    "train_iters": 1, "train_samples": None, "train_tokens": None, "rampup_batch_size": None,
    "lr_warmup_iters": 0, "lr_warmup_samples": 0, "lr_warmup_fraction": None, "lr_warmup_tokens": None,
    "lr_decay_iters": None, "lr_decay_samples": None, "lr_decay_tokens": None,
    "data_efficiency_curriculum_learning": False, "random_ltd": False, "train_data_exact_num_epochs": None,
    "train_doc_idx_path": None, "train_sample_idx_path": None, "train_shuffle_idx_path": None,
    "train_idx_path": None, "train_desc_path": None, "return_data_index": False, "tensorboard_dir": None,
    "fp16": False, "bf16": False, "zero_stage": None, "exit_interval": None, "skip_train": False,
}


class EvalError(ValueError):
    """Bad flags or an unreadable checkpoint/data; the message names the file or flag."""


def build_parser() -> argparse.ArgumentParser:
    """The command line (Megatron flag names where they exist)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--load", required=True, help="checkpoint directory written by pretrain_gpt.py --save")
    ap.add_argument("--load-tag", default=None, help="tag to load instead of the one in `latest`")
    ap.add_argument("--eval-split", choices=["valid", "test", "both"], default="valid", help="split(s) to evaluate")
    ap.add_argument("--data-path", nargs="+", default=None, help="data prefix(es) (default: the training data)")
    ap.add_argument("--split", default=None, help="train/valid/test proportions (default: the training --split)")
    ap.add_argument("--eval-iters", type=int, default=None, help="global batches to evaluate (default: training's)")
    ap.add_argument("--full-split", action="store_true", help="evaluate every full micro-batch of the split once")
    ap.add_argument("--micro-batch-size", type=int, default=None, help="samples per forward (default: training's)")
    ap.add_argument("--global-batch-size", type=int, default=None, help="samples per batch (default: training's)")
    ap.add_argument("--eval-fp32", action="store_true", help="evaluate in fp32 (default: the training precision)")
    ap.add_argument("--tokenizer-type", default=None, help="tokenizer (default: training's)")
    ap.add_argument("--vocab-file", default=None, help="tokenizer vocab (default: training's)")
    ap.add_argument("--merge-file", default=None, help="BPE merges (default: training's)")
    ap.add_argument("--tokenizer-model", default=None, help="SentencePiece model (default: training's)")
    ap.add_argument("--data-cache-path", default=None, help="directory for index-map caches (default: training's)")
    ap.add_argument("--results-path", default=None, help="also write the results as JSON to this file")
    return ap


# ------------------------------------------------------------------------------------------------------------
# checkpoint
# ------------------------------------------------------------------------------------------------------------
def resolve_checkpoint(load_dir: str, tag: str | None) -> tuple[str, str]:
    """(tag, directory) of the checkpoint to evaluate."""
    from megatron.training.checkpointing import read_latest_tag

    if not os.path.isdir(load_dir):
        raise EvalError(f"--load {load_dir}: directory not found")
    tag = tag or read_latest_tag(load_dir)
    if tag is None:
        raise EvalError(f"--load {load_dir}: no checkpoint (no `latest` or latest_checkpointed_iteration.txt)")
    path = os.path.join(load_dir, tag)
    if not os.path.isdir(path):
        raise EvalError(f"--load {load_dir}: checkpoint directory {tag} does not exist")
    return tag, path


def load_model_states(load_dir: str, tag: str, path: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(model state dict, the rest of rank 0's model-states file: args snapshot, iteration, ds_config ...)."""
    names = ("mp_rank_00_model_states.pt", "zero_pp_rank_0_mp_rank_00_model_states.pt")  # ZeRO-3: the second
    found = [os.path.join(path, name) for name in names if os.path.isfile(os.path.join(path, name))]
    if not found:
        raise EvalError(f"{path}: {names[0]} not found (not a DeepSpeed checkpoint of pretrain_gpt)")
    states = found[0]
    try:
        client = torch.load(states, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt or truncated file
        raise EvalError(f"{states}: cannot read ({type(e).__name__}: {e})") from None
    if not isinstance(client, dict) or "args" not in client:
        raise EvalError(f"{states}: no args snapshot inside; was it written by pretrain_gpt.py?")
    stage = ((client.get("ds_config") or {}).get("zero_optimization") or {}).get("stage", 0)
    module = client.get("module")
    if stage == 3:  # parameters are partitioned over the ZeRO shards: let DeepSpeed gather them
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        module = get_fp32_state_dict_from_zero_checkpoint(load_dir, tag=tag)
    if not isinstance(module, dict) or not module:
        raise EvalError(f"{states}: no model weights ('module') inside")
    return dict(module), client


# ------------------------------------------------------------------------------------------------------------
# configuration from the snapshot
# ------------------------------------------------------------------------------------------------------------
def eval_args(snapshot: dict[str, Any], cli: argparse.Namespace, ds_config: dict[str, Any]) -> argparse.Namespace:
    """The training flags from the checkpoint, training-only ones neutralised, this tool's overrides applied."""
    from megatron.arguments import parse_args

    args = parse_args([])
    for key, value in snapshot.items():
        if hasattr(args, key):
            setattr(args, key, tuple(value) if key == "rampup_batch_size" and value else value)
    mbs = args.micro_batch_size or ds_config.get("train_micro_batch_size_per_gpu")
    gbs = args.global_batch_size or ds_config.get("train_batch_size")
    for key, value in _TRAINING_ONLY.items():
        setattr(args, key, value)
    overrides = {"data_path": cli.data_path, "split": cli.split, "eval_iters": cli.eval_iters,
                 "micro_batch_size": cli.micro_batch_size or mbs, "global_batch_size": cli.global_batch_size or gbs,
                 "tokenizer_type": cli.tokenizer_type, "vocab_file": cli.vocab_file, "merge_file": cli.merge_file,
                 "tokenizer_model": cli.tokenizer_model, "data_cache_path": cli.data_cache_path}
    for key, value in overrides.items():
        if value is not None:
            setattr(args, key, value)
    if not args.micro_batch_size:
        raise EvalError("the checkpoint does not record the micro-batch size: pass --micro-batch-size")
    args.global_batch_size = args.global_batch_size or args.micro_batch_size
    if args.global_batch_size % args.micro_batch_size:
        args.global_batch_size = args.micro_batch_size  # a multi-rank batch: one rank's share is what matters
    if args.eval_iters is None or args.eval_iters < 1:
        raise EvalError(f"--eval-iters must be >= 1, got {args.eval_iters}")
    return args


def training_precision(snapshot: dict[str, Any], ds_config: dict[str, Any]) -> torch.dtype:
    """The dtype the model was trained (and evaluated) in."""
    if snapshot.get("bf16") or (ds_config.get("bf16") or {}).get("enabled"):
        return torch.bfloat16
    if snapshot.get("fp16") or (ds_config.get("fp16") or {}).get("enabled"):
        return torch.float16 if torch.cuda.is_available() else torch.float32
    return torch.float32


def _load_entry_point() -> Any:
    spec = importlib.util.spec_from_file_location("_pretrain_gpt_for_eval", os.path.join(REPO, "pretrain_gpt.py"))
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------------------------
def evaluate_split(model: torch.nn.Module, dataset: Any, config: Any, forward_step: Any, *, micro_batches: int | None,
                   label: str) -> dict[str, float]:
    """Mean of the micro-batch losses over `micro_batches` micro-batches (None: every full one) of `dataset`."""
    from megatron.data.data_samplers import build_pretraining_data_loader

    loader = build_pretraining_data_loader(dataset, 0, config.training.micro_batch_size, 0, 1,
                                           dataloader_type="single", num_workers=0, drop_last=True)
    total = len(loader) if micro_batches is None else min(micro_batches, len(loader))
    if total == 0:
        raise EvalError(f"the {label} split has {len(dataset)} samples, fewer than one micro-batch of "
                        f"{config.training.micro_batch_size}")
    losses = []
    with torch.no_grad():
        for batch in tqdm(loader, total=total, desc=f"eval {label}", unit="batch", disable=total < 50):
            _, metrics = forward_step(batch, model, config)
            losses.append(metrics["lm loss"].float())
            if len(losses) >= total:
                break
    loss = float(torch.stack(losses).sum() / len(losses))
    return {"lm loss": loss, "ppl": math.exp(min(loss, 50.0)), "micro_batches": len(losses),
            "samples": len(losses) * config.training.micro_batch_size}


def atomic_write_json(path: str, data: Any) -> None:
    """Write JSON to `path` through a temp file in the same directory and os.replace."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Evaluate as the command line says; returns the results dict (also printed / written)."""
    cli = build_parser().parse_args(argv)
    from megatron.arguments import validate_args
    from megatron.config import build_configs
    from megatron.data.gpt_dataset import build_train_valid_test_datasets
    from megatron.model import GPTModel
    from megatron.tokenizer import build_tokenizer_from_args

    torch.manual_seed(0)
    tag, path = resolve_checkpoint(cli.load, cli.load_tag)
    weights, client = load_model_states(cli.load, tag, path)
    snapshot, ds_config = dict(client["args"]), dict(client.get("ds_config") or {})
    args = eval_args(snapshot, cli, ds_config)
    validate_args(args, 1)
    tokenizer = build_tokenizer_from_args(args)
    config = build_configs(args, tokenizer, 1)
    model = GPTModel(config.model)
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise EvalError(f"{path}: the weights do not fit a GPT model of the recorded shape "
                        f"({' '.join(first[:2])})") from None
    dtype = torch.float32 if cli.eval_fp32 else training_precision(snapshot, ds_config)
    model.to(dtype=dtype).eval()

    t, d = config.training, config.data
    wanted = ["valid", "test"] if cli.eval_split == "both" else [cli.eval_split]
    n = 1 if cli.full_split else t.eval_iters * t.global_batch_size  # 1 sample = one epoch of the split
    counts = [1, n if "valid" in wanted else 0, n if "test" in wanted else 0]
    datasets = build_train_valid_test_datasets(list(d.data_path), d.data_impl, d.split, counts, d.seq_length, d.seed,
                                               d.skip_warmup, index_cache_dir=d.data_cache_path)
    forward_step = _load_entry_point().forward_step
    micro_batches = None if cli.full_split else t.eval_iters * (t.global_batch_size // t.micro_batch_size)
    results: dict[str, Any] = {"checkpoint": os.path.abspath(path), "iteration": int(client.get("iteration", 0)),
                               "consumed_train_tokens": int((client.get("train_state") or {}).get(
                                   "consumed_train_tokens", 0)),
                               "precision": str(dtype).replace("torch.", ""), "seq_length": d.seq_length}
    empty = [name for name in wanted if datasets[SPLITS[name]] is None or len(datasets[SPLITS[name]]) == 0]
    if empty and (len(empty) == len(wanted) or cli.eval_split != "both"):
        raise EvalError(f"the {' and '.join(empty)} split of {' '.join(d.data_path)} is empty with --split {d.split} "
                        "(give --split, e.g. 0,100,0 to evaluate a whole file as validation data)")
    wanted = [name for name in wanted if name not in empty]  # --eval-split both: skip an empty split
    start = time.time()
    for name in wanted:
        results[name] = evaluate_split(model, datasets[SPLITS[name]], config, forward_step,
                                       micro_batches=micro_batches, label=name)
    results["seconds"] = round(time.time() - start, 3)
    parts = [f"{name} loss {results[name]['lm loss']:.4f} ppl {results[name]['ppl']:.2f} "
             f"({results[name]['samples']} samples)" for name in wanted]
    print(f"eval_gpt: {tag} (iteration {results['iteration']}, {results['precision']}) | " + " | ".join(parts),
          flush=True)
    if cli.results_path:
        atomic_write_json(cli.results_path, results)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry: 0 on success, 2 with one `error:` line on bad input."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    try:
        run(argv)
    except ValueError as e:  # EvalError, ConfigError, dataset/tokenizer errors: all user input
        sys.stderr.write(f"error: {e}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
