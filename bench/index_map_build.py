"""Benchmark: GPT index-map build time (doc_idx, sample_idx, shuffle_idx) on a synthetic ~50 M-token dataset.

Writes the dataset with the MMIDIDX builder to a temporary directory (log-normal document sizes,
median ~500 tokens, long tail), then for seq_length 2048 and 128 times each map and the whole cached
build (``build_train_valid_test_datasets`` including the atomic .npy writes), against a plain numpy
floor measured in the same run: one ``np.cumsum`` over the per-document sizes plus one permutation of
the same length (and, per seq_length, the cumsum plus one permutation of the sample count).

    python bench/index_map_build.py [--tokens 50000000] [--repeats 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout

from megatron.data import gpt_dataset as gd
from megatron.data.indexed_dataset import MMapIndexedDataset, MMapIndexedDatasetBuilder


def write_synthetic(prefix: str, tokens: int, seed: int = 0) -> None:
    """~``tokens`` tokens in documents with log-normal sizes, written in chunks with the builder."""
    rng = np.random.RandomState(seed)
    sizes = np.maximum(1, rng.lognormal(mean=6.2, sigma=1.0, size=tokens // 200)).astype(np.int64)
    sizes = sizes[: int(np.searchsorted(np.cumsum(sizes), tokens)) + 1]
    builder = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    chunk = 20000
    for lo in tqdm(range(0, len(sizes), chunk), desc="writing dataset", unit="chunk"):
        part = sizes[lo : lo + chunk]
        builder.add_docs(rng.randint(0, 50257, size=int(part.sum())).astype(np.uint16), part, np.ones(len(part), np.int64))
    builder.finalize(prefix + ".idx")


def timed(fn, repeats: int):
    """(median seconds, last result) of ``repeats`` calls."""
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    """Build the dataset, time the maps, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=50_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        prefix = f"{tmp}/synthetic_text_document"
        write_synthetic(prefix, args.tokens)
        ds = MMapIndexedDataset(prefix)
        sizes = ds.sizes
        documents = np.arange(len(sizes), dtype=np.int32)
        tpe = gd.num_tokens(documents, sizes)
        print(f"dataset: {len(sizes):,} documents, {tpe:,} tokens (median doc {int(np.median(sizes))} tokens)")
        floor, _ = timed(lambda: (np.cumsum(sizes, dtype=np.int64), np.random.RandomState(0).permutation(len(sizes))), args.repeats)
        print(f"numpy floor (cumsum over sizes + permutation of {len(sizes):,}): {floor * 1e3:.1f} ms")
        for seq_length in (2048, 128):
            samples = gd.samples_in_epochs(1, tpe, seq_length)
            t_doc, doc_idx = timed(lambda: gd.build_doc_idx(documents, 1, np.random.RandomState(1234), False), args.repeats)
            t_sample, sample_idx = timed(lambda: gd.build_sample_idx(sizes, doc_idx, seq_length, 1, tpe), args.repeats)
            t_shuffle, _ = timed(lambda: gd.build_shuffle_idx(samples, samples, np.random.RandomState(1234)), args.repeats)
            maps = t_doc + t_sample + t_shuffle
            sample_floor, _ = timed(lambda: (np.cumsum(sizes, dtype=np.int64), np.random.RandomState(0).permutation(samples)), args.repeats)

            def cached_build() -> None:
                gd.build_train_valid_test_datasets([prefix], "mmap", "1", [1, 0, 0], seq_length, 1234,
                                                   train_data_exact_num_epochs=1, index_cache_dir=tempfile.mkdtemp(dir=tmp))

            t_total, _ = timed(cached_build, args.repeats)
            print(
                f"seq_length {seq_length:5d}: {samples:9,d} samples | doc_idx {t_doc * 1e3:7.1f} ms | "
                f"sample_idx {t_sample * 1e3:7.1f} ms | shuffle_idx {t_shuffle * 1e3:7.1f} ms | "
                f"maps {maps * 1e3:7.1f} ms ({maps / floor:.1f}x floor; {maps / sample_floor:.1f}x cumsum + "
                f"permutation of the {samples:,} samples = {sample_floor * 1e3:.1f} ms) | "
                f"full build incl. .npy writes {t_total * 1e3:7.1f} ms"
            )
            assert sample_idx.shape == (samples + 1, 2)


if __name__ == "__main__":
    main()
