"""Token accounting of spec §3.6 / §13.7, and the curriculum facade the training loop calls."""
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from megatron.data_efficiency.accounting import actual_seq_length, new_samples_this_step, tokens_this_step
from megatron.data_efficiency.cluster import MetricIndex
from megatron.data_efficiency.config import parse_deepspeed_config
from megatron.data_efficiency.curriculum import CurriculumLearning
from megatron.data_efficiency.seqlen import BERT_LAYOUT, GPT_LAYOUT


def test_actual_seq_length_worked_numbers():
    assert actual_seq_length(2048) == 2048
    assert actual_seq_length(2048, curriculum_seqlen=80) == 80
    # random-LTD, GPT-3 1.3B recipe: L=24, 22 dropping layers, r=128: (2048*2 + 128*22) // 24 = 288
    assert actual_seq_length(2048, reserved_length=128, num_layers=24, num_ltd_layers=22) == 288
    # CL + LTD: truncation to 1024 first, then (1024*2 + 128*22) // 24 = 4864 // 24 = 202
    assert actual_seq_length(2048, 1024, 128, 24, 22) == 202
    # r >= the (curriculum) length: nothing is dropped
    assert actual_seq_length(2048, 80, 128, 24, 22) == 80
    assert actual_seq_length(2048, None, 2048, 24, 22) == 2048
    with pytest.raises(ValueError, match="random_ltd_layer_num"):
        actual_seq_length(2048, None, 128, 24, 25)


def test_tokens_per_step():
    new = new_samples_this_step(data_parallel_size=2, micro_batch_size=4, num_microbatches=8)
    assert new == 64
    assert tokens_this_step(80, new) == 64 * 80  # truncate / none: new_samples x actual
    # reshape: dp x micro-batches x rows-per-micro-batch x actual (rows grow as cs shrinks)
    assert tokens_this_step(80, new, reshape_rows=100, data_parallel_size=2, num_microbatches=8) == 2 * 8 * 100 * 80


def de_config(metrics, legacy=None):
    cfg = {"data_efficiency": {"seed": 5, "data_sampling": {"curriculum_learning": {
        "enabled": True, "curriculum_metrics": metrics}}}}
    if legacy is not None:
        cfg = {"curriculum_learning": legacy}
    return parse_deepspeed_config(cfg, check_index_files=False)  # "x"/"y": the tests pass in-memory indexes


def seqlen_metric(name, lo=8, hi=32, total=3):
    return {name: {"index_to_sample_path": "dummy", "index_to_metric_path": "dummy", "difficulty_type": "value",
                   "clustering_type": "single_cluster", "min_difficulty": lo, "max_difficulty": hi,
                   "schedule_type": "fixed_linear",
                   "schedule_config": {"total_curriculum_step": total, "difficulty_step": 8}}}


def gpt_batch(b, seq):
    return {"text": torch.arange(b * (seq + 1)).reshape(b, seq + 1)}


def test_facade_reshape_accounting_counts_rows():
    cl = CurriculumLearning(de_config(seqlen_metric("seqlen_reshape")), layout=GPT_LAYOUT, seq_length=32,
                            global_batch_size=16, micro_batch_size=4, data_parallel_size=2)
    sampler = cl.build_sampler(100)
    it = iter(sampler)
    state = SimpleNamespace(iteration=0)
    for _ in range(cl.num_microbatches):  # step 1: cs = floor(1/3*24 + 8) = 16 -> 16
        out = cl.post_process(gpt_batch(len(next(it)), 32), state)
    rows = out["text"].shape[0]
    assert out["text"].shape[1] == 17 and rows == 8  # ceil(4*33/17) = 8
    tokens, actual = cl.actual_seq_length(out, state)
    assert actual == 16 and tokens == 2 * 2 * rows * 16
    assert cl.log_fields() == {"curriculum seqlen": 16}


def test_facade_truncate_with_random_ltd_and_voc_difficulty():
    values = np.arange(200) % 10
    order = np.argsort(values, kind="stable")
    idx = MetricIndex.from_rows(np.split(order, np.unique(values[order], return_index=True)[1][1:]), np.arange(10))
    metrics = {"voc": {"index_to_sample_path": "x", "index_to_metric_path": "y", "difficulty_type": "value",
                       "clustering_type": "schedule_based", "min_difficulty": 2, "max_difficulty": 9,
                       "schedule_type": "fixed_linear",
                       "schedule_config": {"total_curriculum_step": 7, "difficulty_step": 1}},
               **seqlen_metric("seqlen_truncate", 16, 64, 6)}
    ltd = SimpleNamespace(reserved_length=16, num_layers=4, num_ltd_layers=2)
    cl = CurriculumLearning(de_config(metrics), layout=GPT_LAYOUT, seq_length=64, global_batch_size=8,
                            micro_batch_size=4, random_ltd=ltd)
    it = iter(cl.build_sampler(200, indexes={"voc": idx}))
    for step in range(3):
        state = SimpleNamespace(iteration=step)
        for _ in range(2):
            ids = next(it)
            out = cl.post_process(gpt_batch(len(ids), 64), state)
            assert values[ids].max() <= cl.current_difficulties["voc"]
    # step 3: cs = floor(3/6*48 + 16) = 40; r = 16 < 40 -> (40*2 + 16*2) // 4 = 28
    assert out["text"].shape == (4, 41)
    assert cl.actual_seq_length(out, state) == (8 * 28, 28)
    assert cl.log_fields() == {"curriculum seqlen": 40, "difficulty voc": 5}  # floor(3/7*7 + 2)


