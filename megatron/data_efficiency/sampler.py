"""The curriculum sampler (spec §3.3, with DeepSpeed's known bugs fixed): a batch_sampler for torch DataLoader.

Per global batch (G = micro_batch × dp × grad_accum samples):

1. ``curriculum_step += 1`` (the first batch uses step 1); every metric's scheduler updates. When a difficulty
   changed (or on the first batch) a new cluster is built (:mod:`.cluster`): sorted, disjoint from earlier
   clusters, then shuffled with the sampler's own RNG. Empty clusters are skipped.
2. Cluster counts ~ Multinomial(G, sizes / Σ sizes): clusters are drawn in proportion to their size.
3. Each cluster hands out its next ids; an exhausted cluster is reshuffled and the loop goes on until the count
   is met, so the global batch is ALWAYS full (DeepSpeed PR #8520 returned short batches from tiny clusters).
4. The batch is shuffled. Every rank computes the SAME batch from the same seed and index files, so nothing is
   broadcast (DeepSpeed broadcast from rank 0); when torch.distributed is initialized with several ranks, a
   16-byte all-reduce checks that the ranks agree (on the process group's device: :mod:`.collectives`). Every rank therefore needs read access to the index files.
5. The batch is cut into ``G / (micro_batch × dp)`` micro-blocks; rank r yields ids [r·n//dp, (r+1)·n//dp) of
   each block, so shares differ by at most 1 even for a short last block (DeepSpeed PR #5118's rule).

RNG: one ``np.random.default_rng(seed)`` used for everything; ``state_dict`` saves ITS ``bit_generator.state``
(DeepSpeed saved the global legacy RNG: DS #8405), so a resumed run continues the same stream. Clusters are not
stored in the checkpoint: each is recorded by the difficulties that made it, its size and checksum, its position
and the RNG state of its last shuffle, and rebuilt exactly on load (or read back from ``data_cluster_path`` when
a file there has the right checksum).

Consumption tracking (``track_consumption=True``, used by the facade): a DataLoader with workers pulls the
sampler ahead of training. :meth:`consume` pops the info of the oldest yielded micro-batch — its curriculum step
and difficulties, i.e. those of the batch being processed — and :meth:`state_dict` then describes the state right
after the last CONSUMED micro-batch, so prefetched batches are neither skipped nor replayed on resume.
"""
from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch
from tqdm import tqdm

from .collectives import all_reduce_ints
from .cluster import (ClusterBuilder, CurriculumDataError, MetricIndex, cluster_checksum, read_cluster_file,
                      write_cluster_file)
from .config import CurriculumLearningConfig, DataEfficiencyConfig
from .scheduler import CurriculumScheduler

logger = logging.getLogger(__name__)

__all__ = ["CurriculumSampler", "MicroBatchInfo"]

STATE_VERSION = 1
MAX_PENDING = 100_000
_BIT_GENERATORS = {"PCG64": np.random.PCG64, "PCG64DXSM": np.random.PCG64DXSM, "MT19937": np.random.MT19937,
                   "Philox": np.random.Philox, "SFC64": np.random.SFC64}


@dataclass
class _Cluster:
    name: str
    previous: dict[str, float]
    current: dict[str, int]
    base: np.ndarray  # sorted ids
    order: np.ndarray  # the current shuffle of base
    position: int
    shuffle_state: dict[str, Any]  # RNG state right before the shuffle that produced `order`
    checksum: str


@dataclass(frozen=True)
class _Snapshot:
    """Sampler state right after a global batch was drawn (positions/shuffles per existing cluster)."""

    curriculum_step: int
    difficulties: dict[str, int]
    rng_state: dict[str, Any]
    clusters: tuple[tuple[int, dict[str, Any]], ...]
    consumed_before: int
    batch: np.ndarray


@dataclass(frozen=True)
class MicroBatchInfo:
    """What produced one yielded micro-batch: its curriculum step and difficulties."""

    curriculum_step: int
    """Curriculum step of the global batch (1 for the first)."""
    difficulties: Mapping[str, int]
    """Difficulty of every metric for this batch."""
    snapshot: _Snapshot = field(repr=False)
    end: int = field(repr=False, default=0)


