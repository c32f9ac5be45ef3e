"""Parse and validate the DeepSpeed JSON blocks ``data_efficiency`` and legacy ``curriculum_learning``.

The keys and defaults are DeepSpeed's (spec §3.1, §3.7, §5.1). Every unknown or misspelled key, wrong type or
out-of-range value raises ONE :class:`DataEfficiencyConfigError` naming the key path, for example::

    ds_config.json: data_efficiency.data_sampling.curriculum_learning.curriculum_metrics.voc.schedule_confg:
    unknown key (did you mean schedule_config?)

A block that is present is validated completely, even when its ``enabled`` is false (DeepSpeed itself reads the
sub-features regardless of the master flag), except a legacy ``curriculum_learning`` block holding only
``enabled: false``. Both blocks must be removed before the dict reaches ``deepspeed.initialize``:
see :func:`strip_data_efficiency_blocks`.
"""
from __future__ import annotations

import copy
import difflib
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping

from .random_ltd_config import RandomLTDConfig, parse_random_ltd_config

logger = logging.getLogger(__name__)

__all__ = [
    "DataEfficiencyConfigError",
    "ScheduleConfig",
    "CurriculumMetricConfig",
    "CurriculumLearningConfig",
    "DataSamplingConfig",
    "DataRoutingConfig",
    "DataEfficiencyConfig",
    "LegacyCurriculumConfig",
    "DataEfficiencySettings",
    "parse_schedule_config",
    "parse_data_efficiency_config",
    "parse_legacy_curriculum_config",
    "parse_deepspeed_config",
    "strip_data_efficiency_blocks",
    "SCHEDULE_TYPES",
    "SEQLEN_METRICS",
]


class DataEfficiencyConfigError(ValueError):
    """A bad ``data_efficiency`` / ``curriculum_learning`` configuration; the message names the key path."""


SCHEDULE_TYPES = ("fixed_linear", "fixed_root", "fixed_discrete", "custom")
DIFFICULTY_TYPES = ("value", "percentile")
CLUSTERING_TYPES = ("schedule_based", "single_cluster")
SEQLEN_METRICS = {"seqlen_truncate": "truncate", "seqlen_reshape": "reshape"}
"""Metric keys that mean something to the post-process hook (spec §4) → seqlen mode."""

# Keys each schedule type needs (required) inside ``schedule_config``; every other known key is rejected.
_SCHEDULE_KEYS: dict[str, tuple[str, ...]] = {
    "fixed_linear": ("total_curriculum_step", "difficulty_step"),
    "fixed_root": ("total_curriculum_step", "difficulty_step", "root_degree"),
    "fixed_discrete": ("difficulty", "max_step"),
    "custom": (),
}
_ALL_SCHEDULE_KEYS = ("total_curriculum_step", "difficulty_step", "root_degree", "difficulty", "max_step")
# Old spellings users may carry over from early DeepSpeed docs → the key we expect instead.
_ALIASES = {"total_step": "total_curriculum_step", "cluster_path": "data_cluster_path", "metrics": "curriculum_metrics"}

_DE_KEYS = ("enabled", "seed", "data_sampling", "data_routing")
_SAMPLING_KEYS = ("enabled", "num_epochs", "num_workers", "pin_memory", "curriculum_learning", "dynamic_batching")
_CL_KEYS = ("enabled", "data_cluster_path", "curriculum_metrics")
_METRIC_KEYS = ("index_to_sample_path", "index_to_metric_path", "difficulty_type", "clustering_type",
                "min_difficulty", "max_difficulty", "schedule_type", "schedule_config")
_ROUTING_KEYS = ("enabled", "random_ltd")
_DYNAMIC_BATCHING_KEYS = ("enabled", "metrics_path", "lr_scaling_method", "min_batch_size", "max_batch_size",
                          "sequence_picking_order", "max_tokens", "verbose", "dataloader_num_workers",
                          "dataloader_pin_memory", "samples_order", "max_tokens_per_batch")
