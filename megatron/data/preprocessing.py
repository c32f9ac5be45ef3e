"""The engine of ``tools/preprocess_data.py``: jsonl lines -> token ids -> MMIDIDX ``.bin``/``.idx`` files.

The main process reads the input as bytes, groups lines into chunks and hands them, in order, to encoder
workers (a ``multiprocessing`` pool; with one worker, the main process itself).  A worker decodes each line
strictly (UTF-8, one JSON object, string values under every ``--json-keys`` key), optionally splits the
text into sentences, encodes the whole chunk with the tokenizer's batch path, and returns flat numpy
arrays.  The main process appends them to one atomic builder per key; nothing is published unless the
whole input was processed.

Rules: blank lines are skipped (and counted); a document (or sentence) with no tokens is skipped, as
Megatron does, and counted; with ``append_eod`` the EOD id is appended to the last item of each document.
"""
from __future__ import annotations

import contextlib
import gzip
import itertools
import json
import multiprocessing
import os
import re
import signal
import threading
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np
from tqdm import tqdm

from megatron.data.indexed_dataset import (MMapIndexedDatasetBuilder, best_fitting_dtype, data_file_path, index_file_path,
                                          remove_stale_temp_files)
from megatron.data.sentence_splitter import split_sentences
from megatron.tokenizer import AbstractTokenizer, build_tokenizer

_BOM = b"\xef\xbb\xbf"
_SURROGATE = re.compile("[\ud800-\udfff]")


class BadInputError(ValueError):
    """The input file is unreadable or a line is bad; the message is ``<file>:<line>: <what>``."""

    def __init__(self, message: str, what: str | None = None) -> None:
        super().__init__(message)
        self.what = what if what is not None else message


def _bad(where: str, what: str) -> BadInputError:
    return BadInputError(f"{where}: {what}", what)


@dataclass(frozen=True)
class PreprocessOptions:
    """Everything a worker needs to encode a chunk (picklable)."""

    input_name: str
    """Input path as shown in error messages."""
    json_keys: tuple[str, ...] = ("text",)
    """JSON keys to tokenize; one output dataset per key (``--json-keys``)."""
    tokenizer_type: str = "GPT2BPETokenizer"
    """``--tokenizer-type``."""
    vocab_file: str | None = None
    """``--vocab-file``."""
    merge_file: str | None = None
    """``--merge-file``."""
    tokenizer_model: str | None = None
    """``--tokenizer-model``."""
    vocab_extra_ids: int = 0
    """``--vocab-extra-ids``."""
    make_vocab_size_divisible_by: int = 128
    """``--make-vocab-size-divisible-by``."""
    split_sentences: bool = False
    """One item per sentence instead of one per document (``--split-sentences``)."""
    keep_newlines: bool = False
    """Keep newlines in sentence text (``--keep-newlines``; see megatron.data.sentence_splitter)."""
    append_eod: bool = False
    """Append the EOD id to each document (``--append-eod``)."""
    skip_bad_lines: bool = False
    """Count and skip bad lines instead of stopping (``--skip-bad-lines``)."""

    def build_tokenizer(self) -> AbstractTokenizer:
        """Build the tokenizer these options name."""
        return build_tokenizer(
            self.tokenizer_type, vocab_file=self.vocab_file, merge_file=self.merge_file,
            tokenizer_model=self.tokenizer_model, vocab_extra_ids=self.vocab_extra_ids,
            make_vocab_size_divisible_by=self.make_vocab_size_divisible_by,
        )


@dataclass
class KeyArrays:
    """Encoded documents of one JSON key in one chunk."""

    tokens: np.ndarray
    """All token ids, flat, in the output dtype."""
    sizes: np.ndarray
    """Tokens per item (int64)."""
    items_per_doc: np.ndarray
    """Items per non-empty document (int64)."""
    empty_docs: int = 0
    """Documents skipped because they had no tokens."""


@dataclass
class ChunkResult:
    """What a worker returns for one chunk of lines."""

    keys: dict[str, KeyArrays]
    docs: int = 0
    blank_lines: int = 0
    nbytes: int = 0
    bad_lines: list[tuple[int, str]] = field(default_factory=list)
    """(line number, problem) of skipped lines."""
    error: str | None = None
    """``<file>:<line>: <what>`` of the first bad line (strict mode); the chunk is then incomplete."""


