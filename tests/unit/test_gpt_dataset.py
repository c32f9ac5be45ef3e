"""GPT dataset: index maps (vs a per-sample loop reference), sample content, splits, exact epochs, cache, pinning."""
from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from megatron.data import gpt_dataset as gd
from megatron.data.blendable_dataset import BlendableDataset
from megatron.data.dataset_utils import DatasetError, get_train_valid_test_split_
from megatron.data.indexed_dataset import MMapIndexedDatasetBuilder


def write_docs(prefix: str, docs: list[np.ndarray]) -> None:
    """Write one item per document (GPT document-level data)."""
    builder = MMapIndexedDatasetBuilder(prefix + ".bin", dtype=np.uint16)
    for d in docs:
        builder.add_item(np.asarray(d, dtype=np.uint16))
        builder.end_document()
    builder.finalize(prefix + ".idx")


def random_docs(rng: np.random.RandomState, n: int, max_len: int = 40, zero_frac: float = 0.1) -> list[np.ndarray]:
    """Documents of random length (some empty, some longer than a sample) with random token ids."""
    lengths = rng.randint(1, max_len, size=n)
    lengths[rng.random_sample(n) < zero_frac] = 0
    return [rng.randint(0, 60000, size=k) for k in lengths]


def loop_sample_idx(sizes, doc_idx, seq_length, epochs, tokens_per_epoch):
    """Plain per-sample loop (the logic of Megatron's C++ helper), the reference for the vectorised build."""
    num_samples = (epochs * tokens_per_epoch - 1) // seq_length
    out = [(0, 0)]
    pos, offset = 0, 0
    for _ in range(num_samples):
        remaining = seq_length + 1
        while remaining != 0:
            doc_length = int(sizes[doc_idx[pos]]) - offset
            remaining -= doc_length
            if remaining <= 0:
                offset += remaining + doc_length - 1
                remaining = 0
            else:
                pos += 1
                offset = 0
        out.append((pos, offset))
    return np.array(out)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("seq_length", [1, 7, 16, 64])
def test_sample_idx_equals_loop_reference(seed, seq_length):
    rng = np.random.RandomState(seed)
    sizes = rng.randint(0, 50, size=60).astype(np.int32)
    sizes[rng.random_sample(60) < 0.2] = 0
    sizes[[3, 17]] = [150, 0]
    documents = np.arange(5, 55, dtype=np.int32)
    tpe = gd.num_tokens(documents, sizes)
    epochs = 3
    doc_idx = gd.build_doc_idx(documents, epochs, np.random.RandomState(seed), False)
    got = gd.build_sample_idx(sizes, doc_idx, seq_length, epochs, tpe)
    np.testing.assert_array_equal(got, loop_sample_idx(sizes, doc_idx, seq_length, epochs, tpe))


def test_num_epochs_and_separate_last_epoch_rule():
    tpe, sl = 1001, 10  # 100 samples per epoch
    assert gd.num_epochs(tpe, sl, 100) == 1
    assert gd.num_epochs(tpe, sl, 101) == 2
    assert gd.num_epochs(tpe, sl, 250) == 3
    assert not gd.separate_last_epoch(1, tpe, sl, 50)
    assert gd.separate_last_epoch(2, tpe, sl, 100 + 79)  # last epoch 79 % used
    assert not gd.separate_last_epoch(2, tpe, sl, 100 + 81)


def test_doc_idx_separates_last_epoch_and_is_deterministic():
    documents = np.arange(10, 30, dtype=np.int32)
    a = gd.build_doc_idx(documents, 3, np.random.RandomState(5), True)
    b = gd.build_doc_idx(documents, 3, np.random.RandomState(5), True)
    np.testing.assert_array_equal(a, b)
    assert a.dtype == np.int32 and len(a) == 60
    np.testing.assert_array_equal(np.sort(a[:40]), np.sort(np.tile(documents, 2)))
    np.testing.assert_array_equal(np.sort(a[40:]), documents)  # the last epoch is shuffled on its own
    shuffle = gd.build_shuffle_idx(70, 100, np.random.RandomState(0))
    assert sorted(shuffle[:70]) == list(range(70)) and sorted(shuffle[70:]) == list(range(70, 100))


