"""Megatron "MMIDIDX" memory-mapped indexed dataset: the ``.bin`` + ``.idx`` token-file format.

A dataset is a pair of files sharing a prefix ``P``:

* ``P.bin`` -- the items' elements concatenated in dtype order, no header;
* ``P.idx`` -- little-endian index::

      offset 0        9 bytes   magic b"MMIDIDX\\x00\\x00"
      offset 9        u64       version (1)
      offset 17       u8        dtype code (table below)
      offset 18       u64       N, number of items
      offset 26       u64       D, number of doc_idx entries
      offset 34       N x i32   sizes: elements per item
      34 + 4N         N x i64   pointers: byte offset of each item in .bin
      34 + 12N        D x i64   doc_idx: first item of each document (starts at 0)

dtype codes -- Megatron's table, used by every writer in this project::

      1 uint8  2 int8  3 int16  4 int32  5 int64  6 float64  7 float32  8 uint16

DeepSpeed's ``data_sampling/indexed_dataset.py`` uses another table for the last three
codes (6 uint16, 7 uint32, 8 uint64), so the same code means different things to the two
libraries.  Codes 6 and 8 have different item sizes in the two tables, so the reader can
tell which table a file was written with from ``pointers`` and the ``.bin`` size: opening a
DeepSpeed-table file with the Megatron table (or the reverse) raises
:class:`IndexedDatasetError` naming the right ``dtype_table``.  Code 7 (float32 vs uint32)
has the same item size in both tables and cannot be told apart by size: it is decoded with
whichever table the caller selects (Megatron's float32 by default).  Pass
``dtype_table="deepspeed"`` to read files written by DeepSpeed's DataAnalyzer.

A ``.bin`` longer than its index describes is read (the trailing bytes ignored, with a warning), as upstream
does; a shorter one, or an ``.idx`` whose size does not match its header, is an error.

The legacy non-mmap "TNTIDX" format is not supported; re-run ``tools/preprocess_data.py``.
"""
from __future__ import annotations

import logging
import os
import re
import struct
import tempfile
from types import TracebackType
from typing import Any, Iterable, Sequence

import numpy as np

_MAGIC = b"MMIDIDX\x00\x00"
_LEGACY_MAGIC = b"TNTIDX\x00\x00"
_VERSION = 1
_HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, N, D  -> 34 bytes
HEADER_SIZE = _HEADER.size
_WARMUP_CHUNK = 100 * 1024 * 1024
_COPY_CHUNK = 16 * 1024 * 1024
_UMASK = os.umask(0)  # read once at import (os.umask can only be read by setting it)
os.umask(_UMASK)

DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.uint8),
    2: np.dtype(np.int8),
    3: np.dtype(np.int16),
    4: np.dtype(np.int32),
    5: np.dtype(np.int64),
    6: np.dtype(np.float64),
    7: np.dtype(np.float32),
    8: np.dtype(np.uint16),
}
"""Megatron's dtype-code table (the one this project writes)."""

DEEPSPEED_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.uint8),
    2: np.dtype(np.int8),
    3: np.dtype(np.int16),
    4: np.dtype(np.int32),
    5: np.dtype(np.int64),
    6: np.dtype(np.uint16),
    7: np.dtype(np.uint32),
    8: np.dtype(np.uint64),
}
"""DeepSpeed's dtype-code table (read-only support, ``dtype_table="deepspeed"``)."""

DTYPE_TABLES: dict[str, dict[int, np.dtype]] = {"megatron": DTYPES, "deepspeed": DEEPSPEED_DTYPES}
_TABLE_NAMES = {"megatron": "Megatron", "deepspeed": "DeepSpeed"}


class IndexedDatasetError(ValueError):
    """A ``.bin``/``.idx`` pair is missing, corrupt or ambiguous (the message names the file)."""


class DtypeOverflowError(ValueError):
    """Values given to a builder do not fit its element dtype."""


