"""Curriculum clusters: which samples are allowed at a difficulty (spec §3.3 step 2), vectorized.

A :class:`MetricIndex` holds one metric's analyzer output flattened: sample ids in metric order (rows of
``{m}_index_to_sample[_percentile_merged]``), row offsets, and the row values (``{m}_index_to_metric``, value mode).

* value mode: rows with ``start < metric <= end`` — two ``np.searchsorted`` calls on the sorted row values.
* percentile mode: flattened positions ``[per * p_start, per * p_end)`` with ``per = n // max_difficulty``
  (n = ids in the index); when ``p_end == max_difficulty`` the range runs to n, so the ``n % max_difficulty``
  tail samples belong to the last percentile (DeepSpeed's rule).

:class:`ClusterBuilder` makes the NEXT cluster from (previous, current) difficulties, K = schedule-based metrics:

* K <= 1: the schedule-based metric's increment (prev, cur]; with no schedule-based metric, the whole dataset
  once (first cluster only).
* K >= 2: the intersection over metrics of "<= current difficulty" (single_cluster metrics: everything).

In both cases samples already in an earlier cluster are removed, so clusters are always disjoint (for monotone
schedules this removes nothing in the K <= 1 case). Clusters come back SORTED; the sampler shuffles them.
"""
from __future__ import annotations

import hashlib
import logging
import os
from typing import Mapping, Sequence

import numpy as np

from .config import CurriculumMetricConfig

logger = logging.getLogger(__name__)

__all__ = ["CurriculumDataError", "MetricIndex", "ClusterBuilder", "cluster_checksum", "index_dtype_for"]


class CurriculumDataError(ValueError):
    """Missing, corrupt or inconsistent curriculum index / cluster files; the message names the file and key."""


def index_dtype_for(num_samples: int) -> np.dtype:
    """Smallest dtype for sample ids 0..num_samples that has a code in Megatron's MMIDIDX table (cluster files)."""
    for t in (np.uint8, np.uint16, np.int32, np.int64):
        if num_samples <= np.iinfo(t).max:
            return np.dtype(t)
    raise CurriculumDataError(f"{num_samples} samples do not fit a 64-bit index")


def cluster_checksum(ids: np.ndarray) -> str:
    """Content hash of a sorted cluster (dtype-independent: hashed as little-endian int64)."""
    h = hashlib.blake2b(digest_size=12)
    h.update(str(len(ids)).encode())
    step = 1 << 22
    for start in range(0, len(ids), step):
        h.update(np.ascontiguousarray(ids[start:start + step], dtype="<i8").data)
    return h.hexdigest()


def _open_int_dataset(prefix: str, where: str):  # -> MMapIndexedDataset
    """Open an analyzer file: DeepSpeed's dtype table first (what analyzers write), then Megatron's."""
    from megatron.data.indexed_dataset import IndexedDatasetError, MMapIndexedDataset

    try:
        ds = MMapIndexedDataset(prefix, dtype_table="deepspeed")
    except IndexedDatasetError as first:
        try:  # codes 6 and 8 differ in item size between the tables, so a wrong table is detected
            ds = MMapIndexedDataset(prefix)
        except IndexedDatasetError:
            raise CurriculumDataError(f"{where}: {first}") from None
    if ds.dtype.kind not in "iu":
        raise CurriculumDataError(f"{where}: {prefix}.idx holds {ds.dtype} items; expected integer sample ids / "
                                  f"metric values")
    return ds


def _flat_items(ds) -> np.ndarray:  # ds: MMapIndexedDataset (validated: items are contiguous in the .bin)
    """Every element of every item, in item order, as a read-only memory map (no copy)."""
    total = int(np.asarray(ds.sizes, dtype=np.int64).sum())
    if total == 0:
        return np.zeros(0, dtype=ds.dtype)
    return np.memmap(ds.path_prefix + ".bin", dtype=ds.dtype, mode="r", shape=(total,))


