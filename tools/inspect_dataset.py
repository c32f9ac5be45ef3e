"""Print the header, counts, dtype and first items of an MMIDIDX dataset prefix.

    python tools/inspect_dataset.py data/corpus_text_document --num-items 3
    python tools/inspect_dataset.py data/corpus_text_document --tokenizer-type GPT2BPETokenizer \\
        --vocab-file vocab.json --merge-file merges.txt      # also detokenize the items shown
"""
from __future__ import annotations

import argparse
import os
import struct
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.path.pardir)))  # run from a checkout

import numpy as np

from megatron.data.indexed_dataset import DTYPE_TABLES, MMapIndexedDataset, index_file_path


def describe(prefix: str, num_items: int = 3, max_tokens: int = 32, dtype_table: str = "megatron",
             tokenizer: object | None = None) -> str:
    """A human-readable report of the dataset at ``prefix``."""
    ds = MMapIndexedDataset(prefix, dtype_table=dtype_table)
    with open(index_file_path(prefix), "rb") as f:
        magic, version, dcode, n, d = struct.unpack("<9sQBQQ", f.read(34))
    sizes = ds.sizes.astype(np.int64)
    lines = [
        f"prefix      {prefix}",
        f"header      magic={magic!r} version={version} dtype_code={dcode} N={n} D={d}",
        f"dtype       {ds.dtype} ({dtype_table} table)",
        f"items       {len(ds)}",
        f"documents   {len(ds.doc_idx) - 1} (doc_idx {ds.doc_idx[:6].tolist()}{' ...' if len(ds.doc_idx) > 6 else ''})",
        f"elements    {int(sizes.sum())}",
    ]
    if len(ds):
        lines.append(f"item size   min {int(sizes.min())}, mean {sizes.mean():.1f}, max {int(sizes.max())}")
    for i in range(min(num_items, len(ds))):
        item = ds[i]
        shown = item[:max_tokens].tolist()
        lines.append(f"item {i:<6} size {len(item)}: {shown}{' ...' if len(item) > max_tokens else ''}")
        if tokenizer is not None:
            lines.append(f"            text: {tokenizer.detokenize(item[:max_tokens].tolist())!r}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 with ``error: ...`` on stderr for bad input)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prefix", help="dataset prefix (without .bin/.idx)")
    ap.add_argument("--num-items", type=int, default=3, help="items to print")
    ap.add_argument("--max-tokens", type=int, default=32, help="elements shown per item")
    ap.add_argument("--dtype-table", choices=sorted(DTYPE_TABLES), default="megatron", help="dtype-code table to decode with")
    ap.add_argument("--tokenizer-type", default=None, help="detokenize the items shown with this tokenizer")
    ap.add_argument("--vocab-file", default=None)
    ap.add_argument("--merge-file", default=None)
    ap.add_argument("--tokenizer-model", default=None)
    args = ap.parse_args(argv)
    try:
        tokenizer = None
        if args.tokenizer_type is not None:
            from megatron.tokenizer import build_tokenizer

            tokenizer = build_tokenizer(args.tokenizer_type, vocab_file=args.vocab_file, merge_file=args.merge_file,
                                        tokenizer_model=args.tokenizer_model)
        print(describe(args.prefix, args.num_items, args.max_tokens, args.dtype_table, tokenizer))
    except (ValueError, OSError) as e:
        message = str(e)
        # the library's hint names its Python argument; this tool's users need the flag
        for table in sorted(DTYPE_TABLES):
            message = message.replace(f"Open it with MMapIndexedDataset(prefix, dtype_table={table!r})",
                                      f"Read it with --dtype-table {table}")
        print(f"error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
