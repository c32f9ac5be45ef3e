"""Curriculum sampler cost per global batch, as a fraction of one training step (target < 1 %).

The sampler (megatron/data_efficiency/sampler.py) runs on N = 1M samples with two curriculum configurations:

* ``voc% + seqlen_truncate`` — the GPT recipe: vocabulary rarity by percentile (1 -> 100, root 2, ~100 rows
  of a percentile-merged index, so ~100 clusters) plus a single_cluster seqlen_truncate metric (K = 1);
* ``2 value metrics``        — two schedule_based value metrics (100 and 50 distinct values, K = 2: every new
  cluster is an intersection minus the earlier clusters; ~100 clusters).

Each is driven through ``__iter__`` exactly as the DataLoader does (micro-batch 8, one data-parallel rank,
gradient accumulation G/8), with cluster files written to a temporary ``data_cluster_path`` like the recipes.
The curriculum is compressed into ``--total-curriculum-step`` batches so that every cluster build is timed;
reported per global batch:

* ``draw``     — median cost of a batch that builds no cluster (the steady state);
* ``build``    — mean extra cost of a batch that builds a cluster;
* ``recipe``   — draw + (clusters x build) / ``--recipe-steps`` (the recipe spreads its ~100 builds over
  110k steps): the cost a real run pays per batch on average;
* ``mean``     — the mean over the compressed run (all builds packed into few batches: a pessimistic bound);
* ``worst``    — the slowest single batch.

The training step is a tiny GPT (megatron.model.GPTModel, default 6 layers, hidden 256, seq 256, vocab 8192)
forward + backward on a micro-batch of 8 plus a torch AdamW step, in plain torch on this CPU. A global batch G
is G/8 micro-batches + one optimizer step (measured for G = 8, composed for larger G). A 1.3B model's step is
~10^4 times longer, so these fractions are an upper bound.

Usage: python bench/sampler_cost.py [--num-samples 1000000 --global-batch-sizes 8 512 ...]
"""
from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from megatron.config import TransformerConfig  # noqa: E402
from megatron.data_efficiency.cluster import MetricIndex  # noqa: E402
from megatron.data_efficiency.config import (CurriculumLearningConfig, CurriculumMetricConfig,  # noqa: E402
                                             ScheduleConfig)
from megatron.data_efficiency.sampler import CurriculumSampler  # noqa: E402
from megatron.model import GPTModel  # noqa: E402

MICRO = 8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Benchmark flags."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--num-samples", type=int, default=1_000_000)
    p.add_argument("--global-batch-sizes", type=int, nargs="+", default=[8, 512])
    p.add_argument("--total-curriculum-step", type=int, default=400,
                   help="compressed curriculum: all clusters are built within this many batches")
    p.add_argument("--extra-batches", type=int, default=100, help="timed batches after the curriculum ended")
    p.add_argument("--recipe-steps", type=int, default=110_000, help="curriculum length of the real recipe")
    p.add_argument("--num-layers", type=int, default=6)
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--num-attention-heads", type=int, default=8)
    p.add_argument("--seq-length", type=int, default=256)
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--model-reps", type=int, default=5, help="timed micro-batch forward+backward repetitions")
    p.add_argument("--seed", type=int, default=1234)
    args = p.parse_args(argv)
    bad = [g for g in args.global_batch_sizes if g < MICRO or g % MICRO]
    if bad:
        p.error(f"--global-batch-sizes must be multiples of the micro-batch size {MICRO}, got {bad}")
    return args


# ----------------------------------------------------------------------------------------------------------------
# Curriculum configurations over N synthetic samples
# ----------------------------------------------------------------------------------------------------------------
def value_index(values: np.ndarray, name: str) -> MetricIndex:
    """Analyzer-style index_to_sample/index_to_metric: one row per distinct value, ids ascending in a row."""
    order = np.argsort(values, kind="stable")
    distinct, starts = np.unique(values[order], return_index=True)
    offsets = np.append(starts, len(values)).astype(np.int64)
    return MetricIndex(order, offsets, distinct.astype(np.int64), name)


