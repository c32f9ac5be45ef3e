"""pretrain(): parse -> validate -> typed configs -> distributed/seeds -> engine -> load -> data -> train -> eval/save."""
from __future__ import annotations

import argparse
import logging
import sys
from typing import Any, Callable, Iterator

import torch

from megatron.config import RunConfig, TransformerConfig
from megatron.training.data_efficiency_hooks import Batch, DataPostProcess, build_data_efficiency
from megatron.training.loop import ForwardStep, TrainResult, budget_reached, evaluate, train
from megatron.training.state import TrainState

logger = logging.getLogger("megatron.training")

DatasetsProvider = Callable[[RunConfig, Any], "tuple[Any, Any, Any]"]
"""``provider(config, tokenizer) -> (train, valid, test)`` datasets (None for an empty split)."""
ModelProvider = Callable[[RunConfig], torch.nn.Module]
"""``model_provider(config) -> nn.Module`` built from ``config.model``."""


class UsageError(ValueError):
    """Bad user input found while setting up a run (flags, JSON, data, checkpoint); printed as one line."""


def run_cli(main: Callable[[], Any]) -> None:
    """Run an entry point: a UsageError becomes `error: <message>` on stderr and exit status 2."""
    try:
        main()
    except UsageError as e:
        sys.stderr.write(f"error: {e}\n")
        sys.stderr.flush()
        raise SystemExit(2) from None


def _log_arguments(args: argparse.Namespace) -> None:
    lines = ["------------------------ arguments ------------------------"]
    for key in sorted(vars(args), key=str.lower):
        lines.append(f"  {key} {'.' * max(1, 48 - len(key))} {getattr(args, key)}")
    lines.append("-------------------- end of arguments ---------------------")
    logger.info("\n".join(lines))


def _setup_config(argv: list[str] | None, args_defaults: dict[str, Any] | None,
                  extra_args_provider: Callable[[argparse.ArgumentParser], argparse.ArgumentParser] | None
                  ) -> tuple[RunConfig, Any]:
    """Parse, validate and bridge to typed configs; returns (config, tokenizer)."""
    from megatron.arguments import apply_args_defaults, check_token_ids, data_prefixes, parse_args, validate_args
    from megatron.config import build_configs
    from megatron.tokenizer import build_tokenizer_from_args
    from megatron.training.engine import build_scheduler
    from megatron.training.initialize import rank_from_env, setup_logging, world_size_from_env

    args = parse_args(argv, extra_args_provider)
    apply_args_defaults(args, args_defaults)
    setup_logging(rank_from_env())
    world_size = world_size_from_env()
    validate_args(args, world_size)
    tokenizer = build_tokenizer_from_args(args)
    check_token_ids(data_prefixes(args.data_path), tokenizer.padded_vocab_size)
    config = build_configs(args, tokenizer, world_size)
    build_scheduler(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.0), config)  # schedule errors now
    _log_arguments(args)
    return config, tokenizer


def _data_loader(dataset: Any, consumed: int, config: RunConfig, rank: int, world: int,
                 dataloader_type: str | None = None) -> Any:
    from megatron.data.data_samplers import build_pretraining_data_loader

    if dataset is None or len(dataset) == 0:
        return None
    return build_pretraining_data_loader(
        dataset, consumed, config.training.micro_batch_size, rank, world,
        dataloader_type=dataloader_type or config.data.dataloader_type, num_workers=config.data.num_workers,
        drop_last=True, seed=config.data.seed)


def _build_datasets(provider: DatasetsProvider, config: RunConfig, tokenizer: Any, rank: int) -> tuple[Any, Any, Any]:
    """Rank 0 builds first (writing index-map caches), then the other ranks read them."""
    datasets: tuple[Any, Any, Any] | None = None
    error: str | None = None
    for turn in (True, False):
        if (rank == 0) == turn:
            try:
                datasets = provider(config, tokenizer)
            except ValueError as e:
                error = str(e)
        if torch.distributed.get_world_size() > 1:
            torch.distributed.barrier()
    if error is not None or datasets is None:
        raise UsageError(error or "the datasets provider returned nothing")
    return datasets


