"""The tokenizer interface shared by every tokenizer, plus file checks and the vocab-padding rule."""
from __future__ import annotations

import os
from abc import ABC, abstractmethod
from typing import Iterable


class TokenizerError(ValueError):
    """Bad tokenizer input (missing file, malformed vocab, unknown type); the message names the culprit."""


def check_file(path: str | os.PathLike | None, flag: str, tokenizer_type: str) -> str:
    """Return `path` as str if it names a readable file, else raise TokenizerError naming `flag`."""
    if path is None or str(path) == "":
        raise TokenizerError(f"{flag} is required for --tokenizer-type {tokenizer_type}")
    p = str(path)
    if not os.path.isfile(p):
        raise TokenizerError(f"{flag} {p}: file not found")
    if not os.access(p, os.R_OK):
        raise TokenizerError(f"{flag} {p}: file is not readable")
    return p


def vocab_size_with_padding(vocab_size: int, make_vocab_size_divisible_by: int = 128,
                            tensor_model_parallel_size: int = 1) -> int:
    """Round `vocab_size` up to a multiple of divisor * TP size (Megatron's padded vocab rule)."""
    if make_vocab_size_divisible_by < 1:
        raise TokenizerError(
            f"--make-vocab-size-divisible-by must be >= 1, got {make_vocab_size_divisible_by}")
    if tensor_model_parallel_size < 1:
        raise TokenizerError(
            f"--tensor-model-parallel-size must be >= 1, got {tensor_model_parallel_size}")
    multiple = make_vocab_size_divisible_by * tensor_model_parallel_size
    return -(-vocab_size // multiple) * multiple


class AbstractTokenizer(ABC):
    """One interface for all tokenizers: vocab, tokenize/detokenize, special ids, padded vocab size."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.make_vocab_size_divisible_by = 128
        self.tensor_model_parallel_size = 1

    # -- vocabulary -----------------------------------------------------------------------------
    @property
    @abstractmethod
    def vocab(self) -> dict[str, int]:
        """Map from token string to id."""

    @property
    @abstractmethod
    def inv_vocab(self) -> dict[int, str]:
        """Map from id to token string."""

    @property
    def vocab_size(self) -> int:
        """Raw vocabulary size (number of token strings), before padding."""
        return len(self.vocab)

    @property
    def padded_vocab_size(self) -> int:
        """vocab_size rounded up to make_vocab_size_divisible_by * tensor_model_parallel_size."""
        return vocab_size_with_padding(self.vocab_size, self.make_vocab_size_divisible_by,
                                       self.tensor_model_parallel_size)

    # -- encoding -------------------------------------------------------------------------------
    @abstractmethod
    def tokenize(self, text: str) -> list[int]:
        """Encode one text into token ids (no special tokens added)."""

    def tokenize_batch(self, texts: list[str]) -> list[list[int]]:
        """Encode many texts; subclasses override with the engine's fast batch path."""
        return [self.tokenize(t) for t in texts]

    @abstractmethod
    def detokenize(self, token_ids: Iterable[int]) -> str:
        """Decode token ids back into text."""

    # -- special ids ----------------------------------------------------------------------------
    def _missing(self, what: str) -> AttributeError:
        return AttributeError(f"{what} is not defined for the {self.name} tokenizer")

    @property
    def eod(self) -> int:
        """End-of-document id."""
        raise self._missing("eod")

    @property
    def cls(self) -> int:
        """[CLS] id."""
        raise self._missing("cls")

    @property
    def sep(self) -> int:
        """[SEP] id."""
        raise self._missing("sep")

    @property
    def pad(self) -> int:
        """Padding id."""
        raise self._missing("pad")

    @property
    def mask(self) -> int:
        """[MASK] id."""
        raise self._missing("mask")

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, vocab_size={self.vocab_size})"
