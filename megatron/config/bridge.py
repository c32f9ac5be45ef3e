"""The one bridge from a parsed, flag-validated command line (+ the DeepSpeed JSON + the tokenizer) to RunConfig.

The DeepSpeed JSON is read here and only here: engine settings are reconciled with the flags, the optimizer /
scheduler blocks are checked against them, and the ``data_efficiency`` / legacy ``curriculum_learning`` blocks
are parsed into typed settings (and must agree with ``--data-efficiency-curriculum-learning`` / ``--random-ltd``).
The learning-rate schedule is checked by the pure ``check_lr_schedule``. Every problem is one ConfigError line.
"""
from __future__ import annotations

import argparse
import math
from typing import Any, Protocol

from megatron.config import deepspeed_json
from megatron.config.run_config import (CheckpointConfig, ConfigError, DataConfig, DataEfficiencyOptions,
                                        LoggingConfig, LRScheduleConfig, OptimizerConfig, RunConfig, TrainingConfig,
                                        TransformerConfig, check_lr_schedule)
from megatron.data_efficiency.config import parse_deepspeed_config


class _Tokenizer(Protocol):
    padded_vocab_size: int


def _json_able(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_able(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_able(v) for k, v in value.items()}
    return str(value)


def args_snapshot(args: argparse.Namespace) -> dict[str, Any]:
    """A plain, JSON-able dict of the parsed flags (for checkpoints and logs)."""
    return {k: _json_able(v) for k, v in sorted(vars(args).items())}


def lr_schedule_config(args: argparse.Namespace, train_iters: int | None, train_samples: int, gbs: int
                       ) -> LRScheduleConfig:
    """Megatron's --lr-* flags -> schedule lengths in samples (the basis follows the budget flag given)."""
    # --train-iters -> --lr-*-iters; otherwise (--train-samples, or only --train-tokens) -> --lr-*-samples.
    # `train_iters` may be derived from samples.
    if args.train_iters is not None and train_iters is not None:
        decay = (args.lr_decay_iters or train_iters) * gbs
        warmup = args.lr_warmup_iters * gbs
        wd_steps = train_iters * gbs
    else:
        decay = args.lr_decay_samples or train_samples
        warmup = args.lr_warmup_samples
        wd_steps = train_samples
    if args.lr_warmup_fraction is not None:
        warmup = int(args.lr_warmup_fraction * decay)
    if args.weight_decay_incr_style == "constant":
        start_wd = end_wd = args.weight_decay
    else:
        start_wd, end_wd = args.start_weight_decay, args.end_weight_decay
    return LRScheduleConfig(
        lr_decay_style=args.lr_decay_style, lr_warmup_steps=int(warmup), lr_decay_steps=int(decay),
        lr_warmup_tokens=args.lr_warmup_tokens, lr_decay_tokens=args.lr_decay_tokens, start_wd=start_wd,
        end_wd=end_wd, wd_incr_steps=int(wd_steps), wd_incr_style=args.weight_decay_incr_style,
        use_checkpoint_opt_param_scheduler=args.use_checkpoint_opt_param_scheduler,
        override_opt_param_scheduler=args.override_opt_param_scheduler)


def _data_efficiency(args: argparse.Namespace, ds_json: dict[str, Any] | None) -> DataEfficiencyOptions:
    """The two switches, checked against the JSON blocks, which are parsed into typed settings."""
    source = args.deepspeed_config or "DeepSpeed config"
    try:
        settings = parse_deepspeed_config(deepspeed_json.data_efficiency_blocks(ds_json), source,
                                          num_layers=args.num_layers, seq_length=args.seq_length)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    json_name = args.deepspeed_config or "(no --deepspeed_config)"
    pairs = (("--data-efficiency-curriculum-learning", args.data_efficiency_curriculum_learning,
              "data_efficiency.data_sampling.curriculum_learning.enabled",
              settings.data_efficiency.data_sampling.curriculum_learning.enabled),
             ("--random-ltd", args.random_ltd, "data_efficiency.data_routing.random_ltd.enabled",
              settings.data_efficiency.data_routing.random_ltd.enabled))
    for flag, on, key, json_on in pairs:
        if on and not json_on:
            raise ConfigError(f"{flag} needs --deepspeed_config with {key}: true (config: {json_name})")
        if json_on and not on:
            raise ConfigError(f"{args.deepspeed_config}: {key} is true but {flag} is not given (flag and JSON "
                              "must agree)")
    return DataEfficiencyOptions(curriculum_learning=args.data_efficiency_curriculum_learning,
                                 random_ltd=args.random_ltd, settings=settings, source=source)


def build_configs(args: argparse.Namespace, tokenizer: _Tokenizer, world_size: int) -> RunConfig:
    """Turn flag-validated args (+ the DeepSpeed JSON and the tokenizer) into the typed RunConfig, once."""
    ds_json = deepspeed_json.load_deepspeed_json(args.deepspeed_config)
    eng = deepspeed_json.resolve_engine_settings(
        micro_batch_size=args.micro_batch_size, global_batch_size=args.global_batch_size, world_size=world_size,
        bf16=args.bf16, fp16=args.fp16, zero_stage=args.zero_stage, clip_grad=args.clip_grad, ds_json=ds_json,
        json_path=args.deepspeed_config)
    if eng.precision == "fp16" and deepspeed_json.accelerator_name() == "cpu":
        raise ConfigError("--fp16 is not supported on CPU (DeepSpeed refuses it); use --bf16 or fp32")
    deepspeed_json.check_json_against_flags(ds_json, args.deepspeed_config, lr=args.lr,
                                            weight_decay=args.weight_decay, betas=(args.adam_beta1, args.adam_beta2),
                                            eps=args.adam_eps)
    data_eff = _data_efficiency(args, ds_json)
    gbs, seq = eng.global_batch_size, args.seq_length
    if args.train_iters is not None:
        train_iters, train_samples = args.train_iters, args.train_iters * gbs
    elif args.train_samples is not None:
        train_iters, train_samples = args.train_samples // gbs, args.train_samples
    elif args.train_tokens is not None:
        train_iters, train_samples = None, math.ceil(math.ceil(args.train_tokens / seq) / gbs) * gbs
    else:  # --skip-train without a budget
        train_iters, train_samples = 0, 0
    if train_iters == 0 and not args.skip_train:
        raise ConfigError(f"--train-samples {args.train_samples} is smaller than one global batch ({gbs})")
    rope = args.use_rotary_position_embeddings or args.position_embedding_type in ("rope", "rotary")
    model = TransformerConfig(
        num_layers=args.num_layers, hidden_size=args.hidden_size, num_attention_heads=args.num_attention_heads,
        padded_vocab_size=int(tokenizer.padded_vocab_size), max_position_embeddings=args.max_position_embeddings or seq,
        ffn_hidden_size=args.ffn_hidden_size, init_method_std=args.init_method_std,
        attention_dropout=args.attention_dropout, hidden_dropout=args.hidden_dropout,
        position_embedding_type="rope" if rope else "learned_absolute", rotary_base=float(args.rope_theta),
        layernorm_epsilon=args.layernorm_epsilon, checkpoint_activations=args.checkpoint_activations)
    eval_samples = args.eval_iters * gbs
    valid_samples = eval_samples
    if getattr(args, "eval_advance", False):  # upstream sizes the validation split for every evaluation of the run
        run_iters = train_iters if train_iters is not None else math.ceil(train_samples / gbs)
        valid_samples = (run_iters // args.eval_interval + 1) * eval_samples
    data = DataConfig(
        data_path=tuple(args.data_path or ()), split=args.split, data_impl=args.data_impl, seed=args.seed,
        train_valid_test_num_samples=(train_samples, valid_samples, eval_samples),
        eod_token=getattr(tokenizer, "eod", None), reset_position_ids=args.reset_position_ids,
        reset_attention_mask=args.reset_attention_mask, eod_mask_loss=args.eod_mask_loss,
        num_workers=args.num_workers, dataloader_type=args.dataloader_type or "single",
        skip_warmup=not args.mmap_warmup, data_cache_path=args.data_cache_path,
        train_data_exact_num_epochs=args.train_data_exact_num_epochs, return_data_index=args.return_data_index,
        train_idx_path=args.train_idx_path, train_desc_path=args.train_desc_path,
        train_doc_idx_path=args.train_doc_idx_path, train_sample_idx_path=args.train_sample_idx_path,
        train_shuffle_idx_path=args.train_shuffle_idx_path)
    optimizer = OptimizerConfig(
        name=args.optimizer, lr=args.lr, min_lr=args.min_lr, weight_decay=args.weight_decay,
        adam_beta1=args.adam_beta1, adam_beta2=args.adam_beta2, adam_eps=args.adam_eps,
        sgd_momentum=args.sgd_momentum, clip_grad=eng.clip_grad,
        from_deepspeed_json=bool(ds_json and "optimizer" in ds_json))
    schedule = lr_schedule_config(args, train_iters, train_samples, gbs)
    check_lr_schedule(max_lr=optimizer.lr, min_lr=optimizer.min_lr, lr_warmup_steps=schedule.lr_warmup_steps,
                      lr_decay_steps=schedule.lr_decay_steps, lr_decay_style=schedule.lr_decay_style,
                      lr_warmup_tokens=schedule.lr_warmup_tokens, lr_decay_tokens=schedule.lr_decay_tokens,
                      start_wd=schedule.start_wd, end_wd=schedule.end_wd, wd_incr_steps=schedule.wd_incr_steps,
                      wd_incr_style=schedule.wd_incr_style)
    training = TrainingConfig(
        micro_batch_size=eng.micro_batch_size, global_batch_size=gbs, num_micro_batches=eng.gradient_accumulation_steps,
        data_parallel_size=eng.data_parallel_size, train_iters=train_iters, train_samples=train_samples,
        train_tokens=args.train_tokens, seq_length=seq, seed=args.seed, precision=eng.precision,
        zero_stage=eng.zero_stage, eval_interval=args.eval_interval, eval_iters=args.eval_iters,
        eval_advance=bool(getattr(args, "eval_advance", False)),
        exit_interval=args.exit_interval, exit_duration_in_mins=args.exit_duration_in_mins,
        exit_signal_handler=bool(getattr(args, "exit_signal_handler", False)),
        skip_train=args.skip_train, distributed_backend=args.distributed_backend,
        distributed_timeout_minutes=args.distributed_timeout_minutes)
    checkpoint = CheckpointConfig(
        save=args.save, save_interval=args.save_interval, load=args.load, load_tag=args.load_tag,
        no_save_rng=bool(args.no_save_rng), no_load_optim=bool(args.no_load_optim),
        no_load_rng=bool(args.no_load_rng), finetune=args.finetune,
        exit_on_missing_checkpoint=args.exit_on_missing_checkpoint,
        overwrite_save=bool(getattr(args, "overwrite_save", False)))
    logging_cfg = LoggingConfig(**{f: getattr(args, f) for f in LoggingConfig.__dataclass_fields__})
    ds_dict = deepspeed_json.build_deepspeed_dict(
        eng, ds_json, fp16_loss_scale=args.loss_scale, fp16_initial_loss_scale=args.initial_loss_scale,
        fp16_loss_scale_window=args.loss_scale_window, fp16_hysteresis=args.hysteresis,
        fp16_min_loss_scale=args.min_loss_scale)
    extra = {name: getattr(args, name) for name in getattr(args, "extra_arg_dests", [])}
    return RunConfig(model=model, data=data, optimizer=optimizer, schedule=schedule, training=training,
                     checkpoint=checkpoint, logging=logging_cfg, data_efficiency=data_eff, deepspeed=ds_dict,
                     args_snapshot=args_snapshot(args), extra=extra)
