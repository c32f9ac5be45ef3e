"""Typed configuration dataclasses.

They are built ONCE from the parsed command line (and the DeepSpeed JSON) by
``megatron.config.build_configs`` (see ``megatron/arguments.py``); model, data and
data-efficiency code receive these objects and never read global args.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from typing import Any, Protocol


class ConfigError(ValueError):
    """Invalid user configuration (flags, DeepSpeed JSON, data files); the message names the culprit."""


@dataclass(frozen=True)
class TransformerConfig:
    """Shape and regularisation of a GPT/BERT transformer stack."""

    num_layers: int
    """Number of transformer layers (``--num-layers``)."""
    hidden_size: int
    """Model width h (``--hidden-size``)."""
    num_attention_heads: int
    """Attention heads; must divide ``hidden_size`` (``--num-attention-heads``)."""
    padded_vocab_size: int
    """Vocabulary size after padding to ``--make-vocab-size-divisible-by``; size of the embedding table."""
    seq_length: int
    """Training sequence length S (``--seq-length``)."""
    max_position_embeddings: int
    """Rows of the learned position table; must be >= seq_length (``--max-position-embeddings``)."""
    ffn_hidden_size: int | None = None
    """MLP inner width; None means 4 * hidden_size (``--ffn-hidden-size``)."""
    init_method_std: float = 0.02
    """Std of the normal init of weights; output projections use std / sqrt(2 * num_layers) (``--init-method-std``)."""
    attention_dropout: float = 0.1
    """Dropout on attention probabilities (``--attention-dropout``)."""
    hidden_dropout: float = 0.1
    """Dropout after attention/MLP and on embeddings (``--hidden-dropout``)."""
    position_embedding_type: str = "learned_absolute"
    """``learned_absolute`` or ``rope`` (``--position-embedding-type``)."""
    rotary_base: float = 10000.0
    """Base of the RoPE frequencies."""
    layernorm_epsilon: float = 1e-5
    """LayerNorm epsilon (``--layernorm-epsilon``)."""
    checkpoint_activations: bool = False
    """Recompute each layer in the backward pass to save memory (``--checkpoint-activations``)."""

    def __post_init__(self) -> None:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"--hidden-size {self.hidden_size} must be divisible by --num-attention-heads {self.num_attention_heads}"
            )
        if self.position_embedding_type not in ("learned_absolute", "rope"):
            raise ValueError(
                f"--position-embedding-type must be learned_absolute or rope, got {self.position_embedding_type!r}"
            )
        if self.position_embedding_type == "learned_absolute" and self.max_position_embeddings < self.seq_length:
            raise ValueError(
                f"--max-position-embeddings {self.max_position_embeddings} is smaller than --seq-length {self.seq_length}"
            )

    @property
    def ffn_size(self) -> int:
        """MLP inner width actually used."""
        return self.ffn_hidden_size or 4 * self.hidden_size

    @property
    def head_dim(self) -> int:
        """Width of one attention head."""
        return self.hidden_size // self.num_attention_heads


@dataclass(frozen=True)
class DataConfig:
    """Where the tokens come from and how batches are shaped."""

    data_path: tuple[str, ...]
    """--data-path as given: one prefix, or WEIGHT PREFIX pairs for blending."""
    split: str
    """Train/valid/test proportions (``--split``)."""
    data_impl: str
    """Indexed dataset implementation, ``mmap`` or ``infer`` (``--data-impl``)."""
    seq_length: int
    """Tokens per training sample (a sample holds seq_length + 1 ids)."""
    seed: int
    """Seed of the dataset shuffles (``--seed``)."""
    train_valid_test_num_samples: tuple[int, int, int]
    """Samples to build for each split: train budget, and eval_iters global batches for valid/test."""
    eod_token: int | None
    """End-of-document token id of the tokenizer (None if it has none)."""
    reset_position_ids: bool = False
    """Restart position ids after every EOD (``--reset-position-ids``)."""
    reset_attention_mask: bool = False
    """Block attention across documents (``--reset-attention-mask``)."""
    eod_mask_loss: bool = False
    """Do not train on EOD targets (``--eod-mask-loss``)."""
    num_workers: int = 2
    """DataLoader worker processes (``--num-workers``)."""
    dataloader_type: str = "single"
    """``single`` pass or ``cyclic`` (``--dataloader-type``)."""
    skip_warmup: bool = True
    """Do not pre-read the mmap files (the inverse of ``--mmap-warmup``)."""
    data_cache_path: str | None = None
    """Directory for index-map caches (``--data-cache-path``)."""
    train_data_exact_num_epochs: int | None = None
    """Build the train split from exactly this many epochs (``--train-data-exact-num-epochs``)."""
    return_data_index: bool = False
    """Samples also carry their pre-shuffle index (``--return-data-index``)."""
    train_idx_path: str | None = None
    """Pinned BERT train index map (``--train-idx-path``)."""
    train_desc_path: str | None = None
    """Pinned GPT train description file (``--train-desc-path``)."""
    train_doc_idx_path: str | None = None
    """Pinned GPT doc-idx map (``--train-doc-idx-path``)."""
    train_sample_idx_path: str | None = None
    """Pinned GPT sample-idx map (``--train-sample-idx-path``)."""
    train_shuffle_idx_path: str | None = None
    """Pinned GPT shuffle-idx map (``--train-shuffle-idx-path``)."""


@dataclass(frozen=True)
class OptimizerConfig:
    """The optimizer built before ``deepspeed.initialize``."""

    name: str
    """``adam`` (torch AdamW) or ``sgd`` (``--optimizer``)."""
    lr: float
    """Peak learning rate (``--lr``)."""
    min_lr: float
    """Learning-rate floor (``--min-lr``)."""
    weight_decay: float
    """Decoupled weight decay; biases and LayerNorm parameters get none (``--weight-decay``)."""
    adam_beta1: float = 0.9
    """Adam beta1."""
    adam_beta2: float = 0.999
    """Adam beta2."""
    adam_eps: float = 1e-8
    """Adam epsilon."""
    sgd_momentum: float = 0.9
    """SGD momentum."""
    clip_grad: float = 1.0
    """Global gradient-norm clip applied by DeepSpeed; 0 = off (``--clip-grad`` / ``gradient_clipping``)."""
    from_deepspeed_json: bool = False
    """True when the DeepSpeed JSON names the optimizer; DeepSpeed then builds it."""


@dataclass(frozen=True)
class ScheduleConfig:
    """Megatron's learning-rate / weight-decay schedule; "steps" count samples."""

    lr_decay_style: str
    """``constant``, ``linear``, ``cosine`` or ``inverse-square-root``."""
    lr_warmup_steps: int
    """Warmup length in samples (from --lr-warmup-iters/-samples/-fraction)."""
    lr_decay_steps: int
    """Decay length in samples (from --lr-decay-iters/-samples, default the run length)."""
    lr_warmup_tokens: int | None = None
    """Token-based warmup length (``--lr-warmup-tokens``)."""
    lr_decay_tokens: int | None = None
    """Token-based decay length; overrides sample-based decay (``--lr-decay-tokens``)."""
    start_wd: float = 0.0
    """Weight decay at the start."""
    end_wd: float = 0.0
    """Weight decay at the end."""
    wd_incr_steps: int = 0
    """Samples over which weight decay moves from start to end."""
    wd_incr_style: str = "constant"
    """``constant``, ``linear`` or ``cosine``."""
    use_checkpoint_opt_param_scheduler: bool = False
    """Take the schedule from the checkpoint (``--use-checkpoint-opt_param-scheduler``)."""
    override_opt_param_scheduler: bool = False
    """Take the schedule from the flags (``--override-opt_param-scheduler``)."""