def code(dtype: Any, table: str = "megatron") -> int:
    """Return the dtype code of ``dtype`` in Megatron's table (or ``table``)."""
    dt = np.dtype(dtype)
    for k, v in _table(table).items():
        if v == dt:
            return k
    raise ValueError(f"dtype {dt} has no code in the {table} MMIDIDX dtype table")


def best_fitting_dtype(vocab_size: int | None = None) -> np.dtype:
    """Token dtype Megatron uses: uint16 when ``vocab_size < 65500``, else int32."""
    if vocab_size is not None and vocab_size < 65500:
        return np.dtype(np.uint16)
    return np.dtype(np.int32)


def find_fit_int_dtype(min_value: int, max_value: int) -> np.dtype:
    """Smallest integer dtype holding [min_value, max_value]: unsigned when min_value >= 0."""
    if min_value > max_value:
        raise ValueError(f"find_fit_int_dtype: min_value {min_value} > max_value {max_value}")
    candidates = (np.uint8, np.uint16, np.uint32, np.uint64) if min_value >= 0 else (np.int8, np.int16, np.int32, np.int64)
    for t in candidates:
        info = np.iinfo(t)
        if info.min <= min_value and max_value <= info.max:
            return np.dtype(t)
    raise ValueError(f"find_fit_int_dtype: no integer dtype holds [{min_value}, {max_value}]")


def data_file_path(prefix: str) -> str:
    """Path of the data file of ``prefix``."""
    return prefix + ".bin"


def index_file_path(prefix: str) -> str:
    """Path of the index file of ``prefix``."""
    return prefix + ".idx"


def dataset_exists(prefix: str) -> bool:
    """True when both ``prefix.idx`` and ``prefix.bin`` exist."""
    return os.path.exists(index_file_path(prefix)) and os.path.exists(data_file_path(prefix))


def _table(name: str) -> dict[int, np.dtype]:
    if name not in DTYPE_TABLES:
        raise ValueError(f"dtype_table must be one of {sorted(DTYPE_TABLES)}, got {name!r}")
    return DTYPE_TABLES[name]


# --------------------------------------------------------------------------------------------
# Index reading + validation
# --------------------------------------------------------------------------------------------