def pretrain(train_valid_test_datasets_provider: DatasetsProvider, model_provider: ModelProvider,
             forward_step_func: ForwardStep, *, args_defaults: dict[str, Any] | None = None,
             extra_args_provider: Callable[[argparse.ArgumentParser], argparse.ArgumentParser] | None = None,
             data_post_process: DataPostProcess | None = None, argv: list[str] | None = None,
             flops_per_token: Callable[[TransformerConfig, int], float] | None = None,
             model_type: str = "gpt") -> TrainResult:
    """Train a model on the DeepSpeed engine as Megatron's pretrain() does; returns the run's history.

    ``model_type`` (gpt/bert) tells curriculum learning how batches are laid out.
    Bad flags/JSON/data/checkpoints raise UsageError (one line); ``run_cli`` turns it into exit status 2.
    """
    from megatron.model import gpt_flops_per_token
    from megatron.training.checkpointing import load_checkpoint, save_checkpoint
    from megatron.training.engine import setup_model_and_optimizer
    from megatron.training.initialize import initialize_distributed, set_launcher_env_defaults, set_random_seed
    from megatron.training.rng import set_rng_state
    from megatron.training.training_log import TrainingLogger

    set_launcher_env_defaults()
    try:
        config, tokenizer = _setup_config(argv, args_defaults, extra_args_provider)
        data_eff = build_data_efficiency(config, data_post_process, model_type=model_type)
    except ValueError as e:
        raise UsageError(str(e)) from e
    t = config.training
    initialize_distributed(t.distributed_backend, t.distributed_timeout_minutes)
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    set_random_seed(t.seed, rank)

    try:
        model = data_eff.prepare_model(model_provider(config))  # random-LTD wraps layers before the engine
        engine, scheduler = setup_model_and_optimizer(model, config)
    except ValueError as e:  # DeepSpeed rejecting the JSON, random-LTD layer ids not matching the model
        raise UsageError(str(e)) from e
    scheduler = data_eff.wrap_scheduler(scheduler, engine.optimizer)
    n_params = sum(p.numel() for p in model.parameters())
    logger.info("model: %.2fM parameters | global batch %d = micro %d x %d micro-batches x %d ranks | %s | ZeRO %d",
                n_params / 1e6, t.global_batch_size, t.micro_batch_size, t.num_micro_batches, world, t.precision,
                t.zero_stage)
    state = TrainState()
    loaded = None
    if config.checkpoint.load:
        try:
            loaded = load_checkpoint(engine, scheduler, state, data_eff, config)
        except ValueError as e:
            raise UsageError(str(e)) from e
    train_ds, valid_ds, test_ds = _build_datasets(train_valid_test_datasets_provider, config, tokenizer, rank)
    try:
        train_loader = data_eff.train_data_loader(train_ds, data_parallel_rank=rank)  # curriculum sampler
    except ValueError as e:
        raise UsageError(str(e)) from e
    if train_loader is None:
        train_loader = _data_loader(train_ds, state.consumed_train_samples, config, rank, world)
    valid_loader = _data_loader(valid_ds, 0, config, rank, world, "single")
    test_loader = _data_loader(test_ds, 0, config, rank, world, "single")
    train_iter: Iterator[Batch] | None = iter(train_loader) if train_loader is not None else None
    if loaded is not None and loaded.rng_state is not None:
        set_rng_state(loaded.rng_state)  # after the loaders: building them must not shift the streams

    flops = flops_per_token or gpt_flops_per_token
    training_logger = TrainingLogger(config, lambda s: flops(config.model, s), rank, world)
    result = TrainResult(state=state)
    last_saved = [state.iteration if loaded is not None else -1]

    def save() -> None:
        if state.iteration != last_saved[0]:
            save_checkpoint(engine, scheduler, state, data_eff, config)
            last_saved[0] = state.iteration

    def run_eval(loader: Any) -> dict[str, float]:
        return evaluate(engine, loader, forward_step_func, config)

    try:
        if not t.skip_train and not budget_reached(state, config):
            if train_iter is None:
                raise UsageError("the train split is empty: check --split and --data-path")
            train(engine, scheduler, train_iter, forward_step_func, data_eff, state, config, training_logger,
                  evaluate_fn=lambda: run_eval(valid_loader), save_fn=save if config.checkpoint.save else None,
                  result=result)
        if not result.exit_reason.startswith("--exit"):
            for label, loader in (("validation", valid_loader), ("test", test_loader)):
                metrics = run_eval(loader)
                if metrics:
                    training_logger.validation(state, metrics, split=label,
                                               when=f"the end of training (iteration {state.iteration})")
                    if label == "validation":
                        result.evaluations.append((state.iteration, metrics))
        if config.checkpoint.save and state.iteration > 0:
            save()
    finally:
        training_logger.close()
    return result
