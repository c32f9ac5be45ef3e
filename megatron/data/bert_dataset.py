"""BERT dataset with Megatron semantics over sentence-level MMIDIDX data (``preprocess_data.py --split-sentences``).

Samples mapping: for every document of the split and every epoch, consecutive sentences are grouped
into samples of about ``target = max_seq_length - 3`` tokens (with probability ``short_seq_prob`` a
shorter random target in [2, target]). A sample closes once it reaches its target, holds at least
``min_sentences`` (2 with the binary head) sentences and at least two sentences remain in the document;
otherwise it runs to the document end. Documents with fewer than ``min_sentences`` sentences, or with
more than one sentence and one longer than 512 tokens, are skipped (Megatron's rules). Rows
``(start_sentence, end_sentence_exclusive, target)`` of all epochs are shuffled. The grouping is
vectorised: one searchsorted per "k-th sample of every document" step.

``__getitem__`` (``np.random.RandomState(seed + idx)``): A/B split at a random sentence,
sentence-order prediction (swap with p=0.5 → is_random=1), truncation from the longer side at a random
end, ``[CLS] A [SEP] B [SEP]``, masked LM, padding to max_seq_length.

Masked LM, ``masking_style``:
* ``"whole-word"`` (default, Megatron's BERT masking): a word is a word-start token plus the continuation
  pieces after it (``word_start`` table; WordPiece: pieces not starting with "##"); a word never crosses
  [CLS]/[SEP]. Budget ``min(round(p * max_seq_length), max(1, round(p * n_tokens)))`` with n_tokens
  counting the specials. Words are visited in a random order; from each, an n-gram of 1..3 words is drawn
  with P(n) ∝ 1/n, shrunk while it overshoots the budget, and skipped when it overlaps masked tokens.
* ``"token"``: ``max(1, round(p * non-special positions))`` single positions drawn uniformly (the original
  per-token rule, same random stream).
N-grams may run across the [SEP] between A and B (as in Megatron); [CLS]/[SEP]/padding are never masked.
Either way each chosen position independently becomes [MASK] (80 %), a random token (10 %) or stays (10 %).
"""
from __future__ import annotations

import logging
import time
from typing import Any, Mapping, Sequence

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

LONG_SENTENCE_LEN = 512  # a document with a longer sentence is skipped (when it has more than one)
MASKING_STYLES = ("whole-word", "token")
MAX_NGRAMS = 3  # whole-word masking draws spans of 1..MAX_NGRAMS words
_SPLIT_NAMES = ("train", "valid", "test")


# ----------------------------------------------------------------------------------------------
# Samples mapping (pure numpy)
# ----------------------------------------------------------------------------------------------


def _epoch_rows(
    doc_starts: np.ndarray,
    doc_ends: np.ndarray,
    cum: np.ndarray,
    base: int,
    target: int,
    short_seq_prob: float,
    min_sentences: int,
    rng: np.random.RandomState,
) -> np.ndarray:
    """Rows (start, end, target_len) of one epoch over the eligible documents [doc_starts, doc_ends)."""
    n_sent = len(cum) - 1
    short = rng.random_sample(n_sent) < short_seq_prob
    targets = np.where(short, rng.randint(min(2, target), target + 1, size=n_sent), target)
    rows = []
    starts, ends = doc_starts - base, doc_ends - base  # relative sentence indices
    while starts.size:
        t = targets[starts]
        reach = np.searchsorted(cum, cum[starts] + t, side="left") - 1  # first e with tokens[s..e] >= t
        close = np.maximum(reach, starts + min_sentences - 1)
        last = np.where(close <= ends - 3, close, ends - 1)  # leave >= 2 sentences, else take the rest
        rows.append(np.stack([starts, last + 1, t], axis=1))
        keep = last + 1 < ends
        starts, ends = last[keep] + 1, ends[keep]
    if not rows:
        return np.empty((0, 3), dtype=np.int64)
    out = np.concatenate(rows)
    out = out[np.argsort(out[:, 0], kind="stable")]
    out[:, :2] += base
    return out


