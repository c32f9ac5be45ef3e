"""Download the Pile's 30 train chunks and tokenize them for BERT pretraining, then merge them.

    python pile_data_download_preprocess.py range 0 9            # chunks 00..09
    python pile_data_download_preprocess.py 0 3 7                # these chunks
    python pile_data_download_preprocess.py merge                # -> pile_bert_train_text_sentence.bin/.idx

Each chunk ``NN.jsonl.zst`` is fetched from ``--source`` (an http(s) base URL, downloaded to
``{output-dir}/NN.jsonl.zst``, or a local directory, read in place), decompressed as a stream (the jsonl
never touches the disk) and fed line by line to the project's preprocessing engine
(``megatron.data.preprocessing``: BertWordPieceLowerCase, sentence splitting), which writes
``{output-dir}/pile_bert_train_NN_text_sentence.bin/.idx``.  ``merge`` appends the chunks in chunk order into
``{output-dir}/pile_bert_train_text_sentence`` (``--num-chunks N`` merges only chunks 0..N-1).

Resumable: outputs are built under temporary names and renamed when complete, then a small
``*.done.json`` marker with the counts is written.  A chunk with a valid marker is skipped; anything else
of that chunk (temp files of a killed run, outputs without a marker) is deleted and the chunk redone.  A
per-chunk lock file stops two runs from working on one chunk at once.  Bad input (chunk id, source, a
corrupt ``.zst``, merging an unprocessed chunk) stops the run with one ``error: ...`` line, exit status 2.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import glob
import hashlib
import itertools
import json
import multiprocessing
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from collections import deque
from typing import Iterable, Iterator

_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir, os.pardir))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import zstandard  # noqa: E402
from tqdm import tqdm  # noqa: E402

from megatron.data.indexed_dataset import (MMapIndexedDataset, MMapIndexedDatasetBuilder,  # noqa: E402
                                           data_file_path, index_file_path)
from megatron.data.preprocessing import (BadInputError, ChunkEncoder, ChunkResult,  # noqa: E402
                                         PreprocessOptions, output_prefix_for)
from megatron.tokenizer import AbstractTokenizer  # noqa: E402

PILE_URL = "https://the-eye.eu/public/AI/pile/train/"
"""Upstream location of ``00.jsonl.zst`` .. ``29.jsonl.zst`` (the URL Megatron-DeepSpeed used; may be stale)."""
NUM_CHUNKS = 30
DEFAULT_VOCAB = os.path.join(_ROOT, "data", "tokenizers", "bert-wordpiece", "vocab.txt")
OUTPUT_NAME = "pile_bert_train"
LINES_PER_BATCH = 25             # lines handed to an encoder at a time (as tools/preprocess_data.py)
READ_BLOCK = 256 * 1024          # compressed bytes read per step
DOWNLOAD_BLOCK = 1024 * 1024
DOWNLOAD_ATTEMPTS = 5
MAX_WINDOW = 2 ** 31             # accept zstd frames made with --long


class PileError(Exception):
    """A user-facing problem; the message is printed as one ``error: ...`` line."""


# ---------------------------------------------------------------------------------- names and markers


def chunk_name(chunk: int) -> str:
    """``NN.jsonl.zst``."""
    return f"{chunk:02d}.jsonl.zst"


def chunk_prefix(output_dir: str, chunk: int) -> str:
    """Output prefix of one chunk: ``{dir}/pile_bert_train_NN_text_sentence``."""
    return output_prefix_for(os.path.join(output_dir, f"{OUTPUT_NAME}_{chunk:02d}"), "text", True)


def merged_prefix(output_dir: str) -> str:
    """Output prefix of the merged dataset: ``{dir}/pile_bert_train_text_sentence``."""
    return output_prefix_for(os.path.join(output_dir, OUTPUT_NAME), "text", True)


def marker_path(prefix: str) -> str:
    """The done-marker of an output prefix."""
    return prefix + ".done.json"


def _write_json_atomic(path: str, record: dict) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_marker(prefix: str) -> dict | None:
    """The marker of ``prefix`` if it and the ``.bin``/``.idx`` it describes are complete, else None."""
    try:
        with open(marker_path(prefix), encoding="utf-8") as f:
            record = json.load(f)
        ok = (os.path.getsize(data_file_path(prefix)) == record["bin_bytes"]
              and os.path.getsize(index_file_path(prefix)) == record["idx_bytes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return record if ok else None


def clear_outputs(prefix: str) -> list[str]:
    """Delete everything of ``prefix`` (outputs, marker, temp files of killed runs); returns what was removed."""
    paths = [marker_path(prefix), data_file_path(prefix), index_file_path(prefix)]
    paths += glob.glob(glob.escape(data_file_path(prefix)) + ".*.tmp")
    paths += glob.glob(glob.escape(index_file_path(prefix)) + ".*.tmp")
    paths += glob.glob(glob.escape(marker_path(prefix)) + ".*.tmp")
    removed = []
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            os.remove(p)
            removed.append(p)
    return removed


@contextlib.contextmanager
def locked(prefix: str, what: str) -> Iterator[None]:
    """Hold ``{prefix}.lock`` for the duration; PileError if another run holds it."""
    with open(prefix + ".lock", "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PileError(f"{what} is being processed by another run (lock {prefix}.lock is held)") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def file_sha256(path: str) -> str:
    """Hex SHA-256 of a file (the vocab, recorded in the markers)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------- command line


