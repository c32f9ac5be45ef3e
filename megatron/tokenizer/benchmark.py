"""Encode throughput of the tokenizer engines vs the pure-Python references on bundled corpus text.

    python -m megatron.tokenizer.benchmark [--mb 2] [--repeats 3]

Prints MB/s (UTF-8 bytes of input per second, best of --repeats) for: the engine's batch path
(tokenize_batch, all cores), the engine one document at a time (tokenize, one core), and the reference.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import time
from typing import Callable

from . import build_tokenizer
from .bert_wordpiece import read_vocab_txt
from .reference_bpe import ReferenceGPT2BPE
from .reference_wordpiece import ReferenceBertTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CORPUS = os.path.join(ROOT, "data", "corpus", "python_docs.jsonl.gz")
TOK = os.path.join(ROOT, "data", "tokenizers")


def load_texts(megabytes: float) -> list[str]:
    """Corpus documents from the start of the bundled corpus, about `megabytes` MB of UTF-8."""
    texts, size = [], 0
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            texts.append(text)
            size += len(text.encode("utf-8"))
            if size >= megabytes * 1e6:
                break
    return texts


def best_seconds(fn: Callable[[], object], repeats: int) -> float:
    """Fastest wall time of `repeats` calls."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print one line per tokenizer/path."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=float, default=2.0)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)
    texts = load_texts(args.mb)
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    gpt2 = build_tokenizer("GPT2BPETokenizer", vocab_file=os.path.join(TOK, "gpt2-bpe", "vocab.json"),
                           merge_file=os.path.join(TOK, "gpt2-bpe", "merges.txt"))
    bert = build_tokenizer("BertWordPieceLowerCase",
                           vocab_file=os.path.join(TOK, "bert-wordpiece", "vocab.txt"))
    spm = build_tokenizer("SentencePieceTokenizer", tokenizer_model=os.path.join(TOK, "spm", "spm.model"))
    gpt2_ref = ReferenceGPT2BPE(gpt2.vocab, gpt2.merges)
    bert_ref = ReferenceBertTokenizer(read_vocab_txt(os.path.join(TOK, "bert-wordpiece", "vocab.txt")))
    print(f"{len(texts)} documents, {mb:.2f} MB, {os.cpu_count()} CPUs, best of {args.repeats}")
    rows = [
        ("GPT2BPETokenizer  engine batch", lambda: gpt2.tokenize_batch(texts)),
        ("GPT2BPETokenizer  engine 1-doc", lambda: [gpt2.tokenize(t) for t in texts]),
        ("GPT2BPETokenizer  reference   ", lambda: [gpt2_ref.encode(t) for t in texts]),
        ("BertWordPiece     engine batch", lambda: bert.tokenize_batch(texts)),
        ("BertWordPiece     engine 1-doc", lambda: [bert.tokenize(t) for t in texts]),
        ("BertWordPiece     reference   ", lambda: [bert_ref.encode(t) for t in texts]),
        ("SentencePiece     engine batch", lambda: spm.tokenize_batch(texts)),
        ("SentencePiece     engine 1-doc", lambda: [spm.tokenize(t) for t in texts]),
    ]
    for name, fn in rows:
        seconds = best_seconds(fn, args.repeats)
        print(f"{name}  {mb / seconds:7.2f} MB/s")
    # The GPT-2 reference above runs with a warm BPE cache after the first repeat; a cold one:
    cold = ReferenceGPT2BPE(gpt2.vocab, gpt2.merges)
    seconds = best_seconds(lambda: [cold.encode(t) for t in texts], 1)
    print(f"GPT2BPETokenizer  reference (cold cache)  {mb / seconds:7.2f} MB/s")


if __name__ == "__main__":
    main()