@dataclass(frozen=True)
class TrainingConfig:
    """Batch geometry, run length and precision."""

    micro_batch_size: int
    """Samples per rank per forward/backward."""
    global_batch_size: int
    """Samples per optimizer step over all ranks."""
    num_micro_batches: int
    """Gradient-accumulation micro-batches per rank per step."""
    data_parallel_size: int
    """Number of data-parallel ranks."""
    train_iters: int | None
    """Iteration budget (None: bounded by --train-tokens only)."""
    train_samples: int
    """Samples the train split must provide (exact budget, or an estimate from --train-tokens)."""
    train_tokens: int | None
    """Token budget; stops once consumed tokens reach it (``--train-tokens``)."""
    seq_length: int
    """Training sequence length."""
    seed: int
    """Base seed (``--seed``)."""
    precision: str = "fp32"
    """``fp32``, ``bf16`` or ``fp16``."""
    zero_stage: int = 0
    """DeepSpeed ZeRO stage."""
    eval_interval: int = 1000
    """Iterations between evaluations."""
    eval_iters: int = 100
    """Global batches per evaluation (0 = no evaluation)."""
    exit_interval: int | None = None
    """Exit after an iteration divisible by this."""
    exit_duration_in_mins: int | None = None
    """Exit after this many minutes of training."""
    skip_train: bool = False
    """Evaluate only."""
    distributed_backend: str | None = None
    """torch.distributed backend; None = the accelerator's default."""
    distributed_timeout_minutes: int = 10
    """Timeout of collectives."""

    @property
    def estimated_train_iters(self) -> int:
        """Iterations the run will take (exact unless only --train-tokens bounds it)."""
        return self.train_iters if self.train_iters is not None else math.ceil(
            self.train_samples / self.global_batch_size)


