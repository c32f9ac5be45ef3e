"""The DeepSpeed JSON side of the config bridge: read it, reconcile it with the flags, build the engine dict.

Rules: a value given both as a flag and in the JSON must agree, or the run stops naming both; a value given
in only one place is taken from there; a value given nowhere gets Megatron's default. The `data_efficiency`
and legacy `curriculum_learning` blocks are read by megatron/data_efficiency and removed from the dict that
reaches ``deepspeed.initialize`` (DeepSpeed 0.19.8 refuses the legacy block and would switch on its own
CUDA-only code paths for the other).
"""
from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import dataclass
from typing import Any

from megatron.config.run_config import ConfigError
from megatron.data_efficiency.config import strip_data_efficiency_blocks

DATA_EFFICIENCY_KEYS = ("data_efficiency", "curriculum_learning")
DEFAULT_CLIP_GRAD = 1.0
DEFAULT_ZERO_STAGE = 0


@dataclass(frozen=True)
class EngineSettings:
    """Batch geometry, precision, ZeRO stage and clipping after reconciling flags with the JSON."""

    micro_batch_size: int
    """Samples per rank per forward/backward."""
    global_batch_size: int
    """Samples per optimizer step over all ranks."""
    gradient_accumulation_steps: int
    """Micro-batches per rank per optimizer step."""
    data_parallel_size: int
    """Number of data-parallel ranks (= world size: no tensor/pipeline parallelism)."""
    precision: str
    """'fp32', 'bf16' or 'fp16'."""
    zero_stage: int
    """DeepSpeed ZeRO stage 0-3."""
    clip_grad: float
    """Global gradient-norm clip; 0 disables clipping."""


def accelerator_name() -> str:
    """DeepSpeed's accelerator device name ('cpu', 'cuda', ...)."""
    from deepspeed.accelerator import get_accelerator

    return get_accelerator().device_name()


def load_deepspeed_json(path: str | None) -> dict[str, Any] | None:
    """Read the --deepspeed_config file (None when absent); errors name the file and line."""
    if path is None:
        return None
    if not os.path.isfile(path):
        raise ConfigError(f"--deepspeed_config {path}: file not found")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--deepspeed_config {path}: line {e.lineno} column {e.colno}: invalid JSON ({e.msg})"
                          ) from None
    except OSError as e:
        raise ConfigError(f"--deepspeed_config {path}: cannot read ({e.strerror})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--deepspeed_config {path}: expected a JSON object at the top level")
    return data


def _enabled(block: Any) -> bool:
    return isinstance(block, dict) and bool(block.get("enabled", False))


def _agree(flag: str, flag_value: Any, key: str, json_value: Any, path: str | None) -> Any:
    """The single value of a setting given as flag and/or JSON key; ConfigError naming both when they differ."""
    if flag_value is None:
        return json_value
    if json_value is None:
        return flag_value
    same = (math.isclose(float(flag_value), float(json_value), rel_tol=1e-9, abs_tol=0.0)
            if isinstance(flag_value, (int, float)) and isinstance(json_value, (int, float)) else
            flag_value == json_value)
    if not same:
        raise ConfigError(f"{flag} {flag_value} contradicts \"{key}\": {json_value} in --deepspeed_config {path} "
                          "(flag and JSON must agree)")
    return flag_value


def _json_int(ds_json: dict[str, Any], key: str, path: str | None) -> int | None:
    value = ds_json.get(key)
    if value is None or value == "auto":
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"--deepspeed_config {path}: \"{key}\" must be a positive integer, got {value!r}")
    return value


def _json_precision(ds_json: dict[str, Any]) -> tuple[bool | None, bool | None]:
    bf16_block = ds_json.get("bf16", ds_json.get("bfloat16"))
    fp16_block = ds_json.get("fp16")
    bf16 = None if bf16_block is None else _enabled(bf16_block)
    fp16 = None if fp16_block is None else _enabled(fp16_block)
    return bf16, fp16


def resolve_engine_settings(*, micro_batch_size: int | None, global_batch_size: int | None, world_size: int,
                            bf16: bool, fp16: bool, zero_stage: int | None, clip_grad: float | None,
                            ds_json: dict[str, Any] | None, json_path: str | None) -> EngineSettings:
    """Reconcile the flags with the JSON (ConfigError on contradictions) and derive gradient accumulation."""
    js = ds_json or {}
    dp = world_size
    micro = _agree("--micro-batch-size", micro_batch_size, "train_micro_batch_size_per_gpu",
                   _json_int(js, "train_micro_batch_size_per_gpu", json_path), json_path)
    glob = _agree("--global-batch-size", global_batch_size, "train_batch_size",
                  _json_int(js, "train_batch_size", json_path), json_path)
    json_gas = _json_int(js, "gradient_accumulation_steps", json_path)
    if micro is None and glob is not None and json_gas is not None and glob % (json_gas * dp) == 0:
        micro = glob // (json_gas * dp)
    if micro is None:
        raise ConfigError("--micro-batch-size is required (or train_micro_batch_size_per_gpu in --deepspeed_config)")
    if glob is None:
        glob = micro * dp * (json_gas or 1)
    if glob % (micro * dp):
        raise ConfigError(f"--global-batch-size {glob} is not divisible by --micro-batch-size {micro} x "
                          f"data-parallel size {dp} (= {micro * dp})")
    gas = glob // (micro * dp)
    if json_gas is not None and json_gas != gas:
        raise ConfigError(f"\"gradient_accumulation_steps\": {json_gas} in --deepspeed_config {json_path} "
                          f"contradicts --global-batch-size {glob} / (--micro-batch-size {micro} x data-parallel "
                          f"size {dp}) = {gas}")
    json_bf16, json_fp16 = _json_precision(js)
    for flag, on, key, json_on in (("--bf16", bf16, "bf16.enabled", json_bf16),
                                   ("--fp16", fp16, "fp16.enabled", json_fp16)):
        if json_on is not None and json_on != on:
            given = "given" if on else "not given"
            raise ConfigError(f"{flag} is {given} but \"{key}\" is {str(json_on).lower()} in --deepspeed_config "
                              f"{json_path} (flag and JSON must agree)")
    precision = "bf16" if bf16 else "fp16" if fp16 else "fp32"
    zero_block = js.get("zero_optimization")
    json_stage = zero_block.get("stage") if isinstance(zero_block, dict) else None
    stage = _agree("--zero-stage", zero_stage, "zero_optimization.stage", json_stage, json_path)
    stage = DEFAULT_ZERO_STAGE if stage is None else int(stage)
    if stage not in (0, 1, 2, 3):
        raise ConfigError(f"ZeRO stage must be 0, 1, 2 or 3, got {stage}")
    clip = _agree("--clip-grad", clip_grad, "gradient_clipping", js.get("gradient_clipping"), json_path)
    clip = DEFAULT_CLIP_GRAD if clip is None else float(clip)
    return EngineSettings(micro, glob, gas, dp, precision, stage, clip)