def test_split_boundaries_and_errors():
    assert get_train_valid_test_split_("949,50,1", 1000) == [0, 949, 999, 1000]
    assert get_train_valid_test_split_("90,10", 100) == [0, 90, 100, 100]
    assert get_train_valid_test_split_("1,1,1", 5) == [0, 1, 3, 5]  # rounding excess shifts every boundary
    assert get_train_valid_test_split_("1/1/1", 10) == [0, 4, 7, 10]
    assert get_train_valid_test_split_("1", 7) == [0, 7, 7, 7]
    for bad in ("a,b", "1,2,3,4", "0,0,0", "-1,2,3", ""):
        with pytest.raises(DatasetError, match="--split"):
            get_train_valid_test_split_(bad, 100)


def make_prefix(tmp_path, n_docs=80, seed=0, name="corpus"):
    rng = np.random.RandomState(seed)
    docs = random_docs(rng, n_docs)
    prefix = str(tmp_path / name)
    write_docs(prefix, docs)
    return prefix, docs


def test_sample_content_equals_shuffled_token_stream(tmp_path):
    prefix, docs = make_prefix(tmp_path)
    train, valid, test = gd.build_train_valid_test_datasets([prefix], "mmap", "80,10,10", [300, 20, 5], 16, 1234)
    assert isinstance(train, gd.GPTDataset) and valid is not None and test is not None
    bounds = get_train_valid_test_split_("80,10,10", len(docs))
    for ds, (lo, hi) in ((train, bounds[0:2]), (valid, bounds[1:3])):
        assert set(np.unique(ds.doc_idx)) <= set(range(lo, hi))
        stream = np.concatenate([docs[d] for d in ds.doc_idx]).astype(np.int64)
        assert len(ds) >= {"train": 300, "valid": 20}[ds.name]
        for i in range(len(ds)):
            j = int(ds.shuffle_idx[i])
            sample = ds[i]["text"]
            assert sample.dtype == np.int64 and sample.shape == (17,)
            np.testing.assert_array_equal(sample, stream[j * 16 : j * 16 + 17])


def test_determinism_same_seed_same_samples_other_seed_differs(tmp_path):
    prefix, _ = make_prefix(tmp_path)
    a = gd.build_train_valid_test_datasets([prefix], "mmap", "1", [100, 0, 0], 8, 7, index_cache_dir=str(tmp_path / "a"))[0]
    b = gd.build_train_valid_test_datasets([prefix], "mmap", "1", [100, 0, 0], 8, 7, index_cache_dir=str(tmp_path / "b"))[0]
    c = gd.build_train_valid_test_datasets([prefix], "mmap", "1", [100, 0, 0], 8, 8, index_cache_dir=str(tmp_path / "c"))[0]
    np.testing.assert_array_equal(np.stack([a[i]["text"] for i in range(50)]), np.stack([b[i]["text"] for i in range(50)]))
    assert not np.array_equal(np.stack([a[i]["text"] for i in range(50)]), np.stack([c[i]["text"] for i in range(50)]))


def test_empty_split_is_none_and_cache_file_names(tmp_path):
    prefix, _ = make_prefix(tmp_path)
    train, valid, test = gd.build_train_valid_test_datasets([prefix], "mmap", "1,0,0", [40, 10, 10], 8, 3)
    assert valid is None and test is None
    for key in ("doc", "sample", "shuffle"):
        assert os.path.isfile(f"{prefix}_train_indexmap_40ns_8sl_3s_{key}_idx.npy")


def test_exact_epochs_count_and_names(tmp_path):
    prefix, docs = make_prefix(tmp_path)
    bounds = get_train_valid_test_split_("949,50,1", len(docs))
    tpe = sum(len(d) for d in docs[bounds[0] : bounds[1]])
    for epochs in (1, 3):
        train, valid, _ = gd.build_train_valid_test_datasets(
            [prefix], "mmap", "949,50,1", [1, 1, 1], 32, 1234, train_data_exact_num_epochs=epochs
        )
        assert len(train) == (epochs * tpe - 1) // 32
        assert len(train.doc_idx) == epochs * (bounds[1] - bounds[0])
        for key in ("doc", "sample", "shuffle"):
            assert os.path.isfile(f"{prefix}_train_indexmap_exact{epochs}ep_32sl_1234s_{key}_idx.npy")
        assert os.path.isfile(f"{prefix}_valid_indexmap_1ns_32sl_1234s_doc_idx.npy")  # valid keeps the count


