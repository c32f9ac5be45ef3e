"""Offline curriculum-learning data analysis (map / reduce) with Megatron-DeepSpeed's ``analyze_data.py`` flags.

The dataset is the normal Megatron GPT or BERT train split (``--data-path``, ``--split``, ``--seq-length``,
``--seed``; dummy sample counts, so ``--train-data-exact-num-epochs`` decides its length; BERT with
mask_prob 0), the same build pretraining uses, so the index files refer to the same sample positions.

    --analyzing-task map|reduce        map: this worker's threads compute the metrics; reduce: merge once
                                       (``map_reduce``: both, one worker; metrics ordered by dependency)
    --analyzing-data-type GPT|BERT
    --analyzing-metric M [M ...]       seqlen (BERT), total_vocab_freq, vocab_rarity (needs total_vocab_freq
                                       reduced first), seqlen_vocab_rarity (BERT), or a registered metric
    --analyzing-num-workers / --analyzing-worker-id / --analyzing-num-threads / --analyzing-num-threads-reduce
    --analyzing-specific-threads T [T ...]   re-run only these map threads of this worker
    --save DIR                         output root: DIR/{metric}/...

The reduce stage reads only the map outputs under ``--save`` (it does not rebuild the dataset).
Errors are one line ``error: ...`` on stderr with exit status 2.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Sequence

_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from megatron.arguments import log_startup_warnings, parse_args  # noqa: E402
from megatron.data_efficiency.analyzer import (check_map_request, resolve_metrics, run_map,  # noqa: E402
                                               run_map_reduce, run_reduce)
from megatron.data_efficiency.analyzer_io import AnalyzerError  # noqa: E402

logger = logging.getLogger("analyze_data")

BERT_ONLY_METRICS = ("seqlen", "seqlen_vocab_rarity")


def add_analyzer_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The ``--analyzing-*`` flags (and the BERT dataset flags when the main parser lacks them)."""
    g = parser.add_argument_group("data analyzer")
    g.add_argument("--analyzing-task", required=True, choices=["map", "reduce", "map_reduce"],
                   help="map: compute metrics for this worker; reduce: merge every worker's map output.")
    g.add_argument("--analyzing-data-type", required=True, choices=["BERT", "GPT"], help="Dataset kind.")
    g.add_argument("--analyzing-metric", type=str, nargs="+", default=[], help="Metric name(s) to analyze.")
    g.add_argument("--analyzing-num-workers", type=int, default=1, help="Number of map workers (nodes).")
    g.add_argument("--analyzing-worker-id", type=int, default=0, help="This worker's id.")
    g.add_argument("--analyzing-num-threads", type=int, default=1,
                   help="Map threads per worker (GPT token-stream: threads, at most one per core; other data: "
                        "processes).")
    g.add_argument("--analyzing-num-threads-reduce", type=int, default=1, help="Reduce threads (parallel sort).")
    g.add_argument("--analyzing-specific-threads", type=int, nargs="+", default=[],
                   help="Re-run only these map threads of this worker (e.g. after one was killed).")
    known = set(parser._option_string_actions)  # the main parser may already define the BERT flags
    if "--mask-prob" not in known:
        g.add_argument("--mask-prob", type=float, default=0.15, help="BERT masking probability (analysis uses 0).")
    if "--short-seq-prob" not in known:
        g.add_argument("--short-seq-prob", type=float, default=0.1, help="BERT short-sample probability.")
    if "--bert-no-binary-head" not in known:
        g.add_argument("--bert-no-binary-head", action="store_false", dest="bert_binary_head",
                       help="BERT without the sentence-order head (single-sentence samples allowed).")
    return parser


def _require(args: argparse.Namespace, *flags: str) -> None:
    for flag in flags:
        if getattr(args, flag.lstrip("-").replace("-", "_"), None) in (None, [], ""):
            raise AnalyzerError(f"{flag} is required for --analyzing-task {args.analyzing_task}")


