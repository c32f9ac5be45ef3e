"""The command line: Megatron-DeepSpeed's flag names, dests and defaults, plus validation.

``parse_args`` only parses; ``validate_args`` turns every bad combination of flags into ONE ``ConfigError``
line naming the flag. ``megatron.config.build_configs`` then reads the DeepSpeed JSON and turns the namespace
into typed dataclasses (which check their own shape rules); nothing else reads the namespace. This module is
the CLI: entry points use it, ``megatron.training`` never does.

Flags that exist only for compatibility with Megatron-DeepSpeed recipes and cannot change results here
(kernel-fusion switches, flash-attention, timers, ``--inference``, the MoE switches) are accepted, documented as
no-ops in their help, and each one given is reported by ``startup_warnings`` with why it changes nothing.
Flags that WOULD change results but are not implemented (tensor/pipeline parallelism > 1, batch-size
ramp-up) are validated and rejected with a clear message.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Callable, Sequence

from megatron.config import ConfigError
from megatron.tokenizer import TOKENIZERS

NO_OP = "accepted for Megatron-DeepSpeed compatibility; no effect here"


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (`error: ...`, exit 2) instead of a huge usage dump."""

    def error(self, message: str) -> None:  # type: ignore[override]
        """Print one error line and exit with status 2."""
        sys.stderr.write(f"error: {message}\n")
        raise SystemExit(2)


def _network_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("network size")
    g.add_argument("--num-layers", type=int, default=None, help="Number of transformer layers.")
    g.add_argument("--hidden-size", type=int, default=None, help="Transformer hidden size.")
    g.add_argument("--ffn-hidden-size", type=int, default=None, help="MLP inner size (default 4 * hidden size).")
    g.add_argument("--num-attention-heads", type=int, default=None, help="Number of attention heads.")
    g.add_argument("--max-position-embeddings", type=int, default=None,
                   help="Rows of the learned position table (default: --seq-length).")
    g.add_argument("--position-embedding-type", default="learned_absolute",
                   choices=["learned_absolute", "rope", "absolute", "rotary"],
                   help="learned_absolute or rope (aliases: absolute, rotary).")
    g.add_argument("--use-rotary-position-embeddings", action="store_true",
                   help="Megatron-DeepSpeed spelling of --position-embedding-type rope.")
    g.add_argument("--rotary-position-embeddings-theta", type=int, default=10000, dest="rope_theta",
                   help="RoPE base (theta).")
    g.add_argument("--make-vocab-size-divisible-by", type=int, default=128,
                   help="Pad the vocab size to a multiple of this value.")
    g.add_argument("--layernorm-epsilon", type=float, default=1e-5, help="LayerNorm epsilon.")
    g.add_argument("--init-method-std", type=float, default=0.02, help="Std of the normal weight init.")
    g.add_argument("--attention-dropout", type=float, default=0.1, help="Dropout on attention probabilities.")
    g.add_argument("--hidden-dropout", type=float, default=0.1, help="Dropout on hidden states.")
    g.add_argument("--checkpoint-activations", action="store_true",
                   help="Recompute each transformer layer in the backward pass (activation checkpointing).")
    g.add_argument("--checkpoint-num-layers", type=int, default=1,
                   help="Layers per checkpointed chunk; only 1 is supported.")


