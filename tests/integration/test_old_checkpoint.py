"""A checkpoint written before the training core was reshaped (tests/fixtures/gpt_checkpoint_v3, commit 8b09ab9:
no `model_family` key, old config classes) still loads for inference and resumes exactly.

`expected.json` holds what the old code printed: the validation loss at iteration 3 and the losses of
iterations 4-6 of the uninterrupted run the checkpoint was taken from.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import gpt_argv

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "gpt_checkpoint_v3"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())


def test_fixture_predates_the_family_key():
    states = torch.load(FIXTURE / "global_step3" / "mp_rank_00_model_states.pt", weights_only=True)
    assert "model_family" not in states and states["checkpoint_version"] == 3.0


def test_old_checkpoint_loads_for_inference(gpt_data_prefix):
    from megatron.inference import load_for_inference
    from megatron.training.loop import evaluate

    loaded = load_for_inference(str(FIXTURE), {"data_path": [gpt_data_prefix]})
    assert loaded.spec.name == "gpt" and loaded.iteration == 3
    _, valid, _ = loaded.spec.build_datasets(loaded.config, loaded.tokenizer)
    loader = loaded.spec.build_data_loader(valid, 0, loaded.config, rank=0, world=1, dataloader_type="single")
    loss = evaluate(loaded.model, loader, loaded.spec.forward_step, loaded.config)["lm loss"]
    assert loss == pytest.approx(EXPECTED["valid_loss_at_3"], rel=1e-6)


def test_old_checkpoint_resumes_exactly(gpt_data_prefix, tmp_path):
    from megatron.cli import pretrain_from_argv
    from megatron.specs.gpt import GPT_SPEC

    ckpt = tmp_path / "ckpt"
    shutil.copytree(FIXTURE, ckpt)
    flags = dict(EXPECTED["flags"])
    result = pretrain_from_argv(GPT_SPEC, gpt_argv(gpt_data_prefix, load=ckpt, save=ckpt, **flags))
    assert result.iterations == [4, 5, 6]
    assert [s["lm loss"] for s in result.losses] == pytest.approx(list(EXPECTED["losses"].values()), rel=1e-6)
    states = torch.load(ckpt / "global_step6" / "mp_rank_00_model_states.pt", weights_only=True)
    assert states["model_family"] == "gpt"  # re-saved in the current layout