def build_samples_mapping(
    doc_idx: np.ndarray,
    sizes: np.ndarray,
    num_epochs: int | None,
    max_num_samples: int | None,
    max_seq_length: int,
    short_seq_prob: float,
    seed: int,
    min_sentences: int,
) -> np.ndarray:
    """[N, 3] rows (start, end, target_len) over whole epochs until >= max_num_samples (or exactly num_epochs)."""
    doc_idx = np.asarray(doc_idx, dtype=np.int64)
    base, stop = int(doc_idx[0]), int(doc_idx[-1])
    lengths = np.asarray(sizes[base:stop], dtype=np.int64)
    cum = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=cum[1:])
    long_cum = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths > LONG_SENTENCE_LEN, out=long_cum[1:])
    starts, ends = doc_idx[:-1], doc_idx[1:]
    n = ends - starts
    has_long = (long_cum[ends - base] - long_cum[starts - base]) > 0
    eligible = (n >= min_sentences) & ~((n > 1) & has_long)
    starts, ends = starts[eligible], ends[eligible]
    if starts.size == 0:
        raise DatasetError(
            f"no document has >= {min_sentences} sentence(s) of <= {LONG_SENTENCE_LEN} tokens "
            "(BERT needs sentence-level data: preprocess with --split-sentences)"
        )
    rng = np.random.RandomState(seed=seed % 2**32)
    limit = np.iinfo(np.int64).max if not max_num_samples else int(max_num_samples)
    epochs = num_epochs if num_epochs else np.iinfo(np.int32).max
    parts, total, epoch = [], 0, 0
    bar = tqdm(desc="BERT samples mapping", unit="epoch", total=num_epochs or None, disable=len(lengths) < 1_000_000, leave=False)
    while epoch < epochs and total < limit:
        rows = _epoch_rows(starts, ends, cum, base, max_seq_length, short_seq_prob, min_sentences, rng)
        parts.append(rows)
        total += len(rows)
        epoch += 1
        bar.update()
    bar.close()
    mapping = np.concatenate(parts)
    dtype = np.uint32 if stop < np.iinfo(np.uint32).max else np.uint64
    mapping = mapping.astype(dtype)
    np.random.RandomState(seed=(seed + 1) % 2**32).shuffle(mapping)
    logger.info("BERT samples mapping: %d samples from %d epoch(s)", len(mapping), epoch)
    return mapping


def samples_mapping_filename(
    map_prefix: str, name: str, max_num_samples: int, max_seq_length: int, short_seq_prob: float, seed: int,
    exact_epochs: int | None = None, binary_head: bool = True,
) -> str:
    """Megatron's name ``{prefix}_{name}_indexmap_{N}mns|exact{E}ep_{L-3}msl_{p:0.2f}ssp_{seed}s.npy``.

    Without the binary head samples may hold one sentence, a different mapping: its name ends in ``_1sent``
    (Megatron's name omits it, so the two mappings would overwrite each other's cache).
    """
    budget = f"exact{exact_epochs}ep" if exact_epochs is not None else f"{max_num_samples}mns"
    single = "" if binary_head else "_1sent"
    return (f"{map_prefix}_{name}_indexmap_{budget}_{max_seq_length - 3}msl_{short_seq_prob:0.2f}ssp_{seed}s"
            f"{single}.npy")


def _validate_mapping(mapping: np.ndarray, first: int, stop: int, target: int, min_rows: int) -> str | None:
    """None when the samples mapping fits the split's sentences [first, stop), else the reason."""
    if mapping.ndim != 2 or mapping.shape[1] != 3 or not np.issubdtype(mapping.dtype, np.integer):
        return f"shape {mapping.shape} dtype {mapping.dtype}, expected an integer [N, 3] array"
    if mapping.shape[0] < min_rows:
        return f"{mapping.shape[0]} samples, expected at least {min_rows}"
    probe = strided_view(mapping).astype(np.int64)
    if probe.size and (
        probe[:, 0].min() < first or probe[:, 1].max() > stop or (probe[:, 1] <= probe[:, 0]).any()
        or probe[:, 2].min() < 1 or probe[:, 2].max() > target
    ):
        return f"rows outside the split's sentences [{first}, {stop}) or targets outside [1, {target}]"
    return None