def _generator_from_state(state: Mapping[str, Any]) -> np.random.Generator:
    name = state.get("bit_generator") if isinstance(state, Mapping) else None
    if name not in _BIT_GENERATORS:
        raise CurriculumDataError(f"sampler state: unknown bit generator {name!r}")
    bg = _BIT_GENERATORS[name]()
    bg.state = state
    return np.random.Generator(bg)


def _global_rank() -> int:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank()
    return 0


class CurriculumSampler:
    """Yields, per micro-batch, this data-parallel rank's list of dataset indices (a DataLoader batch_sampler)."""

    def __init__(self, curriculum: CurriculumLearningConfig, num_samples: int, micro_batch_size: int, *,
                 data_parallel_rank: int = 0, data_parallel_size: int = 1, gradient_accumulation_steps: int = 1,
                 seed: int = 1234, num_epochs: int = 1000, drop_last: bool = True, group: Any = None,
                 indexes: Mapping[str, MetricIndex] | None = None, cluster_dir: str | None = None,
                 track_consumption: bool = False) -> None:
        if num_samples < 1:
            raise ValueError(f"curriculum sampler: the training dataset is empty ({num_samples} samples)")
        if micro_batch_size < 1 or data_parallel_size < 1 or gradient_accumulation_steps < 1:
            raise ValueError(f"curriculum sampler: micro_batch_size ({micro_batch_size}), data_parallel_size "
                             f"({data_parallel_size}) and gradient_accumulation_steps ({gradient_accumulation_steps}) "
                             f"must be >= 1")
        if not 0 <= data_parallel_rank < data_parallel_size:
            raise ValueError(f"curriculum sampler: data_parallel_rank {data_parallel_rank} is outside "
                             f"[0, {data_parallel_size})")
        if not curriculum.metrics:
            raise ValueError("curriculum sampler: curriculum_learning has no curriculum_metrics")
        self.config = curriculum
        self.num_samples = int(num_samples)
        self.micro_batch_size = micro_batch_size
        self.dp_rank = data_parallel_rank
        self.dp_size = data_parallel_size
        self.block_size = micro_batch_size * data_parallel_size
        self.global_batch_size = self.block_size * gradient_accumulation_steps
        self.total_samples = self.num_samples * int(num_epochs)
        self.drop_last = drop_last
        self.group = group
        self.seed = int(seed)
        self.track_consumption = track_consumption
        self.cluster_dir = cluster_dir if cluster_dir is not None else curriculum.data_cluster_path
        self.schedulers = {m.name: CurriculumScheduler(m.schedule, m.name) for m in curriculum.metrics}
        if indexes is None:
            indexes = {m.name: MetricIndex.from_files(m, "data_efficiency.data_sampling.curriculum_learning."
                                                         "curriculum_metrics")
                       for m in curriculum.metrics if m.schedule_based}
        self._builder = ClusterBuilder(curriculum.metrics, indexes, self.num_samples)
        self.fingerprint = self._fingerprint(indexes)
        if self.cluster_dir and _global_rank() == 0:
            os.makedirs(self.cluster_dir, exist_ok=True)
        self._rng = np.random.default_rng(self.seed)
        self.curriculum_step = 0
        self.current_difficulties: dict[str, int] = {}
        self._clusters: list[_Cluster] = []
        self.consumed_samples = 0  # samples yielded so far (all ranks together)
        self._batch = np.zeros(0, dtype=np.int64)
        self._batch_pos = 0
        self._snap = self._snapshot(self._batch, 0)
        self._pending: collections.deque[MicroBatchInfo] = collections.deque()
        self._marker: tuple[_Snapshot, int] = (self._snap, 0)

    @classmethod
    def from_config(cls, config: DataEfficiencyConfig, num_samples: int, micro_batch_size: int,
                    **kwargs: Any) -> "CurriculumSampler":
        """Build from the parsed ``data_efficiency`` block (seed, num_epochs, curriculum_learning)."""
        kwargs.setdefault("seed", config.seed)
        kwargs.setdefault("num_epochs", config.data_sampling.num_epochs)
        return cls(config.data_sampling.curriculum_learning, num_samples, micro_batch_size, **kwargs)

    # ------------------------------------------------------------------------------------------------------------
    def _fingerprint(self, indexes: Mapping[str, MetricIndex]) -> str:
        desc = {"num_samples": self.num_samples, "metrics": [
            {"name": m.name, "difficulty_type": m.difficulty_type, "clustering_type": m.clustering_type,
             "schedule": repr(m.schedule),
             "index": [indexes[m.name].num_rows, indexes[m.name].num_ids] if m.name in indexes else None}
            for m in self.config.metrics]}
        return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:12]

    def set_custom_curriculum_learning_schedule(self, schedule_fns: Mapping[str, Callable[[int], int]]) -> None:
        """Install ``{metric: fn(step) -> difficulty}`` for metrics with schedule_type custom."""
        for name, fn in schedule_fns.items():
            if name not in self.schedulers:
                raise ValueError(f"set_custom_curriculum_learning_schedule: unknown curriculum metric {name!r}; "
                                 f"configured metrics: {', '.join(self.schedulers)}")
            self.schedulers[name].set_custom_get_difficulty(fn)

    def __len__(self) -> int:
        full, rest = divmod(self.total_samples, self.block_size)
        return full + (1 if rest and not self.drop_last else 0)

    @property
    def num_clusters(self) -> int:
        """Clusters built so far."""
        return len(self._clusters)

    @property
    def cluster_sizes(self) -> list[int]:
        """Size of every cluster built so far."""
        return [len(c.base) for c in self._clusters]

    def cluster_ids(self, i: int) -> np.ndarray:
        """Sorted sample ids of cluster ``i`` (a read-only view)."""
        view = self._clusters[i].base.view()
        view.flags.writeable = False
        return view

    @property
    def clusters_info(self) -> list[dict[str, Any]]:
        """Name, size and the (previous, current) difficulties of every cluster built so far."""
        return [{"name": c.name, "size": len(c.base), "previous": dict(c.previous), "current": dict(c.current)}
                for c in self._clusters]

    # ------------------------------------------------------------------------------------------------------------
    def _snapshot(self, batch: np.ndarray, consumed_before: int) -> _Snapshot:
        return _Snapshot(self.curriculum_step, dict(self.current_difficulties), self._rng.bit_generator.state,
                         tuple((c.position, c.shuffle_state) for c in self._clusters), consumed_before, batch)

    def _cluster_name(self, current: Mapping[str, int]) -> str:
        return "cluster" + "".join(f"_{name}{current[name]}" for name in self.schedulers) + f"_{self.fingerprint}"

    def _new_cluster(self, previous: dict[str, float], current: dict[str, int]) -> None:
        ids = self._builder.candidates(previous, current)
        if len(ids) == 0:
            logger.debug("curriculum: no new samples between difficulties %s and %s; no cluster added", previous,
                         current)
            return
        name = self._cluster_name(current)
        checksum = cluster_checksum(ids)
        if self.cluster_dir and _global_rank() == 0:
            write_cluster_file(os.path.join(self.cluster_dir, name), ids)
        self._builder.commit(ids)
        state = self._rng.bit_generator.state
        order = ids.copy()
        self._rng.shuffle(order)
        self._clusters.append(_Cluster(name, dict(previous), dict(current), ids, order, 0, state, checksum))
        logger.debug("curriculum: new cluster %s with %d samples (difficulties %s -> %s)", name, len(ids), previous,
                     current)

    def _take(self, cluster: _Cluster, count: int) -> list[np.ndarray]:
        parts = []
        while count > 0:
            available = len(cluster.order) - cluster.position
            if available == 0:  # reshuffle from the sorted base, so the order can be rebuilt from the RNG state
                cluster.shuffle_state = self._rng.bit_generator.state
                order = cluster.base.copy()  # a new array: `parts` may still hold views of the old order
                self._rng.shuffle(order)
                cluster.order, cluster.position = order, 0
                available = len(cluster.order)
            take = min(count, available)
            parts.append(cluster.order[cluster.position:cluster.position + take])
            cluster.position += take
            count -= take
        return parts

    def _advance_difficulties(self) -> tuple[bool, dict[str, float]]:
        self.curriculum_step += 1
        changed = not self.current_difficulties
        previous: dict[str, float] = {}
        for m in self.config.metrics:
            new = self.schedulers[m.name].update_difficulty(self.curriculum_step)
            if self.current_difficulties.get(m.name) != new:
                changed = True
            if m.name in self.current_difficulties:
                previous[m.name] = self.current_difficulties[m.name]
            else:
                previous[m.name] = float("-inf") if m.difficulty_type == "value" else 0
            self.current_difficulties[m.name] = new
        return changed, previous

    def next_global_batch(self) -> np.ndarray:
        """Draw the next global batch (int64 ids, length G) and advance the curriculum by one step."""
        changed, previous = self._advance_difficulties()
        if changed:
            self._new_cluster(previous, dict(self.current_difficulties))
        if not self._clusters:
            raise CurriculumDataError(
                f"curriculum: no training sample is allowed at step {self.curriculum_step} with difficulties "
                f"{self.current_difficulties}; lower min_difficulty (or check the index files)")
        sizes = np.array([len(c.base) for c in self._clusters], dtype=np.float64)
        counts = self._rng.multinomial(self.global_batch_size, sizes / sizes.sum())
        parts: list[np.ndarray] = []
        for cluster, count in zip(self._clusters, counts):
            if count:
                parts.extend(self._take(cluster, int(count)))
        batch = np.concatenate(parts).astype(np.int64)
        self._rng.shuffle(batch)
        self._check_ranks_agree(batch)
        return batch

    def _check_ranks_agree(self, batch: np.ndarray) -> None:
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        if self.group is None and torch.distributed.get_world_size() == 1:
            return
        digest = hashlib.blake2b(batch.data, digest_size=8).digest()
        h = int.from_bytes(digest, "little") >> 2
        high, low = all_reduce_ints([h, -h], torch.distributed.ReduceOp.MAX, self.group)  # on the group's device
        if high != h or low != -h:
            raise RuntimeError(f"curriculum sampler: ranks drew different global batches at step "
                               f"{self.curriculum_step}; every rank needs the same config, seed, dataset and index "
                               f"files")

    # ------------------------------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[list[int]]:
        while True:
            left = self.total_samples - self.consumed_samples
            if left <= 0:
                return
            if self._batch_pos >= len(self._batch):
                consumed_before = self.consumed_samples
                batch = self.next_global_batch()
                self._batch, self._batch_pos = batch, 0
                self._snap = self._snapshot(batch, consumed_before)
            n = min(self.block_size, len(self._batch) - self._batch_pos, left)
            if n < self.block_size and self.drop_last:
                return
            block = self._batch[self._batch_pos:self._batch_pos + n]
            self._batch_pos += n
            self.consumed_samples += n
            info = MicroBatchInfo(self._snap.curriculum_step, self._snap.difficulties, self._snap, self._batch_pos)
            if self.track_consumption:
                if len(self._pending) >= MAX_PENDING:
                    raise RuntimeError(f"curriculum sampler: {MAX_PENDING} micro-batches yielded but never "
                                       f"consumed; call consume() once per micro-batch (or track_consumption=False)")
                self._pending.append(info)
            else:
                self._marker = (info.snapshot, info.end)
            lo, hi = self.dp_rank * n // self.dp_size, (self.dp_rank + 1) * n // self.dp_size
            yield block[lo:hi].tolist()

    def consume(self) -> MicroBatchInfo:
        """Mark the oldest yielded micro-batch as processed and return its step and difficulties."""
        if not self._pending:
            raise RuntimeError("curriculum sampler: consume() called but no yielded micro-batch is pending "
                               "(post_process must be called once per micro-batch drawn from this sampler)")
        info = self._pending.popleft()
        self._marker = (info.snapshot, info.end)
        return info

    # ------------------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """State after the last consumed (or, without tracking, yielded) micro-batch; plain Python types only."""
        snap, end = self._marker
        clusters = []
        for c, (position, shuffle_state) in zip(self._clusters, snap.clusters):
            clusters.append({"name": c.name, "previous": dict(c.previous), "current": dict(c.current),
                             "size": int(len(c.base)), "checksum": c.checksum, "position": int(position),
                             "shuffle_state": shuffle_state})
        return {
            "version": STATE_VERSION,
            "num_samples": self.num_samples,
            "metrics": list(self.schedulers),
            "seed": self.seed,
            "consumed_samples": int(snap.consumed_before + end),
            "curriculum_step": int(snap.curriculum_step),
            "current_difficulties": {k: int(v) for k, v in snap.difficulties.items()},
            "batch": snap.batch[end:].tolist(),
            "np_rng_state": snap.rng_state,
            "clusters": clusters,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output: the next batches continue the saved stream exactly."""
        if state.get("version") != STATE_VERSION:
            raise CurriculumDataError(f"curriculum sampler checkpoint: unsupported state version "
                                      f"{state.get('version')!r} (expected {STATE_VERSION})")
        if int(state["num_samples"]) != self.num_samples:
            raise CurriculumDataError(f"curriculum sampler checkpoint: saved for a training set of "
                                      f"{state['num_samples']} samples, but this run's has {self.num_samples}")
        if list(state["metrics"]) != list(self.schedulers):
            raise CurriculumDataError(f"curriculum sampler checkpoint: saved with curriculum metrics "
                                      f"{list(state['metrics'])}, but this run configures {list(self.schedulers)}")
        remainder = np.asarray(state["batch"], dtype=np.int64)
        if len(remainder) % self.block_size:
            raise CurriculumDataError(f"curriculum sampler checkpoint: saved mid-way through a global batch with "
                                      f"{len(remainder)} ids left, not a multiple of micro_batch × dp = "
                                      f"{self.block_size}; resume with the same batch sizes")
        self._builder.reset()
        records = list(state["clusters"])
        quiet = sum(int(r["size"]) for r in records) < 5_000_000 or _global_rank() != 0
        self._clusters = [self._restore_cluster(rec) for rec in
                          tqdm(records, desc="rebuilding curriculum clusters", unit="cluster", disable=quiet)]
        self._rng = _generator_from_state(state["np_rng_state"])
        self.curriculum_step = int(state["curriculum_step"])
        self.current_difficulties = {k: int(v) for k, v in state["current_difficulties"].items()}
        for name, sched in self.schedulers.items():
            if name in self.current_difficulties:
                sched.current_difficulty = self.current_difficulties[name]
        self.consumed_samples = int(state["consumed_samples"])
        self._batch, self._batch_pos = remainder, 0
        self._snap = self._snapshot(remainder, self.consumed_samples)
        self._marker = (self._snap, 0)
        self._pending.clear()

    def _restore_cluster(self, rec: Mapping[str, Any]) -> _Cluster:
        name, size, checksum = str(rec["name"]), int(rec["size"]), str(rec["checksum"])
        ids = None
        path = os.path.join(self.cluster_dir, name) if self.cluster_dir else None
        if path:
            stored = read_cluster_file(path)
            if stored is not None and len(stored) == size and cluster_checksum(stored) == checksum:
                ids = stored.astype(self._builder.dtype, copy=False)
            elif stored is not None:
                logger.warning("curriculum: cluster file %s does not match the checkpoint (stale?); rebuilding it "
                               "from the index files", path)
        if ids is None:
            previous = {k: float(v) for k, v in rec["previous"].items()}
            ids = self._builder.candidates(previous, {k: int(v) for k, v in rec["current"].items()})
            if len(ids) != size or cluster_checksum(ids) != checksum:
                raise CurriculumDataError(
                    f"curriculum sampler checkpoint: cluster {name} rebuilt from the index files has {len(ids)} "
                    f"samples (checkpoint: {size}) or different ids; the index files or the training dataset "
                    f"changed since the checkpoint was written")
            if path and _global_rank() == 0:
                write_cluster_file(path, ids)
        self._builder.commit(ids)
        order = ids.copy()
        _generator_from_state(rec["shuffle_state"]).shuffle(order)
        return _Cluster(name, dict(rec["previous"]), dict(rec["current"]), ids, order, int(rec["position"]),
                        rec["shuffle_state"], checksum)
