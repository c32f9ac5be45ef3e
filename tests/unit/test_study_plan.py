"""The data-efficiency study without training: data-saving interpolation, plans, configs, generated verdicts."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from megatron.study.conclusion import conclusion_lines
from megatron.study.curves import tokens_to_reach
from megatron.study.plan import (TINY, StudyConfig, StudyError, all_cases, check_single_epoch, ds_config, plan_case,
                                 pretrain_flags, select_cases)

REPO = Path(__file__).resolve().parents[2]


# -- tokens needed to reach a target loss -----------------------------------------------------------------------
def test_interpolates_between_the_two_evaluations_around_the_crossing() -> None:
    curve = [(100, 5.0), (200, 4.0), (300, 3.0), (400, 2.5)]
    assert tokens_to_reach(curve, 3.5) == pytest.approx(250.0)
    assert tokens_to_reach(curve, 2.75) == pytest.approx(350.0)


def test_exact_hit_and_first_point_already_below() -> None:
    curve = [(100, 5.0), (200, 4.0), (300, 3.0)]
    assert tokens_to_reach(curve, 4.0) == pytest.approx(200.0)
    assert tokens_to_reach(curve, 6.0) == pytest.approx(100.0)


def test_never_reached_is_none() -> None:
    assert tokens_to_reach([(100, 5.0), (200, 4.0), (300, 3.1)], 3.0) is None
    assert tokens_to_reach([], 3.0) is None


def test_first_crossing_counts_even_if_the_loss_rises_again() -> None:
    curve = [(100, 4.0), (200, 2.0), (300, 5.0), (400, 1.0)]
    assert tokens_to_reach(curve, 3.0) == pytest.approx(150.0)


def test_a_faster_curve_needs_fewer_tokens() -> None:
    """Synthetic power-law curves: one reaching the same loss with half the data shows a 2x saving."""
    xs = [i * 1000 for i in range(1, 41)]
    base = [(x, 2.0 + 10.0 / math.sqrt(x)) for x in xs]
    fast = [(x, 2.0 + 10.0 / math.sqrt(2 * x)) for x in xs]
    target = base[-1][1]
    assert tokens_to_reach(base, target) == pytest.approx(40_000)
    assert tokens_to_reach(fast, target) == pytest.approx(20_000, rel=0.01)


# -- plans ------------------------------------------------------------------------------------------------------
def test_recipe_scaling_of_lr_and_schedules() -> None:
    config = StudyConfig()
    plans = {c.name: plan_case(config, c) for c in all_cases(config)}
    assert len(plans) == 9
    assert plans["baseline_50"].lr == pytest.approx(2 * config.base_lr)
    assert plans["baseline_67"].lr == pytest.approx(1.5 * config.base_lr)
    full, half = plans["cl_ltd_100"], plans["cl_ltd_50"]
    assert full.cl_steps == round(0.38 * config.baseline_steps)
    assert full.ltd_steps == round(0.70 * config.baseline_steps)
    assert half.cl_steps == pytest.approx(full.cl_steps / 2, abs=1)
    # compute-equivalent budget: CL/LTD take more steps and read more raw tokens than the baseline
    assert plans["baseline_100"].est_steps == config.baseline_steps
    for name in ("cl_100", "ltd_100", "cl_ltd_100"):
        assert plans[name].est_steps > config.baseline_steps
        assert plans[name].est_raw_tokens > plans["baseline_100"].est_raw_tokens
    assert config.budget_tokens / config.non_embedding_params() >= 20


def test_single_epoch_check_names_the_case_and_sizes() -> None:
    plans = [plan_case(TINY, c) for c in all_cases(TINY)]
    check_single_epoch(plans, 10 ** 9)
    with pytest.raises(StudyError, match=r"corpus too small.*cl_ltd_100 reads"):
        check_single_epoch(plans, TINY.budget_tokens)


def test_ds_config_and_flags_per_case(tmp_path) -> None:
    cases = {c.name: c for c in all_cases(TINY)}
    base = ds_config(TINY, plan_case(TINY, cases["baseline_100"]), "A", "C")
    assert "data_efficiency" not in base and base["bf16"] == {"enabled": False}
    both = ds_config(TINY, plan_case(TINY, cases["cl_ltd_100"]), "A", "C")["data_efficiency"]
    metrics = both["data_sampling"]["curriculum_learning"]["curriculum_metrics"]
    assert set(metrics) == {"voc", "seqlen_truncate"}
    assert metrics["voc"]["index_to_sample_path"].startswith("A/vocab_rarity/")
    assert both["data_routing"]["random_ltd"]["random_ltd_layer_id"] == [1]
    flags = pretrain_flags(TINY, plan_case(TINY, cases["cl_ltd_50"]), data_prefix="D", split="9,1,0",
                           tokenizer_flags=[], ds_config_path="ds.json", run_dir=str(tmp_path), pinned_maps="M")
    assert "--data-efficiency-curriculum-learning" in flags and "--random-ltd" in flags
    assert flags[flags.index("--lr") + 1] == f"{2 * TINY.base_lr:.6g}"
    assert flags[flags.index("--train-shuffle-idx-path") + 1] == "M_shuffle_idx.npy"
    seed_flags = pretrain_flags(TINY, plan_case(TINY, cases["baseline_100_seed1235"]), data_prefix="D",
                                split="9,1,0", tokenizer_flags=[], ds_config_path="ds.json",
                                run_dir=str(tmp_path), pinned_maps=None)
    assert seed_flags[seed_flags.index("--seed") + 1] == "1235" and "--train-shuffle-idx-path" not in seed_flags


def test_unknown_case_and_bad_config_are_one_clear_error() -> None:
    with pytest.raises(StudyError, match="unknown case.*nope"):
        select_cases(TINY, ["baseline_100", "nope"])
    with pytest.raises(StudyError, match="num_layers 2"):
        StudyConfig(num_layers=2).check()


def test_set_overrides_are_typed(tmp_path) -> None:
    spec = importlib.util.spec_from_file_location("_study_tool", REPO / "tools" / "data_efficiency_study.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    apply_overrides, main = tool.apply_overrides, tool.main
    c = apply_overrides(TINY, ["budget_tokens=2e4", "bf16=true", "base_lr=0.01", "extra_seeds=7,8"])
    assert (c.budget_tokens, c.bf16, c.base_lr, c.extra_seeds) == (20000, True, 0.01, (7, 8))
    with pytest.raises(StudyError, match="--set 'nope=1'"):
        apply_overrides(TINY, ["nope=1"])
    with pytest.raises(StudyError, match="expected a int"):
        apply_overrides(TINY, ["num_layers=four"])
    assert main(["--tiny", "--study-dir", str(tmp_path), "--cases", "bogus"]) == 2


# -- the conclusion is computed from the numbers -----------------------------------------------------------------
def _data(losses: dict[str, float]) -> dict:
    runs = {}
    for name, loss in losses.items():
        runs[name] = {"case": {"name": name, "label": name, "fraction": 0.5 if name.endswith("_50") else 1.0},
                      "eval": {"loss": loss}, "train": {"tokens": 100, "steps": 10, "train_seconds": 10.0,
                                                        "layer_tokens": 400},
                      "reach_target": {"tokens": None}, "zeroshot": None, "vs_band": "n/a"}
    seeds = [losses[n] for n in losses if n.startswith("baseline_100")]
    band = {"losses": seeds, "mean": sum(seeds) / len(seeds), "sd": 0.01, "min": min(seeds), "max": max(seeds),
            "half_range": (max(seeds) - min(seeds)) / 2}
    return {"runs": runs, "seed_band": band, "tokens_per_non_embedding_param": 25.0}


def test_verdicts_follow_the_numbers() -> None:
    seeds = {"baseline_100": 3.00, "baseline_100_seed1235": 3.02, "baseline_100_seed1236": 3.04}
    better = "\n".join(conclusion_lines(_data({**seeds, "cl_ltd_100": 2.90, "cl_ltd_50": 3.01})))
    assert "`cl_ltd_100` vs `baseline_100`, held-out loss): confirmed" in better
    assert "`cl_ltd_50` vs `baseline_100`, held-out loss): confirmed (not above the seed band)" in better
    worse = "\n".join(conclusion_lines(_data({**seeds, "cl_ltd_100": 3.03, "cl_ltd_50": 3.20})))
    assert "`cl_ltd_100` vs `baseline_100`, held-out loss): not confirmed: the difference is within" in worse
    assert "`cl_ltd_50` vs `baseline_100`, held-out loss): not confirmed: higher loss" in worse


# -- curves from TensorBoard events ------------------------------------------------------------------------------
def _write_events(path: Path, first: int, last: int, *, grouped: bool, killed_at: int | None = None) -> None:
    import time as _time

    from torch.utils.tensorboard import SummaryWriter

    w = SummaryWriter(log_dir=str(path))
    for it in range(first, (killed_at or last) + 1):
        tokens = 100 * it
        if grouped:
            w.add_scalar("steps-vs-tokens/y=tokens,x=steps", tokens, it)
            w.add_scalar("lm-loss-training/lm loss", 5.0 - 0.1 * it, it)
        else:
            w.add_scalar("lm loss", 5.0 - 0.1 * it, it)
            w.add_scalar("lm loss vs tokens", 5.0 - 0.1 * it, tokens)
        w.add_scalar("seqlen/random ltd reserved length", 8 + it, it)
        if it % 2 == 0:
            w.add_scalar("iteration-time/iteration-time" if grouped else "iteration-time", 0.5, it)
            w.add_scalar("lm-loss-validation/lm loss validation" if grouped else "lm loss validation",
                         6.0 - 0.1 * it - (0.05 if killed_at else 0.0), it)
    w.close()
    _time.sleep(0.02)  # distinct modification times: files are read in the order they were written


@pytest.mark.parametrize("grouped", [True, False])
def test_read_curves_maps_iterations_to_tokens_and_later_files_win(tmp_path: Path, grouped: bool) -> None:
    from megatron.study.curves import read_curves

    _write_events(tmp_path, 1, 10, grouped=grouped, killed_at=7)  # killed after iteration 7
    _write_events(tmp_path, 5, 10, grouped=grouped)  # resumed from the checkpoint at 4
    c = read_curves(str(tmp_path))
    assert c.last_iteration == 10 and c.tokens[10] == 1000 and c.tokens[3] == 300
    assert c.valid_loss[6] == pytest.approx(5.4)  # the resumed run's value
    assert c.cumulative_seconds(10) == pytest.approx(5.0)  # 10 steps of 0.5 s, none counted twice
    pts = c.validation(num_layers=2)
    assert [p["iteration"] for p in pts] == [2, 4, 6, 8, 10]
    assert pts[-1]["tokens"] == 1000 and pts[-1]["layer_tokens"] == 2000 and pts[-1]["seconds"] == pytest.approx(5.0)
    assert c.schedule["reserved"][10] == 18
