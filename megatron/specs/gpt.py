"""The GPT family: a decoder LM on Megatron ``.bin/.idx`` token files (``pretrain_gpt.py`` is a thin CLI over it)."""
from __future__ import annotations

from typing import Any

import torch

from megatron.config import ConfigError, RunConfig
from megatron.data_efficiency.seqlen import GPT_LAYOUT
from megatron.model import GPTModel, document_ids_from_eod, get_ltor_masks_and_position_ids, gpt_flops_per_token
from megatron.training.spec import Batch, ModelSpec


def model_provider(config: RunConfig) -> torch.nn.Module:
    """Build the GPT model from the typed model config."""
    return GPTModel(config.model)


def get_batch(batch: Batch, config: RunConfig, device: torch.device | str
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Raw {"text": [b, s+1]} -> (tokens [b, s], labels [b, s], loss_mask [b, s], document_ids, position_ids).

    ``document_ids`` [b, s] (--reset-attention-mask, else None) replace Megatron's dense [b, 1, s, s] mask: the
    model turns them into a mask once per forward (a FlexAttention block mask on CUDA).
    """
    text = batch["text"].to(device=device, dtype=torch.long, non_blocking=True)  # [b, s+1]
    tokens = text[:, :-1].contiguous()  # [b, s]
    labels = text[:, 1:].contiguous()  # [b, s]
    d = config.data
    eod = d.eod_token if d.eod_token is not None else -1
    _, loss_mask, position_ids = get_ltor_masks_and_position_ids(
        tokens, eod, d.reset_position_ids, False, d.eod_mask_loss)
    document_ids = document_ids_from_eod(tokens, eod) if d.reset_attention_mask else None  # [b, s]
    return tokens, labels, loss_mask, document_ids, position_ids


def loss_func(loss_mask: torch.Tensor, per_token_loss: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Masked mean of the per-token loss [b, s]; reports it as 'lm loss'."""
    mask = loss_mask.reshape(-1).float()
    loss = torch.sum(per_token_loss.reshape(-1).float() * mask) / mask.sum().clamp(min=1.0)
    return loss, {"lm loss": loss.detach()}


def forward_step(batch: Batch, model: Any, config: RunConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One micro-batch forward: returns (loss to backpropagate, metrics to report)."""
    device = getattr(model, "device", None) or next(model.parameters()).device
    tokens, labels, loss_mask, document_ids, position_ids = get_batch(batch, config, device)
    per_token_loss = model(tokens, position_ids=position_ids, labels=labels, document_ids=document_ids)  # [b, s]
    return loss_func(loss_mask, per_token_loss)


def train_valid_test_datasets_provider(config: RunConfig, tokenizer: Any) -> tuple[Any, Any, Any]:
    """GPT train/valid/test datasets from --data-path and --split (samples of --seq-length + 1 tokens)."""
    from megatron.data.gpt_dataset import build_train_valid_test_datasets

    d = config.data
    return build_train_valid_test_datasets(
        list(d.data_path), d.data_impl, d.split, list(d.train_valid_test_num_samples), config.training.seq_length,
        d.seed, d.skip_warmup, train_data_exact_num_epochs=d.train_data_exact_num_epochs,
        return_data_index=d.return_data_index, index_cache_dir=d.data_cache_path,
        train_doc_idx_path=d.train_doc_idx_path, train_sample_idx_path=d.train_sample_idx_path,
        train_shuffle_idx_path=d.train_shuffle_idx_path)


def validate_data(config: RunConfig, tokenizer: Any) -> None:
    """--data-path names readable .bin/.idx pairs whose token ids fit the tokenizer's padded vocabulary."""
    from megatron.data.validation import check_data_files, check_token_ids, data_prefixes

    if not config.data.data_path:
        raise ConfigError("--data-path is required (the prefix written by tools/preprocess_data.py, e.g. "
                          "my-corpus_text_document)")
    prefixes = data_prefixes(config.data.data_path)
    check_data_files(prefixes)
    check_token_ids(prefixes, config.model.padded_vocab_size)


GPT_SPEC = ModelSpec(
    name="gpt",
    build_model=model_provider,
    forward_step=forward_step,
    build_datasets=train_valid_test_datasets_provider,
    flops_per_token=gpt_flops_per_token,
    batch_layout=GPT_LAYOUT,
    validate_data=validate_data,
    args_defaults={"tokenizer_type": "GPT2BPETokenizer"},
)
"""GPT pretraining as Megatron-DeepSpeed's pretrain_gpt.py does it."""