def _training_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training")
    g.add_argument("--micro-batch-size", type=int, default=None,
                   help="Per-rank batch of one forward/backward (or the JSON's train_micro_batch_size_per_gpu).")
    g.add_argument("--global-batch-size", type=int, default=None,
                   help="Samples per optimizer step (default micro-batch * data-parallel size, or the JSON's "
                        "train_batch_size).")
    g.add_argument("--rampup-batch-size", nargs="*", default=None, help="Batch-size ramp-up: not supported.")
    g.add_argument("--train-iters", type=int, default=None, help="Stop after this many iterations.")
    g.add_argument("--train-samples", type=int, default=None, help="Stop after this many samples.")
    g.add_argument("--train-tokens", type=int, default=None, help="Stop once this many tokens were consumed.")
    g.add_argument("--exit-interval", type=int, default=None,
                   help="Exit (after saving) when the iteration is divisible by this value.")
    g.add_argument("--exit-duration-in-mins", type=int, default=None,
                   help="Exit (after saving) once training ran this many minutes.")
    g.add_argument("--exit-signal-handler", dest="exit_signal_handler", action="store_true", default=True,
                   help="On SIGTERM (pre-emption) or SIGINT (Ctrl-C) finish the current step, save a checkpoint "
                        "if --save is set, print one line and exit with status 128 + signal (143 SIGTERM, "
                        "130 SIGINT); a second signal exits at once. On by default.")
    g.add_argument("--no-exit-signal-handler", dest="exit_signal_handler", action="store_false",
                   help="Leave SIGTERM/SIGINT to their defaults (killed at once, no checkpoint).")
    g.add_argument("--skip-train", action="store_true", help="Only evaluate; do not train.")
    g.add_argument("--optimizer", default="adam", choices=["adam", "sgd"],
                   help="adam = torch AdamW (decoupled decay, as Megatron); sgd = torch SGD with momentum.")
    g.add_argument("--dataloader-type", default=None, choices=["single", "cyclic"],
                   help="Single pass or cyclic (reshuffled each epoch) data loader.")
    g.add_argument("--no-pipeline-parallel", action="store_true",
                   help="Run without pipeline parallelism (required by curriculum learning and random-LTD).")
    g.add_argument("--random-ltd", action="store_true", help="Enable random layerwise token dropping.")
    g.add_argument("--data-efficiency-curriculum-learning", action="store_true",
                   help="Enable data-efficiency curriculum learning (sampler + data post-process).")


def _regularization_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("regularization and optimizer")
    g.add_argument("--weight-decay", type=float, default=0.01, help="Weight decay coefficient.")
    g.add_argument("--start-weight-decay", type=float, default=None, help="Initial weight decay (incr styles).")
    g.add_argument("--end-weight-decay", type=float, default=None, help="Final weight decay (incr styles).")
    g.add_argument("--weight-decay-incr-style", default="constant", choices=["constant", "linear", "cosine"],
                   help="How weight decay moves from start to end.")
    g.add_argument("--clip-grad", type=float, default=None,
                   help="Clip gradients to this global L2 norm; 0 = off (default 1.0, or the JSON's "
                        "gradient_clipping).")
    g.add_argument("--adam-beta1", type=float, default=0.9, help="Adam beta1.")
    g.add_argument("--adam-beta2", type=float, default=0.999, help="Adam beta2.")
    g.add_argument("--adam-eps", type=float, default=1e-08, help="Adam epsilon.")
    g.add_argument("--sgd-momentum", type=float, default=0.9, help="SGD momentum.")
    g.add_argument("--seed", type=int, default=1234, help="Seed for python, numpy, torch.")


def _lr_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("learning rate")
    g.add_argument("--lr", type=float, default=None, help="Peak learning rate.")
    g.add_argument("--min-lr", type=float, default=0.0, help="Floor of the decayed learning rate.")
    g.add_argument("--lr-decay-style", default="linear",
                   choices=["constant", "linear", "cosine", "inverse-square-root"], help="Decay shape.")
    g.add_argument("--lr-decay-iters", type=int, default=None, help="Decay over this many iterations.")
    g.add_argument("--lr-decay-samples", type=int, default=None, help="Decay over this many samples.")
    g.add_argument("--lr-decay-tokens", type=int, default=None, help="Decay over this many tokens (overrides).")
    g.add_argument("--lr-warmup-fraction", type=float, default=None, help="Warmup as a fraction of decay.")
    g.add_argument("--lr-warmup-iters", type=int, default=0, help="Linear warmup iterations.")
    g.add_argument("--lr-warmup-samples", type=int, default=0, help="Linear warmup samples.")
    g.add_argument("--lr-warmup-tokens", type=int, default=None, help="Linear warmup tokens.")
    g.add_argument("--override-opt_param-scheduler", action="store_true", dest="override_opt_param_scheduler",
                   help="Take the schedule from the flags, not from the checkpoint.")
    g.add_argument("--use-checkpoint-opt_param-scheduler", action="store_true",
                   dest="use_checkpoint_opt_param_scheduler",
                   help="Take the schedule from the checkpoint, ignoring the flags.")