def test_pinned_index_paths_and_their_errors(tmp_path):
    prefix, _ = make_prefix(tmp_path)
    cache = tmp_path / "analysis"
    ref = gd.build_train_valid_test_datasets([prefix], "mmap", "1", [1, 0, 0], 16, 1234, train_data_exact_num_epochs=1,
                                             index_cache_dir=str(cache))[0]
    names = gd.index_map_filenames(str(cache / "corpus"), "train", 0, 16, 1234, exact_epochs=1)
    pins = dict(train_doc_idx_path=names["doc"], train_sample_idx_path=names["sample"], train_shuffle_idx_path=names["shuffle"])
    # Pretraining asks for another sample count and seed, but the pinned maps decide the order.
    pinned = gd.build_train_valid_test_datasets([prefix], "mmap", "1", [10, 0, 0], 16, 99, **pins)[0]
    assert len(pinned) == len(ref)
    for i in range(len(ref)):
        np.testing.assert_array_equal(pinned[i]["text"], ref[i]["text"])
    missing = dict(pins, train_sample_idx_path=str(tmp_path / "nope.npy"))
    with pytest.raises(DatasetError, match="--train-sample-idx-path .*nope.npy.*not found"):
        gd.build_train_valid_test_datasets([prefix], "mmap", "1", [10, 0, 0], 16, 1234, **missing)
    with pytest.raises(DatasetError, match="--train-doc-idx-path.*does not match"):  # maps made for seq_length 16
        gd.build_train_valid_test_datasets([prefix], "mmap", "1", [10, 0, 0], 8, 1234, **pins)
    with pytest.raises(DatasetError, match="does not match"):  # maps of another split
        gd.build_train_valid_test_datasets([prefix], "mmap", "50,50", [10, 10, 0], 16, 1234, **pins)


def test_cache_reused_and_inconsistent_cache_rebuilt(tmp_path, monkeypatch, caplog):
    prefix, _ = make_prefix(tmp_path)
    first = gd.build_train_valid_test_datasets([prefix], "mmap", "1", [50, 0, 0], 8, 1)[0]
    first_sample_idx = np.array(first.sample_idx)  # the maps are memory-mapped files
    calls = []
    real = gd.build_sample_idx
    monkeypatch.setattr(gd, "build_sample_idx", lambda *a: calls.append(1) or real(*a))
    again = gd.build_train_valid_test_datasets([prefix], "mmap", "1", [50, 0, 0], 8, 1)[0]
    assert calls == []  # loaded from the .npy files
    np.testing.assert_array_equal(again.shuffle_idx, first.shuffle_idx)
    path = gd.index_map_filenames(prefix, "train", 50, 8, 1)["sample"]
    np.save(path, np.zeros((3, 2), dtype=np.int32))
    with caplog.at_level(logging.WARNING):
        rebuilt = gd.build_train_valid_test_datasets([prefix], "mmap", "1", [50, 0, 0], 8, 1)[0]
    assert calls == [1] and "inconsistent" in caplog.text
    np.testing.assert_array_equal(rebuilt.sample_idx, first_sample_idx)
    assert np.load(path).shape == first_sample_idx.shape
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_return_data_index_is_position_before_shuffle(tmp_path):
    prefix, _ = make_prefix(tmp_path)
    train = gd.build_train_valid_test_datasets([prefix], "mmap", "1", [30, 0, 0], 8, 2, return_data_index=True)[0]
    for i in (0, 5, 29):
        sample = train[i]
        assert sample["index"].dtype == np.int64 and sample["index"].tolist() == [i]
        np.testing.assert_array_equal(sample["text"], train.tokens(int(train.shuffle_idx[i])))
    plain = gd.build_train_valid_test_datasets([prefix], "mmap", "1", [30, 0, 0], 8, 2)[0]
    assert "index" not in plain[0]