class MMapIndex:
    """Parsed and validated ``.idx`` file (arrays are views of a memory map); ``MMapIndexedDataset.Index``.

    Upstream's API: ``Index(path, skip_warmup)``, ``len()``, ``index[i] -> (pointer, size)``, ``sizes``,
    ``doc_idx``, ``dtype`` and ``Index.writer(path, dtype)``. Given ``bin_path`` (as the dataset does), the ``.bin``
    is checked against the index too; alone, only the index is (as upstream's ``Index`` reads no ``.bin``).
    """

    def __init__(self, path: str, skip_warmup: bool = True, bin_path: str | None = None,
                 dtype_table: str = "megatron") -> None:
        idx_path = path
        table = _table(dtype_table)
        if not os.path.isfile(idx_path):
            raise IndexedDatasetError(f"{idx_path}: index file not found")
        file_size = os.path.getsize(idx_path)
        with open(idx_path, "rb") as f:
            head = f.read(HEADER_SIZE)
        if head.startswith(_LEGACY_MAGIC):
            raise IndexedDatasetError(
                f"{idx_path}: legacy (non-mmap, TNTIDX) indexed dataset format is not supported; "
                "re-run tools/preprocess_data.py with --dataset-impl mmap"
            )
        if len(head) < 9 or head[:9] != _MAGIC:
            raise IndexedDatasetError(f"{idx_path}: bad magic {head[:9]!r}, expected {_MAGIC!r} (not an MMIDIDX index)")
        if len(head) < HEADER_SIZE:
            raise IndexedDatasetError(f"{idx_path}: truncated header ({file_size} bytes, expected at least {HEADER_SIZE})")
        _, version, dcode, n, d = _HEADER.unpack(head)
        if version != _VERSION:
            raise IndexedDatasetError(f"{idx_path}: unsupported version {version}, expected {_VERSION}")
        if dcode not in table:
            raise IndexedDatasetError(
                f"{idx_path}: unknown dtype code {dcode}; known codes ({dtype_table} table): "
                + ", ".join(f"{k}={v}" for k, v in table.items())
            )
        expected = HEADER_SIZE + 12 * n + 8 * d
        if file_size != expected:
            what = "truncated" if file_size < expected else "has trailing bytes"
            raise IndexedDatasetError(
                f"{idx_path}: {what}: size {file_size} bytes, but header says N={n} items and D={d} doc_idx "
                f"entries, which needs 34 + 12*N + 8*D = {expected} bytes"
            )
        self.path = idx_path
        self.dtype_code = dcode
        self.dtype = table[dcode]
        self._mmap = np.memmap(idx_path, mode="r", dtype=np.uint8)
        buf = memoryview(self._mmap)
        self.sizes = np.frombuffer(buf, dtype="<i4", count=n, offset=HEADER_SIZE)
        self.pointers = np.frombuffer(buf, dtype="<i8", count=n, offset=HEADER_SIZE + 4 * n)
        self.doc_idx = np.frombuffer(buf, dtype="<i8", count=d, offset=HEADER_SIZE + 12 * n)
        self.bin_bytes = 0
        """Bytes of the ``.bin`` that the index describes (trailing bytes past them are ignored)."""
        self._validate(bin_path, dtype_table)
        if not skip_warmup:
            _warmup(idx_path)

    def __len__(self) -> int:
        return len(self.sizes)

    def __getitem__(self, i: int) -> tuple[np.int64, np.int32]:
        """(byte offset in the ``.bin``, elements) of item ``i`` -- upstream's ``Index.__getitem__``."""
        return self.pointers[i], self.sizes[i]

    @classmethod
    def writer(cls, path: str, dtype: Any) -> "_IndexWriter":
        """Upstream's ``Index.writer(path, dtype)``: ``with ... as w: w.write(sizes, doc_idx)`` writes an ``.idx``
        (atomically: a temp file renamed when the block ends without an exception)."""
        return _IndexWriter(path, dtype)

    def _validate(self, bin_path: str | None, dtype_table: str) -> None:
        p, n = self.path, len(self.sizes)
        if n and int(self.sizes.min()) < 0:
            bad = int(np.argmax(self.sizes < 0))
            raise IndexedDatasetError(f"{p}: item {bad} has negative size {int(self.sizes[bad])}")
        elements = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(self.sizes, dtype=np.int64, out=elements[1:])
        itemsize = self.dtype.itemsize
        other_name = "deepspeed" if dtype_table == "megatron" else "megatron"
        other = DTYPE_TABLES[other_name].get(self.dtype_code)
        if not np.array_equal(self.pointers, elements[:-1] * itemsize):
            if other is not None and other.itemsize != itemsize and np.array_equal(self.pointers, elements[:-1] * other.itemsize):
                raise self._table_clash(dtype_table, other_name, other)
            bad = int(np.argmax(self.pointers != elements[:-1] * itemsize))
            raise IndexedDatasetError(
                f"{p}: pointers[{bad}] = {int(self.pointers[bad])} does not match the sizes "
                f"(expected {int(elements[bad]) * itemsize} = sum(sizes[:{bad}]) * itemsize {itemsize})"
            )
        need = int(elements[-1]) * itemsize
        self.bin_bytes = need
        if bin_path is not None:
            self._check_bin(bin_path, need, int(elements[-1]), dtype_table, other_name, other)
        d = self.doc_idx
        if len(d) == 0 or int(d[0]) != 0:
            raise IndexedDatasetError(f"{p}: doc_idx must start with 0, got {d[:1].tolist()}")
        if len(d) > 1 and bool((np.diff(d) < 0).any()):
            bad = int(np.argmax(np.diff(d) < 0)) + 1
            raise IndexedDatasetError(f"{p}: doc_idx is not non-decreasing at entry {bad} ({int(d[bad - 1])} > {int(d[bad])})")
        if int(d[-1]) > n:
            raise IndexedDatasetError(f"{p}: doc_idx last entry {int(d[-1])} exceeds the number of items {n}")

    def _check_bin(self, bin_path: str, need: int, elements: int, dtype_table: str, other_name: str,
                   other: np.dtype | None) -> None:
        """The ``.bin`` holds the ``need`` bytes the index describes; trailing bytes are read past with a warning
        (upstream reads such files too), a short file or another dtype table's file is an error."""
        p = self.path
        if not os.path.isfile(bin_path):
            raise IndexedDatasetError(f"{bin_path}: data file not found (index {p} exists)")
        bin_size = os.path.getsize(bin_path)
        if bin_size == need:
            return
        other_size = None if other is None or other.itemsize == self.dtype.itemsize else elements * other.itemsize
        if need and bin_size == other_size:
            assert other is not None
            raise self._table_clash(dtype_table, other_name, other)
        if bin_size < need:
            raise IndexedDatasetError(
                f"{bin_path}: truncated: size {bin_size} bytes, but the index {p} describes {elements} "
                f"elements of {self.dtype} = {need} bytes"
            )
        logging.getLogger(__name__).warning(
            "%s: has %d trailing bytes after the %d bytes (%d elements of %s) that the index %s describes; they are "
            "ignored (as upstream Megatron does)", bin_path, bin_size - need, need, elements, self.dtype, p)

    def _table_clash(self, used: str, other_name: str, other: np.dtype) -> IndexedDatasetError:
        return IndexedDatasetError(
            f"{self.path}: dtype code {self.dtype_code} means {self.dtype} in {_TABLE_NAMES[used]}'s table, but the pointers and "
            f".bin size match {other} ({other.itemsize}-byte items): the file was written with {_TABLE_NAMES[other_name]}'s "
            f"dtype table. Open it with MMapIndexedDataset(prefix, dtype_table={other_name!r})"
        )


