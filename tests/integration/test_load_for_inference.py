"""megatron.inference.load_for_inference: any checkpoint we write -> a plain model that gives the training-time
evaluation loss through the same `loop.evaluate` (ZeRO 0 and 3, fp32 and bf16, random-LTD-trained)."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import LTD_JSON, gpt_argv


CASES = {
    "fp32-zero0": ({}, 1e-6),
    "bf16-zero3": ({"bf16": True, "zero_stage": 3}, 1e-3),
    "fp32-zero1-random-ltd": ({"zero_stage": 1, "num_layers": 3, "random_ltd": True, "no_pipeline_parallel": True},
                              1e-6),
}


def _train(argv: list[str]):
    from megatron.cli import pretrain_from_argv
    from megatron.specs.gpt import GPT_SPEC

    return pretrain_from_argv(GPT_SPEC, argv)


def _eval_loss(loaded) -> float:
    from megatron.training.loop import evaluate

    _, valid, _ = loaded.spec.build_datasets(loaded.config, loaded.tokenizer)
    loader = loaded.spec.build_data_loader(valid, 0, loaded.config, rank=0, world=1, dataloader_type="single")
    return evaluate(loaded.model, loader, loaded.spec.forward_step, loaded.config)["lm loss"]


@pytest.mark.parametrize("case", list(CASES))
def test_checkpoint_gives_training_eval_loss(gpt_data_prefix, tmp_path, case):
    from megatron.inference import load_for_inference
    from megatron.model import GPTModel

    flags, rel = CASES[case]
    flags = dict(flags)
    if flags.get("random_ltd"):
        js = tmp_path / "ds.json"
        js.write_text(json.dumps(LTD_JSON))
        flags["deepspeed_config"] = js
    save = tmp_path / "ckpt"
    result = _train(gpt_argv(gpt_data_prefix, train_iters=4, eval_iters=2, save=save, **flags))
    trained = result.evaluations[-1][1]["lm loss"]

    loaded = load_for_inference(str(save))
    assert type(loaded.model) is GPTModel and not loaded.model.training  # no DeepSpeed, no random-LTD wrapper
    assert loaded.spec.name == "gpt" and loaded.tag == "global_step4" and loaded.iteration == 4
    assert loaded.dtype == (torch.bfloat16 if flags.get("bf16") else torch.float32)
    assert next(loaded.model.parameters()).dtype == loaded.dtype
    assert loaded.config.model.num_layers == flags.get("num_layers", 2)
    # training-only flags are not taken: no data efficiency, no save/load, no DeepSpeed JSON
    assert not loaded.config.data_efficiency.any_enabled and loaded.config.checkpoint.save is None
    assert loaded.stored_args["random_ltd"] == bool(flags.get("random_ltd"))
    assert _eval_loss(loaded) == pytest.approx(trained, rel=rel)

    fp32 = load_for_inference(str(save), dtype=torch.float32)
    assert _eval_loss(fp32) == pytest.approx(trained, rel=max(rel, 2e-2))


def test_overrides_and_bad_input(gpt_data_prefix, tmp_path):
    from megatron.config import ConfigError
    from megatron.inference import NOT_TAKEN, load_for_inference

    save = tmp_path / "ckpt"
    _train(gpt_argv(gpt_data_prefix, train_iters=2, save=save, lr_warmup_iters=0))
    loaded = load_for_inference(str(save), {"micro_batch_size": 2, "eval_iters": 3})
    t = loaded.config.training
    assert (t.micro_batch_size, t.global_batch_size, t.num_micro_batches, t.eval_iters) == (2, 8, 4, 3)
    assert t.train_iters == NOT_TAKEN["train_iters"] and loaded.config.schedule.lr_warmup_steps == 0
    with pytest.raises(ConfigError, match="unknown override 'micro_batch'"):
        load_for_inference(str(save), {"micro_batch": 2})
    with pytest.raises(ConfigError, match="hidden-size 30 is not divisible"):
        load_for_inference(str(save), {"hidden_size": 30})
    with pytest.raises(ConfigError, match="the weights do not fit a gpt model"):
        load_for_inference(str(save), {"hidden_size": 64})
    with pytest.raises(ConfigError, match="checkpoint directory global_step9 does not exist"):
        load_for_inference(str(save), tag="global_step9")
