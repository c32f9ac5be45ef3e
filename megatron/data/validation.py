"""Checks of tokenized data files before a run uses them: prefixes, .bin/.idx presence, token ids vs the vocab.

Family specs (``megatron.specs``) call these from their ``validate_data``; errors are ConfigError lines naming
the flag and the file.
"""
from __future__ import annotations

import os
from typing import Sequence

import numpy as np

from megatron.config import ConfigError


def data_prefixes(data_path: Sequence[str] | None) -> list[str]:
    """The file prefixes inside --data-path (which may interleave blending weights: W1 P1 W2 P2 ...)."""
    items = list(data_path or [])
    if len(items) <= 1:
        return items
    if len(items) % 2:
        raise ConfigError(f"--data-path: expected one prefix or WEIGHT PREFIX pairs, got {len(items)} values")
    for weight in items[0::2]:
        try:
            if float(weight) < 0:
                raise ValueError
        except ValueError:
            raise ConfigError(f"--data-path: {weight!r} is not a non-negative blending weight "
                              "(expected WEIGHT1 PREFIX1 WEIGHT2 PREFIX2 ...)") from None
    return items[1::2]


def check_data_files(prefixes: Sequence[str]) -> None:
    """ConfigError unless every prefix has a readable .bin and .idx file."""
    for prefix in prefixes:
        for ext in (".bin", ".idx"):
            path = prefix + ext
            if not os.path.isfile(path):
                raise ConfigError(f"--data-path {prefix}: {path} not found (give the prefix without .bin/.idx, "
                                  "as written by tools/preprocess_data.py)")
            if not os.access(path, os.R_OK):
                raise ConfigError(f"--data-path {prefix}: {path} is not readable")


def check_token_ids(prefixes: Sequence[str], padded_vocab_size: int,
                    max_scan_bytes: int = 4 << 30) -> None:
    """Raise ConfigError if any token id in the prefixes' .bin files is >= padded_vocab_size.

    Files up to `max_scan_bytes` are scanned whole; larger ones are scanned in 64 MiB windows spread
    over the file (a partial check, logged as such).
    """
    from tqdm import tqdm

    from megatron.data.indexed_dataset import MMapIndexedDataset

    chunk = 64 << 20

    for prefix in prefixes:
        dtype = np.dtype(MMapIndexedDataset(prefix).dtype)
        if dtype.kind == "f":
            raise ConfigError(f"--data-path {prefix}: token file holds floats ({dtype}), expected integer ids")
        if dtype.kind == "u" and np.iinfo(dtype).max < padded_vocab_size:
            continue  # no id of this dtype can reach the padded vocab size
        size = os.path.getsize(prefix + ".bin")
        if size == 0:
            continue
        data = np.memmap(prefix + ".bin", dtype=dtype, mode="r")
        per = max(1, chunk // dtype.itemsize)
        starts = list(range(0, len(data), per))
        if size > max_scan_bytes:
            keep = max(1, max_scan_bytes // chunk)
            starts = [starts[int(i)] for i in np.linspace(0, len(starts) - 1, keep)]
        bar = tqdm(starts, desc=f"checking token ids in {os.path.basename(prefix)}.bin", unit="chunk",
                   disable=len(starts) < 8, leave=False)
        for s in bar:
            window = np.asarray(data[s:s + per])
            top = int(window.max())
            if top >= padded_vocab_size or (dtype.kind == "i" and int(window.min()) < 0):
                bad = top if top >= padded_vocab_size else int(window.min())
                raise ConfigError(
                    f"--data-path {prefix}: token id {bad} is outside the padded vocabulary [0, {padded_vocab_size}) "
                    "(was the data preprocessed with a different tokenizer than --vocab-file/--tokenizer-model?)")
        del data