# ----------------------------------------------------------------------------------------------
# Training sample
# ----------------------------------------------------------------------------------------------


def trimmed_lengths(len_a: int, len_b: int, max_tokens: int) -> tuple[int, int]:
    """Lengths after removing tokens one at a time from the longer segment (B on ties) until they fit."""
    excess = len_a + len_b - max_tokens
    if excess <= 0:
        return len_a, len_b
    gap = abs(len_a - len_b)
    if excess <= gap:
        return (len_a - excess, len_b) if len_a > len_b else (len_a, len_b - excess)
    rest = excess - gap
    common = min(len_a, len_b)
    return common - rest // 2, common - (rest + 1) // 2


def _trim(tokens: np.ndarray, remove: int, rng: np.random.RandomState) -> np.ndarray:
    """Drop ``remove`` tokens, each from the front or the back with probability 1/2."""
    if remove <= 0:
        return tokens
    front = int((rng.random_sample(remove) < 0.5).sum())
    return tokens[front : len(tokens) - (remove - front)]


def check_masking_style(masking_style: str) -> None:
    """Raise DatasetError unless ``masking_style`` is one of MASKING_STYLES."""
    if masking_style not in MASKING_STYLES:
        raise DatasetError(f"masking_style {masking_style!r}: expected one of {', '.join(map(repr, MASKING_STYLES))}")


def word_start_table(vocab: Any, size: int | None = None) -> np.ndarray:
    """Bool [size] table over token ids: True where the token starts a word (WordPiece: not a "##" piece).

    ``vocab`` is a token -> id mapping or a tokenizer exposing ``.vocab`` (token -> id) or ``.inv_vocab``
    (id -> token). ``size`` defaults to the largest id + 1; ids missing from the vocabulary (e.g. padding
    up to the padded vocab size) count as word starts.
    """
    if isinstance(vocab, Mapping):
        pairs = list(vocab.items())
    elif isinstance(getattr(vocab, "vocab", None), Mapping):
        pairs = list(vocab.vocab.items())
    elif isinstance(getattr(vocab, "inv_vocab", None), Mapping):
        pairs = [(token, i) for i, token in vocab.inv_vocab.items()]
    else:
        raise DatasetError(f"word_start_table: expected a token -> id mapping or a tokenizer with .vocab / "
                           f".inv_vocab, got {type(vocab).__name__}")
    if not pairs:
        raise DatasetError("word_start_table: empty vocabulary")
    top = max(int(i) for _, i in pairs) + 1
    if size is None:
        size = top
    elif size < top:
        raise DatasetError(f"word_start_table: size {size} is smaller than the vocabulary (largest id {top - 1})")
    table = np.ones(int(size), dtype=bool)
    table[[int(i) for token, i in pairs if str(token).startswith("##")]] = False
    return table


def word_bounds(tokens: np.ndarray, candidates: np.ndarray, word_start: np.ndarray | None) -> np.ndarray:
    """Offsets into ``candidates`` where each word starts, then ``len(candidates)`` ([n_words + 1]).

    A word is a word-start token plus its continuation tokens; the first position after [CLS]/[SEP]
    always starts one (a segment cut in the middle of a word begins with an orphan continuation word).
    """
    starts = np.ones(len(candidates), dtype=bool)
    if word_start is not None and len(candidates):
        starts = word_start[tokens[candidates]].copy()
        starts[0] = True
        starts[1:] |= np.diff(candidates) != 1
    return np.append(np.flatnonzero(starts), len(candidates))


