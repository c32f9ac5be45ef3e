"""Files of the curriculum-learning data analyzer: paths, map-stage outputs, MMIDIDX index files.

Layout under the save path (``--save``), one directory per metric ``m``::

    {save}/{m}/worker{w}_thread{t}/{m}_map_values.npy        int64 metric value per sample  (single-value metrics)
    {save}/{m}/worker{w}_thread{t}/{m}_map_sample_ids.npy    int64 sample id of each value   (single-value metrics)
    {save}/{m}/worker{w}_thread{t}/{m}_map_metric_value.npy  int64 summed vector             (accumulate metrics)
    {save}/{m}/worker{w}_thread{t}/{m}_map_done.json         completion marker, written last
    {save}/{m}/{m}_sample_to_metric.bin/.idx                 reduce outputs (spec §2.6)
    {save}/{m}/{m}_index_to_sample.bin/.idx
    {save}/{m}/{m}_index_to_metric.bin/.idx
    {save}/{m}/{m}_index_to_sample_percentile_merged.bin/.idx
    {save}/{m}/{m}_metric_value.bin/.idx                     (accumulate metrics)

So a map thread writes a bounded number of files (at most three per metric), never one per distinct value.
Every file is written under a temporary name in the same directory and renamed into place.

The reduce outputs are DeepSpeed data-sampling files: their element dtypes come from
``find_fit_int_dtype`` (uint8/16/32/64 or int8/16/32/64), and uint32/uint64 have no code in
Megatron's token-file table, so these files use **DeepSpeed's dtype-code table** (6 uint16,
7 uint32, 8 uint64) exactly like DeepSpeed's DataAnalyzer; they are byte-compatible with the files
it writes and with its sampler. Read them with :func:`read_index_file` (or
``MMapIndexedDataset(prefix, dtype_table="deepspeed")``).
"""
from __future__ import annotations

import json
import os
import struct
import tempfile
from typing import Any

import numpy as np

from megatron.data.indexed_dataset import (
    IndexedDatasetError,
    MMapIndexedDataset,
    code,
    data_file_path,
    index_file_path,
)

INDEX_DTYPE_TABLE = "deepspeed"
"""dtype-code table of every analyzer index file (see the module docstring)."""

MAP_FORMAT_VERSION = 1
_MAGIC = b"MMIDIDX\x00\x00"
_HEADER = struct.Struct("<9sQBQQ")  # magic, version, dtype code, N items, D doc_idx entries (spec §1.1)


class AnalyzerError(ValueError):
    """Bad analyzer input or missing/corrupt analyzer files; the message says what to fix."""


def split_index(start: int, end: int, parts: int) -> list[tuple[int, int]]:
    """Split ``[start, end)`` into ``parts`` contiguous ranges at ``linspace`` points cast to int (DeepSpeed's rule)."""
    if parts < 1:
        raise AnalyzerError(f"cannot split a range into {parts} parts (expected >= 1)")
    bounds = np.linspace(start, end, num=parts + 1, dtype=int)
    return [(int(bounds[i]), int(bounds[i + 1])) for i in range(parts)]


def thread_range(num_samples: int, num_workers: int, worker_id: int, num_threads: int,
                 thread_id: int) -> tuple[int, int]:
    """The ``[start, end)`` work range of one (worker, thread): workers split the data, threads a worker's share."""
    ws, we = split_index(0, num_samples, num_workers)[worker_id]
    return split_index(ws, we, num_threads)[thread_id]


def thread_dir(save_path: str, metric: str, worker_id: int, thread_id: int) -> str:
    """``{save}/{metric}/worker{w}_thread{t}``: where one map thread writes its outputs."""
    return os.path.join(save_path, metric, f"worker{worker_id}_thread{thread_id}")


def metric_output_prefix(save_path: str, metric: str, kind: str) -> str:
    """Prefix of a reduce output, e.g. ``{save}/{m}/{m}_index_to_sample`` for kind ``index_to_sample``."""
    return os.path.join(save_path, metric, f"{metric}_{kind}")


def map_output_paths(save_path: str, metric: str, worker_id: int, thread_id: int) -> dict[str, str]:
    """Paths of one map thread's files for ``metric``: values, sample_ids, metric_value, marker."""
    d = thread_dir(save_path, metric, worker_id, thread_id)
    return {
        "values": os.path.join(d, f"{metric}_map_values.npy"),
        "sample_ids": os.path.join(d, f"{metric}_map_sample_ids.npy"),
        "metric_value": os.path.join(d, f"{metric}_map_metric_value.npy"),
        "marker": os.path.join(d, f"{metric}_map_done.json"),
    }