def test_facade_state_round_trip_before_build():
    metrics = seqlen_metric("seqlen_truncate", 8, 64, 10)
    make = lambda: CurriculumLearning(de_config(metrics), layout=GPT_LAYOUT, seq_length=64, global_batch_size=4,
                                      micro_batch_size=4)
    a = make()
    it = iter(a.build_sampler(50))
    for step in range(4):
        a.post_process(gpt_batch(len(next(it)), 64), SimpleNamespace(iteration=step))
    saved = a.state_dict()
    expected = [next(it) for _ in range(5)]
    b = make()
    b.load_state_dict(saved)  # before the sampler exists: applied by build_sampler
    assert b.curriculum_seqlen == a.curriculum_seqlen == 24  # step 4: floor(4/10*56 + 8) = 30 -> 24
    it_b = iter(b.build_sampler(50))
    assert [next(it_b) for _ in range(5)] == expected


def test_legacy_curriculum_truncates_by_iteration():
    legacy = {"enabled": True, "curriculum_type": "seqlen", "min_difficulty": 8, "max_difficulty": 64,
              "schedule_type": "fixed_linear", "schedule_config": {"total_curriculum_step": 7, "difficulty_step": 8}}
    cl = CurriculumLearning(de_config({}, legacy=legacy), layout=GPT_LAYOUT, seq_length=64, global_batch_size=6,
                            micro_batch_size=3)
    lengths = []
    for iteration in range(8):
        out = cl.post_process(gpt_batch(3, 64), SimpleNamespace(iteration=iteration))
        lengths.append(out["text"].shape[1] - 1)
    assert lengths == [16, 24, 32, 40, 48, 56, 64, 64]
    assert cl.actual_seq_length(out, None) == (6 * 64, 64)
    cl.post_process(gpt_batch(3, 64), SimpleNamespace(iteration=0))
    assert cl.actual_seq_length(None, None) == (6 * 64, 64)  # frozen at max, as DeepSpeed
    bert = CurriculumLearning(de_config({}, legacy=legacy), layout=BERT_LAYOUT, seq_length=64, global_batch_size=6,
                              micro_batch_size=3)
    out = bert.post_process({"text": torch.ones(3, 64), "padding_mask": torch.ones(3, 64)}, SimpleNamespace(iteration=1))
    assert out["text"].shape == (3, 24) and bert.actual_seq_length(out, None) == (6 * 24, 24)


def test_schedule_based_metric_without_sampler_is_rejected():
    metrics = {"voc": {"index_to_sample_path": "x", "index_to_metric_path": "y", "difficulty_type": "value",
                       "clustering_type": "schedule_based", "min_difficulty": 2, "max_difficulty": 9,
                       "schedule_type": "fixed_linear",
                       "schedule_config": {"total_curriculum_step": 7, "difficulty_step": 1}}}
    with pytest.raises(ValueError, match="--data-efficiency-curriculum-learning"):
        CurriculumLearning(de_config(metrics), layout=GPT_LAYOUT, seq_length=64, global_batch_size=4,
                           micro_batch_size=4, use_sampler=False)


def test_seqlen_only_curriculum_without_sampler_follows_the_iteration():
    cl = CurriculumLearning(de_config(seqlen_metric("seqlen_truncate", 8, 32, 3)), layout=GPT_LAYOUT, seq_length=32,
                            global_batch_size=4, micro_batch_size=4, use_sampler=False)
    widths = [cl.post_process(gpt_batch(4, 32), SimpleNamespace(iteration=i))["text"].shape[1] - 1 for i in range(4)]
    assert widths == [16, 24, 32, 32]  # steps 1..4 of 8 -> 32 over 3 steps, difficulty_step 8
    assert cl.actual_seq_length(None, None) == (4 * 32, 32)
    with pytest.raises(RuntimeError, match="before build_sampler"):
        CurriculumLearning(de_config(seqlen_metric("seqlen_truncate")), layout=GPT_LAYOUT, seq_length=32,
                           global_batch_size=4, micro_batch_size=4).post_process(gpt_batch(4, 32), None)


def test_without_curriculum_batches_pass_through_and_ltd_still_corrects_tokens():
    ltd = SimpleNamespace(reserved_length=16, num_layers=4, num_ltd_layers=2)
    cl = CurriculumLearning(parse_deepspeed_config({}), layout=BERT_LAYOUT, seq_length=64, global_batch_size=8,
                            micro_batch_size=4, random_ltd=ltd)
    batch = {"text": torch.ones(4, 64), "padding_mask": torch.zeros(4, 64)}
    assert cl.post_process(batch, None) is batch and cl.log_fields() == {}
    assert cl.actual_seq_length(batch, None) == (8 * 40, 40)  # (64*2 + 16*2) // 4