def choose_whole_word_ngrams(
    bounds: np.ndarray, budget: int, rng: np.random.RandomState, max_ngrams: int = MAX_NGRAMS,
) -> list[tuple[int, int]]:
    """(first_word, n_words) spans to mask, in choice order, covering at most ``budget`` tokens in total.

    Start words are visited in a random order. For each, n is drawn from 1..min(max_ngrams, words left)
    with P(n) ∝ 1/n, lowered while the span would exceed the budget (the word is skipped when even one
    word does), and the span is skipped when it overlaps an earlier one.
    """
    n_words = len(bounds) - 1
    weights = 1.0 / np.arange(1, max_ngrams + 1)
    cum = [None] + [np.cumsum(weights[:k]) / weights[:k].sum() for k in range(1, max_ngrams + 1)]
    covered = np.zeros(int(bounds[-1]), dtype=bool)
    chosen: list[tuple[int, int]] = []
    count = 0
    for w in rng.permutation(n_words):
        if count >= budget:
            break
        k = min(max_ngrams, n_words - w)
        n = min(k, int(np.searchsorted(cum[k], rng.random_sample(), side="right")) + 1)
        while n > 0 and count + bounds[w + n] - bounds[w] > budget:
            n -= 1
        if n == 0:
            continue
        lo, hi = bounds[w], bounds[w + n]
        if covered[lo:hi].any():
            continue
        covered[lo:hi] = True
        count += int(hi - lo)
        chosen.append((int(w), n))
    return chosen


def _mask_positions(
    tokens: np.ndarray, candidates: np.ndarray, max_seq_length: int, masked_lm_prob: float,
    masking_style: str, word_start: np.ndarray | None, rng: np.random.RandomState,
) -> np.ndarray:
    """Sorted positions of ``tokens`` to predict (the style's selection rule; see the module docstring)."""
    if masking_style == "token":
        num = min(candidates.size, max(1, int(round(candidates.size * masked_lm_prob))))
        return np.sort(rng.choice(candidates, size=num, replace=False))
    budget = min(int(round(masked_lm_prob * max_seq_length)), max(1, int(round(len(tokens) * masked_lm_prob))))
    if budget <= 0:
        return np.empty(0, dtype=np.int64)
    if word_start is not None:
        top = int(tokens[candidates].max())
        if top >= len(word_start):
            raise DatasetError(f"token id {top} is outside word_start (a table over {len(word_start)} ids); "
                               "build it with word_start_table(vocab, size) over the data's vocabulary")
    bounds = word_bounds(tokens, candidates, word_start)
    spans = choose_whole_word_ngrams(bounds, budget, rng)
    if not spans:
        return np.empty(0, dtype=np.int64)
    picked = np.concatenate([candidates[bounds[w] : bounds[w + n]] for w, n in spans])
    return np.sort(picked)