@dataclass(frozen=True)
class CheckpointConfig:
    """Where and when to save, what to load."""

    save: str | None = None
    """Directory to save into (``--save``)."""
    save_interval: int | None = None
    """Iterations between saves; a final save always happens when --save is set."""
    load: str | None = None
    """Directory to resume from (``--load``)."""
    load_tag: str | None = None
    """Tag to load instead of the one in ``latest`` (``--load-tag``)."""
    no_save_rng: bool = False
    """Do not store RNG states."""
    no_load_optim: bool = False
    """Do not restore optimizer states."""
    no_load_rng: bool = False
    """Do not restore RNG states."""
    finetune: bool = False
    """Load weights only; restart iteration, optimizer, schedule and RNG."""
    exit_on_missing_checkpoint: bool = False
    """Fail when --load holds no checkpoint."""


@dataclass(frozen=True)
class LoggingConfig:
    """Training log line and TensorBoard."""

    log_interval: int = 100
    """Iterations between training log lines."""
    tensorboard_dir: str | None = None
    """TensorBoard directory (None = off)."""
    tensorboard_log_interval: int = 1
    """Iterations between TensorBoard writes."""
    tensorboard_queue_size: int = 1000
    """Pending TensorBoard events before a flush."""
    log_timers_to_tensorboard: bool = False
    """Write iteration time."""
    log_batch_size_to_tensorboard: bool = False
    """Write the global batch size."""
    log_learning_rate_to_tensorboard: bool = True
    """Write the learning rate."""
    log_loss_scale_to_tensorboard: bool = True
    """Write the fp16 loss scale."""
    log_validation_ppl_to_tensorboard: bool = False
    """Write validation perplexity."""
    log_optimizer_states_to_tensorboard: bool = False
    """Write norms of the Adam moments."""
    log_memory_to_tensorboard: bool = False
    """Write the process memory."""
    log_world_size_to_tensorboard: bool = False
    """Write the world size."""
    log_params_norm: bool = False
    """Compute and log the L2 norm of the parameters."""


@dataclass(frozen=True)
class DataEfficiencyConfig:
    """Switches and raw JSON blocks for megatron/data_efficiency (which parses the blocks itself)."""

    curriculum_learning: bool = False
    """``--data-efficiency-curriculum-learning``."""
    random_ltd: bool = False
    """``--random-ltd``."""
    data_efficiency: dict[str, Any] = field(default_factory=dict)
    """The JSON's ``data_efficiency`` block, untouched."""
    legacy_curriculum_learning: dict[str, Any] = field(default_factory=dict)
    """The JSON's legacy top-level ``curriculum_learning`` block, untouched."""

    @property
    def legacy_curriculum_enabled(self) -> bool:
        """True when the legacy top-level curriculum_learning block is enabled."""
        return bool(self.legacy_curriculum_learning.get("enabled", False))

    @property
    def any_enabled(self) -> bool:
        """True when any data-efficiency feature is switched on."""
        return self.curriculum_learning or self.random_ltd or self.legacy_curriculum_enabled


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs, built once by ``build_configs``."""

    model: TransformerConfig
    """Model shape and regularisation."""
    data: DataConfig
    """Data files and batch shaping."""
    optimizer: OptimizerConfig
    """Optimizer settings."""
    schedule: ScheduleConfig
    """Learning-rate / weight-decay schedule."""
    training: TrainingConfig
    """Batch geometry, run length, precision."""
    checkpoint: CheckpointConfig
    """Save/load settings."""
    logging: LoggingConfig
    """Log line and TensorBoard settings."""
    data_efficiency: DataEfficiencyConfig
    """Curriculum learning / random-LTD switches and raw blocks."""
    deepspeed: dict[str, Any]
    """The dict for ``deepspeed.initialize`` (data-efficiency blocks removed, flags reconciled)."""
    args_snapshot: dict[str, Any] = field(default_factory=dict)
    """JSON-able copy of the parsed command line, stored in checkpoints."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Values of flags added by the entry point's extra_args_provider (dest -> value)."""


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


