"""Pretrain a GPT model on the DeepSpeed engine (Megatron-DeepSpeed's `pretrain_gpt.py` flags).

    python pretrain_gpt.py --num-layers 2 --hidden-size 64 --num-attention-heads 4 --seq-length 128 \\
        --micro-batch-size 4 --global-batch-size 8 --train-iters 100 --lr 1e-3 \\
        --data-path data/my-corpus_text_document --vocab-file vocab.json --merge-file merges.txt

Runs as one process on CPU, or under `torchrun --nproc_per_node N` / `deepspeed --num_gpus N`.
Data efficiency as in Megatron-DeepSpeed: `--data-efficiency-curriculum-learning` and/or `--random-ltd` with the
matching `data_efficiency` block of `--deepspeed_config` (see examples_deepspeed/data_efficiency/).
"""
from __future__ import annotations

import os
import sys
from typing import Any, Mapping

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run from a checkout

from megatron.config import RunConfig  # noqa: E402
from megatron.model import GPTModel, get_ltor_masks_and_position_ids  # noqa: E402
from megatron.training import pretrain, run_cli  # noqa: E402

Batch = dict[str, torch.Tensor]


def model_provider(config: RunConfig) -> torch.nn.Module:
    """Build the GPT model from the typed model config."""
    return GPTModel(config.model)


def get_batch(batch: Batch, config: RunConfig, device: torch.device | str
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Raw {"text": [b, s+1]} -> (tokens [b, s], labels [b, s], loss_mask [b, s], attention_mask, position_ids)."""
    text = batch["text"].to(device=device, dtype=torch.long, non_blocking=True)  # [b, s+1]
    tokens = text[:, :-1].contiguous()  # [b, s]
    labels = text[:, 1:].contiguous()  # [b, s]
    d = config.data
    eod = d.eod_token if d.eod_token is not None else -1
    attention_mask, loss_mask, position_ids = get_ltor_masks_and_position_ids(
        tokens, eod, d.reset_position_ids, d.reset_attention_mask, d.eod_mask_loss)
    return tokens, labels, loss_mask, attention_mask, position_ids


def loss_func(loss_mask: torch.Tensor, per_token_loss: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Masked mean of the per-token loss [b, s]; reports it as 'lm loss'."""
    mask = loss_mask.reshape(-1).float()
    loss = torch.sum(per_token_loss.reshape(-1).float() * mask) / mask.sum().clamp(min=1.0)
    return loss, {"lm loss": loss.detach()}


def forward_step(batch: Batch, model: Any, config: RunConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One micro-batch forward: returns (loss to backpropagate, metrics to report)."""
    device = getattr(model, "device", None) or next(model.parameters()).device
    tokens, labels, loss_mask, attention_mask, position_ids = get_batch(batch, config, device)
    per_token_loss = model(tokens, position_ids=position_ids, attention_mask=attention_mask, labels=labels)  # [b, s]
    return loss_func(loss_mask, per_token_loss)


def train_valid_test_datasets_provider(config: RunConfig, tokenizer: Any) -> tuple[Any, Any, Any]:
    """GPT train/valid/test datasets from --data-path and --split."""
    from megatron.data.gpt_dataset import build_train_valid_test_datasets

    d = config.data
    return build_train_valid_test_datasets(
        list(d.data_path), d.data_impl, d.split, list(d.train_valid_test_num_samples), d.seq_length, d.seed,
        d.skip_warmup, train_data_exact_num_epochs=d.train_data_exact_num_epochs,
        return_data_index=d.return_data_index, index_cache_dir=d.data_cache_path,
        train_doc_idx_path=d.train_doc_idx_path, train_sample_idx_path=d.train_sample_idx_path,
        train_shuffle_idx_path=d.train_shuffle_idx_path)


def data_post_process(batch: Batch, sampler_state: Mapping[str, Any]) -> Batch:
    """Curriculum hook on each raw training micro-batch [b, s+1]: seqlen_truncate / seqlen_reshape (spec §4).

    `sampler_state["current_difficulties"]` maps curriculum metric -> current difficulty; with the metric
    `seqlen_truncate` rows are cut to cs+1 tokens, with `seqlen_reshape` re-cut into more rows of cs+1 tokens;
    any other metric set leaves the batch unchanged. --seq-length is the raw rows' width minus one.
    """
    from megatron.data_efficiency.seqlen import make_gpt_data_post_process

    if not sampler_state.get("current_difficulties"):
        return batch
    seq_length = int(batch["text"].shape[1]) - 1
    return make_gpt_data_post_process(seq_length)(batch, sampler_state)


def main(argv: list[str] | None = None) -> None:
    """Entry point: pretrain GPT with GPT-2 BPE as the default tokenizer."""
    pretrain(train_valid_test_datasets_provider, model_provider, forward_step,
             args_defaults={"tokenizer_type": "GPT2BPETokenizer"}, data_post_process=data_post_process, argv=argv)


if __name__ == "__main__":
    run_cli(main)