_LEGACY_KEYS = ("enabled", "curriculum_type", "min_difficulty", "max_difficulty", "schedule_type", "schedule_config")

_REQUIRED: Any = object()


# ----------------------------------------------------------------------------------------------------------------
# Typed configuration
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ScheduleConfig:
    """A pacing function (spec §3.2): how a metric's difficulty grows with the curriculum step."""

    schedule_type: str
    """One of ``fixed_linear``, ``fixed_root``, ``fixed_discrete``, ``custom``."""
    min_difficulty: int
    """Difficulty at step 0 (``min_difficulty``)."""
    max_difficulty: int
    """Final difficulty; the scheduler stops updating once it is reached (``max_difficulty``)."""
    total_curriculum_step: int | None = None
    """Steps to go from min to max (fixed_linear / fixed_root)."""
    difficulty_step: int = 1
    """Difficulties are rounded down to a multiple of this, in absolute terms (fixed_linear / fixed_root)."""
    root_degree: float = 1.0
    """Degree of the root: 1 = linear, 2 = square root (fixed_root)."""
    difficulty: tuple[int, ...] = ()
    """Difficulty levels (fixed_discrete)."""
    max_step: tuple[int, ...] = ()
    """Last step of each level but the final one; one element shorter than ``difficulty`` (fixed_discrete)."""


@dataclass(frozen=True)
class CurriculumMetricConfig:
    """One entry of ``curriculum_metrics``: a difficulty metric, its index files and its schedule."""

    name: str
    """The metric key (free name, e.g. ``voc``; ``seqlen_truncate`` / ``seqlen_reshape`` drive post-processing)."""
    difficulty_type: str
    """``value`` (absolute metric value) or ``percentile`` (1..max_difficulty)."""
    clustering_type: str
    """``schedule_based`` (select samples by difficulty) or ``single_cluster`` (no selection)."""
    schedule: ScheduleConfig
    """The pacing function of this metric."""
    index_to_sample_path: str | None = None
    """Prefix (no extension) of the analyzer's ``{m}_index_to_sample[_percentile_merged]`` file."""
    index_to_metric_path: str | None = None
    """Prefix of ``{m}_index_to_metric``; read only in value mode."""

    @property
    def schedule_based(self) -> bool:
        """True when this metric selects samples (clustering_type schedule_based)."""
        return self.clustering_type == "schedule_based"


@dataclass(frozen=True)
class CurriculumLearningConfig:
    """``data_efficiency.data_sampling.curriculum_learning``."""

    enabled: bool = False
    """Turn the curriculum sampler on."""
    data_cluster_path: str | None = None
    """Directory where clusters are also written (optional here: clusters live in memory)."""
    metrics: tuple[CurriculumMetricConfig, ...] = ()
    """The metrics in config order (the order names cluster files)."""

    @property
    def seqlen_mode(self) -> str | None:
        """``truncate``, ``reshape`` or None, from the metric keys ``seqlen_truncate`` / ``seqlen_reshape``."""
        for m in self.metrics:
            if m.name in SEQLEN_METRICS:
                return SEQLEN_METRICS[m.name]
        return None

    @property
    def seqlen_metric(self) -> str | None:
        """Name of the metric whose difficulty is the curriculum sequence length, if any."""
        for m in self.metrics:
            if m.name in SEQLEN_METRICS:
                return m.name
        return None


@dataclass(frozen=True)
class DataSamplingConfig:
    """``data_efficiency.data_sampling``."""

    enabled: bool = False
    """Master flag of data sampling (informational; the curriculum flag below decides)."""
    num_epochs: int = 1000
    """Sampler length = dataset length × num_epochs."""
    num_workers: int = 0
    """DataLoader workers for the curriculum loader."""
    pin_memory: bool = False
    """Parsed for compatibility; the training loader decides pinning."""
    curriculum_learning: CurriculumLearningConfig = field(default_factory=CurriculumLearningConfig)
    """The curriculum sampler's configuration."""
    dynamic_batching: Mapping[str, Any] = field(default_factory=dict)
    """The ``dynamic_batching`` block, kept raw (the feature is not supported; enabling it is an error)."""


