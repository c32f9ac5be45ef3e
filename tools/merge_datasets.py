"""Merge several MMIDIDX datasets (``.bin``/``.idx`` pairs) into one, in order.

    python tools/merge_datasets.py --input shards/ --output-prefix data/merged_text_document
    python tools/merge_datasets.py --inputs a_text_document b_text_document --output-prefix merged

``--input DIR`` merges every complete prefix in DIR (both ``.bin`` and ``.idx`` present), sorted by
name; incomplete ones are skipped with a warning.  All inputs must share one dtype.  Items, document
boundaries (doc_idx) and bytes are appended unchanged; the output is written atomically.
"""
from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(__file__), os.path.pardir)))  # run from a checkout

from tqdm import tqdm

from megatron.data.indexed_dataset import (
    IndexedDatasetError,
    MMapIndexedDataset,
    MMapIndexedDatasetBuilder,
    data_file_path,
    index_file_path,
)


def prefixes_in_dir(directory: str, exclude: str | None = None) -> tuple[list[str], list[str]]:
    """(complete prefixes, incomplete prefixes) found in ``directory``, sorted; ``exclude`` is left out."""
    if not os.path.isdir(directory):
        raise ValueError(f"--input {directory}: not a directory")
    names = {}
    for f in os.listdir(directory):
        stem, ext = os.path.splitext(f)
        if ext in (".bin", ".idx"):
            names.setdefault(stem, set()).add(ext)
    complete, incomplete = [], []
    for stem in sorted(names):
        prefix = os.path.join(directory, stem)
        if exclude is not None and os.path.abspath(prefix) == os.path.abspath(exclude):
            continue
        (complete if names[stem] == {".bin", ".idx"} else incomplete).append(prefix)
    return complete, incomplete


def merge_datasets(prefixes: list[str], output_prefix: str) -> MMapIndexedDataset:
    """Merge ``prefixes`` in order into ``output_prefix``; raises IndexedDatasetError on a dtype mismatch."""
    if not prefixes:
        raise ValueError("nothing to merge: no input datasets")
    out = os.path.abspath(output_prefix)
    for p in prefixes:
        if os.path.abspath(p) == out:
            raise ValueError(f"--output-prefix {output_prefix} is also an input")
    datasets = [MMapIndexedDataset(p) for p in prefixes]  # validates every input before writing anything
    dtype = datasets[0].dtype
    for p, ds in zip(prefixes, datasets):
        if ds.dtype != dtype:
            raise IndexedDatasetError(
                f"{index_file_path(p)}: dtype {ds.dtype} differs from {dtype} of {index_file_path(prefixes[0])}; "
                "all merged datasets must share one dtype"
            )
    del datasets
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with MMapIndexedDatasetBuilder(data_file_path(output_prefix), dtype=dtype) as builder:
        for p in tqdm(prefixes, desc="merge", unit="dataset", disable=len(prefixes) < 2):
            builder.merge_file_(p)
        builder.finalize(index_file_path(output_prefix))
    return MMapIndexedDataset(output_prefix)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 with ``error: ...`` on stderr for bad input)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--input", help="directory whose complete .bin/.idx prefixes are merged, sorted by name")
    src.add_argument("--inputs", nargs="+", help="dataset prefixes to merge, in this order")
    ap.add_argument("--output-prefix", required=True, help="prefix of the merged .bin/.idx (no suffix)")
    args = ap.parse_args(argv)
    try:
        if args.input is not None:
            prefixes, incomplete = prefixes_in_dir(args.input, exclude=args.output_prefix)
            for p in incomplete:
                print(f"warning: skipping incomplete dataset {p} (needs both .bin and .idx)", file=sys.stderr)
            if not prefixes:
                raise ValueError(f"--input {args.input}: no complete .bin/.idx dataset found")
        else:
            prefixes = args.inputs
        merged = merge_datasets(prefixes, args.output_prefix)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"merged {len(prefixes)} datasets into {args.output_prefix}.bin/.idx: {len(merged)} items, "
          f"{len(merged.doc_idx) - 1} documents, {int(merged.sizes.sum(dtype='int64'))} elements of {merged.dtype}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