def _checkpoint_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("checkpointing")
    g.add_argument("--save", default=None, help="Directory to save checkpoints to.")
    g.add_argument("--save-interval", type=int, default=None,
                   help="Iterations between saves; 0 (what upstream's base scripts compute for short runs) or unset "
                        "= save only at the end of training (with --save).")
    g.add_argument("--no-save-rng", action="store_true", default=None, help="Do not save RNG states.")
    g.add_argument("--load", default=None, help="Directory to resume from (its `latest` tag).")
    g.add_argument("--load-tag", default=None, help="Load this tag instead of the one in `latest`.")
    g.add_argument("--no-load-optim", action="store_true", default=None, help="Do not load optimizer states.")
    g.add_argument("--no-load-rng", action="store_true", default=None, help="Do not load RNG states.")
    g.add_argument("--finetune", action="store_true",
                   help="Load model weights only; reset iteration, optimizer, scheduler and RNG.")
    g.add_argument("--exit-on-missing-checkpoint", action="store_true",
                   help="With --load: fail instead of starting from scratch when no checkpoint exists.")
    g.add_argument("--overwrite-save", action="store_true",
                   help="Allow --save into a directory that holds a checkpoint this run does not resume (another "
                        "model's, or this model's without --load of that directory). Without it such a run stops at "
                        "start-up: saving there would overwrite steps and move `latest` backwards.")


def _precision_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("mixed precision")
    g.add_argument("--fp16", action="store_true", help="fp16 mixed precision (GPU only).")
    g.add_argument("--bf16", action="store_true", help="bf16 mixed precision.")
    g.add_argument("--loss-scale", type=float, default=None, help="Static fp16 loss scale (None = dynamic).")
    g.add_argument("--initial-loss-scale", type=float, default=2 ** 32, help="Initial dynamic fp16 loss scale.")
    g.add_argument("--min-loss-scale", type=float, default=1.0, help="Minimum dynamic fp16 loss scale.")
    g.add_argument("--loss-scale-window", type=float, default=1000, help="fp16 loss-scale raise window.")
    g.add_argument("--hysteresis", type=int, default=2, help="fp16 dynamic loss-scale hysteresis.")


def _distributed_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("distributed")
    g.add_argument("--tensor-model-parallel-size", type=int, default=1, help="Only 1 is supported.")
    g.add_argument("--pipeline-model-parallel-size", type=int, default=1, help="Only 1 is supported.")
    g.add_argument("--distributed-backend", default=None, choices=["nccl", "gloo", "ccl", "hccl"],
                   help="torch.distributed backend (default: the accelerator's; nccl falls back to gloo on CPU).")
    g.add_argument("--distributed-timeout-minutes", type=int, default=10, help="Collective timeout.")
    g.add_argument("--local-rank", "--local_rank", type=int, default=None, dest="local_rank",
                   help="Local rank passed by the launcher (the LOCAL_RANK env var is used too).")
    g.add_argument("--zero-stage", type=int, default=None,
                   help="ZeRO stage 0-3 (default: the JSON's zero_optimization.stage, else 0).")


def _validation_and_logging_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("validation and logging")
    g.add_argument("--eval-iters", type=int, default=100, help="Global batches per evaluation.")
    g.add_argument("--eval-interval", type=int, default=1000, help="Iterations between evaluations.")
    g.add_argument("--log-interval", type=int, default=100, help="Iterations between training log lines.")
    g.add_argument("--tensorboard-dir", default=None, help="Write TensorBoard scalars here.")
    g.add_argument("--tensorboard-log-interval", type=int, default=1, help="Iterations between TB writes.")
    g.add_argument("--tensorboard-queue-size", type=int, default=1000, help="TB pending-event queue size.")
    g.add_argument("--log-timers-to-tensorboard", action="store_true", help="Write iteration time to TB.")
    g.add_argument("--log-batch-size-to-tensorboard", action="store_true", help="Write batch size to TB.")
    g.add_argument("--no-log-learnig-rate-to-tensorboard", action="store_false",
                   dest="log_learning_rate_to_tensorboard", help="Do not write the learning rate to TB.")
    g.add_argument("--no-log-loss-scale-to-tensorboard", action="store_false",
                   dest="log_loss_scale_to_tensorboard", help="Do not write the loss scale to TB.")
    g.add_argument("--log-validation-ppl-to-tensorboard", action="store_true", help="Write validation ppl to TB.")
    g.add_argument("--log-optimizer-states-to-tensorboard", action="store_true",
                   help="Write norms of the Adam moments to TB.")
    g.add_argument("--log-memory-to-tensorboard", action="store_true", help="Write process RSS to TB.")
    g.add_argument("--log-world-size-to-tensorboard", action="store_true", help="Write the world size to TB.")
    g.add_argument("--log-params-norm", action="store_true", help="Compute and log the parameters' L2 norm.")
    g.add_argument("--eval-advance", action="store_true",
                   help="Evaluate as upstream Megatron-DeepSpeed does: each evaluation continues through the "
                        "validation split where the previous one stopped (wrapping around at its end; the position "
                        "is saved in checkpoints), and the split is sized for every evaluation of the run. Default: "
                        "every evaluation reads the same first --eval-iters batches (comparable numbers).")