@dataclass(frozen=True)
class DataRoutingConfig:
    """``data_efficiency.data_routing``."""

    enabled: bool = False
    """Master flag of data routing."""
    random_ltd: RandomLTDConfig = field(default_factory=RandomLTDConfig)
    """The ``random_ltd`` sub-block, validated by ``random_ltd_config.parse_random_ltd_config``."""


@dataclass(frozen=True)
class DataEfficiencyConfig:
    """The whole ``data_efficiency`` block."""

    enabled: bool = False
    """Master flag (DeepSpeed reads the sub-features regardless of it)."""
    seed: int = 1234
    """Seed of the curriculum sampler's own ``np.random.default_rng``."""
    data_sampling: DataSamplingConfig = field(default_factory=DataSamplingConfig)
    """Curriculum learning / data sampling."""
    data_routing: DataRoutingConfig = field(default_factory=DataRoutingConfig)
    """random-LTD."""


@dataclass(frozen=True)
class LegacyCurriculumConfig:
    """The legacy top-level ``curriculum_learning`` block (seqlen warmup, spec §3.7)."""

    enabled: bool = False
    """Turn the legacy seqlen curriculum on."""
    curriculum_type: str = "seqlen"
    """Only ``seqlen`` is supported."""
    schedule: ScheduleConfig | None = None
    """The pacing function; None when the block is absent or holds only ``enabled: false``."""


@dataclass(frozen=True)
class DataEfficiencySettings:
    """Both blocks, parsed once from the DeepSpeed JSON."""

    data_efficiency: DataEfficiencyConfig = field(default_factory=DataEfficiencyConfig)
    """The ``data_efficiency`` block."""
    legacy_curriculum: LegacyCurriculumConfig = field(default_factory=LegacyCurriculumConfig)
    """The legacy top-level ``curriculum_learning`` block."""