class _IndexWriter:
    """Context manager behind ``MMapIndex.writer``: ``write(sizes, doc_idx)`` then an atomic publish."""

    def __init__(self, path: str, dtype: Any) -> None:
        self._path = path
        self._dtype = np.dtype(dtype)
        self._code = code(self._dtype)
        self._tmp: str | None = None
        self._file: Any = None

    def __enter__(self) -> "_IndexWriter":
        fd, self._tmp = _mkstemp_for(self._path)
        self._file = os.fdopen(fd, "wb")
        return self

    def write(self, sizes: Sequence[int] | np.ndarray, doc_idx: Sequence[int] | np.ndarray) -> None:
        """Header, sizes (int32), pointers (int64 byte offsets from the sizes) and doc_idx (int64)."""
        sizes_arr = np.asarray(sizes, dtype=np.int64).reshape(-1)
        if sizes_arr.size and (int(sizes_arr.min()) < 0 or int(sizes_arr.max()) > np.iinfo(np.int32).max):
            raise ValueError(f"{self._path}: item sizes must be in [0, 2^31-1]")
        docs = np.asarray(doc_idx, dtype=np.int64).reshape(-1)
        pointers = np.zeros(len(sizes_arr), dtype=np.int64)
        np.cumsum(sizes_arr[:-1] * self._dtype.itemsize, out=pointers[1:])
        self._file.write(_HEADER.pack(_MAGIC, _VERSION, self._code, len(sizes_arr), len(docs)))
        self._file.write(sizes_arr.astype("<i4").tobytes())
        self._file.write(pointers.astype("<i8").tobytes())
        self._file.write(docs.astype("<i8").tobytes())

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._file.close()
        assert self._tmp is not None
        if exc_type is None:
            os.replace(self._tmp, self._path)
        elif os.path.exists(self._tmp):
            os.remove(self._tmp)


_TEMP_SUFFIX_RE = re.compile(r"\.[a-z0-9_]{8}\.tmp")
"""What ``tempfile.mkstemp(prefix=name + ".", suffix=".tmp")`` appends to ``name``: 8 random characters."""


