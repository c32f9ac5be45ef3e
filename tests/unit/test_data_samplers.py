"""Pretraining samplers/loaders: rank slices, resume at consumed_samples, cyclic epochs, collation."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from megatron.data.data_samplers import (
    MegatronPretrainingRandomSampler,
    MegatronPretrainingSampler,
    build_pretraining_data_loader,
    collate_samples,
)
from megatron.data.dataset_utils import DatasetError


class Identity:
    """Sample i is {"text": [i, i], "index": [i]}."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        return {"text": np.array([i, i], dtype=np.uint16), "index": np.array([i], dtype=np.int64), "flag": np.int64(i % 2)}


def test_single_sampler_rank_slices_cover_global_batches():
    per_rank = [list(MegatronPretrainingSampler(50, 0, 3, r, 2)) for r in range(2)]
    assert per_rank[0][0] == [0, 1, 2] and per_rank[1][0] == [3, 4, 5]
    assert len(per_rank[0]) == len(per_rank[1]) == 8 == len(MegatronPretrainingSampler(50, 0, 3, 0, 2))
    flat = sorted(i for r in per_rank for batch in r for i in batch)
    assert flat == list(range(48))  # the short last block (2 samples) is dropped


def test_single_sampler_resume_continues_exactly():
    full = list(MegatronPretrainingSampler(100, 0, 4, 1, 3))
    for steps in (0, 1, 5):
        resumed = list(MegatronPretrainingSampler(100, steps * 12, 4, 1, 3))
        assert resumed == full[steps:]


def test_single_sampler_keeps_short_last_block_balanced():
    per_rank = [list(MegatronPretrainingSampler(38, 24, 3, r, 3, drop_last=False)) for r in range(3)]
    assert [b[0] for b in per_rank] == [[24, 25, 26], [27, 28, 29], [30, 31, 32]]  # one full block
    tails = [b[1] for b in per_rank]  # 5 samples left for 3 ranks: split 2/1/2, not 3/2/0
    assert sorted(len(t) for t in tails) == [1, 2, 2]
    assert sorted(i for t in tails for i in t) == list(range(33, 38))
    assert all(len(b) == 1 for b in (list(MegatronPretrainingSampler(38, 24, 3, r, 3)) for r in range(3)))


def test_cyclic_sampler_epochs_buckets_and_resume():
    samplers = [MegatronPretrainingRandomSampler(22, 0, 2, r, 2, seed=3) for r in range(2)]
    per_epoch = len(samplers[0])
    assert per_epoch == 5  # 22 -> 20 usable samples, 4 per step
    streams = [list(itertools.islice(iter(s), 3 * per_epoch)) for s in samplers]
    for epoch in range(3):
        seen = [i for s in streams for b in s[epoch * per_epoch : (epoch + 1) * per_epoch] for i in b]
        assert sorted(seen) == list(range(20))  # each epoch covers the data once, ranks disjoint
    assert streams[0][:per_epoch] != streams[0][per_epoch : 2 * per_epoch]  # reshuffled per epoch
    for steps in (1, 4, 5, 7):
        resumed = MegatronPretrainingRandomSampler(22, steps * 4, 2, 0, 2, seed=3)
        assert list(itertools.islice(iter(resumed), 6)) == streams[0][steps : steps + 6]
    other_seed = MegatronPretrainingRandomSampler(22, 0, 2, 0, 2, seed=4)
    assert list(itertools.islice(iter(other_seed), 5)) != streams[0][:5]


def test_loader_collates_int64_tensors_and_resumes():
    ds = Identity(40)
    loader = build_pretraining_data_loader(ds, 0, 4, 0, 1)
    batches = list(loader)
    assert len(batches) == 10
    b = batches[0]
    assert set(b) == {"text", "index", "flag"}
    assert b["text"].dtype == torch.int64 and b["text"].shape == (4, 2) and b["index"].shape == (4, 1)
    assert b["flag"].tolist() == [0, 1, 0, 1]
    resumed = build_pretraining_data_loader(ds, 12, 4, 0, 1)
    assert torch.equal(next(iter(resumed))["text"], batches[3]["text"])
    cyclic = iter(build_pretraining_data_loader(ds, 0, 4, 1, 2, dataloader_type="cyclic", seed=1))
    seen = [int(x) for _ in range(10) for x in next(cyclic)["index"][:, 0]]
    assert len(seen) == 40 and sorted(seen[:20]) == list(range(20, 40))  # rank 1 reads its own half
    assert build_pretraining_data_loader(None, 0, 4, 0, 1) is None


def test_loader_with_workers_matches_in_process():
    ds = Identity(24)
    a = [b["text"] for b in build_pretraining_data_loader(ds, 0, 4, 0, 1)]
    b = [b["text"] for b in build_pretraining_data_loader(ds, 0, 4, 0, 1, num_workers=1)]
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and len(a) == len(b) == 6


def test_sampler_errors():
    with pytest.raises(DatasetError, match="dataloader-type"):
        build_pretraining_data_loader(Identity(10), 0, 2, 0, 1, dataloader_type="bogus")
    with pytest.raises(DatasetError, match="no samples left"):
        MegatronPretrainingSampler(10, 10, 2, 0, 1)
    with pytest.raises(DatasetError, match="rank 2"):
        MegatronPretrainingSampler(10, 0, 2, 2, 2)
    with pytest.raises(DatasetError, match="fewer than one global micro-batch"):
        MegatronPretrainingRandomSampler(3, 0, 2, 0, 2)
    assert collate_samples([]) == {}


def test_single_sampler_len_matches_iteration():
    for total, consumed, mbs, dp in ((38, 24, 3, 3), (31, 0, 2, 3), (30, 6, 2, 3), (7, 0, 4, 2)):
        for rank in range(dp):
            for drop_last in (True, False):
                s = MegatronPretrainingSampler(total, consumed, mbs, rank, dp, drop_last=drop_last)
                assert len(s) == len(list(s))