class MetricIndex:
    """One metric's samples in metric order, with per-row metric values; answers range queries in O(log V)."""

    def __init__(self, samples: np.ndarray, row_offsets: np.ndarray, row_values: np.ndarray | None = None,
                 name: str = "metric") -> None:
        self.name = name
        self.samples = np.asarray(samples)
        self.row_offsets = np.asarray(row_offsets, dtype=np.int64)
        self.row_values = None if row_values is None else np.asarray(row_values)
        if self.row_offsets[0] != 0 or self.row_offsets[-1] != len(self.samples):
            raise CurriculumDataError(f"{name}: row offsets do not cover the {len(self.samples)} sample ids")
        if self.row_values is not None:
            if len(self.row_values) != self.num_rows:
                raise CurriculumDataError(f"{name}: {self.num_rows} rows of sample ids but {len(self.row_values)} "
                                          f"metric values")
            if self.num_rows > 1 and not bool(np.all(self.row_values[1:] > self.row_values[:-1])):
                bad = int(np.argmax(self.row_values[1:] <= self.row_values[:-1])) + 1
                raise CurriculumDataError(f"{name}: metric values must be strictly increasing, row {bad} has "
                                          f"{self.row_values[bad]} after {self.row_values[bad - 1]}")

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[int]], values: Sequence[int] | None = None,
                  name: str = "metric") -> "MetricIndex":
        """Build from in-memory rows (one list of sample ids per distinct value / percentile group)."""
        arrays = [np.asarray(r, dtype=np.int64).reshape(-1) for r in rows]
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum([len(a) for a in arrays], out=offsets[1:])
        flat = np.concatenate(arrays) if arrays else np.zeros(0, dtype=np.int64)
        return cls(flat, offsets, None if values is None else np.asarray(values, dtype=np.int64), name)

    @classmethod
    def from_files(cls, metric: CurriculumMetricConfig, key_path: str = "curriculum_metrics") -> "MetricIndex":
        """Open the analyzer files named by ``metric`` (errors name the config key and the file)."""
        where = f"{key_path}.{metric.name}.index_to_sample_path"
        assert metric.index_to_sample_path is not None
        sample_ds = _open_int_dataset(metric.index_to_sample_path, where)
        sizes = np.asarray(sample_ds.sizes, dtype=np.int64)
        offsets = np.zeros(len(sizes) + 1, dtype=np.int64)
        np.cumsum(sizes, out=offsets[1:])
        flat = _flat_items(sample_ds)
        values = None
        if metric.difficulty_type == "value":
            mwhere = f"{key_path}.{metric.name}.index_to_metric_path"
            assert metric.index_to_metric_path is not None
            metric_ds = _open_int_dataset(metric.index_to_metric_path, mwhere)
            if len(metric_ds) != len(sample_ds) or (len(metric_ds) and np.any(metric_ds.sizes != 1)):
                raise CurriculumDataError(
                    f"{mwhere}: {metric.index_to_metric_path} has {len(metric_ds)} rows, expected {len(sample_ds)} "
                    f"rows of one value each to match {metric.index_to_sample_path} (value mode needs the "
                    f"unmerged {{m}}_index_to_sample, not _percentile_merged)")
            values = np.array(_flat_items(metric_ds))
        try:
            return cls(flat, offsets, values, name=f"{key_path}.{metric.name} ({metric.index_to_sample_path})")
        except CurriculumDataError as exc:
            raise CurriculumDataError(f"{where}: {exc}") from None

    @property
    def num_rows(self) -> int:
        """Number of rows (distinct values or percentile groups)."""
        return len(self.row_offsets) - 1

    @property
    def num_ids(self) -> int:
        """Sample ids in the index (n)."""
        return len(self.samples)

    def select_value(self, start: float, end: float) -> np.ndarray:
        """Ids of rows with start < value <= end (value mode)."""
        if self.row_values is None:
            raise CurriculumDataError(f"{self.name}: value selection needs index_to_metric (difficulty_type value)")
        lo = int(np.searchsorted(self.row_values, start, side="right")) if start != float("-inf") else 0
        hi = int(np.searchsorted(self.row_values, end, side="right"))
        if hi <= lo:
            return self.samples[:0]
        return self.samples[self.row_offsets[lo]:self.row_offsets[hi]]

    def select_percentile(self, p_start: int, p_end: int, max_percentile: int) -> np.ndarray:
        """Ids at flattened positions [per*p_start, per*p_end) (to the end when p_end == max), per = n // max."""
        n = self.num_ids
        per = n // max_percentile
        start = per * max(int(p_start), 0)
        end = n if p_end == max_percentile else min(per * int(p_end), n)
        if end <= start:
            return self.samples[:0]
        return self.samples[start:end]

    def select(self, difficulty_type: str, previous: float, current: float, max_difficulty: int) -> np.ndarray:
        """Ids whose difficulty is above ``previous`` and at most ``current``."""
        if difficulty_type == "value":
            return self.select_value(previous, current)
        return self.select_percentile(int(previous), int(current), max_difficulty)