def parse_chunks(words: list[str], num_chunks: int) -> tuple[str, list[int]]:
    """``range A B`` / ``ID [ID ...]`` / ``merge`` -> (``"process"`` or ``"merge"``, sorted chunk ids)."""
    if not words:
        raise PileError("no chunks given: expected 'range A B', chunk ids, or 'merge'")
    if words[0] == "merge":
        if len(words) > 1:
            raise PileError(f"'merge' takes no chunk ids (got {' '.join(words[1:])}); use --num-chunks to merge "
                            "only chunks 0..N-1")
        return "merge", list(range(num_chunks))

    def chunk_id(word: str) -> int:
        try:
            value = int(word)
        except ValueError:
            raise PileError(f"chunk id {word!r} is not an integer (expected 0..{num_chunks - 1})") from None
        if not 0 <= value < num_chunks:
            raise PileError(f"chunk id {value} is out of range: the Pile has chunks 0..{num_chunks - 1}")
        return value

    if words[0] == "range":
        if len(words) != 3:
            raise PileError(f"'range' takes two chunk ids A B, got {len(words) - 1}")
        first, last = chunk_id(words[1]), chunk_id(words[2])
        if first > last:
            raise PileError(f"range {first} {last}: the first chunk id must not exceed the last")
        return "process", list(range(first, last + 1))
    return "process", sorted(set(chunk_id(w) for w in words))


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage dump
        raise PileError(message)


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser."""
    ap = _ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("chunks", nargs="+", metavar="CHUNKS", help="'range A B', chunk ids, or 'merge'")
    ap.add_argument("--source", default=PILE_URL,
                    help="http(s) base URL or local directory holding NN.jsonl.zst (default: %(default)s)")
    ap.add_argument("--output-dir", default=".", help="where the .bin/.idx files (and downloads) go")
    ap.add_argument("--vocab-file", default=DEFAULT_VOCAB, help="BERT WordPiece vocab.txt (default: the small bundled one; "
                    "for real pretraining pass the original uncased BERT vocab.txt)")
    ap.add_argument("--workers", type=int, default=min(20, os.cpu_count() or 1),
                    help="encoder processes (default: min(20, CPUs))")
    ap.add_argument("--keep-raw", action="store_true", help="keep downloaded .jsonl.zst files after processing")
    ap.add_argument("--skip-bad-lines", action="store_true", help="count and skip malformed jsonl lines")
    ap.add_argument("--num-chunks", type=int, default=NUM_CHUNKS,
                    help="number of chunks the source has (chunk ids 0..N-1; 'merge' merges them all)")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    return ap


# ---------------------------------------------------------------------------------- fetching and streaming


def is_url(source: str) -> bool:
    """True for an http(s) base URL."""
    return source.startswith(("http://", "https://"))


def _download(url: str, dest: str, label: str, progress: bool) -> None:
    """Stream ``url`` to ``dest.part`` (resuming it when the server allows), then rename it to ``dest``."""
    part = dest + ".part"
    last_error: Exception | None = None
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        have = os.path.getsize(part) if os.path.exists(part) else 0
        request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
        try:
            with urllib.request.urlopen(request, timeout=60) as resp:
                if have and resp.status != 206:
                    have = 0  # the server ignored the range: start over
                length = resp.headers.get("Content-Length")
                total = int(length) + have if length is not None else None
                with open(part, "ab" if have else "wb") as f, tqdm(
                        total=total, initial=have, unit="B", unit_scale=True, desc=f"{label} download",
                        disable=not progress, dynamic_ncols=True) as bar:
                    for block in iter(lambda: resp.read(DOWNLOAD_BLOCK), b""):
                        f.write(block)
                        bar.update(len(block))
                got = os.path.getsize(part)
                if total is not None and got != total:
                    raise OSError(f"connection closed after {got} of {total} bytes")
            os.replace(part, dest)
            return
        except urllib.error.HTTPError as e:
            if e.code == 416:  # our partial file is not a prefix the server knows: start over
                with contextlib.suppress(FileNotFoundError):
                    os.remove(part)
            elif 400 <= e.code < 500 and e.code not in (408, 429):
                raise PileError(f"{label}: cannot download {url}: HTTP {e.code} {e.reason}") from None
            last_error = e
        except (urllib.error.URLError, OSError, ValueError) as e:
            last_error = e
        if attempt < DOWNLOAD_ATTEMPTS:
            time.sleep(min(2 ** attempt, 30))
    raise PileError(f"{label}: cannot download {url} after {DOWNLOAD_ATTEMPTS} attempts: {last_error}")


def locate_chunk(source: str, output_dir: str, chunk: int, progress: bool) -> tuple[str, bool]:
    """Path of the chunk's ``.zst`` (downloading it if needed) and whether this script downloaded it."""
    label = f"chunk {chunk:02d}"
    if not is_url(source):
        path = os.path.join(source, chunk_name(chunk))
        if not os.path.isfile(path):
            raise PileError(f"{label}: source file {path} not found")
        return path, False
    dest = os.path.join(output_dir, chunk_name(chunk))
    if not os.path.isfile(dest):  # a completed download is only ever renamed into place
        _download(source.rstrip("/") + "/" + chunk_name(chunk), dest, label, progress)
    return dest, True


