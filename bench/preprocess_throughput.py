"""Benchmark: tools/preprocess_data.py throughput vs the raw encode speed of the tokenizer engine (the ceiling).

    python bench/preprocess_throughput.py [--target-mb 20] [--repeats 3] [--chunk-size 25]

The bundled corpus is decompressed into a temp dir and repeated to ~``--target-mb`` MB of jsonl.  Then,
each in a fresh subprocess, ``--repeats`` times (the median is reported; the VM is noisy):

* ``tokenizer alone (ceiling)`` -- ``GPT2BPETokenizer.tokenize_batch`` (the encoder preprocessing uses: exact
  GPT-2 regex, fragment cache, HF BPE model for new words) on the same texts, already parsed, batches of 1024;
* ``HF encode_batch_fast, 1 thread`` / ``default threads`` -- HF ``tokenizers``' full pipeline on the same
  texts (the previous engine; ``TOKENIZERS_PARALLELISM=false`` / its own thread pool), for reference;
* ``preprocess --workers 1`` / ``--workers 2`` -- the real CLI, single-threaded encoder process(es) (``--append-eod``), figures from its
  summary line (reading, JSON decoding, validation, tokenization, writing; interpreter start-up excluded).

MB are bytes of jsonl input; tokens exclude EOD for the raw rows.  "MB/cpu-s" is the input size over the
CPU time of the whole child process tree (interpreter start-up, JSON parsing and tokenizer loading
included): unlike MB/s it hardly moves when other jobs share the machine.  Prints a table; not a test.
"""
from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.path.pardir))
CORPUS = os.path.join(ROOT, "data", "corpus", "python_docs.jsonl.gz")
VOCAB = os.path.join(ROOT, "data", "tokenizers", "gpt2-bpe", "vocab.json")
MERGES = os.path.join(ROOT, "data", "tokenizers", "gpt2-bpe", "merges.txt")


def make_input(directory: str, target_mb: float) -> tuple[str, float]:
    """Write the corpus, repeated until it reaches ``target_mb``, as jsonl; returns (path, MB)."""
    with gzip.open(CORPUS, "rb") as f:
        lines = f.readlines()
    path = os.path.join(directory, "bench.jsonl")
    size = 0
    with open(path, "wb") as out:
        for line in itertools.cycle(lines):
            if size >= target_mb * 1e6:
                break
            out.write(line)
            size += len(line)
    return path, size / 1e6


def raw_encode(path: str, mode: str) -> tuple[float, float]:
    """(MB/s, tokens/s) of the bare encoder (``mode`` ours or hf) on the texts of ``path`` (in a child process)."""
    sys.path.insert(0, ROOT)
    from megatron.tokenizer import build_tokenizer

    tok = build_tokenizer("GPT2BPETokenizer", vocab_file=VOCAB, merge_file=MERGES)
    if mode == "hf":
        def encode(batch: list[str]) -> int:
            return sum(len(e.ids) for e in tok._engine.encode_batch_fast(batch, add_special_tokens=False))
    else:
        def encode(batch: list[str]) -> int:
            return sum(len(ids) for ids in tok.tokenize_batch(batch))
    with open(path, "rb") as f:
        raw = f.read()
    texts = [json.loads(line)["text"] for line in raw.splitlines()]
    start = time.perf_counter()
    tokens = 0
    for i in range(0, len(texts), 1024):
        tokens += encode(texts[i:i + 1024])
    seconds = time.perf_counter() - start
    return len(raw) / 1e6 / seconds, tokens / seconds


def _timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[str, float]:
    """Run ``cmd``; (stdout, CPU seconds used by its process tree)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return out, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run_raw(path: str, mode: str, parallel: bool = False) -> tuple[float, float, float]:
    """Run raw_encode in a fresh interpreter with or without the HF engine's thread pool."""
    env = dict(os.environ, TOKENIZERS_PARALLELISM="true" if parallel else "false")
    out, cpu = _timed([sys.executable, __file__, "--raw-child", path, "--raw-mode", mode], env)
    mbs, toks = out.split()
    return float(mbs), float(toks), cpu


def run_preprocess(path: str, out_dir: str, workers: int, chunk_size: int) -> tuple[float, float, float]:
    """Run the CLI; (MB/s, tokens/s) from its summary line."""
    cmd = [sys.executable, os.path.join(ROOT, "tools", "preprocess_data.py"), "--input", path, "--output-prefix",
           os.path.join(out_dir, f"w{workers}"), "--tokenizer-type", "GPT2BPETokenizer", "--vocab-file", VOCAB,
           "--merge-file", MERGES, "--append-eod", "--workers", str(workers), "--chunk-size", str(chunk_size),
           "--no-progress"]
    out, cpu = _timed(cmd)
    m = re.search(r"MB/s=([\d.]+) tokens/s=(\d+)", out)
    if m is None:
        raise RuntimeError(f"no summary line in the output of {' '.join(cmd)}:\n{out}")
    return float(m.group(1)), float(m.group(2)), cpu


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target-mb", type=float, default=20.0, help="size of the jsonl input")
    ap.add_argument("--repeats", type=int, default=3, help="runs per configuration (median reported)")
    ap.add_argument("--chunk-size", type=int, default=25, help="--chunk-size passed to preprocess_data.py")
    ap.add_argument("--raw-child", help=argparse.SUPPRESS)
    ap.add_argument("--raw-mode", default="ours", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.raw_child:
        mbs, toks = raw_encode(args.raw_child, args.raw_mode)
        print(mbs, toks)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        path, mb = make_input(tmp, args.target_mb)
        print(f"load average at the start: {os.getloadavg()[0]:.2f}")
        print(f"input: {mb:.1f} MB jsonl (bundled corpus repeated), GPT-2 BPE, {os.cpu_count()} CPUs, "
              f"median of {args.repeats}")
        configs = {
            "tokenizer alone (ceiling)": lambda: run_raw(path, "ours"),
            "HF encode_batch_fast, 1 thr": lambda: run_raw(path, "hf", parallel=False),
            "HF encode_batch_fast, threads": lambda: run_raw(path, "hf", parallel=True),
            "preprocess --workers 1": lambda: run_preprocess(path, tmp, 1, args.chunk_size),
            "preprocess --workers 2": lambda: run_preprocess(path, tmp, 2, args.chunk_size),
        }
        results = {}
        for name, fn in configs.items():
            runs = [fn() for _ in range(args.repeats)]
            results[name] = tuple(statistics.median(r[k] for r in runs) for k in range(3))
        ceiling, hf = results["tokenizer alone (ceiling)"][0], results["HF encode_batch_fast, 1 thr"][0]
        print(f"{'configuration':<32}{'MB/s':>8}{'tokens/s':>12}{'vs ceiling':>12}{'vs HF 1 thr':>13}"
              f"{'MB/cpu-s':>10}")
        for name, (mbs, toks, cpu) in results.items():
            print(f"{name:<32}{mbs:>8.2f}{toks:>12,.0f}{mbs / ceiling:>11.2f}x{mbs / hf:>12.2f}x{mb / cpu:>10.2f}")
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
