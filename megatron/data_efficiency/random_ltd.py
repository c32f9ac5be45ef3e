"""random-LTD (random layerwise token dropping) in plain PyTorch: wrapper, token gather/scatter, facade.

Upstream needs a CUDA extension for sorting/gathering tokens; here it is ``topk``/``sort``/
``index_select``/``index_copy``, so it runs on CPU and any accelerator, in fp32/bf16/fp16.

What a wrapped layer does in training mode when the reserved length r is below the current sequence
length S (spec §5.3, with upstream's gaps fixed):

1. Per (dropping layer, sample), r positions are drawn uniformly without replacement and sorted. All
   dropping layers' indices are drawn together once per model forward (a forward pre-hook on the
   converted model clears the cache and counts the step's training micro-batches). The draw is a
   counter-based hash of (seed, completed steps, layer, the sample's GLOBAL position in the step's global
   batch, token position) — no generator state, no rank — so a run drops the same tokens on 1 or N
   data-parallel ranks, on any device, and after a resume. Activation recomputation in the backward pass
   sees the same (cached) indices.
2. The kept hidden states are gathered; so are their ``position_ids`` (RoPE sees the true positions;
   missing position ids are materialised as 0..S-1 first) and the attention mask on both axes (a
   document-reset mask or a padding mask stays exact; ``None`` stays ``None``, which is the causal mask
   of the kept subsequence because the indices are sorted). ``model_type`` (decoder/encoder) therefore
   needs no separate code path: upstream's decoder shortcut, the top-left r×r block, is only right for a
   plain causal mask.
3. The inner layer is called with keyword arguments only; its output is scattered back into a copy of
   the input. Dropped tokens pass through unchanged, with identity gradient.

In eval mode, or when r >= S (e.g. after curriculum truncation), the wrapper is an exact no-op.

Layout: our models are batch-first ``[b, s, h]``. The JSON key ``hidden_state_order`` is validated but
the layout is not taken from it (upstream Megatron recipes say ``seq_batch_dim`` for Megatron's [s, b, h]
model, which would be wrong for ours): pass ``batch_first=False`` to ``convert_to_random_ltd`` for a
sequence-first model. Both layouts are supported.

Checkpoints: every wrapper registers state-dict hooks, so ``model.state_dict()`` never contains
``.random_ltd_layer`` and plain (unwrapped) state dicts load into a wrapped model; an LTD-trained
checkpoint therefore loads into a plain model as is. ``remove_random_ltd_state_dict`` strips state
dicts written by upstream.
"""
from __future__ import annotations

import inspect
import logging
from collections import OrderedDict
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from megatron.data_efficiency.layer_token_lr import LayerTokenLRSchedule
from megatron.data_efficiency.random_ltd_config import (
    RandomLTDConfig,
    check_random_ltd_against_run,
    parse_data_routing_config,
)
from megatron.data_efficiency.random_ltd_schedule import RandomLTDScheduler

logger = logging.getLogger(__name__)

WRAPPED_NAME = "random_ltd_layer"


# ---------------------------------------------------------------------------------------------
# token sampling, gather and scatter