def build_training_sample(
    sentences: Sequence[np.ndarray],
    target_seq_length: int,
    max_seq_length: int,
    *,
    cls_id: int,
    sep_id: int,
    mask_id: int,
    pad_id: int,
    vocab_size: int,
    vocab_ids: np.ndarray | None,
    masked_lm_prob: float,
    binary_head: bool,
    rng: np.random.RandomState,
    masking_style: str = "whole-word",
    word_start: np.ndarray | None = None,
) -> dict[str, Any]:
    """One BERT sample (Megatron keys) from the sentences of a samples-mapping row.

    ``word_start``: bool table over token ids (see ``word_start_table``); None = every token starts a word.
    """
    check_masking_style(masking_style)
    if binary_head:
        n = len(sentences)
        if n < 2:
            raise DatasetError("a BERT sample with the binary head needs at least two sentences")
        a_end = 1 if n < 3 else int(rng.randint(1, n))
        a, b = np.concatenate(sentences[:a_end]), np.concatenate(sentences[a_end:])
        is_random = bool(rng.random_sample() < 0.5)
        if is_random:
            a, b = b, a
    else:
        a, b, is_random = np.concatenate(list(sentences)), np.empty(0, dtype=np.int64), False
    a, b = a.astype(np.int64), b.astype(np.int64)
    fa, fb = trimmed_lengths(len(a), len(b), target_seq_length)
    truncated = fa + fb < len(a) + len(b)
    a, b = _trim(a, len(a) - fa, rng), _trim(b, len(b) - fb, rng)
    la, lb = len(a), len(b)
    parts = [[cls_id], a, [sep_id]] + ([b, [sep_id]] if lb else [])
    tokens = np.concatenate([np.asarray(p, dtype=np.int64) for p in parts])
    n_tok = len(tokens)
    types = np.zeros(n_tok, dtype=np.int64)
    types[la + 2 :] = 1
    labels = np.full(max_seq_length, -1, dtype=np.int64)
    loss_mask = np.zeros(max_seq_length, dtype=np.int64)
    candidates = np.concatenate([np.arange(1, 1 + la), np.arange(la + 2, la + 2 + lb)])
    if masked_lm_prob > 0 and candidates.size:
        pos = _mask_positions(tokens, candidates, max_seq_length, masked_lm_prob, masking_style, word_start, rng)
        num = len(pos)
        if masking_style == "token":  # one draw decides [MASK] / random / unchanged (the original stream)
            u = rng.random_sample(num)
            replace = np.where(u < 0.8, 0, np.where(u < 0.9, 1, 2))
        else:  # Megatron's two-step decision: [MASK] with 0.8, else unchanged or random with 0.5 each
            u, v = rng.random_sample(num), rng.random_sample(num)
            replace = np.where(u < 0.8, 0, np.where(v < 0.5, 2, 1))
        random_tokens = rng.randint(0, vocab_size, size=num) if vocab_ids is None else vocab_ids[rng.randint(0, len(vocab_ids), size=num)]
        labels[pos] = tokens[pos]
        loss_mask[pos] = 1
        tokens[pos] = np.select([replace == 0, replace == 1], [mask_id, random_tokens], tokens[pos])
    text = np.full(max_seq_length, pad_id, dtype=np.int64)
    text[:n_tok] = tokens
    padded_types = np.zeros(max_seq_length, dtype=np.int64)
    padded_types[:n_tok] = types
    padding_mask = np.zeros(max_seq_length, dtype=np.int64)
    padding_mask[:n_tok] = 1
    return {
        "text": text,
        "types": padded_types,
        "labels": labels,
        "is_random": np.int64(is_random),
        "loss_mask": loss_mask,
        "padding_mask": padding_mask,
        "truncated": np.int64(truncated),
    }


# ----------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------


def _as_word_start(word_start: Any, vocab_size: int) -> np.ndarray | None:
    """``word_start`` as a 1-D bool array covering the vocabulary (None stays None)."""
    if word_start is None:
        return None
    table = np.asarray(word_start)
    if table.ndim != 1 or table.dtype != np.bool_:
        raise DatasetError(f"word_start: expected a 1-D bool array over the vocabulary, got shape {table.shape} "
                           f"dtype {table.dtype} (build it with word_start_table)")
    if len(table) < vocab_size:
        raise DatasetError(f"word_start covers {len(table)} token ids, fewer than vocab_size {vocab_size}")
    return table


