"""The BERT family: masked LM + sentence-order prediction on sentence-level ``.bin/.idx`` files.

``pretrain_bert.py`` is a thin CLI over ``BERT_SPEC``. Its own flags (Megatron-DeepSpeed's names):
``--mask-prob`` (0.15), ``--short-seq-prob`` (0.1), ``--bert-no-binary-head`` (no SOP head; single-segment
samples) and ``--masking-style`` (``whole-word`` n-gram masking over WordPiece ``##`` pieces, Megatron's
default, or ``token``). Loss = masked-LM loss over the masked positions + SOP cross-entropy; the log shows
``lm loss`` and ``sop loss``. Every training micro-batch goes through the BERT batch layout's post-process:
``seqlen_truncate`` under a curriculum, else the dynamic pad trim (data-parallel max of the non-pad length,
rounded up to a multiple of 8) -- only padding is removed, so the loss is unchanged.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from megatron.config import ConfigError, RunConfig
from megatron.data_efficiency.seqlen import BERT_LAYOUT
from megatron.model import BertModel, bert_flops_per_token
from megatron.model.gpt_model import vocab_cross_entropy
from megatron.training.spec import Batch, ModelSpec

MASKING_STYLES = ("whole-word", "token")


@dataclass(frozen=True)
class BertOptions:
    """The BERT-only flags, typed (built from ``config.extra``)."""

    mask_prob: float = 0.15
    """Share of tokens masked for the MLM loss (``--mask-prob``)."""
    short_seq_prob: float = 0.1
    """Probability of a shorter random target length for a sample (``--short-seq-prob``)."""
    binary_head: bool = True
    """Sentence-order prediction head and loss (off with ``--bert-no-binary-head``)."""
    masking_style: str = "whole-word"
    """``whole-word`` (n-grams of up to 3 words, WordPiece ``##`` pieces with their word) or ``token``."""

    def __post_init__(self) -> None:
        for name in ("mask_prob", "short_seq_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} must be in [0, 1], got {getattr(self, name)}")
        if self.masking_style not in MASKING_STYLES:
            raise ConfigError(f"--masking-style must be one of {', '.join(MASKING_STYLES)}, "
                              f"got {self.masking_style!r}")


def add_bert_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The BERT flags (only pretrain_bert.py accepts them: a GPT run with --mask-prob would silently ignore it)."""
    g = parser.add_argument_group("BERT")
    g.add_argument("--mask-prob", type=float, default=0.15, help="Probability of masking a token for the MLM loss.")
    g.add_argument("--short-seq-prob", type=float, default=0.1,
                   help="Probability of a sample shorter than --seq-length (Megatron's short_seq_prob).")
    g.add_argument("--bert-no-binary-head", action="store_false", dest="bert_binary_head",
                   help="No sentence-order prediction head/loss (samples may hold one segment).")
    g.add_argument("--masking-style", default="whole-word", choices=list(MASKING_STYLES),
                   help="whole-word: n-grams (1-3) of whole words, WordPiece ## pieces masked with their word "
                        "(Megatron's default); token: independent positions.")
    return parser


def bert_options(config: RunConfig) -> BertOptions:
    """The typed BERT flags of a run."""
    e = config.extra
    return BertOptions(mask_prob=float(e.get("mask_prob", 0.15)), short_seq_prob=float(e.get("short_seq_prob", 0.1)),
                       binary_head=bool(e.get("bert_binary_head", True)),
                       masking_style=str(e.get("masking_style", "whole-word")))


def model_provider(config: RunConfig) -> torch.nn.Module:
    """BertModel (2 token types; SOP head unless --bert-no-binary-head)."""
    return BertModel(config.model, num_tokentypes=2, add_binary_head=bert_options(config).binary_head)


def get_batch(batch: Batch, device: torch.device | str) -> dict[str, torch.Tensor]:
    """The sample tensors on `device` as int64: text, types, labels, loss_mask, padding_mask [b, s], is_random [b]."""
    keys = ("text", "types", "labels", "loss_mask", "padding_mask", "is_random")
    return {k: batch[k].to(device=device, dtype=torch.long, non_blocking=True) for k in keys if k in batch}


def loss_func(per_token_lm_loss: torch.Tensor, loss_mask: torch.Tensor, sop_logits: torch.Tensor | None,
              is_random: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """MLM loss averaged over masked positions [b, s] + SOP cross-entropy [b, 2]; reports both."""
    mask = loss_mask.reshape(-1).float()
    lm_loss = torch.sum(per_token_lm_loss.reshape(-1).float() * mask) / mask.sum().clamp(min=1.0)
    if sop_logits is None:
        return lm_loss, {"lm loss": lm_loss.detach()}
    sop_loss = F.cross_entropy(sop_logits.float(), is_random.reshape(-1))
    return lm_loss + sop_loss, {"lm loss": lm_loss.detach(), "sop loss": sop_loss.detach()}


def forward_step(batch: Batch, model: Any, config: RunConfig) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One micro-batch: (MLM + SOP loss to backpropagate, {"lm loss", "sop loss"}).

    In evaluation (the model in eval mode) it also reports ``mlm accuracy`` (masked positions predicted right)
    and ``sop accuracy``, from the same logits the losses come from.
    """
    device = getattr(model, "device", None) or next(model.parameters()).device
    b = get_batch(batch, device)
    labels = b["labels"].clamp(min=0)  # unmasked positions hold -1; loss_mask zeroes them
    if getattr(model, "module", model).training:  # a DeepSpeed engine's eval() switches its module, not itself
        lm_loss, sop_logits = model(b["text"], b["padding_mask"], tokentype_ids=b["types"], lm_labels=labels)
        return loss_func(lm_loss, b["loss_mask"], sop_logits, b.get("is_random"))
    logits, sop_logits = model(b["text"], b["padding_mask"], tokentype_ids=b["types"])  # [b, s, V], [b, 2]
    loss, metrics = loss_func(vocab_cross_entropy(logits, labels), b["loss_mask"], sop_logits, b.get("is_random"))
    mask = b["loss_mask"].bool()
    correct = (logits.argmax(dim=-1) == labels) & mask
    metrics["mlm accuracy"] = correct.sum().float() / mask.sum().clamp(min=1).float()
    if sop_logits is not None:
        metrics["sop accuracy"] = (sop_logits.argmax(dim=-1) == b["is_random"].reshape(-1)).float().mean()
    return loss, metrics


def _word_starts(tokenizer: Any) -> np.ndarray | None:
    """True for tokens that start a word (WordPiece: not a ``##`` piece); None when the tokenizer has no vocab."""
    from megatron.data.bert_dataset import word_start_table

    vocab = getattr(tokenizer, "vocab", None)
    if not vocab:
        return None
    return word_start_table(vocab, int(tokenizer.vocab_size))


def train_valid_test_datasets_provider(config: RunConfig, tokenizer: Any) -> tuple[Any, Any, Any]:
    """BERT train/valid/test datasets from --data-path (sentence-level) and --split."""
    from megatron.data.bert_dataset import build_train_valid_test_datasets

    d, o = config.data, bert_options(config)
    return build_train_valid_test_datasets(
        list(d.data_path), d.data_impl, d.split, list(d.train_valid_test_num_samples), config.training.seq_length,
        masked_lm_prob=o.mask_prob, short_seq_prob=o.short_seq_prob, seed=d.seed, skip_warmup=d.skip_warmup,
        binary_head=o.binary_head, cls_id=tokenizer.cls, sep_id=tokenizer.sep, mask_id=tokenizer.mask,
        pad_id=tokenizer.pad, vocab_size=int(tokenizer.vocab_size), train_idx_path=d.train_idx_path,
        train_data_exact_num_epochs=d.train_data_exact_num_epochs, return_data_index=d.return_data_index,
        index_cache_dir=d.data_cache_path, masking_style=o.masking_style, word_start=_word_starts(tokenizer))


def validate_data(config: RunConfig, tokenizer: Any) -> None:
    """Readable sentence-level .bin/.idx pairs whose ids fit the vocabulary; a WordPiece-like tokenizer."""
    from megatron.data.indexed_dataset import MMapIndexedDataset
    from megatron.data.validation import check_data_files, check_token_ids, data_prefixes

    bert_options(config)  # flag ranges
    for name in ("cls", "sep", "mask", "pad"):
        if getattr(tokenizer, name, None) is None:
            raise ConfigError(f"--tokenizer-type {type(tokenizer).__name__} has no [{name.upper()}] token; BERT needs "
                              "BertWordPieceLowerCase/BertWordPieceCase")
    if not config.data.data_path:
        raise ConfigError("--data-path is required (the sentence-level prefix written by tools/preprocess_data.py "
                          "--split-sentences, e.g. my-corpus_text_sentence)")
    prefixes = data_prefixes(config.data.data_path)
    check_data_files(prefixes)
    if bert_options(config).binary_head:
        for prefix in prefixes:
            doc_idx = np.asarray(MMapIndexedDataset(prefix).doc_idx)
            if len(doc_idx) > 1 and bool(np.all(np.diff(doc_idx) <= 1)):
                raise ConfigError(f"--data-path {prefix}: every document is a single sentence; preprocess with "
                                  "tools/preprocess_data.py --split-sentences (sentence-order prediction needs two "
                                  "segments), or pass --bert-no-binary-head")
    check_token_ids(prefixes, config.model.padded_vocab_size)


BERT_SPEC = ModelSpec(
    name="bert",
    build_model=model_provider,
    forward_step=forward_step,
    build_datasets=train_valid_test_datasets_provider,
    flops_per_token=bert_flops_per_token,
    batch_layout=BERT_LAYOUT,
    validate_data=validate_data,
    args_defaults={"tokenizer_type": "BertWordPieceLowerCase"},
    extra_args=add_bert_args,
)
"""BERT pretraining as Megatron-DeepSpeed's pretrain_bert.py does it (MLM + SOP)."""
