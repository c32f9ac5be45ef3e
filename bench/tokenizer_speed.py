"""Benchmark: single-thread encode speed of the tokenizers, old vs new GPT-2 path, vs pure-Python references.

    python bench/tokenizer_speed.py [--mb 5] [--repeats 3] [--chunk-size 25] [--skip-others]

Two text sets: ``docs`` (the first ``--mb`` MB of the bundled corpus, English reST prose with code) and
``code+unicode`` (the running interpreter's stdlib ``.py`` sources plus 20 % seeded random-Unicode
documents, ~``--mb`` MB). Texts are encoded in chunks of ``--chunk-size`` documents, as
tools/preprocess_data.py does, with ``TOKENIZERS_PARALLELISM=false`` (one core). For GPT-2 BPE it prints
MB/s (UTF-8 input bytes per second) for:

* ``old: HF pipeline``  -- ``tokenize_batch_engine`` (HF ``tokenizers`` regex + BPE, best of repeats);
* ``new: cold cache``   -- ``tokenize_batch`` on a fresh tokenizer (every fragment is new at first);
* ``new: warm cache``   -- a second pass over the same texts (best of repeats): the ceiling;
* ``reference``         -- the pure-Python ``ReferenceGPT2BPE`` (fresh, cold BPE cache);

and checks that all of them give identical ids. "MB/cpu-s" divides by this process's CPU time instead of
wall time: it hardly moves when other jobs share the machine. Unless ``--skip-others``, it also prints the BERT WordPiece
and SentencePiece engines (batch path) and the WordPiece reference on ``docs``. Prints a table; not a test.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import sys
import sysconfig
import time
from pathlib import Path
from typing import Callable

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # before tokenizers is imported: one core
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runnable from a checkout

from megatron.tokenizer import build_tokenizer  # noqa: E402
from megatron.tokenizer.bert_wordpiece import read_vocab_txt  # noqa: E402
from megatron.tokenizer.gpt2_bpe import GPT2BPETokenizer  # noqa: E402
from megatron.tokenizer.reference_bpe import ReferenceGPT2BPE  # noqa: E402
from megatron.tokenizer.reference_wordpiece import ReferenceBertTokenizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "data" / "corpus" / "python_docs.jsonl.gz"
TOK = ROOT / "data" / "tokenizers"
GPT2_VOCAB, GPT2_MERGES = str(TOK / "gpt2-bpe" / "vocab.json"), str(TOK / "gpt2-bpe" / "merges.txt")


def utf8_mb(texts: list[str]) -> float:
    """Total UTF-8 size of `texts` in MB."""
    return sum(len(t.encode("utf-8")) for t in texts) / 1e6


def corpus_texts(megabytes: float) -> list[str]:
    """Documents from the start of the bundled corpus, about `megabytes` MB of UTF-8."""
    texts, size = [], 0
    with gzip.open(CORPUS, "rt", encoding="utf-8") as f:
        for line in f:
            texts.append(json.loads(line)["text"])
            size += len(texts[-1].encode("utf-8"))
            if size >= megabytes * 1e6:
                break
    return texts


def random_unicode_doc(rng: random.Random, n: int) -> str:
    """A seeded random document: ASCII words, whitespace runs, and code points from the whole range."""
    out = []
    while len(out) < n:
        r = rng.random()
        if r < 0.4:
            out.append(" " + "".join(rng.choice("etaoinshrdlucmfw") for _ in range(rng.randint(1, 9))))
        elif r < 0.5:
            out.append(rng.choice([" ", "\n", "  ", "\t", "\n\n    ", "\u3000", "\xa0"]))
        elif r < 0.8:
            out.append(chr(rng.randint(0x80, 0xD7FF)))
        else:
            out.append(chr(rng.randint(0xE000, 0x10FFFF)))
    return "".join(out)


def code_unicode_texts(megabytes: float, seed: int = 0) -> list[str]:
    """Stdlib .py sources (sorted, ~80 % of `megabytes`) interleaved with random-Unicode documents."""
    rng = random.Random(seed)
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    texts: list[str] = []
    size = 0.0
    for path in sorted(stdlib.rglob("*.py")):
        if size >= 0.8 * megabytes * 1e6:
            break
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        texts.append(text)
        size += len(text.encode("utf-8"))
        if rng.random() < 0.25:
            texts.append(random_unicode_doc(rng, rng.randint(200, 3000)))
            size += len(texts[-1].encode("utf-8"))
    while size < megabytes * 1e6:
        texts.append(random_unicode_doc(rng, rng.randint(200, 3000)))
        size += len(texts[-1].encode("utf-8"))
    return texts


def in_chunks(fn: Callable[[list[str]], list[list[int]]], texts: list[str], chunk: int) -> list[list[int]]:
    """`fn` over consecutive chunks of `texts`, results concatenated."""
    out: list[list[int]] = []
    for i in range(0, len(texts), chunk):
        out.extend(fn(texts[i:i + chunk]))
    return out


def timed(fn: Callable[[], list[list[int]]]) -> tuple[float, float, list[list[int]]]:
    """(wall seconds, CPU seconds of this process, result) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def bench_gpt2(name: str, texts: list[str], repeats: int, chunk: int) -> None:
    """Print the GPT-2 rows for one text set and check that every path gives the same ids."""
    mb = utf8_mb(texts)
    print(f"\n[{name}] {len(texts)} documents, {mb:.2f} MB")
    old = GPT2BPETokenizer(GPT2_VOCAB, GPT2_MERGES)
    old_runs = [timed(lambda: in_chunks(old.tokenize_batch_engine, texts, chunk)) for _ in range(repeats)]
    cold_runs, warm_runs = [], []
    for _ in range(repeats):
        new = GPT2BPETokenizer(GPT2_VOCAB, GPT2_MERGES)
        cold_runs.append(timed(lambda: in_chunks(new.tokenize_batch, texts, chunk)))
    entries = len(new.fragment_cache)
    for _ in range(repeats):
        warm_runs.append(timed(lambda: in_chunks(new.tokenize_batch, texts, chunk)))
    reference = ReferenceGPT2BPE(old.vocab, old.merges)
    ref_runs = [timed(lambda: [reference.encode(t) for t in texts])]
    ref_ids = ref_runs[0][2]
    same = all(r[2] == ref_ids for r in old_runs + cold_runs + warm_runs)
    tokens = sum(map(len, ref_ids))
    rows = [("GPT-2 old: HF pipeline", old_runs), ("GPT-2 new: cold cache", cold_runs),
            ("GPT-2 new: warm cache", warm_runs), ("GPT-2 reference (cold)", ref_runs)]
    old_s = min(r[0] for r in old_runs)
    print(f"{'path':<28}{'MB/s':>8}{'tokens/s':>12}{'vs old':>8}{'MB/cpu-s':>10}")
    for label, runs in rows:
        seconds, cpu = min(r[0] for r in runs), min(r[1] for r in runs)
        print(f"{label:<28}{mb / seconds:>8.2f}{tokens / seconds:>12,.0f}{old_s / seconds:>7.2f}x{mb / cpu:>10.2f}")
    print(f"ids identical (old, new cold, new warm, reference): {'yes' if same else 'NO'}; "
          f"{tokens:,} tokens; cache after one pass: {entries:,} entries")
    if not same:
        raise SystemExit("error: the GPT-2 paths disagree")


