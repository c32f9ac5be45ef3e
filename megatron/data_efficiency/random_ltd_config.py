"""Parse and validate the DeepSpeed JSON block ``data_efficiency.data_routing.random_ltd``.

The keys are DeepSpeed's (spec §5.1), so recipes written for Megatron-DeepSpeed parse unchanged.
Two keys are ours:

* ``layer_token_lr_schedule`` exists upstream but raises "not implemented" there; here it drives the
  LR from consumed layer tokens (see ``megatron/data_efficiency/layer_token_lr.py``).
* ``allow_first_last_layers`` (default false): by convention random-LTD never drops tokens in the first
  (0) and last (L-1) layers; listing them in ``random_ltd_layer_id`` is accepted (as upstream) with a warning,
  which this key set to true silences.

Every problem raises :class:`RandomLTDConfigError` naming the key path and what was expected.
"""
from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from typing import Any, Mapping

logger = logging.getLogger(__name__)

ROUTING_PATH = "data_efficiency.data_routing"
RANDOM_LTD_PATH = ROUTING_PATH + ".random_ltd"

MODEL_TYPES = ("decoder", "encoder")
HIDDEN_STATE_ORDERS = ("batch_seq_dim", "seq_batch_dim")
SCHEDULE_TYPES = ("fixed_linear",)
WARMUP_TYPES = ("linear",)


class RandomLTDConfigError(ValueError):
    """A random-LTD config value is missing, misspelled, mistyped or out of range."""


@dataclass(frozen=True)
class RandomLTDScheduleConfig:
    """The reserved-length schedule (``random_ltd_schedule``)."""

    min_value: int
    """Reserved length r at step 0 (``min_value``)."""
    max_value: int
    """Largest reserved length, usually the full sequence length (``max_value``)."""
    require_steps: int
    """Optimizer steps to go from min_value to max_value (``schedule_config.require_steps``)."""
    seq_per_step: int
    """Granularity of r: r is rounded down to a multiple of it (``schedule_config.seq_per_step``)."""
    schedule_type: str = "fixed_linear"
    """Only ``fixed_linear`` exists (``schedule_type``)."""


@dataclass(frozen=True)
class LayerTokenLRConfig:
    """LR warmup/decay driven by consumed layer tokens (``layer_token_lr_schedule``)."""

    enabled: bool = False
    """Use the layer-token LR schedule instead of the token/sample-based one."""
    total_layer_tokens: int = 0
    """Layer tokens at which the decay reaches min_lr (required when enabled)."""
    warmup_layer_tokens: int = 0
    """Layer tokens of linear warmup from 0 to max_lr."""
    warmup_type: str = "linear"
    """Only ``linear`` exists."""


@dataclass(frozen=True)
class RandomLTDConfig:
    """Validated ``data_efficiency.data_routing.random_ltd`` block."""

    enabled: bool = False
    """``random_ltd.enabled``; like DeepSpeed, it alone decides (the master flags only trigger a warning)."""
    total_layer_num: int = 0
    """Depth L of the model (``total_layer_num``); must equal ``--num-layers``."""
    random_ltd_layer_num: int = 0
    """Number n of layers that drop tokens (``random_ltd_layer_num``)."""
    random_ltd_layer_id: tuple[int, ...] = ()
    """0-based indices of the dropping layers within the layer stack, ascending (``random_ltd_layer_id``)."""
    model_mask_name: str | None = "attention_mask"
    """Keyword under which the layer receives its attention mask; None = the layer takes no mask."""
    model_type: str = "decoder"
    """``decoder`` (causal; document masks gathered too) or ``encoder`` (padding mask gathered)."""
    hidden_state_order: str = "batch_seq_dim"
    """Layout named in the JSON. Validated only: the wrapper uses the layout the model declares (see random_ltd.py)."""
    schedule: RandomLTDScheduleConfig | None = None
    """Reserved-length schedule; None only when disabled."""
    layer_token_lr: LayerTokenLRConfig = field(default_factory=LayerTokenLRConfig)
    """Layer-token LR schedule (ours; upstream left it unimplemented)."""
    allow_first_last_layers: bool = False
    """Allow layer 0 and layer L-1 in ``random_ltd_layer_id`` (ours)."""

    @property
    def num_layers(self) -> int:
        """Alias of total_layer_num (L)."""
        return self.total_layer_num

    @property
    def num_ltd_layers(self) -> int:
        """Alias of random_ltd_layer_num (n)."""
        return self.random_ltd_layer_num