def check_json_against_flags(ds_json: dict[str, Any] | None, json_path: str | None, *, lr: float | None,
                             weight_decay: float, betas: tuple[float, float], eps: float) -> None:
    """Reject a JSON `scheduler` block and an `optimizer` block whose params contradict the flags."""
    if not ds_json:
        return
    if "scheduler" in ds_json:
        raise ConfigError(f"--deepspeed_config {json_path}: remove the \"scheduler\" block; the learning-rate "
                          "schedule comes from the --lr* flags (Megatron's scheduler)")
    opt = ds_json.get("optimizer")
    if opt is None:
        return
    if not isinstance(opt, dict) or str(opt.get("type", "")).lower() not in ("adam", "adamw"):
        raise ConfigError(f"--deepspeed_config {json_path}: optimizer type {opt.get('type') if isinstance(opt, dict) else opt!r}"
                          " is not supported (use Adam/AdamW, or drop the block to use --optimizer)")
    params = opt.get("params") or {}
    _agree("--lr", lr, "optimizer.params.lr", params.get("lr"), json_path)
    _agree("--weight-decay", weight_decay, "optimizer.params.weight_decay", params.get("weight_decay"), json_path)
    _agree("--adam-eps", eps, "optimizer.params.eps", params.get("eps"), json_path)
    if params.get("betas") is not None:
        json_betas = tuple(float(b) for b in params["betas"])
        if json_betas != tuple(float(b) for b in betas):
            raise ConfigError(f"--adam-beta1/--adam-beta2 {betas[0]} {betas[1]} contradict \"optimizer.params.betas\": "
                              f"{list(json_betas)} in --deepspeed_config {json_path} (flag and JSON must agree)")


def build_deepspeed_dict(settings: EngineSettings, ds_json: dict[str, Any] | None, *,
                         fp16_loss_scale: float | None = None, fp16_initial_loss_scale: float = 2 ** 32,
                         fp16_loss_scale_window: float = 1000, fp16_hysteresis: int = 2,
                         fp16_min_loss_scale: float = 1.0, steps_per_print: int | None = None) -> dict[str, Any]:
    """The dict for ``deepspeed.initialize(config=...)``: the JSON (minus data-efficiency blocks) + resolved settings."""
    cfg = strip_data_efficiency_blocks(ds_json) if ds_json else {}
    cfg["train_batch_size"] = settings.global_batch_size
    cfg["train_micro_batch_size_per_gpu"] = settings.micro_batch_size
    cfg["gradient_accumulation_steps"] = settings.gradient_accumulation_steps
    cfg["gradient_clipping"] = settings.clip_grad  # DeepSpeed 0.19.8 would default to 1.0
    zero = cfg.get("zero_optimization")
    cfg["zero_optimization"] = {**(zero if isinstance(zero, dict) else {}), "stage": settings.zero_stage}
    bf16_block = cfg.pop("bfloat16", None) or cfg.get("bf16") or {}
    cfg["bf16"] = {**bf16_block, "enabled": settings.precision == "bf16"}
    fp16_block = dict((ds_json or {}).get("fp16") or {})
    if settings.precision == "fp16" and not (ds_json and "fp16" in ds_json):
        fp16_block.update(loss_scale=fp16_loss_scale or 0,
                          initial_scale_power=int(round(math.log2(fp16_initial_loss_scale))),
                          loss_scale_window=fp16_loss_scale_window, hysteresis=fp16_hysteresis,
                          min_loss_scale=fp16_min_loss_scale)
    cfg["fp16"] = {**fp16_block, "enabled": settings.precision == "fp16"}
    cfg.setdefault("zero_allow_untested_optimizer", True)  # torch SGD under ZeRO
    cfg.setdefault("steps_per_print", steps_per_print or 2 ** 31 - 1)  # our training_log is the step log
    cfg.setdefault("wall_clock_breakdown", False)
    return cfg


def data_efficiency_blocks(ds_json: dict[str, Any] | None) -> dict[str, Any]:
    """The JSON's `data_efficiency` and legacy `curriculum_learning` blocks (those present), shaped as the JSON."""
    return {key: copy.deepcopy(value) for key, value in (ds_json or {}).items() if key in DATA_EFFICIENCY_KEYS}