def iter_zst_lines(path: str, label: str, progress: bool) -> Iterator[bytes]:
    """The lines of a ``.jsonl.zst``, decompressed block by block (all frames; a truncated stream is an error)."""
    total = os.path.getsize(path)
    with open(path, "rb") as f, tqdm(total=total, unit="B", unit_scale=True, desc=f"{label} tokenize",
                                     disable=not progress, dynamic_ncols=True) as bar:
        decompressor = zstandard.ZstdDecompressor(max_window_size=MAX_WINDOW)
        dobj, frame_done, rest = decompressor.decompressobj(), False, b""
        while True:
            block = f.read(READ_BLOCK)
            if not block:
                break
            bar.update(len(block))
            while block:
                if frame_done:  # the next frame starts
                    dobj, frame_done = decompressor.decompressobj(), False
                try:
                    out = dobj.decompress(block)
                except zstandard.ZstdError as e:
                    raise PileError(f"{label}: {path} is not a valid zstd file near compressed byte "
                                    f"{f.tell()}: {e}") from None
                block = b""
                if dobj.eof:
                    frame_done, block = True, dobj.unused_data
                if out:
                    lines = (rest + out).split(b"\n")
                    rest = lines.pop()
                    yield from lines
        if not frame_done:
            raise PileError(f"{label}: {path} is empty or truncated (the zstd stream ends mid-frame)")
        if rest:
            yield rest


def batches(lines: Iterable[bytes], size: int) -> Iterator[tuple[int, list[bytes]]]:
    """(first line number, lines) groups of ``size`` lines, numbered from 1."""
    it, lineno = iter(lines), 1
    while batch := list(itertools.islice(it, size)):
        yield lineno, batch
        lineno += len(batch)


# ---------------------------------------------------------------------------------- encoding


_WORKER: ChunkEncoder | None = None  # set in the parent before forking the pool: workers inherit it


def _init_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # the parent handles Ctrl-C and ends the pool
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # not the parent's unwinding handler
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one worker = one core


def _encode(batch: tuple[int, list[bytes]]) -> ChunkResult:
    assert _WORKER is not None, "the pool was not forked from Encoders"
    return _WORKER.encode(*batch)


class Encoders:
    """Encodes batches of lines in this process (1 worker) or in forked worker processes, in input order."""

    def __init__(self, encoder: ChunkEncoder, workers: int) -> None:
        global _WORKER
        self.encoder, self.workers, self.pool = encoder, workers, None
        if workers > 1:
            _WORKER = encoder  # the forked workers get the tokenizer without rebuilding it
            self.pool = multiprocessing.get_context("fork").Pool(workers, _init_worker)

    def encode(self, items: Iterable[tuple[int, list[bytes]]]) -> Iterator[ChunkResult]:
        """Encoded batches in input order, at most ``4 * workers`` batches in flight."""
        if self.pool is None:
            for item in items:
                yield self.encoder.encode(*item)
            return
        pending: deque = deque()
        for item in items:
            pending.append(self.pool.apply_async(_encode, (item,)))
            if len(pending) >= 4 * self.workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()

    def close(self) -> None:
        """Stop the worker processes."""
        global _WORKER
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
        _WORKER = None