# ---------------------------------------------------------------------------------------------
# small typed readers


class _Reader:
    """Reads typed values out of one JSON object, reporting errors with the full key path."""

    def __init__(self, block: Any, path: str, known: tuple[str, ...], source: str | None) -> None:
        self.path = path
        self.source = source
        if not isinstance(block, Mapping):
            raise self.error(path, f"expected a JSON object, got {_show(block)}")
        self.block = block
        for key in block:
            if key not in known:
                hint = difflib.get_close_matches(str(key), known, n=1)
                more = f" (did you mean {hint[0]}?)" if hint else f" (known keys: {', '.join(known)})"
                raise self.error(f"{path}.{key}", "unknown key" + more)

    def error(self, where: str, what: str) -> RandomLTDConfigError:
        """Build the one-line error for key path ``where``."""
        prefix = f"{self.source}: " if self.source else ""
        return RandomLTDConfigError(f"{prefix}{where}: {what}")

    def has(self, key: str) -> bool:
        """True when the key is present (even if null)."""
        return key in self.block

    def boolean(self, key: str, default: bool) -> bool:
        """A JSON boolean."""
        value = self.block.get(key, default)
        if not isinstance(value, bool):
            raise self.error(f"{self.path}.{key}", f"expected true or false, got {_show(value)}")
        return value

    def integer(self, key: str, *, minimum: int, default: int | None = None, required: bool = True) -> int:
        """A JSON integer >= minimum (floats with an integral value such as 2e9 are accepted)."""
        if key not in self.block:
            if default is not None or not required:
                return default if default is not None else 0
            raise self.error(f"{self.path}.{key}", f"missing; expected an integer >= {minimum}")
        value = self.block[key]
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(f"{self.path}.{key}", f"expected an integer >= {minimum}, got {_show(value)}")
        if value < minimum:
            raise self.error(f"{self.path}.{key}", f"expected an integer >= {minimum}, got {value}")
        return value

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        """A string among ``choices``."""
        value = self.block.get(key, default)
        if value not in choices:
            raise self.error(f"{self.path}.{key}", f"expected one of {', '.join(choices)}, got {_show(value)}")
        return value

    def sub(self, key: str, known: tuple[str, ...], *, required: bool) -> "_Reader | None":
        """A nested object, or None when absent and not required."""
        if key not in self.block:
            if required:
                raise self.error(f"{self.path}.{key}", "missing; expected a JSON object")
            return None
        return _Reader(self.block[key], f"{self.path}.{key}", known, self.source)