def stale_temp_files(path: str) -> list[str]:
    """Temp files written for ``path`` (``{path}.XXXXXXXX.tmp``, the writers' mkstemp naming) that exist now."""
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    return sorted(os.path.join(directory, n) for n in names
                  if n.startswith(base) and _TEMP_SUFFIX_RE.fullmatch(n, len(base))
                  and os.path.isfile(os.path.join(directory, n)))


def remove_stale_temp_files(paths: Iterable[str], log: Any = None) -> list[str]:
    """Delete the temp files a killed writer of ``paths`` left behind (see :func:`stale_temp_files`).

    Call before writing ``paths`` again; each removal is logged as a warning (to ``log``, a logger, or this
    module's). Returns the removed paths."""
    log = log or logging.getLogger(__name__)
    removed = []
    for path in paths:
        for tmp in stale_temp_files(path):
            try:
                os.remove(tmp)
            except FileNotFoundError:
                continue
            removed.append(tmp)
            log.warning("removed stale temp file %s (left by an interrupted run)", tmp)
    return removed


def _mkstemp_for(path: str) -> tuple[int, str]:
    """Temp file next to ``path`` with the permissions a plain ``open(path, "w")`` would get."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_UMASK)
    return fd, tmp


def _warmup(path: str) -> None:
    with open(path, "rb") as f:
        while f.read(_WARMUP_CHUNK):
            pass


# --------------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------------


class MMapIndexedDataset:
    """Memory-mapped reader of a validated ``prefix.bin`` / ``prefix.idx`` pair.

    Megatron's API as upstream scripts call it: ``ds[i]``, ``ds[a:b]`` (a list of arrays; an empty slice gives a
    list holding one empty array), ``get(i, offset, length)``, ``size(i)``, ``sizes``, ``doc_idx``,
    ``get_doc_idx()``, ``set_doc_idx()``, ``dtype``, ``exists(prefix)`` and the nested ``Index`` class.
    """

    Index = MMapIndex
    supports_prefetch = False

    def __init__(self, path_prefix: str, skip_warmup: bool = True, dtype_table: str = "megatron") -> None:
        self._path_prefix = path_prefix
        self._skip_warmup = skip_warmup
        self._dtype_table = dtype_table
        self._open()

    def _open(self) -> None:
        idx_path, bin_path = index_file_path(self._path_prefix), data_file_path(self._path_prefix)
        self._index = MMapIndex(idx_path, self._skip_warmup, bin_path, self._dtype_table)
        if not self._skip_warmup:
            _warmup(bin_path)
        if os.path.getsize(bin_path) == 0:  # mmap cannot map an empty file
            self._bin_mmap = None
            self._bin: Any = b""
        else:
            self._bin_mmap = np.memmap(bin_path, mode="r", dtype=np.uint8)
            self._bin = memoryview(self._bin_mmap)
        self._offsets = None  # element offsets, built lazily for slices

    def __getstate__(self) -> tuple[str, bool, str]:
        return self._path_prefix, self._skip_warmup, self._dtype_table

    def __setstate__(self, state: tuple[str, bool, str]) -> None:
        self._path_prefix, self._skip_warmup, self._dtype_table = state
        self._open()

    def __len__(self) -> int:
        return len(self._index)

    def _check_idx(self, idx: int) -> int:
        n = len(self)
        i = int(idx)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"item index {idx} out of range for {self._path_prefix} with {n} items")
        return i

    def __getitem__(self, idx: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(idx, slice):
            start, stop, step = idx.indices(len(self))
            if step != 1:
                raise ValueError(f"slices of an indexed dataset must be contiguous (step 1), got step {step}")
            if start >= len(self):  # upstream reads pointers[start] first, which fails here too
                raise IndexError(f"slice {idx.start}:{idx.stop} of {self._path_prefix} starts at its end ({len(self)} "
                                 "items)")
            if stop <= start:  # upstream: np.split of an empty read -> one empty array
                return [np.zeros(0, dtype=self.dtype)]
            sizes = self._index.sizes[start:stop]
            total = int(sizes.sum(dtype=np.int64))
            span = np.frombuffer(self._bin, dtype=self.dtype, count=total, offset=int(self._index.pointers[start]))
            return np.split(span, np.cumsum(sizes[:-1], dtype=np.int64))
        i = self._check_idx(idx)
        return np.frombuffer(self._bin, dtype=self.dtype, count=int(self._index.sizes[i]), offset=int(self._index.pointers[i]))

    def get(self, idx: int, offset: int = 0, length: int | None = None) -> np.ndarray:
        """Elements ``[offset, offset + length)`` of item ``idx`` (to the item's end when length is None)."""
        i = self._check_idx(idx)
        size = int(self._index.sizes[i])
        if length is None:
            length = size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise IndexError(f"get({idx}, offset={offset}, length={length}) is outside item {i} of size {size} in {self._path_prefix}")
        ptr = int(self._index.pointers[i]) + offset * self.dtype.itemsize
        return np.frombuffer(self._bin, dtype=self.dtype, count=length, offset=ptr)

    @property
    def sizes(self) -> np.ndarray:
        """Elements per item (int32)."""
        return self._index.sizes

    def size(self, index: Any) -> Any:
        """Elements of item ``index`` (upstream's ``size(i)``; an index array gives an array)."""
        return self._index.sizes[index]

    def get_doc_idx(self) -> np.ndarray:
        """The document index (upstream's ``get_doc_idx()``): first item of each document, starting with 0."""
        return self._index.doc_idx

    def set_doc_idx(self, doc_idx: Any) -> None:
        """Replace the document index this reader reports (upstream's ``set_doc_idx()``; the files are untouched,
        and reopening or unpickling reads the file's again)."""
        self._index.doc_idx = np.asarray(doc_idx)

    @property
    def pointers(self) -> np.ndarray:
        """Byte offset of each item in the ``.bin`` (int64)."""
        return self._index.pointers

    @property
    def doc_idx(self) -> np.ndarray:
        """First item of each document, starting with 0 (int64)."""
        return self._index.doc_idx

    @property
    def dtype(self) -> np.dtype:
        """Element dtype of the items."""
        return self._index.dtype

    @property
    def path_prefix(self) -> str:
        """The prefix this dataset was opened from."""
        return self._path_prefix

    @staticmethod
    def exists(path_prefix: str) -> bool:
        """True when both files of ``path_prefix`` exist."""
        return dataset_exists(path_prefix)


# --------------------------------------------------------------------------------------------
# Builder
# --------------------------------------------------------------------------------------------


class _IntList:
    """Append-only int64 sequence: Python ints buffered, bulk numpy parts kept as arrays."""

    def __init__(self) -> None:
        self._parts: list[np.ndarray] = []
        self._pending: list[int] = []
        self._len = 0

    def __len__(self) -> int:
        return self._len

    def append(self, v: int) -> None:
        self._pending.append(v)
        self._len += 1

    def extend(self, values: Iterable[int] | np.ndarray) -> None:
        arr = np.asarray(values, dtype=np.int64).reshape(-1)
        if self._pending:
            self._parts.append(np.asarray(self._pending, dtype=np.int64))
            self._pending = []
        self._parts.append(arr)
        self._len += len(arr)

    def array(self) -> np.ndarray:
        parts = self._parts + ([np.asarray(self._pending, dtype=np.int64)] if self._pending else [])
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)


