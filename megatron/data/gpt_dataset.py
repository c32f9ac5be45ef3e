"""GPT dataset with Megatron semantics: doc_idx / sample_idx / shuffle_idx index maps over MMIDIDX token files.

A split's documents are repeated over the epochs needed and shuffled (doc_idx). The shuffled token
stream is cut into samples of ``seq_length + 1`` tokens; consecutive samples share one boundary token
and cross document boundaries. ``sample_idx[i] = (position in doc_idx, offset in that document)`` of
sample i's first token, so sample i spans stream positions ``[i * seq_length, (i + 1) * seq_length]``.
``shuffle_idx`` permutes the samples; when the last epoch is used for less than 80 %, its documents
and samples are shuffled separately from the other epochs (Megatron's "separate last epoch" rule).
Everything is built with numpy (cumsum + searchsorted), no per-sample Python loop, no C++ helper.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from megatron.data.blendable_dataset import blend_splits
from megatron.data.dataset_utils import (
    DatasetError,
    get_datasets_weights_and_num_samples,
    get_train_valid_test_split_,
    index_map_prefix,
    load_or_build_index_maps,
    strided_view,
)
from megatron.data.indexed_dataset import make_dataset

logger = logging.getLogger(__name__)

_SPLIT_NAMES = ("train", "valid", "test")
_INT32_MAX = np.iinfo(np.int32).max
_CHUNK = 1 << 22  # sample boundaries located per searchsorted call


# ----------------------------------------------------------------------------------------------
# Index maps (pure numpy)
# ----------------------------------------------------------------------------------------------


def num_tokens(documents: np.ndarray, sizes: np.ndarray) -> int:
    """Tokens in one epoch over ``documents``."""
    return int(np.sum(sizes[documents], dtype=np.int64))


def num_epochs(tokens_per_epoch: int, seq_length: int, num_samples: int) -> int:
    """Smallest number of epochs that yields ``num_samples`` samples of seq_length + 1 tokens."""
    if tokens_per_epoch < 1:
        raise DatasetError("the split has no tokens: cannot make any sample")
    # Samples from E epochs: (E * tokens_per_epoch - 1) // seq_length.
    needed = max(int(num_samples), 1) * seq_length + 1
    return max(1, -(-needed // tokens_per_epoch))


def samples_in_epochs(epochs: int, tokens_per_epoch: int, seq_length: int) -> int:
    """Number of samples the index maps of ``epochs`` epochs hold."""
    return (epochs * tokens_per_epoch - 1) // seq_length


def separate_last_epoch(epochs: int, tokens_per_epoch: int, seq_length: int, num_samples: int) -> bool:
    """Megatron's rule: shuffle the last epoch apart when less than 80 % of its samples are needed."""
    if epochs == 1:
        return False
    from_previous = samples_in_epochs(epochs - 1, tokens_per_epoch, seq_length)
    last_epoch_samples = num_samples - from_previous
    per_epoch = (tokens_per_epoch - 1) // seq_length
    return last_epoch_samples < int(0.80 * per_epoch)


def build_doc_idx(documents: np.ndarray, epochs: int, rng: np.random.RandomState, separate_last: bool) -> np.ndarray:
    """Documents repeated ``epochs`` times and shuffled (the last epoch apart when ``separate_last``)."""
    dtype = np.int32 if len(documents) * epochs <= _INT32_MAX and np.max(documents) <= _INT32_MAX else np.int64
    if separate_last and epochs > 1:
        first = build_doc_idx(documents, epochs - 1, rng, False)
        last = build_doc_idx(documents, 1, rng, False)
        return np.concatenate([first, last])
    doc_idx = np.tile(np.asarray(documents, dtype=dtype), epochs)
    rng.shuffle(doc_idx)
    return doc_idx


def build_sample_idx(
    sizes: np.ndarray, doc_idx: np.ndarray, seq_length: int, epochs: int, tokens_per_epoch: int
) -> np.ndarray:
    """[num_samples + 1, 2] rows (position in doc_idx, offset) of each sample's first token."""
    total = samples_in_epochs(epochs, tokens_per_epoch, seq_length)
    lengths = sizes[doc_idx].astype(np.int64)
    ends = np.cumsum(lengths)  # stream position one past each document
    starts = ends - lengths
    dtype = np.int32 if len(doc_idx) <= _INT32_MAX and int(lengths.max(initial=0)) <= _INT32_MAX else np.int64
    sample_idx = np.empty((total + 1, 2), dtype=dtype)
    sample_idx[0] = 0  # the first sample starts at the first document even if it is empty
    chunks = range(1, total + 1, _CHUNK)
    for lo in tqdm(chunks, desc="sample_idx", unit="chunk", disable=len(chunks) < 4, leave=False):
        hi = min(lo + _CHUNK, total + 1)
        positions = np.arange(lo, hi, dtype=np.int64) * seq_length
        # The document holding stream position p: first one whose end is > p (skips empty documents).
        doc = np.searchsorted(ends, positions, side="right")
        sample_idx[lo:hi, 0] = doc
        sample_idx[lo:hi, 1] = positions - starts[doc]
    return sample_idx