def percentile_merged_index(values: np.ndarray, name: str) -> MetricIndex:
    """index_to_sample_percentile_merged: consecutive value rows merged in groups of max(1, V // 100)."""
    full = value_index(values, name)
    step = max(1, full.num_rows // 100)
    offsets = np.append(full.row_offsets[:-1:step], full.row_offsets[-1])
    return MetricIndex(full.samples, offsets, None, name)


def linear(lo: int, hi: int, total: int, step: int = 1, root: float = 1.0) -> ScheduleConfig:
    """A fixed_root schedule (root 1 = linear)."""
    return ScheduleConfig("fixed_root", lo, hi, total_curriculum_step=total, difficulty_step=step, root_degree=root)


def configurations(n: int, total: int, seed: int) -> dict[str, tuple[CurriculumLearningConfig, dict[str, MetricIndex]]]:
    """The two benchmarked curricula: name -> (config, in-memory indexes)."""
    rng = np.random.default_rng(seed)
    rarity = rng.normal(3000.0, 400.0, n).astype(np.int64)  # ~3000 distinct values, like vocab_rarity
    voc = CurriculumMetricConfig("voc", "percentile", "schedule_based", linear(1, 100, total, 1, 2.0), "voc", None)
    trunc = CurriculumMetricConfig("seqlen_truncate", "value", "single_cluster", linear(80, 2048, total, 8))
    recipe = CurriculumLearningConfig(True, None, (voc, trunc))
    a = CurriculumMetricConfig("a", "value", "schedule_based", linear(0, 99, total), "a", "a")
    b = CurriculumMetricConfig("b", "value", "schedule_based", linear(0, 49, total), "b", "b")
    two = CurriculumLearningConfig(True, None, (a, b))
    return {
        "voc% + seqlen_truncate (K=1)": (recipe, {"voc": percentile_merged_index(rarity, "voc")}),
        "2 value metrics (K=2)": (two, {"a": value_index(rng.integers(0, 100, n), "a"),
                                        "b": value_index(rng.integers(0, 50, n), "b")}),
    }


def time_sampler(config: CurriculumLearningConfig, indexes: dict[str, MetricIndex], n: int, global_batch: int,
                 batches: int, seed: int) -> dict[str, Any]:
    """Per-global-batch wall times of the sampler's iterator; batches that built a cluster are marked."""
    with tempfile.TemporaryDirectory() as cluster_dir:
        sampler = CurriculumSampler(config, n, MICRO, gradient_accumulation_steps=global_batch // MICRO, seed=seed,
                                    num_epochs=1000, indexes=indexes, cluster_dir=cluster_dir)
        it = iter(sampler)
        per_batch = global_batch // MICRO
        times, built = [], []
        for _ in tqdm(range(batches), desc=f"sampler G={global_batch}", unit="batch", leave=False):
            clusters = sampler.num_clusters
            start = time.perf_counter()
            for _ in range(per_batch):
                micro = next(it)
            times.append(time.perf_counter() - start)
            built.append(sampler.num_clusters > clusters)
            assert len(micro) == MICRO
        return {"times": np.array(times), "built": np.array(built), "clusters": sampler.num_clusters}


# ----------------------------------------------------------------------------------------------------------------
# Training step of a tiny GPT
# ----------------------------------------------------------------------------------------------------------------
def time_training(args: argparse.Namespace) -> tuple[float, float]:
    """(median forward+backward seconds of one micro-batch of 8, median AdamW step seconds)."""
    torch.manual_seed(args.seed)
    cfg = TransformerConfig(num_layers=args.num_layers, hidden_size=args.hidden_size,
                            num_attention_heads=args.num_attention_heads, padded_vocab_size=args.vocab_size,
                            max_position_embeddings=args.seq_length)
    model = GPTModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.1)
    tokens = torch.randint(0, args.vocab_size, (MICRO, args.seq_length + 1))
    fwd_bwd, step = [], []
    for rep in tqdm(range(args.model_reps + 1), desc="model fwd+bwd+AdamW", unit="step", leave=False):
        start = time.perf_counter()
        loss = model(tokens[:, :-1], labels=tokens[:, 1:]).mean()  # [b, s] per-token loss -> scalar
        loss.backward()
        mid = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        end = time.perf_counter()
        if rep:  # the first repetition warms up allocators and kernels
            fwd_bwd.append(mid - start)
            step.append(end - mid)
    return statistics.median(fwd_bwd), statistics.median(step)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print one line per (configuration, global batch)."""
    args = parse_args(argv)
    logging.getLogger("megatron.data_efficiency").setLevel(logging.ERROR)  # difficulty_step hints, cluster logs
    micro_s, adam_s = time_training(args)
    print(f"training step: tiny GPT {args.num_layers} layers, hidden {args.hidden_size}, seq {args.seq_length}, "
          f"vocab {args.vocab_size}: fwd+bwd of {MICRO} samples {micro_s * 1e3:.1f} ms, AdamW {adam_s * 1e3:.1f} ms")
    print(f"sampler: N = {args.num_samples:,} samples, curriculum compressed to {args.total_curriculum_step} batches "
          f"(+{args.extra_batches} after it), recipe spreads the builds over {args.recipe_steps:,} steps")
    header = (f"{'configuration':30s} {'G':>4s} {'clusters':>8s} {'draw ms':>8s} {'build ms':>9s} {'worst ms':>9s} "
              f"{'mean ms':>8s} {'recipe ms':>9s} {'step ms':>9s} {'recipe %':>9s} {'mean %':>8s} {'worst %':>8s}")
    print(header)
    ok = True
    batches = args.total_curriculum_step + args.extra_batches
    for name, (config, indexes) in configurations(args.num_samples, args.total_curriculum_step, args.seed).items():
        for g in args.global_batch_sizes:
            r = time_sampler(config, indexes, args.num_samples, g, batches, args.seed)
            times, built = r["times"], r["built"]
            draw = float(np.median(times[~built]))
            build = float(np.mean(times[built]) - draw) if built.any() else 0.0
            recipe = draw + r["clusters"] * build / args.recipe_steps
            step = (g // MICRO) * micro_s + adam_s
            mean = float(times.mean())
            fraction, mean_pct, worst = (100 * v / step for v in (recipe, mean, float(times.max())))
            ok &= fraction < 1.0
            print(f"{name:30s} {g:4d} {r['clusters']:8d} {draw * 1e3:8.3f} {build * 1e3:9.2f} "
                  f"{times.max() * 1e3:9.2f} {mean * 1e3:8.3f} {recipe * 1e3:9.3f} {step * 1e3:9.1f} "
                  f"{fraction:8.4f}% {mean_pct:7.4f}% {worst:7.2f}%")
    print(f"target: sampler cost per global batch < 1 % of a training step (recipe column): "
          f"{'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