# ----------------------------------------------------------------------------------------------------------------
# A small reader that knows its key path
# ----------------------------------------------------------------------------------------------------------------
class _Section:
    """A JSON object at ``path``; rejects unknown keys and reads typed values with clear errors."""

    def __init__(self, data: Any, path: str, source: str | None, known: tuple[str, ...]) -> None:
        self.path = path
        self.source = source
        if not isinstance(data, Mapping):
            self.fail(path, f"expected a JSON object, got {_describe(data)}")
        self.data: Mapping[str, Any] = data
        for key in data:
            if key not in known:
                self.fail(f"{path}.{key}", "unknown key" + _suggest(str(key), known))

    def fail(self, path: str, message: str) -> None:
        """Raise the one error for ``path``."""
        prefix = f"{self.source}: " if self.source else ""
        raise DataEfficiencyConfigError(f"{prefix}{path}: {message}")

    def key_path(self, key: str) -> str:
        """Full dotted path of ``key``."""
        return f"{self.path}.{key}"

    def has(self, key: str) -> bool:
        """True if ``key`` is present."""
        return key in self.data

    def get_bool(self, key: str, default: Any = _REQUIRED) -> bool:
        """A JSON boolean."""
        value = self._raw(key, default)
        if not isinstance(value, bool):
            self.fail(self.key_path(key), f"expected true or false, got {_describe(value)}")
        return value

    def get_int(self, key: str, default: Any = _REQUIRED, minimum: int | None = None) -> int:
        """A JSON integer (an integral float such as 1.1e5 is accepted)."""
        value = self._raw(key, default)
        return self._as_int(self.key_path(key), value, minimum)

    def get_number(self, key: str, default: Any = _REQUIRED, positive: bool = False) -> float:
        """A JSON number."""
        value = self._raw(key, default)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            self.fail(self.key_path(key), f"expected a number, got {_describe(value)}")
        if positive and value <= 0:
            self.fail(self.key_path(key), f"expected a number > 0, got {value}")
        return float(value)

    def get_str(self, key: str, default: Any = _REQUIRED) -> str | None:
        """A non-empty JSON string (or the default, possibly None)."""
        value = self._raw(key, default)
        if value is None and default is None:
            return None
        if not isinstance(value, str) or not value:
            self.fail(self.key_path(key), f"expected a non-empty string, got {_describe(value)}")
        return value

    def get_choice(self, key: str, choices: tuple[str, ...], default: Any = _REQUIRED) -> str:
        """A string among ``choices``."""
        value = self._raw(key, default)
        if value not in choices:
            self.fail(self.key_path(key),
                      f"expected one of {', '.join(choices)}, got {_describe(value)}"
                      + (_suggest(value, choices) if isinstance(value, str) else ""))
        return value

    def get_int_list(self, key: str) -> tuple[int, ...]:
        """A non-empty JSON list of integers."""
        value = self._raw(key, _REQUIRED)
        if not isinstance(value, list) or not value:
            self.fail(self.key_path(key), f"expected a non-empty list of integers, got {_describe(value)}")
        return tuple(self._as_int(f"{self.key_path(key)}[{i}]", v, None) for i, v in enumerate(value))

    def _raw(self, key: str, default: Any) -> Any:
        if key in self.data:
            return self.data[key]
        if default is _REQUIRED:
            self.fail(self.key_path(key), "required key is missing")
        return default

    def _as_int(self, path: str, value: Any, minimum: int | None) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(path, f"expected an integer, got {_describe(value)}")
        if minimum is not None and value < minimum:
            self.fail(path, f"expected an integer >= {minimum}, got {value}")
        return value


def _describe(value: Any) -> str:
    if isinstance(value, str):
        return repr(value)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return f"a {type(value).__name__} {value!r}"[:120]


def _suggest(key: str, known: tuple[str, ...]) -> str:
    if key in _ALIASES and _ALIASES[key] in known:
        return f" (did you mean {_ALIASES[key]}?)"
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f" (did you mean {close[0]}?)"
    return f" (expected one of: {', '.join(known)})"


# ----------------------------------------------------------------------------------------------------------------
# Parsers
# ----------------------------------------------------------------------------------------------------------------
def parse_schedule_config(block: Mapping[str, Any], path: str, source: str | None = None,
                          difficulty_type: str = "value") -> ScheduleConfig:
    """Parse min/max_difficulty, schedule_type and schedule_config of the object at ``path``."""
    sec = _Section(block, path, source, tuple(block.keys()))  # unknown keys are checked by the caller
    lo = sec.get_int("min_difficulty")
    hi = sec.get_int("max_difficulty")
    if lo > hi:
        sec.fail(sec.key_path("min_difficulty"), f"min_difficulty {lo} is larger than max_difficulty {hi}")
    if difficulty_type == "percentile" and (lo < 0 or hi < 1):
        sec.fail(sec.key_path("max_difficulty"),
                 f"percentile difficulties need 0 <= min_difficulty <= max_difficulty and max_difficulty >= 1, "
                 f"got {lo}..{hi}")
    stype = sec.get_choice("schedule_type", SCHEDULE_TYPES)
    cfg_path = sec.key_path("schedule_config")
    raw_cfg = block.get("schedule_config", {})
    if raw_cfg is None:
        raw_cfg = {}
    sc = _Section(raw_cfg, cfg_path, source, _ALL_SCHEDULE_KEYS)
    needed = _SCHEDULE_KEYS[stype]
    for key in sc.data:
        if key not in needed:
            sc.fail(sc.key_path(key), f"not used by schedule_type {stype}"
                    + (f" (it needs: {', '.join(needed)})" if needed else " (custom takes no schedule_config keys)"))
    if stype in ("fixed_linear", "fixed_root"):
        total = sc.get_int("total_curriculum_step", minimum=1)
        step = sc.get_int("difficulty_step", minimum=1)
        root = sc.get_number("root_degree", positive=True) if stype == "fixed_root" else 1.0
        if lo % step:
            logger.warning("%s: min_difficulty %d is not a multiple of difficulty_step %d; difficulties are rounded "
                           "down in absolute terms, so the first ones will be below min_difficulty", path, lo, step)
        return ScheduleConfig(stype, lo, hi, total_curriculum_step=total, difficulty_step=step, root_degree=root)
    if stype == "fixed_discrete":
        levels = sc.get_int_list("difficulty")
        steps = sc.get_int_list("max_step")
        if len(levels) != len(steps) + 1:
            sc.fail(sc.key_path("max_step"), f"expected one element fewer than difficulty ({len(levels) - 1}), "
                                             f"got {len(steps)}")
        if any(b <= a for a, b in zip(steps, steps[1:])):
            sc.fail(sc.key_path("max_step"), f"expected strictly increasing steps, got {list(steps)}")
        return ScheduleConfig(stype, lo, hi, difficulty=levels, max_step=steps)
    return ScheduleConfig(stype, lo, hi)


