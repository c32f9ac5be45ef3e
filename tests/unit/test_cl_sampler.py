"""Curriculum sampler (spec §3.3 / §13.4 with DS #8405, #8520, #5118 fixed): clusters, draws, sharding, resume."""
import io
import logging
import os
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from megatron.data_efficiency.analyzer_io import write_index_file
from megatron.data_efficiency.cluster import CurriculumDataError, MetricIndex
from megatron.data_efficiency.config import (CurriculumLearningConfig, CurriculumMetricConfig, DataEfficiencyConfigError,
                                             ScheduleConfig,
                                             parse_data_efficiency_config)
from megatron.data_efficiency.sampler import CurriculumSampler


def index_from_values(values, name="m"):
    """Analyzer-style index: one row per distinct value (ascending), ids ascending within a row."""
    values = np.asarray(values)
    order = np.argsort(values, kind="stable")
    distinct, starts = np.unique(values[order], return_index=True)
    return MetricIndex.from_rows(np.split(order, starts[1:]), distinct, name)


def value_metric(name, lo, hi, total, step=1, **kw):
    return CurriculumMetricConfig(name, "value", "schedule_based",
                                  ScheduleConfig("fixed_linear", lo, hi, total_curriculum_step=total,
                                                 difficulty_step=step), "idx", "metric", **kw)


def discrete_metric(name, levels, steps, dtype="value", clustering="schedule_based"):
    return CurriculumMetricConfig(name, dtype, clustering,
                                  ScheduleConfig("fixed_discrete", levels[0], levels[-1], difficulty=tuple(levels),
                                                 max_step=tuple(steps)), "idx", "metric")


def truncate_metric(lo=8, hi=64, total=20):
    return CurriculumMetricConfig("seqlen_truncate", "value", "single_cluster",
                                  ScheduleConfig("fixed_linear", lo, hi, total_curriculum_step=total, difficulty_step=8))


def make(metrics, indexes, n, mbs=4, dp=1, gas=2, rank=0, **kw):
    cl = CurriculumLearningConfig(True, None, tuple(metrics))
    return CurriculumSampler(cl, n, mbs, data_parallel_rank=rank, data_parallel_size=dp,
                             gradient_accumulation_steps=gas, indexes=indexes, **kw)


def take(sampler, k):
    it = iter(sampler)
    return [next(it) for _ in range(k)]


@pytest.fixture
def voc():
    rng = np.random.default_rng(0)
    values = rng.integers(0, 50, 400)
    return values, index_from_values(values, "voc")


def test_first_batch_uses_step_1_and_difficulties_follow_the_schedule(voc):
    values, idx = voc
    s = make([value_metric("voc", 2, 10, 8, step=2)], {"voc": idx}, len(values), gas=1, track_consumption=True)
    it = iter(s)
    seen = []
    for _ in range(10):
        next(it)
        info = s.consume()
        seen.append((info.curriculum_step, info.difficulties["voc"]))
    assert seen == list(zip(range(1, 11), [2, 4, 4, 6, 6, 8, 8, 10, 10, 10]))


def test_value_mode_clusters_are_increments_disjoint_and_never_above_difficulty(voc):
    values, idx = voc
    s = make([value_metric("voc", 5, 49, 30), truncate_metric()], {"voc": idx}, len(values), track_consumption=True)
    it = iter(s)
    for _ in range(80):
        ids = next(it)
        info = s.consume()
        assert values[ids].max() <= info.difficulties["voc"]
    seen = np.zeros(len(values), dtype=int)
    for i, c in enumerate(s.clusters_info):
        ids = s.cluster_ids(i)
        lo, hi = c["previous"]["voc"], c["current"]["voc"]
        assert np.all(values[ids] > lo) and np.all(values[ids] <= hi)
        assert np.array_equal(ids, np.flatnonzero((values > lo) & (values <= hi)))  # the whole increment
        seen[ids] += 1
    assert seen.max() == 1 and seen.sum() == len(values)  # disjoint and, at max difficulty, complete
    # the seqlen_truncate (single_cluster) changes alone never create a cluster
    assert all(c["previous"]["voc"] < c["current"]["voc"] for c in s.clusters_info)


def test_two_metrics_intersection_minus_previous_clusters():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 10, 300), rng.integers(0, 10, 300)
    metrics = [discrete_metric("a", [2, 5, 9], [2, 5]), discrete_metric("b", [3, 4, 6, 9], [1, 3, 6])]
    s = make(metrics, {"a": index_from_values(a), "b": index_from_values(b)}, 300)
    take(s, 2 * 12)
    used = np.zeros(300, dtype=bool)
    assert len(s.clusters_info) >= 4
    for i, c in enumerate(s.clusters_info):
        cur = c["current"]
        expected = np.flatnonzero((a <= cur["a"]) & (b <= cur["b"]) & ~used)
        assert np.array_equal(s.cluster_ids(i), expected)
        used[expected] = True


