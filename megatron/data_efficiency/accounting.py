"""Token accounting of spec §3.6: what a step really trained, for --train-tokens and token-based LR schedules.

actual_seq_length = curriculum seqlen (if a seqlen curriculum is on) else --seq-length; with random-LTD and a
reserved length r below it: actual = (actual * (L - n_ltd) + r * n_ltd) // L  (L = --num-layers, n_ltd = layers
that drop tokens) — a compute-equivalent length.

tokens this step = new_samples * actual                             (no curriculum, truncate, BERT trimming)
                 = dp * num_microbatches * rows_per_microbatch * actual   (seqlen_reshape: rows per micro-batch
                                                                     = numel(tokens) / curriculum seqlen)
"""
from __future__ import annotations

__all__ = ["actual_seq_length", "tokens_this_step", "new_samples_this_step"]


def actual_seq_length(seq_length: int, curriculum_seqlen: int | None = None, reserved_length: int | None = None,
                      num_layers: int = 1, num_ltd_layers: int = 0) -> int:
    """Effective tokens per sequence: the curriculum seqlen, corrected for random-LTD's reserved length."""
    if seq_length < 1:
        raise ValueError(f"--seq-length must be >= 1, got {seq_length}")
    actual = seq_length if curriculum_seqlen is None else int(curriculum_seqlen)
    if reserved_length is not None and reserved_length < actual:
        if num_layers < 1 or not 0 <= num_ltd_layers <= num_layers:
            raise ValueError(f"random-LTD accounting needs 0 <= random_ltd_layer_num ({num_ltd_layers}) <= "
                             f"--num-layers ({num_layers})")
        actual = (actual * (num_layers - num_ltd_layers) + int(reserved_length) * num_ltd_layers) // num_layers
    return actual


def new_samples_this_step(data_parallel_size: int, micro_batch_size: int, num_microbatches: int) -> int:
    """Samples drawn from the dataset in one optimizer step: dp × micro-batch × micro-batches."""
    return data_parallel_size * micro_batch_size * num_microbatches


def tokens_this_step(actual_seq_len: int, new_samples: int, reshape_rows: int | None = None,
                     data_parallel_size: int = 1, num_microbatches: int = 1) -> int:
    """Consumed tokens of one step: new_samples × actual, or dp × micro-batches × rows × actual for reshape."""
    if reshape_rows is not None:
        return data_parallel_size * num_microbatches * int(reshape_rows) * actual_seq_len
    return new_samples * actual_seq_len