def _parse_metric(name: str, block: Any, path: str, source: str | None) -> CurriculumMetricConfig:
    sec = _Section(block, path, source, _METRIC_KEYS)
    dtype = sec.get_choice("difficulty_type", DIFFICULTY_TYPES)
    ctype = sec.get_choice("clustering_type", CLUSTERING_TYPES)
    sample_path = sec.get_str("index_to_sample_path", None)
    metric_path = sec.get_str("index_to_metric_path", None)
    if ctype == "schedule_based":
        if sample_path is None:
            sec.fail(sec.key_path("index_to_sample_path"), "required for clustering_type schedule_based")
        if dtype == "value" and metric_path is None:
            sec.fail(sec.key_path("index_to_metric_path"), "required for difficulty_type value with schedule_based")
    if name in SEQLEN_METRICS and dtype != "value":
        sec.fail(sec.key_path("difficulty_type"), f"metric {name} is a sequence length: use difficulty_type value")
    schedule = parse_schedule_config(block, path, source, dtype)
    return CurriculumMetricConfig(name, dtype, ctype, schedule, sample_path, metric_path)


def _missing_index_file(prefix: str) -> str | None:
    """The first of ``prefix.idx`` / ``prefix.bin`` that is not a file, or None when both exist."""
    for ext in (".idx", ".bin"):
        if not os.path.isfile(prefix + ext):
            return prefix + ext
    return None


def _check_metric_is_real(sec: _Section, m: CurriculumMetricConfig, path: str) -> None:
    """A metric other than seqlen_truncate / seqlen_reshape must name analyzer files that exist.

    Without this a misspelled ``seqlen_trunc`` with ``"dummy"`` paths (single_cluster) would be accepted and do
    nothing, while every log line shows its difficulty.
    """
    needed = [("index_to_sample_path", m.index_to_sample_path)]
    if m.difficulty_type == "value":
        needed.append(("index_to_metric_path", m.index_to_metric_path))
    for key, prefix in needed:
        if prefix is None:
            reason = f"{key} is not given"
        else:
            missing = _missing_index_file(prefix)
            if missing is None:
                continue
            reason = f"{key} {prefix!r} is not an analyzer output ({missing} not found)"
        close = difflib.get_close_matches(m.name, tuple(SEQLEN_METRICS), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]}?)" if close else ""
        sec.fail(path, f"curriculum metric {m.name!r}{hint} is neither seqlen_truncate nor seqlen_reshape (the only "
                       f"metrics that work without index files), so it needs the data analyzer's index files, but "
                       f"{reason}")


