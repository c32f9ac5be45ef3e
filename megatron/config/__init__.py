"""Typed configuration: the dataclasses (``run_config``), the DeepSpeed JSON (``deepspeed_json``) and the one
bridge that builds them from the parsed flags (``bridge.build_configs``).

Imports nothing from ``megatron.training`` or the CLI: model, data, data-efficiency and training code depend on
this package, never the other way round.
"""
from megatron.config.run_config import (LR_DECAY_STYLES, WD_INCR_STYLES, CheckpointConfig, ConfigError, DataConfig,
                                        DataEfficiencyOptions, LoggingConfig, LRScheduleConfig, LRSchedulerError,
                                        OptimizerConfig, RunConfig, TrainingConfig, TransformerConfig,
                                        check_lr_schedule)
from megatron.config.bridge import args_snapshot, build_configs, lr_schedule_config  # noqa: E402

__all__ = ["LR_DECAY_STYLES", "WD_INCR_STYLES", "CheckpointConfig", "ConfigError", "DataConfig",
           "DataEfficiencyOptions", "LoggingConfig", "LRScheduleConfig", "LRSchedulerError", "OptimizerConfig",
           "RunConfig", "TrainingConfig", "TransformerConfig", "check_lr_schedule", "build_configs", "args_snapshot",
           "lr_schedule_config"]