def _schedule(args: argparse.Namespace, train_iters: int | None, train_samples: int, gbs: int) -> ScheduleConfig:
    # The schedule's basis follows the flag the user gave (Megatron): --train-iters -> --lr-*-iters, otherwise
    # (--train-samples, or only --train-tokens) -> --lr-*-samples. `train_iters` may be derived from samples.
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
    return ScheduleConfig(
        lr_decay_style=args.lr_decay_style, lr_warmup_steps=int(warmup), lr_decay_steps=int(decay),
        lr_warmup_tokens=args.lr_warmup_tokens, lr_decay_tokens=args.lr_decay_tokens, start_wd=start_wd,
        end_wd=end_wd, wd_incr_steps=int(wd_steps), wd_incr_style=args.weight_decay_incr_style,
        use_checkpoint_opt_param_scheduler=args.use_checkpoint_opt_param_scheduler,
        override_opt_param_scheduler=args.override_opt_param_scheduler)


def build_configs(args: argparse.Namespace, tokenizer: _Tokenizer, world_size: int) -> RunConfig:
    """Turn validated args (+ the DeepSpeed JSON and the tokenizer) into the typed RunConfig, once."""
    from megatron.training import ds_config

    ds_json = ds_config.load_deepspeed_json(args.deepspeed_config)
    eng = ds_config.resolve_engine_settings(
        micro_batch_size=args.micro_batch_size, global_batch_size=args.global_batch_size, world_size=world_size,
        bf16=args.bf16, fp16=args.fp16, zero_stage=args.zero_stage, clip_grad=args.clip_grad, ds_json=ds_json,
        json_path=args.deepspeed_config)
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
        padded_vocab_size=int(tokenizer.padded_vocab_size), seq_length=seq,
        max_position_embeddings=args.max_position_embeddings or seq, ffn_hidden_size=args.ffn_hidden_size,
        init_method_std=args.init_method_std, attention_dropout=args.attention_dropout,
        hidden_dropout=args.hidden_dropout, position_embedding_type="rope" if rope else "learned_absolute",
        rotary_base=float(args.rope_theta), layernorm_epsilon=args.layernorm_epsilon,
        checkpoint_activations=args.checkpoint_activations)
    eval_samples = args.eval_iters * gbs
    data = DataConfig(
        data_path=tuple(args.data_path), split=args.split, data_impl=args.data_impl, seq_length=seq, seed=args.seed,
        train_valid_test_num_samples=(train_samples, eval_samples, eval_samples),
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
    training = TrainingConfig(
        micro_batch_size=eng.micro_batch_size, global_batch_size=gbs, num_micro_batches=eng.gradient_accumulation_steps,
        data_parallel_size=eng.data_parallel_size, train_iters=train_iters, train_samples=train_samples,
        train_tokens=args.train_tokens, seq_length=seq, seed=args.seed, precision=eng.precision,
        zero_stage=eng.zero_stage, eval_interval=args.eval_interval, eval_iters=args.eval_iters,
        exit_interval=args.exit_interval, exit_duration_in_mins=args.exit_duration_in_mins,
        skip_train=args.skip_train, distributed_backend=args.distributed_backend,
        distributed_timeout_minutes=args.distributed_timeout_minutes)
    checkpoint = CheckpointConfig(
        save=args.save, save_interval=args.save_interval, load=args.load, load_tag=args.load_tag,
        no_save_rng=bool(args.no_save_rng), no_load_optim=bool(args.no_load_optim),
        no_load_rng=bool(args.no_load_rng), finetune=args.finetune,
        exit_on_missing_checkpoint=args.exit_on_missing_checkpoint)
    logging_cfg = LoggingConfig(**{f: getattr(args, f) for f in LoggingConfig.__dataclass_fields__})
    de_block, legacy_block = ds_config.data_efficiency_blocks(ds_json)
    data_eff = DataEfficiencyConfig(
        curriculum_learning=args.data_efficiency_curriculum_learning, random_ltd=args.random_ltd,
        data_efficiency=de_block, legacy_curriculum_learning=legacy_block)
    ds_dict = ds_config.build_deepspeed_dict(
        eng, ds_json, fp16_loss_scale=args.loss_scale, fp16_initial_loss_scale=args.initial_loss_scale,
        fp16_loss_scale_window=args.loss_scale_window, fp16_hysteresis=args.hysteresis,
        fp16_min_loss_scale=args.min_loss_scale)
    extra = {name: getattr(args, name) for name in getattr(args, "extra_arg_dests", [])}
    return RunConfig(model=model, data=data, optimizer=optimizer, schedule=_schedule(args, train_iters, train_samples,
                                                                                      gbs),
                     training=training, checkpoint=checkpoint, logging=logging_cfg, data_efficiency=data_eff,
                     deepspeed=ds_dict, args_snapshot=args_snapshot(args), extra=extra)