def _data_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data")
    g.add_argument("--data-path", nargs="*", default=None,
                   help="Dataset prefix(es): PREFIX, or WEIGHT1 PREFIX1 WEIGHT2 PREFIX2 ... (no .bin/.idx).")
    g.add_argument("--split", default="969, 30, 1", help="Train/valid/test proportions, e.g. 949,50,1.")
    g.add_argument("--data-impl", default="infer", choices=["mmap", "infer"], help="Indexed dataset format.")
    g.add_argument("--data-cache-path", default=None, help="Directory for the index-map cache files.")
    g.add_argument("--mmap-warmup", action="store_true", help="Read the .bin/.idx files once before training.")
    g.add_argument("--num-workers", type=int, default=2, help="DataLoader worker processes.")
    g.add_argument("--vocab-file", default=None, help="Tokenizer vocab file.")
    g.add_argument("--merge-file", default=None, help="BPE merges file.")
    g.add_argument("--vocab-extra-ids", type=int, default=0, help="Extra sentinel tokens (T5-style).")
    g.add_argument("--tokenizer-type", default=None, choices=list(TOKENIZERS), help="Tokenizer kind.")
    g.add_argument("--tokenizer-model", default=None, help="SentencePiece model file.")
    g.add_argument("--seq-length", type=int, default=None, help="Training sequence length.")
    g.add_argument("--reset-position-ids", action="store_true", help="Restart position ids after each EOD.")
    g.add_argument("--reset-attention-mask", action="store_true", help="Block attention across EOD.")
    g.add_argument("--eod-mask-loss", action="store_true", help="Do not train on predicting EOD tokens.")
    g.add_argument("--train-data-exact-num-epochs", type=int, default=None,
                   help="Build the train split from exactly this many epochs.")
    g.add_argument("--return-data-index", action="store_true", help="Samples carry their pre-shuffle index.")
    for name in ("--train-idx-path", "--train-desc-path", "--train-doc-idx-path",
                 "--train-sample-idx-path", "--train-shuffle-idx-path"):
        g.add_argument(name, default=None, help="Use this pre-built train index-map file (pins the sample order).")


# Compatibility flags: (option strings, argparse kwargs, why they are a no-op here; read after "because").
_NO_OP_FLAGS: list[tuple[tuple[str, ...], dict[str, Any], str]] = [
    (("--no-masked-softmax-fusion",), {"action": "store_false", "dest": "masked_softmax_fusion"},
     "attention uses torch SDPA"),
    (("--no-bias-gelu-fusion",), {"action": "store_false", "dest": "bias_gelu_fusion"},
     "there are no custom fused kernels"),
    (("--no-bias-dropout-fusion",), {"action": "store_false", "dest": "bias_dropout_fusion"},
     "there are no custom fused kernels"),
    (("--no-gradient-accumulation-fusion",), {"action": "store_false", "dest": "gradient_accumulation_fusion"},
     "there are no custom fused kernels"),
    (("--use-flash-attn", "--use-flash-attn-v1"), {"action": "store_true", "dest": "use_flash_attn_v1"},
     "torch SDPA picks flash attention by itself"),
    (("--use-flash-attn-v2",), {"action": "store_true"}, "torch SDPA picks flash attention by itself"),
    (("--deepspeed-activation-checkpointing",), {"action": "store_true"},
     "--checkpoint-activations recomputes layers with identical results"),
    (("--partition-activations",), {"action": "store_true"}, "the tensor-parallel size is 1"),
    (("--contigious-checkpointing",), {"action": "store_true"}, "it only changes memory layout"),
    (("--checkpoint-in-cpu",), {"action": "store_true"}, "it only changes memory placement"),
    (("--synchronize-each-layer",), {"action": "store_true"}, "it only changes timing"),
    (("--profile-backward",), {"action": "store_true"}, "it only changes timing"),
    (("--distribute-checkpointed-activations",), {"action": "store_true"}, "the tensor-parallel size is 1"),
    (("--DDP-impl",), {"default": "local", "choices": ["local", "torch", "FSDP"]},
     "DeepSpeed does data parallelism"),
    (("--use-cpu-initialization",), {"action": "store_true", "default": None}, "weights are built in one place"),
    (("--timing-log-level",), {"type": int, "default": 0, "choices": range(0, 3)}, "it only changes timing detail"),
    (("--timing-log-option",), {"default": "minmax", "choices": ["max", "minmax", "all"]},
     "it only changes timing detail"),
    (("--log-num-zeros-in-grad",), {"action": "store_true"}, "zeros in the gradient are not counted"),
    (("--no-barrier-with-level-1-timing",), {"action": "store_false", "dest": "barrier_with_L1_time"},
     "it only changes timing detail"),
    (("--torch_adam",), {"action": "store_true"}, "torch's AdamW is always used"),
    (("--zero-reduce-scatter",), {"action": "store_true"}, "this is set in the DeepSpeed JSON"),
    (("--zero-contigious-gradients",), {"action": "store_true"}, "this is set in the DeepSpeed JSON"),
    (("--zero-reduce-bucket-size",), {"type": int, "default": 0}, "this is set in the DeepSpeed JSON"),
    (("--zero-allgather-bucket-size",), {"type": int, "default": 0}, "this is set in the DeepSpeed JSON"),
]


