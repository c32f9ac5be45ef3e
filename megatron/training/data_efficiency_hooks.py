"""The one seam between the training loop and data efficiency (curriculum learning, random-LTD).

Set-up (orchestration, once): ``prepare_model`` wraps random-LTD layers before the engine is built,
``wrap_scheduler`` puts the layer-token LR schedule on top of Megatron's, ``train_data_loader`` gives the
training split its curriculum sampler (validation/test loaders are never touched).
Per step (the loop): ``post_process`` on every micro-batch, then ONE ``end_step`` call after the optimizer
step, which returns the tokens this step consumed (spec §3.6), the effective sequence length and the log
fields, and advances the random-LTD schedule. Checkpoints carry ``state_dict()``.

``NoDataEfficiency`` is the default; ``ActiveDataEfficiency`` composes the library's ``CurriculumLearning``
and ``RandomLTD`` (megatron/data_efficiency) when a feature is switched on.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import torch

from megatron.config import ConfigError, RunConfig
from megatron.data_efficiency.seqlen import BatchLayout
from megatron.training.spec import Batch, DataPostProcess
from megatron.training.state import TrainState

logger = logging.getLogger("megatron.training")

LAYER_TOKENS_COUNTER = "consumed_layer_tokens"


@dataclass
class StepAccounting:
    """What one optimizer step consumed (spec §3.6), returned by ``end_step``."""

    tokens: int
    """Tokens consumed by this step over all ranks (compute-equivalent under random-LTD)."""
    actual_seq_length: int
    """Effective sequence length of the step (curriculum seqlen, corrected for random-LTD)."""
    log_fields: dict[str, float] = field(default_factory=dict)
    """Extra ``name: value`` fields for the training log line and TensorBoard."""
    log_notes: list[str] = field(default_factory=list)
    """Text for this step's training log line only (e.g. ``clusters: 3 built (difficulty voc 12->20)``)."""


