"""Tokenizers behind one interface, selected by Megatron's --tokenizer-type names."""
from __future__ import annotations

from typing import Any

from .base import AbstractTokenizer, TokenizerError, vocab_size_with_padding
from .bert_wordpiece import BertWordPieceTokenizer
from .gpt2_bpe import GPT2BPETokenizer
from .sentencepiece_tokenizer import GPTSentencePieceTokenizer, SentencePieceTokenizer

# --tokenizer-type name → class (the two BERT names share a class; build_tokenizer sets lower_case).
TOKENIZERS: dict[str, type[AbstractTokenizer]] = {
    "GPT2BPETokenizer": GPT2BPETokenizer,
    "SentencePieceTokenizer": SentencePieceTokenizer,
    "GPTSentencePieceTokenizer": GPTSentencePieceTokenizer,
    "BertWordPieceLowerCase": BertWordPieceTokenizer,
    "BertWordPieceCase": BertWordPieceTokenizer,
}


def build_tokenizer(tokenizer_type: str, *, vocab_file: str | None = None, merge_file: str | None = None,
                    tokenizer_model: str | None = None, vocab_extra_ids: int = 0,
                    make_vocab_size_divisible_by: int = 128,
                    tensor_model_parallel_size: int = 1) -> AbstractTokenizer:
    """Build the tokenizer named by --tokenizer-type from its files; errors name the flag and path."""
    if tokenizer_type not in TOKENIZERS:
        raise TokenizerError(f"--tokenizer-type {tokenizer_type!r} is not supported; expected one of "
                             f"{', '.join(TOKENIZERS)}")
    if vocab_extra_ids < 0:
        raise TokenizerError(f"--vocab-extra-ids must be >= 0, got {vocab_extra_ids}")
    tok: AbstractTokenizer
    if tokenizer_type == "GPT2BPETokenizer":
        tok = GPT2BPETokenizer(vocab_file, merge_file)
    elif tokenizer_type == "SentencePieceTokenizer":
        tok = SentencePieceTokenizer(tokenizer_model, vocab_extra_ids=vocab_extra_ids)
    elif tokenizer_type == "GPTSentencePieceTokenizer":
        tok = GPTSentencePieceTokenizer(tokenizer_model)
    else:
        tok = BertWordPieceTokenizer(vocab_file, lower_case=tokenizer_type == "BertWordPieceLowerCase",
                                     vocab_extra_ids=vocab_extra_ids)
    # Validate the padding settings now, so a bad flag fails at build time, not at first use.
    vocab_size_with_padding(tok.vocab_size, make_vocab_size_divisible_by, tensor_model_parallel_size)
    tok.make_vocab_size_divisible_by = make_vocab_size_divisible_by
    tok.tensor_model_parallel_size = tensor_model_parallel_size
    return tok


def build_tokenizer_from_args(args: Any) -> AbstractTokenizer:
    """build_tokenizer from an argparse Namespace with Megatron's dest names."""
    return build_tokenizer(
        args.tokenizer_type,
        vocab_file=getattr(args, "vocab_file", None),
        merge_file=getattr(args, "merge_file", None),
        tokenizer_model=getattr(args, "tokenizer_model", None),
        vocab_extra_ids=getattr(args, "vocab_extra_ids", 0) or 0,
        make_vocab_size_divisible_by=getattr(args, "make_vocab_size_divisible_by", 128),
        tensor_model_parallel_size=getattr(args, "tensor_model_parallel_size", 1),
    )


__all__ = ["AbstractTokenizer", "TokenizerError", "TOKENIZERS", "build_tokenizer",
           "build_tokenizer_from_args", "vocab_size_with_padding", "GPT2BPETokenizer",
           "BertWordPieceTokenizer", "SentencePieceTokenizer", "GPTSentencePieceTokenizer"]
