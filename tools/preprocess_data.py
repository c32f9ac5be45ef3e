"""Tokenize a jsonl corpus into Megatron MMIDIDX ``.bin``/``.idx`` files (Megatron's flags).

    python tools/preprocess_data.py --input corpus.jsonl.gz --output-prefix data/corpus \\
        --tokenizer-type GPT2BPETokenizer --vocab-file vocab.json --merge-file merges.txt \\
        --append-eod --workers 2

writes ``data/corpus_text_document.bin/.idx`` (``..._sentence`` with ``--split-sentences``: one item
per sentence, doc_idx marking documents).  The input is one JSON object per line (plain or gzip);
every ``--json-keys`` key must hold a string.  A bad line stops the run with ``error: <file>:<line>:
<what>`` and leaves no output (``--skip-bad-lines`` counts and skips such lines instead).  Blank lines
and documents without tokens are skipped and counted.  ``--workers N`` runs N single-threaded encoder
processes (with 1, encoding runs in this process; set TOKENIZERS_PARALLELISM=true to let the HF engine of
the BERT WordPiece tokenizer use its own threads as well).  Sentence
splitting is rule-based (``megatron/data/sentence_splitter.py``; NLTK punkt data cannot be downloaded).
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.path.pardir)))  # run from a checkout

from megatron.data.preprocessing import BadInputError, PreprocessOptions, preprocess
from megatron.tokenizer import TOKENIZERS


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (Megatron's flag names)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_argument_group("input data")
    g.add_argument("--input", required=True, help="path to the input .jsonl (or .jsonl.gz) file")
    g.add_argument("--json-keys", nargs="+", default=["text"], help="space-separated keys to extract from each JSON object")
    g.add_argument("--split-sentences", action="store_true", help="one item per sentence (rule-based splitter)")
    g.add_argument("--keep-newlines", action="store_true", help="keep newlines between sentences when splitting")
    g.add_argument("--lang", default="english", help="language of the sentence splitter (only english)")
    g.add_argument("--skip-bad-lines", action="store_true", help="count and skip bad lines instead of stopping")
    g = ap.add_argument_group("tokenizer")
    g.add_argument("--tokenizer-type", required=True, choices=list(TOKENIZERS), help="what type of tokenizer to use")
    g.add_argument("--vocab-file", default=None, help="path to the vocab file")
    g.add_argument("--merge-file", default=None, help="path to the BPE merge file (if necessary)")
    g.add_argument("--tokenizer-model", default=None, help="SentencePiece model file")
    g.add_argument("--vocab-extra-ids", type=int, default=0, help="number of additional <extra_id_i> tokens")
    g.add_argument("--append-eod", action="store_true", help="append an <eod> token to the end of each document")
    g.add_argument("--make-vocab-size-divisible-by", type=int, default=128, help="pad the vocab size to a multiple of this")
    g = ap.add_argument_group("output data")
    g.add_argument("--output-prefix", required=True, help="path prefix of the binary output files (no suffix)")
    g.add_argument("--dataset-impl", default="mmap", help="output format; only mmap is supported")
    g = ap.add_argument_group("runtime")
    g.add_argument("--workers", type=int, default=1, help="number of encoder processes")
    g.add_argument("--chunk-size", type=int, default=25, help="lines sent to a worker at a time")
    g.add_argument("--log-interval", type=int, default=100, help="update the progress bar every this many documents")
    g.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    return ap


def _validate(args: argparse.Namespace) -> None:
    if args.dataset_impl != "mmap":
        raise ValueError(f"--dataset-impl {args.dataset_impl!r} is not supported: only 'mmap' (legacy formats were dropped)")
    if args.lang != "english":
        raise ValueError(f"--lang {args.lang!r} is not supported: the rule-based sentence splitter handles english only")
    for flag in ("workers", "chunk_size", "log_interval"):
        if getattr(args, flag) < 1:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    if len(set(args.json_keys)) != len(args.json_keys):
        raise ValueError(f"--json-keys has duplicates: {args.json_keys}")
    if args.keep_newlines and not args.split_sentences:
        print("warning: --keep-newlines has no effect without --split-sentences", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 with ``error: ...`` on stderr for bad input)."""
    args = build_parser().parse_args(argv)
    try:
        _validate(args)
        options = PreprocessOptions(
            input_name=args.input, json_keys=tuple(args.json_keys), tokenizer_type=args.tokenizer_type,
            vocab_file=args.vocab_file, merge_file=args.merge_file, tokenizer_model=args.tokenizer_model,
            vocab_extra_ids=args.vocab_extra_ids, make_vocab_size_divisible_by=args.make_vocab_size_divisible_by,
            split_sentences=args.split_sentences, keep_newlines=args.keep_newlines, append_eod=args.append_eod,
            skip_bad_lines=args.skip_bad_lines,
        )
        summary = preprocess(options, args.input, args.output_prefix, workers=args.workers, chunk_size=args.chunk_size,
                             log_interval=args.log_interval, progress=not args.no_progress)
    except (BadInputError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: no output written", file=sys.stderr)
        return 130
    if summary.bad_lines:
        print(f"warning: skipped {summary.bad_lines} bad line(s) in {args.input}; first ones:", file=sys.stderr)
        for lineno, what in summary.first_bad:
            print(f"  {args.input}:{lineno}: {what}", file=sys.stderr)
    for key, prefix in summary.outputs.items():
        print(f"wrote {prefix}.bin/.idx ({summary.items[key]} items, {summary.tokens[key]} tokens, "
              f"{summary.empty_docs[key]} empty documents skipped)")
    print(summary.line())
    return 0


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so the builders delete their temp files and no output is published
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sys.exit(main())
