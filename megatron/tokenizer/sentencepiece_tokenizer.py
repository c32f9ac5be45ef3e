"""SentencePieceTokenizer and GPTSentencePieceTokenizer from a --tokenizer-model, via `sentencepiece`.

SentencePieceTokenizer keeps Megatron's semantics: the special tokens <CLS>, <SEP>, <EOD>, <MASK>, the
model's pad/bos/eos pieces (or <PAD>/<BOS>/<EOS>) and `vocab_extra_ids` tokens <extra_id_i> are looked
up in the model and appended when absent; their strings ARE recognised in input text; eod is <EOD>.
GPTSentencePieceTokenizer is the plain variant: the model's own vocab, eod = the model's eos id.
The bundled data/tokenizers/spm model names its eos piece <EOD>, so both give eod == eos there.
"""
from __future__ import annotations

import re
from typing import Iterable

import sentencepiece

from .base import AbstractTokenizer, TokenizerError, check_file


def load_sentencepiece(model_file: str, tokenizer_type: str) -> sentencepiece.SentencePieceProcessor:
    """Load a .model file, turning sentencepiece's parse failure into a clear error."""
    path = check_file(model_file, "--tokenizer-model", tokenizer_type)
    try:
        return sentencepiece.SentencePieceProcessor(model_file=path)
    except (RuntimeError, OSError) as e:
        raise TokenizerError(f"--tokenizer-model {path}: not a SentencePiece model ({e})") from None


def _piece_or(sp: sentencepiece.SentencePieceProcessor, piece_id: int, default: str) -> str:
    """The piece string of a special id, or `default` when the model does not define it (id -1)."""
    return sp.id_to_piece(piece_id) if 0 <= piece_id < sp.get_piece_size() else default


class _SentencePieceBase(AbstractTokenizer):
    """Shared loading, vocab tables and batch encoding."""

    tokenizer_type = "SentencePieceTokenizer"

    def __init__(self, name: str, model_file: str) -> None:
        super().__init__(name)
        self.sp = load_sentencepiece(model_file, self.tokenizer_type)
        self.model_file = model_file
        self._inv_vocab = {i: self.sp.id_to_piece(i) for i in range(self.sp.get_piece_size())}
        self._vocab = {p: i for i, p in self._inv_vocab.items()}

    @property
    def vocab(self) -> dict[str, int]:
        """Piece → id."""
        return self._vocab

    @property
    def inv_vocab(self) -> dict[int, str]:
        """Id → piece."""
        return self._inv_vocab

    def _check_ids(self, ids: list[int]) -> None:
        for i in ids:
            if i not in self._inv_vocab:
                raise TokenizerError(f"detokenize: id {i} is not in the vocabulary "
                                     f"(vocab_size {self.vocab_size})")


