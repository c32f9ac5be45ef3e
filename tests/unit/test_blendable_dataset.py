"""Blended datasets: every dataset's count stays within one sample of its share at every prefix."""
from __future__ import annotations

import numpy as np
import pytest

from megatron.data.blendable_dataset import BlendableDataset, blend_splits, build_blending_indices, integer_shares
from megatron.data.dataset_utils import DatasetError, get_datasets_weights_and_num_samples, parse_data_path


def max_prefix_error(dataset_index: np.ndarray, weights: list[float]) -> float:
    """max over datasets i and prefixes n of |count_i(n) - w_i * n|."""
    n = np.arange(1, len(dataset_index) + 1)
    total = sum(weights)
    return max(
        float(np.abs(np.cumsum(dataset_index == i) - w / total * n).max()) for i, w in enumerate(weights)
    )


def megatron_greedy(weights: list[float], size: int) -> np.ndarray:
    """Megatron's rule (pick the dataset with the largest error), for comparison."""
    w, counts, out = np.asarray(weights), np.zeros(len(weights)), np.empty(size, dtype=np.int64)
    for s in range(size):
        i = int(np.argmax(w * max(s, 1) - counts))
        out[s], counts[i] = i, counts[i] + 1
    return out


@pytest.mark.parametrize("seed", range(6))
def test_share_within_one_sample_at_every_prefix(seed):
    rng = np.random.RandomState(seed)
    m = rng.randint(2, 12)
    weights = [round(float(x), 3) for x in rng.dirichlet(np.full(m, rng.choice([0.3, 1.0, 5.0])))]
    weights[0] += 0.001  # no zero weight in this test
    counts = integer_shares(weights)
    period = sum(counts)
    dataset_index, sample_index = build_blending_indices(weights, 2 * period + 17)  # several periods, cut mid-period
    assert max_prefix_error(dataset_index, weights) < 1.0
    # dataset_sample_index counts each dataset's samples 0, 1, 2, ... in order
    for i in range(m):
        np.testing.assert_array_equal(sample_index[dataset_index == i], np.arange(int((dataset_index == i).sum())))


def test_three_datasets_where_megatrons_greedy_drifts():
    weights = [0.05, 0.05, 0.9]
    ours = build_blending_indices(weights, 5000)[0]
    assert max_prefix_error(ours, weights) < 1.0
    assert max_prefix_error(megatron_greedy(weights, 5000), weights) > 1.0  # why we do not use it


def test_deterministic_zero_weight_and_fine_weights():
    a = build_blending_indices([0.3, 0.7], 1000)
    b = build_blending_indices([0.3, 0.7], 1000)
    np.testing.assert_array_equal(a[0], b[0])
    assert np.bincount(a[0].astype(np.int64)).tolist() == [300, 700]
    idx, _ = build_blending_indices([0.5, 0.0, 0.5], 100)
    assert 1 not in set(idx.tolist())
    w = [1 / 3, 2 / 3]
    assert integer_shares(w) == [1, 2]
    irrational = [np.sqrt(2) / 3, 1 - np.sqrt(2) / 3]  # no small exact period: rounded to a 2^20 period
    idx, _ = build_blending_indices(irrational, 20000)
    assert max_prefix_error(idx, irrational) < 1.0


class Numbers:
    """A tiny dataset whose samples say where they come from."""

    def __init__(self, tag: int, n: int, with_index: bool = False) -> None:
        self.tag, self.n, self.with_index = tag, n, with_index

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        out = {"text": np.array([self.tag, i], dtype=np.int64)}
        if self.with_index:
            out["index"] = np.array([i], dtype=np.int64)
        return out


def test_blendable_dataset_items_and_errors():
    blend = BlendableDataset([Numbers(0, 40), Numbers(1, 80, with_index=True)], [1, 2], 90)
    assert len(blend) == 90
    tags = [int(blend[i]["text"][0]) for i in range(90)]
    assert tags.count(0) == 30
    second = [int(blend[i]["text"][1]) for i in range(90) if tags[i] == 1]
    assert second == list(range(60))
    j = tags.index(1)
    assert blend[j]["index"].tolist() == [j]  # position in the blend, as the analyzer needs
    with pytest.raises(DatasetError, match="has 10 samples but a blend of 90"):
        BlendableDataset([Numbers(0, 10), Numbers(1, 80)], [1, 2], 90)
    with pytest.raises(IndexError):
        blend[90]


def test_data_path_parsing_and_scaled_counts():
    assert parse_data_path(["/d/a"]) == (["/d/a"], [1.0])
    prefixes, weights, nums = get_datasets_weights_and_num_samples(["0.3", "A", "0.7", "B"], [1000, 100, 10])
    assert prefixes == ["A", "B"] and weights == pytest.approx([0.3, 0.7])
    assert nums == [[302, 31, 4], [704, 71, 8]]  # ceil(n * w * 1.005)
    for bad in (["A", "B"], ["0.3", "A", "B"], ["-1", "A", "2", "B"], ["0", "A", "0", "B"], []):
        with pytest.raises(DatasetError, match="--data-path"):
            parse_data_path(bad)


def test_blend_splits_skips_missing_splits_and_exact_train_size():
    splits = [(Numbers(0, 50), None, Numbers(0, 5)), (Numbers(1, 100), Numbers(1, 10), None)]
    train, valid, test = blend_splits(splits, [1, 1], [60, 8, 4])
    assert len(train) == 60 and len(valid) == 8 and len(test) == 4
    assert {int(valid[i]["text"][0]) for i in range(8)} == {1}
    train, _, _ = blend_splits(splits, [1, 1], [1, 1, 1], train_exact=True)
    assert len(train) == 100  # as many as the blend can take without running dataset 0 dry