def bench_others(texts: list[str], repeats: int, chunk: int) -> None:
    """BERT WordPiece and SentencePiece engines (batch path) and the WordPiece reference on `texts`."""
    mb = utf8_mb(texts)
    bert = build_tokenizer("BertWordPieceLowerCase", vocab_file=str(TOK / "bert-wordpiece" / "vocab.txt"))
    spm = build_tokenizer("SentencePieceTokenizer", tokenizer_model=str(TOK / "spm" / "spm.model"))
    bert_ref = ReferenceBertTokenizer(read_vocab_txt(str(TOK / "bert-wordpiece" / "vocab.txt")))
    print(f"\n[docs, other tokenizers] {mb:.2f} MB")
    rows = [("BertWordPiece engine", lambda: in_chunks(bert.tokenize_batch, texts, chunk), repeats),
            ("BertWordPiece reference", lambda: [bert_ref.encode(t) for t in texts], 1),
            ("SentencePiece engine", lambda: in_chunks(spm.tokenize_batch, texts, chunk), repeats)]
    for label, fn, n in rows:
        seconds = min(timed(fn)[0] for _ in range(n))
        print(f"{label:<28}{mb / seconds:>8.2f} MB/s")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the tables."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=5.0, help="size of each text set in MB")
    ap.add_argument("--repeats", type=int, default=3, help="runs per timed path (best reported)")
    ap.add_argument("--chunk-size", type=int, default=25, help="documents per tokenize_batch call")
    ap.add_argument("--skip-others", action="store_true", help="only the GPT-2 rows")
    args = ap.parse_args(argv)
    if args.mb <= 0 or args.repeats < 1 or args.chunk_size < 1:
        print("error: --mb must be > 0, --repeats and --chunk-size >= 1", file=sys.stderr)
        return 2
    print(f"load average at the start: {os.getloadavg()[0]:.2f}; {os.cpu_count()} CPUs; "
          f"TOKENIZERS_PARALLELISM={os.environ['TOKENIZERS_PARALLELISM']}")
    docs = corpus_texts(args.mb)
    bench_gpt2("docs", docs, args.repeats, args.chunk_size)
    bench_gpt2("code+unicode", code_unicode_texts(args.mb), args.repeats, args.chunk_size)
    if not args.skip_others:
        bench_others(docs, args.repeats, args.chunk_size)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
