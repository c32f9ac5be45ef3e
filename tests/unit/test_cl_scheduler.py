"""Pacing functions of the curriculum scheduler (spec §3.2 test vectors and rules)."""
import logging
import math

import pytest

from megatron.data_efficiency.config import ScheduleConfig
from megatron.data_efficiency.scheduler import CurriculumScheduler


def linear(lo, hi, total, step):
    return ScheduleConfig("fixed_linear", lo, hi, total_curriculum_step=total, difficulty_step=step)


def test_fixed_linear_spec_vector():
    s = CurriculumScheduler(linear(2, 10, 8, 2))
    assert [s.update_difficulty(k) for k in range(1, 11)] == [2, 4, 4, 6, 6, 8, 8, 10, 10, 10]


def test_fixed_discrete_spec_vector():
    s = CurriculumScheduler(ScheduleConfig("fixed_discrete", 1, 5, difficulty=(1, 2, 3, 4, 5), max_step=(2, 4, 6, 8)))
    assert [s.update_difficulty(k) for k in range(1, 12)] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 5]


def test_seqlen_worked_example_80_to_2048():
    s = CurriculumScheduler(linear(80, 2048, 110000, 8))
    assert s.get_difficulty(1) == 80
    assert s.get_difficulty(55000) == 1064
    assert s.get_difficulty(110000) == 2048
    assert s.get_difficulty(10 ** 7) == 2048
    assert all(s.get_difficulty(k) % 8 == 0 for k in range(0, 110001, 997))


def test_fixed_root_formula_and_monotone():
    cfg = ScheduleConfig("fixed_root", 1, 100, total_curriculum_step=100, difficulty_step=1, root_degree=2)
    s = CurriculumScheduler(cfg)
    for k in range(0, 130):
        expected = min(math.floor((k / 100) ** 0.5 * 99 + 1), 100)
        assert s.get_difficulty(k) == expected
    assert s.get_difficulty(25) == 50  # sqrt(0.25) * 99 + 1 = 50.5
    values = [s.update_difficulty(k) for k in range(1, 130)]
    assert values == sorted(values) and values[-1] == 100


def test_difficulty_step_rounds_in_absolute_terms():
    # min 3 is not a multiple of 4: the first difficulties round down to 0, not to min (DeepSpeed's rule)
    s = CurriculumScheduler(linear(3, 19, 16, 4))
    assert s.get_difficulty(0) == 0
    assert s.get_difficulty(1) == 4  # floor(1/16*16 + 3) = 4
    assert s.get_difficulty(8) == 8  # 11 -> 8
    assert s.get_difficulty(16) == 16  # 19 -> 16: capped by rounding, below max
    assert s.get_difficulty(32) == 19  # 35 -> 32, then min(32, 19)


def test_update_freezes_at_max_for_non_monotone_schedules():
    s = CurriculumScheduler(ScheduleConfig("fixed_discrete", 1, 5, difficulty=(1, 5, 2), max_step=(1, 2)))
    assert [s.update_difficulty(k) for k in (1, 2, 3, 4)] == [1, 5, 5, 5]  # get_difficulty(3) would be 2
    assert s.get_difficulty(3) == 2


def test_custom_schedule():
    s = CurriculumScheduler(ScheduleConfig("custom", 8, 64), name="seqlen_truncate")
    with pytest.raises(ValueError, match="no function was set"):
        s.update_difficulty(1)
    s.set_custom_get_difficulty(lambda step: 8 * step)
    assert [s.update_difficulty(k) for k in (1, 2, 3, 8, 9)] == [8, 16, 24, 64, 64]
    s2 = CurriculumScheduler(ScheduleConfig("custom", 1, 10), name="m")
    s2.set_custom_get_difficulty(lambda step: step / 2)
    assert s2.get_difficulty(4) == 2
    with pytest.raises(ValueError, match="returned 1.5 at step 3"):
        s2.get_difficulty(3)


def test_custom_function_on_builtin_schedule_is_rejected():
    s = CurriculumScheduler(linear(8, 64, 10, 8), name="voc")
    with pytest.raises(ValueError, match="schedule_type is fixed_linear"):
        s.set_custom_get_difficulty(lambda step: step)


def test_warning_when_difficulty_step_not_multiple_of_8(caplog, monkeypatch):
    """Only for sequence-length metrics, and only on a GPU (Tensor Cores): a voc step of 4 is fine."""
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with caplog.at_level(logging.WARNING, logger="megatron.data_efficiency.scheduler"):
        CurriculumScheduler(linear(80, 2048, 100, 8), name="seqlen_truncate")
        CurriculumScheduler(linear(80, 2048, 100, 4), name="voc")
        assert not caplog.records
        CurriculumScheduler(linear(80, 2048, 100, 4), name="seqlen_truncate")
    assert any("difficulty_step 4 is not a multiple of 8" in r.getMessage() for r in caplog.records)
    caplog.clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="megatron.data_efficiency.scheduler"):
        CurriculumScheduler(linear(80, 2048, 100, 4), name="seqlen_truncate")
    assert not caplog.records


def test_state_dict_round_trip():
    s = CurriculumScheduler(linear(2, 10, 8, 2))
    for k in range(1, 6):
        s.update_difficulty(k)
    t = CurriculumScheduler(linear(2, 10, 8, 2))
    t.load_state_dict(s.state_dict())
    assert t.current_difficulty == s.current_difficulty == 6
