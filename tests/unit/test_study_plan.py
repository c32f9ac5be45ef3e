"""The data-efficiency study without training: data-saving interpolation, plans, configs, generated verdicts."""
from __future__ import annotations

import importlib.util
import math
from dataclasses import replace
from pathlib import Path

import pytest

from megatron.study.conclusion import conclusion_lines
from megatron.study.curves import tokens_to_reach
from megatron.study.plan import (TINY, StudyConfig, StudyError, all_cases, check_single_epoch, cl_reuse_ratio,
                                 ds_config, parse_lr_sweep, plan_case, pretrain_flags, select_cases, sweep_case)
from megatron.study.report import seed_band, versus_band

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
    check_single_epoch(TINY, plans, 10 ** 7)
    with pytest.raises(StudyError, match=r"corpus too small.*cl_ltd_100 reads"):
        check_single_epoch(TINY, plans, TINY.budget_tokens // TINY.seq_length)


def _cl_plan(config: StudyConfig, voc: list[int]):
    plan = plan_case(config, next(c for c in all_cases(config) if c.name == "cl_100"))
    plan.schedule = [{"step": i + 1, "voc": v, "seqlen": config.seq_length} for i, v in enumerate(voc)]
    return plan


def test_curriculum_redraw_simulation_by_hand() -> None:
    config = replace(TINY, global_batch_size=10)
    # 1000 samples: clusters of 10 per percentile. Step 1: percentile 50 (500 samples) gets all 10 draws;
    # step 2: percentile 100 adds 500 more, each half gets 5: the first cluster 15 draws of 500, the second 5.
    assert cl_reuse_ratio(config, _cl_plan(config, [50, 100]), 1000) == pytest.approx(15 / 500)
    # a 1-percentile first cluster (10 samples) drawn alone for 3 steps: 30 draws of 10 samples -> 3x reuse
    assert cl_reuse_ratio(config, _cl_plan(config, [1, 1, 1]), 1000) == pytest.approx(3.0)
    assert cl_reuse_ratio(config, plan_case(config, all_cases(config)[0]), 1000) == 0.0  # no curriculum


def test_single_epoch_check_counts_curriculum_redraws() -> None:
    config = replace(TINY, global_batch_size=10)
    plan = _cl_plan(config, [1, 1, 1])  # reads few tokens in all, but re-draws its first cluster 3x
    plan.est_raw_tokens = 0
    with pytest.raises(StudyError, match=r"cl_100's curriculum draws its most used cluster 3.00 times its size"):
        check_single_epoch(config, [plan], 1000)
    check_single_epoch(config, [_cl_plan(config, [50, 100])], 1000)


def test_default_study_stays_below_one_draw_per_curriculum_sample() -> None:
    config = StudyConfig()
    worst = max(cl_reuse_ratio(config, plan_case(config, c), 68_937) for c in all_cases(config))
    assert 0 < worst <= 1  # 68,937 samples: the training split of the committed study's corpus


def test_seed_band_uses_the_sample_sd_rule() -> None:
    cases = all_cases(TINY)
    losses = {"baseline_100": 3.00, "baseline_100_seed1235": 3.02, "baseline_100_seed1236": 3.04}
    band = seed_band({n: {"eval": {"loss": v}} for n, v in losses.items()}, cases)
    assert band["sd"] == pytest.approx(0.02) and band["n"] == 3
    assert band["vs_mean"] == pytest.approx(2 * 0.02 * math.sqrt(1 + 1 / 3))
    assert band["pair"] == pytest.approx(2 * math.sqrt(2) * 0.02)
    # outside [min, max] but within 2 sd sqrt(1 + 1/n) = 0.0462 of the mean: not beyond the noise
    assert versus_band(2.98, band) == "within noise" and versus_band(3.06, band) == "within noise"
    assert versus_band(2.97, band) == "lower" and versus_band(3.07, band) == "higher"
    assert versus_band(3.0, None) == "n/a"


def test_lr_sweep_cases() -> None:
    assert parse_lr_sweep("0.003,1.5e-3,0.003") == [0.0015, 0.003]
    assert parse_lr_sweep(None) == []
    for bad in ("0.003,x", "-1", "0", "nan"):
        with pytest.raises(StudyError, match="--lr-sweep"):
            parse_lr_sweep(bad)
    case = sweep_case(StudyConfig(), 0.003)
    assert case.name == "lrsweep_0.003" and case.is_sweep and case.fraction == 0.5
    plan = plan_case(StudyConfig(), case)
    assert plan.lr == 0.003 and plan.train_tokens == StudyConfig().budget_tokens // 2  # no 1/f LR scaling
    assert not any(c.is_sweep for c in all_cases(StudyConfig()))


def test_identity_check_accepts_new_default_fields_and_names_changes(tmp_path) -> None:
    import json

    from megatron.study.runner import Study

    Study(str(tmp_path), TINY).check_identity()
    recorded = json.loads((tmp_path / "study.json").read_text())
    del recorded["config"]["sweep_budget_fraction"]  # a directory made before the field existed
    (tmp_path / "study.json").write_text(json.dumps(recorded))
    Study(str(tmp_path), TINY).check_identity()
    with pytest.raises(StudyError, match=r"differs in: base_lr"):
        Study(str(tmp_path), replace(TINY, base_lr=1.0)).check_identity()


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
def _data(losses: dict[str, float], zeroshot: dict | None = None, sweep: dict | None = None) -> dict:
    zeroshot = zeroshot or {}
    runs = {}
    for name, loss in losses.items():
        runs[name] = {"case": {"name": name, "label": name, "fraction": 0.5 if name.endswith("_50") else 1.0},
                      "eval": {"loss": loss}, "train": {"tokens": 100, "steps": 10, "train_seconds": 10.0,
                                                        "layer_tokens": 400},
                      "reach_target": {"tokens": None}, "zeroshot": zeroshot.get(name), "vs_band": "n/a"}
    band = seed_band({n: {"eval": {"loss": v}} for n, v in losses.items()}, all_cases(TINY))
    return {"runs": runs, "seed_band": band, "tokens_per_non_embedding_param": 25.0, "config": {"base_lr": 0.003},
            "lr_sweep": sweep}


def test_verdicts_follow_the_numbers() -> None:
    seeds = {"baseline_100": 3.00, "baseline_100_seed1235": 3.02, "baseline_100_seed1236": 3.04}
    better = "\n".join(conclusion_lines(_data({**seeds, "cl_ltd_100": 2.90, "cl_ltd_50": 3.01})))
    assert "`cl_ltd_100` vs `baseline_100`, held-out loss, Δ -0.1200): confirmed (lower loss" in better
    assert "`cl_ltd_50` vs `baseline_100`, held-out loss, Δ -0.0100): confirmed (no difference" in better
    assert "rough estimate" in better
    # 2.97 is below the seeds' [min, max] but within 2 sd sqrt(1 + 1/3) of their mean: not evidence
    within = "\n".join(conclusion_lines(_data({**seeds, "cl_ltd_100": 2.97})))
    assert "`cl_ltd_100` vs `baseline_100`, held-out loss, Δ -0.0500): confirmed (lower" in within
    within = "\n".join(conclusion_lines(_data({**seeds, "cl_ltd_100": 2.99})))
    assert "`cl_ltd_100` vs `baseline_100`, held-out loss, Δ -0.0300): not confirmed: the difference is within" \
        in within
    worse = "\n".join(conclusion_lines(_data({**seeds, "cl_ltd_100": 3.03, "cl_ltd_50": 3.20, "baseline_50": 3.14})))
    assert "`cl_ltd_100` vs `baseline_100`, held-out loss, Δ +0.0100): not confirmed: the difference is within" \
        in worse
    assert "`cl_ltd_50` vs `baseline_100`, held-out loss, Δ +0.1800): not confirmed: higher loss" in worse
    # two single cases: 2 sqrt(2) sd = 0.0566; 3.20 - 3.14 = 0.06 is beyond it, in the wrong direction
    assert "`cl_ltd_50` vs `baseline_50`, held-out loss, Δ +0.0600): contradicted" in worse


def test_zeroshot_two_proportion_rule_and_chance() -> None:
    seeds = {"baseline_100": 3.00, "baseline_100_seed1235": 3.02, "baseline_100_seed1236": 3.04}
    z = {"baseline_100": {"lastword_acc": 0.0, "n_lastword": 40, "choice_acc_norm": 0.25, "n_choice": 40},
         "cl_100": {"lastword_acc": 0.05, "n_lastword": 40, "choice_acc_norm": 0.60, "n_choice": 40}}
    text = "\n".join(conclusion_lines(_data({**seeds, "cl_100": 2.9}, zeroshot=z)))
    # last word: 2 sqrt(1/40 * 39/40 + 0.05 * 0.95 / 40) = 0.0914 > 0.05 (p = 0 floored at 1/n)
    assert "last-word accuracy: baseline_100 0.000 on 40 items" in text
    assert "no case differs from it by more than two standard errors of the difference" in text
    # choice: 2 sqrt(0.25 * 0.75 / 40 + 0.6 * 0.4 / 40) = 0.207 < 0.35
    assert "`cl_100` (+0.350, threshold 0.207)" in text
    assert "at this scale these tasks are at chance" in text


def test_lr_sweep_conclusion() -> None:
    seeds = {"baseline_100": 3.00, "baseline_100_seed1235": 3.02}
    sweep = {"runs": [{"lr": 0.0015, "loss": 3.3}, {"lr": 0.003, "loss": 3.2}], "best_lr": 0.003,
             "budget_fraction": 0.5}
    assert "base_lr = 0.003 equals the sweep's best" in "\n".join(conclusion_lines(_data(seeds, sweep=sweep)))
    sweep["best_lr"], sweep["runs"][0]["loss"] = 0.0015, 3.1
    assert "base_lr = 0.003 is NOT the sweep's best (0.0015" in "\n".join(conclusion_lines(_data(seeds, sweep=sweep)))


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


# -- a fresh start after a kill before the first checkpoint ----------------------------------------------------------
def test_fresh_start_removes_stale_curves_and_counts_every_process(tmp_path, monkeypatch) -> None:
    import json

    from megatron.study import runner
    from megatron.study.prepare import Prepared

    study = runner.Study(str(tmp_path), TINY)
    study.prepared = Prepared("D", "9,1,0", [], "M", "A", None, {})
    case = all_cases(TINY)[0]
    run_dir = Path(study.run_dir(case))
    for sub in ("tensorboard", "data_cluster", "checkpoint"):  # left by a process killed before any checkpoint
        (run_dir / sub).mkdir(parents=True)
        (run_dir / sub / "stale").write_text("x")
    (run_dir / "train.log").write_text("killed")
    (run_dir / "train_attempts.json").write_text(json.dumps([[1.0, None]]))  # that process never recorded its end
    seen = {}

    def fake_run(step, argv, log_path, env=None):  # noqa: ANN001, ANN202
        seen["left"] = sorted(p.name for p in run_dir.iterdir())
        raise StudyError("stop here")

    monkeypatch.setattr(runner, "run_logged", fake_run)
    with pytest.raises(StudyError, match="stop here"):
        study._train(plan_case(TINY, case), str(run_dir), "1/1")
    assert not {"tensorboard", "data_cluster", "checkpoint"} & set(seen["left"])
    attempts = json.loads((run_dir / "train_attempts.json").read_text())
    assert len(attempts) == 2 and attempts[0][1] == pytest.approx((run_dir / "train.log").stat().st_mtime)