def test_percentile_mode_takes_flattened_positions_with_tail_in_last_percentile():
    rng = np.random.default_rng(2)
    values = rng.integers(0, 1000, 103)
    idx = index_from_values(values)
    flat = np.asarray(idx.samples)
    metric = discrete_metric("voc", [3, 7, 10], [1, 2], dtype="percentile")
    s = make([metric], {"voc": idx}, 103, gas=1)
    take(s, 3)
    per = 103 // 10
    assert [np.array_equal(s.cluster_ids(i), np.sort(flat[lo:hi])) for i, (lo, hi) in
            enumerate([(0, 3 * per), (3 * per, 7 * per), (7 * per, 103)])] == [True, True, True]
    assert s.cluster_sizes == [30, 40, 33]


def test_every_global_batch_is_full_even_with_tiny_clusters():
    values = np.array([0] + [1] * 2 + [2] * 500)  # clusters of 1 and 2 samples, then a big one
    s = make([discrete_metric("m", [0, 1, 2], [3, 6])], {"m": index_from_values(values)}, len(values),
             mbs=8, dp=2, gas=4)  # G = 64
    ranks = [make([discrete_metric("m", [0, 1, 2], [3, 6])], {"m": index_from_values(values)}, len(values),
                  mbs=8, dp=2, gas=4, rank=r) for r in range(2)]
    streams = [iter(r) for r in ranks]
    for step in range(1, 9):
        batch = [i for _ in range(4) for st in streams for i in next(st)]
        assert len(batch) == 64
        allowed = 0 if step <= 3 else 1 if step <= 6 else 2
        assert values[batch].max() <= allowed
    del s


def test_cluster_draws_are_proportional_to_size():
    values = np.array([1] * 100 + [2] * 900)
    s = make([discrete_metric("m", [1, 2], [1])], {"m": index_from_values(values)}, 1000, mbs=16, gas=4)
    batches = take(s, 4 * 301)[4:]  # skip step 1 (only the first cluster exists)
    ids = np.concatenate(batches)
    share = float(np.mean(values[ids] == 2))
    assert abs(share - 0.9) < 0.01


def test_data_parallel_shares_differ_by_at_most_one_and_cover_the_block():
    values = np.arange(10)
    metric = value_metric("m", 9, 9, 1)
    ref = make([metric], {"m": index_from_values(values)}, 10, mbs=6, dp=1, gas=1, drop_last=False, num_epochs=1)
    ranks = [make([metric], {"m": index_from_values(values)}, 10, mbs=2, dp=3, gas=1, rank=r, drop_last=False,
                  num_epochs=1) for r in range(3)]
    blocks = list(ref)
    shares = [list(r) for r in ranks]
    assert [len(b) for b in blocks] == [6, 4]
    assert [[len(x) for x in sh] for sh in shares] == [[2, 1], [2, 1], [2, 2]]
    for j, block in enumerate(blocks):
        assert sum((sh[j] for sh in shares), []) == block
    dropped = make([metric], {"m": index_from_values(values)}, 10, mbs=2, dp=3, gas=1, num_epochs=1)
    assert len(list(dropped)) == len(dropped) == 1


def resume_case(seed=7):
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 40, 150)
    metrics = [value_metric("voc", 3, 39, 25), truncate_metric()]
    return metrics, {"voc": index_from_values(values)}, 150


@pytest.mark.parametrize("k", [0, 1, 3, 8, 21, 50])
def test_save_load_continues_the_same_stream(k):
    metrics, indexes, n = resume_case()
    reference = take(make(metrics, indexes, n, mbs=3, dp=2, rank=1, gas=2), 120)
    first = make(metrics, indexes, n, mbs=3, dp=2, rank=1, gas=2)
    it = iter(first)
    got = [next(it) for _ in range(k)]
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf)  # weights_only: the state is plain Python types
    global_state = np.random.get_state()[1].copy()
    second = make(metrics, indexes, n, mbs=3, dp=2, rank=1, gas=2)
    second.load_state_dict(state)
    got += take(second, 120 - k)
    assert got == reference
    assert np.array_equal(np.random.get_state()[1], global_state)  # the global numpy RNG is not touched
    assert state["curriculum_step"] == (k + 1) // 2 and state["consumed_samples"] == 6 * k