def _parse_curriculum(block: Any, path: str, source: str | None, seq_length: int | None = None,
                      check_index_files: bool = True) -> CurriculumLearningConfig:
    sec = _Section(block, path, source, _CL_KEYS)
    enabled = sec.get_bool("enabled", False)
    cluster_path = sec.get_str("data_cluster_path", None)
    metrics: list[CurriculumMetricConfig] = []
    if sec.has("curriculum_metrics"):
        mpath = sec.key_path("curriculum_metrics")
        raw = block["curriculum_metrics"]
        if not isinstance(raw, Mapping) or not raw:
            sec.fail(mpath, f"expected a non-empty JSON object of metrics, got {_describe(raw)}")
        for name, mblock in raw.items():
            metrics.append(_parse_metric(str(name), mblock, f"{mpath}.{name}", source))
        seq = [m.name for m in metrics if m.name in SEQLEN_METRICS]
        if len(seq) > 1:
            sec.fail(mpath, f"at most one of seqlen_truncate / seqlen_reshape may be used, got {', '.join(seq)}")
        if enabled:  # a disabled block is validated, but its files are not read and --seq-length does not apply
            for m in metrics:
                mp = f"{mpath}.{m.name}"
                if m.name not in SEQLEN_METRICS:
                    if check_index_files:
                        _check_metric_is_real(sec, m, mp)
                elif seq_length is not None and m.schedule.max_difficulty > seq_length:
                    sec.fail(f"{mp}.max_difficulty", f"is {m.schedule.max_difficulty} but --seq-length is "
                                                     f"{seq_length}; expected max_difficulty <= seq_length")
    elif enabled:
        sec.fail(sec.key_path("curriculum_metrics"), "required when curriculum_learning is enabled")
    return CurriculumLearningConfig(enabled, cluster_path, tuple(metrics))


def parse_data_efficiency_config(ds_config: Mapping[str, Any], source: str | None = None, *,
                                 num_layers: int | None = None, seq_length: int | None = None,
                                 check_index_files: bool = True) -> DataEfficiencyConfig:
    """Parse ``ds_config['data_efficiency']`` (absent → defaults); ``source`` names the JSON file in errors.

    ``random_ltd`` is validated by :func:`random_ltd_config.parse_random_ltd_config` (cross-checked against
    ``num_layers`` / ``seq_length`` when given) and stored as its ``RandomLTDConfig``. In an enabled curriculum,
    a ``seqlen_truncate`` / ``seqlen_reshape`` max_difficulty must not exceed ``seq_length`` (when given), and
    every other metric must name analyzer index files that exist (``{prefix}.idx`` and ``.bin``; skipped with
    ``check_index_files=False``, for tools that only read the schedules) — else one error with a did-you-mean.
    """
    if "data_efficiency" not in ds_config:
        return DataEfficiencyConfig()
    de = _Section(ds_config["data_efficiency"], "data_efficiency", source, _DE_KEYS)
    enabled = de.get_bool("enabled", False)
    seed = de.get_int("seed", 1234, minimum=0)

    sampling = DataSamplingConfig()
    if de.has("data_sampling"):
        ds = _Section(de.data["data_sampling"], de.key_path("data_sampling"), source, _SAMPLING_KEYS)
        curriculum = CurriculumLearningConfig()
        if ds.has("curriculum_learning"):
            curriculum = _parse_curriculum(ds.data["curriculum_learning"], ds.key_path("curriculum_learning"), source,
                                           seq_length=seq_length, check_index_files=check_index_files)
        dyn: dict[str, Any] = {}
        if ds.has("dynamic_batching"):
            db = _Section(ds.data["dynamic_batching"], ds.key_path("dynamic_batching"), source,
                          _DYNAMIC_BATCHING_KEYS)
            if db.get_bool("enabled", False):
                db.fail(db.key_path("enabled"), "dynamic_batching is not supported by this framework; set it to "
                                                "false or remove the block")
            dyn = copy.deepcopy(dict(db.data))
        sampling = DataSamplingConfig(
            enabled=ds.get_bool("enabled", False),
            num_epochs=ds.get_int("num_epochs", 1000, minimum=1),
            num_workers=ds.get_int("num_workers", 0, minimum=0),
            pin_memory=ds.get_bool("pin_memory", False),
            curriculum_learning=curriculum,
            dynamic_batching=dyn,
        )

    routing = DataRoutingConfig()
    if de.has("data_routing"):
        dr = _Section(de.data["data_routing"], de.key_path("data_routing"), source, _ROUTING_KEYS)
        routing_enabled = dr.get_bool("enabled", False)
        ltd = parse_random_ltd_config(dr.data.get("random_ltd"), path=dr.key_path("random_ltd"),
                                      num_layers=num_layers, seq_length=seq_length, source=source)
        routing = DataRoutingConfig(enabled=routing_enabled, random_ltd=ltd)
    return DataEfficiencyConfig(enabled=enabled, seed=seed, data_sampling=sampling, data_routing=routing)