@dataclasses.dataclass
class RunConfig:
    """What every chunk needs."""

    source: str
    output_dir: str
    vocab_file: str
    vocab_sha256: str
    workers: int
    keep_raw: bool
    skip_bad_lines: bool
    progress: bool


def process_chunk(cfg: RunConfig, chunk: int, options: PreprocessOptions, tokenizer: AbstractTokenizer) -> dict:
    """Tokenize one chunk into its ``.bin``/``.idx`` and write its marker; returns the marker record."""
    label = f"chunk {chunk:02d}"
    prefix = chunk_prefix(cfg.output_dir, chunk)
    start = time.perf_counter()
    path, downloaded = locate_chunk(cfg.source, cfg.output_dir, chunk, cfg.progress)
    encoder = ChunkEncoder(dataclasses.replace(options, input_name=path), tokenizer)
    counts = dict(docs=0, sentences=0, tokens=0, empty_docs=0, blank_lines=0, bad_lines=0)
    encoders = Encoders(encoder, cfg.workers)
    try:
        with MMapIndexedDatasetBuilder(data_file_path(prefix), dtype=encoder.dtype) as builder:
            lines = iter_zst_lines(path, label, cfg.progress)
            for res in encoders.encode(batches(lines, LINES_PER_BATCH)):
                if res.error is not None:
                    raise BadInputError(res.error)
                arrays = res.keys["text"]
                builder.add_docs(arrays.tokens, arrays.sizes, arrays.items_per_doc)
                counts["docs"] += res.docs
                counts["sentences"] += int(arrays.sizes.size)
                counts["tokens"] += int(arrays.tokens.size)
                counts["empty_docs"] += arrays.empty_docs
                counts["blank_lines"] += res.blank_lines
                counts["bad_lines"] += len(res.bad_lines)
            builder.finalize(index_file_path(prefix))
    except PileError:
        if downloaded:  # do not reuse a corrupt download next time
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)
        raise
    except BadInputError as e:
        raise PileError(f"{label}: {e}") from None
    finally:
        encoders.close()
    record = dict(chunk=chunk, source=os.path.abspath(path), dtype=str(encoder.dtype), vocab_file=cfg.vocab_file,
                  vocab_sha256=cfg.vocab_sha256, compressed_bytes=os.path.getsize(path),
                  bin_bytes=os.path.getsize(data_file_path(prefix)), idx_bytes=os.path.getsize(index_file_path(prefix)),
                  seconds=round(time.perf_counter() - start, 3), finished_at=time.time(), **counts)
    _write_json_atomic(marker_path(prefix), record)
    if downloaded and not cfg.keep_raw:
        os.remove(path)
    return record


def run_chunks(cfg: RunConfig, chunks: list[int]) -> None:
    """Process ``chunks`` in order, skipping done ones; the tokenizer is only built if something is left to do."""
    if not is_url(cfg.source):  # fail before any work if a local file is missing
        for chunk in chunks:
            path = os.path.join(cfg.source, chunk_name(chunk))
            if not os.path.isfile(path):
                raise PileError(f"chunk {chunk:02d}: source file {path} not found")
    options = PreprocessOptions(input_name=cfg.source, tokenizer_type="BertWordPieceLowerCase",
                                vocab_file=cfg.vocab_file, split_sentences=True, skip_bad_lines=cfg.skip_bad_lines)
    tokenizer: AbstractTokenizer | None = None
    for chunk in chunks:
        prefix = chunk_prefix(cfg.output_dir, chunk)
        with locked(prefix, f"chunk {chunk:02d}"):
            record = read_marker(prefix)
            if record is not None and record.get("vocab_sha256") == cfg.vocab_sha256:
                print(f"chunk {chunk:02d}: done already ({record['docs']} docs, {record['sentences']} sentences), "
                      "skipping")
                continue
            removed = clear_outputs(prefix)
            if record is not None:
                print(f"chunk {chunk:02d}: was made with another vocab; redoing it")
            elif removed:
                print(f"chunk {chunk:02d}: removed {len(removed)} file(s) of an incomplete run; redoing it")
            if tokenizer is None:
                tokenizer = options.build_tokenizer()
            record = process_chunk(cfg, chunk, options, tokenizer)
        print(f"chunk {chunk:02d}: {record['docs']} docs, {record['sentences']} sentences, {record['tokens']} "
              f"tokens in {record['seconds']:.1f}s -> {prefix}.bin/.idx")


