"""Difficulty metrics for the curriculum-learning data analyzer (spec §2.4, §2.8).

A metric is a function over one batch of samples plus its type:

* ``single_value_per_sample``: returns one integer per sample (shape ``[B]``); the reduce stage turns
  these into the per-sample and per-value index files.
* ``accumulate_value_over_samples``: returns one integer vector per batch; vectors are summed over the
  whole dataset (e.g. a vocabulary histogram).

``METRICS`` is the registry (a plain dict, name → :class:`Metric`). Built-ins follow spec §2.8:

* ``seqlen`` (BERT): number of non-padding tokens.
* ``total_vocab_freq``: token histogram of length ``padded_vocab_size + 1``; BERT counts only positions
  whose padding mask is non-zero, GPT counts every token of every sample (a GPT sample has
  ``seq_length + 1`` tokens, so a token shared by two consecutive samples is counted twice).
* ``vocab_rarity``: ``int(sum(nll[token]))`` per sample in float64, truncated toward zero, with
  ``nll = -ln(f / sum(f))`` where ``f`` is the reduced ``total_vocab_freq`` with zeros replaced by 1;
  BERT multiplies each term by the padding mask.
* ``seqlen_vocab_rarity`` (BERT): ``seqlen * C + vocab_rarity`` with
  ``C = 10 ** (ceil(log10(seq_length * max(nll))) + 1)``.

User metrics are added with :func:`register_metric`. Their function receives the tokens as a read-only
``[B, L]`` integer array (for GPT data an overlapping view in the token file's dtype, e.g. uint16) and
must return integers: ``[B]`` for single-value metrics, a fixed-length vector for accumulate metrics.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from numpy.lib.stride_tricks import as_strided

from megatron.data_efficiency.analyzer_io import AnalyzerError, metric_output_prefix, read_index_file

SINGLE_VALUE = "single_value_per_sample"
ACCUMULATE = "accumulate_value_over_samples"
METRIC_TYPES = (SINGLE_VALUE, ACCUMULATE)
DATA_TYPES = ("GPT", "BERT")


@dataclass
class MetricContext:
    """What built-in metrics need besides the tokens: data type, vocabulary size, save path."""

    data_type: str = "GPT"
    """``GPT`` (every token counts) or ``BERT`` (positions weighted by the padding mask)."""
    padded_vocab_size: int | None = None
    """Padded vocabulary size; ``total_vocab_freq`` has ``padded_vocab_size + 1`` bins."""
    seq_length: int | None = None
    """``--seq-length``; used by ``seqlen_vocab_rarity`` (falls back to the batch width when None)."""
    save_path: str = "."
    """Analyzer output root; ``vocab_rarity`` reads ``{save}/total_vocab_freq/total_vocab_freq_metric_value``."""
    _nll: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.data_type not in DATA_TYPES:
            raise AnalyzerError(f"--analyzing-data-type must be one of {', '.join(DATA_TYPES)}, got {self.data_type!r}")

    def vocab_nll(self) -> np.ndarray:
        """Per-token-id negative log-probability (float64), loaded once from the reduced total_vocab_freq."""
        if self._nll is None:
            self._nll = vocab_nll(load_total_vocab_freq(self.save_path))
        return self._nll


@dataclass(frozen=True)
class MetricBatch:
    """One batch handed to a metric function."""

    tokens: np.ndarray
    """Token ids, shape ``[B, L]`` (GPT: ``L = seq_length + 1``)."""
    padding_mask: np.ndarray | None
    """``[B, L]`` 0/1 mask for BERT samples; None for GPT (every token is real)."""
    context: MetricContext
    """Dataset-wide settings (vocabulary size, save path, ...)."""
    stream: np.ndarray | None = None
    """GPT fast path only: the contiguous token run that ``tokens`` views, row ``b`` being
    ``stream[b * (L - 1) : b * (L - 1) + L]`` (consecutive rows share one token). Built-ins use it to
    avoid copying the overlapping view; user metrics can ignore it."""


MetricFn = Callable[[MetricBatch], np.ndarray]
RangeFn = Callable[[Any, int, int, MetricContext], "np.ndarray | None"]


@dataclass(frozen=True)
class Metric:
    """A registered metric: its batch function, its type, and the reduced metrics it reads."""

    name: str
    fn: MetricFn
    metric_type: str
    requires: tuple[str, ...] = ()
    range_fn: RangeFn | None = None
    """Optional shortcut for an accumulate metric: ``range_fn(source, start, end, context)`` returns the sum
    over a whole work range at once, or None when the source cannot serve it (then ``fn`` runs per batch)."""


METRICS: dict[str, Metric] = {}


def register_metric(name: str, fn: Callable[..., np.ndarray], metric_type: str, *, takes_batch: bool = False,
                    requires: tuple[str, ...] = (), overwrite: bool = False) -> Metric:
    """Register a metric; ``fn(tokens[B, L]) -> [B] ints`` (or an accumulate vector), or ``fn(MetricBatch)``."""
    if not name or "/" in name or os.sep in name or name.startswith("."):
        raise AnalyzerError(f"metric name {name!r} must be a non-empty file-name-safe string")
    if metric_type not in METRIC_TYPES:
        raise AnalyzerError(f"metric {name!r}: metric type must be one of {', '.join(METRIC_TYPES)}, "
                            f"got {metric_type!r}")
    if name in METRICS and not overwrite:
        raise AnalyzerError(f"metric {name!r} is already registered (pass overwrite=True to replace it)")
    if not callable(fn):
        raise AnalyzerError(f"metric {name!r}: fn must be callable, got {type(fn).__name__}")
    batch_fn: MetricFn = fn if takes_batch else (lambda batch, _fn=fn: _fn(batch.tokens))
    metric = Metric(name=name, fn=batch_fn, metric_type=metric_type, requires=tuple(requires))
    METRICS[name] = metric
    return metric


def get_metric(name: str) -> Metric:
    """Look a metric up by name; unknown names get an error listing the known ones."""
    try:
        return METRICS[name]
    except KeyError:
        raise AnalyzerError(f"--analyzing-metric {name!r} is unknown; known metrics: "
                            f"{', '.join(sorted(METRICS))}") from None


def vocab_nll(freq: np.ndarray) -> np.ndarray:
    """``-ln(f / sum(f))`` in float64 with zero frequencies replaced by 1 (spec §2.8)."""
    arr = np.asarray(freq)
    f = arr.astype(np.float64 if arr.dtype.kind == "f" else np.int64)  # a copy
    if f.ndim != 1 or f.size == 0:
        raise AnalyzerError(f"total_vocab_freq must be a non-empty 1-D vector, got shape {f.shape}")
    if (f < 0).any():
        raise AnalyzerError("total_vocab_freq holds negative counts")
    f[f == 0] = 1
    return -np.log(f / f.sum())


def load_total_vocab_freq(save_path: str) -> np.ndarray:
    """Read the reduced ``total_vocab_freq`` vector that ``vocab_rarity`` depends on."""
    prefix = metric_output_prefix(save_path, "total_vocab_freq", "metric_value")
    if not (os.path.isfile(prefix + ".bin") and os.path.isfile(prefix + ".idx")):
        raise AnalyzerError(
            f"vocab_rarity needs {prefix}.bin/.idx: run the map and reduce stages for total_vocab_freq "
            f"(same --save) first")
    ds = read_index_file(prefix)
    if len(ds) != 1:
        raise AnalyzerError(f"{prefix}.idx: expected exactly 1 item (the summed histogram), found {len(ds)}")
    return np.asarray(ds[0]).astype(np.int64)


def seqlen_vocab_rarity_coefficient(seq_length: int, nll: np.ndarray) -> int:
    """``C = 10 ** (ceil(log10(seq_length * max nll)) + 1)``: large enough that seqlen sorts first."""
    scale = float(seq_length) * float(np.max(nll))
    if scale <= 1.0:  # degenerate vocabulary (one token type): every rarity is < 1, so C = 10 separates
        return 10
    return 10 ** (math.ceil(math.log10(scale)) + 1)


def _require_mask(batch: MetricBatch, metric: str) -> np.ndarray:
    if batch.padding_mask is None:
        raise AnalyzerError(f"metric {metric!r} needs a padding mask: it is for --analyzing-data-type BERT "
                            f"(GPT samples all have seq_length + 1 tokens)")
    return batch.padding_mask


def _seqlen(batch: MetricBatch) -> np.ndarray:
    """Number of non-padding positions per sample."""
    return np.count_nonzero(_require_mask(batch, "seqlen"), axis=1).astype(np.int64)


def _vocab_bins(context: MetricContext) -> int:
    if context.padded_vocab_size is None:
        raise AnalyzerError("total_vocab_freq needs the padded vocabulary size (tokenizer flags)")
    return context.padded_vocab_size + 1


def _check_bins(counts: np.ndarray, bins: int) -> np.ndarray:
    if counts.size > bins:  # bincount grew the histogram: a token id above the vocabulary
        raise AnalyzerError(f"token id {counts.size - 1} exceeds the padded vocabulary size {bins - 1}: "
                            f"check --tokenizer-type/--vocab-file against the data")
    return counts.astype(np.int64, copy=False)


def _total_vocab_freq_range(source: Any, start: int, end: int, context: MetricContext) -> np.ndarray | None:
    """GPT token stream: the histogram of a whole work range, read in file order (see GPTStreamSource)."""
    histogram = getattr(source, "token_histogram", None)
    if histogram is None or context.data_type != "GPT":
        return None
    bins = _vocab_bins(context)
    counts = histogram(start, end, bins)
    return None if counts is None else _check_bins(counts, bins)


def _total_vocab_freq(batch: MetricBatch) -> np.ndarray:
    """Histogram of token ids with ``padded_vocab_size + 1`` bins (BERT: non-padding positions only)."""
    size = _vocab_bins(batch.context) - 1
    if batch.stream is not None:  # every stream token once, plus the tokens shared by consecutive rows
        step = batch.tokens.shape[1] - 1
        flat, shared = batch.stream, batch.stream[step:-1:step]
    else:
        tokens = batch.tokens if batch.padding_mask is None else batch.tokens[batch.padding_mask != 0]
        flat, shared = tokens.ravel(), None
    counts = _check_bins(np.bincount(flat, minlength=size + 1), size + 1)
    if shared is not None and shared.size:
        counts += np.bincount(shared, minlength=size + 1)
    return counts


def token_nll(tokens: np.ndarray, nll: np.ndarray) -> np.ndarray:
    """Gather ``nll[tokens]`` with a clear error for ids outside the histogram."""
    if tokens.dtype.kind == "i" and tokens.size and int(tokens.min()) < 0:
        raise AnalyzerError(f"negative token id {int(tokens.min())} in the data")
    try:
        return nll[tokens]
    except IndexError:
        raise AnalyzerError(f"token id {int(tokens.max())} is outside total_vocab_freq (length {nll.shape[0]}): "
                            f"the histogram was computed for another vocabulary") from None


def _vocab_rarity(batch: MetricBatch) -> np.ndarray:
    """Per-sample sum of token nll in float64, truncated toward zero."""
    nll = batch.context.vocab_nll()
    if batch.stream is not None:  # gather once over the stream, then sum its overlapping [B, L] rows
        b, length = batch.tokens.shape
        per_token = token_nll(batch.stream, nll)
        values = as_strided(per_token, shape=(b, length), strides=((length - 1) * 8, 8), writeable=False)
    else:
        values = token_nll(batch.tokens, nll)  # [B, L] float64
        if batch.padding_mask is not None:
            values = batch.padding_mask * values
    return values.sum(axis=1).astype(np.int64)


def _seqlen_vocab_rarity(batch: MetricBatch) -> np.ndarray:
    """``seqlen * C + vocab_rarity`` (BERT)."""
    seqlen = _seqlen(batch)
    nll = batch.context.vocab_nll()
    seq_length = batch.context.seq_length or batch.tokens.shape[1]
    coeff = seqlen_vocab_rarity_coefficient(seq_length, nll)
    return seqlen * np.int64(coeff) + _vocab_rarity(batch)


METRICS.update({
    "seqlen": Metric("seqlen", _seqlen, SINGLE_VALUE),
    "total_vocab_freq": Metric("total_vocab_freq", _total_vocab_freq, ACCUMULATE, range_fn=_total_vocab_freq_range),
    "vocab_rarity": Metric("vocab_rarity", _vocab_rarity, SINGLE_VALUE, requires=("total_vocab_freq",)),
    "seqlen_vocab_rarity": Metric("seqlen_vocab_rarity", _seqlen_vocab_rarity, SINGLE_VALUE,
                                  requires=("total_vocab_freq",)),
})