def _as_numpy(item: Any) -> np.ndarray:
    if type(item).__module__.startswith("torch"):
        item = item.detach().cpu().numpy()
    return np.asarray(item)


class MMapIndexedDatasetBuilder:
    """Writes a ``.bin``/``.idx`` pair atomically: temp files, renamed only by :meth:`finalize`."""

    def __init__(self, out_file: str, dtype: Any = np.int64) -> None:
        self._dtype = np.dtype(dtype)
        self._code = code(self._dtype)
        self._out_file = out_file
        fd, self._tmp_bin = _mkstemp_for(out_file)
        self._file = os.fdopen(fd, "wb", buffering=8 * 1024 * 1024)
        self._sizes = _IntList()
        self._doc_idx = _IntList()
        self._doc_idx.append(0)
        self._tmp_idx: str | None = None
        self._done = False

    @property
    def dtype(self) -> np.dtype:
        """Element dtype written to the ``.bin``."""
        return self._dtype

    def __len__(self) -> int:
        return len(self._sizes)

    def _convert(self, item: Any) -> np.ndarray:
        arr = _as_numpy(item)
        if arr.dtype != self._dtype:
            if self._dtype.kind in "iu" and arr.size:
                if arr.dtype.kind == "f" and not bool(np.all(np.isfinite(arr)) and np.all(arr == np.round(arr))):
                    raise DtypeOverflowError(f"{self._out_file}: non-integer values cannot be stored as {self._dtype}")
                if arr.dtype.kind in "iuf" and not np.can_cast(arr.dtype, self._dtype, "safe"):
                    lo, hi, info = arr.min(), arr.max(), np.iinfo(self._dtype)
                    if lo < info.min or hi > info.max:
                        raise DtypeOverflowError(
                            f"{self._out_file}: values in [{lo}, {hi}] do not fit dtype {self._dtype} "
                            f"(range [{info.min}, {info.max}])"
                        )
            arr = arr.astype(self._dtype)
        return np.ascontiguousarray(arr).reshape(-1)

    def _check_open(self) -> None:
        if self._done:
            raise RuntimeError(f"builder for {self._out_file} is already finalized or aborted")

    def add_item(self, item: Any) -> None:
        """Append one item (array, list or tensor; flattened in C order)."""
        self._check_open()
        arr = self._convert(item)
        self._file.write(arr.data)
        self._sizes.append(arr.size)

    def add_items(self, items: Sequence[Any]) -> None:
        """Append many items with one write."""
        self._check_open()
        arrays = [self._convert(x) for x in items]
        if not arrays:
            return
        self._file.write(np.concatenate(arrays).data)
        self._sizes.extend([a.size for a in arrays])

    def add_doc(self, tokens: Any, sizes: Sequence[int] | np.ndarray) -> None:
        """Append ``tokens`` split into items of ``sizes`` elements, then close the document."""
        self._check_open()
        arr = self._convert(tokens)
        sizes_arr = np.asarray(sizes, dtype=np.int64).reshape(-1)
        if int(sizes_arr.sum()) != arr.size or (sizes_arr.size and int(sizes_arr.min()) < 0):
            raise ValueError(f"add_doc: sizes {sizes_arr.tolist()[:8]} do not add up to the {arr.size} tokens given")
        self._file.write(arr.data)
        self._sizes.extend(sizes_arr)
        self._doc_idx.append(len(self._sizes))

    def add_docs(self, tokens: Any, sizes: np.ndarray, items_per_doc: np.ndarray) -> None:
        """Append many documents at once: flat ``tokens``, item ``sizes``, and items in each document."""
        self._check_open()
        arr = self._convert(tokens)
        sizes_arr = np.asarray(sizes, dtype=np.int64).reshape(-1)
        per_doc = np.asarray(items_per_doc, dtype=np.int64).reshape(-1)
        if int(sizes_arr.sum()) != arr.size or int(per_doc.sum()) != sizes_arr.size:
            raise ValueError(
                f"add_docs: {arr.size} tokens, sizes sum {int(sizes_arr.sum())}, {sizes_arr.size} items but "
                f"items_per_doc sum {int(per_doc.sum())}"
            )
        start = len(self._sizes)
        self._file.write(arr.data)
        self._sizes.extend(sizes_arr)
        self._doc_idx.extend(start + np.cumsum(per_doc))

    def end_document(self) -> None:
        """Close the current document: append the item count to doc_idx."""
        self._check_open()
        self._doc_idx.append(len(self._sizes))

    def merge_file_(self, other_prefix: str) -> None:
        """Append the items and documents of the dataset at ``other_prefix`` (same dtype required)."""
        self._check_open()
        other = MMapIndex(index_file_path(other_prefix), True, data_file_path(other_prefix))
        if other.dtype != self._dtype:
            raise IndexedDatasetError(
                f"{index_file_path(other_prefix)}: dtype {other.dtype} differs from the builder's dtype {self._dtype}; "
                "merged datasets must share one dtype"
            )
        offset = len(self._sizes)
        self._sizes.extend(other.sizes)
        self._doc_idx.extend(other.doc_idx[1:] + offset)
        with open(data_file_path(other_prefix), "rb") as src:  # only the bytes the index describes
            left = other.bin_bytes
            while left > 0:
                chunk = src.read(min(_COPY_CHUNK, left))
                if not chunk:
                    raise IndexedDatasetError(f"{data_file_path(other_prefix)}: shorter than its index describes")
                self._file.write(chunk)
                left -= len(chunk)

    def finalize(self, index_file: str) -> None:
        """Write the index and publish both files (``.bin`` renamed first, then ``.idx``)."""
        self._check_open()
        try:
            self._file.close()
            sizes = self._sizes.array()
            if sizes.size and int(sizes.max()) > np.iinfo(np.int32).max:
                raise ValueError(f"{self._out_file}: an item has {int(sizes.max())} elements; the format allows 2^31-1")
            pointers = np.zeros(len(sizes), dtype=np.int64)
            np.cumsum(sizes[:-1], out=pointers[1:])
            pointers *= self._dtype.itemsize
            doc_idx = self._doc_idx.array()
            fd, self._tmp_idx = _mkstemp_for(index_file)
            with os.fdopen(fd, "wb") as f:
                f.write(_HEADER.pack(_MAGIC, _VERSION, self._code, len(sizes), len(doc_idx)))
                f.write(sizes.astype("<i4").tobytes())
                f.write(pointers.astype("<i8").tobytes())
                f.write(doc_idx.astype("<i8").tobytes())
            # an old .idx next to the new .bin would look complete: remove it before publishing
            if os.path.exists(index_file):
                os.remove(index_file)
            os.replace(self._tmp_bin, self._out_file)
            os.replace(self._tmp_idx, index_file)
        except BaseException:
            self.abort()
            raise
        self._done = True

    def abort(self) -> None:
        """Discard everything written so far (temp files are deleted)."""
        self._done = True
        if not self._file.closed:
            self._file.close()
        for path in (self._tmp_bin, self._tmp_idx):
            if path and os.path.exists(path):
                os.remove(path)

    def __enter__(self) -> "MMapIndexedDatasetBuilder":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if not self._done:  # an exception escaped, or finalize() was never called
            self.abort()