# ---------------------------------------------------------------------------------- merging


def _ranges(ids: list[int]) -> str:
    """``[3, 4, 5, 9]`` -> ``"03-05, 09"``."""
    groups = []
    for _, run in itertools.groupby(enumerate(ids), key=lambda p: p[1] - p[0]):
        run = [c for _, c in run]
        groups.append(f"{run[0]:02d}" if len(run) == 1 else f"{run[0]:02d}-{run[-1]:02d}")
    return ", ".join(groups)


def merge(output_dir: str, chunks: list[int], progress: bool) -> dict:
    """Merge the processed ``chunks``, in order, into ``pile_bert_train_text_sentence``; returns its marker."""
    records, missing = [], []
    for chunk in chunks:
        record = read_marker(chunk_prefix(output_dir, chunk))
        (missing.append(chunk) if record is None else records.append(record))
    if missing:
        raise PileError(f"merge: chunk(s) {_ranges(missing)} not processed in {output_dir} (no complete "
                        f"{os.path.basename(chunk_prefix(output_dir, missing[0]))}); process them first")
    vocabs = {r["vocab_sha256"] for r in records}
    if len(vocabs) > 1:
        raise PileError(f"merge: the chunks in {output_dir} were made with different vocab files; redo them with one")
    prefix = merged_prefix(output_dir)
    parts = [{k: r.get(k) for k in ("chunk", "docs", "sentences", "tokens", "bin_bytes", "finished_at")} for r in records]
    with locked(prefix, "merge"):
        done = read_marker(prefix)
        if done is not None and done.get("parts") == parts:
            print(f"merge: {prefix}.bin/.idx is up to date, skipping")
            return done
        clear_outputs(prefix)
        with MMapIndexedDatasetBuilder(data_file_path(prefix), dtype=records[0]["dtype"]) as builder:
            for r in tqdm(records, desc="merge", unit="chunk", disable=not progress, dynamic_ncols=True):
                builder.merge_file_(chunk_prefix(output_dir, r["chunk"]))
            builder.finalize(index_file_path(prefix))
        merged = MMapIndexedDataset(prefix)
        totals = {k: sum(r[k] for r in records) for k in ("docs", "sentences", "tokens")}
        if (len(merged), len(merged.doc_idx) - 1) != (totals["sentences"], totals["docs"]):
            raise PileError(f"merge: {prefix} has {len(merged)} sentences / {len(merged.doc_idx) - 1} docs, expected "
                            f"{totals['sentences']} / {totals['docs']} (a chunk changed while merging?)")
        record = dict(parts=parts, dtype=records[0]["dtype"], vocab_sha256=records[0]["vocab_sha256"],
                      bin_bytes=os.path.getsize(data_file_path(prefix)),
                      idx_bytes=os.path.getsize(index_file_path(prefix)), **totals)
        _write_json_atomic(marker_path(prefix), record)
    print(f"merge: {len(records)} chunks -> {prefix}.bin/.idx ({record['docs']} docs, {record['sentences']} sentences, "
          f"{record['tokens']} tokens)")
    return record


# ---------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 with one ``error: ...`` line on stderr for bad input)."""
    try:
        args = build_parser().parse_args(argv)
        if args.num_chunks < 1:
            raise PileError(f"--num-chunks must be >= 1, got {args.num_chunks}")
        if args.workers < 1:
            raise PileError(f"--workers must be >= 1, got {args.workers}")
        action, chunks = parse_chunks(args.chunks, args.num_chunks)
        os.makedirs(args.output_dir, exist_ok=True)
        if action == "merge":
            merge(args.output_dir, chunks, not args.no_progress)
            return 0
        if not is_url(args.source) and not os.path.isdir(args.source):
            raise PileError(f"--source {args.source}: not a directory and not an http(s) URL")
        if not os.path.isfile(args.vocab_file):
            raise PileError(f"--vocab-file {args.vocab_file}: file not found")
        cfg = RunConfig(source=args.source, output_dir=args.output_dir, vocab_file=os.path.abspath(args.vocab_file),
                        vocab_sha256=file_sha256(args.vocab_file), workers=args.workers, keep_raw=args.keep_raw,
                        skip_bad_lines=args.skip_bad_lines, progress=not args.no_progress)
        run_chunks(cfg, chunks)
    except (PileError, BadInputError, ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: the chunk in progress left no output and will be redone", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    # SIGTERM unwinds like Ctrl-C, so the builders delete their temp files
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    sys.exit(main())