def _compat_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("compatibility (no-ops)")
    for flags, kwargs, why in _NO_OP_FLAGS:
        g.add_argument(*flags, help=f"{NO_OP} because {why}.", **kwargs)
    g.add_argument("--inference", action="store_true",
                   help=f"{NO_OP} because training entry points always build the optimizer (evaluate with "
                        "tasks/eval_harness/evaluate.py or tools/eval_gpt.py).")
    g.add_argument("--moe-expert-parallel-size", type=int, default=None,
                   help="Expert-parallel size: only 1 is accepted (the models here have no mixture-of-experts "
                        "layers).")
    g.add_argument("--disable-moe-token-dropping", action="store_true",
                   help=f"{NO_OP} because the models here have no mixture-of-experts layers.")


def build_parser(extra_args_provider: Callable[[argparse.ArgumentParser], argparse.ArgumentParser] | None = None
                 ) -> argparse.ArgumentParser:
    """The full parser: Megatron flags, the caller's extra flags, then DeepSpeed's --deepspeed/--deepspeed_config."""
    import deepspeed  # deferred: importing deepspeed takes ~2 s

    parser = _Parser(description="Megatron-DeepSpeed-compatible pretraining", allow_abbrev=False)
    for add in (_network_args, _regularization_args, _training_args, _lr_args, _checkpoint_args,
                _precision_args, _distributed_args, _validation_and_logging_args, _data_args, _compat_args):
        add(parser)
    if extra_args_provider is not None:
        parser = extra_args_provider(parser) or parser
    return deepspeed.add_config_arguments(parser)


def parse_args(argv: Sequence[str] | None = None,
               extra_args_provider: Callable[[argparse.ArgumentParser], argparse.ArgumentParser] | None = None
               ) -> argparse.Namespace:
    """Parse `argv` (default sys.argv[1:]); `args.extra_arg_dests` lists dests added by the extra provider."""
    base_dests = {a.dest for a in build_parser()._actions}
    parser = build_parser(extra_args_provider)
    args = parser.parse_args(argv)
    args.extra_arg_dests = sorted({a.dest for a in parser._actions} - base_dests - {"help"})
    return args


def apply_args_defaults(args: argparse.Namespace, defaults: dict[str, Any] | None) -> None:
    """Fill entry-point defaults (e.g. tokenizer_type) into args that the user left unset (None)."""
    for key, value in (defaults or {}).items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------