class ChunkEncoder:
    """Decodes, validates, splits and tokenizes chunks of raw jsonl lines."""

    def __init__(self, options: PreprocessOptions, tokenizer: AbstractTokenizer | None = None) -> None:
        self.options = options
        self.tokenizer = tokenizer if tokenizer is not None else options.build_tokenizer()
        self.dtype = best_fitting_dtype(self.tokenizer.vocab_size)
        self.eod = self.tokenizer.eod if options.append_eod else None

    def parse_line(self, lineno: int, raw: bytes) -> dict[str, str] | None:
        """The key -> text of one line, or None for a blank line; raises BadInputError with file:line."""
        where = f"{self.options.input_name}:{lineno}"
        if lineno == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM):]
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise _bad(where, f"invalid UTF-8 at byte offset {e.start} of the line ({e.reason})") from None
        if not line.strip():
            return None
        try:
            record = json.loads(line.rstrip("\r\n"))
        except json.JSONDecodeError as e:
            raise _bad(where, f"malformed JSON: {e.msg} (column {e.colno})") from None
        except RecursionError:
            raise _bad(where, "malformed JSON: nested too deeply") from None
        if not isinstance(record, dict):
            raise _bad(where, f"expected a JSON object, got {type(record).__name__}")
        texts = {}
        for key in self.options.json_keys:
            if key not in record:
                have = ", ".join(repr(k) for k in list(record)[:10])
                raise _bad(where, f"missing key {key!r} (the object has: {have or 'no keys'})")
            value = record[key]
            if not isinstance(value, str):
                raise _bad(where, f"key {key!r} holds a {type(value).__name__}, expected a string")
            if b"\\u" in raw and _SURROGATE.search(value):
                raise _bad(where, f"key {key!r} contains an unpaired surrogate escape (not valid Unicode)")
            texts[key] = value
        return texts

    def encode(self, first_lineno: int, lines: list[bytes]) -> ChunkResult:
        """Encode one chunk whose first line has number ``first_lineno`` (1-based)."""
        result = ChunkResult(keys={})
        records: list[dict[str, str]] = []
        record_lines: list[int] = []
        for k, raw in enumerate(lines):
            lineno = first_lineno + k
            result.nbytes += len(raw)
            try:
                record = self.parse_line(lineno, raw)
            except BadInputError as e:
                if not self.options.skip_bad_lines:
                    result.error = str(e)
                    break
                result.bad_lines.append((lineno, e.what))
                continue
            if record is None:
                result.blank_lines += 1
                continue
            records.append(record)
            record_lines.append(lineno)
        result.docs = len(records)
        if result.error is None:
            for key in self.options.json_keys:
                result.keys[key] = self._encode_key([r[key] for r in records], record_lines)
        return result

    def _encode_key(self, docs: list[str], doc_lines: list[int]) -> KeyArrays:
        if self.options.split_sentences:
            per_doc = [split_sentences(d, keep_newlines=self.options.keep_newlines) for d in docs]
            texts = list(itertools.chain.from_iterable(per_doc))
            counts = [len(s) for s in per_doc]
        else:
            texts, counts = docs, [1] * len(docs)
        ids = self.tokenizer.tokenize_batch(texts) if texts else []
        # drop empty items, count items per document, append EOD to each document's last item
        kept_per_doc: list[int] = []
        kept: list[list[int]] = []
        kept_doc: list[int] = []
        pos = 0
        for d, n in enumerate(counts):
            doc_items = [x for x in ids[pos:pos + n] if len(x)]
            pos += n
            if doc_items:
                if self.eod is not None:
                    doc_items[-1] = list(doc_items[-1]) + [self.eod]
                kept.extend(doc_items)
                kept_doc.extend([d] * len(doc_items))
                kept_per_doc.append(len(doc_items))
        sizes = np.fromiter((len(x) for x in kept), dtype=np.int64, count=len(kept))
        flat = np.fromiter(itertools.chain.from_iterable(kept), dtype=np.int64, count=int(sizes.sum()))
        if flat.size:
            info = np.iinfo(self.dtype)
            lo, hi = int(flat.min()), int(flat.max())
            if lo < info.min or hi > info.max:
                bad_pos = int(np.argmax((flat < info.min) | (flat > info.max)))
                item = int(np.searchsorted(np.cumsum(sizes), bad_pos, side="right"))
                lineno = doc_lines[kept_doc[item]]
                raise BadInputError(
                    f"{self.options.input_name}:{lineno}: token id {int(flat[bad_pos])} does not fit the output dtype "
                    f"{self.dtype} (tokenizer vocab_size {self.tokenizer.vocab_size})"
                )
        return KeyArrays(
            tokens=flat.astype(self.dtype),
            sizes=sizes,
            items_per_doc=np.asarray(kept_per_doc, dtype=np.int64),
            empty_docs=len(docs) - len(kept_per_doc),
        )


