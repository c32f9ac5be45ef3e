"""Train a tokenizer on local jsonl(.gz) text and write Megatron's standard tokenizer files.

    python tools/train_tokenizer.py --tokenizer-type GPT2BPETokenizer \\
        --input data/corpus/python_docs.jsonl.gz --vocab-size 8192 --output-dir data/tokenizers/gpt2-bpe

Writes vocab.json + merges.txt (GPT2BPETokenizer), vocab.txt (BertWordPiece*), or spm.model + spm.vocab
(SentencePieceTokenizer) into --output-dir, each atomically.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from megatron.tokenizer import build_tokenizer  # noqa: E402
from megatron.tokenizer.base import TokenizerError  # noqa: E402
from megatron.tokenizer.train import TRAINABLE_TYPES, train_tokenizer  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tokenizer-type", required=True, choices=TRAINABLE_TYPES)
    p.add_argument("--input", required=True, help="jsonl or jsonl.gz file, one JSON object per line")
    p.add_argument("--json-keys", nargs="+", default=["text"], help="keys whose strings are trained on")
    p.add_argument("--vocab-size", type=int, required=True,
                   help="final vocab size (GPT-2: including <|endoftext|>; BERT: including specials)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--min-frequency", type=int, default=2,
                   help="minimum pair/word count for a merge (BPE/WordPiece; ignored by SentencePiece)")
    p.add_argument("--max-docs", type=int, default=None, help="train on the first N documents only")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Train, write the files, load them back, print a summary."""
    args = parse_args(argv)
    start = time.time()
    try:
        paths = train_tokenizer(args.tokenizer_type, args.input, args.vocab_size, args.output_dir,
                                json_keys=args.json_keys, min_frequency=args.min_frequency,
                                limit=args.max_docs, progress=not args.no_progress)
        # Load back through the real tokenizer classes: proves the files are usable.
        tok = build_tokenizer(args.tokenizer_type, vocab_file=paths.get("vocab_file"),
                              merge_file=paths.get("merge_file"),
                              tokenizer_model=paths.get("tokenizer_model"))
    except TokenizerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    files = ", ".join(paths.values())
    print(f"trained {args.tokenizer_type} in {time.time() - start:.1f}s: vocab_size {tok.vocab_size}, "
          f"padded {tok.padded_vocab_size}, eod {tok.eod}; wrote {files}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