def test_resume_after_prefetch_uses_the_consumed_position():
    metrics, indexes, n = resume_case(3)
    reference = make(metrics, indexes, n, track_consumption=True)
    ref_batches, ref_info = [], []
    it = iter(reference)
    for _ in range(40):
        ref_batches.append(next(it))
        ref_info.append(reference.consume().difficulties)
    live = make(metrics, indexes, n, track_consumption=True)
    it = iter(live)
    prefetched = [next(it) for _ in range(9)]  # a DataLoader running 6 micro-batches ahead
    infos = [live.consume() for _ in range(3)]
    assert [i.difficulties for i in infos] == ref_info[:3]  # difficulties of the batches being processed
    state = live.state_dict()
    assert prefetched == ref_batches[:9]
    resumed = make(metrics, indexes, n, track_consumption=True)
    resumed.load_state_dict(state)
    it = iter(resumed)
    rest = []
    for _ in range(37):
        rest.append(next(it))
        resumed.consume()
    assert rest == ref_batches[3:]


def test_custom_schedule_and_unknown_metric(voc):
    values, idx = voc
    metric = CurriculumMetricConfig("voc", "value", "schedule_based", ScheduleConfig("custom", 0, 49), "i", "m")
    s = make([metric], {"voc": idx}, len(values), gas=1, track_consumption=True)
    with pytest.raises(ValueError, match="unknown curriculum metric 'vocab'"):
        s.set_custom_curriculum_learning_schedule({"vocab": lambda k: k})
    s.set_custom_curriculum_learning_schedule({"voc": lambda k: 10 * k})
    it = iter(s)
    seen = []
    for _ in range(6):
        ids = next(it)
        seen.append(s.consume().difficulties["voc"])
        assert values[ids].max() <= seen[-1]
    assert seen == [10, 20, 30, 40, 50, 50]  # custom values are not clamped; updates stop once >= max (49)


def test_no_allowed_sample_is_a_clear_error():
    values = np.arange(10, 20)
    s = make([value_metric("m", 1, 5, 10)], {"m": index_from_values(values)}, 10)
    with pytest.raises(CurriculumDataError, match="no training sample is allowed at step 1"):
        take(s, 1)


def test_index_with_ids_beyond_the_dataset_is_rejected():
    with pytest.raises(CurriculumDataError, match="refers to sample id 11 but the training dataset has 10 samples"):
        make([value_metric("m", 1, 5, 10)], {"m": MetricIndex.from_rows([[0, 11]], [1])}, 10)


def test_checkpoint_from_another_dataset_is_rejected():
    metrics, indexes, n = resume_case()
    s = make(metrics, indexes, n)
    take(s, 4)
    other = make(metrics, {"voc": index_from_values(np.zeros(160, dtype=int))}, 160)
    with pytest.raises(CurriculumDataError, match="saved for a training set of 150 samples"):
        other.load_state_dict(s.state_dict())


# ---------------------------------------------------------------------------------------------------------------
# index files on disk, as written by the analyzer (DeepSpeed dtype table: uint32 ids need code 7)
def write_analyzer_files(directory, values):
    order = np.argsort(values, kind="stable")
    distinct, starts, counts = np.unique(values[order], return_index=True, return_counts=True)
    prefix = directory / "voc"
    write_index_file(str(prefix) + "_index_to_sample", order, counts, np.uint32)
    write_index_file(str(prefix) + "_index_to_metric", distinct, None, np.uint16)
    return str(prefix) + "_index_to_sample", str(prefix) + "_index_to_metric"


def file_config(sample_path, metric_path, cluster_dir, check_index_files=True):
    return parse_data_efficiency_config({"data_efficiency": {"seed": 99, "data_sampling": {
        "num_epochs": 2, "curriculum_learning": {"enabled": True, "data_cluster_path": cluster_dir,
                                                 "curriculum_metrics": {"voc": {
                                                     "index_to_sample_path": sample_path,
                                                     "index_to_metric_path": metric_path,
                                                     "difficulty_type": "value", "clustering_type": "schedule_based",
                                                     "min_difficulty": 100, "max_difficulty": 1000,
                                                     "schedule_type": "fixed_linear",
                                                     "schedule_config": {"total_curriculum_step": 6,
                                                                         "difficulty_step": 100}}}}}}},
                                        check_index_files=check_index_files)