def build_shuffle_idx(num_samples: int, total_size: int, rng: np.random.RandomState) -> np.ndarray:
    """Permutation of [0, total_size): [0, num_samples) and [num_samples, total_size) shuffled apart."""
    dtype = np.uint32 if total_size < np.iinfo(np.uint32).max - 1 else np.int64
    first = np.arange(num_samples, dtype=dtype)
    rng.shuffle(first)
    if num_samples == total_size:
        return first
    last = np.arange(num_samples, total_size, dtype=dtype)
    rng.shuffle(last)
    return np.concatenate([first, last])


def index_map_filenames(
    map_prefix: str, name: str, num_samples: int, seq_length: int, seed: int, exact_epochs: int | None = None
) -> dict[str, str]:
    """Megatron's cache names ``{prefix}_{name}_indexmap_{N}ns|exact{E}ep_{L}sl_{seed}s_{doc,sample,shuffle}_idx.npy``."""
    budget = f"exact{exact_epochs}ep" if exact_epochs is not None else f"{num_samples}ns"
    base = f"{map_prefix}_{name}_indexmap_{budget}_{seq_length}sl_{seed}s"
    return {key: f"{base}_{key}_idx.npy" for key in ("doc", "sample", "shuffle")}


def _validate_maps(
    arrays: dict[str, np.ndarray],
    documents: np.ndarray,
    sizes: np.ndarray,
    seq_length: int,
    expected_epochs: int | None,
) -> str | None:
    """None when doc/sample/shuffle maps fit this split (shapes, dtypes, bounds), else the reason."""
    doc_idx, sample_idx, shuffle_idx = arrays["doc"], arrays["sample"], arrays["shuffle"]
    for key, arr, ndim in (("doc_idx", doc_idx, 1), ("sample_idx", sample_idx, 2), ("shuffle_idx", shuffle_idx, 1)):
        if arr.ndim != ndim or not np.issubdtype(arr.dtype, np.integer):
            return f"{key} has shape {arr.shape} and dtype {arr.dtype}, expected a {ndim}-D integer array"
    n_docs = len(documents)
    if len(doc_idx) == 0 or len(doc_idx) % n_docs:
        return f"doc_idx has {len(doc_idx)} entries, expected a multiple of the split's {n_docs} documents"
    epochs = len(doc_idx) // n_docs
    if expected_epochs is not None and epochs != expected_epochs:
        return f"doc_idx covers {epochs} epochs, expected {expected_epochs}"
    probe = strided_view(doc_idx)
    if probe.min() < documents[0] or probe.max() > documents[-1]:
        return f"doc_idx holds documents outside the split's range [{documents[0]}, {documents[-1]}]"
    tokens_per_epoch = num_tokens(documents, sizes)
    total = samples_in_epochs(epochs, tokens_per_epoch, seq_length)
    if sample_idx.shape != (total + 1, 2):
        return f"sample_idx has shape {sample_idx.shape}, expected ({total + 1}, 2) for {epochs} epoch(s) at seq_length {seq_length}"
    last_doc, last_offset = (int(v) for v in sample_idx[-1])
    if not (0 <= last_doc < len(doc_idx) and 0 <= last_offset < int(sizes[doc_idx[last_doc]])):
        return "the last sample_idx row points outside doc_idx"
    if tuple(int(v) for v in sample_idx[0]) != (0, 0):
        return "sample_idx does not start at (0, 0)"
    if shuffle_idx.shape != (total,):
        return f"shuffle_idx has {shuffle_idx.shape[0]} entries, expected {total}"
    probe = strided_view(shuffle_idx)
    if total and (probe.min() < 0 or probe.max() >= total):
        return f"shuffle_idx holds sample ids outside [0, {total})"
    return None