def _show(value: Any) -> str:
    """Render a JSON value for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


# ---------------------------------------------------------------------------------------------
# public parsers

_LTD_KEYS = (
    "enabled",
    "total_layer_num",
    "random_ltd_layer_num",
    "random_ltd_layer_id",
    "model_mask_name",
    "model_type",
    "hidden_state_order",
    "random_ltd_schedule",
    "layer_token_lr_schedule",
    "allow_first_last_layers",
    # DeepSpeed's engine injects these two into the block; they may appear in dumped configs. Ignored.
    "global_batch_size",
    "micro_batch_size",
)
_SCHEDULE_KEYS = ("min_value", "max_value", "schedule_type", "schedule_config")
_SCHEDULE_CONFIG_KEYS = ("require_steps", "seq_per_step")
_LR_KEYS = ("enabled", "total_layer_tokens", "warmup_layer_tokens", "warmup_type")


def parse_random_ltd_config(
    block: Mapping[str, Any] | None,
    *,
    path: str = RANDOM_LTD_PATH,
    num_layers: int | None = None,
    seq_length: int | None = None,
    source: str | None = None,
) -> RandomLTDConfig:
    """Validate a ``random_ltd`` JSON object; cross-check with --num-layers / --seq-length when given."""
    if block is None:
        return RandomLTDConfig()
    reader = _Reader(block, path, _LTD_KEYS, source)
    active = reader.boolean("enabled", False)
    for key in ("global_batch_size", "micro_batch_size"):
        if reader.has(key):
            reader.integer(key, minimum=1)
    total = reader.integer("total_layer_num", minimum=1, required=active)
    n_ltd = reader.integer("random_ltd_layer_num", minimum=1, required=active)
    allow_edges = reader.boolean("allow_first_last_layers", False)
    layer_ids = _layer_ids(reader, required=active)
    mask_name = block.get("model_mask_name", "attention_mask")
    if mask_name is not None and (not isinstance(mask_name, str) or not mask_name.isidentifier()):
        raise reader.error(f"{path}.model_mask_name", f"expected a keyword name or null, got {_show(mask_name)}")
    model_type = reader.choice("model_type", MODEL_TYPES, "decoder")
    order = reader.choice("hidden_state_order", HIDDEN_STATE_ORDERS, "batch_seq_dim")
    schedule = _schedule(reader, required=active)
    lr = _layer_token_lr(reader)
    config = RandomLTDConfig(
        enabled=active,
        total_layer_num=total,
        random_ltd_layer_num=n_ltd,
        random_ltd_layer_id=tuple(sorted(layer_ids)),
        model_mask_name=mask_name,
        model_type=model_type,
        hidden_state_order=order,
        schedule=schedule,
        layer_token_lr=lr,
        allow_first_last_layers=allow_edges,
    )
    if active:
        _cross_check(reader, config, layer_ids)
        check_random_ltd_against_run(
            config, num_layers=num_layers, seq_length=seq_length, path=path, source=source
        )
    return config


def parse_data_routing_config(
    block: Mapping[str, Any] | None,
    *,
    path: str = ROUTING_PATH,
    num_layers: int | None = None,
    seq_length: int | None = None,
    source: str | None = None,
) -> RandomLTDConfig:
    """Validate a ``data_routing`` JSON object (``enabled`` + ``random_ltd``) into a RandomLTDConfig."""
    if block is None:
        return RandomLTDConfig()
    reader = _Reader(block, path, ("enabled", "random_ltd"), source)
    routing_enabled = reader.boolean("enabled", False)
    config = parse_random_ltd_config(
        block.get("random_ltd"), path=f"{path}.random_ltd", num_layers=num_layers, seq_length=seq_length, source=source
    )
    if config.enabled and not routing_enabled:
        logger.warning(
            "%s.enabled is false but random_ltd.enabled is true; like DeepSpeed, random-LTD follows "
            "random_ltd.enabled", path
        )
    return config


def _layer_ids(reader: _Reader, *, required: bool) -> list[int]:
    """``random_ltd_layer_id``: a list of distinct non-negative integers."""
    key = f"{reader.path}.random_ltd_layer_id"
    if not reader.has("random_ltd_layer_id"):
        if required:
            raise reader.error(key, "missing; expected a list of layer indices such as [1, 2, ..., L-2]")
        return []
    ids = reader.block["random_ltd_layer_id"]
    if not isinstance(ids, list) or not ids:
        raise reader.error(key, f"expected a non-empty list of layer indices, got {_show(ids)}")
    for position, value in enumerate(ids):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise reader.error(f"{key}[{position}]", f"expected a layer index >= 0, got {_show(value)}")
    seen: set[int] = set()
    for value in ids:
        if value in seen:
            raise reader.error(key, f"layer {value} is listed twice; expected distinct layer indices")
        seen.add(value)
    return list(ids)


def _schedule(reader: _Reader, *, required: bool) -> RandomLTDScheduleConfig | None:
    """``random_ltd_schedule`` with its nested ``schedule_config``."""
    sched = reader.sub("random_ltd_schedule", _SCHEDULE_KEYS, required=required)
    if sched is None:
        return None
    inner = sched.sub("schedule_config", _SCHEDULE_CONFIG_KEYS, required=True)
    assert inner is not None
    min_value = sched.integer("min_value", minimum=1)
    max_value = sched.integer("max_value", minimum=1)
    if max_value < min_value:
        raise sched.error(f"{sched.path}.max_value", f"expected >= min_value ({min_value}), got {max_value}")
    seq_per_step = inner.integer("seq_per_step", minimum=1)
    if min_value < seq_per_step:
        raise sched.error(
            f"{sched.path}.min_value",
            f"is {min_value}, below schedule_config.seq_per_step ({seq_per_step}); the reserved length would "
            "round down to 0. Expected min_value >= seq_per_step",
        )
    return RandomLTDScheduleConfig(
        min_value=min_value,
        max_value=max_value,
        require_steps=inner.integer("require_steps", minimum=1),
        seq_per_step=seq_per_step,
        schedule_type=sched.choice("schedule_type", SCHEDULE_TYPES, "fixed_linear"),
    )


def _layer_token_lr(reader: _Reader) -> LayerTokenLRConfig:
    """``layer_token_lr_schedule`` (ours)."""
    sub = reader.sub("layer_token_lr_schedule", _LR_KEYS, required=False)
    if sub is None:
        return LayerTokenLRConfig()
    enabled = sub.boolean("enabled", False)
    total = sub.integer("total_layer_tokens", minimum=1, required=enabled)
    warmup = sub.integer("warmup_layer_tokens", minimum=0, default=0)
    warmup_type = sub.choice("warmup_type", WARMUP_TYPES, "linear")
    if enabled and warmup >= total:
        raise sub.error(
            f"{sub.path}.warmup_layer_tokens", f"expected < total_layer_tokens ({total}), got {warmup}"
        )
    return LayerTokenLRConfig(
        enabled=enabled, total_layer_tokens=total, warmup_layer_tokens=warmup, warmup_type=warmup_type
    )


def _cross_check(reader: _Reader, config: RandomLTDConfig, layer_ids: list[int]) -> None:
    """Rules linking several keys of an enabled block."""
    path = reader.path
    total = config.total_layer_num
    if config.random_ltd_layer_num > total:
        raise reader.error(
            f"{path}.random_ltd_layer_num",
            f"expected <= total_layer_num ({total}), got {config.random_ltd_layer_num}",
        )
    if len(layer_ids) != config.random_ltd_layer_num:
        raise reader.error(
            f"{path}.random_ltd_layer_id",
            f"lists {len(layer_ids)} layers but random_ltd_layer_num is {config.random_ltd_layer_num}; "
            "expected exactly that many layer indices",
        )
    for position, value in enumerate(layer_ids):
        if value >= total:
            raise reader.error(
                f"{path}.random_ltd_layer_id[{position}]",
                f"layer {value} is out of range; expected 0 <= id < total_layer_num ({total})",
            )
    edges = sorted({0, total - 1} & set(layer_ids))
    if edges and not config.allow_first_last_layers:  # accepted, as upstream and DeepSpeed do: warn only
        logger.warning(
            "%s.random_ltd_layer_id includes layer %d, the %s layer: accepted (as upstream), tokens are dropped "
            "there too, but random-LTD usually keeps the first and last layers dense (set allow_first_last_layers: "
            "true to silence this)", path, edges[0], "first" if edges[0] == 0 else "last")


def check_random_ltd_against_run(
    config: RandomLTDConfig,
    *,
    num_layers: int | None = None,
    seq_length: int | None = None,
    path: str = RANDOM_LTD_PATH,
    source: str | None = None,
) -> None:
    """Check an enabled config against --num-layers (== total_layer_num) and --seq-length (>= max_value)."""
    if not config.enabled or config.schedule is None:
        return
    prefix = f"{source}: " if source else ""
    if num_layers is not None and num_layers != config.total_layer_num:
        raise RandomLTDConfigError(
            f"{prefix}{path}.total_layer_num: is {config.total_layer_num} but --num-layers is {num_layers}; "
            "they must be equal"
        )
    if seq_length is not None and config.schedule.max_value > seq_length:
        raise RandomLTDConfigError(
            f"{prefix}{path}.random_ltd_schedule.max_value: is {config.schedule.max_value} but --seq-length is "
            f"{seq_length}; expected max_value <= seq_length"
        )