def parse_legacy_curriculum_config(ds_config: Mapping[str, Any], source: str | None = None) -> LegacyCurriculumConfig:
    """Parse the legacy top-level ``curriculum_learning`` block (absent → disabled)."""
    if "curriculum_learning" not in ds_config:
        return LegacyCurriculumConfig()
    sec = _Section(ds_config["curriculum_learning"], "curriculum_learning", source, _LEGACY_KEYS)
    enabled = sec.get_bool("enabled", False)
    if not enabled and set(sec.data) <= {"enabled"}:
        return LegacyCurriculumConfig()
    ctype = sec.get_str("curriculum_type")
    if ctype != "seqlen":
        sec.fail(sec.key_path("curriculum_type"), f"only 'seqlen' is supported by the legacy curriculum, got {ctype!r}")
    schedule = parse_schedule_config(sec.data, "curriculum_learning", source)
    if schedule.min_difficulty < 1:
        sec.fail(sec.key_path("min_difficulty"), f"a sequence length must be >= 1, got {schedule.min_difficulty}")
    return LegacyCurriculumConfig(enabled=enabled, curriculum_type=ctype, schedule=schedule)


def parse_deepspeed_config(ds_config: Mapping[str, Any], source: str | None = None, *,
                           num_layers: int | None = None, seq_length: int | None = None,
                           check_index_files: bool = True) -> DataEfficiencySettings:
    """Parse both data-efficiency blocks of a DeepSpeed JSON dict; reject enabling both curricula at once.

    See :func:`parse_data_efficiency_config` for ``seq_length`` and ``check_index_files``.
    """
    if not isinstance(ds_config, Mapping):
        prefix = f"{source}: " if source else ""
        raise DataEfficiencyConfigError(f"{prefix}expected a JSON object at the top level, got {_describe(ds_config)}")
    de = parse_data_efficiency_config(ds_config, source, num_layers=num_layers, seq_length=seq_length,
                                      check_index_files=check_index_files)
    legacy = parse_legacy_curriculum_config(ds_config, source)
    if legacy.enabled and de.data_sampling.curriculum_learning.enabled:
        prefix = f"{source}: " if source else ""
        raise DataEfficiencyConfigError(
            f"{prefix}curriculum_learning.enabled: the legacy seqlen curriculum and "
            "data_efficiency.data_sampling.curriculum_learning are both enabled; enable only one "
            "(use a seqlen_truncate metric in data_efficiency instead of the legacy block)")
    return DataEfficiencySettings(data_efficiency=de, legacy_curriculum=legacy)


def strip_data_efficiency_blocks(ds_config: Mapping[str, Any]) -> dict[str, Any]:
    """Return a deep copy of ``ds_config`` without ``data_efficiency`` and ``curriculum_learning``."""
    return {k: copy.deepcopy(v) for k, v in ds_config.items() if k not in ("data_efficiency", "curriculum_learning")}
