"""The command-line layer every entry point shares: flags -> typed config -> ``megatron.training.pretrain``.

    def main(argv=None):
        return pretrain_from_argv(GPT_SPEC, argv)

    if __name__ == "__main__":
        run_cli(main)

``configure`` parses Megatron's flags (plus the spec's own), checks them (``megatron.arguments``), builds the
tokenizer and the RunConfig once (``megatron.config.build_configs``: the DeepSpeed JSON is read there), then
lets the family check its data. Any bad input is a ConfigError/UsageError; ``run_cli`` prints it as one
``error:`` line and exits with status 2.
"""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable, Sequence

from megatron.config import ConfigError, RunConfig
from megatron.training.loop import TrainResult
from megatron.training.orchestration import UsageError
from megatron.training.spec import ModelSpec

logger = logging.getLogger("megatron.training")


def run_cli(main: Callable[[], Any]) -> None:
    """Run an entry point: a UsageError/ConfigError becomes `error: <message>` on stderr and exit status 2.

    A run stopped by SIGTERM/SIGINT (``--exit-signal-handler``: ``TrainResult.exit_signal``) exits with
    128 + signal: 143 for SIGTERM, 130 for SIGINT. In-process callers of ``main`` get the TrainResult instead.
    """
    try:
        result = main()
    except (UsageError, ConfigError) as e:
        sys.stderr.write(f"error: {e}\n")
        sys.stderr.flush()
        raise SystemExit(2) from None
    _shutdown_distributed()
    if isinstance(result, TrainResult) and result.exit_status:
        sys.stdout.flush()
        raise SystemExit(result.exit_status)


def _shutdown_distributed() -> None:
    """After a finished run: all ranks meet, then the process group is torn down before the interpreter exits
    (gloo's threads dying in interpreter shutdown can abort a rank with "terminate called without an active
    exception", failing a run that completed)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        return
    try:
        if dist.get_world_size() > 1:
            dist.barrier()
        if "deepspeed" in sys.modules:
            import deepspeed.comm

            deepspeed.comm.destroy_process_group()
        else:
            dist.destroy_process_group()
    except Exception as e:  # noqa: BLE001 - the run's work is done and saved; teardown trouble is only logged
        logger.warning("process-group teardown: %s: %s", type(e).__name__, e)


def _log_arguments(args: argparse.Namespace) -> None:
    lines = ["------------------------ arguments ------------------------"]
    for key in sorted(vars(args), key=str.lower):
        lines.append(f"  {key} {'.' * max(1, 48 - len(key))} {getattr(args, key)}")
    lines.append("-------------------- end of arguments ---------------------")
    logger.info("\n".join(lines))


def configure(spec: ModelSpec, argv: Sequence[str] | None = None) -> tuple[RunConfig, Any]:
    """Parse and check the flags for ``spec``; returns (config, tokenizer). Bad input raises UsageError."""
    from megatron.arguments import apply_args_defaults, log_startup_warnings, parse_args, validate_args
    from megatron.config import build_configs
    from megatron.tokenizer import build_tokenizer_from_args
    from megatron.training.initialize import (rank_from_env, set_launcher_env_defaults, setup_logging,
                                              world_size_from_env)

    set_launcher_env_defaults()
    args = parse_args(argv, spec.extra_args)
    apply_args_defaults(args, dict(spec.args_defaults))
    setup_logging(rank_from_env())
    world_size = world_size_from_env()
    try:
        if spec.complete_args is not None:
            spec.complete_args(args)
        validate_args(args, world_size)
        if rank_from_env() == 0:  # the same flags on every rank: said once
            log_startup_warnings(args)  # flags accepted for upstream recipes that change nothing here, and why
        tokenizer = build_tokenizer_from_args(args)
        config = build_configs(args, tokenizer, world_size)
        spec.validate_data(config, tokenizer)
    except ValueError as e:  # ConfigError, TokenizerError, DatasetError: all user input
        raise UsageError(str(e)) from e
    _log_arguments(args)
    return config, tokenizer


def pretrain_from_argv(spec: ModelSpec, argv: Sequence[str] | None = None) -> TrainResult:
    """``configure`` then ``megatron.training.pretrain``: what ``pretrain_gpt.py`` and friends run."""
    from megatron.training.orchestration import pretrain

    config, tokenizer = configure(spec, argv)
    return pretrain(spec, config, tokenizer)