class ClusterBuilder:
    """Makes successive disjoint clusters from difficulty changes (K <= 1 increments, K >= 2 intersections)."""

    def __init__(self, metrics: Sequence[CurriculumMetricConfig], indexes: Mapping[str, MetricIndex],
                 num_samples: int) -> None:
        self.metrics = tuple(metrics)
        self.indexes = dict(indexes)
        self.num_samples = num_samples
        self.dtype = index_dtype_for(num_samples)
        self.scheduled = [m for m in self.metrics if m.schedule_based]
        for m in self.scheduled:
            if m.name not in self.indexes:
                raise CurriculumDataError(f"curriculum metric {m.name}: no index given for a schedule_based metric")
            idx = self.indexes[m.name]
            if idx.num_ids and int(idx.samples.max()) >= num_samples:
                raise CurriculumDataError(
                    f"curriculum_metrics.{m.name}.index_to_sample_path: {idx.name} refers to sample id "
                    f"{int(idx.samples.max())} but the training dataset has {num_samples} samples; the index was "
                    f"built from another dataset (rebuild it, or pin the same sample order with the "
                    f"--train-*-idx-path flags)")
            if idx.num_ids != num_samples:
                logger.warning("curriculum metric %s: the index holds %d sample ids but the dataset has %d samples; "
                               "samples missing from the index are never drawn", m.name, idx.num_ids, num_samples)
        self.assigned = np.zeros(num_samples, dtype=bool)
        self.num_clusters = 0

    def reset(self) -> None:
        """Forget every cluster made so far."""
        self.assigned[:] = False
        self.num_clusters = 0

    def _upto(self, metric: CurriculumMetricConfig, current: float) -> np.ndarray:
        low = float("-inf") if metric.difficulty_type == "value" else 0
        return self.indexes[metric.name].select(metric.difficulty_type, low, current,
                                                metric.schedule.max_difficulty)

    def candidates(self, previous: Mapping[str, float], current: Mapping[str, float]) -> np.ndarray:
        """The new cluster's ids, sorted and disjoint from earlier clusters (may be empty); no state change."""
        if len(self.scheduled) >= 2:
            mask = ~self.assigned
            for m in self.scheduled:
                allowed = np.zeros(self.num_samples, dtype=bool)
                allowed[self._upto(m, current[m.name])] = True
                mask &= allowed
            return np.flatnonzero(mask).astype(self.dtype, copy=False)
        if self.scheduled:
            m = self.scheduled[0]
            ids = self.indexes[m.name].select(m.difficulty_type, previous[m.name], current[m.name],
                                              m.schedule.max_difficulty)
            ids = ids[~self.assigned[ids]]
            out = np.sort(ids).astype(self.dtype, copy=False)
            if len(out) > 1 and not bool(np.all(out[1:] != out[:-1])):
                raise CurriculumDataError(f"curriculum metric {m.name}: {self.indexes[m.name].name} lists a sample "
                                          f"id more than once")
            return out
        if self.num_clusters == 0:
            return np.arange(self.num_samples, dtype=self.dtype)
        return np.zeros(0, dtype=self.dtype)

    def commit(self, ids: np.ndarray) -> None:
        """Record ``ids`` as the next cluster."""
        self.assigned[ids] = True
        self.num_clusters += 1


def write_cluster_file(prefix: str, ids: np.ndarray) -> None:
    """Write one cluster as a one-item MMIDIDX file (atomically, via the builder's temp files)."""
    from megatron.data.indexed_dataset import MMapIndexedDatasetBuilder

    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    builder = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=ids.dtype)
    with builder:
        builder.add_item(ids)
        builder.end_document()
        builder.finalize(prefix + ".idx")


def read_cluster_file(prefix: str) -> np.ndarray | None:
    """The ids of a cluster file, or None when it is absent or unreadable."""
    from megatron.data.indexed_dataset import IndexedDatasetError, MMapIndexedDataset, dataset_exists

    if not dataset_exists(prefix):
        return None
    try:
        ds = MMapIndexedDataset(prefix)
        if len(ds) != 1:
            return None
        return np.array(ds[0])
    except (IndexedDatasetError, OSError):
        return None