def _require(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        if getattr(args, name, None) is None:
            raise ConfigError(f"--{name.replace('_', '-')} is required")


def _positive(args: argparse.Namespace, *names: str, allow_zero: bool = False) -> None:
    for name in names:
        value = getattr(args, name, None)
        if value is not None and (value < 0 or (value == 0 and not allow_zero)):
            what = ">= 0" if allow_zero else "> 0"
            raise ConfigError(f"--{name.replace('_', '-')} must be {what}, got {value}")


def _validate_budget(args: argparse.Namespace) -> None:
    if args.train_iters is None and args.train_samples is None and args.train_tokens is None and not args.skip_train:
        raise ConfigError("no training budget: give --train-iters, --train-samples or --train-tokens")
    if args.train_iters is not None and args.train_samples is not None:
        raise ConfigError("give only one of --train-iters and --train-samples (they both set the run length)")
    if args.train_samples is not None or (args.train_iters is None and args.train_tokens is not None):
        for flag, value, ok in (("--lr-decay-iters", args.lr_decay_iters, None),
                                ("--lr-warmup-iters", args.lr_warmup_iters, 0)):
            if value != ok:
                raise ConfigError(f"{flag} needs --train-iters (iteration-based training); with "
                                  "--train-samples/--train-tokens use the *-samples/*-tokens variant")
    if args.train_iters is not None:
        for flag, value, ok in (("--lr-decay-samples", args.lr_decay_samples, None),
                                ("--lr-warmup-samples", args.lr_warmup_samples, 0)):
            if value != ok:
                raise ConfigError(f"{flag} needs --train-samples (sample-based training); with --train-iters "
                                  "use the *-iters variant")
    if args.lr_warmup_fraction is not None and (args.lr_warmup_iters or args.lr_warmup_samples):
        raise ConfigError("give only one of --lr-warmup-fraction and --lr-warmup-iters/--lr-warmup-samples")
    if args.lr_warmup_fraction is not None and not 0.0 <= args.lr_warmup_fraction <= 1.0:
        raise ConfigError(f"--lr-warmup-fraction must be in [0, 1], got {args.lr_warmup_fraction}")
    _positive(args, "train_iters", "train_samples", "train_tokens", "lr_decay_iters", "lr_decay_samples",
              "lr_decay_tokens", "exit_interval", "exit_duration_in_mins")
    _positive(args, "lr_warmup_iters", "lr_warmup_samples", "lr_warmup_tokens", allow_zero=True)


def _validate_optimizer(args: argparse.Namespace) -> None:
    _require(args, "lr")
    if args.weight_decay_incr_style == "constant":
        if args.start_weight_decay is not None or args.end_weight_decay is not None:
            raise ConfigError("--start-weight-decay/--end-weight-decay need --weight-decay-incr-style linear|cosine")
    elif args.start_weight_decay is None or args.end_weight_decay is None:
        raise ConfigError(f"--weight-decay-incr-style {args.weight_decay_incr_style} needs both "
                          "--start-weight-decay and --end-weight-decay")
    if args.clip_grad is not None and args.clip_grad < 0:
        raise ConfigError(f"--clip-grad must be >= 0 (0 = off), got {args.clip_grad}")
    if not (0.0 <= args.adam_beta1 < 1.0 and 0.0 <= args.adam_beta2 < 1.0):
        raise ConfigError(f"--adam-beta1/--adam-beta2 must be in [0, 1), got {args.adam_beta1}, {args.adam_beta2}")


def _validate_unsupported(args: argparse.Namespace) -> None:
    if args.tensor_model_parallel_size != 1:
        raise ConfigError(f"--tensor-model-parallel-size {args.tensor_model_parallel_size}: tensor parallelism is "
                          "not supported (use 1; scale with data parallel ranks and ZeRO)")
    if args.pipeline_model_parallel_size != 1:
        raise ConfigError(f"--pipeline-model-parallel-size {args.pipeline_model_parallel_size}: pipeline "
                          "parallelism is not supported (use 1 or --no-pipeline-parallel)")
    if args.rampup_batch_size:
        raise ConfigError("--rampup-batch-size is not supported (batch size is constant; see --global-batch-size)")
    if args.checkpoint_num_layers != 1:
        raise ConfigError(f"--checkpoint-num-layers {args.checkpoint_num_layers}: only 1 is supported")
    moe_ep = getattr(args, "moe_expert_parallel_size", None)
    if moe_ep is not None and moe_ep != 1:
        raise ConfigError(f"--moe-expert-parallel-size {moe_ep}: mixture-of-experts is not supported (the models "
                          "here are dense); use 1")


def validate_args(args: argparse.Namespace, world_size: int) -> None:
    """Raise ConfigError (one line naming the flag) for any invalid combination of flags.

    Only the flags are checked here. The DeepSpeed JSON and the typed shape rules are checked once, by
    ``megatron.config.build_configs``; data files by the model family's ``validate_data``.
    """
    _validate_unsupported(args)
    _require(args, "num_layers", "hidden_size", "num_attention_heads", "seq_length")
    _positive(args, "num_layers", "hidden_size", "num_attention_heads", "seq_length", "max_position_embeddings",
              "ffn_hidden_size", "micro_batch_size", "global_batch_size", "log_interval", "eval_interval",
              "make_vocab_size_divisible_by", "tensorboard_log_interval", "tensorboard_queue_size")
    _positive(args, "eval_iters", "num_workers", "save_interval", allow_zero=True)
    _validate_budget(args)
    _validate_optimizer(args)
    if world_size < 1:
        raise ConfigError(f"world size must be >= 1, got {world_size}")
    if args.fp16 and args.bf16:
        raise ConfigError("give only one of --fp16 and --bf16")
    for flag, on in (("--data-efficiency-curriculum-learning", args.data_efficiency_curriculum_learning),
                     ("--random-ltd", args.random_ltd)):
        if on and not args.no_pipeline_parallel:
            raise ConfigError(f"{flag} is not compatible with pipeline parallelism: add --no-pipeline-parallel")
    for name in ("train_doc_idx_path", "train_sample_idx_path", "train_shuffle_idx_path", "train_idx_path",
                 "train_desc_path"):
        path = getattr(args, name, None)
        if path is not None and not os.path.isfile(path):
            raise ConfigError(f"--{name.replace('_', '-')} {path}: file not found")
    if args.load_tag is not None and args.load is None:
        raise ConfigError("--load-tag needs --load")


# ----------------------------------------------------------------------------------------------
# Start-up warnings: flags accepted for upstream recipes that change nothing here, values upstream accepts
# ----------------------------------------------------------------------------------------------

_TB_SWITCHES = ("log_timers_to_tensorboard", "log_batch_size_to_tensorboard", "log_validation_ppl_to_tensorboard",
                "log_optimizer_states_to_tensorboard", "log_memory_to_tensorboard", "log_world_size_to_tensorboard")


def _flag_name(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def startup_warnings(args: argparse.Namespace) -> list[str]:
    """One line per flag given that has no effect here (and why), or value accepted only for upstream's sake."""
    defaults = argparse.ArgumentParser(add_help=False)
    _compat_args(defaults)
    out: list[str] = []
    for flags, _, why in _NO_OP_FLAGS:
        action = next(a for a in defaults._actions if a.option_strings[:1] == [flags[0]])
        if getattr(args, action.dest, action.default) != action.default:
            out.append(f"{flags[0]}: {NO_OP} because {why}")
    if getattr(args, "inference", False):
        out.append(f"--inference: {NO_OP} because training entry points always build the optimizer; evaluate a "
                   "checkpoint with tasks/eval_harness/evaluate.py or tools/eval_gpt.py")
    if getattr(args, "moe_expert_parallel_size", None) == 1:
        out.append(f"--moe-expert-parallel-size 1: {NO_OP} because the models here have no mixture-of-experts "
                   "layers")
    if getattr(args, "disable_moe_token_dropping", False):
        out.append(f"--disable-moe-token-dropping: {NO_OP} because the models here have no mixture-of-experts "
                   "layers")
    if getattr(args, "load", None) is None:
        for dest in ("no_load_optim", "no_load_rng"):
            if getattr(args, dest, None):
                out.append(f"{_flag_name(dest)}: no effect here because no --load is given (nothing is resumed)")
    if getattr(args, "tensorboard_dir", None) is None:
        for dest in _TB_SWITCHES:
            if getattr(args, dest, False):
                out.append(f"{_flag_name(dest)}: no effect here because no --tensorboard-dir is given")
    warmup, decay = getattr(args, "lr_warmup_tokens", None), getattr(args, "lr_decay_tokens", None)
    decays = getattr(args, "lr_decay_style", "") != "constant"
    if warmup is not None and decay is not None and warmup >= decay and decays:
        out.append(f"--lr-warmup-tokens {warmup} >= --lr-decay-tokens {decay}: accepted as upstream does: the "
                   f"learning rate warms up linearly over {warmup} tokens to --lr, then holds --min-lr (there is no "
                   "decay phase)")
    return out


def log_startup_warnings(args: argparse.Namespace, log: logging.Logger | None = None) -> list[str]:
    """Log ``startup_warnings(args)`` (one WARNING line each); returns them."""
    lines = startup_warnings(args)
    log = log or logging.getLogger("megatron.arguments")
    for line in lines:
        log.warning("%s", line)
    return lines