# ---------------------------------------------------------------------------------- worker pool

_WORKER: ChunkEncoder | None = None


def _init_worker(options: PreprocessOptions) -> None:
    """Pool initializer: one tokenizer per worker process, single-threaded engine (the pool parallelises)."""
    global _WORKER
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is handled by the main process, which ends the pool
    # The CLI's SIGTERM handler (cleanup of partial outputs) must not be inherited: the pool stops its
    # workers with SIGTERM, and a worker that survives it leaves the parent waiting forever.
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _WORKER = ChunkEncoder(options)


def _encode_in_worker(chunk: tuple[int, list[bytes]]) -> ChunkResult:
    assert _WORKER is not None, "pool initializer did not run"
    return _WORKER.encode(*chunk)


# ---------------------------------------------------------------------------------- reading


class _Reader:
    """Yields (first line number, lines) chunks of an uncompressed or gzip input; tracks the raw position."""

    def __init__(self, path: str, chunk_size: int) -> None:
        self.path, self.chunk_size = path, chunk_size
        self.raw = open(path, "rb")
        gzipped = self.raw.read(2) == b"\x1f\x8b"
        self.raw.seek(0)
        self.stream = gzip.GzipFile(fileobj=self.raw, mode="rb") if gzipped else self.raw
        self.positions: deque[int] = deque()

    def chunks(self, in_flight: threading.Semaphore | None = None,
               stop: threading.Event | None = None) -> Iterator[tuple[int, list[bytes]]]:
        """Chunks of ``chunk_size`` lines; waits on ``in_flight`` before reading each one (back-pressure)
        and ends early once ``stop`` is set."""
        lineno = 1
        while True:
            if in_flight is not None:
                while not in_flight.acquire(timeout=0.1):
                    if stop is not None and stop.is_set():
                        return
            try:
                lines = list(itertools.islice(self.stream, self.chunk_size))
            except (OSError, EOFError, zlib.error) as e:
                raise BadInputError(f"{self.path}: cannot read input near line {lineno}: {e}") from None
            if not lines:
                return
            self.positions.append(self.raw.tell())
            yield lineno, lines
            lineno += len(lines)

    def close(self) -> None:
        """Close the files."""
        if self.stream is not self.raw:
            self.stream.close()
        self.raw.close()


# ---------------------------------------------------------------------------------- driver


@contextlib.contextmanager
def _single_threaded_engine() -> Iterator[None]:
    """Set TOKENIZERS_PARALLELISM=false for the duration (unless the user set it): one worker = one core."""
    if "TOKENIZERS_PARALLELISM" in os.environ:
        yield
        return
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        yield
    finally:
        os.environ.pop("TOKENIZERS_PARALLELISM", None)


@dataclass
class PreprocessSummary:
    """Counts and timing of one preprocessing run."""

    outputs: dict[str, str]
    """JSON key -> output prefix."""
    docs: int = 0
    blank_lines: int = 0
    bad_lines: int = 0
    first_bad: list[tuple[int, str]] = field(default_factory=list)
    empty_docs: dict[str, int] = field(default_factory=dict)
    items: dict[str, int] = field(default_factory=dict)
    tokens: dict[str, int] = field(default_factory=dict)
    nbytes: int = 0
    seconds: float = 0.0

    def line(self) -> str:
        """The one-line summary: docs, items, tokens, MB, seconds, MB/s, tokens/s."""
        tokens, mb, sec = sum(self.tokens.values()), self.nbytes / 1e6, max(self.seconds, 1e-9)
        return (
            f"docs={self.docs} empty_docs_skipped={sum(self.empty_docs.values())} bad_lines_skipped={self.bad_lines} "
            f"blank_lines={self.blank_lines} items={sum(self.items.values())} tokens={tokens} MB={mb:.2f} "
            f"seconds={self.seconds:.2f} MB/s={mb / sec:.2f} tokens/s={tokens / sec:.0f}"
        )


