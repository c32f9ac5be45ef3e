"""Blend several datasets by weight (``--data-path 0.3 A 0.7 B``) with a deterministic proportional interleave.

Sample n of the blend is sample ``dataset_sample_index[n]`` of dataset ``dataset_index[n]``. The order
keeps every dataset's count within one sample of its share at every prefix:
``|count_i(n) - w_i * n| < 1`` for all n (Megatron's greedy "largest error first" rule only gets within
about 1.8 samples with three or more datasets). It is an earliest-deadline-first schedule: the k-th
sample of dataset i may not come before prefix length ``floor(k / w_i)`` (else it is ahead by 1) and must
come before ``ceil((k + 1) / w_i)`` (else it is behind by 1); EDF meets every such window because a
schedule within them exists (Tijdeman's chairman-assignment theorem). Weights are turned into exact
integer shares a_i / Q; one period of Q samples is scheduled (a heap, O(Q log m)) and tiled with numpy
for any size, so the cost does not grow with the blend size beyond the vectorised tiling.
"""
from __future__ import annotations

import heapq
import logging
import math
from fractions import Fraction
from typing import Any, Sequence

import numpy as np
import torch

from megatron.data.dataset_utils import DatasetError

logger = logging.getLogger(__name__)

MAX_PERIOD = 1 << 20  # longest exactly scheduled period; finer weights are rounded to shares of it


def integer_shares(weights: Sequence[float], max_period: int = MAX_PERIOD) -> list[int]:
    """Integers a_i with a_i / sum(a) equal to the normalised weights (exactly when the period allows)."""
    if not weights or any(not math.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise DatasetError(f"blend weights must be non-negative with a positive sum, got {list(weights)}")
    fractions = []
    for w in weights:
        f = Fraction(w).limit_denominator(10**6)
        fractions.append(f if abs(float(f) - w) <= 1e-12 * max(1.0, w) else Fraction(w))
    total = sum(fractions)
    shares = [f / total for f in fractions]
    period = math.lcm(*(s.denominator for s in shares))
    if period <= max_period:
        return [int(s * period) for s in shares]
    # Largest-remainder rounding to max_period: the mix then drifts by at most n / max_period samples.
    exact = [float(s) * max_period for s in shares]
    counts = [int(math.floor(x)) for x in exact]
    order = sorted(range(len(exact)), key=lambda i: exact[i] - counts[i], reverse=True)
    for i in order[: max_period - sum(counts)]:
        counts[i] += 1
    logger.warning("blend weights %s rounded to integer shares of a %d-sample period", list(weights), max_period)
    return counts


def _schedule_period(counts: Sequence[int], length: int) -> np.ndarray:
    """Earliest-deadline-first order of the first ``length`` (<= one period) samples."""
    period = sum(counts)
    taken = [0] * len(counts)
    released = [(0, i) for i, a in enumerate(counts) if a > 0]  # (release slot, dataset)
    ready: list[tuple[int, int]] = []  # (deadline slot, dataset)
    order = np.empty(length, dtype=np.int64)
    for slot in range(length):
        while released and released[0][0] <= slot:
            _, i = heapq.heappop(released)
            a, k = counts[i], taken[i]
            heapq.heappush(ready, (((k + 1) * period + a - 1) // a - 1, i))
        deadline, i = heapq.heappop(ready)
        if deadline < slot:  # cannot happen (a feasible schedule exists); guard against silent drift
            raise RuntimeError(f"blend schedule missed a deadline at slot {slot}")
        order[slot] = i
        taken[i] += 1
        heapq.heappush(released, ((taken[i] * period) // counts[i], i))
    return order


def _occurrence(order: np.ndarray, num_datasets: int) -> np.ndarray:
    """For each position, how many earlier positions hold the same dataset."""
    sort = np.argsort(order, kind="stable")
    firsts = np.zeros(num_datasets + 1, dtype=np.int64)
    np.cumsum(np.bincount(order, minlength=num_datasets), out=firsts[1:])
    occ = np.empty(len(order), dtype=np.int64)
    occ[sort] = np.arange(len(order), dtype=np.int64) - firsts[order[sort]]
    return occ


def build_blending_indices(weights: Sequence[float], size: int) -> tuple[np.ndarray, np.ndarray]:
    """(dataset_index, dataset_sample_index) of a blend of ``size`` samples with the given weights."""
    counts = integer_shares(weights)
    period = sum(counts)
    one = _schedule_period(counts, min(int(size), period))
    occ = _occurrence(one, len(counts))
    reps = -(-int(size) // len(one)) if size else 0
    dtype = np.uint8 if len(counts) <= 255 else np.int16
    dataset_index = np.tile(one, reps)[:size].astype(dtype)
    rep = np.repeat(np.arange(reps, dtype=np.int64), len(one))[:size]
    dataset_sample_index = np.tile(occ, reps)[:size] + rep * np.asarray(counts, dtype=np.int64)[dataset_index]
    return dataset_index, dataset_sample_index


class BlendableDataset(torch.utils.data.Dataset):
    """``size`` samples drawn from ``datasets`` in proportion to ``weights`` (normalised)."""

    def __init__(self, datasets: Sequence[Any], weights: Sequence[float], size: int) -> None:
        if len(datasets) != len(weights) or not datasets:
            raise DatasetError(f"BlendableDataset needs one weight per dataset, got {len(datasets)} datasets and {len(weights)} weights")
        self.datasets = list(datasets)
        total = float(sum(weights))
        self.weights = [float(w) / total for w in weights] if total > 0 else list(weights)
        self.size = int(size)
        self.dataset_index, self.dataset_sample_index = build_blending_indices(self.weights, self.size)
        needed = np.zeros(len(datasets), dtype=np.int64)
        np.maximum.at(needed, self.dataset_index.astype(np.int64), self.dataset_sample_index + 1)
        for i, (ds, n) in enumerate(zip(self.datasets, needed)):
            if n > len(ds):
                raise DatasetError(
                    f"blended dataset {i} ({getattr(ds, 'data_prefix', type(ds).__name__)}) has {len(ds)} samples "
                    f"but a blend of {self.size} with weight {self.weights[i]:.4f} needs {int(n)}"
                )

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, idx: int) -> dict[str, np.ndarray]:
        idx = int(idx)
        if not 0 <= idx < self.size:
            raise IndexError(f"blended sample {idx} out of range [0, {self.size})")
        sample = self.datasets[int(self.dataset_index[idx])][int(self.dataset_sample_index[idx])]
        if "index" in sample:  # the analyzer needs the position in THIS dataset
            sample = dict(sample)
            sample["index"] = np.array([idx], dtype=np.int64)
        return sample


def blend_splits(
    splits: Sequence[Sequence[Any]],
    weights: Sequence[float],
    train_valid_test_num_samples: Sequence[int],
    *,
    train_exact: bool = False,
) -> tuple[Any, Any, Any]:
    """Blend per-dataset (train, valid, test) triples; with ``train_exact`` the train blend uses all it can."""
    out: list[Any] = []
    for s, requested in enumerate(train_valid_test_num_samples):
        pairs = [(split[s], w) for split, w in zip(splits, weights) if split[s] is not None and w > 0]
        if not pairs:
            out.append(None)
            continue
        datasets, ws = [p[0] for p in pairs], [p[1] for p in pairs]
        total = sum(ws)
        ws = [w / total for w in ws]
        size = int(requested)
        if s == 0 and train_exact:
            size = min(int(math.floor(len(d) / w)) for d, w in zip(datasets, ws))
        out.append(BlendableDataset(datasets, ws, size))
    return out[0], out[1], out[2]
