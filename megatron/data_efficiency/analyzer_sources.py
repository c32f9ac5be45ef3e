"""Where the analyzer's samples come from: a fast GPT token-stream walk, or any map-style dataset.

Both sources cut the work into a range ``[0, num_samples)`` that workers and threads split, and
yield batches ``(sample_ids [B], tokens [B, L], padding_mask [B, L] | None, stream | None)``.

:class:`GPTStreamSource` (the fast path) never builds samples one by one. A Megatron GPT dataset
walks its shuffled document order (``doc_idx``) as one token stream; pre-shuffle sample ``j``
is the stream slice ``[j*seq, j*seq + seq + 1)`` (consecutive samples share one boundary token),
and dataset position ``i`` serves sample ``shuffle_idx[i]``. The source copies a run of
consecutive samples' documents out of the token memmap once and exposes them as an overlapping
strided ``[B, seq + 1]`` view (no copy), so metrics see exactly the tokens ``dataset[i]["text"]``
would give; the sample id of stream sample ``j`` is the position ``i`` with ``shuffle_idx[i] = j``
(what ``--return-data-index`` reports, spec §2.3). Its work range is over ``j``. Histograms
(:meth:`GPTStreamSource.token_histogram`) do not depend on order, so they read whole documents in file
order (sequential, mostly without copying) and add the shared boundary tokens separately.

:class:`DatasetSource` iterates positions ``[start, end)`` of any dataset with ``len`` and
``__getitem__`` (BERT samples differ per epoch and are built by the dataset), batched and stacked.
"""
from __future__ import annotations

import logging
import os
import zlib
from typing import Any, Iterator, Protocol, Sequence

import numpy as np
from numpy.lib.stride_tricks import as_strided

from megatron.data_efficiency.analyzer_io import AnalyzerError

logger = logging.getLogger(__name__)

Batch = tuple[np.ndarray, np.ndarray, "np.ndarray | None", "np.ndarray | None"]
_STREAM_CHUNK_TOKENS = 1 << 17  # tokens per fast-path batch: its float64 temporaries (1 MiB) stay in L2 cache
_HISTOGRAM_CHUNK_TOKENS = 1 << 18  # tokens per bincount call: the data plus the histogram stay cache-sized


class SampleSource(Protocol):
    """What the map stage needs from a data source."""

    num_samples: int

    def fingerprint(self) -> str:
        """A short string identifying the sample order (reduce checks every map thread saw the same one)."""

    def batches(self, start: int, end: int, batch_size: int) -> Iterator[Batch]:
        """Yield ``(sample_ids, tokens, padding_mask, stream)`` for work items ``[start, end)``."""


def _crc(*arrays: np.ndarray) -> str:
    value = 0
    for a in arrays:
        value = zlib.crc32(np.ascontiguousarray(a).view(np.uint8).reshape(-1), value)
    return f"{value:08x}"