class DataEfficiency(Protocol):
    """What pretrain() and the training loop need from a data-efficiency implementation."""

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Adapt the freshly built model (random-LTD layer wrapping) before the engine is created."""
        ...

    def wrap_scheduler(self, scheduler: Any, optimizer: Any) -> Any:
        """The LR scheduler the loop should step (the layer-token LR schedule wraps Megatron's)."""
        ...

    def train_data_loader(self, dataset: Any, *, data_parallel_rank: int) -> Any:
        """This rank's training DataLoader, or None to use the standard Megatron sampler."""
        ...

    def post_process(self, batch: Batch, state: TrainState) -> Batch:
        """Reshape/truncate one training micro-batch (called on every micro-batch)."""
        ...

    def end_step(self, batch: Batch, state: TrainState) -> StepAccounting:
        """Account the step just taken (``state.iteration`` already counts it); once per step."""
        ...

    def state_dict(self) -> dict[str, Any]:
        """Checkpointable state (plain Python types)."""
        ...

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore from ``state_dict()``."""
        ...

    def log_fields(self) -> dict[str, float]:
        """Current extra `name: value` fields for the training log line and TensorBoard."""
        ...


class NoDataEfficiency:
    """Default: batches pass through the family's post-process with no difficulties; tokens = samples x seq."""

    def __init__(self, seq_length: int, global_batch_size: int,
                 data_post_process: DataPostProcess | None = None) -> None:
        self.seq_length = seq_length
        self.global_batch_size = global_batch_size
        self.data_post_process = data_post_process

    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model unchanged."""
        return model

    def wrap_scheduler(self, scheduler: Any, optimizer: Any) -> Any:
        """The scheduler unchanged."""
        return scheduler

    def train_data_loader(self, dataset: Any, *, data_parallel_rank: int) -> Any:
        """None: the standard Megatron pretraining sampler is used."""
        return None

    def post_process(self, batch: Batch, state: TrainState) -> Batch:
        """Apply the family's post-process with an empty difficulty state (identity for GPT)."""
        if self.data_post_process is None:
            return batch
        return self.data_post_process(batch, {"current_difficulties": {}})

    def end_step(self, batch: Batch, state: TrainState) -> StepAccounting:
        """Every sample is a full-length sequence; nothing to log."""
        return StepAccounting(self.global_batch_size * self.seq_length, self.seq_length, {})

    def state_dict(self) -> dict[str, Any]:
        """Nothing to save."""
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Nothing to restore."""

    def log_fields(self) -> dict[str, float]:
        """No extra fields."""
        return {}


class LayerTokenLRScheduler:
    """Megatron's scheduler with the LR overridden by random-LTD's layer-token schedule after every update.

    Weight decay, the sample/token counters and the checkpoint state stay the inner scheduler's.
    """

    def __init__(self, inner: Any, schedule: Any, optimizer: Any, consumed_layer_tokens: Callable[[], int]) -> None:
        self.inner = inner
        self.schedule = schedule
        self.optimizer = optimizer
        self.consumed_layer_tokens = consumed_layer_tokens
        self.apply()

    def apply(self) -> float:
        """Write the layer-token LR into the optimizer's param groups; returns it."""
        return self.schedule.apply(self.optimizer, self.consumed_layer_tokens())

    def step(self, increment: int, token_num: int | None = None) -> None:
        """Inner step (weight decay, counters), then the layer-token LR."""
        self.inner.step(increment=increment, token_num=token_num)
        self.apply()

    def get_lr(self) -> float:
        """The layer-token LR at the current consumed layer tokens."""
        return self.schedule.get_lr(self.consumed_layer_tokens())

    def state_dict(self) -> dict[str, Any]:
        """The inner scheduler's state (the layer-token position lives in the random-LTD state)."""
        return self.inner.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the inner scheduler, then re-apply the layer-token LR."""
        self.inner.load_state_dict(state_dict)
        self.apply()

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (e.g. while unpickling): avoid infinite recursion
            raise AttributeError(name)
        return getattr(self.inner, name)


class ActiveDataEfficiency:
    """Curriculum learning and/or random-LTD for one run, behind the DataEfficiency protocol."""

    def __init__(self, config: RunConfig, *, curriculum: Any = None, random_ltd: Any = None,
                 data_post_process: DataPostProcess | None = None) -> None:
        t = config.training
        self.seq_length = t.seq_length
        self.global_batch_size = t.global_batch_size
        self.data_parallel_size = t.data_parallel_size
        self.num_micro_batches = t.num_micro_batches
        self.lr = (config.optimizer.lr, config.optimizer.min_lr, config.schedule.lr_decay_style)
        self.log_interval = config.logging.log_interval
        self.curriculum = curriculum
        """megatron.data_efficiency.curriculum.CurriculumLearning (None without a curriculum)."""
        self.random_ltd = random_ltd
        """megatron.data_efficiency.random_ltd.RandomLTD (None without --random-ltd)."""
        self.data_post_process = data_post_process
        self.lr_scheduler: LayerTokenLRScheduler | None = None

    # -- set-up ------------------------------------------------------------------------------------------------
    def prepare_model(self, model: torch.nn.Module) -> torch.nn.Module:
        """Wrap the random-LTD layers (exact ids from the JSON) of a freshly built model."""
        if self.random_ltd is None:
            return model
        from megatron.model.transformer import TransformerLayer

        try:
            self.random_ltd.convert(model, TransformerLayer)
        except ValueError as e:
            raise ConfigError(f"--random-ltd: {e}") from e
        ids = list(self.random_ltd.config.random_ltd_layer_id)
        logger.info("random-LTD: %d of %d layers drop tokens (layer ids %s)", len(ids), self.random_ltd.num_layers, ids)
        return model

    def wrap_scheduler(self, scheduler: Any, optimizer: Any) -> Any:
        """Put the layer-token LR schedule on top when ``layer_token_lr_schedule.enabled``."""
        if self.random_ltd is None:
            return scheduler
        max_lr, min_lr, style = self.lr
        schedule = self.random_ltd.layer_token_lr_schedule(max_lr=max_lr, min_lr=min_lr, decay_style=style)
        if schedule is None:
            return scheduler
        ltd = self.random_ltd
        self.lr_scheduler = LayerTokenLRScheduler(scheduler, schedule, optimizer, lambda: ltd.consumed_layer_tokens)
        logger.info("random-LTD: learning rate follows consumed layer tokens (layer_token_lr_schedule)")
        return self.lr_scheduler

    def train_data_loader(self, dataset: Any, *, data_parallel_rank: int) -> Any:
        """The training DataLoader over the curriculum sampler (restored from a checkpoint if one was loaded)."""
        cl = self.curriculum
        if cl is None or not (cl.de_active and cl.use_sampler) or dataset is None or len(dataset) == 0:
            return None
        from megatron.data.data_samplers import collate_samples, ignore_stop_signals

        try:
            sampler = cl.build_sampler(len(dataset), data_parallel_rank=data_parallel_rank, drop_last=True)
        except ValueError as e:
            raise ConfigError(str(e)) from e
        workers = cl.dataloader_num_workers
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                                           collate_fn=collate_samples, pin_memory=torch.cuda.is_available(),
                                           persistent_workers=workers > 0,
                                           worker_init_fn=ignore_stop_signals if workers > 0 else None)

    # -- per micro-batch / per step ----------------------------------------------------------------------------
    def post_process(self, batch: Batch, state: TrainState) -> Batch:
        """Truncate/reshape with THIS batch's difficulties (curriculum), else the entry point's plain hook."""
        if self.curriculum is not None:
            return self.curriculum.post_process(batch, state)
        if self.data_post_process is None:
            return batch
        return self.data_post_process(batch, {"current_difficulties": {}})

    def _rows_and_length(self) -> tuple[int, int]:
        """Sequences in the global batch and their length, as the model saw them this step."""
        cl = self.curriculum
        if cl is None or not cl.active:
            return self.global_batch_size, self.seq_length
        if cl.seqlen_mode == "reshape" and cl.rows_per_microbatch is not None:
            return self.data_parallel_size * self.num_micro_batches * cl.rows_per_microbatch, cl.curriculum_seqlen
        return self.global_batch_size, cl.curriculum_seqlen

    def end_step(self, batch: Batch, state: TrainState) -> StepAccounting:
        """Tokens and actual seqlen of the step (at the r it used), then advance random-LTD to the next step."""
        from megatron.data_efficiency.accounting import actual_seq_length

        ltd = self.random_ltd
        if self.curriculum is not None:
            tokens, actual = self.curriculum.actual_seq_length(batch, state)
        else:
            assert ltd is not None
            actual = actual_seq_length(self.seq_length, None, ltd.reserved_length, ltd.num_layers, ltd.num_ltd_layers)
            tokens = self.global_batch_size * actual
        if ltd is not None:
            rows, length = self._rows_and_length()
            ltd.step(state.iteration, rows, length)
            state.counters[LAYER_TOKENS_COUNTER] = ltd.consumed_layer_tokens
        notes: list[str] = []
        if self.curriculum is not None and state.iteration % self.log_interval == 0:  # a step that prints the line
            summary = self.curriculum.cluster_summary()  # cluster builds since the previous log line
            notes = [summary] if summary else []
        return StepAccounting(int(tokens), int(actual), self.log_fields(), notes)

    # -- checkpoint / log --------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{"curriculum": ..., "random_ltd": ...}`` (sampler stream, schedulers, layer-token counter)."""
        out: dict[str, Any] = {}
        if self.curriculum is not None:
            out["curriculum"] = self.curriculum.state_dict()
        if self.random_ltd is not None:
            out["random_ltd"] = self.random_ltd.state_dict()
        return out

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore (before the train loader is built: the sampler picks up the saved position)."""
        try:
            if self.curriculum is not None and state_dict.get("curriculum"):
                self.curriculum.load_state_dict(state_dict["curriculum"])
            if self.random_ltd is not None and state_dict.get("random_ltd"):
                self.random_ltd.load_state_dict(state_dict["random_ltd"])
        except (KeyError, TypeError) as e:
            raise ConfigError(f"checkpoint: data-efficiency state is malformed ({e!r})") from e
        if self.curriculum is not None and not state_dict.get("curriculum"):
            logger.warning("checkpoint has no curriculum state: the curriculum starts from step 1")
        if self.random_ltd is not None and not state_dict.get("random_ltd"):
            logger.warning("checkpoint has no random-LTD state: its schedule starts from min_value")
        if self.lr_scheduler is not None:
            self.lr_scheduler.apply()

    def log_fields(self) -> dict[str, float]:
        """curriculum seqlen, difficulties, random-LTD reserved length and consumed layer tokens."""
        fields: dict[str, float] = {}
        if self.curriculum is not None:
            fields.update(self.curriculum.log_fields())
        if self.random_ltd is not None:
            fields.update(self.random_ltd.log_fields())
        return fields


def build_data_efficiency(config: RunConfig, layout: BatchLayout, data_post_process: DataPostProcess | None = None,
                          *, rank: int | None = None) -> DataEfficiency:
    """The data-efficiency object for this run, from the switches and JSON blocks parsed in ``config``.

    ``layout`` is the model family's batch layout; ``data_post_process`` its optional hook (default: the
    layout's own). Values the library rejects (e.g. random-LTD layer ids vs the model) raise ConfigError.
    """
    de = config.data_efficiency
    t = config.training
    post_process = data_post_process or layout.make_post_process(t.seq_length)
    if not de.any_enabled:
        return NoDataEfficiency(t.seq_length, t.global_batch_size, post_process)
    from megatron.data_efficiency.curriculum import CurriculumLearning
    from megatron.data_efficiency.random_ltd import RandomLTD

    settings = de.settings
    if rank is None:
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
    try:
        ltd = None
        if de.random_ltd:
            # draws keyed by the sample's global position: the same tokens on any number of data-parallel ranks
            ltd = RandomLTD.from_config(settings.data_efficiency.data_routing.random_ltd,
                                        num_layers=config.model.num_layers, seq_length=t.seq_length, seed=t.seed,
                                        data_parallel_rank=rank % t.data_parallel_size,
                                        data_parallel_size=t.data_parallel_size, source=de.source)
        curriculum = None
        if settings.data_efficiency.data_sampling.curriculum_learning.enabled or settings.legacy_curriculum.enabled:
            curriculum = CurriculumLearning(
                settings, layout=layout, seq_length=t.seq_length, global_batch_size=t.global_batch_size,
                micro_batch_size=t.micro_batch_size, data_parallel_size=t.data_parallel_size,
                use_sampler=de.curriculum_learning, data_post_process=data_post_process, random_ltd=ltd)
    except ValueError as e:
        raise ConfigError(str(e)) from e
    return ActiveDataEfficiency(config, curriculum=curriculum, random_ltd=ltd, data_post_process=post_process)
