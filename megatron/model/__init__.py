"""GPT and BERT models (torch-native, batch-first [b, s, h]) built from a TransformerConfig."""
from megatron.model.bert_model import BertModel
from megatron.model.gpt_model import GPTModel
from megatron.model.kv_cache import KVCache
from megatron.model.masks import AttentionMask, document_ids_from_eod
from megatron.model.transformer import TransformerBlock, TransformerLayer
from megatron.model.utils import (
    bert_extended_attention_mask,
    get_ltor_masks_and_position_ids,
    bert_flops_per_token,
    gpt_flops_per_token,
    num_parameters,
)

__all__ = [
    "AttentionMask",
    "BertModel",
    "GPTModel",
    "KVCache",
    "TransformerBlock",
    "TransformerLayer",
    "bert_extended_attention_mask",
    "document_ids_from_eod",
    "get_ltor_masks_and_position_ids",
    "bert_flops_per_token",
    "gpt_flops_per_token",
    "num_parameters",
]