def output_prefix_for(output_prefix: str, key: str, split_sentences: bool) -> str:
    """Megatron's output naming: ``{prefix}_{key}_{document|sentence}``."""
    return f"{output_prefix}_{key}_{'sentence' if split_sentences else 'document'}"


def preprocess(options: PreprocessOptions, input_path: str, output_prefix: str, workers: int = 1,
               chunk_size: int = 25, log_interval: int = 100, progress: bool = True) -> PreprocessSummary:
    """Tokenize ``input_path`` into one ``.bin``/``.idx`` per JSON key; raises BadInputError on bad input."""
    start = time.perf_counter()
    tokenizer = options.build_tokenizer()
    main_encoder = ChunkEncoder(options, tokenizer)
    outputs = {k: output_prefix_for(output_prefix, k, options.split_sentences) for k in options.json_keys}
    summary = PreprocessSummary(outputs=outputs, empty_docs=dict.fromkeys(outputs, 0),
                                items=dict.fromkeys(outputs, 0), tokens=dict.fromkeys(outputs, 0))
    out_dir = os.path.dirname(os.path.abspath(output_prefix))
    os.makedirs(out_dir, exist_ok=True)
    if not os.path.isfile(input_path):
        raise BadInputError(f"--input {input_path}: file not found")
    total_bytes = os.path.getsize(input_path)
    remove_stale_temp_files(path for p in outputs.values() for path in (data_file_path(p), index_file_path(p)))
    with contextlib.ExitStack() as stack:
        reader = _Reader(input_path, chunk_size)
        stack.callback(reader.close)
        builders = {
            k: stack.enter_context(MMapIndexedDatasetBuilder(data_file_path(p), dtype=main_encoder.dtype))
            for k, p in outputs.items()
        }
        if workers > 1:
            in_flight, stop = threading.Semaphore(4 * workers), threading.Event()
            pool = stack.enter_context(multiprocessing.get_context("fork").Pool(workers, _init_worker, (options,)))
            stack.callback(stop.set)  # runs before the pool is terminated: unblocks the feeding thread
            results: Iterator[ChunkResult] = pool.imap(_encode_in_worker, reader.chunks(in_flight, stop))
        else:
            in_flight = None
            stack.enter_context(_single_threaded_engine())
            results = (main_encoder.encode(*c) for c in reader.chunks())
        bar = stack.enter_context(tqdm(total=total_bytes, unit="B", unit_scale=True, desc="preprocess",
                                       disable=not progress, dynamic_ncols=True))
        shown_pos, last_docs = 0, 0
        for res in results:
            if in_flight is not None:
                in_flight.release()
            pos = reader.positions.popleft()
            if res.error is not None:
                raise BadInputError(res.error)
            for (lineno, what) in res.bad_lines:
                summary.bad_lines += 1
                if len(summary.first_bad) < 5:
                    summary.first_bad.append((lineno, what))
            for k, arrays in res.keys.items():
                builders[k].add_docs(arrays.tokens, arrays.sizes, arrays.items_per_doc)
                summary.empty_docs[k] += arrays.empty_docs
                summary.items[k] += int(arrays.sizes.size)
                summary.tokens[k] += int(arrays.tokens.size)
            summary.docs += res.docs
            summary.blank_lines += res.blank_lines
            summary.nbytes += res.nbytes
            if summary.docs - last_docs >= log_interval:
                last_docs = summary.docs
                elapsed = max(time.perf_counter() - start, 1e-9)
                bar.update(pos - shown_pos)
                shown_pos = pos
                bar.set_postfix_str(f"{summary.docs / elapsed:.0f} docs/s, {summary.nbytes / 1e6 / elapsed:.2f} MB/s",
                                    refresh=False)
        bar.update(total_bytes - shown_pos)
        if summary.docs == 0:  # raised before finalize: no empty dataset is published
            what = "is empty" if total_bytes == 0 else (
                f"holds no document ({summary.blank_lines} blank line(s), {summary.bad_lines} bad line(s) skipped)")
            raise BadInputError(f"--input {input_path}: the file {what}; nothing to tokenize")
        for k, p in outputs.items():
            builders[k].finalize(index_file_path(p))
    summary.seconds = time.perf_counter() - start
    return summary
