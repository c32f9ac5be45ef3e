"""pretrain(spec, config, tokenizer): distributed/seeds -> model -> engine -> load -> data -> train -> eval/save.

The family (GPT, BERT, a classifier, a test's toy) is the ModelSpec; this module names none. Parsing flags and
building the typed config happen before, in the CLI layer (``megatron.cli``).
"""
from __future__ import annotations

import logging
from typing import Any, Iterator

import torch

from megatron.config import RunConfig
from megatron.training.data_efficiency_hooks import build_data_efficiency
from megatron.training.loop import TrainResult, budget_reached, evaluate, exit_signal_handler, signal_exit, train
from megatron.training.spec import Batch, ModelSpec
from megatron.training.state import TrainState

logger = logging.getLogger("megatron.training")


class UsageError(ValueError):
    """Bad user input found while setting up a run (flags, JSON, data, checkpoint); printed as one line."""


def _build_datasets(spec: ModelSpec, config: RunConfig, tokenizer: Any, rank: int) -> tuple[Any, Any, Any]:
    """Rank 0 builds first (writing index-map caches), then the other ranks read them."""
    datasets: tuple[Any, Any, Any] | None = None
    error: str | None = None
    for turn in (True, False):
        if (rank == 0) == turn:
            try:
                datasets = spec.build_datasets(config, tokenizer)
            except ValueError as e:
                error = str(e)
        if torch.distributed.get_world_size() > 1:
            torch.distributed.barrier()
    if error is not None or datasets is None:
        raise UsageError(error or f"{spec.name}: build_datasets returned nothing")
    return datasets


def _warn_if_evaluation_is_off(config: RunConfig, datasets: tuple[Any, Any, Any], rank: int) -> None:
    """One start-up warning when --eval-iters/--eval-interval ask for evaluation but the validation split is empty."""
    t = config.training
    sizes = [0 if ds is None else len(ds) for ds in datasets]
    if rank == 0 and t.eval_iters > 0 and t.eval_interval and sizes[1] == 0:
        logger.warning("evaluation is off: --eval-iters %d --eval-interval %d ask for it, but the validation split is "
                       "empty (--split %s gives train/valid/test = %d/%d/%d samples); give the validation split a "
                       "share in --split (e.g. 949,50,1) or use a larger corpus", t.eval_iters, t.eval_interval,
                       config.data.split, *sizes)


