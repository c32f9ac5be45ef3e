"""Model -> optimizer (Megatron weight-decay groups) -> deepspeed.initialize -> Megatron LR scheduler."""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from megatron.config import OptimizerConfig, RunConfig
from megatron.training.lr_scheduler import OptimizerParamScheduler

logger = logging.getLogger(__name__)

_NO_DECAY_MODULES = (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm1d) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())


def get_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two groups as Megatron: weights decay; biases and normalisation parameters do not (wd_mult 0)."""
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    seen: set[int] = set()
    for module in model.modules():
        for name, param in module.named_parameters(recurse=False):
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if isinstance(module, _NO_DECAY_MODULES) or name == "bias" or name.endswith("_bias"):
                no_decay.append(param)
            else:
                decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay, "wd_mult": 1.0, "lr_mult": 1.0, "name": "decay"},
              {"params": no_decay, "weight_decay": 0.0, "wd_mult": 0.0, "lr_mult": 1.0, "name": "no_decay"}]
    return [g for g in groups if g["params"]]


def build_optimizer(param_groups: list[dict[str, Any]], config: OptimizerConfig, device_type: str
                    ) -> torch.optim.Optimizer:
    """torch AdamW (fused on CUDA, foreach elsewhere) or SGD; no DeepSpeed JIT-built optimizer."""
    if config.name == "sgd":
        return torch.optim.SGD(param_groups, lr=config.lr, momentum=config.sgd_momentum,
                               weight_decay=config.weight_decay)
    impl = {"fused": True} if device_type == "cuda" else {"foreach": True}
    return torch.optim.AdamW(param_groups, lr=config.lr, betas=(config.adam_beta1, config.adam_beta2),
                             eps=config.adam_eps, weight_decay=config.weight_decay, **impl)


def build_scheduler(optimizer: Any, config: RunConfig) -> OptimizerParamScheduler:
    """Megatron's OptimizerParamScheduler over the optimizer's param groups ("steps" are samples)."""
    s, o = config.schedule, config.optimizer
    return OptimizerParamScheduler(
        optimizer, max_lr=o.lr, min_lr=o.min_lr, lr_warmup_steps=s.lr_warmup_steps, lr_decay_steps=s.lr_decay_steps,
        lr_decay_style=s.lr_decay_style, lr_warmup_tokens=s.lr_warmup_tokens, lr_decay_tokens=s.lr_decay_tokens,
        start_wd=s.start_wd, end_wd=s.end_wd, wd_incr_steps=s.wd_incr_steps, wd_incr_style=s.wd_incr_style,
        use_checkpoint_opt_param_scheduler=s.use_checkpoint_opt_param_scheduler,
        override_opt_param_scheduler=s.override_opt_param_scheduler)


def setup_model_and_optimizer(model: nn.Module, config: RunConfig) -> tuple[Any, OptimizerParamScheduler]:
    """Wrap `model` in a DeepSpeed engine with our optimizer; return (engine, lr scheduler)."""
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    groups = get_param_groups(model, config.optimizer.weight_decay)
    device_type = get_accelerator().device_name()
    if config.optimizer.from_deepspeed_json:
        optimizer = None  # DeepSpeed builds the optimizer named in the JSON over our param groups
    else:
        optimizer = build_optimizer(groups, config.optimizer, device_type)
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                           model_parameters=groups if optimizer is None else None,
                                           config=dict(config.deepspeed), dist_init_required=False)
    if (engine.zero_optimization_stage() == 0 and not engine.bfloat16_enabled() and not engine.fp16_enabled()
            and engine.dp_world_size == 1):
        # One rank, plain fp32: the gradient "all-reduce" is an identity that still flattens and copies every
        # gradient (~2% of a step); skipping it is exact.
        engine.enable_backward_allreduce = False
    scheduler = build_scheduler(engine.optimizer, config)
    return engine, scheduler
