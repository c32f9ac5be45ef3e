"""Where the model is built: on the accelerator (under ``deepspeed.zero.Init`` at ZeRO-3), and its matmul precision.

On a GPU, building the model in fp32 on the host of every rank and copying it over costs host memory (a 1.3B model
is 5 GB per rank, 8 ranks per node) and start-up time. ``build_model`` constructs it directly on the rank's device;
at ZeRO stage 3 inside ``deepspeed.zero.Init``, so every parameter is partitioned as soon as its module is built
and no rank ever holds the whole model. On CPU (tests, the CPU quickstart) the model is built exactly as before.
"""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from megatron.config import RunConfig

logger = logging.getLogger("megatron.training")


def accelerator_device() -> torch.device:
    """This rank's device as DeepSpeed's accelerator names it (``cuda:N`` on GPUs, ``cpu`` otherwise)."""
    from deepspeed.accelerator import get_accelerator

    accel = get_accelerator()
    if accel.device_name() == "cpu":
        return torch.device("cpu")
    return torch.device(accel.current_device_name())


def configure_matmul_precision(device: torch.device) -> None:
    """On CUDA, let fp32 matmuls and convolutions use TF32 tensor cores (``set_float32_matmul_precision("high")``).

    bf16/fp16 training is unaffected; fp32 runs (and fp32 evaluation) get Ampere+ tensor-core speed at a 10-bit
    mantissa for the matmul inputs, as Megatron and most PyTorch trainers run. Nothing changes on other devices.
    """
    if device.type != "cuda":
        return
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True


def build_model(spec: Any, config: RunConfig, device: torch.device | None = None) -> nn.Module:
    """``spec.build_model(config)`` on ``device`` (default: the accelerator's); under ``deepspeed.zero.Init`` at ZeRO-3.

    On CPU the plain call: parameters in fp32 on the host, as DeepSpeed's engine expects them there.
    """
    device = device if device is not None else accelerator_device()
    if device.type == "cpu":
        return spec.build_model(config)
    if config.training.zero_stage == 3:
        import deepspeed

        logger.info("building the model under deepspeed.zero.Init (ZeRO-3): parameters partitioned as built")
        with deepspeed.zero.Init(config_dict_or_path=dict(config.deepspeed)):
            return spec.build_model(config)
    with device:  # factory functions default to this device: parameters are created and initialised there
        return spec.build_model(config)
