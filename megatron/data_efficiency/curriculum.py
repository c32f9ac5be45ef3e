"""The curriculum-learning facade the training loop holds (implements ``training.data_efficiency_hooks.DataEfficiency``).

One object per run::

    settings = parse_deepspeed_config(ds_json, source=path)          # both JSON blocks, validated once
    cl = CurriculumLearning(settings, layout=GPT_LAYOUT, seq_length=S, global_batch_size=G, micro_batch_size=b,
                            data_parallel_size=dp, use_sampler=args.data_efficiency_curriculum_learning)
    sampler = cl.build_sampler(len(train_ds), data_parallel_rank=r)  # DataLoader(train_ds, batch_sampler=sampler)
    per micro-batch:  batch = cl.post_process(batch, train_state)  # truncate/reshape with THIS batch's difficulties
    per step:         tokens, actual = cl.actual_seq_length(batch, train_state)
    checkpoints:      cl.state_dict() / cl.load_state_dict(sd)       # sampler RNG stream, schedulers
    log line:         cl.log_fields()  → {"curriculum seqlen": 80, "difficulty voc": 3, ...}

Where the difficulties come from:

* ``data_efficiency`` curriculum with the sampler: each micro-batch's own (``CurriculumSampler.consume``).
* ``data_efficiency`` curriculum without a sampler (e.g. only ``seqlen_truncate``, single_cluster): the
  schedulers at step ``iteration + 1``.
* legacy top-level ``curriculum_learning`` (curriculum_type seqlen): its scheduler at ``iteration + 1``, applied
  as truncation by the batch layout (GPT: text[:, :cs+1]; BERT: first cs positions).

The batch ``layout`` (a :class:`.seqlen.BatchLayout`, given by the model family) says how batches are cut; the
post-process is the entry point's ``data_post_process(batch, sampler_state)`` hook when one is given (as in
Megatron-DeepSpeed), else the layout's own. With random-LTD, pass its facade
(anything with ``reserved_length``, ``num_layers``, ``num_ltd_layers``) so ``actual_seq_length`` applies the
spec §3.6 correction; call ``actual_seq_length`` after the step's forward passes, before random-LTD's own step.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import torch

from .accounting import actual_seq_length, tokens_this_step
from .cluster import MetricIndex
from .config import DataEfficiencySettings, SEQLEN_METRICS
from .sampler import CurriculumSampler
from .scheduler import CurriculumScheduler
from .seqlen import BatchLayout, DataPostProcess

logger = logging.getLogger(__name__)

__all__ = ["CurriculumLearning"]

Batch = dict[str, torch.Tensor]


def _iteration(state: Any) -> int:
    if state is None:
        return 0
    if isinstance(state, int):
        return state
    return int(getattr(state, "iteration"))


class CurriculumLearning:
    """Curriculum learning for one run: sampler + schedulers + post-process + token accounting + state."""

    def __init__(self, settings: DataEfficiencySettings, *, layout: BatchLayout, seq_length: int,
                 global_batch_size: int, micro_batch_size: int, data_parallel_size: int = 1,
                 use_sampler: bool = True, data_post_process: DataPostProcess | None = None,
                 random_ltd: Any = None, group: Any = None) -> None:
        if global_batch_size % (micro_batch_size * data_parallel_size):
            raise ValueError(f"global batch {global_batch_size} is not a multiple of micro batch {micro_batch_size} "
                             f"× data-parallel size {data_parallel_size}")
        self.settings = settings
        self.layout = layout
        self.seq_length = seq_length
        self.global_batch_size = global_batch_size
        self.micro_batch_size = micro_batch_size
        self.data_parallel_size = data_parallel_size
        self.num_microbatches = global_batch_size // (micro_batch_size * data_parallel_size)
        self.random_ltd = random_ltd
        self.group = group
        de = settings.data_efficiency
        self.curriculum = de.data_sampling.curriculum_learning
        self.legacy = settings.legacy_curriculum
        self.use_sampler = use_sampler
        self.de_active = self.curriculum.enabled
        if self.de_active and not use_sampler and any(m.schedule_based for m in self.curriculum.metrics):
            raise ValueError("data_efficiency.data_sampling.curriculum_learning has schedule_based metrics, which "
                             "need the curriculum sampler: pass --data-efficiency-curriculum-learning")
        # with the sampler, the schedulers are the sampler's (build_sampler); without, ours at iteration + 1
        self.metric_names = [m.name for m in self.curriculum.metrics] if self.de_active else []
        self.schedulers: dict[str, CurriculumScheduler] = (
            {m.name: CurriculumScheduler(m.schedule, m.name) for m in self.curriculum.metrics}
            if self.de_active and not use_sampler else {})
        self.legacy_scheduler = (CurriculumScheduler(self.legacy.schedule, "seqlen")
                                 if self.legacy.enabled and self.legacy.schedule is not None else None)
        self.seqlen_mode = self.curriculum.seqlen_mode if self.de_active else None
        if self.legacy_scheduler is not None:
            self.seqlen_mode = "truncate"
        self._user_hook = data_post_process
        self.data_post_process = data_post_process or layout.make_post_process(seq_length, group)
        self.sampler: CurriculumSampler | None = None
        self._custom: dict[str, Callable[[int], int]] = {}
        self._pending_sampler_state: dict[str, Any] | None = None
        self.current_difficulties: dict[str, int] = {}
        self.curriculum_seqlen = seq_length
        self.rows_per_microbatch: int | None = None
        self._clusters_consumed = 0  # clusters that existed when the last consumed micro-batch was drawn
        self._clusters_reported = 0  # of those, how many cluster_summary() has reported

    @property
    def active(self) -> bool:
        """True when a curriculum (data_efficiency or legacy) is on."""
        return self.de_active or self.legacy_scheduler is not None

    @property
    def dataloader_num_workers(self) -> int:
        """``data_efficiency.data_sampling.num_workers`` for the curriculum DataLoader."""
        return self.settings.data_efficiency.data_sampling.num_workers

    def build_sampler(self, num_samples: int, *, data_parallel_rank: int = 0, drop_last: bool = True,
                      indexes: Mapping[str, MetricIndex] | None = None) -> CurriculumSampler:
        """The training set's batch_sampler (reads the index files; restores a state loaded earlier)."""
        if not (self.de_active and self.use_sampler):
            raise ValueError("the curriculum sampler needs data_efficiency.data_sampling.curriculum_learning."
                             "enabled and --data-efficiency-curriculum-learning")
        self.sampler = CurriculumSampler.from_config(
            self.settings.data_efficiency, num_samples, self.micro_batch_size,
            data_parallel_rank=data_parallel_rank, data_parallel_size=self.data_parallel_size,
            gradient_accumulation_steps=self.num_microbatches, drop_last=drop_last, group=self.group,
            indexes=indexes, track_consumption=True)
        self.schedulers = self.sampler.schedulers
        self.sampler.set_custom_curriculum_learning_schedule(self._custom)
        if self._pending_sampler_state is not None:
            self.sampler.load_state_dict(self._pending_sampler_state)
            self._pending_sampler_state = None
        self._clusters_consumed = self._clusters_reported = self.sampler.num_clusters  # rebuilt ones are not news
        return self.sampler

    def set_custom_curriculum_learning_schedule(self, schedule_fns: Mapping[str, Callable[[int], int]]) -> None:
        """Install ``{metric: fn(step) -> difficulty}`` for metrics with schedule_type custom."""
        known = set(self.metric_names) | ({"seqlen"} if self.legacy_scheduler else set())
        for name, fn in schedule_fns.items():
            if name not in known:
                raise ValueError(f"set_custom_curriculum_learning_schedule: unknown curriculum metric {name!r}; "
                                 f"configured metrics: {', '.join(sorted(known)) or 'none'}")
            if name == "seqlen" and self.legacy_scheduler is not None and name not in self.metric_names:
                self.legacy_scheduler.set_custom_get_difficulty(fn)
            elif name in self.schedulers:
                self.schedulers[name].set_custom_get_difficulty(fn)
                self._custom[name] = fn
            else:  # applied by build_sampler; check the schedule type now
                stype = next(m.schedule.schedule_type for m in self.curriculum.metrics if m.name == name)
                if stype != "custom" or not callable(fn):
                    raise ValueError(f"curriculum metric {name}: a custom schedule needs schedule_type custom "
                                     f"(got {stype}) and a callable (got {fn!r})")
                self._custom[name] = fn

    # ------------------------------------------------------------------------------------------------------------
    def _difficulties_for_batch(self, state: Any) -> tuple[dict[str, int], int]:
        step = _iteration(state) + 1
        if self.sampler is not None:
            info = self.sampler.consume()
            self._clusters_consumed = max(self._clusters_consumed, len(info.snapshot.clusters))
            return dict(info.difficulties), info.curriculum_step
        if self.use_sampler:
            raise RuntimeError("curriculum learning: post_process called before build_sampler(); the training "
                               "batches must come from the curriculum sampler")
        return {name: s.update_difficulty(step) for name, s in self.schedulers.items()}, step

    def post_process(self, batch: Batch, state: Any) -> Batch:
        """Cut one training micro-batch to its curriculum seqlen; ``state`` is the TrainState (``.iteration``)."""
        if self.legacy_scheduler is not None:
            cs = self.legacy_scheduler.update_difficulty(_iteration(state) + 1)
            self.current_difficulties = {"seqlen": cs}
            batch, seqlen = self.layout.truncate(batch, cs, self.seq_length, self.group)
            self.curriculum_seqlen, self.rows_per_microbatch = seqlen, None
            return batch
        if not self.de_active:  # no curriculum: only the entry point's own hook, with no difficulties
            return batch if self._user_hook is None else self._user_hook(batch, {"current_difficulties": {}})
        difficulties, step = self._difficulties_for_batch(state)
        self.current_difficulties = difficulties
        out = self.data_post_process(batch, {"current_difficulties": dict(difficulties), "curriculum_step": step})
        text = out.get("text") if isinstance(out, Mapping) else None
        if isinstance(text, torch.Tensor) and text.dim() >= 2:
            self.curriculum_seqlen = self.layout.model_seq_length(int(text.shape[1]))
            self.rows_per_microbatch = int(text.shape[0]) if self.seqlen_mode == "reshape" else None
        else:
            cs = difficulties.get(self.curriculum.seqlen_metric or "", self.seq_length)
            self.curriculum_seqlen = min(int(cs), self.seq_length)
            self.rows_per_microbatch = None
        return out

    def actual_seq_length(self, batch: Batch | None = None, state: Any = None) -> tuple[int, int]:
        """(tokens consumed by this step over all ranks, effective sequence length) of spec §3.6."""
        cs = self.curriculum_seqlen if self.active else None
        ltd = self.random_ltd
        actual = actual_seq_length(self.seq_length, cs,
                                   None if ltd is None else ltd.reserved_length,
                                   1 if ltd is None else ltd.num_layers, 0 if ltd is None else ltd.num_ltd_layers)
        tokens = tokens_this_step(actual, self.global_batch_size,
                                  self.rows_per_microbatch if self.seqlen_mode == "reshape" else None,
                                  self.data_parallel_size, self.num_microbatches)
        return tokens, actual

    # ------------------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Sampler stream, scheduler and legacy-scheduler state, last curriculum seqlen (plain Python types)."""
        state: dict[str, Any] = {
            "schedulers": {name: s.state_dict() for name, s in self.schedulers.items()},
            "curriculum_seqlen": self.curriculum_seqlen,
            "current_difficulties": dict(self.current_difficulties),
        }
        if self.sampler is not None:
            state["data_sampler"] = self.sampler.state_dict()
        elif self._pending_sampler_state is not None:
            state["data_sampler"] = self._pending_sampler_state
        if self.legacy_scheduler is not None:
            state["legacy"] = self.legacy_scheduler.state_dict()
        return state

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict` output (before or after ``build_sampler``)."""
        for name, s in state_dict.get("schedulers", {}).items():
            if name in self.schedulers:  # with a sampler, its state (below) restores the difficulties
                self.schedulers[name].load_state_dict(s)
        if "legacy" in state_dict and self.legacy_scheduler is not None:
            self.legacy_scheduler.load_state_dict(state_dict["legacy"])
        self.curriculum_seqlen = int(state_dict.get("curriculum_seqlen", self.seq_length))
        self.current_difficulties = dict(state_dict.get("current_difficulties", {}))
        sampler_state = state_dict.get("data_sampler")
        if sampler_state is not None:
            if self.sampler is not None:
                self.sampler.load_state_dict(sampler_state)
            else:
                self._pending_sampler_state = dict(sampler_state)

    def cluster_summary(self) -> str | None:
        """``clusters: 3 built (difficulty voc 12->20)``: the clusters built for the batches consumed since the
        previous call (the sampler may run ahead of training), or None if there were none. Each cluster build
        is logged on its own at debug level only."""
        if self.sampler is None or self._clusters_consumed <= self._clusters_reported:
            return None
        built = self.sampler.clusters_info[self._clusters_reported:self._clusters_consumed]
        self._clusters_reported = self._clusters_consumed
        ranges = []
        for name in built[0]["current"]:
            first, last = built[0]["current"][name], built[-1]["current"][name]
            ranges.append(f"{name} {first}" if first == last else f"{name} {first}->{last}")
        return f"clusters: {len(built)} built (difficulty {', '.join(ranges)})"

    def log_fields(self) -> dict[str, float]:
        """``curriculum seqlen`` and ``difficulty <metric>`` for the log line / TensorBoard."""
        if not self.active:
            return {}
        fields: dict[str, float] = {"curriculum seqlen": self.curriculum_seqlen}
        for name, value in self.current_difficulties.items():
            if name not in SEQLEN_METRICS and not (self.legacy_scheduler is not None and name == "seqlen"):
                fields[f"difficulty {name}"] = value
        return fields