def test_sampler_from_analyzer_files_and_cluster_files(tmp_path, caplog):
    values = np.random.default_rng(5).integers(0, 1000, 70_000)
    sample_path, metric_path = write_analyzer_files(tmp_path, values)
    cfg = file_config(sample_path, metric_path, str(tmp_path / "clusters"))
    s = CurriculumSampler.from_config(cfg, 70_000, 16, gradient_accumulation_steps=2)
    assert s.seed == 99 and s.total_samples == 140_000
    batches = take(s, 6)
    assert values[np.concatenate(batches[:2])].max() <= 250
    files = sorted(p.name for p in (tmp_path / "clusters").glob("*.idx"))
    assert len(files) == s.num_clusters == 3 and all(s.fingerprint in f for f in files)
    assert files[0].startswith("cluster_voc")
    state = s.state_dict()
    reference = take(s, 10)
    # a stale cluster file (other content under the same name) is detected and rebuilt, never reused
    stale = tmp_path / "clusters" / files[0].replace(".idx", "")
    from megatron.data.indexed_dataset import MMapIndexedDatasetBuilder
    with MMapIndexedDatasetBuilder(str(stale) + ".bin", dtype=np.int32) as b:
        b.add_item(np.arange(5, dtype=np.int32))
        b.end_document()
        b.finalize(str(stale) + ".idx")
    resumed = CurriculumSampler.from_config(cfg, 70_000, 16, gradient_accumulation_steps=2)
    with caplog.at_level(logging.WARNING, logger="megatron.data_efficiency.sampler"):
        resumed.load_state_dict(state)
    assert any("does not match the checkpoint" in r.getMessage() for r in caplog.records)
    assert take(resumed, 10) == reference


def test_missing_or_corrupt_index_files_name_the_config_key(tmp_path, caplog):
    # the config parser refuses missing analyzer files first; the sampler's own check stays for configs parsed
    # without it (check_index_files=False)
    with pytest.raises(DataEfficiencyConfigError, match=r"curriculum_metrics\.voc: .*nope\.idx not found"):
        file_config(str(tmp_path / "nope"), str(tmp_path / "nope2"), None)
    cfg = file_config(str(tmp_path / "nope"), str(tmp_path / "nope2"), None, check_index_files=False)
    with pytest.raises(CurriculumDataError, match=r"curriculum_metrics\.voc\.index_to_sample_path: .*nope\.idx: "
                                                  r"index file not found"):
        CurriculumSampler.from_config(cfg, 100, 4)
    sample_path, metric_path = write_analyzer_files(tmp_path, np.arange(100) % 7)
    with open(sample_path + ".bin", "ab") as f:
        f.write(b"\0\0")
    # trailing bytes past what the index describes are read past with a warning naming the file (upstream reads
    # such files too); a truncated file stays an error
    with caplog.at_level(logging.WARNING):
        CurriculumSampler.from_config(file_config(sample_path, metric_path, None), 100, 4)
    assert any("trailing bytes" in r.getMessage() and sample_path in r.getMessage() for r in caplog.records)
    size = os.path.getsize(sample_path + ".bin")
    with open(sample_path + ".bin", "r+b") as f:
        f.truncate(size - 6)
    with pytest.raises(CurriculumDataError, match="index_to_sample_path: .*truncated"):
        CurriculumSampler.from_config(file_config(sample_path, metric_path, None), 100, 4)


# ---------------------------------------------------------------------------------------------------------------
def _two_rank_worker(rank, init_file, seeds, result_file):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        metrics, indexes, n = resume_case()
        s = make(metrics, indexes, n, mbs=2, dp=2, rank=rank, gas=1, seed=seeds[rank])
        try:
            take(s, 5)
            outcome = "ok"
        except RuntimeError as e:
            outcome = str(e)
        with open(f"{result_file}.{rank}", "w") as f:
            f.write(outcome)
    finally:
        dist.destroy_process_group()


def run_two_ranks(tmp_path, seeds):
    ctx = mp.start_processes(_two_rank_worker, args=(str(tmp_path / "init"), seeds, str(tmp_path / "out")),
                             nprocs=2, join=False, start_method="fork")
    deadline = time.monotonic() + 60
    while not ctx.join(timeout=max(0.0, deadline - time.monotonic())):
        if time.monotonic() >= deadline:
            for proc in ctx.processes:
                proc.kill()
            pytest.fail("the two gloo workers did not finish within 60 s")
    return [(tmp_path / f"out.{r}").read_text() for r in range(2)]


def test_ranks_agree_without_broadcast_and_disagreement_is_detected(tmp_path):
    (tmp_path / "same").mkdir()
    (tmp_path / "diff").mkdir()
    assert run_two_ranks(tmp_path / "same", (1, 1)) == ["ok", "ok"]
    outcomes = run_two_ranks(tmp_path / "diff", (1, 2))
    assert all("ranks drew different global batches" in o for o in outcomes)