class BertDataset(torch.utils.data.Dataset):
    """BERT pretraining samples (text, types, labels, is_random, loss_mask, padding_mask, truncated[, index])."""

    def __init__(
        self,
        name: str,
        indexed_dataset: Any,
        data_prefix: str,
        documents: tuple[int, int],
        max_num_samples: int,
        max_seq_length: int,
        *,
        cls_id: int,
        sep_id: int,
        mask_id: int,
        pad_id: int,
        vocab_size: int,
        vocab_ids: Sequence[int] | None = None,
        masked_lm_prob: float = 0.15,
        short_seq_prob: float = 0.1,
        seed: int = 1234,
        binary_head: bool = True,
        train_data_exact_num_epochs: int | None = None,
        train_idx_path: str | None = None,
        return_data_index: bool = False,
        index_cache_dir: str | None = None,
        masking_style: str = "whole-word",
        word_start: np.ndarray | None = None,
    ) -> None:
        check_masking_style(masking_style)
        if max_seq_length < 4:
            raise DatasetError(f"--seq-length {max_seq_length}: BERT needs at least 4 (3 special tokens)")
        if not 0.0 <= masked_lm_prob <= 1.0 or not 0.0 <= short_seq_prob <= 1.0:
            raise DatasetError(f"--mask-prob {masked_lm_prob} and --short-seq-prob {short_seq_prob} must be in [0, 1]")
        self.name, self.data_prefix, self.indexed_dataset = name, data_prefix, indexed_dataset
        self.max_seq_length, self.seed = max_seq_length, seed
        self.masked_lm_prob, self.binary_head, self.return_data_index = masked_lm_prob, binary_head, return_data_index
        self.ids = dict(cls_id=cls_id, sep_id=sep_id, mask_id=mask_id, pad_id=pad_id, vocab_size=vocab_size)
        self.vocab_ids = None if vocab_ids is None else np.asarray(vocab_ids, dtype=np.int64)
        self.masking_style, self.word_start = masking_style, _as_word_start(word_start, vocab_size)
        doc_idx = np.asarray(indexed_dataset.doc_idx[documents[0] : documents[1] + 1], dtype=np.int64)
        target = max_seq_length - 3
        exact = train_data_exact_num_epochs if name == "train" else None
        path = samples_mapping_filename(
            index_map_prefix(data_prefix, index_cache_dir), name, max_num_samples, max_seq_length,
            short_seq_prob, seed, exact, binary_head,
        )
        pinned = {}
        if name == "train" and train_idx_path is not None:
            path, pinned = train_idx_path, {"mapping": "--train-idx-path"}

        def build() -> dict[str, np.ndarray]:
            start = time.time()
            try:
                mapping = build_samples_mapping(
                    doc_idx, indexed_dataset.sizes, exact, None if exact else max(1, max_num_samples), target,
                    short_seq_prob, seed, 2 if binary_head else 1,
                )
            except DatasetError as exc:  # name the data file and split: the mapping itself knows neither
                raise DatasetError(f"{data_prefix} ({name} split, documents {documents[0]}..{documents[1] - 1}): "
                                   f"{exc}") from None
            logger.info("%s samples mapping for %s built in %.2f s", name, data_prefix, time.time() - start)
            return {"mapping": mapping}

        min_rows = 1 if (exact or pinned) else max(1, max_num_samples)
        self.samples_mapping = load_or_build_index_maps(
            {"mapping": path}, build,
            lambda a: _validate_mapping(a["mapping"], int(doc_idx[0]), int(doc_idx[-1]), target, min_rows),
            pinned=pinned,
        )["mapping"]

    def __len__(self) -> int:
        return self.samples_mapping.shape[0]

    def __getitem__(self, idx: int) -> dict[str, Any]:
        idx = int(idx)
        if not 0 <= idx < len(self):
            raise IndexError(f"{self.name} sample {idx} out of range [0, {len(self)})")
        start, end, target = (int(v) for v in self.samples_mapping[idx])
        sentences = self.indexed_dataset[start:end]
        rng = np.random.RandomState(seed=(self.seed + idx) % 2**32)
        sample = build_training_sample(
            sentences, target, self.max_seq_length, vocab_ids=self.vocab_ids, masked_lm_prob=self.masked_lm_prob,
            binary_head=self.binary_head, rng=rng, masking_style=self.masking_style, word_start=self.word_start,
            **self.ids,
        )
        if self.return_data_index:
            sample["index"] = np.array([idx], dtype=np.int64)
        return sample


# ----------------------------------------------------------------------------------------------
# Builders
# ----------------------------------------------------------------------------------------------