_MASK32 = 0xFFFFFFFF
_GOLDEN32 = 0x9E3779B9  # odd: i -> i * _GOLDEN32 mod 2**32 is a bijection (a Weyl sequence)
_LAYER32 = 0x85EBCA77
_SAMPLE32 = 0xC2B2AE3D


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for int64 x in [0, 2**32), exact in int64 (no overflow): for c >= 2**31,
    x * c = x * (c - 2**31) + (x mod 2) * 2**31 (mod 2**32)."""
    if c < 1 << 31:
        return (x * c) & _MASK32
    return (x * (c - (1 << 31)) + ((x & 1) << 31)) & _MASK32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit avalanche hash of int64 values in [0, 2**32) (xor-shift-multiply, "lowbias32" constants)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def token_keys(row_keys: torch.Tensor, seq_length: int) -> torch.Tensor:
    """Random 32-bit keys [rows, s] (int64), a counter-based hash of (row key, position): no generator state.

    Every row is a splitmix-style stream: the Weyl sequence ``row_key + p * golden`` through :func:`_mix32`.
    Integer arithmetic only, so the keys are identical on every device and any number of ranks.
    """
    positions = torch.arange(seq_length, dtype=torch.int64, device=row_keys.device)
    return _mix32((row_keys[:, None] + _mul32(positions, _GOLDEN32)[None, :]) & _MASK32)


def row_keys_for(step_key: int, num_layers: int, sample_positions: torch.Tensor) -> torch.Tensor:
    """Key [num_layers * b] (int64 in [0, 2**32)) of every (dropping layer, sample) from the step's key.

    ``sample_positions`` [b] are the samples' global positions in the step's global batch, so a sample gets the
    same key on any data-parallel rank and in any micro-batch layout.
    """
    device = sample_positions.device
    layers = torch.arange(num_layers, dtype=torch.int64, device=device)
    layer_keys = _mix32((_mul32(layers, _LAYER32) ^ (int(step_key) & _MASK32)))  # [n]
    samples = _mul32(sample_positions.to(torch.int64) & _MASK32, _SAMPLE32)  # [b]
    return _mix32(layer_keys[:, None] ^ samples[None, :]).reshape(-1)  # [n*b], order (layer, sample)


def sample_token_indices(
    num_layers: int, sample_positions: torch.Tensor, seq_length: int, reserved: int, *, step_key: int = 0,
) -> torch.Tensor:
    """Sorted uniform samples without replacement: int64 [num_layers, b, reserved] of positions < seq_length.

    A pure function of (step_key, layer, the sample's global position ``sample_positions[i]``, position): per
    row, the ``reserved`` positions with the largest :func:`token_keys` (ties, at 2**-32 odds, go to the later
    position) — a uniformly random subset. Computed on ``sample_positions.device``.
    """
    batch = int(sample_positions.shape[0])
    keys = token_keys(row_keys_for(step_key, num_layers, sample_positions), seq_length)  # [n*b, s]
    shift = max(1, (seq_length - 1).bit_length())  # unique sort keys: (key, position); < 2**63 for s <= 2**31
    keys = (keys << shift) | torch.arange(seq_length, dtype=torch.int64, device=keys.device)
    kept = keys.topk(reserved, dim=1, sorted=False).indices  # [n*b, r]
    return kept.sort(dim=1).values.view(num_layers, batch, reserved)


def _flat_index(idx: torch.Tensor, seq_length: int, batch_first: bool) -> torch.Tensor:
    """Row numbers of the kept tokens in the flattened [b*s] (or [s*b]) view, in the output's order."""
    batch = idx.shape[0]
    offsets = torch.arange(batch, device=idx.device)
    if batch_first:
        return (idx + offsets[:, None] * seq_length).reshape(-1)  # [b*r], order (b, r)
    return (idx.t() * batch + offsets[None, :]).reshape(-1)  # [r*b], order (r, b)


def gather_tokens(hidden_states: torch.Tensor, idx: torch.Tensor, *, batch_first: bool = True) -> torch.Tensor:
    """Kept tokens: [b, s, h] -> [b, r, h] (or [s, b, h] -> [r, b, h]) for sorted idx [b, r]."""
    batch, reserved = idx.shape
    seq_length = hidden_states.shape[1 if batch_first else 0]
    flat = hidden_states.reshape(batch * seq_length, -1)
    kept = flat.index_select(0, _flat_index(idx, seq_length, batch_first))
    shape = (batch, reserved) if batch_first else (reserved, batch)
    return kept.view(*shape, *hidden_states.shape[2:])


def scatter_tokens(
    hidden_states: torch.Tensor, kept: torch.Tensor, idx: torch.Tensor, *, batch_first: bool = True
) -> torch.Tensor:
    """A copy of hidden_states with the kept positions replaced by ``kept`` (cast to its dtype)."""
    batch = idx.shape[0]
    seq_length = hidden_states.shape[1 if batch_first else 0]
    flat = hidden_states.reshape(batch * seq_length, -1)
    source = kept.to(hidden_states.dtype).reshape(-1, flat.shape[1])
    merged = flat.index_copy(0, _flat_index(idx, seq_length, batch_first), source)
    return merged.view(hidden_states.shape)


def gather_mask(mask: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Attention mask [b or 1, m, s, s] restricted to kept rows and columns: [b, m, r, r] (any dtype).

    The result is exactly the mask the kept subsequence would have on its own. With a padding mask a
    kept query can be left with no visible key (all its kept keys are padding); the layer handles such
    rows as it handles them on full sequences (ours lets them see everything, avoiding NaN).
    """
    batch, reserved = idx.shape
    heads, seq_length = mask.shape[1], mask.shape[-1]
    full = mask.expand(batch, heads, seq_length, seq_length)
    rows = full.gather(2, idx[:, None, :, None].expand(batch, heads, reserved, seq_length))  # [b, m, r, s]
    return rows.gather(3, idx[:, None, None, :].expand(batch, heads, reserved, reserved))  # [b, m, r, r]


class TokenSampler:
    """State shared by the wrappers of one model: reserved length, step key, micro-batch counter, index cache.

    The kept positions of a sample depend only on (seed, completed steps, dropping layer, the sample's global
    position in the step's global batch): not on the rank, the number of ranks or the micro-batch size. The
    global position of row ``j`` of this rank's ``m``-th training micro-batch of the step is
    ``(m * data_parallel_size + data_parallel_rank) * b + j`` — the layout of the training samplers, which hand
    rank r the r-th slice of every micro_batch × dp block — so a run draws the same tokens on 1 or N ranks.
    """

    def __init__(self, num_ltd_layers: int, *, reserved_length: int, seed: int = 1234, data_parallel_rank: int = 0,
                 data_parallel_size: int = 1) -> None:
        if not 0 <= data_parallel_rank < data_parallel_size:
            raise ValueError(f"random-LTD: data_parallel_rank {data_parallel_rank} is outside "
                             f"[0, {data_parallel_size})")
        self.num_ltd_layers = num_ltd_layers
        self.reserved_length = reserved_length
        self.seed = seed
        self.data_parallel_rank = data_parallel_rank
        self.data_parallel_size = data_parallel_size
        self.step = 0
        self.micro_batch = 0
        """Training forwards since the last ``reseed`` minus one: the micro-batch number within the step."""
        self._forwards = 0
        self._step_key = self._key_of(0)
        self._cache: tuple[tuple[Any, ...], torch.Tensor] | None = None

    def _key_of(self, step: int) -> int:
        """32-bit key of (seed, step): the same on every rank, reproducible on resume."""
        return int(np.random.SeedSequence([self.seed, step]).generate_state(1, np.uint32)[0])

    def reseed(self, step: int) -> None:
        """Start step ``step + 1``'s draws (after ``step`` completed steps); called once per optimizer step."""
        self.step = step
        self._step_key = self._key_of(step)
        self._forwards = 0
        self.micro_batch = 0
        self._cache = None

    def new_forward(self, module: nn.Module | None = None, *_hook_args: Any) -> None:
        """A model forward starts (the model's forward pre-hook): forget the cached indices; in training mode the
        next micro-batch of the step begins (evaluation forwards do not count)."""
        self._cache = None
        if module is None or module.training:
            self.micro_batch = self._forwards
            self._forwards += 1

    def sample_positions(self, batch: int, device: torch.device) -> torch.Tensor:
        """Global positions [b] in the step's global batch of this rank's current micro-batch rows."""
        first = (self.micro_batch * self.data_parallel_size + self.data_parallel_rank) * batch
        return torch.arange(first, first + batch, dtype=torch.int64, device=device)

    def indices(self, ordinal: int, batch: int, seq_length: int, device: torch.device) -> torch.Tensor:
        """Sorted kept positions [b, r] of dropping layer number ``ordinal`` for the current forward."""
        key = (batch, seq_length, self.reserved_length, device)
        if self._cache is None or self._cache[0] != key:
            drawn = sample_token_indices(self.num_ltd_layers, self.sample_positions(batch, device), seq_length,
                                         self.reserved_length, step_key=self._step_key)
            self._cache = (key, drawn)
        return self._cache[1][ordinal]


# ---------------------------------------------------------------------------------------------
# the wrapper


class RandomLayerTokenDrop(nn.Module):
    """Runs the wrapped layer on r randomly kept tokens per sample; the others pass through unchanged."""

    def __init__(
        self,
        layer: nn.Module,
        *,
        sampler: TokenSampler,
        ordinal: int,
        layer_index: int,
        mask_name: str | None = "attention_mask",
        position_name: str | None = "position_ids",
        model_type: str = "decoder",
        batch_first: bool = True,
    ) -> None:
        super().__init__()
        self.random_ltd_layer = layer
        self.sampler = sampler
        self.ordinal = ordinal
        self.layer_index = layer_index
        self.mask_name = mask_name
        self.model_type = model_type
        self.batch_first = batch_first
        self._signature = inspect.signature(layer.forward)
        params = list(self._signature.parameters.values())
        takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
        names = {p.name for p in params}
        self.position_name = position_name if position_name and (takes_any or position_name in names) else None

    def extra_repr(self) -> str:
        """Shown in print(model)."""
        return f"layer_index={self.layer_index}, ordinal={self.ordinal}, model_type={self.model_type}"

    def _keywords(self, hidden_states: torch.Tensor, args: tuple, kwargs: dict[str, Any]) -> dict[str, Any]:
        """All arguments after hidden_states as keywords (positional extras bound by the layer's signature)."""
        if not args:
            return dict(kwargs)
        try:
            bound = self._signature.bind(hidden_states, *args, **kwargs)
        except TypeError as err:
            raise TypeError(f"random-LTD: cannot bind arguments for {type(self.random_ltd_layer).__name__}: {err}")
        keywords: dict[str, Any] = {}
        for position, (name, value) in enumerate(bound.arguments.items()):
            kind = self._signature.parameters[name].kind
            if position == 0:
                continue
            if kind is inspect.Parameter.VAR_KEYWORD:
                keywords.update(value)
            elif kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.POSITIONAL_ONLY):
                raise TypeError(
                    f"random-LTD: {type(self.random_ltd_layer).__name__}.forward takes {name!r} positionally "
                    "only; random-LTD calls layers with keyword arguments"
                )
            else:
                keywords[name] = value
        return keywords

    def forward(self, hidden_states: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        """Drop tokens (training, r < S) or run the layer unchanged (eval, r >= S)."""
        keywords = self._keywords(hidden_states, args, kwargs)
        seq_dim, batch_dim = (1, 0) if self.batch_first else (0, 1)
        seq_length = hidden_states.shape[seq_dim]
        reserved = self.sampler.reserved_length
        if not self.training or reserved >= seq_length:
            return self.random_ltd_layer(hidden_states, **keywords)
        batch = hidden_states.shape[batch_dim]
        idx = self.sampler.indices(self.ordinal, batch, seq_length, hidden_states.device)  # [b, r]
        kept = gather_tokens(hidden_states, idx, batch_first=self.batch_first)
        if self.mask_name is not None and keywords.get(self.mask_name) is not None:
            keywords[self.mask_name] = gather_mask(keywords[self.mask_name], idx)
        if self.position_name is not None:
            positions = keywords.get(self.position_name)
            if positions is None:
                positions = torch.arange(seq_length, device=hidden_states.device)[None, :]
            keywords[self.position_name] = positions.expand(batch, seq_length).gather(1, idx)
        output = self.random_ltd_layer(kept, **keywords)
        if isinstance(output, torch.Tensor):
            return scatter_tokens(hidden_states, output, idx, batch_first=self.batch_first)
        if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
            merged = scatter_tokens(hidden_states, output[0], idx, batch_first=self.batch_first)
            return (merged, *output[1:])
        raise TypeError(
            f"random-LTD: {type(self.random_ltd_layer).__name__} returned {type(output).__name__}; "
            "expected a tensor or a tuple whose first element is the hidden states"
        )


def _strip_state_dict_hook(module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    """State-dict post-hook of a wrapper: ``prefix.random_ltd_layer.X`` -> ``prefix.X`` (in place, order kept)."""
    inner = prefix + WRAPPED_NAME + "."
    for key in [k for k in state_dict if k.startswith(inner)]:
        state_dict[prefix + key[len(inner):]] = state_dict.pop(key)
    metadata = getattr(state_dict, "_metadata", None)
    if metadata is not None:
        inner_module = prefix + WRAPPED_NAME
        for key in [k for k in metadata if k == inner_module or k.startswith(inner)]:
            value = metadata.pop(key)
            metadata[prefix[:-1] if key == inner_module else prefix + key[len(inner):]] = value


def _unstrip_load_hook(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    """Load pre-hook of a wrapper: accept plain keys ``prefix.X`` as ``prefix.random_ltd_layer.X``."""
    inner = prefix + WRAPPED_NAME + "."
    for key in [k for k in state_dict if k.startswith(prefix) and not k.startswith(inner)]:
        state_dict[inner + key[len(prefix):]] = state_dict.pop(key)


# ---------------------------------------------------------------------------------------------
# conversion and state dicts


def convert_to_random_ltd(
    model: nn.Module,
    layer_class: type[nn.Module],
    config: RandomLTDConfig,
    *,
    sampler: TokenSampler | None = None,
    batch_first: bool = True,
    position_name: str | None = "position_ids",
    strip_state_dict: bool = True,
) -> nn.Module:
    """Wrap the layers listed in ``config.random_ltd_layer_id`` (0-based index among ``layer_class`` modules)."""
    if not config.enabled or config.schedule is None:
        raise ValueError("convert_to_random_ltd: data_efficiency.data_routing.random_ltd is not enabled")
    layers: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if isinstance(module, RandomLayerTokenDrop):
            raise ValueError(f"convert_to_random_ltd: the model is already converted ({name} is a wrapper)")
        if isinstance(module, layer_class) and not any(name.startswith(outer + ".") for outer, _ in layers):
            layers.append((name, module))
    if len(layers) != config.total_layer_num:
        raise ValueError(
            f"random_ltd.total_layer_num is {config.total_layer_num} but the model has {len(layers)} "
            f"{layer_class.__name__} layers"
        )
    if any(name == "" for name, _ in layers):
        raise ValueError("convert_to_random_ltd: pass the model containing the layers, not a layer")
    if config.hidden_state_order == "seq_batch_dim" and batch_first:
        logger.info(
            "random-LTD: hidden_state_order is seq_batch_dim (Megatron's [s, b, h]); this model is batch-first "
            "[b, s, h] and the wrapper uses the model's layout"
        )
    if sampler is None:
        sampler = TokenSampler(config.num_ltd_layers, reserved_length=config.schedule.min_value)
    for ordinal, index in enumerate(config.random_ltd_layer_id):
        name, layer = layers[index]
        wrapper = RandomLayerTokenDrop(
            layer,
            sampler=sampler,
            ordinal=ordinal,
            layer_index=index,
            mask_name=config.model_mask_name,
            position_name=position_name,
            model_type=config.model_type,
            batch_first=batch_first,
        )
        if strip_state_dict:
            wrapper.register_state_dict_post_hook(_strip_state_dict_hook)
        wrapper.register_load_state_dict_pre_hook(_unstrip_load_hook)
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, wrapper)
    model.register_forward_pre_hook(sampler.new_forward)  # a bound method: survives deepcopy/pickle
    return model


def random_ltd_wrappers(model: nn.Module) -> list[RandomLayerTokenDrop]:
    """The wrappers of a converted model, in layer order."""
    return [module for module in model.modules() if isinstance(module, RandomLayerTokenDrop)]


def remove_random_ltd_state_dict(state_dict: Mapping[str, Any]) -> "OrderedDict[str, Any]":
    """Copy of ``state_dict`` with every ``random_ltd_layer`` key segment removed (upstream-compatible)."""
    stripped: OrderedDict[str, Any] = OrderedDict()
    for key, value in state_dict.items():
        stripped[".".join(part for part in key.split(".") if part != WRAPPED_NAME)] = value
    return stripped


def save_without_random_ltd(model: nn.Module) -> "OrderedDict[str, Any]":
    """The model's state dict without wrapper keys (whether or not its hooks already strip them)."""
    return remove_random_ltd_state_dict(model.state_dict())


# ---------------------------------------------------------------------------------------------
# facade for the training loop


class RandomLTD:
    """What the training loop holds: schedule, sampler, layer-token counter, checkpoint state, log fields.

    Protocol (one call per optimizer step)::

        ltd = RandomLTD.from_ds_config(ds_config, num_layers=L, seq_length=S, seed=args.seed,
                                       data_parallel_rank=r, data_parallel_size=dp)
        ltd.convert(model, TransformerLayer)         # after loading a (plain) checkpoint
        ltd.set_completed_steps(iteration)           # once, at start/resume (state_dict restores it too)
        ... forward/backward/step of iteration+1 use ltd.reserved_length ...
        ltd.step(iteration + 1, rows_in_global_batch, row_length)   # after the optimizer step
    """

    def __init__(self, config: RandomLTDConfig, *, seed: int = 1234, data_parallel_rank: int = 0,
                 data_parallel_size: int = 1) -> None:
        if not config.enabled or config.schedule is None:
            raise ValueError("RandomLTD needs an enabled data_efficiency.data_routing.random_ltd block")
        self.config = config
        self.scheduler = RandomLTDScheduler(
            config.schedule, num_layers=config.num_layers, num_ltd_layers=config.num_ltd_layers
        )
        self.sampler = TokenSampler(
            config.num_ltd_layers, reserved_length=self.scheduler.current_value, seed=seed,
            data_parallel_rank=data_parallel_rank, data_parallel_size=data_parallel_size,
        )
        self.last_reserved_length = self.scheduler.current_value
        self.last_layer_tokens = 0

    @classmethod
    def from_ds_config(
        cls, ds_config: Mapping[str, Any], *, num_layers: int | None = None, seq_length: int | None = None,
        seed: int = 1234, data_parallel_rank: int = 0, data_parallel_size: int = 1, source: str | None = None,
    ) -> "RandomLTD | None":
        """Build from a full DeepSpeed JSON dict; None when random-LTD is not enabled there."""
        efficiency = ds_config.get("data_efficiency") or {}
        config = parse_data_routing_config(
            efficiency.get("data_routing"), num_layers=num_layers, seq_length=seq_length, source=source
        )
        if not config.enabled:
            return None
        if efficiency.get("enabled") is not True:
            logger.warning("data_efficiency.enabled is not true; like DeepSpeed, random-LTD follows random_ltd.enabled")
        return cls(config, seed=seed, data_parallel_rank=data_parallel_rank,
                   data_parallel_size=data_parallel_size)

    @classmethod
    def from_config(
        cls, config: RandomLTDConfig, *, num_layers: int | None = None, seq_length: int | None = None,
        seed: int = 1234, data_parallel_rank: int = 0, data_parallel_size: int = 1, source: str | None = None,
    ) -> "RandomLTD | None":
        """Build from an already parsed block (e.g. ``DataEfficiencyConfig.data_routing.random_ltd``)."""
        if not isinstance(config, RandomLTDConfig) or not config.enabled:
            return None
        check_random_ltd_against_run(config, num_layers=num_layers, seq_length=seq_length, source=source)
        return cls(config, seed=seed, data_parallel_rank=data_parallel_rank,
                   data_parallel_size=data_parallel_size)

    @property
    def reserved_length(self) -> int:
        """r used by the wrappers for the coming forward passes."""
        return self.scheduler.current_value

    @property
    def num_layers(self) -> int:
        """L (total_layer_num)."""
        return self.config.num_layers

    @property
    def num_ltd_layers(self) -> int:
        """n (random_ltd_layer_num)."""
        return self.config.num_ltd_layers

    @property
    def consumed_layer_tokens(self) -> int:
        """Layer tokens processed so far (see random_ltd_schedule.py for how they are counted)."""
        return self.scheduler.consumed_layer_tokens

    def convert(self, model: nn.Module, layer_class: type[nn.Module], *, batch_first: bool = True) -> nn.Module:
        """convert_to_random_ltd with this facade's sampler."""
        return convert_to_random_ltd(model, layer_class, self.config, sampler=self.sampler, batch_first=batch_first)

    def actual_seq_length(self, seq_length: int) -> int:
        """Effective length at the current r: ``(S(L-n) + r n) // L`` if r < S, else S (spec §3.6)."""
        return self.scheduler.actual_seq_length(seq_length)

    def set_completed_steps(self, completed_steps: int) -> int:
        """Align r and the generator with ``completed_steps`` (start of training / resume); returns r."""
        value = self.scheduler.update(completed_steps)
        self.sampler.reserved_length = value
        self.sampler.reseed(completed_steps)
        return value

    def step(self, completed_steps: int, batch_size: int, seq_length: int) -> dict[str, int]:
        """After an optimizer step: count its layer tokens at the r it used, then move r to the next step."""
        used = self.scheduler.current_value
        added = self.scheduler.add_layer_tokens(batch_size, seq_length)
        actual = self.scheduler.actual_seq_length(seq_length)
        self.last_reserved_length, self.last_layer_tokens = used, added
        self.set_completed_steps(completed_steps)
        return {"reserved_length": used, "actual_seq_length": actual, "layer_tokens": added}

    def log_fields(self) -> dict[str, int]:
        """Fields for the training log line and TensorBoard."""
        return {"random ltd reserved length": self.last_reserved_length, "layer tokens": self.consumed_layer_tokens}

    def layer_token_lr_schedule(
        self, *, max_lr: float, min_lr: float, decay_style: str = "cosine"
    ) -> LayerTokenLRSchedule | None:
        """The layer-token LR schedule when ``layer_token_lr_schedule.enabled``; else None."""
        if not self.config.layer_token_lr.enabled:
            return None
        return LayerTokenLRSchedule(self.config.layer_token_lr, max_lr=max_lr, min_lr=min_lr, decay_style=decay_style)

    def state_dict(self) -> dict[str, int]:
        """Checkpoint state (upstream's ``random_ltd`` keys); the generator is re-derived from the step."""
        return self.scheduler.state_dict()

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the schedule and counters, and re-derive the generator for the restored step."""
        self.scheduler.load_state_dict(state)
        self.sampler.reserved_length = self.scheduler.current_value
        self.sampler.reseed(self.scheduler.current_steps)
        self.last_reserved_length = self.scheduler.current_value