def pretrain(spec: ModelSpec, config: RunConfig, tokenizer: Any) -> TrainResult:
    """Train ``spec``'s model as ``config`` says, on the DeepSpeed engine; returns the run's history.

    Bad data/JSON/checkpoints found on the way raise UsageError (one line); ``megatron.cli.run_cli`` turns it into
    exit status 2.
    """
    from megatron.training.checkpointing import load_checkpoint, save_checkpoint
    from megatron.training.engine import setup_model_and_optimizer
    from megatron.training.model_build import accelerator_device, build_model, configure_matmul_precision
    from megatron.training.initialize import (check_bf16_gradient_accumulation, initialize_distributed,
                                              set_random_seed)
    from megatron.training.loop import parameter_count
    from megatron.training.rng import set_rng_state
    from megatron.training.checkpointing import check_save_dir, check_save_writable
    from megatron.training.training_log import TrainingLogger

    t = config.training
    initialize_distributed(t.distributed_backend, t.distributed_timeout_minutes)
    configure_matmul_precision(accelerator_device())  # TF32 for fp32 matmuls on CUDA
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    try:
        check_save_dir(config, spec.name)  # before any work: --save must not hold a checkpoint we would not resume
        check_save_writable(config)  # and must be writable: not found out at the first save, hours later
        check_bf16_gradient_accumulation(config)  # bf16 summing micro-batch gradients in bf16: say so
        data_eff = build_data_efficiency(config, spec.batch_layout, spec.data_post_process, rank=rank)
    except ValueError as e:
        raise UsageError(str(e)) from e
    set_random_seed(t.seed, rank)

    try:
        # on the accelerator (ZeRO-3: partitioned as built); random-LTD wraps layers before the engine
        model = data_eff.prepare_model(build_model(spec, config))
        engine, scheduler = setup_model_and_optimizer(model, config)
    except ValueError as e:  # DeepSpeed rejecting the JSON, random-LTD layer ids not matching the model
        raise UsageError(str(e)) from e
    scheduler = data_eff.wrap_scheduler(scheduler, engine.optimizer)
    n_params = parameter_count(model)  # ZeRO-3 has partitioned the parameters by now: counts ds_numel
    logger.info("model: %.2fM parameters | global batch %d = micro %d x %d micro-batches x %d ranks | %s | ZeRO %d",
                n_params / 1e6, t.global_batch_size, t.micro_batch_size, t.num_micro_batches, world, t.precision,
                t.zero_stage)
    state = TrainState()
    loaded = None
    if config.checkpoint.load:
        try:
            loaded = load_checkpoint(engine, scheduler, state, data_eff, config, model_family=spec.name)
        except ValueError as e:
            raise UsageError(str(e)) from e
    train_ds, valid_ds, test_ds = _build_datasets(spec, config, tokenizer, rank)
    _warn_if_evaluation_is_off(config, (train_ds, valid_ds, test_ds), rank)
    try:
        train_loader = data_eff.train_data_loader(train_ds, data_parallel_rank=rank)  # curriculum sampler
        if train_loader is None:
            train_loader = spec.build_data_loader(train_ds, state.consumed_train_samples, config, rank=rank,
                                                  world=world)
        valid_loader = test_loader = None
        if spec.evaluate is None:
            valid_loader = spec.build_data_loader(valid_ds, 0, config, rank=rank, world=world,
                                                  dataloader_type="single")
            test_loader = spec.build_data_loader(test_ds, 0, config, rank=rank, world=world, dataloader_type="single")
            if t.eval_advance and valid_loader is not None:  # upstream's order: continue through the split
                from megatron.training.eval_data import AdvancingEvalData

                valid_loader = AdvancingEvalData(
                    lambda consumed: spec.build_data_loader(valid_ds, consumed, config, rank=rank, world=world,
                                                            dataloader_type="single"),
                    len(valid_ds), state, t.micro_batch_size * world)
        elif t.eval_advance and rank == 0:
            logger.warning("--eval-advance: no effect here because the %s family evaluates its whole validation "
                           "set every time", spec.name)
    except ValueError as e:
        raise UsageError(str(e)) from e
    train_iter: Iterator[Batch] | None = iter(train_loader) if train_loader is not None else None
    if loaded is not None and loaded.rng_state is not None:
        set_rng_state(loaded.rng_state)  # after the loaders: building them must not shift the streams

    training_logger = TrainingLogger(config, lambda s: spec.flops_per_token(config.model, s), rank, world)
    result = TrainResult(state=state)
    last_saved = [state.iteration if loaded is not None else -1]

    def save() -> None:
        if state.iteration != last_saved[0]:
            save_checkpoint(engine, scheduler, state, data_eff, config, model_family=spec.name)
            last_saved[0] = state.iteration

    def run_eval(split: str) -> dict[str, float]:
        if spec.evaluate is not None:  # the family's own evaluation of the whole split
            dataset = valid_ds if split == "validation" else test_ds
            return spec.evaluate(engine, dataset, config, state) if dataset is not None else {}
        return evaluate(engine, valid_loader if split == "validation" else test_loader, spec.forward_step, config)

    try:
        # --exit-signal-handler: SIGTERM/SIGINT stop after the current step (saved); restored when training ends
        with exit_signal_handler(t.exit_signal_handler) as signals:
            if not t.skip_train and not budget_reached(state, config):
                if train_iter is None:
                    raise UsageError("the train split is empty: check --split and --data-path")
                train(engine, scheduler, train_iter, spec.forward_step, data_eff, state, config, training_logger,
                      evaluate_fn=lambda: run_eval("validation"), save_fn=save if config.checkpoint.save else None,
                      result=result, signals=signals)
            if not result.exit_reason.startswith(("--exit", "signal")):
                for label in ("validation", "test"):
                    metrics = run_eval(label)
                    if metrics:
                        training_logger.validation(state, metrics, split=label,
                                                   when=f"the end of training (iteration {state.iteration})")
                        if label == "validation":
                            result.evaluations.append((state.iteration, metrics))
            if config.checkpoint.save and state.iteration > 0:
                save()
            # a signal that came after the last step (final evaluation/save): report it, exit 128 + signal
            signal_exit(signals, result, config.checkpoint.save if last_saved[0] == state.iteration else None)
    finally:
        training_logger.close()
    return result
