"""Pretraining batch samplers and data loaders (Megatron's "single" and "cyclic" loaders).

* ``single`` (MegatronPretrainingSampler): samples in order from ``consumed_samples``; every block of
  ``micro_batch_size * data_parallel_size`` indices is split so rank r gets its slice. Resuming with the
  consumed-sample count of a checkpoint continues exactly where the run stopped.
* ``cyclic`` (MegatronPretrainingRandomSampler): each rank owns a contiguous bucket of the dataset and
  reads it in a random order that is reshuffled every epoch (``torch.Generator`` seeded with
  ``seed + epoch``); it cycles over epochs forever, and resumes exactly from ``consumed_samples``.
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import numpy as np
import torch

from megatron.data.dataset_utils import DatasetError


def _check(total: int, consumed: int, mbs: int, rank: int, dp: int) -> None:
    """Validate sampler arguments with one clear message."""
    if total <= 0:
        raise DatasetError("the dataset is empty (no samples to draw)")
    if mbs <= 0:
        raise DatasetError(f"--micro-batch-size must be > 0, got {mbs}")
    if dp <= 0 or not 0 <= rank < dp:
        raise DatasetError(f"data-parallel rank {rank} is not in [0, {dp})")
    if consumed < 0:
        raise DatasetError(f"consumed samples must be >= 0, got {consumed}")


class MegatronPretrainingSampler:
    """Sequential micro-batches of this rank's indices, starting at ``consumed_samples``."""

    def __init__(
        self, total_samples: int, consumed_samples: int, micro_batch_size: int,
        data_parallel_rank: int, data_parallel_size: int, drop_last: bool = True,
    ) -> None:
        _check(total_samples, consumed_samples, micro_batch_size, data_parallel_rank, data_parallel_size)
        if consumed_samples >= total_samples:
            raise DatasetError(f"no samples left: consumed {consumed_samples} of {total_samples}")
        self.total_samples, self.consumed_samples = total_samples, consumed_samples
        self.micro_batch_size, self.drop_last = micro_batch_size, drop_last
        self.rank, self.dp = data_parallel_rank, data_parallel_size
        self.block = micro_batch_size * data_parallel_size

    def __len__(self) -> int:
        remaining = self.total_samples - self.consumed_samples
        tail = remaining % self.block
        has_tail = not self.drop_last and round((self.rank + 1) * tail / self.dp) > round(self.rank * tail / self.dp)
        return remaining // self.block + int(has_tail)

    def __iter__(self) -> Iterator[list[int]]:
        start = self.consumed_samples
        full_end = start + (self.total_samples - start) // self.block * self.block
        lo = self.rank * self.micro_batch_size
        for block in range(start, full_end, self.block):
            yield list(range(block + lo, block + lo + self.micro_batch_size))
        tail = self.total_samples - full_end
        if tail and not self.drop_last:
            # Split a short last block evenly (ranks differ by at most one sample; DS PR #5118).
            a = full_end + round(self.rank * tail / self.dp)
            b = full_end + round((self.rank + 1) * tail / self.dp)
            if b > a:
                yield list(range(a, b))


class MegatronPretrainingRandomSampler:
    """Random micro-batches from this rank's bucket, reshuffled per epoch; cycles forever."""

    def __init__(
        self, total_samples: int, consumed_samples: int, micro_batch_size: int,
        data_parallel_rank: int, data_parallel_size: int, seed: int = 0,
    ) -> None:
        _check(total_samples, consumed_samples, micro_batch_size, data_parallel_rank, data_parallel_size)
        self.block = micro_batch_size * data_parallel_size
        if total_samples < self.block:
            raise DatasetError(
                f"the dataset has {total_samples} samples, fewer than one global micro-batch "
                f"({micro_batch_size} x {data_parallel_size} data-parallel ranks)"
            )
        self.total_samples, self.consumed_samples = total_samples, consumed_samples
        self.micro_batch_size, self.rank, self.dp, self.seed = micro_batch_size, data_parallel_rank, data_parallel_size, seed
        self.active_total = total_samples - total_samples % self.block  # the short remainder is never drawn
        self.bucket = self.active_total // data_parallel_size

    def __len__(self) -> int:
        return self.active_total // self.block

    def __iter__(self) -> Iterator[list[int]]:
        consumed = self.consumed_samples
        if consumed % self.block:
            raise DatasetError(f"consumed samples {consumed} is not a multiple of micro-batch x data-parallel size {self.block}")
        while True:
            epoch, in_epoch = divmod(consumed, self.active_total)
            g = torch.Generator()
            g.manual_seed(self.seed + epoch)
            order = torch.randperm(self.bucket, generator=g).numpy() + self.rank * self.bucket
            for lo in range(in_epoch // self.dp, self.bucket - self.micro_batch_size + 1, self.micro_batch_size):
                consumed += self.block
                yield order[lo : lo + self.micro_batch_size].tolist()
            consumed = (epoch + 1) * self.active_total


def collate_samples(samples: Sequence[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """Stack a list of sample dicts into a dict of tensors (integers as int64)."""
    if not samples:
        return {}
    out = {}
    for key in samples[0]:
        arr = np.stack([np.asarray(s[key]) for s in samples])
        if np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_:
            arr = arr.astype(np.int64, copy=False)
        out[key] = torch.from_numpy(np.ascontiguousarray(arr))
    return out


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: workers ignore SIGINT/SIGTERM (Ctrl-C and schedulers signal the whole process
    group); the main process decides when to stop (``--exit-signal-handler``) and shuts its workers down."""
    import signal

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def build_pretraining_data_loader(
    dataset: Any,
    consumed_samples: int,
    micro_batch_size: int,
    data_parallel_rank: int,
    data_parallel_size: int,
    *,
    dataloader_type: str = "single",
    num_workers: int = 0,
    drop_last: bool = True,
    seed: int = 0,
) -> torch.utils.data.DataLoader | None:
    """DataLoader of this rank's micro-batches (dicts of int64 tensors) for ``dataset``; None without a dataset."""
    if dataset is None:
        return None
    args = (len(dataset), consumed_samples, micro_batch_size, data_parallel_rank, data_parallel_size)
    if dataloader_type == "single":
        sampler: Any = MegatronPretrainingSampler(*args, drop_last=drop_last)
    elif dataloader_type == "cyclic":
        sampler = MegatronPretrainingRandomSampler(*args, seed=seed)
    else:
        raise DatasetError(f"--dataloader-type {dataloader_type!r}: expected 'single' or 'cyclic'")
    return torch.utils.data.DataLoader(
        dataset, batch_sampler=sampler, num_workers=num_workers, collate_fn=collate_samples,
        pin_memory=torch.cuda.is_available(), persistent_workers=num_workers > 0,
        worker_init_fn=ignore_stop_signals if num_workers > 0 else None,
    )
