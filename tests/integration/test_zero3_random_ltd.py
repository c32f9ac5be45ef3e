"""ZeRO-3 + random-LTD on CPU: train, then evaluate the checkpoint; the logged parameter count and norm are whole-model.

Under ZeRO-3 every rank's parameters are empty placeholders once DeepSpeed has partitioned them, and
``zero_to_fp32`` names the gathered weights after the wrapped model (``...layers.1.random_ltd_layer...``): the count
must still be the ZeRO-0 count, the norm the norm of the full weights, and the checkpoint must load into the plain
model for evaluation.
"""
from __future__ import annotations

import json
import math
import re

import torch

from conftest import LTD_JSON, gpt_argv


def test_zero3_random_ltd_checkpoint_evaluates_with_whole_model_count_and_norm(gpt_data_prefix, tmp_path, capsys):
    from megatron.cli import pretrain_from_argv
    from megatron.inference import load_for_inference
    from megatron.model import GPTModel, num_parameters
    from megatron.specs.gpt import GPT_SPEC
    from megatron.training.loop import evaluate

    js = tmp_path / "ds.json"
    js.write_text(json.dumps(LTD_JSON))
    save = tmp_path / "ckpt"
    argv = gpt_argv(gpt_data_prefix, num_layers=3, zero_stage=3, random_ltd=True, no_pipeline_parallel=True,
                    deepspeed_config=js, train_iters=3, eval_iters=2, save=save, log_params_norm=True)
    result = pretrain_from_argv(GPT_SPEC, argv)
    out = capsys.readouterr().out
    trained = result.evaluations[-1][1]["lm loss"]

    loaded = load_for_inference(str(save))  # strict load into the plain (unwrapped) GPT model
    assert type(loaded.model) is GPTModel and loaded.iteration == 3
    _, valid, _ = loaded.spec.build_datasets(loaded.config, loaded.tokenizer)
    loader = loaded.spec.build_data_loader(valid, 0, loaded.config, rank=0, world=1, dataloader_type="single")
    assert math.isclose(evaluate(loaded.model, loader, loaded.spec.forward_step, loaded.config)["lm loss"], trained,
                        rel_tol=1e-5)

    count = float(re.search(r"model: ([0-9.]+)M parameters", out).group(1))
    assert count > 0 and count == round(num_parameters(loaded.model) / 1e6, 2)  # the ZeRO-0 count, not 0
    norms = re.findall(r"params norm: ([0-9.]+)", out)
    assert len(norms) == 3
    full = torch.linalg.vector_norm(torch.stack([p.detach().double().norm() for p in loaded.model.parameters()]))
    assert math.isclose(float(norms[-1]), float(full), rel_tol=1e-3)  # printed with 3 decimals