def build_analysis_dataset(args: argparse.Namespace) -> tuple[Any, int]:
    """The train split exactly as pretraining builds it (dummy sample counts), and the padded vocab size."""
    from megatron.tokenizer import build_tokenizer_from_args

    _require(args, "--data-path", "--seq-length", "--tokenizer-type")
    if args.train_data_exact_num_epochs is None:
        raise AnalyzerError("--train-data-exact-num-epochs is required: it decides how many samples the train "
                            "split (and so the analysis) covers; use the value pretraining will use")
    tokenizer = build_tokenizer_from_args(args)
    common = dict(data_prefix=args.data_path, data_impl=args.data_impl, splits_string=args.split,
                  train_valid_test_num_samples=[1, 1, 1], seed=args.seed, skip_warmup=not args.mmap_warmup,
                  train_data_exact_num_epochs=args.train_data_exact_num_epochs,
                  return_data_index=args.return_data_index, index_cache_dir=args.data_cache_path)
    if args.analyzing_data_type == "GPT":
        from megatron.data.gpt_dataset import build_train_valid_test_datasets

        train, _, _ = build_train_valid_test_datasets(
            seq_length=args.seq_length, train_doc_idx_path=args.train_doc_idx_path,
            train_sample_idx_path=args.train_sample_idx_path, train_shuffle_idx_path=args.train_shuffle_idx_path,
            **common)
    else:
        from megatron.data.bert_dataset import build_train_valid_test_datasets

        train, _, _ = build_train_valid_test_datasets(
            max_seq_length=args.seq_length, masked_lm_prob=0.0, short_seq_prob=args.short_seq_prob,
            binary_head=args.bert_binary_head, cls_id=tokenizer.cls, sep_id=tokenizer.sep, mask_id=tokenizer.mask,
            pad_id=tokenizer.pad, vocab_size=tokenizer.vocab_size, train_idx_path=args.train_idx_path, **common)
    if train is None:
        raise AnalyzerError(f"--split {args.split!r} leaves no training documents to analyze")
    return train, tokenizer.padded_vocab_size


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Execute the parsed command; returns the reduce summaries (empty for map)."""
    _require(args, "--save", "--analyzing-metric")
    metrics = list(args.analyzing_metric)
    if args.analyzing_data_type == "GPT":
        bad = [m for m in metrics if m in BERT_ONLY_METRICS]
        if bad:
            raise AnalyzerError(f"--analyzing-metric {' '.join(bad)} needs BERT data (GPT samples all have "
                                "seq_length + 1 tokens)")
    counts = dict(num_workers=args.analyzing_num_workers, num_threads=args.analyzing_num_threads)
    if args.analyzing_task == "reduce":
        return run_reduce(args.save, metrics, num_threads_reduce=args.analyzing_num_threads_reduce, **counts)
    if args.analyzing_task == "map_reduce" and (args.analyzing_num_workers != 1 or args.analyzing_specific_threads):
        raise AnalyzerError("--analyzing-task map_reduce runs one worker: use --analyzing-num-workers 1 and no "
                            "--analyzing-specific-threads (run map on every worker, then reduce, otherwise)")
    # metric names, worker/thread ids and inputs are checked BEFORE the (slow, on a real corpus) dataset build
    resolved = resolve_metrics(metrics)
    names = {m.name for m in resolved}
    first = resolved if args.analyzing_task == "map" else [m for m in resolved if not names.intersection(m.requires)]
    check_map_request(first, args.save, worker_id=args.analyzing_worker_id,
                      specific_threads=args.analyzing_specific_threads, **counts)
    dataset, padded_vocab_size = build_analysis_dataset(args)
    logger.info("analyzing %d %s samples (train split), metrics %s", len(dataset), args.analyzing_data_type, metrics)
    options = dict(batch_size=args.global_batch_size or 1000, data_type=args.analyzing_data_type,
                   padded_vocab_size=padded_vocab_size, seq_length=args.seq_length, **counts)
    if args.analyzing_task == "map":
        run_map(dataset, metrics, args.save, worker_id=args.analyzing_worker_id,
                specific_threads=args.analyzing_specific_threads, **options)
        return {}
    return run_map_reduce(dataset, metrics, args.save, num_threads_reduce=args.analyzing_num_threads_reduce,
                          **options)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point: 0 on success, 2 with one ``error:`` line on bad input or missing/corrupt files."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        args = parse_args(argv, add_analyzer_args)
        log_startup_warnings(args)  # upstream flags accepted here that change nothing, and why
        run(args)
    except (ValueError, OSError) as e:  # AnalyzerError, DatasetError, IndexedDatasetError, TokenizerError, ...
        sys.stderr.write(f"error: {e}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
