"""Typed configuration dataclasses; each class checks its own shape rules in ``__post_init__``.

They are built ONCE from the parsed command line and the DeepSpeed JSON by ``megatron.config.build_configs``;
model, data, data-efficiency and training code receive these objects and never read the parsed args.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from megatron.data_efficiency.config import DataEfficiencySettings, parse_deepspeed_config


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
    max_position_embeddings: int
    """Rows of the learned position table; the longest sequence the model reads (``--max-position-embeddings``)."""
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
            raise ConfigError(f"--hidden-size {self.hidden_size} is not divisible by --num-attention-heads "
                              f"{self.num_attention_heads}")
        if self.position_embedding_type not in ("learned_absolute", "rope"):
            raise ConfigError(
                f"--position-embedding-type must be learned_absolute or rope, got {self.position_embedding_type!r}"
            )
        for name in ("attention_dropout", "hidden_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1), got {getattr(self, name)}")

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


LR_DECAY_STYLES = ("constant", "linear", "cosine", "inverse-square-root")
WD_INCR_STYLES = ("constant", "linear", "cosine")


class LRSchedulerError(ConfigError):
    """Invalid schedule settings, or a checkpoint schedule that conflicts with the command line."""


def check_lr_schedule(*, max_lr: float, min_lr: float, lr_warmup_steps: float, lr_decay_steps: int,
                      lr_decay_style: str, lr_warmup_tokens: int | None = None, lr_decay_tokens: int | None = None,
                      start_wd: float = 0.0, end_wd: float = 0.0, wd_incr_steps: int | None = None,
                      wd_incr_style: str = "constant") -> None:
    """Raise LRSchedulerError naming the flag for any inconsistent learning-rate / weight-decay schedule."""
    if min_lr < 0.0:
        raise LRSchedulerError(f"--min-lr must be >= 0, got {min_lr}")
    if max_lr < 0.0:
        raise LRSchedulerError(f"--lr must be >= 0, got {max_lr}")
    if max_lr < min_lr:
        raise LRSchedulerError(f"--min-lr {min_lr} is larger than --lr {max_lr}")
    if lr_decay_style not in LR_DECAY_STYLES:
        raise LRSchedulerError(
            f"--lr-decay-style must be one of {', '.join(LR_DECAY_STYLES)}, got {lr_decay_style!r}"
        )
    if lr_warmup_steps < 0:
        raise LRSchedulerError(
            f"LR warmup (--lr-warmup-iters/-samples/-fraction) must be >= 0, got {lr_warmup_steps}"
        )
    if lr_decay_steps <= 0:
        raise LRSchedulerError(
            f"LR decay length (--lr-decay-iters/-samples) must be > 0, got {lr_decay_steps} samples"
        )
    if lr_decay_tokens is None and lr_warmup_steps >= lr_decay_steps:
        raise LRSchedulerError(
            f"LR warmup ({lr_warmup_steps} samples) must be shorter than "
            f"LR decay ({lr_decay_steps} samples)"
        )
    if lr_warmup_tokens is not None and lr_warmup_tokens < 0:
        raise LRSchedulerError(f"--lr-warmup-tokens must be >= 0, got {lr_warmup_tokens}")
    if lr_decay_tokens is not None:
        if lr_decay_tokens <= 0:
            raise LRSchedulerError(f"--lr-decay-tokens must be > 0, got {lr_decay_tokens}")
        # --lr-warmup-tokens >= --lr-decay-tokens is accepted as upstream does (warm up, then hold min_lr); the CLI
        # warns about it once (megatron.arguments.startup_warnings)
    if start_wd < 0.0 or end_wd < start_wd:
        raise LRSchedulerError(
            f"weight decay must satisfy 0 <= --start-weight-decay ({start_wd}) "
            f"<= --end-weight-decay ({end_wd})"
        )
    if wd_incr_style not in WD_INCR_STYLES:
        raise LRSchedulerError(
            f"--weight-decay-incr-style must be one of {', '.join(WD_INCR_STYLES)}, got {wd_incr_style!r}"
        )
    if wd_incr_style == "constant" and start_wd != end_wd:
        raise LRSchedulerError(
            f"--weight-decay-incr-style constant needs --start-weight-decay ({start_wd}) == "
            f"--end-weight-decay ({end_wd})"
        )
    if wd_incr_style != "constant" and not (wd_incr_steps and wd_incr_steps > 0):
        raise LRSchedulerError(
            f"--weight-decay-incr-style {wd_incr_style} needs a positive weight-decay increment length, "
            f"got {wd_incr_steps}"
        )


@dataclass(frozen=True)
class LRScheduleConfig:
    """Megatron's learning-rate / weight-decay schedule; "steps" count samples (checked by ``check_lr_schedule``)."""

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
    """Training sequence length S (``--seq-length``): tokens a sample trains on (GPT samples hold S + 1 ids)."""
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
    eval_advance: bool = False
    """Each evaluation continues through the validation split where the last one stopped, as upstream does
    (``--eval-advance``); default: the same first ``eval_iters`` batches every time."""
    exit_interval: int | None = None
    """Exit after an iteration divisible by this."""
    exit_duration_in_mins: int | None = None
    """Exit after this many minutes of training."""
    exit_signal_handler: bool = False
    """Stop after the current step on SIGTERM/SIGINT, save, exit 128 + signal (``--exit-signal-handler``)."""
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
    overwrite_save: bool = False
    """Allow --save into a directory holding a checkpoint this run does not resume (``--overwrite-save``)."""


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
class DataEfficiencyOptions:
    """The two data-efficiency switches and the DeepSpeed JSON blocks they go with, parsed and checked once."""

    curriculum_learning: bool = False
    """``--data-efficiency-curriculum-learning`` (agrees with data_sampling.curriculum_learning.enabled)."""
    random_ltd: bool = False
    """``--random-ltd`` (agrees with data_routing.random_ltd.enabled)."""
    settings: DataEfficiencySettings = field(default_factory=lambda: parse_deepspeed_config({}))
    """The JSON's ``data_efficiency`` and legacy ``curriculum_learning`` blocks, parsed (defaults when absent)."""
    source: str = "DeepSpeed config"
    """Where the blocks came from (the --deepspeed_config path), for messages."""

    @property
    def legacy_curriculum_enabled(self) -> bool:
        """True when the legacy top-level curriculum_learning block is enabled."""
        return self.settings.legacy_curriculum.enabled

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
    schedule: LRScheduleConfig
    """Learning-rate / weight-decay schedule."""
    training: TrainingConfig
    """Batch geometry, run length, precision."""
    checkpoint: CheckpointConfig
    """Save/load settings."""
    logging: LoggingConfig
    """Log line and TensorBoard settings."""
    data_efficiency: DataEfficiencyOptions
    """Curriculum learning / random-LTD switches and their parsed JSON blocks."""
    deepspeed: dict[str, Any]
    """The dict for ``deepspeed.initialize`` (data-efficiency blocks removed, flags reconciled)."""
    args_snapshot: dict[str, Any] = field(default_factory=dict)
    """JSON-able copy of the parsed command line, stored in checkpoints."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Values of flags added by the entry point's extra_args_provider (dest -> value)."""

    def __post_init__(self) -> None:
        m, seq = self.model, self.training.seq_length
        if m.position_embedding_type == "learned_absolute" and m.max_position_embeddings < seq:
            raise ConfigError(f"--max-position-embeddings {m.max_position_embeddings} is smaller than --seq-length "
                              f"{seq}")