def build_index_mappings(
    name: str,
    data_prefix: str,
    documents: np.ndarray,
    sizes: np.ndarray,
    num_samples: int,
    seq_length: int,
    seed: int,
    *,
    exact_epochs: int | None = None,
    index_cache_dir: str | None = None,
    doc_idx_path: str | None = None,
    sample_idx_path: str | None = None,
    shuffle_idx_path: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Load or build (doc_idx, sample_idx, shuffle_idx) for one split; pinned paths override the cache names."""
    tokens_per_epoch = num_tokens(documents, sizes)
    if tokens_per_epoch == 0:
        raise DatasetError(f"{data_prefix}: the {name} split has no tokens; use more data or change --split")
    if exact_epochs is not None:
        epochs = int(exact_epochs)
        num_samples = samples_in_epochs(epochs, tokens_per_epoch, seq_length)
        if num_samples == 0:
            raise DatasetError(
                f"{data_prefix}: {epochs} epoch(s) of the {name} split hold {epochs * tokens_per_epoch} tokens, "
                f"fewer than one sample of --seq-length {seq_length} + 1 tokens (--train-data-exact-num-epochs)"
            )
    else:
        epochs = num_epochs(tokens_per_epoch, seq_length, num_samples)
    paths = index_map_filenames(
        index_map_prefix(data_prefix, index_cache_dir), name, num_samples, seq_length, seed, exact_epochs
    )
    pinned = {}
    for key, path, flag in (
        ("doc", doc_idx_path, "--train-doc-idx-path"),
        ("sample", sample_idx_path, "--train-sample-idx-path"),
        ("shuffle", shuffle_idx_path, "--train-shuffle-idx-path"),
    ):
        if path is not None:
            paths[key] = path
            pinned[key] = flag

    def build() -> dict[str, np.ndarray]:
        start = time.time()
        rng = np.random.RandomState(seed=seed)
        separate = separate_last_epoch(epochs, tokens_per_epoch, seq_length, num_samples)
        doc_idx = build_doc_idx(documents, epochs, rng, separate)
        sample_idx = build_sample_idx(sizes, doc_idx, seq_length, epochs, tokens_per_epoch)
        total = sample_idx.shape[0] - 1
        first = samples_in_epochs(epochs - 1, tokens_per_epoch, seq_length) if separate else total
        shuffle_idx = build_shuffle_idx(first, total, rng)
        logger.info(
            "%s index maps for %s: %d epoch(s), %d samples, separate last epoch %s, built in %.2f s",
            name, data_prefix, epochs, total, separate, time.time() - start,
        )
        return {"doc": doc_idx, "sample": sample_idx, "shuffle": shuffle_idx}

    # Pinned maps come from another build (e.g. the analysis run): accept any whole number of epochs.
    expected = None if pinned else epochs
    arrays = load_or_build_index_maps(
        paths, build, lambda a: _validate_maps(a, documents, sizes, seq_length, expected), pinned=pinned
    )
    return arrays["doc"], arrays["sample"], arrays["shuffle"]


# ----------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------


class GPTDataset(torch.utils.data.Dataset):
    """Samples of ``seq_length + 1`` tokens: ``{"text": int64 [seq_length + 1]}`` (+ ``"index"`` int64 [1])."""

    def __init__(
        self,
        name: str,
        data_prefix: str,
        documents: np.ndarray,
        indexed_dataset: Any,
        num_samples: int,
        seq_length: int,
        seed: int,
        *,
        train_data_exact_num_epochs: int | None = None,
        return_data_index: bool = False,
        index_cache_dir: str | None = None,
        doc_idx_path: str | None = None,
        sample_idx_path: str | None = None,
        shuffle_idx_path: str | None = None,
    ) -> None:
        documents = np.asarray(documents)
        if len(documents) == 0:
            raise DatasetError(f"{data_prefix}: the {name} split has no documents")
        if documents.min() < 0 or documents.max() >= indexed_dataset.sizes.shape[0]:
            raise DatasetError(f"{data_prefix}: {name} documents outside [0, {indexed_dataset.sizes.shape[0]})")
        if seq_length < 1:
            raise DatasetError(f"--seq-length must be >= 1, got {seq_length}")
        self.name = name
        self.data_prefix = data_prefix
        self.indexed_dataset = indexed_dataset
        self.seq_length = seq_length
        self.seed = seed
        self.return_data_index = return_data_index
        self.doc_idx, self.sample_idx, self.shuffle_idx = build_index_mappings(
            name, data_prefix, documents, indexed_dataset.sizes, num_samples, seq_length, seed,
            exact_epochs=train_data_exact_num_epochs, index_cache_dir=index_cache_dir,
            doc_idx_path=doc_idx_path, sample_idx_path=sample_idx_path, shuffle_idx_path=shuffle_idx_path,
        )
        if len(self) < num_samples and train_data_exact_num_epochs is None:
            logger.warning("%s %s: %d samples available, %d requested", data_prefix, name, len(self), num_samples)

    def __len__(self) -> int:
        return self.sample_idx.shape[0] - 1

    def tokens(self, sample: int) -> np.ndarray:
        """Tokens of sample ``sample`` (a position AFTER the shuffle), int64 [seq_length + 1]."""
        doc_f, off_f = (int(v) for v in self.sample_idx[sample])
        doc_l, off_l = (int(v) for v in self.sample_idx[sample + 1])
        ds, doc_idx = self.indexed_dataset, self.doc_idx
        if doc_f == doc_l:
            parts = [ds.get(int(doc_idx[doc_f]), offset=off_f, length=off_l - off_f + 1)]
        else:
            parts = [ds.get(int(doc_idx[doc_f]), offset=off_f)]
            parts.extend(ds.get(int(d)) for d in doc_idx[doc_f + 1 : doc_l])
            parts.append(ds.get(int(doc_idx[doc_l]), length=off_l + 1))
        return np.concatenate(parts).astype(np.int64, copy=False)

    def __getitem__(self, idx: int) -> dict[str, np.ndarray]:
        idx = int(idx)
        if not 0 <= idx < len(self):
            raise IndexError(f"{self.name} sample {idx} out of range [0, {len(self)})")
        sample = {"text": self.tokens(int(self.shuffle_idx[idx]))}
        if self.return_data_index:
            sample["index"] = np.array([idx], dtype=np.int64)  # position before the shuffle (spec §2.3)
        return sample


# ----------------------------------------------------------------------------------------------
# Builders
# ----------------------------------------------------------------------------------------------


def _build_single(
    data_prefix: str,
    data_impl: str,
    splits_string: str,
    train_valid_test_num_samples: list[int],
    seq_length: int,
    seed: int,
    skip_warmup: bool,
    common: dict[str, Any],
    train_only: dict[str, Any],
) -> tuple[GPTDataset | None, GPTDataset | None, GPTDataset | None]:
    """Train/valid/test GPTDatasets of one prefix (None for an empty split)."""
    indexed = make_dataset(data_prefix, data_impl, skip_warmup)
    n_docs = indexed.sizes.shape[0]
    bounds = get_train_valid_test_split_(splits_string, n_docs)
    out: list[GPTDataset | None] = []
    for i, name in enumerate(_SPLIT_NAMES):
        logger.info("%s %s split: documents [%d, %d)", data_prefix, name, bounds[i], bounds[i + 1])
        if bounds[i + 1] <= bounds[i]:
            out.append(None)
            continue
        documents = np.arange(bounds[i], bounds[i + 1], dtype=np.int32 if n_docs <= _INT32_MAX else np.int64)
        extra = train_only if name == "train" else {}
        out.append(GPTDataset(
            name, data_prefix, documents, indexed, int(train_valid_test_num_samples[i]), seq_length, seed,
            **common, **extra,
        ))
    return out[0], out[1], out[2]


def build_train_valid_test_datasets(
    data_prefix: list[str],
    data_impl: str,
    splits_string: str,
    train_valid_test_num_samples: list[int],
    seq_length: int,
    seed: int,
    skip_warmup: bool = True,
    *,
    train_data_exact_num_epochs: int | None = None,
    return_data_index: bool = False,
    index_cache_dir: str | None = None,
    train_doc_idx_path: str | None = None,
    train_sample_idx_path: str | None = None,
    train_shuffle_idx_path: str | None = None,
) -> tuple[Any, Any, Any]:
    """(train, valid, test) GPT datasets for ``--data-path`` (one prefix, or weight/prefix pairs → blends)."""
    if isinstance(data_prefix, str):
        data_prefix = [data_prefix]
    if len(train_valid_test_num_samples) != 3:
        raise DatasetError(f"expected 3 sample counts (train, valid, test), got {list(train_valid_test_num_samples)}")
    if train_data_exact_num_epochs is not None and train_data_exact_num_epochs < 1:
        raise DatasetError(f"--train-data-exact-num-epochs must be >= 1, got {train_data_exact_num_epochs}")
    common: dict[str, Any] = dict(return_data_index=return_data_index, index_cache_dir=index_cache_dir)
    train_only: dict[str, Any] = dict(
        train_data_exact_num_epochs=train_data_exact_num_epochs, doc_idx_path=train_doc_idx_path,
        sample_idx_path=train_sample_idx_path, shuffle_idx_path=train_shuffle_idx_path,
    )
    if len(data_prefix) == 1:
        return _build_single(
            data_prefix[0], data_impl, splits_string, list(train_valid_test_num_samples), seq_length, seed,
            skip_warmup, common, train_only,
        )
    if any(p is not None for p in (train_doc_idx_path, train_sample_idx_path, train_shuffle_idx_path)):
        raise DatasetError("--train-doc/sample/shuffle-idx-path pin ONE dataset's maps; they cannot be used with a blended --data-path")
    prefixes, weights, per_dataset = get_datasets_weights_and_num_samples(data_prefix, train_valid_test_num_samples)
    splits = [
        _build_single(p, data_impl, splits_string, n, seq_length, seed, skip_warmup, common, train_only)
        for p, n in zip(prefixes, per_dataset)
    ]
    return blend_splits(splits, weights, train_valid_test_num_samples, train_exact=train_data_exact_num_epochs is not None)
