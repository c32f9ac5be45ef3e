"""bf16 with gradient accumulation: ZeRO-0 says once at start-up that it sums gradients in bf16; ZeRO-1 with
``data_types.grad_accum_dtype: fp32`` (what the recipes use for bf16) trains on DeepSpeed's BF16_Optimizer on CPU,
silently, and its checkpoint resumes."""
from __future__ import annotations

import json
import math

from megatron.cli import pretrain_from_argv
from megatron.specs.gpt import GPT_SPEC


def warnings_about_bf16_sums(out: str) -> list[str]:
    return [line for line in out.splitlines() if "sums the gradients of the" in line]


def test_zero0_warns_and_zero1_fp32_accumulation_trains_and_resumes(make_argv, tmp_path, capsys):
    pretrain_from_argv(GPT_SPEC, make_argv(train_iters=1, lr_warmup_iters=0, bf16=True, eval_iters=0))  # 8 = 4 x 2 micro-batches
    lines = warnings_about_bf16_sums(capsys.readouterr().out)
    assert len(lines) == 1 and lines[0].startswith("bf16 at ZeRO-0 sums the gradients of the 2 micro-batches")

    js = tmp_path / "ds.json"
    js.write_text(json.dumps({"data_types": {"grad_accum_dtype": "fp32"}}))
    save = tmp_path / "ckpt"
    flags = dict(bf16=True, zero_stage=1, deepspeed_config=js, eval_iters=0, save=save)
    first = pretrain_from_argv(GPT_SPEC, make_argv(train_iters=3, **flags))
    resumed = pretrain_from_argv(GPT_SPEC, make_argv(train_iters=4, load=save, override_opt_param_scheduler=True,
                                                     **flags))
    assert warnings_about_bf16_sums(capsys.readouterr().out) == []
    assert first.state.iteration == 3 and resumed.iterations == [4]
    assert all(math.isfinite(v) for r in (first, resumed) for step in r.losses for v in step.values())
    assert any(p.name.startswith("bf16_") for p in (save / "global_step4").iterdir())  # BF16_Optimizer's shards
