"""Sequence-length curriculum by post-processing a micro-batch (spec §4).

GPT raw samples are ``text`` of length L+1 (L = --seq-length): the model reads text[:, :-1] and predicts
text[:, 1:]. With a curriculum seqlen ``cs < L``:

* ``truncate``: keep text[:, :cs+1] (cs inputs, cs labels); the rest of each sample is discarded.
* ``reshape``: cut every sample into sample-major chunks of cs+1 tokens (R = floor((L+1)/(cs+1)) * (cs+1)
  tokens per sample), then append each sample's LAST cs+1 tokens (tail rows, overlapping the previous chunk);
  keep ``reshape_num_rows(B, L, cs)`` rows, so the token count stays about B * (L+1).

BERT: truncate to cs when a ``seqlen_truncate`` curriculum is set, otherwise to the longest non-pad row of the
micro-batch (all-reduced MAX over the data-parallel group, on the group's device, when torch.distributed is
initialized); both rounded up to a multiple of 8, applied only when shorter than L.

Every tensor of the batch dict with the sequence dimension (dim 1) is cut the same way; in reshape mode
per-sample tensors without it (e.g. ``index`` [b, 1]) follow their sample into each new row.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol

import torch

from .collectives import all_reduce_ints
from .config import SEQLEN_METRICS

__all__ = [
    "SeqlenError",
    "reshape_num_rows",
    "gpt_seqlen_truncate",
    "gpt_seqlen_reshape",
    "post_process_gpt",
    "bert_effective_seqlen",
    "post_process_bert",
    "make_gpt_data_post_process",
    "make_bert_data_post_process",
    "BatchLayout",
    "GPTBatchLayout",
    "BertBatchLayout",
    "GPT_LAYOUT",
    "BERT_LAYOUT",
    "UncutBatchLayout",
    "UNCUT_LAYOUT",
]

Batch = Mapping[str, Any]


class SeqlenError(ValueError):
    """A batch that cannot be cut as asked (bad shape, bad curriculum seqlen)."""


def reshape_num_rows(batch_size: int, seq_length: int, curriculum_seqlen: int) -> int:
    """Rows after seqlen_reshape: min(ceil(B(L+1)/(cs+1)), B(floor((L+1)/(cs+1)) + 1)), made even when > 1."""
    width = curriculum_seqlen + 1
    total = seq_length + 1
    available = batch_size * (total // width + 1)
    rows = min(-(-(batch_size * total) // width), available)
    if rows > 1 and rows % 2:
        rows -= 1
    return rows


def _check_cs(curriculum_seqlen: int, seq_length: int) -> None:
    if not 1 <= curriculum_seqlen:
        raise SeqlenError(f"curriculum seqlen must be >= 1, got {curriculum_seqlen} (check min_difficulty and "
                          f"difficulty_step of the seqlen metric)")
    if seq_length < 1:
        raise SeqlenError(f"--seq-length must be >= 1, got {seq_length}")


def gpt_seqlen_truncate(text: torch.Tensor, curriculum_seqlen: int) -> torch.Tensor:
    """Keep the first cs+1 raw tokens of each row: [b, L+1] -> [b, cs+1]."""
    return text[:, : curriculum_seqlen + 1]


def _reshape_rows(text: torch.Tensor, curriculum_seqlen: int, num_rows: int) -> torch.Tensor:
    b, total = text.shape[0], text.shape[1]
    width = curriculum_seqlen + 1
    k = total // width
    chunks = text[:, : k * width].reshape(b * k, width, *text.shape[2:])  # [b*k, cs+1] sample-major
    tails = text[:, total - width:]  # [b, cs+1]
    return torch.cat([chunks, tails], dim=0)[:num_rows]


def _row_source(batch_size: int, total: int, curriculum_seqlen: int, num_rows: int,
                device: torch.device | None = None) -> torch.Tensor:
    k = total // (curriculum_seqlen + 1)
    src = torch.cat([torch.arange(batch_size, device=device).repeat_interleave(k),
                     torch.arange(batch_size, device=device)])
    return src[:num_rows]


def gpt_seqlen_reshape(text: torch.Tensor, curriculum_seqlen: int) -> torch.Tensor:
    """Cut [b, L+1] raw rows into [reshape_num_rows(b, L, cs), cs+1] rows of cs+1 tokens (spec §4)."""
    rows = reshape_num_rows(text.shape[0], text.shape[1] - 1, curriculum_seqlen)
    return _reshape_rows(text, curriculum_seqlen, rows)


def post_process_gpt(batch: Batch, curriculum_seqlen: int | None, seq_length: int,
                     mode: str | None = "truncate") -> tuple[dict[str, Any], int]:
    """Apply ``truncate``/``reshape`` (or nothing) to a GPT micro-batch; return (batch, model seqlen)."""
    if mode is None or curriculum_seqlen is None:
        return dict(batch), seq_length
    if mode not in ("truncate", "reshape"):
        raise SeqlenError(f"unknown seqlen curriculum mode {mode!r}; expected truncate or reshape")
    cs = int(curriculum_seqlen)
    _check_cs(cs, seq_length)
    if cs >= seq_length:
        return dict(batch), seq_length
    total = seq_length + 1
    out: dict[str, Any] = {}
    if mode == "truncate":
        for key, value in batch.items():
            if isinstance(value, torch.Tensor) and value.dim() >= 2 and value.shape[1] == total:
                out[key] = value[:, : cs + 1]  # raw text: cs inputs + cs labels
            elif isinstance(value, torch.Tensor) and value.dim() >= 2 and value.shape[1] == seq_length:
                out[key] = value[:, :cs]  # already-shifted per-token tensors (labels, loss_mask, ...)
            else:
                out[key] = value
        return out, cs
    sizes = {v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor) and v.dim() >= 1}
    if len(sizes) != 1:
        raise SeqlenError(f"seqlen_reshape needs every tensor of the batch to share the batch dimension, got "
                          f"{ {k: tuple(v.shape) for k, v in batch.items() if isinstance(v, torch.Tensor)} }")
    b = sizes.pop()
    rows = reshape_num_rows(b, seq_length, cs)
    src: torch.Tensor | None = None
    for key, value in batch.items():
        if not isinstance(value, torch.Tensor) or value.dim() == 0:
            out[key] = value
        elif value.dim() >= 2 and value.shape[1] == total:
            out[key] = _reshape_rows(value, cs, rows)
        elif value.dim() >= 2 and value.shape[1] == seq_length:
            raise SeqlenError(f"seqlen_reshape can only cut raw text tensors of length --seq-length + 1 = {total}; "
                              f"batch key {key!r} has length {seq_length} (post-process before shifting labels)")
        else:
            if src is None:
                src = _row_source(b, total, cs, rows, value.device)
            out[key] = value[src]  # per-sample values follow their sample into every new row
    return out, cs


def bert_effective_seqlen(padding_mask: torch.Tensor | None, seq_length: int, curriculum_seqlen: int | None = None,
                          group: Any = None, round_to: int = 8) -> int:
    """BERT length to keep: cs, or the DP-max non-pad length; rounded up to a multiple of 8, capped at L."""
    if curriculum_seqlen is not None:
        _check_cs(int(curriculum_seqlen), seq_length)
        eff = int(curriculum_seqlen)
    elif padding_mask is None:
        return seq_length
    else:
        longest = int(torch.count_nonzero(padding_mask, dim=1).max()) if padding_mask.numel() else 0
        # DP-wide MAX on the process group's device (NCCL takes no CPU tensor); unchanged without a group
        eff = all_reduce_ints([longest], torch.distributed.ReduceOp.MAX, group)[0]
    eff = max(round_to, -(-eff // round_to) * round_to)
    return min(eff, seq_length)


def post_process_bert(batch: Batch, seq_length: int, curriculum_seqlen: int | None = None,
                      group: Any = None, round_to: int = 8) -> tuple[dict[str, Any], int]:
    """Trim a BERT micro-batch (text, types, labels, loss_mask, padding_mask, ...) to the effective length."""
    eff = bert_effective_seqlen(batch.get("padding_mask"), seq_length, curriculum_seqlen, group, round_to)
    if eff >= seq_length:
        return dict(batch), seq_length
    out = {key: (value[:, :eff] if isinstance(value, torch.Tensor) and value.dim() >= 2
                 and value.shape[1] == seq_length else value)
           for key, value in batch.items()}
    return out, eff


def make_gpt_data_post_process(seq_length: int) -> Callable[[Batch, Mapping[str, Any]], dict[str, Any]]:
    """A Megatron-style ``data_post_process(batch, sampler_state)`` for GPT: truncate/reshape by metric key."""

    def data_post_process(batch: Batch, sampler_state: Mapping[str, Any]) -> dict[str, Any]:
        difficulties = sampler_state.get("current_difficulties", {})
        for key, mode in SEQLEN_METRICS.items():
            if key in difficulties:
                return post_process_gpt(batch, int(difficulties[key]), seq_length, mode)[0]
        return dict(batch)

    return data_post_process


def make_bert_data_post_process(seq_length: int, group: Any = None) -> Callable[[Batch, Mapping[str, Any]],
                                                                                 dict[str, Any]]:
    """A Megatron-style ``data_post_process`` for BERT: seqlen_truncate, else trim padding (DP max), ×8."""

    def data_post_process(batch: Batch, sampler_state: Mapping[str, Any]) -> dict[str, Any]:
        cs = sampler_state.get("current_difficulties", {}).get("seqlen_truncate")
        return post_process_bert(batch, seq_length, None if cs is None else int(cs), group)[0]

    return data_post_process


DataPostProcess = Callable[[Batch, Mapping[str, Any]], dict[str, Any]]
"""Megatron-DeepSpeed's ``data_post_process(batch, sampler_state)``; ``sampler_state["current_difficulties"]``
maps curriculum metric -> difficulty of this very micro-batch."""


class BatchLayout(Protocol):
    """How a model family lays out its micro-batches, as far as the sequence-length curriculum is concerned.

    A family spec hands one to the data-efficiency seam; the curriculum never asks which family it serves.
    """

    def make_post_process(self, seq_length: int, group: Any = None) -> DataPostProcess:
        """The Megatron-style ``data_post_process(batch, sampler_state)`` cutting by the current difficulties."""
        ...

    def truncate(self, batch: Batch, curriculum_seqlen: int, seq_length: int, group: Any = None
                 ) -> tuple[dict[str, Any], int]:
        """Cut a micro-batch to ``curriculum_seqlen`` (the legacy seqlen curriculum); returns (batch, model seqlen)."""
        ...

    def model_seq_length(self, width: int) -> int:
        """Sequence length the model reads from a ``text`` tensor ``width`` tokens wide."""
        ...


@dataclass(frozen=True)
class GPTBatchLayout:
    """GPT: ``text`` rows of S+1 tokens (inputs + shifted labels); truncate or reshape (spec §4)."""

    def make_post_process(self, seq_length: int, group: Any = None) -> DataPostProcess:
        """``make_gpt_data_post_process`` (seqlen_truncate / seqlen_reshape by metric key)."""
        return make_gpt_data_post_process(seq_length)

    def truncate(self, batch: Batch, curriculum_seqlen: int, seq_length: int, group: Any = None
                 ) -> tuple[dict[str, Any], int]:
        """text[:, :cs+1]."""
        return post_process_gpt(batch, curriculum_seqlen, seq_length, "truncate")

    def model_seq_length(self, width: int) -> int:
        """One token of every row is only a label."""
        return width - 1


@dataclass(frozen=True)
class BertBatchLayout:
    """BERT: per-token tensors of S positions with a ``padding_mask``; truncate, else trim padding (spec §4)."""

    def make_post_process(self, seq_length: int, group: Any = None) -> DataPostProcess:
        """``make_bert_data_post_process`` (seqlen_truncate, else the DP-max non-pad length, x8)."""
        return make_bert_data_post_process(seq_length, group)

    def truncate(self, batch: Batch, curriculum_seqlen: int, seq_length: int, group: Any = None
                 ) -> tuple[dict[str, Any], int]:
        """The first cs positions (no rounding)."""
        return post_process_bert(batch, seq_length, curriculum_seqlen, group, round_to=1)

    def model_seq_length(self, width: int) -> int:
        """Every position is an input."""
        return width


@dataclass(frozen=True)
class UncutBatchLayout:
    """Batches that no sequence-length curriculum may cut (e.g. multiple choice, [b, choices, s])."""

    def make_post_process(self, seq_length: int, group: Any = None) -> DataPostProcess:
        """A post-process that refuses a seqlen difficulty and otherwise passes the batch through."""

        def data_post_process(batch: Batch, sampler_state: Mapping[str, Any]) -> dict[str, Any]:
            cut = [key for key in sampler_state.get("current_difficulties", {}) if key in SEQLEN_METRICS]
            if cut:
                raise SeqlenError(f"curriculum metric {cut[0]}: these batches cannot be cut to a sequence length")
            return dict(batch)

        return data_post_process

    def truncate(self, batch: Batch, curriculum_seqlen: int, seq_length: int, group: Any = None
                 ) -> tuple[dict[str, Any], int]:
        """Refused: the legacy seqlen curriculum cannot cut these batches."""
        raise SeqlenError("the legacy seqlen curriculum cannot cut these batches (multiple choice)")

    def model_seq_length(self, width: int) -> int:
        """Every position is an input."""
        return width


GPT_LAYOUT = GPTBatchLayout()
BERT_LAYOUT = BertBatchLayout()
UNCUT_LAYOUT = UncutBatchLayout()