def test_blended_data_path_builds_proportional_blend(tmp_path):
    pa, _ = make_prefix(tmp_path, seed=1, name="a")
    pb, _ = make_prefix(tmp_path, seed=2, name="b")
    train, valid, _ = gd.build_train_valid_test_datasets(["0.3", pa, "0.7", pb], "mmap", "90,10,0", [200, 20, 0], 8, 4)
    assert isinstance(train, BlendableDataset) and len(train) == 200 and len(valid) == 20
    counts = np.bincount(train.dataset_index.astype(np.int64), minlength=2)
    assert counts.tolist() == [60, 140]
    i = int(np.flatnonzero(train.dataset_index == 1)[3])
    np.testing.assert_array_equal(train[i]["text"], train.datasets[1][int(train.dataset_sample_index[i])]["text"])
    with pytest.raises(DatasetError, match="--data-path"):
        gd.build_train_valid_test_datasets(["0.3", pa, pb], "mmap", "1", [10, 0, 0], 8, 4)


def _two_rank_worker(rank: int, prefix: str, init_file: str, results: str) -> None:
    """Rank 1 must not build the maps: it waits on the barrier and loads rank 0's files."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        if rank == 1:
            gd.build_sample_idx = lambda *a: (_ for _ in ()).throw(AssertionError("rank 1 built an index map"))
        train = gd.build_train_valid_test_datasets([prefix], "mmap", "1", [60, 0, 0], 8, 11)[0]
        np.save(f"{results}_{rank}.npy", np.stack([train[i]["text"] for i in range(len(train))]))
    finally:
        dist.destroy_process_group()


def test_rank0_builds_other_ranks_wait_and_load(tmp_path):
    import torch.multiprocessing as mp

    prefix, _ = make_prefix(tmp_path)
    results = str(tmp_path / "samples")
    # fork: the children need no fresh torch import (seconds on a busy 2-core machine)
    mp.start_processes(_two_rank_worker, args=(prefix, str(tmp_path / "init"), results), nprocs=2, start_method="fork")
    np.testing.assert_array_equal(np.load(f"{results}_0.npy"), np.load(f"{results}_1.npy"))
    assert os.path.isfile(gd.index_map_filenames(prefix, "train", 60, 8, 11)["shuffle"])


def test_tiny_split_repeats_epochs_and_empty_split_errors(tmp_path):
    prefix = str(tmp_path / "tiny")
    docs = [np.arange(5), np.arange(3), np.zeros(0)]
    write_docs(prefix, docs)
    train = gd.build_train_valid_test_datasets([prefix], "mmap", "1", [4, 0, 0], 8, 1)[0]
    assert len(train) >= 4 and len(train.doc_idx) == 3 * gd.num_epochs(8, 8, 4)  # many epochs of 8 tokens
    stream = np.concatenate([docs[int(d)] for d in train.doc_idx])
    j = int(train.shuffle_idx[0])
    np.testing.assert_array_equal(train[0]["text"], stream[j * 8 : j * 8 + 9])
    with pytest.raises(DatasetError, match="fewer than one sample of --seq-length 8.*exact-num-epochs"):
        gd.build_train_valid_test_datasets([prefix], "mmap", "1", [1, 0, 0], 8, 1, train_data_exact_num_epochs=1)
    empty = str(tmp_path / "empty")
    write_docs(empty, [np.zeros(0), np.zeros(0)])
    with pytest.raises(DatasetError, match="train split has no tokens"):
        gd.build_train_valid_test_datasets([empty], "mmap", "1", [1, 0, 0], 8, 1)


def test_unwritable_index_cache_is_one_clear_error(tmp_path):
    # Regression: a cache location that cannot be written raised a bare OSError traceback.
    prefix, _ = make_prefix(tmp_path)
    not_a_dir = tmp_path / "cache_is_a_file"
    not_a_dir.write_text("x")
    with pytest.raises(DatasetError, match=r"cache_is_a_file.*cannot write index map.*--data-cache-path"):
        gd.build_train_valid_test_datasets([prefix], "mmap", "1,0,0", [40, 0, 0], 8, 3, index_cache_dir=str(not_a_dir))