def _temp_path(path: str) -> tuple[int, str]:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    return tempfile.mkstemp(dir=directory, prefix=os.path.basename(path) + ".", suffix=".tmp")


def _publish(tmp: str, path: str) -> None:
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def save_npy_atomic(path: str, array: np.ndarray) -> None:
    """``np.save`` under a temporary name, then rename to ``path``."""
    fd, tmp = _temp_path(path)
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, np.ascontiguousarray(array), allow_pickle=False)
        _publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_json_atomic(path: str, obj: dict[str, Any]) -> None:
    """Write ``obj`` as JSON under a temporary name, then rename to ``path``."""
    fd, tmp = _temp_path(path)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
        _publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def read_marker(path: str) -> dict[str, Any] | None:
    """The completion marker at ``path``, or None when it is absent or unreadable (an unfinished thread)."""
    try:
        with open(path) as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def load_npy(path: str, expected_len: int | None = None) -> np.ndarray:
    """Load a map-stage ``.npy`` with a clear error when it is missing, corrupt or of the wrong length."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise AnalyzerError(f"{path}: cannot read map output ({e})") from None
    if arr.ndim != 1 or (expected_len is not None and arr.shape[0] != expected_len):
        raise AnalyzerError(f"{path}: expected a 1-D array of {expected_len} entries, found shape {arr.shape}")
    return arr


def write_index_file(prefix: str, data: np.ndarray, sizes: np.ndarray | None, dtype: Any) -> None:
    """Write ``prefix.bin/.idx`` from flat ``data`` split into items of ``sizes`` (None: one element per item).

    doc_idx is ``[0, N]`` (one document holding every item), dtype codes follow DeepSpeed's table.
    The ``.bin`` is published before the ``.idx``, so a prefix whose ``.idx`` exists is complete.
    """
    dt = np.dtype(dtype)
    flat = np.ascontiguousarray(data).reshape(-1)
    if flat.dtype != dt:
        if flat.size and dt.kind in "iu":
            info = np.iinfo(dt)
            lo, hi = int(flat.min()), int(flat.max())
            if lo < info.min or hi > info.max:
                raise AnalyzerError(f"{prefix}: values in [{lo}, {hi}] do not fit {dt}")
        flat = flat.astype(dt)
    sizes_arr = np.ones(flat.size, dtype=np.int64) if sizes is None else np.asarray(sizes, dtype=np.int64).reshape(-1)
    if int(sizes_arr.sum()) != flat.size:
        raise AnalyzerError(f"{prefix}: item sizes add up to {int(sizes_arr.sum())}, but {flat.size} elements "
                            "were given")
    n = sizes_arr.size
    pointers = np.zeros(n, dtype=np.int64)
    if n > 1:
        np.cumsum(sizes_arr[:-1], out=pointers[1:])
    pointers *= dt.itemsize
    doc_idx = np.array([0, n], dtype=np.int64)
    bin_path, idx_path = data_file_path(prefix), index_file_path(prefix)
    fd_bin, tmp_bin = _temp_path(bin_path)
    fd_idx, tmp_idx = _temp_path(idx_path)
    try:
        with os.fdopen(fd_bin, "wb") as f:
            f.write(flat.data)
        with os.fdopen(fd_idx, "wb") as f:
            f.write(_HEADER.pack(_MAGIC, 1, code(dt, INDEX_DTYPE_TABLE), n, doc_idx.size))
            f.write(sizes_arr.astype("<i4").tobytes())
            f.write(pointers.astype("<i8").tobytes())
            f.write(doc_idx.astype("<i8").tobytes())
        if os.path.exists(idx_path):  # an old .idx next to a new .bin would look complete
            os.remove(idx_path)
        _publish(tmp_bin, bin_path)
        _publish(tmp_idx, idx_path)
    except BaseException:
        for tmp in (tmp_bin, tmp_idx):
            if os.path.exists(tmp):
                os.remove(tmp)
        raise


def read_index_file(prefix: str) -> MMapIndexedDataset:
    """Open an analyzer index file (DeepSpeed dtype table); missing or corrupt files raise :class:`AnalyzerError`."""
    try:
        return MMapIndexedDataset(prefix, skip_warmup=True, dtype_table=INDEX_DTYPE_TABLE)
    except IndexedDatasetError as e:
        raise AnalyzerError(f"{e} (analyzer output; re-run the analyzer stage that writes it)") from None


def read_index_rows(prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Flat data and item sizes of an analyzer index file (vectorized: one read, no per-row Python)."""
    ds = read_index_file(prefix)  # validates header, sizes, pointers and the .bin size
    return np.fromfile(data_file_path(prefix), dtype=ds.dtype), np.asarray(ds.sizes, dtype=np.int64)
