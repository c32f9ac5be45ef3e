"""Benchmark: our curriculum data analyzer vs DeepSpeed's own DataAnalyzer, and vs one np.bincount pass.

Builds a synthetic GPT token file (Zipf-distributed ids over the GPT-2 vocabulary, log-normal document
lengths), the Megatron GPT train dataset over it (exactly one epoch, ``--return-data-index``), and runs
``total_vocab_freq`` then ``vocab_rarity`` (map + reduce each, like the recipe scripts) with:

* ours: :func:`megatron.data_efficiency.analyzer.run_map_reduce`;
* DeepSpeed's ``deepspeed.runtime.data_pipeline.data_sampling.data_analyzer.DataAnalyzer`` (best of
  ``--ds-repeats`` runs) in a subprocess (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``, killed as
  a process group on timeout; metric functions return int64 tensors as its ``metric_dtypes`` demand, and
  are vectorized over the batch, so faster than Megatron-DeepSpeed's row-by-row vocab_rarity);
* the floor: one ``np.bincount`` over every token of the ``.bin`` file.

Then checks that both analyzers wrote identical ``total_vocab_freq_metric_value``, ``sample_to_metric``
and ``index_to_metric`` (values and dtypes) and that every ``index_to_sample`` row (and every
percentile-merged row) holds the same SET of sample ids, and prints wall times and ratios
(targets: ours >= 30x faster than DeepSpeed, and within 3x of the bincount floor).

Usage: ``python bench/analyzer_vs_deepspeed.py [--samples 100000] [--seq-length 128] [--threads 2]``.
This is the only file of the project that imports ``deepspeed.runtime.data_pipeline`` (reference run only).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

METRICS = ("total_vocab_freq", "vocab_rarity")
GPT2_VOCAB = 50257


def build_tokens(prefix: str, num_tokens: int, vocab: int, seed: int) -> None:
    """Write a synthetic token file of about ``num_tokens`` tokens (uint16, one item per document)."""
    from megatron.data.indexed_dataset import MMapIndexedDatasetBuilder

    rng = np.random.default_rng(seed)
    sizes = []
    while sum(sizes) < num_tokens:
        sizes.extend(np.maximum(1, rng.lognormal(6.0, 1.0, 4096).astype(np.int64)).tolist())
    sizes_arr = np.array(sizes, dtype=np.int64)
    sizes_arr = sizes_arr[: int(np.searchsorted(np.cumsum(sizes_arr), num_tokens)) + 1]
    tokens = (rng.zipf(1.2, int(sizes_arr.sum())) - 1) % vocab
    builder = MMapIndexedDatasetBuilder(prefix + ".bin", np.uint16)
    builder.add_docs(tokens.astype(np.uint16), sizes_arr, np.ones(sizes_arr.size, dtype=np.int64))
    builder.finalize(prefix + ".idx")


def build_dataset(prefix: str, seq_length: int, cache_dir: str) -> Any:
    """The Megatron GPT train split over all documents, exactly one epoch, with the data index."""
    from megatron.data.gpt_dataset import build_train_valid_test_datasets

    train, _, _ = build_train_valid_test_datasets(
        [prefix], "mmap", "100,0,0", [1, 1, 1], seq_length, 1234, train_data_exact_num_epochs=1,
        return_data_index=True, index_cache_dir=cache_dir)
    return train


def reference_run(args: argparse.Namespace) -> None:
    """Subprocess body: DeepSpeed's DataAnalyzer, map + reduce of each metric; prints the timings as JSON."""
    import torch

    torch.set_num_threads(1)
    logging.disable(logging.INFO)  # DeepSpeed logs one line per batch
    from deepspeed.runtime.data_pipeline.data_sampling.data_analyzer import DataAnalyzer
    from deepspeed.runtime.data_pipeline.data_sampling.indexed_dataset import MMapIndexedDataset as DSIndexed

    dataset = build_dataset(args.prefix, args.seq_length, args.workdir)
    vocab = args.padded_vocab_size
    save = os.path.join(args.workdir, "deepspeed")

    def total_vocab_freq(data: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.bincount(data["text"].reshape(-1), minlength=vocab + 1)

    nll: dict[str, torch.Tensor] = {}

    def vocab_rarity(data: dict[str, torch.Tensor]) -> torch.Tensor:
        if "t" not in nll:
            # keep the reader alive while copying: its __del__ closes the mmap under any live view
            reader = DSIndexed(f"{save}/total_vocab_freq/total_vocab_freq_metric_value", skip_warmup=True)
            freq = np.array(reader[0], dtype=np.int64)
            del reader
            freq[freq == 0] = 1
            nll["t"] = torch.from_numpy(-np.log(freq / freq.sum()))
        return torch.sum(nll["t"][data["text"]], dim=1).long()

    best: dict[str, dict[str, float]] = {}
    for _ in range(args.ds_repeats):  # best of several runs, like ours
        shutil.rmtree(save, ignore_errors=True)
        nll.clear()
        timings = {}
        for name, fn in (("total_vocab_freq", total_vocab_freq), ("vocab_rarity", vocab_rarity)):
            mtype = "accumulate_value_over_samples" if name == "total_vocab_freq" else "single_value_per_sample"
            analyzer = DataAnalyzer(dataset, num_workers=1, worker_id=0, num_threads=args.threads,
                                    num_threads_reduce=args.threads, batch_size=args.batch_size, metric_names=[name],
                                    metric_functions=[fn], metric_types=[mtype], metric_dtypes=[torch.int64],
                                    save_path=save)
            t0 = time.perf_counter()
            analyzer.run_map()
            t1 = time.perf_counter()
            analyzer.run_reduce()
            t2 = time.perf_counter()
            timings[name] = {"map": t1 - t0, "reduce": t2 - t1}
        if not best or _total(timings) < _total(best):
            best = timings
    print(json.dumps(best))


def _total(timings: dict[str, dict[str, float]]) -> float:
    return sum(v["map"] + v["reduce"] for v in timings.values())


def run_reference(args: argparse.Namespace) -> dict[str, Any]:
    """Run :func:`reference_run` in its own process group; kill the whole group on timeout."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", DS_ACCELERATOR="cpu",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [sys.executable, os.path.abspath(__file__), "--reference-run", "--prefix", args.prefix, "--workdir",
           args.workdir, "--seq-length", str(args.seq_length), "--threads", str(args.threads), "--batch-size",
           str(args.batch_size), "--padded-vocab-size", str(args.padded_vocab_size), "--ds-repeats",
           str(args.ds_repeats)]
    log_path = os.path.join(args.workdir, "deepspeed_reference.log")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env, start_new_session=True)
        t0 = time.perf_counter()
        try:
            out, _ = proc.communicate(timeout=args.timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise SystemExit(f"error: DeepSpeed's DataAnalyzer did not finish within {args.timeout} s (see {log_path})")
        wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"error: DeepSpeed reference run failed with exit code {proc.returncode} (see {log_path})")
    timings = json.loads(out.strip().splitlines()[-1])
    timings["process_wall"] = wall
    return timings


def rows(prefix: str) -> tuple[np.ndarray, np.ndarray, np.dtype]:
    """Flat data, item sizes and dtype of an index file (DeepSpeed dtype table, read with our reader)."""
    from megatron.data.indexed_dataset import MMapIndexedDataset

    ds = MMapIndexedDataset(prefix, dtype_table="deepspeed")
    return np.fromfile(prefix + ".bin", dtype=ds.dtype), np.asarray(ds.sizes, dtype=np.int64), ds.dtype


def sorted_within_rows(data: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """Each row's ids sorted (rows kept in place): compares rows as sets of distinct ids."""
    row = np.repeat(np.arange(sizes.size), sizes)
    return data[np.lexsort((data, row))]


def compare(ours: str, theirs: str) -> list[str]:
    """Differences between the two analyzers' outputs (empty when they agree)."""
    problems = []
    for metric, kinds in (("total_vocab_freq", ("metric_value",)),
                          ("vocab_rarity", ("sample_to_metric", "index_to_metric", "index_to_sample",
                                            "index_to_sample_percentile_merged"))):
        for kind in kinds:
            a_data, a_sizes, a_dt = rows(f"{ours}/{metric}/{metric}_{kind}")
            b_data, b_sizes, b_dt = rows(f"{theirs}/{metric}/{metric}_{kind}")
            if a_dt != b_dt:
                problems.append(f"{metric}_{kind}: dtype {a_dt} vs DeepSpeed {b_dt}")
            if not np.array_equal(a_sizes, b_sizes):
                problems.append(f"{metric}_{kind}: row sizes differ")
                continue
            if kind.startswith("index_to_sample"):
                a_data, b_data = sorted_within_rows(a_data, a_sizes), sorted_within_rows(b_data, b_sizes)
            if not np.array_equal(a_data.astype(np.int64), b_data.astype(np.int64)):
                problems.append(f"{metric}_{kind}: contents differ")
    return problems


def main(argv: list[str] | None = None) -> None:
    """Build the data, run both analyzers and the bincount floor, check equality, print figures."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=100_000, help="GPT samples in the dataset (>= 100k for the target)")
    p.add_argument("--seq-length", type=int, default=128)
    p.add_argument("--threads", type=int, default=2, help="map threads (processes) of both analyzers")
    p.add_argument("--batch-size", type=int, default=10000, help="DeepSpeed DataLoader batch (the recipe's value)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of ours and of the bincount floor")
    p.add_argument("--ds-repeats", type=int, default=2, help="timed runs of DeepSpeed's DataAnalyzer (best is kept)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds before the DeepSpeed run is killed")
    p.add_argument("--workdir", default=None, help="keep the data and outputs here (default: a temp dir, deleted)")
    p.add_argument("--padded-vocab-size", type=int, default=50304)
    p.add_argument("--reference-run", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--prefix", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.reference_run:
        reference_run(args)
        return

    from megatron.data.indexed_dataset import MMapIndexedDataset
    from megatron.data_efficiency.analyzer import run_map_reduce
    from megatron.data_efficiency.analyzer_sources import make_source

    keep = args.workdir is not None
    workdir = args.workdir or tempfile.mkdtemp(prefix="analyzer_bench_")
    os.makedirs(workdir, exist_ok=True)
    args.workdir, args.prefix = workdir, os.path.join(workdir, "synthetic_text_document")
    try:
        t0 = time.perf_counter()
        build_tokens(args.prefix, args.samples * args.seq_length + 1, GPT2_VOCAB, seed=0)
        dataset = build_dataset(args.prefix, args.seq_length, workdir)
        tokens = np.fromfile(args.prefix + ".bin", dtype=MMapIndexedDataset(args.prefix).dtype)
        print(f"data: {len(dataset)} samples of {args.seq_length + 1} tokens, {tokens.size / 1e6:.1f} M tokens in "
              f"{len(MMapIndexedDataset(args.prefix))} documents (built in {time.perf_counter() - t0:.1f} s); "
              f"our source: {type(make_source(dataset)).__name__}", flush=True)

        floor = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            np.bincount(tokens, minlength=args.padded_vocab_size + 1)
            floor.append(time.perf_counter() - t)
        ours: dict[int, list[float]] = {}
        for threads in sorted({1, args.threads}):
            ours[threads] = []
            for _ in range(args.repeats):
                shutil.rmtree(os.path.join(workdir, "ours"), ignore_errors=True)
                t = time.perf_counter()
                run_map_reduce(dataset, list(METRICS), os.path.join(workdir, "ours"), num_threads=threads,
                               num_threads_reduce=threads, padded_vocab_size=args.padded_vocab_size,
                               seq_length=args.seq_length, show_progress=False)
                ours[threads].append(time.perf_counter() - t)
            print(f"ours, {threads} thread(s): {' '.join(f'{x:.3f}' for x in ours[threads])} s", flush=True)
        print(f"np.bincount floor: {' '.join(f'{x:.3f}' for x in floor)} s", flush=True)

        print("running DeepSpeed's DataAnalyzer (subprocess) ...", flush=True)
        ref = run_reference(args)
        ds_total = _total({k: v for k, v in ref.items() if k in METRICS})
        problems = compare(os.path.join(workdir, "ours"), os.path.join(workdir, "deepspeed"))

        best_threads = min(ours, key=lambda k: min(ours[k]))
        best, floor_best = min(ours[best_threads]), min(floor)
        print()
        print(f"{'':34s}{'wall s':>10s}")
        for k in METRICS:
            print(f"{'DeepSpeed ' + k + ' map':34s}{ref[k]['map']:10.3f}")
            print(f"{'DeepSpeed ' + k + ' reduce':34s}{ref[k]['reduce']:10.3f}")
        print(f"{f'DeepSpeed total, best of {args.ds_repeats}':34s}{ds_total:10.3f}")
        for threads, times in ours.items():
            print(f"{f'ours, {threads} thread(s), best of {args.repeats}':34s}{min(times):10.3f}")
        print(f"{'np.bincount over all tokens':34s}{floor_best:10.3f}")
        print()
        same = min(ours[args.threads])
        print(f"speed-up vs DeepSpeed ({args.threads} threads each): {ds_total / same:.1f}x; with our best "
              f"({best_threads} thread(s)): {ds_total / best:.1f}x (target >= 30x)")
        print(f"ours ({best_threads} thread(s)) / bincount floor: {best / floor_best:.2f}x (target <= 3x)")
        print(f"throughput: ours {len(dataset) / best / 1e3:.0f} k samples/s, DeepSpeed "
              f"{len(dataset) / ds_total / 1e3:.1f} k samples/s")
        if problems:
            print("OUTPUTS DIFFER:\n  " + "\n  ".join(problems))
            raise SystemExit(1)
        print("outputs: total_vocab_freq, sample_to_metric, index_to_metric identical (values and dtypes); every "
              "index_to_sample and percentile-merged row holds the same set of ids")
    finally:
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