def _to_numpy(x: Any) -> np.ndarray:
    if type(x).__module__.startswith("torch"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


class GPTStreamSource:
    """Fast GPT source: contiguous runs of samples read straight from the document token stream."""

    def __init__(self, dataset: Any, sample_indices: Sequence[int] | None = None) -> None:
        self.dataset = dataset
        self.seq_length = int(dataset.seq_length)
        self.indexed = dataset.indexed_dataset
        self.doc_idx = np.asarray(dataset.doc_idx, dtype=np.int64)
        self.sample_idx = np.asarray(dataset.sample_idx, dtype=np.int64)
        shuffle_idx = np.asarray(dataset.shuffle_idx, dtype=np.int64)
        self.num_samples = len(dataset)
        n = self.num_samples
        if shuffle_idx.shape != (n,) or self.sample_idx.shape != (n + 1, 2):
            raise AnalyzerError(f"GPT dataset index maps do not match its length {n}: shuffle_idx {shuffle_idx.shape}, "
                                f"sample_idx {self.sample_idx.shape}")
        if n == 0:
            raise AnalyzerError("the GPT dataset is empty: nothing to analyze")
        seen = np.zeros(n, dtype=bool)
        if shuffle_idx.min() < 0 or shuffle_idx.max() >= n:
            raise AnalyzerError("GPT dataset shuffle_idx is not a permutation of its samples")
        seen[shuffle_idx] = True
        if not seen.all():
            raise AnalyzerError("GPT dataset shuffle_idx is not a permutation of its samples")
        positions = np.empty(n, dtype=np.int64)
        positions[shuffle_idx] = np.arange(n, dtype=np.int64)  # positions[j] = i with shuffle_idx[i] = j
        self.ids_by_stream_sample = positions
        doc_sizes = np.asarray(self.indexed.sizes, dtype=np.int64)[self.doc_idx]
        self.doc_start = np.zeros(doc_sizes.size + 1, dtype=np.int64)  # stream position of each doc_idx entry
        np.cumsum(doc_sizes, out=self.doc_start[1:])
        if self.sample_idx.min() < 0 or self.sample_idx[:, 0].max() >= doc_sizes.size:
            raise AnalyzerError("GPT dataset sample_idx points outside its doc_idx")
        starts = self.doc_start[self.sample_idx[:, 0]] + self.sample_idx[:, 1]
        if not (np.all(np.diff(starts) == self.seq_length)
                and np.all(self.sample_idx[:, 1] < doc_sizes[self.sample_idx[:, 0]])):
            raise AnalyzerError("GPT dataset sample_idx does not advance by seq_length tokens per sample "
                                "(not a Megatron GPT index map)")
        self.stream_start = int(starts[0])
        self._tokens = _token_array(self.indexed)
        if self._tokens is not None:  # byte view and byte extents of every document, for _stream
            self._bytes = memoryview(self._tokens).cast("B")
            self._doc_byte_start = np.asarray(self.indexed.pointers, dtype=np.int64)
            self._doc_byte_size = np.asarray(self.indexed.sizes, dtype=np.int64) * self._tokens.itemsize
        self._fingerprint = f"gpt-stream:{n}:{self.seq_length}:" + _crc(self.doc_idx, self.sample_idx, shuffle_idx)
        has_index = self._check_against_dataset(shuffle_idx)
        if sample_indices is not None and not has_index:  # like DeepSpeed: a returned 'index' wins
            lookup = np.asarray(sample_indices, dtype=np.int64)
            if lookup.shape != (n,):
                raise AnalyzerError(f"sample_indices has {lookup.shape} entries, expected {n}")
            self.ids_by_stream_sample = lookup[positions]

    def _check_against_dataset(self, shuffle_idx: np.ndarray) -> bool:
        """The stream view must give what ``dataset[i]`` gives (tokens, and ``index == i``); check a few positions."""
        n = self.num_samples
        has_index = False
        for i in sorted({0, n // 2, n - 1}):
            item = self.dataset[i]
            text = _to_numpy(item["text"] if isinstance(item, dict) else item).reshape(-1)
            j = int(shuffle_idx[i])
            if not np.array_equal(self._window(j, j + 1)[1][0], text):
                raise AnalyzerError(f"GPT dataset sample {i} differs from the token-stream slice of sample {j}")
            if isinstance(item, dict) and "index" in item:
                has_index = True
                if int(_to_numpy(item["index"]).reshape(-1)[0]) != i:
                    raise AnalyzerError(f"GPT dataset sample {i} reports index {item['index']!r}, expected {i}")
        return has_index

    def fingerprint(self) -> str:
        """Identifies the dataset's sample order (doc, sample and shuffle index maps)."""
        return self._fingerprint

    def _stream(self, a: int, b: int) -> np.ndarray:
        """The contiguous tokens of stream samples ``a .. b-1``: ``(b - a) * seq + 1`` of them."""
        (p0, off0), (p1, off1) = self.sample_idx[a], self.sample_idx[b]
        docs = self.doc_idx[p0:p1 + 1]
        if self._tokens is None:  # an indexed dataset without a flat token view: one get() per document
            if p0 == p1:
                return np.array(self.indexed.get(int(docs[0]), int(off0), int(off1 - off0 + 1)))
            pieces = [self.indexed.get(int(docs[0]), int(off0))]
            pieces.extend(self.indexed.get(int(d)) for d in docs[1:-1])
            pieces.append(self.indexed.get(int(docs[-1]), 0, int(off1 + 1)))
            return np.concatenate(pieces)
        item = self._tokens.itemsize
        first = self._doc_byte_start[docs]  # byte extents of the documents' pieces
        last = first + self._doc_byte_size[docs]
        last[-1] = first[-1] + (off1 + 1) * item
        first[0] += off0 * item
        # joining byte views costs half of np.concatenate per piece (documents are often short); read-only result
        joined = b"".join([self._bytes[f:e] for f, e in zip(first.tolist(), last.tolist())])
        return np.frombuffer(joined, dtype=self._tokens.dtype)

    def token_histogram(self, start: int, end: int, minlength: int) -> np.ndarray | None:
        """Token counts of stream samples ``[start, end)`` (shared tokens twice); None without a flat token view."""
        # Counts do not depend on order: whole documents are read in FILE order (contiguous spans, long runs
        # not copied) instead of the shuffled stream order; documents repeated over epochs count per repeat.
        if self._tokens is None or end <= start:
            return None
        tokens, item = self._tokens, self._tokens.itemsize
        pointers = np.asarray(self.indexed.pointers, dtype=np.int64) // item
        sizes = np.asarray(self.indexed.sizes, dtype=np.int64)
        (p0, off0), (p1, off1) = self.sample_idx[start], self.sample_idx[end]
        d0, d1 = int(self.doc_idx[p0]), int(self.doc_idx[p1])
        if p0 == p1:  # partial first / last documents
            spans = [(pointers[d0] + off0, pointers[d0] + off1 + 1)]
        else:
            spans = [(pointers[d0] + off0, pointers[d0] + sizes[d0]), (pointers[d1], pointers[d1] + off1 + 1)]
        first, last = np.array(spans, dtype=np.int64).T
        counts = _bincount_spans(tokens, first, last, minlength)
        multiplicity = np.bincount(self.doc_idx[p0 + 1:p1], minlength=sizes.size)  # whole documents in between
        level = 1
        while p1 > p0 + 1 and (selected := multiplicity >= level).any():
            edges = np.diff(np.concatenate(([0], selected.view(np.int8), [0])))
            first_doc, end_doc = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)  # runs of consecutive ids
            counts = _add_counts(counts, _bincount_spans(tokens, pointers[first_doc],
                                                         pointers[end_doc - 1] + sizes[end_doc - 1], minlength))
            level += 1
        seq = self.seq_length
        shared = self.stream_start + seq * np.arange(start + 1, end, dtype=np.int64)  # first token of samples a+1..b-1
        if shared.size:
            pos = np.searchsorted(self.doc_start, shared, side="right") - 1  # last entry starting <= x: non-empty
            elements = pointers[self.doc_idx[pos]] + (shared - self.doc_start[pos])
            counts = _add_counts(counts, np.bincount(tokens[elements], minlength=minlength))
        return counts

    def _window(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        """Stream samples ``a .. b-1``: their token run and its read-only overlapping ``[b - a, seq + 1]`` view."""
        stream = self._stream(a, b)
        seq = self.seq_length
        if stream.size != (b - a) * seq + 1:
            raise AnalyzerError(f"token stream of GPT samples {a}..{b - 1} has {stream.size} tokens, "
                                f"expected {(b - a) * seq + 1}")
        view = as_strided(stream, shape=(b - a, seq + 1), strides=(seq * stream.itemsize, stream.itemsize),
                          writeable=False)
        return stream, view

    def batches(self, start: int, end: int, batch_size: int) -> Iterator[Batch]:
        """Stream samples ``[start, end)`` in chunks of about 128k tokens (batch_size does not change results)."""
        chunk = max(1, _STREAM_CHUNK_TOKENS // (self.seq_length + 1))
        for a in range(start, end, chunk):
            b = min(end, a + chunk)
            stream, view = self._window(a, b)
            yield self.ids_by_stream_sample[a:b], view, None, stream


def _add_counts(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Sum of two histograms that may differ in length (a token above minlength grows one)."""
    if a.size < b.size:
        a, b = b, a
    a[:b.size] += b
    return a


def _bincount_spans(tokens: np.ndarray, starts: np.ndarray, ends: np.ndarray, minlength: int) -> np.ndarray:
    """Histogram of ``tokens[starts[k]:ends[k]]`` over all k, in cache-sized pieces (long spans are not copied)."""
    counts = np.zeros(minlength, dtype=np.int64)
    raw, item = memoryview(tokens).cast("B"), tokens.itemsize
    pending: list[memoryview] = []  # short spans, joined as bytes (cheaper per span than np.concatenate)
    pending_size = 0
    for s, e in zip(starts.tolist(), ends.tolist()):
        while e - s >= _HISTOGRAM_CHUNK_TOKENS:
            counts = _add_counts(counts, np.bincount(tokens[s:s + _HISTOGRAM_CHUNK_TOKENS], minlength=minlength))
            s += _HISTOGRAM_CHUNK_TOKENS
        if e > s:
            pending.append(raw[s * item:e * item])
            pending_size += e - s
        if pending_size >= _HISTOGRAM_CHUNK_TOKENS:
            joined = np.frombuffer(b"".join(pending), dtype=tokens.dtype)
            counts = _add_counts(counts, np.bincount(joined, minlength=minlength))
            pending, pending_size = [], 0
    if pending:
        counts = _add_counts(counts, np.bincount(np.frombuffer(b"".join(pending), dtype=tokens.dtype),
                                                 minlength=minlength))
    return counts


def _token_array(indexed: Any) -> np.ndarray | None:
    """All elements of an MMIDIDX ``.bin`` as one read-only memory-mapped array (None if not an MMIDIDX reader)."""
    prefix, pointers, dtype = (getattr(indexed, a, None) for a in ("path_prefix", "pointers", "dtype"))
    path = f"{prefix}.bin"
    if prefix is None or pointers is None or dtype is None or not os.path.isfile(path) or os.path.getsize(path) == 0:
        return None
    return np.memmap(path, dtype=dtype, mode="r").view(np.ndarray)


def is_gpt_stream_dataset(dataset: Any) -> bool:
    """True when ``dataset`` exposes Megatron GPT index maps (doc_idx, sample_idx, shuffle_idx, ...)."""
    return all(hasattr(dataset, a) for a in ("doc_idx", "sample_idx", "shuffle_idx", "indexed_dataset", "seq_length"))


class DatasetSource:
    """Any map-style dataset: positions ``[start, end)`` fetched with ``__getitem__`` and stacked per batch."""

    def __init__(self, dataset: Any, data_type: str = "GPT", sample_indices: Sequence[int] | None = None) -> None:
        self.dataset = dataset
        self.data_type = data_type
        self.num_samples = len(dataset)
        if self.num_samples == 0:
            raise AnalyzerError("the dataset is empty: nothing to analyze")
        self.sample_indices = None if sample_indices is None else np.asarray(sample_indices, dtype=np.int64)
        if self.sample_indices is not None and self.sample_indices.shape != (self.num_samples,):
            raise AnalyzerError(f"sample_indices has {self.sample_indices.shape} entries, expected {self.num_samples}")

    def fingerprint(self) -> str:
        """Dataset class and length (a generic dataset has no cheap content hash)."""
        return f"dataset:{type(self.dataset).__name__}:{self.num_samples}:{self.data_type}"

    def _sample(self, position: int) -> tuple[int, np.ndarray, np.ndarray | None]:
        item = self.dataset[position]
        sample_id = position if self.sample_indices is None else int(self.sample_indices[position])
        if isinstance(item, dict):
            if "text" not in item:
                raise AnalyzerError(f"dataset sample {position} is a dict without a 'text' entry "
                                    f"(keys: {sorted(item)})")
            tokens = _to_numpy(item["text"]).reshape(-1)
            if "index" in item:  # Megatron --return-data-index: the position before the shuffle lookup (spec §2.3)
                sample_id = int(_to_numpy(item["index"]).reshape(-1)[0])
            mask = None
            if self.data_type == "BERT":
                if "padding_mask" not in item:
                    raise AnalyzerError(f"BERT dataset sample {position} has no 'padding_mask' entry")
                mask = _to_numpy(item["padding_mask"]).reshape(-1)
            return sample_id, tokens, mask
        if self.data_type == "BERT":
            raise AnalyzerError(f"BERT dataset sample {position} must be a dict with 'text' and 'padding_mask'")
        return sample_id, _to_numpy(item).reshape(-1), None

    def batches(self, start: int, end: int, batch_size: int) -> Iterator[Batch]:
        """Positions ``[start, end)`` in batches of ``batch_size`` samples."""
        for a in range(start, end, batch_size):
            samples = [self._sample(k) for k in range(a, min(end, a + batch_size))]
            lengths = {s[1].shape[0] for s in samples}
            if len(lengths) != 1:
                raise AnalyzerError(f"samples {a}..{a + len(samples) - 1} have different lengths {sorted(lengths)}; "
                                    "metrics need equal-length (padded) samples within a batch")
            ids = np.fromiter((s[0] for s in samples), dtype=np.int64, count=len(samples))
            tokens = np.stack([s[1] for s in samples])
            mask = None if samples[0][2] is None else np.stack([s[2] for s in samples])
            yield ids, tokens, mask, None


def make_source(dataset: Any, data_type: str = "GPT", sample_indices: Sequence[int] | None = None) -> SampleSource:
    """The fast stream source for Megatron GPT datasets, else the generic per-position source."""
    if isinstance(dataset, (GPTStreamSource, DatasetSource)):
        return dataset
    if data_type == "GPT" and is_gpt_stream_dataset(dataset):
        try:
            return GPTStreamSource(dataset, sample_indices)
        except AnalyzerError as e:
            logger.warning("GPT fast path unavailable (%s); iterating samples one by one", e)
    return DatasetSource(dataset, data_type, sample_indices)