def _build_single(
    data_prefix: str, data_impl: str, splits_string: str, nums: Sequence[int], skip_warmup: bool,
    common: dict[str, Any], train_only: dict[str, Any],
) -> tuple[Any, Any, Any]:
    """Train/valid/test BertDatasets of one prefix (split by documents; None for an empty split)."""
    indexed = make_dataset(data_prefix, data_impl, skip_warmup)
    if int(indexed.doc_idx[-1]) != indexed.sizes.shape[0]:
        raise DatasetError(f"{data_prefix}.idx: doc_idx ends at {int(indexed.doc_idx[-1])}, expected {indexed.sizes.shape[0]} sentences")
    n_docs = indexed.doc_idx.shape[0] - 1
    bounds = get_train_valid_test_split_(splits_string, n_docs)
    out = []
    for i, name in enumerate(_SPLIT_NAMES):
        logger.info("%s %s split: documents [%d, %d)", data_prefix, name, bounds[i], bounds[i + 1])
        if bounds[i + 1] <= bounds[i]:
            out.append(None)
            continue
        extra = train_only if name == "train" else {}
        out.append(BertDataset(name, indexed, data_prefix, (bounds[i], bounds[i + 1]), int(nums[i]), **common, **extra))
    return out[0], out[1], out[2]


def build_train_valid_test_datasets(
    data_prefix: list[str],
    data_impl: str,
    splits_string: str,
    train_valid_test_num_samples: list[int],
    max_seq_length: int,
    masked_lm_prob: float = 0.15,
    short_seq_prob: float = 0.1,
    seed: int = 1234,
    skip_warmup: bool = True,
    binary_head: bool = True,
    *,
    cls_id: int,
    sep_id: int,
    mask_id: int,
    pad_id: int,
    vocab_size: int,
    vocab_ids: Sequence[int] | None = None,
    train_idx_path: str | None = None,
    train_data_exact_num_epochs: int | None = None,
    return_data_index: bool = False,
    index_cache_dir: str | None = None,
    masking_style: str = "whole-word",
    word_start: np.ndarray | None = None,
) -> tuple[Any, Any, Any]:
    """(train, valid, test) BERT datasets for ``--data-path`` (one prefix, or weight/prefix pairs → blends)."""
    check_masking_style(masking_style)
    if isinstance(data_prefix, str):
        data_prefix = [data_prefix]
    if len(train_valid_test_num_samples) != 3:
        raise DatasetError(f"expected 3 sample counts (train, valid, test), got {list(train_valid_test_num_samples)}")
    if train_data_exact_num_epochs is not None and train_data_exact_num_epochs < 1:
        raise DatasetError(f"--train-data-exact-num-epochs must be >= 1, got {train_data_exact_num_epochs}")
    common: dict[str, Any] = dict(
        max_seq_length=max_seq_length, cls_id=cls_id, sep_id=sep_id, mask_id=mask_id, pad_id=pad_id,
        vocab_size=vocab_size, vocab_ids=vocab_ids, masked_lm_prob=masked_lm_prob, short_seq_prob=short_seq_prob,
        seed=seed, binary_head=binary_head, return_data_index=return_data_index, index_cache_dir=index_cache_dir,
        masking_style=masking_style, word_start=word_start,
    )
    train_only = dict(train_data_exact_num_epochs=train_data_exact_num_epochs, train_idx_path=train_idx_path)
    if len(data_prefix) == 1:
        return _build_single(data_prefix[0], data_impl, splits_string, train_valid_test_num_samples, skip_warmup, common, train_only)
    if train_idx_path is not None:
        raise DatasetError("--train-idx-path pins ONE dataset's samples mapping; it cannot be used with a blended --data-path")
    prefixes, weights, per_dataset = get_datasets_weights_and_num_samples(data_prefix, train_valid_test_num_samples)
    splits = [_build_single(p, data_impl, splits_string, n, skip_warmup, common, train_only) for p, n in zip(prefixes, per_dataset)]
    return blend_splits(splits, weights, train_valid_test_num_samples, train_exact=train_data_exact_num_epochs is not None)