class SentencePieceTokenizer(_SentencePieceBase):
    """Megatron's SentencePieceTokenizer (special tokens added and matched in text; eod = <EOD>)."""

    def __init__(self, model_file: str, vocab_extra_ids: int = 0) -> None:
        super().__init__("SentencePieceTokenizer", model_file)
        self._special: dict[str, int] = {}  # insertion order = matching priority at equal positions
        self.cls_id = self._add_special("<CLS>")
        self.sep_id = self._add_special("<SEP>")
        self.eod_id = self._add_special("<EOD>")
        self.mask_id = self._add_special("<MASK>")
        self.pad_id = self._add_special(_piece_or(self.sp, self.sp.pad_id(), "<PAD>"))
        self.bos_id = self._add_special(_piece_or(self.sp, self.sp.bos_id(), "<BOS>"))
        self.eos_id = self._add_special(_piece_or(self.sp, self.sp.eos_id(), "<EOS>"))
        self.t5_tokens = [f"<extra_id_{i}>" for i in range(vocab_extra_ids)]
        for tok in self.t5_tokens:
            self._add_special(tok)
        self._inv_special = {i: t for t, i in self._special.items()}
        # One alternation in insertion order: the leftmost match wins, ties go to the earlier token.
        self._special_re = re.compile("|".join(re.escape(t) for t in self._special))

    def _add_special(self, token: str) -> int:
        """Use the model's piece for `token` or append it with the next id; remember it as special."""
        if token not in self._vocab:
            new_id = len(self._vocab)
            self._vocab[token] = new_id
            self._inv_vocab[new_id] = token
        self._special[token] = self._vocab[token]
        return self._vocab[token]

    def tokenize(self, text: str) -> list[int]:
        """Encode text; special-token strings in it map to their ids, the rest goes through the model."""
        ids: list[int] = []
        pos = 0
        for m in self._special_re.finditer(text):
            ids.extend(self.sp.encode(text[pos:m.start()]))
            ids.append(self._special[m.group()])
            pos = m.end()
        ids.extend(self.sp.encode(text[pos:]))
        return ids

    def tokenize_batch(self, texts: list[str]) -> list[list[int]]:
        """Batch-encode in the model's threads; texts holding special strings take the slow path."""
        texts = list(texts)
        out: list[list[int] | None] = [None] * len(texts)
        plain = [i for i, t in enumerate(texts) if not self._special_re.search(t)]
        for i, ids in zip(plain, self.sp.encode([texts[i] for i in plain])):
            out[i] = ids
        return [ids if ids is not None else self.tokenize(texts[i]) for i, ids in enumerate(out)]

    def detokenize(self, token_ids: Iterable[int]) -> str:
        """Decode; each special id is written as its token surrounded by spaces (Megatron/NeMo style)."""
        ids = [int(i) for i in token_ids]
        self._check_ids(ids)
        text, last = "", 0
        for k, i in enumerate(ids):
            if i in self._inv_special:
                text += self.sp.decode(ids[last:k]) + " " + self._inv_special[i] + " "
                last = k + 1
        return text + self.sp.decode(ids[last:])

    @property
    def eod(self) -> int:
        """<EOD> id."""
        return self.eod_id

    @property
    def cls(self) -> int:
        """<CLS> id."""
        return self.cls_id

    @property
    def sep(self) -> int:
        """<SEP> id."""
        return self.sep_id

    @property
    def mask(self) -> int:
        """<MASK> id."""
        return self.mask_id

    @property
    def pad(self) -> int:
        """Pad id (the model's pad piece, else an appended <PAD>)."""
        return self.pad_id

    @property
    def bos(self) -> int:
        """Bos id (the model's bos piece, else an appended <BOS>)."""
        return self.bos_id

    @property
    def eos(self) -> int:
        """Eos id (the model's eos piece, else an appended <EOS>)."""
        return self.eos_id

    bos_token_id = bos
    eos_token_id = eos

    @property
    def additional_special_tokens_ids(self) -> list[int]:
        """Ids of the <extra_id_i> tokens."""
        return [self._vocab[t] for t in self.t5_tokens]


class GPTSentencePieceTokenizer(_SentencePieceBase):
    """Plain SentencePiece for GPT: the model's vocab only, no special matching; eod = eos id."""

    tokenizer_type = "GPTSentencePieceTokenizer"

    def __init__(self, model_file: str) -> None:
        super().__init__("GPTSentencePieceTokenizer", model_file)
        if self.sp.eos_id() < 0:
            raise TokenizerError(f"--tokenizer-model {model_file}: the model defines no eos piece, "
                                 "needed as eod for GPTSentencePieceTokenizer")

    def tokenize(self, text: str) -> list[int]:
        """Encode text with the model."""
        return self.sp.encode(text)

    def tokenize_batch(self, texts: list[str]) -> list[list[int]]:
        """Batch-encode in the model's threads."""
        return self.sp.encode(list(texts))

    def detokenize(self, token_ids: Iterable[int]) -> str:
        """Decode ids with the model."""
        ids = [int(i) for i in token_ids]
        self._check_ids(ids)
        return self.sp.decode(ids)

    def _defined(self, piece_id: int, what: str) -> int:
        if piece_id < 0:
            raise self._missing(what)
        return piece_id

    @property
    def eod(self) -> int:
        """The model's eos id."""
        return self.sp.eos_id()

    @property
    def eos(self) -> int:
        """The model's eos id."""
        return self.sp.eos_id()

    @property
    def bos(self) -> int:
        """The model's bos id."""
        return self._defined(self.sp.bos_id(), "bos")

    @property
    def pad(self) -> int:
        """The model's pad id."""
        return self._defined(self.sp.pad_id(), "pad")