# --------------------------------------------------------------------------------------------
# Factories (Megatron names)
# --------------------------------------------------------------------------------------------


def infer_dataset_impl(path_prefix: str) -> str:
    """Read the magic of ``path_prefix.idx``: "mmap" for MMIDIDX; legacy or unknown formats raise."""
    path = index_file_path(path_prefix)
    if not os.path.isfile(path):
        raise IndexedDatasetError(f"{path}: index file not found")
    with open(path, "rb") as f:
        magic = f.read(9)
    if magic == _MAGIC:
        return "mmap"
    if magic.startswith(_LEGACY_MAGIC):
        raise IndexedDatasetError(
            f"{path}: legacy (non-mmap, TNTIDX) indexed dataset format is not supported; "
            "re-run tools/preprocess_data.py with --dataset-impl mmap"
        )
    raise IndexedDatasetError(f"{path}: bad magic {magic!r}, expected {_MAGIC!r} (not an MMIDIDX index)")


def make_dataset(path_prefix: str, impl: str = "mmap", skip_warmup: bool = True) -> MMapIndexedDataset:
    """Open the dataset at ``path_prefix``; ``impl`` is "mmap" or "infer" (only MMIDIDX is supported)."""
    if impl == "infer":
        impl = infer_dataset_impl(path_prefix)
    if impl != "mmap":
        raise ValueError(f"--dataset-impl {impl!r} is not supported: only 'mmap' (or 'infer')")
    return MMapIndexedDataset(path_prefix, skip_warmup=skip_warmup)
